"""Where does the step's time go, and what holds its memory? (profile and memory)

    python -m benchmarks.profiling time                     # numerical_case2, batch 16, 1 and 8 seeds
    python -m benchmarks.profiling time --batch=512 --seeds=1,3 --microbatch=auto --out=p.json
    python -m benchmarks.profiling memory --model=growth --m=6 --batch=1024
    python -m benchmarks.profiling memory --model=numerical_case2 --batch=4096 --out=mem.json

``time``: traces ``--steps`` calls of the real step (``train.jit_train_step``; with
``--microbatch=auto`` in the chunks ``train.microbatch_size=-1`` chooses) for each seed count
and sums the thread time of every XLA operation in the trace, grouped by what it computes
(read from the ``op_name`` XLA keeps): the part (encoder, decoder, causal prior, other loss
terms, optimiser update, random numbers, copies and other runtime work), the pass (forward,
or backward: ``transpose(jvp(...))``) and the kind (matmul: dot, convolution and the library
fusions that hold one; elementwise: the rest). A ``while`` loop is counted through its body
only. The step's wall time is measured without the profiler beside it, and the table gives
each group's growth from the first seed count to the others. Where operations cover less
than :data:`MIN_TRACE_COVERAGE` of the step, the trace misses work (products run on a
library's own worker threads) and says so.

``memory``: compiles the one-pass train step (one seed) with XLA's dumps on, rebuilds the live
range of every value in its temporary allocation, finds the instruction where the most bytes
are live and prints what is live there, grouped as ``time`` groups operations and by shape.
The live total at the peak should come out near the temporaries XLA reports
(``compiled.memory_analysis()``, printed beside it). ``--model=growth`` is numerical_case2's
model on the growth layouts of ``benchmarks.step`` (``--k`` measurements, ``--m``
modalities). XLA reads its dump flags when its backend starts, so run it as a command.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import shutil
import tempfile

import jax
import numpy as np

from benchmarks import harness as h

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
    operations: every host CPU thread (with inline dispatch, crl_jax.host.set_cpu_dispatch,
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
    config, method, mesh, source, layout = h.setup_model(model, args, batch, seeds)
    # the step training runs: one pass, or the chunks train.microbatch_size=-1 would choose
    (runner,) = h.step_runners(method, config, mesh, layout, source(0), args.microbatch).values()
    n = runner.microbatches
    instructions = hlo_instructions(runner.compiled.as_text())
    reps = h.reps_for(runner.run(1), args.budget, args.steps, 200)
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
# to miss work. Measured at 3 seeds x 512: 0.76 with YNNPACK products (one thread each at 512
# rows); 0.34 with Eigen products, whose products then show 5.4 thread-ms for the step's
# ~2.1 GFLOP, more than both cores can do: their work runs on threads the trace does not show.
MIN_TRACE_COVERAGE = 0.7


def coverage_warning(row: dict) -> str:
    """A line saying the trace misses part of the step, or '' when it covers it."""
    if row["trace_coverage"] >= MIN_TRACE_COVERAGE:
        return ""
    return (f"  note: operations cover only {row['trace_coverage']:.0%} of the "
            f"{row['step_ms']:.2f} ms step (S={row['seeds']}): the trace misses work (products "
            f"run on a library's own worker threads, e.g. Eigen's, or YNNPACK's above ~768 "
            f"rows), so the groups are not the step's split")


def print_time_table(rows: list[dict]) -> None:
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


def cmd_time(args, argv) -> list[dict]:
    malloc, dispatch = h.apply_host_settings(args)
    rows = []
    for s in args.seeds_list:
        rows.append(profile_seeds(args.model, args.batch, s, args))
        r = rows[-1]
        print(f"  {args.model} B={args.batch} seeds={s} ({r['microbatches']} chunk(s)): "
              f"{r['step_ms']:.2f} ms/step, {r['thread_ms_total']:.2f} thread ms of operations",
              flush=True)
    print_time_table(rows)
    if args.out:
        h.write_rows(args.out, argv, malloc, dispatch, rows)
    return rows



# ----------------------------------------------------------------------------- memory
def _dump_dir_from_env() -> str | None:
    m = re.search(r"--xla_dump_to=(\S+)", os.environ.get("XLA_FLAGS", ""))
    return m.group(1) if m else None


def parse_live_ranges(text: str) -> dict[str, tuple[int, int]]:
    """``{value name: (first, last) position}`` from XLA's ``*-live-range.txt`` dump."""
    out, in_ranges = {}, False
    for line in text.splitlines():
        if line.strip() == "BufferLiveRange:":
            in_ranges = True
            continue
        if in_ranges:
            m = re.match(r"\s*([\w.\-]+)\{[^}]*\}:(\d+)-(\d+)", line)
            if m:
                out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
            elif line and not line.startswith(" "):
                in_ranges = False
    return out


