"""Figures of a run: training curves, matched latent scatter, block R^2 heatmap, graphs."""
from __future__ import annotations

import json
import os

import numpy as np
from matplotlib.figure import Figure


def _subplots(nrows: int = 1, ncols: int = 1, **kwargs):
    """A pyplot-free figure: works headless and leaves the user's backend alone."""
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)

CURVES = ("loss", "recon", "kl", "tie")


def training_curves(metrics_path: str, out_path: str) -> str:
    rows = [json.loads(line) for line in open(metrics_path) if line.strip()]
    curves = [c for c in CURVES if f"{c}_per_seed" in rows[0]]  # contrastive: loss only
    fig, axes = _subplots(1, len(curves), figsize=(4 * len(curves), 3), squeeze=False)
    axes = axes[0]
    steps = [r["step"] for r in rows]
    for ax, name in zip(axes, curves):
        per_seed = np.asarray([r[f"{name}_per_seed"] for r in rows])
        for i in range(per_seed.shape[1]):
            ax.plot(steps, per_seed[:, i], lw=1, label=f"seed {i}")
        ax.set_title(name)
        ax.set_xlabel("step")
        for i in range(1, len(rows)):   # a staged method: where each stage starts
            if rows[i].get("stage") != rows[i - 1].get("stage"):
                ax.axvline(steps[i - 1], color="grey", ls=":", lw=1)
                ax.annotate(str(rows[i].get("stage")), (steps[i - 1], 1.0), rotation=90,
                            xycoords=("data", "axes fraction"), va="top", fontsize=7)
        if name in ("loss", "recon") and np.all(per_seed > 0):
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    return out_path


def latent_scatter(true: np.ndarray, est: np.ndarray, matching: dict, names: list[str],
                   out_path: str, max_points: int = 2000) -> str:
    """Each true latent against its matched estimated latent (sign-corrected)."""
    t_idx, e_idx, signs = (np.asarray(matching[k]) for k in ("true_idx", "est_idx", "signs"))
    n = min(max_points, true.shape[0])
    cols = len(t_idx)
    fig, axes = _subplots(1, cols, figsize=(2.6 * cols, 2.6), squeeze=False)
    for ax, t, e, s in zip(axes[0], t_idx, e_idx, signs):
        ax.scatter(true[:n, t], s * est[:n, e], s=2, alpha=0.3)
        r = np.corrcoef(true[:, t], s * est[:, e])[0, 1]
        ax.set_title(f"{names[t]} (r={r:.2f})", fontsize=8)
        ax.set_xlabel("true", fontsize=7)
        ax.set_ylabel(f"est #{e}", fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    return out_path


def r2_heatmap(r2_true_from_est: dict, out_path: str, title: str = "") -> str:
    """Rows: true block (target); columns: estimated block (source)."""
    rows = list(r2_true_from_est)
    cols = list(next(iter(r2_true_from_est.values())))
    mat = np.asarray([[r2_true_from_est[r][c] for c in cols] for r in rows])
    fig, ax = _subplots(figsize=(1.2 * len(cols) + 2, 1.0 * len(rows) + 1.5))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center",
                    color="w" if mat[i, j] < 0.6 else "k")
    ax.set_xticks(range(len(cols)), [f"est {c}" for c in cols], rotation=30)
    ax.set_yticks(range(len(rows)), [f"true {r}" for r in rows])
    ax.set_title(title or "block R$^2$ (held out)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    return out_path


def graphs(true_adj: np.ndarray, est_adj: np.ndarray, names: list[str], out_path: str,
           est_weights: np.ndarray | None = None) -> str:
    """True and learned (aligned) adjacency side by side; row = child, column = parent."""
    panels = [("true graph", np.asarray(true_adj, float)),
              ("learned graph (aligned)", np.asarray(est_adj, float))]
    if est_weights is not None:
        panels.append(("learned |W| (model order)", np.abs(np.asarray(est_weights, float))))
    fig, axes = _subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4))
    for i, (ax, (title, mat)) in enumerate(zip(axes, panels)):
        labels = names if i < 2 else [f"est {j}" for j in range(mat.shape[0])]
        ax.imshow(mat, cmap="Greys", vmin=0, vmax=max(1.0, float(mat.max())))
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("parent")
        ax.set_ylabel("child")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    return out_path


def all_figures(workdir: str, evaluation: dict, latent_names: list[str]) -> list[str]:
    out = []
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics_path):
        out.append(training_curves(metrics_path, os.path.join(workdir, "training_curves.png")))
    first = evaluation["per_seed"][0]
    lat = evaluation["test_latents"]
    out.append(latent_scatter(lat["true"], lat["est"][0], first["matching"], latent_names,
                              os.path.join(workdir, "latent_scatter.png")))
    out.append(r2_heatmap(first["r2"]["true_from_est"], os.path.join(workdir, "r2_blocks.png"),
                          "block R$^2$ of true from estimated (seed 0, test)"))
    if "graph" in first:
        out.append(graphs(np.asarray(evaluation["true_adjacency"]),
                          np.asarray(first["graph"]["estimated_adjacency"]), latent_names,
                          os.path.join(workdir, "graph.png"),
                          np.asarray(first["graph"]["estimated_weights"])))
    return out
