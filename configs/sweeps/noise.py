"""Noise of the latent SCM: Gaussian against non-Gaussian (Laplace, uniform).

    python -m crl_jax.sweep --config=configs/sweeps/noise.py --workdir=/tmp/sweep_noise

``data.noise`` in (gaussian, laplace, uniform) on ``numerical_case1`` (all standardised to
unit variance; the model's noise prior stays standard normal unless ``model.flow_units``
> 0). ``:smoke``: gaussian, laplace with the smoke training config.
"""
from __future__ import annotations

from configs.sweeps import common


def get_config(arg: str | None = None):
    flags, preset = common.parse(arg, "noise")
    smoke = "smoke" in flags
    base = common.base_config(preset, smoke)
    noises = ("gaussian", "laplace") if smoke else ("gaussian", "laplace", "uniform")
    return common.sweep_config("noise", base, product=[("data.noise", noises)])
