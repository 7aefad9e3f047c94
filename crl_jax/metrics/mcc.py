"""Mean correlation coefficient (MCC) between true and estimated latents.

Conventions
-----------
* ``true`` has shape (n, d_true), ``est`` has shape (n, d_est); rows are samples.
* The correlation (Pearson, or Spearman = Pearson on column ranks) is computed for
  every (true, est) pair. A column with zero variance has correlation 0 with
  everything (a collapsed latent explains nothing), never NaN.
* Matching: one-to-one, ``scipy.optimize.linear_sum_assignment`` maximising the sum
  of |corr|. When ``d_est != d_true`` exactly ``min(d_true, d_est)`` pairs are matched;
  the unmatched components are left out of the mean (the global MCC is the mean over
  the matched pairs), and a true block none of whose components is matched gets NaN.
* Each matched pair also stores the sign of its correlation. The value of a pair is
  ``sign * corr``: on the sample the matching was fitted on this is ``|corr|``; applied
  to another sample (out-of-sample MCC) a pair whose sign flips counts negatively.
* Per-block MCC: for each TRUE block, the mean of the matched values of that block's
  true components, using the global matching.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

from crl_jax.metrics._checks import as_samples, block_indices, check_choice, check_same_n

METHODS = ("pearson", "spearman")


@dataclasses.dataclass(frozen=True)
class Matching:
    """One-to-one assignment: est component ``est_idx[r]`` <-> true component ``true_idx[r]``."""

    true_idx: np.ndarray
    est_idx: np.ndarray
    signs: np.ndarray
    method: str


@dataclasses.dataclass(frozen=True)
class MCCResult:
    value: float
    per_component: np.ndarray  # aligned with matching.true_idx
    per_block: dict[str, float]
    matching: Matching


def _standardise_columns(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0)
    std = centred.std(axis=0)
    scale = np.where(std > 1e-12 * (np.abs(x).max(axis=0) + 1e-300), std, np.inf)
    return centred / scale  # zero-variance columns become exactly 0


def _correlation(true: np.ndarray, est: np.ndarray, method: str) -> np.ndarray:
    if method == "spearman":
        true, est = rankdata(true, axis=0), rankdata(est, axis=0)
    zt, ze = _standardise_columns(true), _standardise_columns(est)
    return np.clip(zt.T @ ze / true.shape[0], -1.0, 1.0)


def _validated(true: object, est: object, method: str, names=("true", "est")) -> tuple[np.ndarray, np.ndarray]:
    check_choice(method, "method", METHODS)
    t = as_samples(true, names[0])
    e = as_samples(est, names[1])
    check_same_n(t, names[0], e, names[1])
    return t, e


def correlation_matrix(true: object, est: object, method: str = "pearson") -> np.ndarray:
    """Signed correlations, shape (d_true, d_est); entry [i, j] = corr(true[:, i], est[:, j])."""
    t, e = _validated(true, est, method)
    return _correlation(t, e, method)


def _match(corr: np.ndarray, method: str) -> Matching:
    true_idx, est_idx = linear_sum_assignment(-np.abs(corr))
    signs = np.where(corr[true_idx, est_idx] < 0, -1.0, 1.0)
    return Matching(true_idx=true_idx, est_idx=est_idx, signs=signs, method=method)


def fit_matching(true: object, est: object, method: str = "pearson") -> Matching:
    """Hungarian matching on |corr| (min(d_true, d_est) pairs, sorted by true index)."""
    t, e = _validated(true, est, method)
    return _match(_correlation(t, e, method), method)


def _check_matching(matching: Matching, d_true: int, d_est: int, method: str) -> None:
    if not isinstance(matching, Matching):
        raise ValueError(f"matching must be a Matching (from fit_matching); got {type(matching).__name__}.")
    if matching.method != method:
        raise ValueError(
            f"matching was fitted with method={matching.method!r} but method={method!r} was asked; "
            "pass the same method."
        )
    if (matching.true_idx.size and matching.true_idx.max() >= d_true) or (
        matching.est_idx.size and matching.est_idx.max() >= d_est
    ):
        raise ValueError(
            f"matching refers to components beyond the data (d_true={d_true}, d_est={d_est}); "
            "fit it on data with the same dimensions."
        )


def mcc(
    true: object,
    est: object,
    method: str = "pearson",
    matching: Matching | None = None,
    blocks: Mapping[str, object] | None = None,
) -> MCCResult:
    """MCC of ``est`` against ``true``.

    If ``matching`` is given it (and its signs) is applied as is (out-of-sample use);
    otherwise it is fitted on this same data. ``blocks`` maps a block name to a slice
    (or index list) over the TRUE dimensions.
    """
    t, e = _validated(true, est, method)
    block_idx = block_indices(blocks, t.shape[1], "blocks") if blocks is not None else {}
    corr = _correlation(t, e, method)
    if matching is None:
        matching = _match(corr, method)
    else:
        _check_matching(matching, t.shape[1], e.shape[1], method)
    per_component = matching.signs * corr[matching.true_idx, matching.est_idx]
    per_block = {}
    for name, idx in block_idx.items():
        in_block = np.isin(matching.true_idx, idx)
        per_block[name] = float(per_component[in_block].mean()) if in_block.any() else float("nan")
    return MCCResult(
        value=float(per_component.mean()),
        per_component=per_component,
        per_block=per_block,
        matching=matching,
    )


def mcc_out_of_sample(
    true_fit: object,
    est_fit: object,
    true_eval: object,
    est_eval: object,
    method: str = "pearson",
    blocks: Mapping[str, object] | None = None,
) -> MCCResult:
    """Fit the matching and signs on (true_fit, est_fit) (validation), score on the eval sample (test)."""
    t_fit, e_fit = _validated(true_fit, est_fit, method, names=("true_fit", "est_fit"))
    t_ev, e_ev = _validated(true_eval, est_eval, method, names=("true_eval", "est_eval"))
    if t_fit.shape[1] != t_ev.shape[1] or e_fit.shape[1] != e_ev.shape[1]:
        raise ValueError(
            "fit and eval samples must have the same dimensions: "
            f"true_fit {t_fit.shape[1]} vs true_eval {t_ev.shape[1]}, "
            f"est_fit {e_fit.shape[1]} vs est_eval {e_ev.shape[1]}."
        )
    matching = _match(_correlation(t_fit, e_fit, method), method)
    return mcc(t_ev, e_ev, method=method, matching=matching, blocks=blocks)
