"""The figures of docs/PERFORMANCE.md, drawn from the benchmark JSON in ``benchmarks/results``.

    python -m benchmarks.plot --out=docs/figures

Four figures, each from the files of one benchmark (flags name them; defaults are the shipped
results the page quotes):

- ``seeds.png``: the training loop's time per step for 1-16 vmapped seeds, relative to one
  seed, per batch size (``benchmarks.loop seeds``), beside the target (8 seeds <= 3x one
  seed), the no-sharing line (S seeds = S x one seed) and the floor of the seeds' step
  (their products and optimiser update alone, ``benchmarks.loop floor``).
- ``growth.png``: step time against the number of measurements K, modalities M and the latent
  dimension D, log-log, with the fitted exponent (``benchmarks.step --sections=growth``).
- ``throughput.png``: the step's FLOP/s as a fraction of a comparable matrix product measured
  beside it, per batch and products library (``benchmarks.step --sections=throughput``).
- ``cpu_dots.png``: YNNPACK time over Eigen time per training-loop case
  (``benchmarks.loop libraries``), with the library ``crl_jax.host.dots`` picks for the case.

Plotting only: nothing is measured here, so it runs in seconds on any machine.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, LogLocator, NullFormatter, NullLocator, ScalarFormatter

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
# The performance targets (docs/PERFORMANCE.md, at a glance):
SEEDS_TARGET = (8, 3.0)       # 8 vmapped seeds <= 3x one seed per step
FLOPS_TARGET = 0.40           # step FLOP/s >= 40 % of a comparable matmul
GROWTH_TARGET = 1.1           # fitted exponent in K and M <= 1.1


def _plain_log_axis(axis, ticks) -> None:
    """A log axis labelled at ``ticks`` in plain numbers (1, 2, 4, 8 rather than 2^k)."""
    if axis.axis_name == "x":
        axis.axes.set_xscale("log")
    else:
        axis.axes.set_yscale("log")
    axis.set_major_locator(FixedLocator([float(t) for t in ticks]))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_locator(NullLocator())


def _load(path: str, flag: str, key: str) -> dict:
    """The JSON at ``path``, which must hold ``key`` (the benchmark section it plots)."""
    if not os.path.isfile(path):
        raise SystemExit(f"{flag}: no file {path!r} (run the benchmark named in "
                         f"docs/PERFORMANCE.md, or pass the JSON it wrote)")
    with open(path) as f:
        result = json.load(f)
    if key not in result:
        raise SystemExit(f"{flag}: {path!r} has no {key!r} (it holds {sorted(result)}): "
                         f"not the benchmark this flag plots")
    return result


def seed_ratios(result: dict) -> dict[tuple[int, int], tuple[list[int], list[float]]]:
    """``{(batch, steps_per_call): (seeds, median ms per step / one seed's)}`` from one
    ``benchmarks.loop seeds`` result; every group needs its 1-seed row."""
    groups: dict[tuple[int, int], dict[int, float]] = {}
    for row in result["rows"]:
        key = (int(row["batch"]), int(row["steps_per_call"]))
        groups.setdefault(key, {})[int(row["seeds"])] = float(row["ms_per_step_median"])
    out = {}
    for key, by_seeds in sorted(groups.items()):
        if 1 not in by_seeds:
            raise ValueError(f"batch {key[0]}, {key[1]} steps per call: no 1-seed row to "
                             f"compare with (run python -m benchmarks.loop seeds with 1 in "
                             f"--seeds_list)")
        seeds = sorted(by_seeds)
        out[key] = (seeds, [by_seeds[s] / by_seeds[1] for s in seeds])
    return out


def floor_points(result: dict) -> tuple[int, list[int], list[float]]:
    """``(batch, seeds, floor / one seed's step)`` of one ``benchmarks.loop floor`` result."""
    rows = result["rows"]
    return (int(rows[0]["batch"]), [int(r["seeds"]) for r in rows],
            [float(r["floor_vs_one_seed"]) for r in rows])


def seeds_figure(results: list[dict], floors: list[dict] = ()) -> Figure:
    """Lines: ``benchmarks.loop seeds`` results; hollow markers: ``benchmarks.loop floor``
    results (the products and optimiser alone), coloured as the line of the same batch."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    top, colours = 1, {}
    for result in results:
        for (batch, per_call), (seeds, ratios) in seed_ratios(result).items():
            (line,) = ax.plot(seeds, ratios, "o-", label=f"batch {batch}")
            colours[batch] = line.get_color()
            top = max(top, max(seeds))
    for result in floors:
        batch, seeds, ratios = floor_points(result)
        ax.plot(seeds, ratios, "s--", mfc="none", lw=0.8, color=colours.get(batch),
                label=f"batch {batch}: products + optimiser alone")
        top = max(top, max(seeds))
    xs = np.array([1, top])
    ax.plot(xs, xs, "k:", lw=1, label="S x one seed (no sharing)")
    ax.plot(*SEEDS_TARGET, "r*", ms=14, label=f"target: {SEEDS_TARGET[0]} seeds "
                                             f"<= {SEEDS_TARGET[1]:g}x")
    _plain_log_axis(ax.xaxis, [2 ** i for i in range(int(np.log2(top)) + 1)])
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("vmapped seeds S")
    ax.set_ylabel("time per step / one seed's")
    ax.set_title("Seeds in the training loop (CPU, 2 cores)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


GROWTH_AXES = (("measurements_K", "measurements K"), ("modalities_M", "modalities M"),
               ("latent_dim_D", "latent dimension D"))


def growth_figure(result: dict) -> Figure:
    growth = result["growth"]
    names = [(key, label) for key, label in GROWTH_AXES if key in growth]
    if not names:
        raise ValueError(f"no growth series in the result (has {sorted(growth)}; want "
                         f"{[k for k, _ in GROWTH_AXES]})")
    fig = Figure(figsize=(4 * len(names), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, (key, label) in zip(axes, names):
        entry = growth[key]
        series = entry.get("series") or {"step": entry}
        for name, s in series.items():
            x, ms = np.asarray(s["values"], float), 1e3 * np.asarray(s["step_min_s"])
            ax.plot(x, ms, "o-", label=f"{name}: exponent {s['time_exponent']:.2f}")
        x0, y0 = float(entry["values"][0]), 1e3 * float(entry["step_min_s"][0])
        xs = np.asarray(entry["values"], float)
        ax.plot(xs, y0 * xs / x0, "k:", lw=1, label="linear (exponent 1)")
        _plain_log_axis(ax.xaxis, entry["values"])
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("ms per step")
        ax.set_title(f"batch {entry['batch']}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Growth of the step (target: exponent <= {GROWTH_TARGET} in K and M)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def throughput_rows(result: dict, label: str) -> list[tuple[str, int, str, float]]:
    """``(label, batch, microbatch mode, achieved / matmul FLOP/s)`` per measured step."""
    return [(label, int(r["batch"]), str(r.get("microbatch_mode", "")),
             float(r["ratio_vs_matmul"])) for r in result["throughput"]
            if r.get("ratio_vs_matmul") is not None]


def throughput_figure(labelled: list[tuple[str, dict]]) -> Figure:
    rows = [row for label, result in labelled for row in throughput_rows(result, label)]
    if not rows:
        raise ValueError("no throughput rows with ratio_vs_matmul in the given results")
    groups = sorted({(r[0], r[2]) for r in rows})
    batches = sorted({r[1] for r in rows})
    fig = Figure(figsize=(1.6 + 1.6 * len(batches), 3.6))
    ax = fig.subplots()
    width = 0.8 / len(groups)
    for i, group in enumerate(groups):
        xs, ys = [], []
        for j, batch in enumerate(batches):
            ratios = [r[3] for r in rows if (r[0], r[2]) == group and r[1] == batch]
            if ratios:
                xs.append(j + (i - (len(groups) - 1) / 2) * width)
                ys.append(max(ratios))
        ax.bar(xs, ys, width, label=" / ".join(g for g in group if g))
        for x, y in zip(xs, ys):
            ax.text(x, y + 0.01, f"{y:.2f}", ha="center", fontsize=7)
    ax.axhline(FLOPS_TARGET, color="r", ls="--", lw=1, label=f"target {FLOPS_TARGET:.2f}")
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("step FLOP/s / matmul FLOP/s")
    ax.set_title("Throughput against a comparable matrix product (CPU)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


_PAIR = re.compile(r"(?P<case>.+)_(?P<lib>ynnpack|eigen)\.json$")


def cpu_dots_pairs(folders: list[str]) -> list[dict]:
    """One entry per (config, batch, seeds) measured with both libraries:
    ``{"config", "batch", "seeds", "ynnpack_ms", "eigen_ms", "speedup"}``."""
    found: dict[tuple[str, str], dict[str, dict]] = {}
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
            m = _PAIR.match(os.path.basename(path))
            if m:
                with open(path) as f:
                    found.setdefault((folder, m["case"]), {})[m["lib"]] = json.load(f)
    pairs = []
    for (_, _case), libs in sorted(found.items()):
        if set(libs) != {"ynnpack", "eigen"}:
            continue
        ms = {lib: {(r.get("config", "synthetic"), int(r["batch"]), int(r["seeds"])):
                    float(r["ms_per_step_median"]) for r in libs[lib]["rows"]}
              for lib in libs}
        for key in sorted(set(ms["ynnpack"]) & set(ms["eigen"])):
            y, e = ms["ynnpack"][key], ms["eigen"][key]
            pairs.append({"config": key[0], "batch": key[1], "seeds": key[2],
                          "ynnpack_ms": y, "eigen_ms": e, "speedup": y / e})
    if not pairs:
        raise ValueError(f"no *_ynnpack.json / *_eigen.json pairs in {folders}")
    return pairs


def rule_pick(config_name: str, batch: int, seeds: int) -> str:
    """What ``crl_jax.host.dots.choose`` picks for this case when left on ``auto``."""
    from benchmarks.harness import load_config
    from crl_jax.host import dots as cpu_dots

    config = load_config(config_name.replace("_small", ":small"), "")
    config.train.update(batch_size=batch, num_seeds=seeds)
    saved = os.environ.pop(cpu_dots.ENV, None)
    try:
        return cpu_dots.choose(config)[0]
    finally:
        if saved is not None:
            os.environ[cpu_dots.ENV] = saved


def cpu_dots_figure(pairs: list[dict]) -> Figure:
    """Bars of ``cpu_dots_pairs``; a pair's ``"auto"`` (the rule's pick), where set, is
    written beside its bar."""
    pairs = sorted(pairs, key=lambda p: (p["config"], p["seeds"], p["batch"]))
    picks = [p.get("auto", "") for p in pairs]
    fig = Figure(figsize=(6, 0.8 + 0.28 * len(pairs)))
    ax = fig.subplots()
    ys = np.arange(len(pairs))
    speed = [p["speedup"] for p in pairs]
    ax.barh(ys, speed, color=["tab:green" if s > 1 else "tab:gray" for s in speed])
    ax.axvline(1.0, color="k", lw=1)
    labels, seen = [], {}
    for p in pairs:   # a case measured in two runs (two folders) is shown twice, numbered
        label = f"{p['config']} b{p['batch']} x{p['seeds']}"
        seen[label] = seen.get(label, 0) + 1
        labels.append(label + (f" (run {seen[label]})" if seen[label] > 1 else ""))
    ax.set_yticks(ys, labels, fontsize=7)
    for y, s, pick in zip(ys, speed, picks):
        ax.text(s + 0.01, y, f"{s:.2f}" + (f"  (auto: {pick})" if pick else ""),
                va="center", fontsize=6)
    ax.set_xlim(0.6, max(speed) + 0.35)
    ax.set_xlabel("YNNPACK ms / Eigen ms per step (> 1: Eigen faster)")
    ax.set_title("Products library in the training loop (CPU, 2 cores)", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv=None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "docs", "figures"))
    p.add_argument("--seeds", default=",".join(
        os.path.join(RESULTS, f"loop_seeds_b{b}_cpu.json") for b in (16, 64, 512)),
        help="comma-separated 'benchmarks.loop seeds' results")
    p.add_argument("--seed_floors", default=",".join(
        os.path.join(RESULTS, f"loop_floor_b{b}_cpu.json") for b in (16, 64)),
        help="comma-separated 'benchmarks.loop floor' results drawn on the seeds figure "
             "('' for none)")
    p.add_argument("--growth", default=os.path.join(RESULTS, "step_growth_cpu.json"))
    p.add_argument("--throughput", default=",".join(
        f"{lib}={os.path.join(RESULTS, f'step_throughput_{lib}_cpu.json')}"
        for lib in ("ynnpack", "eigen")), help="comma-separated LABEL=FILE")
    p.add_argument("--cpu_dots", default=os.path.join(RESULTS, "loop_libraries"),
                   help="comma-separated folders of 'benchmarks.loop libraries' results")
    args = p.parse_args(argv)

    seeds = [_load(path, "--seeds", "rows") for path in args.seeds.split(",")]
    floors = [_load(path, "--seed_floors", "rows")
              for path in args.seed_floors.split(",") if path]
    growth = _load(args.growth, "--growth", "growth")
    labelled = []
    for item in args.throughput.split(","):
        label, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--throughput: {item!r} is not LABEL=FILE")
        labelled.append((label, _load(path, "--throughput", "throughput")))
    folders = args.cpu_dots.split(",")
    for folder in folders:
        if not os.path.isdir(folder):
            raise SystemExit(f"--cpu_dots: no folder {folder!r}")
    pairs = cpu_dots_pairs(folders)
    for pair in pairs:
        pair["auto"] = rule_pick(pair["config"], pair["batch"], pair["seeds"])

    os.makedirs(args.out, exist_ok=True)
    written = []
    for name, fig in (("seeds", seeds_figure(seeds, floors)), ("growth", growth_figure(growth)),
                      ("throughput", throughput_figure(labelled)),
                      ("cpu_dots", cpu_dots_figure(pairs))):
        path = os.path.join(args.out, f"{name}.png")
        fig.savefig(path, dpi=110)
        written.append(path)
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
