"""Point the notebooks' Colab badges and ``REPO_URL`` at the repository you publish from.

The repository (``OWNER/NAME`` on GitHub, and the branch the badges open) is written in the
notebooks' first cells (badge), their install cells (``REPO_URL``, which Colab clones) and the
README's notebook table; this script is the one place that changes them all:

    python notebooks/set_repo.py OWNER/NAME [--branch=main]
    python notebooks/set_repo.py --check      # the repository they point at now

The shipped notebooks point at the placeholder ``crl-jax/crl_jax``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE = re.compile(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/([\w./-]+?)"
                   r"/notebooks/(\w+\.ipynb)")
# in the notebooks' JSON the quotes are escaped (\")
CLONE = re.compile(r'REPO_URL = (\\?")https://github\.com/([\w.-]+/[\w.-]+?)\.git\\?"')


def files(root: Path = ROOT) -> list[Path]:
    return sorted((root / "notebooks").glob("*.ipynb")) + [root / "README.md"]


def found(root: Path = ROOT) -> set[tuple[str, str]]:
    """Every ``(OWNER/NAME, branch)`` the badges and clone URLs name (branch ``""`` for a
    clone URL, which takes the default branch)."""
    out = set()
    for path in files(root):
        text = path.read_text()
        out |= {(m.group(1), m.group(2)) for m in BADGE.finditer(text)}
        out |= {(m.group(2), "") for m in CLONE.finditer(text)}
    return out


def set_repo(repo: str, branch: str = "main", root: Path = ROOT) -> list[Path]:
    """Rewrite every badge and ``REPO_URL`` to ``repo`` (``OWNER/NAME``); the files changed."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ValueError(f"{repo!r} is not OWNER/NAME")
    changed = []
    for path in files(root):
        text = path.read_text()
        new = BADGE.sub(lambda m: f"https://colab.research.google.com/github/{repo}/blob/"
                                  f"{branch}/notebooks/{m.group(3)}", text)
        new = CLONE.sub(lambda m: f"REPO_URL = {m.group(1)}https://github.com/{repo}.git"
                               f"{m.group(1)}", new)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("repo", nargs="?", help="OWNER/NAME on GitHub")
    p.add_argument("--branch", default="main", help="the branch the badges open")
    p.add_argument("--check", action="store_true", help="print what they point at now")
    args = p.parse_args(argv)
    if args.check or not args.repo:
        repos = sorted({r for r, _ in found()})
        print("\n".join(repos))
        return 0 if len(repos) == 1 else 1
    for path in set_repo(args.repo, args.branch):
        print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
