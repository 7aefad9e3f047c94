"""Write a synthetic data set to .npz.

    python -m synthetic.sample --preset=numerical_case1 --n=10000 --out=/tmp/case1.npz \
        [--seed=0] [--n_measurements=3] [--shared_dim=0] [--data_dir=../shared/data] [--identity=fixed]

Keys of the .npz: x_<modality> (n, K_m, *obs_shape_m), eta_<modality> (n, K_m, e_m),
z (n, D) in order [s, z_1..z_M], adjacency (D, D) row = child, spec_json (the Spec as JSON).
The process parameters are saved beside it (<out stem>_generator/), so the same process can be
re-sampled with `synthetic.load_process`. For variant_mnist_3m a PNG grid of examples (colour
measurements, then the fashion item) is written to <out stem>_examples.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from synthetic.presets import PRESETS, get_spec
from synthetic.process import Process, Sample, make_process
from synthetic.spec import IDENTITIES


def _parser() -> argparse.ArgumentParser:
    from crl_jax import cli  # one-line errors for bad flags (exit code 2)

    p = cli.ArgumentParser(prog="python -m synthetic.sample", description=__doc__.split("\n")[0])
    p.add_argument("--preset", required=True, choices=PRESETS)
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--seed", type=int, default=0, help="process parameters use fold_in(key(seed), 0), samples 1")
    p.add_argument("--n_measurements", type=int, default=None)
    p.add_argument("--shared_dim", type=int, default=None)
    p.add_argument("--data_dir", default=None, help="folder with mnist/ and fashion-mnist/ IDX files")
    p.add_argument("--identity", default=None, choices=IDENTITIES,
                   help="variant_mnist_3m: how the images are chosen (default: the preset's)")
    p.add_argument("--debug", action="store_true", help="keep the traceback of an error")
    return p


def summary(sample: Sample, names: Sequence[str]) -> str:
    arrays = {f"x_{n}": x for n, x in zip(names, sample.x)}
    arrays["z"] = sample.z
    arrays.update({f"eta_{n}": e for n, e in zip(names, sample.eta)})
    lines = [f"{'array':<16}{'shape':<26}{'mean':>10}{'std':>10}{'min':>10}{'max':>10}"]
    for k, v in arrays.items():
        v = np.asarray(v, dtype=np.float64)
        stats = (v.mean(), v.std(), v.min(), v.max()) if v.size else (np.nan,) * 4
        lines.append(f"{k:<16}{str(v.shape):<26}" + "".join(f"{s:>10.3f}" for s in stats))
    lines.append(f"adjacency (row = child):\n{sample.adjacency}")
    return "\n".join(lines)


def write_image_grid(sample: Sample, path: Path, n_rows: int = 8) -> None:
    """Rows = examples; columns = the digit's colour measurements, then the fashion item."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    digits, items = np.asarray(sample.x[0]), np.asarray(sample.x[1])
    n_rows = min(n_rows, digits.shape[0])
    k = digits.shape[1]
    fig, axes = plt.subplots(n_rows, k + 1, figsize=(1.2 * (k + 1), 1.2 * n_rows), squeeze=False)
    for r in range(n_rows):
        for c in range(k + 1):
            ax = axes[r, c]
            if c < k:
                ax.imshow(np.clip(digits[r, c], 0, 1), vmin=0, vmax=1)
            else:
                ax.imshow(items[r, 0, :, :, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"colour {c}" if c < k else "fashion", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Returns the exit code; a bad flag or a missing / damaged image file prints one line
    on stderr and returns 2 (``--debug`` keeps the traceback)."""
    from crl_jax import cli

    return cli.run(_main, sys.argv[1:] if argv is None else argv, prog="python -m synthetic.sample")


def _main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.n < 1:
        raise ValueError(f"--n={args.n} must be >= 1.")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out={args.out!r} must end in .npz.")
    if out.exists() and out.is_dir():
        raise ValueError(f"--out={args.out!r} is a directory; pass a file name ending in .npz.")
    if out.parent.exists() and not out.parent.is_dir():
        raise ValueError(f"--out={args.out!r}: {out.parent} is a file, not a directory.")
    for name in ("n_measurements", "shared_dim"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "n_measurements" else 0):
            raise ValueError(f"--{name}={value} must be >= {1 if name == 'n_measurements' else 0}.")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise ValueError(f"--data_dir={args.data_dir!r} is not a directory; pass the folder holding "
                         "mnist/ and fashion-mnist/ IDX files.")
    overrides = {k: getattr(args, k) for k in ("n_measurements", "shared_dim", "data_dir", "identity")
                 if getattr(args, k) is not None}
    if args.preset == "variant_mnist_3m" and "shared_dim" in overrides:
        raise ValueError("--shared_dim is not available for variant_mnist_3m (no shared latent).")
    if args.preset != "variant_mnist_3m" and "identity" in overrides:
        raise ValueError(f"--identity is only for variant_mnist_3m (how its images are chosen), not {args.preset}.")
    spec = get_spec(args.preset, **overrides)
    if spec.kind == "variant_mnist":   # the image files, before any sampling
        from synthetic import image_data
        image_data.check_available(spec.data_dir)
    key = jax.random.PRNGKey(args.seed)
    process: Process = make_process(jax.random.fold_in(key, 0), spec)
    sample = process.sample(jax.random.fold_in(key, 1), args.n)
    names = spec.modality_names
    arrays = {f"x_{n}": np.asarray(x) for n, x in zip(names, sample.x)}
    arrays.update({f"eta_{n}": np.asarray(e) for n, e in zip(names, sample.eta)})
    arrays.update(z=np.asarray(sample.z), adjacency=sample.adjacency, spec_json=np.asarray(spec.to_json()))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    gen_dir = process.save(out.with_name(out.stem + "_generator"))
    print(f"wrote {out} ({args.n} samples of {args.preset!r}, seed {args.seed}); process saved in {gen_dir}")
    print(summary(sample, names))
    if spec.kind == "variant_mnist":
        png = out.with_name(out.stem + "_examples.png")
        write_image_grid(sample, png)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
