"""Shared latent: a latent s of dimension 0, 1, 2 shared by all modalities.

    python -m crl_jax.sweep --config=configs/sweeps/shared_latent.py --workdir=/tmp/sweep_s

``data.shared_dim`` in (0, 1, 2) on ``numerical_case1`` (numerical presets only); the model
gets a shared block of the same size. ``:smoke``: 0, 1 with the smoke training config.
"""
from __future__ import annotations

from configs.sweeps import common


def get_config(arg: str | None = None):
    flags, preset = common.parse(arg, "shared_latent")
    if preset in ("content_style", "variant_mnist", "variant_mnist_small"):
        raise ValueError(f"configs/sweeps/shared_latent.py: preset {preset!r} has a fixed shared "
                         f"latent; use case1, case2 or case3")
    smoke = "smoke" in flags
    base = common.base_config(preset, smoke)
    dims = (0, 1) if smoke else (0, 1, 2)
    return common.sweep_config("shared_latent", base, product=[("data.shared_dim", dims)])
