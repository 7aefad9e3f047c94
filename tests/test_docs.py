"""The user-facing docs stay short, self-contained and runnable as written.

README: at most ~120 lines, the two set-up commands first and the results table on its first
screen, the test command the one CI runs; PERFORMANCE.md at most ~150 lines; no commit hashes
in the README or config docstrings; no reference to files outside the repository; every
relative link resolves and every benchmark command names an existing module.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "synthetic" / "README.md"]
HASH = re.compile(r"\b[0-9a-f]{7,40}\b")
MAIN = ".venv/bin/python -m crl_jax.main --config=configs/synthetic.py --workdir="
TESTS = ".venv/bin/python -m pytest -n 2 -q"


def _readme() -> list[str]:
    return (ROOT / "README.md").read_text().splitlines()


def test_readme_is_one_screen_deep_with_commands_and_results_first():
    lines = _readme()
    assert len(lines) <= 125, len(lines)
    head = "\n".join(lines[:20])
    assert MAIN in head and TESTS in head
    table = next(i for i, line in enumerate(lines)
                 if line.startswith("| config | hardware | seeds |"))
    assert table < 40, table
    assert "docs/RESULTS.md" in "\n".join(lines[:table])


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == TESTS


def test_performance_page_is_short():
    assert len((ROOT / "docs" / "PERFORMANCE.md").read_text().splitlines()) <= 155


def test_no_commit_hashes_in_readme_or_config_docstrings():
    for path in [ROOT / "README.md", *sorted((ROOT / "configs").glob("*.py"))]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not HASH.search(line), f"{path.name}:{n}: {line}"


def test_config_docstrings_are_a_command_and_an_expected_result():
    for name in ("synthetic", "variant_mnist", "personax"):
        source = (ROOT / "configs" / f"{name}.py").read_text()
        doc = source.split('"""')[1].strip().splitlines()
        commands = [line for line in doc if line.strip().startswith("python -m crl_jax.main")]
        expected = [line for line in doc if line.startswith("Expected")]
        assert len(commands) == 1 and len(expected) == 1 and len(doc) <= 6, (name, doc)


def test_no_reference_points_outside_the_repository():
    paths = DOCS + sorted((ROOT / "crl_jax").rglob("*.py")) + sorted((ROOT / "configs").rglob("*.py"))
    for path in paths:
        text = path.read_text()
        for pattern in (r"DESIGN\.md", r"\.\./shared/DESIGN", r"\bissue \d+\b", r"\bissue's\b"):
            assert not re.search(pattern, text), f"{path.relative_to(ROOT)}: {pattern}"


def test_relative_links_resolve():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)}: {target}"


def test_benchmark_commands_in_the_docs_exist():
    modules = set()
    for path in DOCS + [ROOT / "benchmarks" / "__init__.py"]:
        modules |= set(re.findall(r"python -m benchmarks\.(\w+)", path.read_text()))
    assert {"step", "loop", "profiling", "plot"} <= modules
    for name in modules:
        assert (ROOT / "benchmarks" / f"{name}.py").is_file(), name
