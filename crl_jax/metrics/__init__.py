"""Identifiability metrics (host-side numpy/scipy/scikit-learn, float64).

* :mod:`crl_jax.metrics.mcc`: mean correlation coefficient with Hungarian matching.
* :mod:`crl_jax.metrics.block_r2`: block R^2 (linear, Nystroem RBF kernel ridge), leakage, oracle ceiling.
* :mod:`crl_jax.metrics.graph`: SHD / precision / recall / F1 and alignment of a learned graph.
* :mod:`crl_jax.metrics.identifiability`: which true latents the cross-modal sparsity can identify.
"""
from __future__ import annotations

from crl_jax.metrics.block_r2 import (
    R2Result,
    block_identifiability,
    block_r2_matrix,
    fit_predict_r2,
    oracle_ceiling,
    random_invertible_map,
)
from crl_jax.metrics.graph import align_to_true, graph_scores, shd, threshold_adjacency
from crl_jax.metrics.identifiability import remix_partners, sparsity_identified
from crl_jax.metrics.mcc import (
    Matching,
    MCCResult,
    correlation_matrix,
    fit_matching,
    mcc,
    mcc_out_of_sample,
)

__all__ = [
    "MCCResult",
    "Matching",
    "R2Result",
    "align_to_true",
    "block_identifiability",
    "block_r2_matrix",
    "correlation_matrix",
    "fit_matching",
    "fit_predict_r2",
    "graph_scores",
    "mcc",
    "mcc_out_of_sample",
    "oracle_ceiling",
    "random_invertible_map",
    "remix_partners",
    "shd",
    "sparsity_identified",
    "threshold_adjacency",
]
