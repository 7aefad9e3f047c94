"""Collect the finished runs of a sweep: ``results.csv`` and ``summary.md``.

``results.csv`` has one row per run and seed: the swept fields, the entry, the method and
preset, the seed index (replica ``i`` of a run folds ``i`` into ``train.seed``) and every
held-out test metric of that seed (``r2_<b>``: true block b from the estimated block b;
``r2_reverse_<b>``: the reverse; ``r2_<t>_from_<e>``: leakage of true block t into the
estimated block e) (``*_val``: the validation sample's MCC, the only MCC that
selection may look at). ``train_seconds`` and ``eval_seconds`` are per run (all seeds of a
run train together), repeated on each of its rows.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

# Columns of summary.md (when present), in order.
SUMMARY_METRICS = ("mcc_pearson", "mcc_spearman", "mcc_pearson_val", "mcc_pearson_identifiable",
                   "mcc_pearson_not_identifiable", "r2_mean", "shd", "f1", "train_seconds")


def _rows_of_report(report: dict, entry, sweep_name: str) -> list[dict]:
    ev = report["evaluation"]
    rows = []
    for i, res in enumerate(ev["per_seed"]):
        row = {"sweep": sweep_name, "entry": entry.name, **entry.setting,
               "model": report["model"], "preset": report["preset"], "seed": i,
               "train_seed": int(entry.config.train.seed), "steps": report["steps"]}
        for key in ("mcc_pearson", "mcc_spearman", "mcc_pearson_val", "mcc_spearman_val"):
            row[key] = res[key]
        # the latents the cross-modal sparsity can identify and the others (synthetic runs)
        for key in ("mcc_pearson_identifiable", "mcc_pearson_not_identifiable"):
            row[key] = res.get(key, np.nan)
        for method in ("pearson", "spearman"):
            for block, v in res[f"mcc_{method}_per_block"].items():
                row[f"mcc_{method}_{block}"] = v
        for block, v in res["r2_block"].items():
            row[f"r2_{block}"] = v
        for block, v in res["r2_block_reverse"].items():
            row[f"r2_reverse_{block}"] = v
        row["r2_mean"] = float(np.mean(list(res["r2_block"].values())))
        # Leakage: true block t regressed on estimated block e != t (e.g. style from content).
        for t, per_est in res.get("r2", {}).get("true_from_est", {}).items():
            for e, v in per_est.items():
                if e != t:
                    row[f"r2_{t}_from_{e}"] = v
        graph = res.get("graph", {})
        for key in ("shd", "precision", "recall", "f1"):
            row[key] = graph.get(key, np.nan)
        row["train_seconds"] = report["train_seconds"]
        row["eval_seconds"] = report.get("eval_seconds", np.nan)
        rows.append(row)
    return rows


def status(workdir: str, entries) -> dict[str, list]:
    """{"done": [...], "failed": [...], "pending": [...]} entries by their files."""
    out = {"done": [], "failed": [], "pending": []}
    for e in entries:
        d = os.path.join(workdir, e.name)
        if os.path.exists(os.path.join(d, "report.json")):
            out["done"].append(e)
        elif os.path.exists(os.path.join(d, "failed.json")):
            out["failed"].append(e)
        else:
            out["pending"].append(e)
    return out


def collect(workdir: str, entries, sweep_name: str) -> pd.DataFrame:
    """One row per finished run and seed, in grid order."""
    rows = []
    for e in entries:
        path = os.path.join(workdir, e.name, "report.json")
        if os.path.exists(path):
            with open(path) as f:
                rows += _rows_of_report(json.load(f), e, sweep_name)
    return pd.DataFrame(rows)


def _pm(values: pd.Series) -> str:
    v = values.dropna().to_numpy(np.float64)
    if v.size == 0:
        return "–"
    return f"{v.mean():.3f} ± {v.std():.3f}"


def summary_markdown(df: pd.DataFrame, entries, fields: list[str], sweep_name: str,
                     state: dict, command: str | None = None) -> str:
    """Mean ± std over seeds per setting, plus unfinished and failed entries."""
    lines = [f"# Sweep `{sweep_name}`", ""]
    if command:
        lines += ["Written by:", "", f"    {command}", ""]
    lines += [f"{len(state['done'])} of {len(entries)} runs finished"
              + (f", {len(state['failed'])} failed" if state["failed"] else "") + ". "
              "Held-out test metrics, mean ± std over seeds (population std); `mcc_pearson_val` "
              "is the validation-sample MCC (for selection). `train_seconds` is the wall time "
              "of the whole run (all seeds train together).", ""]
    if not df.empty:
        block_cols = [c for c in df.columns if c.startswith("r2_") and "_from_" not in c
                      and not c.startswith("r2_reverse_") and c != "r2_mean"]
        metrics = [m for m in SUMMARY_METRICS if m in df.columns and df[m].notna().any()]
        metrics[metrics.index("r2_mean") + 1:metrics.index("r2_mean") + 1] = block_cols
        header = list(fields) + ["seeds"] + metrics
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for e in entries:
            sub = df[df["entry"] == e.name]
            if sub.empty:
                continue
            cells = [str(e.setting[f]) for f in fields] + [str(len(sub))]
            cells += [_pm(sub[m]) if m in sub else "–" for m in metrics]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    for key, title in (("failed", "Failed (see failed.json in the entry directory)"),
                       ("pending", "Not run yet")):
        if state[key]:
            lines += [f"{title}: " + ", ".join(f"`{e.name}`" for e in state[key]), ""]
    return "\n".join(lines)


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
