"""The measurement ablation: PersonaX with K = 1, 2, 3, 5 measurements per modality.

    python -m crl_jax.sweep --config=configs/sweeps/measurements.py --workdir=/tmp/sweep_k

What multiple measurements buy: MCC and block R^2 against K on ``numerical_case1`` (other
presets: ``:case2`` ...; ``:variant_mnist`` varies the number of digit colours, 1..6).
``:smoke``: K = 1, 2 with the smoke training config.
"""
from __future__ import annotations

from configs.sweeps import common


def get_config(arg: str | None = None):
    flags, preset = common.parse(arg, "measurements")
    smoke = "smoke" in flags
    base = common.base_config(preset, smoke)
    ks = (1, 2) if smoke else (1, 2, 3, 5)
    return common.sweep_config("measurements", base, product=[("data.n_measurements", ks)])
