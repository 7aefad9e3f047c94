"""Sweep files for ``python -m crl_jax.sweep`` (see crl_jax/sweeps/grid.py for the format)."""
