"""Where the time of the compiled train step goes, from a JAX profiler trace.

    python benchmarks/profile_step.py               # numerical_case2, batch 16, 1 and 8 seeds
    python benchmarks/profile_step.py --batch=512 --seeds=1,3 --microbatch=auto --out=p.json
    python benchmarks/profile_step.py --model=variant_mnist_3m --batch=64 --seeds=1

It traces ``--steps`` calls of the real step (``train.jit_train_step``; with
``--microbatch=auto`` in the chunks ``train.microbatch_size=-1`` chooses) for each seed
count, and sums the time of every XLA operation the trace shows (thread time: on CPU the
threads of one step overlap, so the total exceeds the wall time), grouped by what the
operation computes, read from the ``op_name`` XLA keeps for it:

- part: encoder, decoder, causal prior, other loss terms; the optimiser update (gradient
  clipping, Adam, apply; everything outside the differentiated loss); random numbers
  (threefry); copies and other unattributed runtime work;
- pass: forward or backward (``transpose(jvp(...))``);
- kind: matmul (``dot``, convolution, and the fusions and custom calls of XNNPACK, YNNPACK
  or oneDNN that hold one) or elementwise (every other operation: loops, reductions).

A container operation (a ``while`` loop, which also appears as the operations of its body) is
counted through its body only. Beside the profile, the step's wall time is measured without
the profiler (best of ``--rounds``), and the table gives each group's growth from the first
seed count to the others: what scales worse than the work does.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench_train as bt  # noqa: E402  (also puts the repository root on sys.path)

_INSTRUCTION = re.compile(r'\s*(?:ROOT )?%([\w.\-]+) = .*?\s([\w\-]+)\((?:.*?op_name="([^"]*)")?')
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{\s*$")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_MATMUL_OPCODES = {"dot", "convolution"}
UNATTRIBUTED = "copies and other runtime"


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str, bool]]:
    """``{instruction name: (opcode, op_name, matmul)}`` for the instructions of an optimised
    HLO module (``compiled.as_text()``); ``matmul``: a dot or convolution, or a fusion or
    custom call around one (XNNPACK/YNNPACK fusions also hold plain reductions).

    XLA drops ``op_name`` from some instructions it rewrites (a matmul whose size-1 seed axis
    it folded away, the XNNPACK/YNNPACK fusions around it). Such an instruction takes the
    ``op_name`` of the matmul inside it, else of its root, else of its operands (searched a
    few levels up), preferring an operand of the backward pass, then one of the forward
    pass: a weight gradient reads forward activations and backward errors, and belongs to
    the backward pass."""
    parsed, fused_op_name, has_matmul = {}, {}, set()
    computation, found = None, {}
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head:
            computation, found = head.group(1), {}
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, opcode, op_name = m.group(1), m.group(2), m.group(3) or ""
        calls = _CALLS.search(line)
        args = line[m.end(2) + 1:].split(")", 1)[0]
        parsed[name] = (opcode, op_name, calls.group(1) if calls else None,
                        re.findall(r"%([\w.\-]+)", args))
        if computation and (opcode in _MATMUL_OPCODES
                            or opcode == "custom-call" and "matmul" in line.lower()):
            has_matmul.add(computation)
        if computation and op_name:
            if opcode in _MATMUL_OPCODES:
                found["matmul"] = op_name
            if line.lstrip().startswith("ROOT"):
                found["root"] = op_name
            found.setdefault("any", op_name)
            fused_op_name[computation] = (found.get("matmul") or found.get("root")
                                          or found["any"])

    def own(name: str) -> str:
        _, op_name, called, _ = parsed[name]
        return op_name or fused_op_name.get(called, "")

    def resolve(name: str, depth: int = 3) -> str:
        if own(name):
            return own(name)
        level, fallback = [name], ""
        for _ in range(depth):   # breadth first: the nearest operands decide
            level = [o for n in level for o in parsed[n][3] if o in parsed]
            names = [own(n) for n in level if own(n)]
            for wanted in ("transpose(jvp(", "jvp("):
                hits = [c for c in names if wanted in c]
                if hits:
                    return hits[0]
            fallback = fallback or (names[0] if names else "")
        return fallback

    def matmul(name: str) -> bool:
        opcode, _, called, _ = parsed[name]
        return opcode in _MATMUL_OPCODES or called in has_matmul

    return {name: (parsed[name][0], resolve(name), matmul(name)) for name in parsed}


def classify(opcode: str, op_name: str, matmul: bool) -> str:
    """The group of one XLA operation: ``"<part> <pass> <kind>"``, ``"optimiser update"``,
    ``"random numbers"`` or :data:`UNATTRIBUTED`."""
    if re.search(r"threefry|random_bits|random_split|random_fold_in", op_name):
        return "random numbers"
    if opcode in ("copy", "copy-start", "copy-done", "parameter", "tuple",
                  "get-tuple-element", "bitcast") or not op_name:
        return UNATTRIBUTED
    if "jvp(" not in op_name:
        # outside the differentiated loss: the gradient transformation and parameter update
        return "optimiser update" if op_name.startswith("jit(") else UNATTRIBUTED
    # the backward pass is transpose(jvp(...)); a custom_vjp's backward rule
    # (networks.dense) runs under transpose(vmap(jvp(...)))
    backward = re.search(r"transpose\((vmap\()*jvp\(", op_name) is not None
    if re.search(r"causal_prior|log_prior", op_name):
        part = "causal prior"
    elif re.search(r"\.encode\b|encoder_", op_name):
        part = "encoder"
    elif re.search(r"\.decode\b|decoder_", op_name):
        part = "decoder"
    else:
        part = "other loss terms"
    return f"{part} {'backward' if backward else 'forward'} {'matmul' if matmul else 'elementwise'}"


def leaf_intervals(events) -> list:
    """The events of one trace line that contain no other event of the line (a ``while``
    thunk spans the thunks of its body; counting both would count the body twice)."""
    events = sorted(events, key=lambda e: (e[0], -e[1]))
    leaves = []
    for i, (start, end, name) in enumerate(events):
        nxt = events[i + 1] if i + 1 < len(events) else None
        if nxt is not None and nxt[0] < end:
            continue  # a container: the next event starts inside it
        leaves.append((start, end, name))
    return leaves


def _operation_lines(profile):
    """``([(start_ns, end_ns, name), ...], runtime_line)`` of each line that can show XLA
    operations: every host CPU thread (with inline dispatch, host_memory.set_cpu_dispatch,
    the calling thread runs some of the step's operations itself; measured: 54 of 714 in
    3 steps at batch 16, which ones varies from run to run) and a GPU/TPU's 'XLA Ops' line.
    ``runtime_line``: a line of XLA's own threads or the device, whose other events are
    runtime work (the calling thread's other events are Python and dispatch)."""
    for plane in profile.planes:
        for line in plane.lines:
            cpu = plane.name.startswith("/host:CPU")
            device = plane.name.startswith("/device:") and line.name == "XLA Ops"
            if cpu or device:
                # "end: X" marks the completion inside X's own interval: not an operation
                yield ([(e.start_ns, e.end_ns, e.name) for e in line.events
                        if not e.name.startswith("end: ")],
                       device or line.name.startswith("tf_XLA"))


def union_ns(intervals) -> float:
    """Length of the union of ``(start, end)`` intervals."""
    total, reach = 0.0, -np.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def thread_time_by_group(profile, instructions: dict, steps: int) -> tuple[dict, float, dict]:
    """Per step: milliseconds of thread time per group; milliseconds during which at least
    one operation runs (the rest of a step is the runtime between operations); and the
    thread time of events that are not operations of the step (reported, not grouped)."""
    groups, unknown, busy = collections.Counter(), collections.Counter(), []
    for events, runtime_line in _operation_lines(profile):
        for start, end, name in leaf_intervals(events):
            ms = (end - start) / 1e6 / steps
            if name in instructions:
                groups[classify(*instructions[name])] += ms
                busy.append((start, end))
            elif runtime_line:
                unknown[name] += ms
    return dict(groups), union_ns(busy) / 1e6 / steps, dict(unknown)


def profile_seeds(model: str, batch: int, seeds: int, args) -> dict:
    """Profile and wall time of the step of ``seeds`` replicas at ``batch``."""
    config, method, mesh, source, layout = bt.setup_model(model, args, batch, seeds)
    # the step training runs: one pass, or the chunks train.microbatch_size=-1 would choose
    (runner,) = bt.step_runners(method, config, mesh, layout, source(0), args.microbatch).values()
    n = runner.microbatches
    instructions = hlo_instructions(runner.compiled.as_text())
    reps = bt._reps(runner.run(1), args.budget, args.steps, 200)
    wall = min(runner.run(reps) for _ in range(args.rounds))
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(args.steps):
                runner.run(1)   # blocks on each step, so every step is in the trace
        files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
        if not files:
            raise RuntimeError(f"jax.profiler.trace wrote no .xplane.pb under {trace_dir}")
        profile = jax.profiler.ProfileData.from_file(files[0])
        groups, busy_ms, unknown = thread_time_by_group(profile, instructions, args.steps)
    return {"model": model, "batch": batch, "seeds": seeds, "microbatches": n,
            "step_ms": wall * 1e3, "thread_ms": groups,
            "thread_ms_total": float(sum(groups.values())), "busy_ms": busy_ms,
            "trace_coverage": busy_ms / (wall * 1e3),
            "runtime_events_ms": float(sum(unknown.values())),
            "flops_per_step": runner.flops}


# Below this share of the step's wall time covered by traced operations, the trace is taken
# to miss work. Measured (docs/PERFORMANCE.md, *Where the seeds' time goes*), 3 seeds x 512:
# 0.76 with YNNPACK products (one thread each at 512 rows); 0.34 with Eigen products, whose
# products then show 5.4 thread-ms for the step's ~2.1 GFLOP: 380 GFLOP/s of thread time,
# while products of that size run at ~200 GFLOP/s on both cores. Their work runs on
# threads the trace does not show.
MIN_TRACE_COVERAGE = 0.7


def coverage_warning(row: dict) -> str:
    """A line saying the trace misses part of the step, or '' when it covers it."""
    if row["trace_coverage"] >= MIN_TRACE_COVERAGE:
        return ""
    return (f"  note: operations cover only {row['trace_coverage']:.0%} of the "
            f"{row['step_ms']:.2f} ms step (S={row['seeds']}): the trace misses work (products "
            f"run on a library's own worker threads, e.g. Eigen's, or YNNPACK's above ~768 "
            f"rows), so the groups are not the step's split")


def print_table(rows: list[dict]) -> None:
    base = rows[0]
    order = sorted({g for r in rows for g in r["thread_ms"]},
                   key=lambda g: -rows[-1]["thread_ms"].get(g, 0.0))
    head = "".join(f"{'S=' + str(r['seeds']):>17s}" for r in rows)
    grow = "".join(f"{'x S=' + str(base['seeds']) + ' (' + str(r['seeds']) + ')':>14s}"
                   for r in rows[1:])
    print(f"\n## {base['model']}, batch {base['batch']}: thread ms per step (share)")
    print(f"{'group':36s}{head}{grow}")
    for g in order:
        cells = "".join(f"{r['thread_ms'].get(g, 0.0):9.3f} ({r['thread_ms'].get(g, 0.0) / r['thread_ms_total']:5.1%})"
                        for r in rows)
        b = base["thread_ms"].get(g, 0.0)
        ratios = "".join(f"{(r['thread_ms'].get(g, 0.0) / b if b > 0 else float('nan')):14.2f}"
                         for r in rows[1:])
        print(f"{g:36s}{cells}{ratios}")
    tot = "".join(f"{r['thread_ms_total']:9.3f} {'':7s}" for r in rows)
    tot_r = "".join(f"{r['thread_ms_total'] / base['thread_ms_total']:14.2f}" for r in rows[1:])
    print(f"{'all operations':36s}{tot}{tot_r}")
    wall = "".join(f"{r['step_ms']:9.3f} {'':7s}" for r in rows)
    wall_r = "".join(f"{r['step_ms'] / base['step_ms']:14.2f}" for r in rows[1:])
    busy = "".join(f"{r['busy_ms']:9.3f} {'':7s}" for r in rows)
    busy_r = "".join(f"{r['busy_ms'] / base['busy_ms']:14.2f}" for r in rows[1:])
    print(f"{'time any operation runs':36s}{busy}{busy_r}")
    print(f"{'step wall time (no profiler)':36s}{wall}{wall_r}")
    for note in filter(None, map(coverage_warning, rows)):
        print(note)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="numerical_case2", choices=bt.MODELS)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", default="1,8", help="comma-separated seed counts (vmap)")
    p.add_argument("--microbatch", default="off", choices=("off", "auto"),
                   help="profile the one-pass step ('off') or the step train.microbatch_size=-1 "
                        "trains with ('auto')")
    p.add_argument("--steps", type=int, default=40, help="steps traced (and timed per round)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the unprofiled timing")
    p.add_argument("--budget", type=float, default=0.5, help="seconds per timing round")
    bt.add_host_arguments(p)
    p.add_argument("--out", default="", help="write the rows as JSON here")
    args = p.parse_args(argv)
    args.seeds_list = bt.parse_seed_counts(p, "--seeds", args.seeds)
    if args.batch < 1 or args.steps < 1 or args.rounds < 1:
        p.error("--batch, --steps and --rounds must be >= 1")
    bt.require_model_data(p, args.model, args.data_dir)
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    malloc, dispatch = bt.apply_host_settings(args)
    rows = []
    for s in args.seeds_list:
        rows.append(profile_seeds(args.model, args.batch, s, args))
        r = rows[-1]
        print(f"  {args.model} B={args.batch} seeds={s} ({r['microbatches']} chunk(s)): "
              f"{r['step_ms']:.2f} ms/step, {r['thread_ms_total']:.2f} thread ms of operations",
              flush=True)
    print_table(rows)
    if args.out:
        bt.write_rows(args.out, argv, malloc, dispatch, rows)
    return rows


if __name__ == "__main__":
    main()
