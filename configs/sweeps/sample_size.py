"""Sample size: a fixed training set of n = 1k ... 100k samples (instead of fresh samples).

    python -m crl_jax.sweep --config=configs/sweeps/sample_size.py --workdir=/tmp/sweep_n

``data.train_size`` in (1000, 3000, 10000, 30000, 100000) on ``numerical_case1``, same step
budget for every n. ``:smoke``: n = 200, 1000 with the smoke training config.
"""
from __future__ import annotations

from configs.sweeps import common


def get_config(arg: str | None = None):
    flags, preset = common.parse(arg, "sample_size")
    smoke = "smoke" in flags
    base = common.base_config(preset, smoke)
    sizes = (200, 1000) if smoke else (1000, 3000, 10000, 30000, 100000)
    return common.sweep_config("sample_size", base, product=[("data.train_size", sizes)])
