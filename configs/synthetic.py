"""PersonaX on the numerical synthetic benchmarks (Sun et al. 2025, App. D.1), K = 3.

Run (default: ``numerical_case1``, 3 measurements per modality, 3 seeds trained together):

    python -m crl_jax.main --config=configs/synthetic.py --workdir=/tmp/run

Variants: ``--config=configs/synthetic.py:case2`` (``case1``, ``case2``, ``case3``,
``content_style``), and ``:smoke`` (or ``:case2,smoke``) for a run of a few seconds used by
the tests. Any field can be overridden, e.g. ``--config.train.num_seeds=5``.

Expected result of the default command (measured, see the README's "Results"): held-out
MCC 0.931 ± 0.008 (Pearson) over 3 seeds, kernel R² of the true block from the estimated
block 0.974 (m1) and 0.918 (m2); 83.5-88.0 s of training on 2 CPU cores in three quiet
runs since this job's products run on Eigen (crl_jax/cpu_dots.py; 103.0 s with
``CRL_JAX_CPU_DOTS=ynnpack`` right before, 96.7-106.5 s in three quiet runs with YNNPACK and
10 steps per call, 102.2-115.7 s with ``--config.train.steps_per_call=1``); longer when other
jobs share the cores, and with ``CRL_JAX_MALLOC_TUNING=0``: see crl_jax/host_memory.py.
``--config.train.microbatch_size=-1`` keeps one pass here (the step needs 41 MB of
temporaries); under the earlier 32 MB auto rule it took 2 chunks and 122.3 s
(docs/PERFORMANCE.md, *The auto rule since tune_malloc*).
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
    for part in parts:
        if part in CASES:
            config.data.preset = CASES[part]
        elif part != "smoke":
            raise ValueError(f"unknown variant {part!r} of configs/synthetic.py; choose from "
                             f"{sorted(CASES) + ['smoke']} (comma-separated)")
    if "smoke" in parts:
        apply_smoke(config)
    return config
