"""Held-out evaluation of trained replicas (docs/MODEL.md, section 4).

Three fresh samples are drawn from the run's generative process with keys that training
never uses: ``fit`` (to fit the R^2 regressions), ``val`` (R^2 hyper-parameters and the MCC
matching and signs) and ``test`` (every reported number). The latents are the posterior
means of the fused encoders. Nothing is selected on the test sample: ``*_val`` entries (the
validation sample's own MCC) are what model selection and tuning may look at.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from crl_jax import metrics

SPLITS = ("fit", "val", "test")
_EVAL_SALT = 0xE7A1


def heldout_samples(process, data_cfg) -> dict:
    """{split: Sample} drawn with keys disjoint from training's."""
    base = jax.random.fold_in(jax.random.PRNGKey(int(data_cfg.generator_seed)), _EVAL_SALT)
    sizes = {"fit": data_cfg.eval_fit_size, "val": data_cfg.val_size,
             "test": data_cfg.test_size}
    return {name: process.sample(jax.random.fold_in(base, i), int(sizes[name]))
            for i, name in enumerate(SPLITS)}


def encode_seeds(encode_fn: Callable, params, xs, true_z, batch_size: int) -> np.ndarray:
    """Representations for every seed: (S, n, D). ``encode_fn(params, xs, z) -> (n, D)``."""
    fn = jax.jit(jax.vmap(encode_fn, in_axes=(0, None, None)))
    n = xs[0].shape[0]
    chunks = [fn(params, tuple(x[i:i + batch_size] for x in xs), true_z[i:i + batch_size])
              for i in range(0, n, batch_size)]
    return np.asarray(jnp.concatenate(chunks, axis=1), np.float64)


def _mean_std(values) -> dict:
    arr = np.asarray(values, np.float64)
    return {"mean": float(np.nanmean(arr)), "std": float(np.nanstd(arr)),
            "per_seed": [float(v) for v in arr]}


def evaluate_latents(true: dict, est: dict, true_blocks: dict, est_blocks: dict,
                     true_adjacency: np.ndarray, est_weights: np.ndarray | None,
                     eval_cfg, identifiable: np.ndarray | None = None) -> dict:
    """Metrics of one replica. ``true``/``est``: {split: (n, D)} arrays. ``identifiable``
    (D_true,) bool: the latents the cross-modal sparsity can identify
    (:func:`crl_jax.metrics.identifiability.sparsity_identified`); with it the Pearson MCC
    is also reported over those latents and over the others."""
    out = {}
    for method in ("pearson", "spearman"):
        res = metrics.mcc_out_of_sample(true["val"], est["val"], true["test"], est["test"],
                                        method=method, blocks=true_blocks)
        out[f"mcc_{method}"] = res.value
        out[f"mcc_{method}_per_block"] = dict(res.per_block)
        if method == "pearson":
            matching = res.matching
            per_latent = np.full(true["test"].shape[1], np.nan)
            per_latent[matching.true_idx] = res.per_component
            out["mcc_pearson_per_latent"] = per_latent.tolist()
            if identifiable is not None:
                for key, mask in (("identifiable", identifiable), ("not_identifiable", ~identifiable)):
                    out[f"mcc_pearson_{key}"] = (float(np.nanmean(per_latent[mask]))
                                                 if mask.any() else float("nan"))
            out["matching"] = {"true_idx": matching.true_idx.tolist(),
                               "est_idx": matching.est_idx.tolist(),
                               "signs": matching.signs.tolist()}
        out[f"mcc_{method}_val"] = metrics.mcc(true["val"], est["val"], method=method).value
    true_splits = tuple(true[s] for s in SPLITS)
    est_splits = tuple(est[s] for s in SPLITS)
    kwargs = dict(kind=eval_cfg.r2_kind, n_components=int(eval_cfg.kernel_components))
    out["r2"] = metrics.block_r2_matrix(true_splits, est_splits, true_blocks, est_blocks,
                                        **kwargs)
    out["r2_block"] = {b: out["r2"]["true_from_est"][b][b] for b in true_blocks
                       if b in est_blocks}
    out["r2_block_reverse"] = {b: out["r2"]["est_from_true"][b][b] for b in true_blocks
                               if b in est_blocks}
    d_true = true_adjacency.shape[0]
    # A model with more latent dimensions than the truth (e.g. room for a nuisance shared
    # by all measurements) is scored on the graph over its matched components only.
    if (est_weights is not None and est_weights.ndim == 2
            and est_weights.shape[0] == est_weights.shape[1] >= d_true):
        est_adj = metrics.threshold_adjacency(est_weights, float(eval_cfg.graph_threshold))
        aligned = metrics.align_to_true(est_adj, matching, d_true)
        out["graph"] = metrics.graph_scores(true_adjacency, aligned,
                                            reversal_cost=int(eval_cfg.shd_reversal_cost))
        out["graph"]["estimated_adjacency"] = aligned.astype(int).tolist()
        out["graph"]["estimated_weights"] = np.asarray(est_weights).tolist()
    return out


