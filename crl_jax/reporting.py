"""``report.json`` and ``report.md`` of a run."""
from __future__ import annotations

import json
import os

import numpy as np


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


def markdown(report: dict) -> str:
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
    for b, stat in s["r2_block"].items():
        row(f"R² true {b} <- est {b}", stat)
    for b, stat in s["r2_block_reverse"].items():
        row(f"R² est {b} <- true {b}", stat)
    for k, stat in s.get("graph", {}).items():
        row(f"graph {k}", stat)
    oracle = report["evaluation"]["oracle_r2_ceiling"]
    lines += ["", "Oracle R² ceiling (true block through a random invertible map): "
              + ", ".join(f"{b} {v:.3f}" for b, v in oracle.items()), ""]
    if report.get("figures"):
        lines += ["## Figures", ""] + [f"![{os.path.basename(f)}]({os.path.basename(f)})"
                                       for f in report["figures"]]
    return "\n".join(lines) + "\n"


def clean(report: dict) -> dict:
    """The JSON-ready report (what :func:`write` saves as report.json)."""
    out = jsonable({k: v for k, v in report.items() if k != "evaluation"})
    ev = dict(report["evaluation"])
    ev.pop("test_latents", None)
    out["evaluation"] = jsonable(ev)
    return out


def write(workdir: str, report: dict) -> dict:
    clean_report = clean(report)
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(clean_report, f, indent=1)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(markdown(clean_report))
    return clean_report
