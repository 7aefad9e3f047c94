"""What every sweep file shares: argument parsing, the base training config, the ConfigDict.

A sweep file's argument is a comma-separated list: ``smoke`` (the tiny grid and the smoke
training config of the tests), a preset variant of ``configs/synthetic.py`` (``case1``,
``case2``, ``case3``, ``content_style``) or ``variant_mnist`` / ``variant_mnist_small``
(``configs/variant_mnist.py``).
"""
from __future__ import annotations

import ml_collections

from configs import synthetic, variant_mnist
from crl_jax import methods

PRESET_VARIANTS = tuple(synthetic.CASES) + ("variant_mnist", "variant_mnist_small")
# Every method (crl_jax.methods is the one list), in the order of the comparison tables.
ALL_METHODS = methods.METHODS


def parse(arg: str | None, sweep: str, extra: tuple[str, ...] = ()) -> tuple[set, str | None]:
    """(flags, preset variant or None) of a sweep file's argument; unknown parts raise."""
    parts = [p for p in (arg or "").split(",") if p]
    known = set(PRESET_VARIANTS) | {"smoke"} | set(extra)
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown} of configs/sweeps/{sweep}.py; choose "
                         f"from {sorted(known)} (comma-separated)")
    presets = [p for p in parts if p in PRESET_VARIANTS]
    if len(presets) > 1:
        raise ValueError(f"configs/sweeps/{sweep}.py: give at most one preset, got {presets}")
    return set(parts) - set(presets), (presets[0] if presets else None)


def base_config(preset: str | None, smoke: bool) -> ml_collections.ConfigDict:
    """The training config of a sweep, with the optional fields sweeps may vary."""
    if preset in ("variant_mnist", "variant_mnist_small"):
        parts = ["small"] if preset == "variant_mnist_small" else []
        config = variant_mnist.get_config(",".join(parts + (["smoke"] if smoke else [])))
    else:
        config = synthetic.get_config(",".join(([preset] if preset else [])
                                               + (["smoke"] if smoke else [])))
    if smoke:
        config.eval.plots = False
        config.train.warmup_steps = 1
    return config


def sweep_config(name: str, base: ml_collections.ConfigDict, product=(), zip_=()
                 ) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = name
    config.base = base
    config.sweep = ml_collections.ConfigDict()
    config.sweep.product = [(f, tuple(v)) for f, v in product]
    config.sweep.zip = [(f, tuple(v)) for f, v in zip_]
    return config
