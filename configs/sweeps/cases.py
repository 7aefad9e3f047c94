"""PersonaX on the three numerical benchmarks (Sun et al. 2025, App. D.1), K = 3, 5 seeds.

    python -m crl_jax.sweep --config=configs/sweeps/cases.py --workdir=/tmp/sweep_cases

``data.preset`` in (numerical_case1, numerical_case2, numerical_case3) with the training
config of ``configs/synthetic.py`` (the loss weights chosen on validation MCC of case1) and
``train.num_seeds = 5``. Add ``--config.base.model.name=NAME`` to run another method.
``:smoke``: cases 1 and 3 with the smoke training config (seconds; used by the tests).
Measured results: docs/RESULTS.md.
"""
from __future__ import annotations

import synthetic
from configs.sweeps import common

PRESETS = synthetic.NUMERICAL_PRESETS


def get_config(arg: str | None = None):
    flags, preset = common.parse(arg, "cases")
    if preset is not None:
        raise ValueError(f"configs/sweeps/cases.py sweeps the preset itself; drop {preset!r} "
                         "from the argument (only 'smoke' is accepted).")
    smoke = "smoke" in flags
    base = common.base_config(None, smoke)
    if not smoke:
        base.train.num_seeds = 5
    presets = (PRESETS[0], PRESETS[2]) if smoke else PRESETS
    return common.sweep_config("cases", base, product=[("data.preset", presets)])
