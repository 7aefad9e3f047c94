"""evaluate_latents: held-out MCC, block R^2 and graph scores of one replica."""
from __future__ import annotations

import ml_collections
import numpy as np

from crl_jax import evaluation

TRUE_ADJ = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
EVAL_CFG = ml_collections.ConfigDict({"graph_threshold": 0.1, "shd_reversal_cost": 1,
                                      "r2_kind": "linear", "kernel_components": 50})


def _splits(rng, d_extra):
    """True latents and an estimate: a permuted, sign-flipped copy plus d_extra nuisance dims
    inserted first in each block (what a model with room for a shared nuisance learns)."""
    true, est = {}, {}
    for split in evaluation.SPLITS:
        z = rng.normal(size=(400, 4))
        nuisance = rng.normal(size=(400, 2 * d_extra))
        # est blocks: [nuisance_1, z1 (reversed, negated)], [nuisance_2, z2]
        est[split] = np.concatenate([nuisance[:, :d_extra], -z[:, [1, 0]],
                                     nuisance[:, d_extra:], z[:, [2, 3]]], axis=1)
        true[split] = z
    return true, est


def _est_weights(d_extra):
    """The true graph written in the estimate's coordinates (nuisance dims isolated)."""
    d = 2 + d_extra
    pos = {0: d_extra + 1, 1: d_extra, 2: d + d_extra, 3: d + d_extra + 1}
    w = np.zeros((2 * d, 2 * d))
    for child, parent in zip(*np.nonzero(TRUE_ADJ)):
        w[pos[child], pos[parent]] = 0.7
    return w


def test_overcomplete_estimate_is_scored_on_its_matched_components():
    rng = np.random.default_rng(0)
    for d_extra in (0, 1):
        true, est = _splits(rng, d_extra)
        d = 2 + d_extra
        out = evaluation.evaluate_latents(
            true, est, {"a": slice(0, 2), "b": slice(2, 4)}, {"a": slice(0, d), "b": slice(d, 2 * d)},
            TRUE_ADJ, _est_weights(d_extra), EVAL_CFG)
        assert out["mcc_pearson"] > 0.999
        assert min(out["r2_block"].values()) > 0.99
        assert out["graph"]["shd"] == 0 and out["graph"]["f1"] == 1.0
        # a wrong edge between matched components is seen
        w = _est_weights(d_extra)
        w[d + d_extra, d_extra + 1] = 0.0      # drop the true edge 0 -> 2
        bad = evaluation.evaluate_latents(
            true, est, {"a": slice(0, 2), "b": slice(2, 4)}, {"a": slice(0, d), "b": slice(d, 2 * d)},
            TRUE_ADJ, w, EVAL_CFG)
        assert bad["graph"]["shd"] == 1


def test_estimate_with_fewer_dimensions_has_no_graph_score():
    rng = np.random.default_rng(1)
    true, est = _splits(rng, 0)
    est = {k: v[:, :3] for k, v in est.items()}
    out = evaluation.evaluate_latents(true, est, {"a": slice(0, 2), "b": slice(2, 4)},
                                      {"a": slice(0, 2), "b": slice(2, 3)}, TRUE_ADJ,
                                      np.zeros((3, 3)), EVAL_CFG)
    assert "graph" not in out


def test_mcc_is_split_into_the_latents_sparsity_can_identify_and_the_others():
    rng = np.random.default_rng(2)
    true, est = _splits(rng, 0)
    for split in evaluation.SPLITS:          # remix true latent 3 with latent 2 (est column 3)
        est[split][:, 3] = true[split][:, 3] + 1.5 * np.tanh(true[split][:, 2])
    identifiable = np.array([True, True, True, False])
    out = evaluation.evaluate_latents(true, est, {"a": slice(0, 2), "b": slice(2, 4)},
                                      {"a": slice(0, 2), "b": slice(2, 4)}, TRUE_ADJ, None,
                                      EVAL_CFG, identifiable)
    per_latent = np.asarray(out["mcc_pearson_per_latent"])
    assert per_latent[:3].min() > 0.999 and per_latent[3] < 0.8
    assert out["mcc_pearson_identifiable"] == np.mean(per_latent[:3])
    assert out["mcc_pearson_not_identifiable"] == per_latent[3]
    assert np.isclose(out["mcc_pearson"], per_latent.mean())
    summary = evaluation.summarise_seeds([out, out])
    assert summary["mcc_pearson_not_identifiable"]["per_seed"] == [per_latent[3]] * 2
