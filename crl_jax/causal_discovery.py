"""PC on learned latents with "no edges into these nodes" background knowledge, and drawing.

`run_pc` wraps causal-learn's PC (`causallearn.search.ConstraintBased.PC.pc`) and returns the
graph as a list of `Edge`s (directed, undirected, bidirected). Background knowledge forbids
every edge *into* the nodes listed in `no_parents` (PersonaX: the shared latents), from any
node, including another such node: an edge between two shared latents is therefore removed,
and an edge between a shared latent and another latent can only point out of the shared one.
This matches the model's prior, which has no edges into the shared block.

`draw_graph` lays the nodes out by block (one column per block, shared in the middle) and
draws arrows for directed edges, plain lines for undirected ones and double arrows for
bidirected ones, with matplotlib only (no Graphviz binary).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

INDEP_TESTS = ("fisherz", "kci", "rcit", "fastkci")
EDGE_TYPES = ("directed", "undirected", "bidirected")
# causal-learn endpoint marks: graph[a, b] is the mark at a on the edge a-b.
_TAIL, _ARROW = -1, 1


@dataclasses.dataclass(frozen=True)
class Edge:
    """``source -> target`` when directed; for the others the order is the node order."""

    source: str
    target: str
    type: str
    weight: float | None = None


@dataclasses.dataclass
class PCResult:
    nodes: list[str]
    edges: list[Edge]
    n_used: int
    seconds: float
    indep_test: str
    alpha: float


def check_pc_args(indep_test: str, alpha: float, max_n: int) -> None:
    """Raises ValueError naming the config field when a PC setting is unusable."""
    if indep_test not in INDEP_TESTS:
        raise ValueError(f"config.causal_discovery.indep_test={indep_test!r} is not one of {INDEP_TESTS} "
                         "(continuous tests; the latents are continuous).")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"config.causal_discovery.alpha={alpha} must be in (0, 1), e.g. 0.05.")
    if int(max_n) < 0:
        raise ValueError(f"config.causal_discovery.max_n={max_n} must be >= 0 (0 = use every row).")


def check_pc_rows(n_rows: int, n_latents: int, where: str) -> None:
    """Raises ValueError when PC cannot run on ``n_rows`` rows of ``n_latents`` variables: its
    partial-correlation tests condition on up to n_latents - 2 variables and need
    n - |S| - 3 > 0 degrees of freedom, hence n_rows >= n_latents + 2."""
    need = n_latents + 2
    if n_rows < need:
        raise ValueError(f"{where}: PC on the learned latents needs at least {need} rows "
                         f"({n_latents} latents), but {n_rows} are used (after the NaN policy "
                         f"and config.causal_discovery.max_n); use a larger table or raise "
                         f"max_n (0 = every row)")


def background_knowledge(names: Sequence[str], no_parents: Sequence[str]):
    """causal-learn BackgroundKnowledge forbidding every edge ``v -> s`` for s in no_parents."""
    from causallearn.graph.GraphNode import GraphNode
    from causallearn.utils.PCUtils.BackgroundKnowledge import BackgroundKnowledge

    unknown = sorted(set(no_parents) - set(names))
    if unknown:
        raise ValueError(f"no_parents names {unknown} are not nodes {list(names)}.")
    bk = BackgroundKnowledge()
    for s in no_parents:
        for v in names:
            if v != s:
                bk.add_forbidden_by_node(GraphNode(v), GraphNode(s))
    return bk


def edges_from_endpoints(graph: np.ndarray, names: Sequence[str]) -> list[Edge]:
    """causal-learn's endpoint matrix -> edges (i -> j is graph[j, i] = 1, graph[i, j] = -1)."""
    graph = np.asarray(graph)
    edges = []
    for i, j in zip(*np.triu_indices(len(names), k=1)):
        a, b = graph[i, j], graph[j, i]
        if a == 0 and b == 0:
            continue
        if a == _TAIL and b == _ARROW:
            edges.append(Edge(names[i], names[j], "directed"))
        elif a == _ARROW and b == _TAIL:
            edges.append(Edge(names[j], names[i], "directed"))
        elif a == _TAIL and b == _TAIL:
            edges.append(Edge(names[i], names[j], "undirected"))
        elif a == _ARROW and b == _ARROW:
            edges.append(Edge(names[i], names[j], "bidirected"))
        else:
            raise ValueError(f"unexpected endpoint marks ({a}, {b}) on edge {names[i]}-{names[j]}")
    return edges


