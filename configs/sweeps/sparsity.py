"""Sparsity: the penalty on cross-modal dependence against the number of true cross-modal edges.

    python -m crl_jax.sweep --config=configs/sweeps/sparsity.py --workdir=/tmp/sweep_sparsity
    python -m crl_jax.sweep --config=configs/sweeps/sparsity.py:vae --workdir=/tmp/sweep_sparsity_vae

Grid on ``numerical_case1`` (2 modalities x 2 latents: at most 4 cross-modal edges) x
``data.n_cross_edges`` in (1, 2, 4). ``personax`` (default): ``stage_b.lambdas`` is one fixed
lambda in (0, 0.1, 0.3, 1) or the whole path with the validation rule (the default). ``:vae``:
``personax_vae`` with ``loss.lambda_sparse`` in (0, 0.1, 1, 10). The theory needs sparse
cross-modal edges for component-wise identifiability, so MCC should fall as the true
cross-modal graph gets denser. ``:smoke``: 2 x 2 grid, smoke training config.
"""
from __future__ import annotations

from configs.sweeps import common

FIXED_LAMBDAS = ((0.0,), (0.1,), (0.3,), (1.0,))


def get_config(arg: str | None = None):
    flags, preset = common.parse(arg, "sparsity", extra=("vae",))
    smoke = "smoke" in flags
    base = common.base_config(preset, smoke)
    edges = (1, 2) if smoke else (1, 2, 4)
    if "vae" in flags:
        base.model.name = "personax_vae"
        lambdas = (0.0, 1.0) if smoke else (0.0, 0.1, 1.0, 10.0)
        return common.sweep_config("sparsity", base, product=[
            ("data.n_cross_edges", edges), ("loss.lambda_sparse", lambdas)])
    path = tuple(base.stage_b.lambdas)
    lambdas = (FIXED_LAMBDAS[0], path) if smoke else FIXED_LAMBDAS + (path,)
    return common.sweep_config("sparsity", base, product=[
        ("data.n_cross_edges", edges), ("stage_b.lambdas", lambdas)])
