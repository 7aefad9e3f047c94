"""Sweep figures: a metric against each swept field, with mean ± std over seeds.

Numeric fields (K, sample size, lambda) give lines against the value; other fields (the
method name, the noise type) give grouped bars. The other swept fields, when they vary,
split the data into one line / bar colour per combination.
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PLOT_METRICS = (("mcc_pearson", "MCC (Pearson)"), ("mcc_spearman", "MCC (Spearman)"),
                ("r2_mean", "block R² (mean over blocks)"), ("shd", "SHD"))


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
               for v in values)


def _hue_label(row, others) -> str:
    return ", ".join(f"{f.split('.')[-1]}={row[f]}" for f in others) or "all"


def field_figure(df: pd.DataFrame, field: str, fields: list[str], path: str) -> str | None:
    """Metric(s) against ``field``; returns the path, or None if nothing to plot."""
    values = list(dict.fromkeys(df[field].tolist()))
    if len(values) < 2:
        return None
    others = [f for f in fields if f != field and df[f].nunique() > 1]
    metrics = [(m, t) for m, t in PLOT_METRICS if m in df.columns and df[m].notna().any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    df = df.assign(_hue=df.apply(lambda r: _hue_label(r, others), axis=1) if others else "all")
    hues = list(dict.fromkeys(df["_hue"].tolist()))
    numeric = _numeric(values)
    for ax, (metric, title) in zip(axes[0], metrics):
        for h, hue in enumerate(hues):
            sub = df[df["_hue"] == hue]
            grouped = sub.groupby(field, sort=False)[metric]
            stats = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=0)})
            stats = stats.reindex([v for v in values if v in stats.index])
            if numeric:
                ax.errorbar(stats.index.to_numpy(float), stats["mean"], yerr=stats["std"],
                            marker="o", capsize=3, label=hue)
            else:
                width = 0.8 / len(hues)
                pos = np.array([values.index(v) for v in stats.index]) + (h - (len(hues) - 1) / 2) * width
                ax.bar(pos, stats["mean"], width, yerr=stats["std"], capsize=3, label=hue)
        if numeric:
            positive = np.array(values, float)
            if np.all(positive > 0) and positive.max() / positive.min() >= 20:
                ax.set_xscale("log")
        else:
            ax.set_xticks(range(len(values)))
            ax.set_xticklabels([str(v) for v in values], rotation=45, ha="right")
        ax.set_xlabel(field)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if len(hues) > 1:
        axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{field}: mean ± std over seeds (held-out test)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def all_figures(df: pd.DataFrame, fields: list[str], out_dir: str) -> list[str]:
    """One figure per swept field with at least two values: ``out_dir/<field>.png``."""
    if df.empty:
        return []
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for field in fields:
        path = field_figure(df, field, fields, os.path.join(out_dir, f"{field}.png"))
        if path:
            paths.append(path)
    return paths
