"""p-value heatmaps: features as rows, traits as columns grouped by LLM, significant cells marked."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def pvalue_heatmap(pvals: pd.DataFrame, status: pd.DataFrame, groups: list[str], traits: list[str],
                   alpha: float, title: str, path: str) -> None:
    """Writes a PNG. pvals/status: rows = features, columns "{group}:{trait}" in group order.

    Colour = p-value on a log scale (dark = small); each cell shows p; "*" marks p < alpha (with a
    thick border); failed cells are grey and read "fail"."""
    n_rows, n_cols = pvals.shape
    fig = Figure(figsize=(1.0 + 0.62 * n_cols, 1.6 + 0.42 * n_rows), dpi=110)
    ax = fig.add_subplot(111)
    values = pvals.to_numpy(dtype=np.float64)
    shown = np.clip(values, 1e-6, 1.0)
    im = ax.imshow(np.ma.masked_invalid(shown), cmap="Blues_r", norm=LogNorm(vmin=1e-6, vmax=1.0),
                   aspect="auto")
    ax.set_facecolor("0.8")  # failed / missing cells
    for i in range(n_rows):
        for j in range(n_cols):
            p = values[i, j]
            if np.isnan(p):
                st = str(status.iat[i, j])
                ax.text(j, i, "fail" if st.startswith("failed") else "", ha="center", va="center",
                        fontsize=7, color="black")
                continue
            sig = p < alpha
            ax.text(j, i, f"{p:.2g}" + ("*" if sig else ""), ha="center", va="center", fontsize=6.5,
                    color="white" if p < 1e-2 else "black", fontweight="bold" if sig else "normal")
            if sig:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="crimson", lw=1.6))
    ax.set_yticks(range(n_rows), list(pvals.index), fontsize=8)
    ax.set_xticks(range(n_cols), [c.split(":", 1)[1] for c in pvals.columns], rotation=90, fontsize=8)
    k = len(traits)
    for g in range(1, len(groups)):
        ax.axvline(g * k - 0.5, color="black", lw=2.0, ls="--")
    top = ax.secondary_xaxis("top")
    top.set_xticks([g * k + (k - 1) / 2 for g in range(len(groups))], groups, fontsize=9, fontweight="bold")
    top.tick_params(length=0)
    ax.set_title(f"{title}  (* and red border: p < {alpha})", fontsize=10, pad=22)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="p-value (log scale)")
    fig.tight_layout()
    fig.savefig(path)
