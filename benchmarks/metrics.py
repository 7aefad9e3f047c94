"""How long do the identifiability metrics (MCC, block R^2) take against sample size? (metrics)

    python -m benchmarks.metrics --sizes=1000,10000,100000 --dim=4 --out=metrics.json

``n`` is the number of TRAIN rows; validation and test have n/4 rows each. The estimate is
a random invertible leaky-ReLU map of the true latents plus 5% noise, so both MCC and
R^2 have something to find. For n <= --exact-max the exact ``sklearn KernelRidge`` is
fitted with the hyper-parameters the Nystroem fit chose on validation, and the test R^2
difference is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_info, threadpool_limits

from crl_jax.metrics import fit_predict_r2, mcc, mcc_out_of_sample, random_invertible_map
from crl_jax.metrics.block_r2 import _standardise


def _data(n: int, dim: int, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    f = random_invertible_map(dim, seed=seed + 1)
    sizes = {"train": n, "val": max(n // 4, 250), "test": max(n // 4, 250)}
    true = {k: rng.standard_normal((m, dim)) for k, m in sizes.items()}
    est = {k: f(z) + 0.05 * rng.standard_normal(z.shape) for k, z in true.items()}
    return true, est


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_size(n: int, dim: int, n_components: int, exact_max: int, seed: int) -> dict:
    true, est = _data(n, dim, seed)
    row: dict = {"n_train": n, "n_val": true["val"].shape[0], "n_test": true["test"].shape[0], "dim": dim}
    res, row["mcc_pearson_s"] = _timed(lambda: mcc(true["train"], est["train"], "pearson"))
    row["mcc_pearson"] = res.value
    res, row["mcc_spearman_s"] = _timed(lambda: mcc(true["train"], est["train"], "spearman"))
    row["mcc_spearman"] = res.value
    res, row["mcc_oos_s"] = _timed(lambda: mcc_out_of_sample(true["val"], est["val"], true["test"], est["test"]))
    row["mcc_oos"] = res.value
    args = [a for k in ("train", "val", "test") for a in (est[k], true[k])]  # true from est
    lin, row["r2_linear_s"] = _timed(lambda: fit_predict_r2(*args, kind="linear"))
    row["r2_linear"] = lin.r2
    ker, row["r2_kernel_s"] = _timed(lambda: fit_predict_r2(*args, kind="kernel", n_components=n_components, seed=seed))
    row["r2_kernel"] = ker.r2
    row["kernel_params"] = ker.params
    if n <= exact_max:
        xs = _standardise(est["train"], est["test"])
        ys = _standardise(true["train"], true["test"])
        model = KernelRidge(kernel="rbf", gamma=ker.params["gamma"], alpha=ker.params["alpha"])
        pred, row["r2_exact_s"] = _timed(lambda: model.fit(xs[0], ys[0]).predict(xs[1]))
        row["r2_exact"] = float(r2_score(ys[1], pred))
        row["r2_kernel_minus_exact"] = row["r2_kernel"] - row["r2_exact"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated train sizes, e.g. 1000,10000,100000")
    parser.add_argument("--dim", type=int, default=4, help="latent dimension (true and estimated)")
    parser.add_argument("--n-components", type=int, default=1000, help="Nystroem landmarks")
    parser.add_argument("--exact-max", type=int, default=10000, help="largest n for exact KernelRidge")
    parser.add_argument("--blas-threads", type=int, default=None, help="limit BLAS threads (default: library default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if not sizes or min(sizes) < 100 or args.dim < 1:
        parser.error("--sizes needs integers >= 100 and --dim >= 1")

    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        blas = [(p["internal_api"], p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"]
        rows = [run_size(n, args.dim, args.n_components, args.exact_max, args.seed) for n in sizes]

    header = f"{'n_train':>8} {'MCC-P s':>8} {'MCC-S s':>8} {'lin s':>7} {'lin R2':>7} {'nys s':>7} {'nys R2':>7} {'exact s':>8} {'exact R2':>8} {'diff':>8}"
    print(header)
    for r in rows:
        exact = (
            f"{r['r2_exact_s']:8.2f} {r['r2_exact']:8.4f} {r['r2_kernel_minus_exact']:+8.4f}"
            if "r2_exact" in r
            else f"{'-':>8} {'-':>8} {'-':>8}"
        )
        print(
            f"{r['n_train']:8d} {r['mcc_pearson_s']:8.3f} {r['mcc_spearman_s']:8.3f} {r['r2_linear_s']:7.3f} "
            f"{r['r2_linear']:7.4f} {r['r2_kernel_s']:7.2f} {r['r2_kernel']:7.4f} {exact}"
        )
    info = {
        "command": "python -m benchmarks.metrics " + " ".join(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if v is not None),
        "cpu_count": os.cpu_count(),
        "load_avg_1min_at_end": os.getloadavg()[0],
        "blas": blas,
        "python": platform.python_version(),
        "results": rows,
    }
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(info, fh, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
