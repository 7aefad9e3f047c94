"""Sparsity: the L1 weight on cross-modal edges against the number of true cross-modal edges.

    python -m crl_jax.sweep --config=configs/sweeps/sparsity.py --workdir=/tmp/sweep_sparsity

Grid on ``numerical_case1`` (2 modalities x 2 latents: at most 4 cross-modal edges):
``loss.lambda_sparse`` in (0, 0.1, 1, 10) x ``data.n_cross_edges`` in (1, 2, 4). The
theory needs sparse cross-modal edges for component-wise identifiability, so MCC should fall
as the true cross-modal graph gets denser. ``:smoke``: 2 x 2 grid, smoke training config.
"""
from __future__ import annotations

from configs.sweeps import common


def get_config(arg: str | None = None):
    flags, preset = common.parse(arg, "sparsity")
    smoke = "smoke" in flags
    base = common.base_config(preset, smoke)
    lambdas = (0.0, 1.0) if smoke else (0.0, 0.1, 1.0, 10.0)
    edges = (1, 2) if smoke else (1, 2, 4)
    return common.sweep_config("sparsity", base, product=[
        ("data.n_cross_edges", edges), ("loss.lambda_sparse", lambdas)])
