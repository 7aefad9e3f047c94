"""DAG utilities and the random sparse latent graph (row = child, column = parent)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from synthetic.spec import Spec


def topological_order(adjacency: np.ndarray) -> np.ndarray:
    """Kahn's algorithm (smallest index first among ready nodes, so the order is deterministic).

    Raises ValueError if the graph has a cycle.
    """
    adj = np.asarray(adjacency) != 0
    d = adj.shape[0]
    n_parents = adj.sum(axis=1).astype(np.int64)
    done = np.zeros(d, dtype=bool)
    order = []
    for _ in range(d):
        ready = np.flatnonzero((n_parents == 0) & ~done)
        if ready.size == 0:
            raise ValueError("adjacency contains a directed cycle; a DAG is required.")
        i = int(ready[0])
        order.append(i)
        done[i] = True
        n_parents -= adj[:, i]
    return np.asarray(order, dtype=np.int64)


def is_acyclic(adjacency: np.ndarray) -> bool:
    try:
        topological_order(adjacency)
    except ValueError:
        return False
    return True


def sample_graph(key: jax.Array, spec: "Spec") -> np.ndarray:
    """Random sparse DAG allowed by `spec.allowed_edges_mask()`, deterministic in `key`.

    - within each modality: a random causal order (ranks of uniforms drawn from the key); each
      pair consistent with it is an edge with probability `spec.edge_prob`;
    - s -> each modality latent with probability `spec.edge_prob`;
    - exactly `spec.resolved_n_cross_edges` earlier -> later modality edges, at least one
      into each later modality (one forced edge per later modality, chosen uniformly, the
      rest uniformly among the remaining cross pairs).
    Returns a (D, D) int64 0/1 array.
    """
    d = spec.latent_dim
    blocks = spec.block_ids()
    # All randomness in one draw: [order scores, within-edge, s-edge, cross-edge] uniforms.
    u = np.asarray(jax.random.uniform(key, (4, d, d)), dtype=np.float64)
    order_score = u[0, 0]
    child_b, parent_b = blocks[:, None], blocks[None, :]
    # Random causal order inside each modality: parent must have a smaller random score.
    within_ok = (child_b == parent_b) & (child_b >= 0) & (order_score[None, :] < order_score[:, None])
    adj = (within_ok & (u[1] < spec.edge_prob)) | ((parent_b == -1) & (child_b >= 0) & (u[2] < spec.edge_prob))

    cross = spec.cross_edges_mask()
    scores = np.where(cross, u[3], -np.inf)
    chosen = np.zeros((d, d), dtype=bool)
    for m in range(1, len(spec.modalities)):
        s_m = np.where(blocks[:, None] == m, scores, -np.inf)
        chosen[np.unravel_index(np.argmax(s_m), s_m.shape)] = True
    n_rest = spec.resolved_n_cross_edges - int(chosen.sum())
    if n_rest > 0:
        rest = np.where(chosen, -np.inf, scores).ravel()
        top = np.argsort(-rest, kind="stable")[:n_rest]
        chosen.flat[top] = True
    adj = adj | chosen
    assert is_acyclic(adj)
    return adj.astype(np.int64)
