"""PersonaX on the numerical synthetic benchmarks (Sun et al. 2025, App. D.1), K = 3, 3 seeds.

    python -m crl_jax.main --config=configs/synthetic.py --workdir=/tmp/run

Expected: held-out MCC 0.985 ± 0.001, kernel R² 0.999 / 1.000 (m1 / m2), SHD 0, 0, 0 (the true graph in every seed); training took 420 s on 2 quiet cores of an AMD EPYC (docs/PERFORMANCE.md).
"""
from __future__ import annotations

import ml_collections

import synthetic
from configs import default

# Variant name -> preset: case1..case3 (synthetic.NUMERICAL_PRESETS) and content_style.
CASES = {**{p.removeprefix("numerical_"): p for p in synthetic.NUMERICAL_PRESETS},
         "content_style": "content_style"}


def apply_smoke(config: ml_collections.ConfigDict) -> None:
    """A run of a few seconds: tiny network, few steps, small evaluation sets."""
    config.model.hidden = (32, 32)
    config.model.prior_hidden = 8
    config.train.steps = 30
    config.train.batch_size = 64
    config.train.warmup_steps = 5
    config.stage_b.steps = 20
    config.stage_b.warmup_steps = 5
    config.stage_b.max_orders = 2
    config.stage_b.lambdas = (0.0, 0.3)
    config.stage_b.flow_layers = (1,)          # the capacity choice doubles the order phase
    config.train.num_seeds = 2
    config.train.log_every = 10
    config.train.checkpoint_every = 10
    config.train.progress = False
    config.data.eval_fit_size = 300
    config.data.val_size = 200
    config.data.test_size = 300
    config.eval.kernel_components = 100


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    config = default.base_config()
    # personax: stage A 3000 steps, then 2 x 2000 of stage B (the default run's CPU budget)
    config.train.steps = 3000
    config.stage_b.steps = 2000
    for part in parts:
        if part in CASES:
            config.data.preset = CASES[part]
        elif part != "smoke":
            raise ValueError(f"unknown variant {part!r} of configs/synthetic.py; choose from "
                             f"{sorted(CASES) + ['smoke']} (comma-separated)")
    if "smoke" in parts:
        apply_smoke(config)
    return config
