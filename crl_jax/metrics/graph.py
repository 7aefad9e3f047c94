"""Directed-graph scores: SHD, precision, recall, F1, and alignment to the true latent order.

Adjacency convention (the project's): row = child, column = parent, so ``A[i, j] = 1``
means the edge ``j -> i``. Self-loops are not allowed (the diagonal must be zero).

SHD, with ``reversal_cost``:

* ``1`` (default): for every unordered pair {i, j} whose edge state differs (no edge,
  i -> j, j -> i, or both directions) count 1. A missing, an extra and a reversed edge
  each cost 1 (the convention of Tsamardinos et al. 2006 / cdt ``double_for_anticausal=False``).
* ``2``: count every differing directed entry of the adjacency, ``sum |A_true - A_est|``;
  a reversed edge then costs 2.

Precision = TP / n_est_edges, recall = TP / n_true_edges over directed edges (a reversed
edge is one false positive and one false negative). Empty denominators: precision is 1.0
when no edge is estimated (no false claim was made), recall is 1.0 when the true graph
has no edge (nothing to miss); F1 = 2PR / (P + R), and 0.0 when P + R = 0.
"""
from __future__ import annotations

import numpy as np

from crl_jax.metrics.mcc import Matching


def _square(a: object, name: str, allow_weights: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric square matrix: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) matrix (row = child, col = parent); got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN/inf entries.")
    if not allow_weights and not np.all(np.isin(arr, (0.0, 1.0))):
        raise ValueError(f"{name} must be a 0/1 adjacency; threshold weights with threshold_adjacency first.")
    return arr


def _binary_adjacency(a: object, name: str) -> np.ndarray:
    arr = _square(a, name).astype(np.int64)
    if np.any(np.diag(arr) != 0):
        raise ValueError(f"{name} has self-loops (non-zero diagonal); a DAG adjacency must have a zero diagonal.")
    return arr


def threshold_adjacency(weights: object, threshold: float) -> np.ndarray:
    """0/1 int adjacency ``|W| > threshold`` (same row = child, col = parent convention)."""
    w = _square(weights, "weights", allow_weights=True)
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0; got {threshold}.")
    return (np.abs(w) > threshold).astype(np.int64)


def align_to_true(est_adj: object, matching: Matching, d_true: int) -> np.ndarray:
    """Re-index an estimated (d_est, d_est) adjacency into true-latent order (d_true, d_true).

    Estimated component ``matching.est_idx[r]`` becomes true component
    ``matching.true_idx[r]``, on both axes. Unmatched estimated rows/columns are dropped;
    rows/columns of unmatched true components are zero. Weights are kept as given.
    """
    est = _square(est_adj, "est_adj", allow_weights=True)
    if not isinstance(matching, Matching):
        raise ValueError(f"matching must be a Matching (from fit_matching); got {type(matching).__name__}.")
    if int(d_true) < 1:
        raise ValueError(f"d_true must be >= 1; got {d_true}.")
    t_idx, e_idx = np.asarray(matching.true_idx), np.asarray(matching.est_idx)
    if (t_idx.size and t_idx.max() >= d_true) or (e_idx.size and e_idx.max() >= est.shape[0]):
        raise ValueError(
            f"matching refers to components beyond d_true={d_true} or est_adj's {est.shape[0]} rows; "
            "fit the matching on the same latents as the graph."
        )
    out = np.zeros((int(d_true), int(d_true)), dtype=est.dtype)
    out[np.ix_(t_idx, t_idx)] = est[np.ix_(e_idx, e_idx)]
    return out


def shd(true_adj: object, est_adj: object, reversal_cost: int = 1) -> int:
    """Structural Hamming distance; see the module docstring for the two conventions."""
    t = _binary_adjacency(true_adj, "true_adj")
    e = _binary_adjacency(est_adj, "est_adj")
    _check_same_shape(t, e)
    return _shd(t, e, reversal_cost)


def _check_same_shape(t: np.ndarray, e: np.ndarray) -> None:
    if t.shape != e.shape:
        raise ValueError(
            f"true_adj {t.shape} and est_adj {e.shape} must have the same shape; align est_adj with align_to_true."
        )


def _shd(t: np.ndarray, e: np.ndarray, reversal_cost: int) -> int:
    if reversal_cost not in (1, 2):
        raise ValueError(f"reversal_cost must be 1 or 2; got {reversal_cost!r}.")
    diff = np.abs(t - e)
    if reversal_cost == 2:
        return int(diff.sum())
    pair_differs = (diff + diff.T) > 0
    return int(np.triu(pair_differs, k=1).sum())


def graph_scores(true_adj: object, est_adj: object, reversal_cost: int = 1) -> dict:
    """``dict(shd, precision, recall, f1, n_true_edges, n_est_edges)`` for directed edges."""
    t = _binary_adjacency(true_adj, "true_adj")
    e = _binary_adjacency(est_adj, "est_adj")
    _check_same_shape(t, e)
    distance = _shd(t, e, reversal_cost)
    n_true, n_est = int(t.sum()), int(e.sum())
    tp = int((t * e).sum())
    precision = tp / n_est if n_est else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "shd": distance,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "n_true_edges": n_true,
        "n_est_edges": n_est,
    }
