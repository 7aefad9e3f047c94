"""Sweep helpers: the grid of settings, aggregation of finished runs, plots.

The command line is :mod:`crl_jax.sweep`.
"""
from crl_jax.sweeps.grid import Entry, apply_setting, entry_name, expand, make_entries

__all__ = ["Entry", "apply_setting", "entry_name", "expand", "make_entries"]
