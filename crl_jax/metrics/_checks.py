"""Input validation shared by the metric modules (host-side numpy, float64).

Every public metric validates its inputs here first, so bad input raises one
``ValueError`` that names the offending argument before any work starts.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def as_samples(x: object, name: str, min_rows: int = 2) -> np.ndarray:
    """Return ``x`` as a finite float64 array of shape (n_samples, n_dims)."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric 2-D array (n_samples, n_dims): {exc}") from None
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n_samples, n_dims); got shape {arr.shape}. "
            "Reshape a single component with x[:, None]."
        )
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise ValueError(
            f"{name} needs at least {min_rows} samples and 1 dimension; got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN/inf values; drop or impute those rows first.")
    return arr


def check_same_n(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same number of samples (rows); "
            f"got {a.shape[0]} and {b.shape[0]}."
        )


def check_choice(value: object, name: str, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name}={value!r}; expected one of {list(choices)}.")


def block_indices(blocks: Mapping[str, object], n_dims: int, name: str) -> dict[str, np.ndarray]:
    """Turn ``{block_name: slice | index sequence}`` into integer index arrays within ``n_dims``."""
    if not isinstance(blocks, Mapping) or len(blocks) == 0:
        raise ValueError(f"{name} must be a non-empty dict {{block_name: slice}}; got {blocks!r}.")
    out: dict[str, np.ndarray] = {}
    for key, sel in blocks.items():
        if isinstance(sel, slice):
            idx = np.arange(n_dims)[sel]
            if (sel.stop is not None and sel.stop > n_dims) or (sel.start is not None and sel.start >= n_dims):
                raise ValueError(
                    f"{name}[{key!r}]={sel} lies outside the {n_dims} available dimensions."
                )
        else:
            idx = np.asarray(sel)
            if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"{name}[{key!r}] must be a slice or a 1-D integer sequence; got {sel!r}.")
            if np.any(idx < 0) or np.any(idx >= n_dims):
                raise ValueError(
                    f"{name}[{key!r}]={idx.tolist()} lies outside the {n_dims} available dimensions."
                )
        if idx.size == 0:
            raise ValueError(f"{name}[{key!r}]={sel!r} selects no dimension.")
        out[str(key)] = idx
    return out