def edges_into(edges: Sequence[Edge], nodes: Sequence[str]) -> list[Edge]:
    """Edges with an arrowhead at, or an undirected end on, one of ``nodes``."""
    nodes = set(nodes)
    return [e for e in edges if e.target in nodes
            or (e.type in ("undirected", "bidirected") and e.source in nodes)]


def run_pc(data: np.ndarray, names: Sequence[str], *, no_parents: Sequence[str] = (),
           indep_test: str = "fisherz", alpha: float = 0.05, max_n: int = 0, seed: int = 0,
           stable: bool = True) -> PCResult:
    """PC on ``data`` (n, p) with columns ``names``; edges into ``no_parents`` forbidden.

    ``max_n > 0`` runs on a seeded random subsample of that many rows (KCI is O(n^2)).
    Columns are z-scored first (fisherz is scale-free; the kernel tests' widths are not).
    """
    from causallearn.search.ConstraintBased.PC import pc

    check_pc_args(indep_test, alpha, max_n)
    data = np.asarray(data, np.float64)
    names = [str(n) for n in names]
    if data.ndim != 2 or data.shape[1] != len(names):
        raise ValueError(f"data has shape {data.shape}; expected (n, {len(names)}) for nodes {names}.")
    if len(set(names)) != len(names):
        raise ValueError(f"node names must be unique, got {names}.")
    if not np.all(np.isfinite(data)):
        raise ValueError("PC input has NaN/Inf values; the latents must be finite.")
    if max_n and data.shape[0] > max_n:
        rows = np.sort(np.random.default_rng(seed).choice(data.shape[0], size=int(max_n), replace=False))
        data = data[rows]
    if data.shape[0] < len(names) + 3:
        raise ValueError(f"PC needs more rows than variables; got {data.shape[0]} rows for {len(names)} nodes.")
    std = data.std(axis=0)
    if np.any(std == 0):
        raise ValueError(f"constant latent(s) {[n for n, s in zip(names, std) if s == 0]}; PC cannot test them.")
    data = (data - data.mean(axis=0)) / std
    bk = background_knowledge(names, no_parents) if no_parents else None
    t0 = time.time()
    cg = pc(data, alpha=float(alpha), indep_test=indep_test, stable=bool(stable),
            background_knowledge=bk, show_progress=False, node_names=names)
    edges = edges_from_endpoints(cg.G.graph, names)
    bad = edges_into(edges, no_parents)
    if bad:  # causal-learn honours the knowledge; this guards the documented guarantee
        raise RuntimeError(f"PC returned edges into background-knowledge sink-free nodes: {bad}")
    return PCResult(nodes=names, edges=edges, n_used=int(data.shape[0]), seconds=time.time() - t0,
                    indep_test=indep_test, alpha=float(alpha))


def adjacency_edges(weights: np.ndarray, names: Sequence[str], threshold: float) -> list[Edge]:
    """Directed edges ``parent -> child`` where ``|W[child, parent]| > threshold`` (row = child)."""
    weights = np.asarray(weights, np.float64)
    if weights.shape != (len(names), len(names)):
        raise ValueError(f"adjacency has shape {weights.shape}; expected {(len(names), len(names))}.")
    child, parent = np.nonzero(np.abs(weights) > threshold)
    return [Edge(names[p], names[c], "directed", float(weights[c, p])) for c, p in zip(child, parent)]


def edges_frame(edges: Sequence[Edge]) -> pd.DataFrame:
    """Edge list as a DataFrame with columns source, target, type (and weight when any is set)."""
    df = pd.DataFrame([(e.source, e.target, e.type) for e in edges], columns=["source", "target", "type"])
    if any(e.weight is not None for e in edges):
        df["weight"] = [np.nan if e.weight is None else e.weight for e in edges]
    return df


def write_edges(edges: Sequence[Edge], path: str) -> str:
    edges_frame(edges).to_csv(path, index=False)
    return path


_ROW = 0.32      # vertical spacing of the nodes of a block
_COL = 1.8       # horizontal spacing of the block columns
_RADIUS = 0.12


def block_layout(blocks: Mapping[str, Sequence[str]]) -> dict[str, tuple[float, float]]:
    """Node positions: each modality block a column (left to right), the "shared" block a row
    above them, so that edges between modality columns never cross a node."""
    columns = [b for b in blocks if b != "shared"]
    pos: dict[str, tuple[float, float]] = {}
    for c, block in enumerate(columns):
        for r, name in enumerate(blocks[block]):
            pos[name] = (c * _COL, -r * _ROW)
    shared = list(blocks.get("shared", ()))
    if shared:
        width = max(len(columns) - 1, 0) * _COL
        xs = width / 2 + (np.arange(len(shared)) - (len(shared) - 1) / 2) * min(0.45, width / max(len(shared), 1) or 0.45)
        for name, x in zip(shared, xs):
            pos[name] = (float(x), 2.2 * _ROW)
    return pos


