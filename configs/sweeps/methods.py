"""Every method (ours, baselines, controls) on one preset, same budget and evaluation.

    python -m crl_jax.sweep --config=configs/sweeps/methods.py --workdir=/tmp/sweep_methods
    python -m crl_jax.sweep --config=configs/sweeps/methods.py:variant_mnist \\
        --config.base.data.data_dir=../shared/data --workdir=/tmp/sweep_methods_vmnist

Default preset: ``numerical_case1`` (K = 3, the base training config of
``configs/synthetic.py``). Other presets: ``:case2``, ``:case3``, ``:content_style``,
``:variant_mnist``, ``:variant_mnist_small``. ``:smoke``: four methods (one VAE, one
contrastive, two controls) with the smoke training config (seconds; used by the tests).
Measured results: docs/RESULTS.md.
"""
from __future__ import annotations

from configs.sweeps import common

SMOKE_METHODS = ("personax", "mcl", "oracle", "pca")


def get_config(arg: str | None = None):
    flags, preset = common.parse(arg, "methods")
    smoke = "smoke" in flags
    base = common.base_config(preset, smoke)
    names = SMOKE_METHODS if smoke else common.ALL_METHODS
    if len(base.model.latent_dims) and "oracle" in names:
        # The oracle maps the true latents, so it keeps the true block sizes when the other
        # methods get a different latent size (variant MNIST: one extra dimension per block).
        dims = tuple(() if n == "oracle" else tuple(base.model.latent_dims) for n in names)
        return common.sweep_config("methods", base,
                                   zip_=[("model.name", names), ("model.latent_dims", dims)])
    return common.sweep_config("methods", base, product=[("model.name", names)])
