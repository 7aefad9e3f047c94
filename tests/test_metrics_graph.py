"""Hand-computed tests of crl_jax.metrics.graph (row = child, column = parent)."""
from __future__ import annotations

import numpy as np
import pytest

from crl_jax.metrics import align_to_true, fit_matching, graph_scores, shd, threshold_adjacency

# variant-MNIST truth over (z11, z12, z21, z22): z11 -> z12, z11 -> z21, z21 -> z22
TRUE = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]])


def _edges(d, *pairs):
    """Adjacency from (parent, child) pairs."""
    a = np.zeros((d, d), dtype=int)
    for parent, child in pairs:
        a[child, parent] = 1
    return a


def test_true_graph_helper_uses_row_child_convention():
    np.testing.assert_array_equal(_edges(4, (0, 1), (0, 2), (2, 3)), TRUE)


def test_known_pair_both_conventions():
    # est: 1 -> 0 (reversal of 0 -> 1), 0 -> 2 (correct), 3 -> 1 (extra); 2 -> 3 missing
    est = _edges(4, (1, 0), (0, 2), (3, 1))
    one = graph_scores(TRUE, est, reversal_cost=1)
    assert one["shd"] == 3  # reversal 1 + missing 1 + extra 1
    assert graph_scores(TRUE, est, reversal_cost=2)["shd"] == 4  # reversal 2 + missing 1 + extra 1
    assert shd(TRUE, est) == 3 and shd(TRUE, est, reversal_cost=2) == 4
    assert one["n_true_edges"] == 3 and one["n_est_edges"] == 3
    assert one["precision"] == pytest.approx(1 / 3) and one["recall"] == pytest.approx(1 / 3)
    assert one["f1"] == pytest.approx(1 / 3)


def test_partial_recovery_precision_recall_f1():
    est = _edges(4, (0, 1), (0, 2))  # two of three true edges, no false ones
    s = graph_scores(TRUE, est)
    assert s["shd"] == 1 and s["precision"] == 1.0 and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * (2 / 3) / (1 + 2 / 3))


def test_identical_graphs_score_perfectly():
    s = graph_scores(TRUE, TRUE, reversal_cost=2)
    assert s == {"shd": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "n_true_edges": 3, "n_est_edges": 3}


def test_two_cycle_in_estimate():
    true = _edges(3, (0, 1))
    est = _edges(3, (0, 1), (1, 0))
    assert shd(true, est, reversal_cost=1) == 1  # the pair {0, 1} differs once
    assert shd(true, est, reversal_cost=2) == 1  # one extra directed entry
    s = graph_scores(true, est)
    assert s["precision"] == 0.5 and s["recall"] == 1.0


def test_empty_graph_conventions():
    empty = np.zeros((4, 4), dtype=int)
    s = graph_scores(empty, empty)
    assert s["shd"] == 0 and s["precision"] == 1.0 and s["recall"] == 1.0 and s["f1"] == 1.0
    s = graph_scores(TRUE, empty)  # nothing estimated: no false claim, everything missed
    assert s["shd"] == 3 and s["precision"] == 1.0 and s["recall"] == 0.0 and s["f1"] == 0.0
    s = graph_scores(empty, TRUE)  # nothing to find, three false claims
    assert s["shd"] == 3 and s["precision"] == 0.0 and s["recall"] == 1.0 and s["f1"] == 0.0


def test_threshold_adjacency():
    w = np.array([[0.0, -0.5, 0.05], [0.3, 0.0, -0.09], [0.1, 0.11, 0.0]])
    a = threshold_adjacency(w, 0.1)
    np.testing.assert_array_equal(a, [[0, 1, 0], [1, 0, 0], [0, 1, 0]])
    assert a.dtype.kind == "i"
    np.testing.assert_array_equal(threshold_adjacency(w, 0.0), (w != 0).astype(int))


def test_align_with_known_permutation_through_mcc_matching():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 4))
    perm = np.array([2, 3, 0, 1])  # est component j is true component perm[j]
    est_latents = z[:, perm] * np.array([1.0, -2.0, 0.5, -1.0])
    est_adj = TRUE[np.ix_(perm, perm)]  # the truth expressed in the estimator's order
    assert not np.array_equal(est_adj, TRUE)
    matching = fit_matching(z, est_latents)
    aligned = align_to_true(est_adj, matching, d_true=4)
    np.testing.assert_array_equal(aligned, TRUE)
    assert graph_scores(TRUE, aligned)["shd"] == 0
    # weights are carried through the same permutation
    w_true = TRUE * np.arange(1.0, 17.0).reshape(4, 4)
    np.testing.assert_array_equal(align_to_true(w_true[np.ix_(perm, perm)], matching, 4), w_true)


def test_align_drops_unmatched_estimated_and_zeroes_unmatched_true():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((2000, 3))
    extra = rng.standard_normal((2000, 1))
    est_latents = np.column_stack([extra, z[:, 1], z[:, 0], z[:, 2]])  # est 0 is spurious
    # est graph: spurious 0 -> everything, and est2 -> est1 (= true 0 -> true 1)
    est_adj = _edges(4, (0, 1), (0, 2), (0, 3), (2, 1))
    aligned = align_to_true(est_adj, fit_matching(z, est_latents), d_true=3)
    np.testing.assert_array_equal(aligned, _edges(3, (0, 1)))
    # fewer estimated than true components: the unmatched true row/column is zero
    est_small = np.column_stack([z[:, 2], z[:, 0]])
    aligned = align_to_true(_edges(2, (1, 0)), fit_matching(z, est_small), d_true=3)
    np.testing.assert_array_equal(aligned, _edges(3, (0, 2)))


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: graph_scores(TRUE, TRUE[:3]), "est_adj"),
        (lambda: graph_scores(TRUE[:3, :3], TRUE), "true_adj"),
        (lambda: graph_scores(TRUE, np.eye(4, dtype=int)), "self-loops"),
        (lambda: graph_scores(TRUE, TRUE * 0.5), "0/1"),
        (lambda: graph_scores(TRUE, TRUE, reversal_cost=3), "reversal_cost"),
        (lambda: shd(np.full((4, 4), np.nan), TRUE), "true_adj"),
        (lambda: threshold_adjacency(np.ones(4), 0.1), "weights"),
        (lambda: threshold_adjacency(np.ones((2, 2)), -1.0), "threshold"),
        (lambda: align_to_true(TRUE, "not a matching", 4), "matching"),
    ],
)
def test_bad_input(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_align_rejects_matching_beyond_sizes():
    z = np.random.default_rng(2).standard_normal((500, 4))
    with pytest.raises(ValueError, match="d_true"):
        align_to_true(TRUE, fit_matching(z, z), d_true=3)