def draw_graph(edges: Sequence[Edge], blocks: Mapping[str, Sequence[str]], path: str,
               title: str = "") -> str:
    """PNG of the graph; nodes coloured and placed by block (see `block_layout`)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    pos = block_layout(blocks)
    missing = sorted({n for e in edges for n in (e.source, e.target)} - set(pos))
    if missing:
        raise ValueError(f"edges mention nodes {missing} that are in no block.")
    xs = np.array([p[0] for p in pos.values()])
    ys = np.array([p[1] for p in pos.values()])
    x_lo, x_hi = xs.min() - 0.7, xs.max() + 0.7
    y_lo, y_hi = ys.min() - 0.45, ys.max() + 0.45
    scale = 1.5  # inches per data unit
    fig = Figure(figsize=(scale * (x_hi - x_lo), scale * (y_hi - y_lo) + 0.7), dpi=110)
    ax = fig.add_axes((0, 0.5 / (scale * (y_hi - y_lo) + 0.7), 1, scale * (y_hi - y_lo) / (scale * (y_hi - y_lo) + 0.7)))
    palette = ["#8fbcd4", "#f4b183", "#a9d18e", "#d5a6e6", "#ffe699"]
    colours = {b: palette[i % len(palette)] for i, b in enumerate(blocks)}
    x_mid = (xs.min() + xs.max()) / 2
    shared = set(blocks.get("shared", ()))
    shrink = _RADIUS * scale * 72 + 1  # points
    for e in edges:
        (x0, y0), (x1, y1) = pos[e.source], pos[e.target]
        same_row = e.source in shared and e.target in shared
        rad = _arc(x0, y0, x1, y1, x_mid, same_row)
        style = {"directed": "-|>", "undirected": "-", "bidirected": "<|-|>"}[e.type]
        colour = "#c0392b" if e.weight is not None and e.weight < 0 else "#333333"
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle=style, color=colour, lw=1.1, shrinkA=shrink,
                                    shrinkB=shrink, mutation_scale=11,
                                    connectionstyle=f"arc3,rad={rad}"))
    for block, names in blocks.items():
        for name in names:
            ax.add_patch(Circle(pos[name], _RADIUS, facecolor=colours[block], edgecolor="#333333",
                                lw=0.8, zorder=3))
            ax.text(*pos[name], name.rsplit("_", 1)[-1], ha="center", va="center", fontsize=8, zorder=4)
        x = min(pos[n][0] for n in names) if block == "shared" else pos[names[0]][0]
        y = pos[names[0]][1]
        if block == "shared":
            ax.text(x - _RADIUS - 0.08, y, block, ha="right", va="center", fontsize=10, weight="bold")
        else:
            ax.text(x, y + _RADIUS + 0.08, block, ha="center", va="bottom", fontsize=10, weight="bold")
    handles = [Line2D([], [], color="#333333", marker=">", markevery=[1], label="directed"),
               Line2D([], [], color="#333333", label="undirected")]
    if any(e.type == "bidirected" for e in edges):
        handles.append(Line2D([], [], color="#333333", marker="<", markevery=[0], label="bidirected"))
    if any(e.weight is not None and e.weight < 0 for e in edges):
        handles.append(Line2D([], [], color="#c0392b", label="negative weight"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.suptitle(title or f"{len(edges)} edges", fontsize=9, y=0.995, va="top")
    fig.savefig(path)
    return path


def _arc(x0: float, y0: float, x1: float, y1: float, x_mid: float, same_row: bool) -> float:
    """Curvature for matplotlib's ``arc3`` (the control point is displaced by
    ``rad * (dy, -dx)``): same-column edges bulge away from the centre, edges from the
    shared row bend towards the centre (clear of the column they enter), same-row edges
    bulge upwards."""
    dx, dy = x1 - x0, y1 - y0
    if dx == 0:
        outward = -1.0 if x0 <= x_mid else 1.0
        return 0.5 * outward * np.sign(dy)
    if same_row:
        return -0.5 * np.sign(dx)
    if abs(x1 - x_mid) > 1e-9 and abs(dx) < abs(dy) * 2:
        return 0.25 * np.sign(x_mid - (x0 + x1) / 2) * np.sign(dy)
    return 0.06
