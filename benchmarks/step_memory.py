"""What holds the train step's XLA temporaries at their peak.

    python benchmarks/step_memory.py --model=growth --m=6 --batch=1024
    python benchmarks/step_memory.py --model=numerical_case2 --batch=4096 --out=mem.json

It compiles the one-pass train step (one seed) with XLA's dumps on, rebuilds the live range
of every value in the step's temporary allocation from the dumped live-range and
buffer-assignment files, finds the instruction where the most bytes are live, and prints what
is live there, grouped by what computed it (encoder / decoder / causal prior / other, forward
or backward, matrix product or elementwise, as ``profile_step.py`` groups time; the
operation the HLO metadata names, measurement indices folded) and by shape. The live total
at the peak should come out near the step's temporary size that XLA reports
(``compiled.memory_analysis()``, printed beside it): values that share a slot are counted
once, as XLA's heap simulation places them. Why: the chunking rule of
``train.microbatch_size=-1`` and the growth exponents (docs/PERFORMANCE.md) turn on the
temporaries' size, and this shows which activations the backward pass keeps.

``--model=growth`` is numerical_case2's model on the growth section's layouts of
``bench_train.py`` (``--k`` measurements per modality, ``--m`` modalities).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


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
    the layer (``profile_step.hlo_instructions`` looks at operands first, which for a first
    layer is only the batch parameter)."""
    import profile_step as ps
    resolved = ps.hlo_instructions(hlo_text)
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
    import profile_step as ps
    groups = collections.defaultdict(lambda: {"count": 0, "bytes": 0})
    for n in names:
        op_name, matmul = attributed.get(n, ("", False))
        group = ps.classify("fusion", op_name, matmul)
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="growth",
                   choices=("growth", "numerical_case2", "variant_mnist_3m"))
    p.add_argument("--k", type=int, default=3, help="growth: measurements per modality")
    p.add_argument("--m", type=int, default=2, help="growth: modalities")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--data_dir", default=None,
                   help="variant_mnist_3m: folder with mnist/ and fashion-mnist/ "
                        "(default: $CRL_JAX_DATA_DIR, else ../shared/data)")
    p.add_argument("--top", type=int, default=20, help="rows printed")
    p.add_argument("--out", default="", help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.batch < 1 or args.k < 1 or args.m < 1:
        p.error("--batch, --k and --m must be >= 1")
    import bench_train as bt   # importing JAX starts no backend: XLA_FLAGS can still be set
    args.data_dir = args.data_dir or bt.default_data_dir()
    bt.require_model_data(p, args.model, args.data_dir)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import jax
    dump_dir = _dump_dir_from_env()
    made_dir = dump_dir is None
    if made_dir:   # XLA reads its flags once, when the backend starts: set them first
        if jax._src.xla_bridge.backends_are_initialized():
            raise RuntimeError("step_memory sets XLA_FLAGS=--xla_dump_to=..., which JAX reads "
                               "only before its backend starts: run it as a script")
        dump_dir = tempfile.mkdtemp(prefix="step_memory_")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_dump_to={dump_dir} --xla_dump_hlo_as_text").strip()
    jax.config.update("jax_enable_compilation_cache", False)   # a cache hit dumps nothing
    import bench_train as bt
    if args.model == "growth":
        ns = argparse.Namespace(growth_batch=args.batch, data_dir=args.data_dir)
        layout = bt.growth_layout(k=args.k, m=args.m)
        method, config, mesh, batch = bt.growth_setup(layout, ns)
        label = f"growth layout K={args.k} M={args.m}"
    else:
        ns = argparse.Namespace(data_dir=args.data_dir)
        config, method, mesh, source, layout = bt.setup_model(args.model, ns, args.batch)
        batch = source(0)
        label = args.model
    runner = bt.StepRunner(method, config, mesh, layout, batch, execute=False)
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


if __name__ == "__main__":
    main()
