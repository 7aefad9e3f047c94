"""Which true latents the cross-modal sparsity can identify, read from the true graph.

Block identifiability (stage A) leaves each block ``z_m`` up to an invertible map; the
sparsity of the cross-modal graph is what is meant to pin the components. It cannot pin a
latent ``z_i`` that can be *remixed*: replaced by ``z_i' = z_i + g(z_j)`` for another latent
``z_j`` of its block such that the model over ``(.., z_i', ..)`` is again an SCM with
independent noises and **the same penalised edges**. Then the observations have exactly the
same distribution under both models (the mixing ``x = g_m^k(z_m, eta)`` absorbs the
within-block map) and both graphs are equally sparse, so no estimator built on likelihood
and cross-modal sparsity can prefer the truth. Such a remix exists when

- ``j`` is not a descendant of ``i`` (``z_i'`` is generated after ``z_j``: no cycle), and
- every child ``c`` of ``i`` joined to it by a penalised edge already has ``j`` as a parent:
  ``c`` now depends on ``z_i = z_i' - g(z_j)``, so it gains the parent ``j`` otherwise, and
- ``j`` is already a parent of ``i`` where the edge ``j -> i`` is penalised: ``z_i'`` gains
  the parent ``j`` (with the cross-modal penalty alone, within-block edges are free).

A latent with no such partner is one the sparsity argument can identify; one with a partner
is not identified by it, whatever the estimator. For example in ``numerical_case2`` at
generator seed 0 only two of the six latents can be identified (docs/RESULTS.md).
"""
from __future__ import annotations

import numpy as np

from crl_jax.metrics.graph import _binary_adjacency


def descendants(adjacency: np.ndarray) -> np.ndarray:
    """(D, D) bool, [i, j]: j is a descendant of i (row = child in ``adjacency``)."""
    d = adjacency.shape[0]
    reach = adjacency.T.astype(bool)                  # [i, j]: i -> j
    closure = reach.copy()
    for _ in range(d):
        step = closure | ((closure.astype(np.int64) @ reach.astype(np.int64)) > 0)
        if np.array_equal(step, closure):
            break
        closure = step
    return closure


def remix_partners(adjacency, block_ids, penalised) -> list[list[int]]:
    """For every latent ``i``: the latents ``j`` of its block with which it can be remixed
    without changing the penalised edges (the rule of the module docstring).

    adjacency: (D, D) 0/1, row = child. block_ids: (D,) block of each latent (any labels).
    penalised: (D, D) bool, row = child: the edges the sparsity penalty counts.
    """
    adj = _binary_adjacency(adjacency, "adjacency").astype(bool)
    blocks = np.asarray(block_ids)
    pen = np.asarray(penalised, bool)
    d = adj.shape[0]
    if blocks.shape != (d,) or pen.shape != (d, d):
        raise ValueError(f"block_ids must be ({d},) and penalised ({d}, {d}) for a {d}-latent "
                         f"graph; got {blocks.shape} and {pen.shape}.")
    desc = descendants(adj)
    out = []
    for i in range(d):
        children = np.flatnonzero(adj[:, i] & pen[:, i])
        partners = [j for j in range(d)
                    if j != i and blocks[j] == blocks[i] and not desc[i, j]
                    and (adj[i, j] or not pen[i, j])
                    and all(adj[c, j] for c in children if c != j)]
        out.append(partners)
    return out


def sparsity_identified(adjacency, block_ids, penalised) -> np.ndarray:
    """(D,) bool: True where the latent has no remix partner (identifiable by the sparsity
    of the penalised edges), False where it provably is not."""
    return np.asarray([not p for p in remix_partners(adjacency, block_ids, penalised)])