def parse_temp_values(text: str) -> tuple[int, dict[str, tuple[int, str, int]]]:
    """(size of the preallocated temporary allocation, ``{value name: (bytes, shape,
    offset)}`` of the values placed in it) from XLA's ``*-buffer-assignment.txt`` dump."""
    head = re.search(r"^allocation \d+: size (\d+), preallocated-temp:", text, re.M)
    if head is None:
        raise ValueError("no preallocated-temp allocation in the buffer assignment")
    body = text[head.end():]
    nxt = re.search(r"^allocation \d+:", body, re.M)
    body = body[:nxt.start()] if nxt else body
    return int(head.group(1)), {
        m.group(1): (int(m.group(2)), m.group(4), int(m.group(3))) for m in re.finditer(
            r"<\d+ ([\w.\-]+) @\d+> \(size=(\d+),offset=(\d+)\): (\S+)", body)}


def _union_bytes(spans) -> int:
    total, end = 0, -1
    for lo, hi in sorted(spans):
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


def peak_live(ranges: dict, values: dict) -> tuple[int, int, list[str]]:
    """(position, bytes, names) where the most temporary bytes are live. Bytes are those of
    the union of the live values' slots (XLA places a value that reuses its operand's
    buffer at the same offset, so the two overlap for one instruction); of values sharing
    a slot exactly, ``names`` keeps the first defined."""
    live = sorted((ranges[n][0], ranges[n][1], n) for n in ranges if n in values)
    best, at = -1, 0
    for t in sorted({a for a, _, _ in live}):
        spans = [(values[n][2], values[n][2] + values[n][0]) for a, b, n in live if a <= t <= b]
        total = _union_bytes(spans)
        if total > best:
            best, at = total, t
    names, seen = [], set()
    for a, b, n in live:
        if a <= at <= b and (values[n][2], values[n][0]) not in seen:
            seen.add((values[n][2], values[n][0]))
            names.append(n)
    return at, best, names


