"""What a run writes about itself: ``config.json``, ``report.json`` and ``report.md``.

The one writer of these files for every pipeline (``crl_jax.experiments``): a report dict with
``"source": "synthetic"`` (held-out identifiability metrics) or ``"personax"`` (real data: loss
terms and the graphs found on the learned latents) is rendered by its own markdown function.
"""
from __future__ import annotations

import json
import os

import numpy as np

from crl_jax import resume


def jsonable(obj, nan_as_null: bool = False):
    """Plain Python containers and numbers of ``obj`` (numpy arrays and scalars included).

    ``nan_as_null``: write non-finite floats as ``null`` (strict JSON) instead of ``NaN``.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v, nan_as_null) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, nan_as_null) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), nan_as_null)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if nan_as_null and isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _pm(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def latent_names(block_slices) -> list[str]:
    """``block_i`` for every latent dimension, in the latent order (``{block: slice}``)."""
    return [f"{block}_{i}" for block, sl in block_slices.items()
            for i in range(sl.stop - sl.start)]


def write_config(workdir: str, config) -> str:
    """``config.json``: this config, with the history of earlier starts kept
    (:func:`crl_jax.resume.record`)."""
    return resume.record(workdir, config)


def markdown(report: dict) -> str:
    """``report.md`` of either pipeline."""
    text = (_markdown_personax(report) if report.get("source") == "personax"
            else _markdown_synthetic(report))
    changes = report.get("config_changes_on_resume")
    if changes:
        lines = ["", "## Config changes on resume", ""]
        for entry in changes:
            at = ", ".join(f"{d} step {s}" for d, s in entry["resumed_from"].items())
            fields = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in entry["changed"].items())
            lines.append(f"- {entry['started']} (resumed from {at}): {fields}")
        text += "\n".join(lines) + "\n"
    return text


def _markdown_synthetic(report: dict) -> str:
    s = report["evaluation"]["summary"]
    lines = [f"# crl_jax run: {report['model']} on {report['preset']}", "",
             f"- seeds: {report['num_seeds']}, steps: {report['steps']}, "
             f"training wall time: {report['train_seconds']:.1f} s, "
             f"evaluation: {report['eval_seconds']:.1f} s, devices: {report['devices']}",
             "- all numbers on a held-out test sample; MCC matching and R^2 hyper-parameters "
             "fitted on a separate validation sample", "",
             "| metric | mean ± std over seeds | per seed |", "| --- | --- | --- |"]

    def row(name, stat):
        per = ", ".join(f"{v:.3f}" for v in stat["per_seed"])
        lines.append(f"| {name} | {_pm(stat)} | {per} |")

    row("MCC (Pearson)", s["mcc_pearson"])
    row("MCC (Spearman)", s["mcc_spearman"])
    for b, stat in s["mcc_pearson_per_block"].items():
        row(f"MCC {b}", stat)
    identifiable = report["evaluation"].get("identifiable")
    if identifiable is not None and "mcc_pearson_identifiable" in s:
        k, d = int(sum(identifiable)), len(identifiable)
        row(f"MCC, the {k} of {d} latents cross-modal sparsity can identify",
            s["mcc_pearson_identifiable"])
        if k < d:
            row(f"MCC, the other {d - k} (a within-block remix keeps their cross-modal graph: "
                "crl_jax.metrics.identifiability)", s["mcc_pearson_not_identifiable"])
    for b, stat in s["r2_block"].items():
        row(f"R² true {b} <- est {b}", stat)
    for b, stat in s["r2_block_reverse"].items():
        row(f"R² est {b} <- true {b}", stat)
    for k, stat in s.get("graph", {}).items():
        row(f"graph {k}", stat)
    choices = report["evaluation"].get("choices") or {}
    if "lambda" in choices:
        lines += ["", "Chosen on the validation sample (stage_b): lambda per seed "
                  + ", ".join(f"{v:g}" for v in choices["lambda"])
                  + " (from " + ", ".join(f"{v:g}" for v in choices["lambdas"]) + ")"]
    if "flow_layers" in choices:
        lines += ["Flow coupling layers per block, per seed: " + "; ".join(
            "/".join(str(v) for v in seed) for seed in choices["flow_layers"])]
    oracle = report["evaluation"]["oracle_r2_ceiling"]
    lines += ["", "Oracle R² ceiling (true block through a random invertible map): "
              + ", ".join(f"{b} {v:.3f}" for b, v in oracle.items()), ""]
    if report.get("figures"):
        lines += ["## Figures", ""] + [f"![{os.path.basename(f)}]({os.path.basename(f)})"
                                       for f in report["figures"]]
    return "\n".join(lines) + "\n"


def clean(report: dict, nan_as_null: bool = False) -> dict:
    """The JSON-ready report (what :func:`write` saves as report.json): the test latents
    left out, numpy values as plain numbers."""
    out = jsonable({k: v for k, v in report.items() if k != "evaluation"}, nan_as_null)
    if "evaluation" in report:
        ev = dict(report["evaluation"])
        ev.pop("test_latents", None)
        out["evaluation"] = jsonable(ev, nan_as_null)
    return out


def write(workdir: str, report: dict, nan_as_null: bool = False) -> dict:
    """Write ``report.json`` and ``report.md``; returns the JSON-ready report.
    ``nan_as_null``: strict JSON (non-finite numbers as ``null``)."""
    clean_report = clean(report, nan_as_null)
    changes = resume.changes_on_resume(workdir)
    if changes:   # the training fields changed when the run was resumed (crl_jax.resume)
        clean_report["config_changes_on_resume"] = jsonable(changes, nan_as_null)
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(clean_report, f, indent=1)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(markdown(clean_report))
    return clean_report


def _markdown_personax(report: dict) -> str:
    dd, tr = report["data"], report["training"]
    nr = dd["nan_report"]
    lines = [f"# crl_jax PersonaX run: {report['model']} on {dd['path']}", "",
             f"- rows: {nr['n_rows_in']} in the table, {nr['n_rows_out']} used "
             f"(NaN policy {nr['nan_policy']}: {nr['rows_dropped']} rows dropped, "
             f"{nr['values_imputed']} values imputed; rows with a missing image / text embedding: "
             f"{nr.get('image_rows_with_nan', 0)} / {nr.get('text_rows_with_nan', 0)}); "
             f"train {dd['n_train']}, validation {dd['n_val']}",
             f"- measurements: image K={dd['n_measurements']['image']} (d={dd['embedding_dims']['image']}), "
             f"text K={dd['n_measurements']['text']} (d={dd['embedding_dims']['text']}); latents: "
             + ", ".join(f"{b} {len(v)}" for b, v in report["latent_blocks"].items()),
             f"- seeds: {tr['num_seeds']}, steps: {tr['steps']}, training wall time {tr['train_seconds']:.1f} s, "
             f"devices: {tr['devices']}", "",
             "## Loss terms after training (per seed, same sampling key for both splits)", "",
             "| split | loss | recon | kl | tie |", "| --- | --- | --- | --- | --- |"]
    for split, terms in report["loss_terms"].items():
        if terms:
            lines.append(f"| {split} | " + " | ".join(
                ", ".join(f"{v:.4g}" for v in terms[k]) for k in ("loss", "recon", "kl", "tie")) + " |")
    for seed, g in report["causal_discovery"].items():
        lines += ["", f"## PC on the learned latents (seed {seed})", "",
                  f"{g['indep_test']}, alpha {g['alpha']}, {g['n_used']} rows, {g['seconds']:.1f} s; "
                  "no edges into the shared latents (background knowledge). "
                  f"![pc graph]({os.path.basename(g['png'])})", "",
                  "| source | target | type |", "| --- | --- | --- |"]
        lines += [f"| {e['source']} | {e['target']} | {e['type']} |" for e in g["edges"]] or ["| (none) | | |"]
    for seed, g in report.get("prior_graph", {}).items():
        lines += ["", f"## Learned adjacency of the causal prior (seed {seed}, |W| > {g['threshold']})", "",
                  f"{len(g['edges'])} edges; skeleton overlap with PC: {g['agreement_with_pc']['common']} "
                  f"common adjacencies (Jaccard {g['agreement_with_pc']['jaccard']:.2f})"
                  + (f" ![prior graph]({os.path.basename(g['png'])})" if g.get("png") else "")]
    return "\n".join(lines) + "\n"