def summarise_seeds(per_seed: list[dict]) -> dict:
    """Mean +- std over seeds of every scalar metric (nested by block where relevant)."""
    summary = {}
    for key in ("mcc_pearson", "mcc_spearman"):
        summary[key] = _mean_std([r[key] for r in per_seed])
        summary[f"{key}_val"] = _mean_std([r[f"{key}_val"] for r in per_seed])
        summary[f"{key}_per_block"] = {
            b: _mean_std([r[f"{key}_per_block"][b] for r in per_seed])
            for b in per_seed[0][f"{key}_per_block"]}
    for key in ("mcc_pearson_identifiable", "mcc_pearson_not_identifiable"):
        if all(key in r for r in per_seed):
            summary[key] = _mean_std([r[key] for r in per_seed])
    for key in ("r2_block", "r2_block_reverse"):
        summary[key] = {b: _mean_std([r[key][b] for r in per_seed]) for b in per_seed[0][key]}
    if all("graph" in r for r in per_seed):
        summary["graph"] = {k: _mean_std([r["graph"][k] for r in per_seed])
                            for k in ("shd", "precision", "recall", "f1")}
    return summary


def select_and_encode(method, params, samples: dict, eval_cfg):
    """The protocol's fit (on 'fit'), selection (on the validation observations only) and
    encoding of every split: (selected params, {split: (S, n, D)} estimates)."""
    params = method.fit(params, samples["fit"].x, samples["fit"].z)
    params = method.select(params, samples["val"].x)
    batch = int(eval_cfg.batch_size)
    est = {s: encode_seeds(method.encode, params, samples[s].x, samples[s].z, batch)
           for s in SPLITS}
    return params, est


def evaluate_run(method, params, process, config) -> dict:
    """Evaluate all seeds (leading axis of ``params``) of a run on held-out samples.

    Returns {"per_seed": [...], "summary": {...}, "oracle_r2_ceiling": ..., ...}.
    """
    data_cfg, eval_cfg = config.data, config.eval
    spec_blocks, model_blocks = process.spec.block_slices, method.latent_blocks
    samples = heldout_samples(process, data_cfg)
    params, est = select_and_encode(method, params, samples, eval_cfg)
    adjacency_weights = None
    if method.adjacency(jax.tree_util.tree_map(lambda a: a[0], params)) is not None:
        adjacency_weights = np.asarray(jax.vmap(method.adjacency)(params))
    true = {s: np.asarray(samples[s].z, np.float64) for s in SPLITS}
    adjacency = np.asarray(process.adjacency)
    identifiable = metrics.sparsity_identified(adjacency, process.spec.block_ids(),
                                               process.spec.cross_edges_mask())
    n_seeds = next(iter(est.values())).shape[0]
    per_seed = []
    for i in range(n_seeds):
        weights = None if adjacency_weights is None else np.asarray(adjacency_weights[i])
        per_seed.append(evaluate_latents(true, {s: est[s][i] for s in SPLITS}, spec_blocks,
                                         model_blocks, adjacency, weights, eval_cfg,
                                         identifiable))
    oracle = metrics.oracle_ceiling(tuple(true[s] for s in SPLITS), spec_blocks,
                                    kind=eval_cfg.r2_kind,
                                    n_components=int(eval_cfg.kernel_components))
    return {"per_seed": per_seed, "summary": summarise_seeds(per_seed),
            "oracle_r2_ceiling": oracle, "true_adjacency": adjacency.astype(int).tolist(),
            "identifiable": identifiable.tolist(),
            "choices": method.choices(params),
            "test_latents": {"true": true["test"], "est": est["test"]}}