_LINE = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?\s[\w\-]+\((.*)$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def attribute(hlo_text: str) -> dict[str, tuple[str, bool]]:
    """``{instruction: (op_name, matmul)}``. An instruction without its own ``op_name`` (XLA
    drops it from the YNNPACK/XNNPACK product fusions) takes that of its first user that has
    one: a product's output is the activation its user computes from it, so the user names
    the layer (:func:`hlo_instructions` looks at operands first, which for a first
    layer is only the batch parameter)."""
    resolved = hlo_instructions(hlo_text)
    own, users = {}, collections.defaultdict(list)
    for line in hlo_text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        name, rest = m.groups()
        hit = _OP_NAME.search(line)
        own[name] = hit.group(1) if hit else ""
        for operand in re.findall(r"%([\w.\-]+)", rest.split("calls=")[0]):
            users[operand].append(name)
    out = {}
    for name, (_, op_name, matmul) in resolved.items():
        named = own.get(name) or next((own[u] for u in users.get(name, ()) if own.get(u)), "")
        out[name] = (named or op_name, matmul)
    return out


def group_rows(names, values, attributed) -> list[dict]:
    """The live values grouped by (profile group, operation, shape), largest first."""
    groups = collections.defaultdict(lambda: {"count": 0, "bytes": 0})
    for n in names:
        op_name, matmul = attributed.get(n, ("", False))
        group = classify("fusion", op_name, matmul)
        what = re.sub(r"_m\d+\b", "_m*", "/".join(op_name.split("/")[-3:])) or n
        if matmul:
            what = "product output, used by " + what
        shape = re.sub(r"\{[^}]*\}$", "", values[n][1])
        g = groups[(group, what, shape)]
        g["count"] += 1
        g["bytes"] += values[n][0]
    rows = [{"group": k[0], "operation": k[1], "shape": k[2], **v} for k, v in groups.items()]
    return sorted(rows, key=lambda r: -r["bytes"])


def analyse_dump(dump_dir: str, module: str = "jit_train_step") -> dict:
    """Peak and live values of the newest compiled ``module`` in ``dump_dir``."""
    lives = sorted(glob.glob(os.path.join(dump_dir, f"*{module}*after_optimizations-live-range.txt")))
    if not lives:
        raise FileNotFoundError(f"no {module} live-range dump in {dump_dir}")
    prefix = lives[-1][:-len("-live-range.txt")]
    ranges = parse_live_ranges(open(prefix + "-live-range.txt").read())
    temp_bytes, values = parse_temp_values(open(prefix + "-buffer-assignment.txt").read())
    at, peak, names = peak_live(ranges, values)
    attributed = attribute(open(prefix + ".txt").read())
    return {"temp_allocation_mb": temp_bytes / 2**20, "peak_live_mb": peak / 2**20,
            "peak_position": at, "live_values": len(names),
            "rows": group_rows(names, values, attributed)}


def cmd_memory(args, argv) -> dict:
    dump_dir = _dump_dir_from_env()
    made_dir = dump_dir is None
    if made_dir:   # XLA reads its flags once, when the backend starts: set them first
        if jax._src.xla_bridge.backends_are_initialized():
            raise RuntimeError("profiling memory sets XLA_FLAGS=--xla_dump_to=..., which JAX "
                               "reads only before its backend starts: run it as a command")
        dump_dir = tempfile.mkdtemp(prefix="profiling_memory_")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_dump_to={dump_dir} --xla_dump_hlo_as_text").strip()
    jax.config.update("jax_enable_compilation_cache", False)   # a cache hit dumps nothing
    from benchmarks import step   # the growth layouts
    if args.model == "growth":
        ns = argparse.Namespace(growth_batch=args.batch, data_dir=args.data_dir)
        layout = step.growth_layout(k=args.k, m=args.m)
        method, config, mesh, batch = step.growth_setup(layout, ns)
        label = f"growth layout K={args.k} M={args.m}"
    else:
        ns = argparse.Namespace(data_dir=args.data_dir)
        config, method, mesh, source, layout = h.setup_model(args.model, ns, args.batch)
        batch = source(0)
        label = args.model
    runner = h.StepRunner(method, config, mesh, layout, batch, execute=False)
    result = analyse_dump(dump_dir)
    result.update(model=label, batch=args.batch, xla_temp_mb=runner.temp_mb,
                  platform=jax.devices()[0].platform, jax=jax.__version__)
    if made_dir:
        shutil.rmtree(dump_dir, ignore_errors=True)
    print(f"{label}, batch {args.batch}, one seed, one pass: XLA temporaries "
          f"{runner.temp_mb:.1f} MB; live at the peak (position {result['peak_position']}): "
          f"{result['peak_live_mb']:.1f} MB in {result['live_values']} values")
    print(f"{'MB':>7} {'n':>4}  {'group':<34} {'shape':<22} operation")
    for r in result["rows"][:args.top]:
        print(f"{r['bytes'] / 2**20:7.2f} {r['count']:4d}  {r['group']:<34} {r['shape']:<22} "
              f"{r['operation']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}")
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.profiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("time", help="thread time of the step's operations, by group")
    t.add_argument("--model", default="numerical_case2", choices=h.MODELS)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--seeds", default="1,8", help="comma-separated seed counts (vmap)")
    t.add_argument("--microbatch", default="off", choices=("off", "auto"),
                   help="profile the one-pass step ('off') or the step train.microbatch_size=-1 "
                        "trains with ('auto')")
    t.add_argument("--steps", type=int, default=40, help="steps traced (and timed per round)")
    t.add_argument("--rounds", type=int, default=5, help="rounds of the unprofiled timing")
    t.add_argument("--budget", type=float, default=0.5, help="seconds per timing round")
    h.add_host_arguments(t)
    t.add_argument("--out", default="", help="write the rows as JSON here")
    m = sub.add_parser("memory", help="what is live at the peak of the step's temporaries")
    m.add_argument("--model", default="growth",
                   choices=("growth", "numerical_case2", "variant_mnist_3m"))
    m.add_argument("--k", type=int, default=3, help="growth: measurements per modality")
    m.add_argument("--m", type=int, default=2, help="growth: modalities")
    m.add_argument("--batch", type=int, default=1024)
    m.add_argument("--data_dir", default=None,
                   help="variant_mnist_3m: folder with mnist/ and fashion-mnist/ "
                        "(default: $CRL_JAX_DATA_DIR, else ../shared/data)")
    m.add_argument("--top", type=int, default=20, help="rows printed")
    m.add_argument("--out", default="", help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.what == "time":
        args.seeds_list = h.parse_seed_counts(t, "--seeds", args.seeds)
        if args.batch < 1 or args.steps < 1 or args.rounds < 1:
            t.error("--batch, --steps and --rounds must be >= 1")
        h.require_model_data(t, args.model, args.data_dir)
    else:
        if args.batch < 1 or args.k < 1 or args.m < 1:
            m.error("--batch, --k and --m must be >= 1")
        args.data_dir = args.data_dir or h.default_data_dir()
        h.require_model_data(m, args.model, args.data_dir)
    return args


def main(argv=None):
    args = parse_args(argv)
    return (cmd_time if args.what == "time" else cmd_memory)(args, argv)


if __name__ == "__main__":
    main()
