"""Speed of the PersonaX training step: throughput, FLOP/s against a matmul, scaling.

    python benchmarks/bench_train.py --out=bench_train.json            # every section
    python benchmarks/bench_train.py --sections=throughput --batch_sizes=256,4096

Sections (``--sections``, comma-separated):

- ``throughput``: steps/s and samples/s of the real jitted train step (``train.jit_train_step``,
  one seed, one device) for each model and batch size; compile time of the first step; FLOPs
  of one step from XLA's cost analysis of the compiled step, or where larger from its matrix
  products and convolutions counted in its jaxpr (``product_flops``: XLA's GPU count leaves
  out cuDNN convolutions); achieved FLOP/s; beside it, in
  the same rounds, the FLOP/s of a jitted float32 matmul of comparable shape
  ``(seeds * batch * sum_m K_m, width) @ (width, width)`` (``width`` = widest hidden layer) and
  of a 2048^3 matmul; the ratio achieved / comparable matmul; time to sample one batch
  (``input_pipeline.BatchSource``) as a fraction of a step; peak host RSS, XLA's temp buffer
  size of the step, device peak memory where the device reports it.
- ``seeds``: time per step for 1, 2, 4, 8, 16 seeds trained together (vmap), of the
  optimiser update alone for those seeds (its cost grows with the seeds, not the batch), and
  of the step's matrix products alone (every ``dot_general`` of the step's jaxpr on random
  operands of its shapes, one jitted program); matmuls + optimiser alone, in units of one
  seed's step, is a floor for the seeds' step that no fusion or schedule can beat
  (``--seed_floors=off`` skips the two floors: two compiles fewer per seed count).
- ``devices``: time per step at a fixed global batch on 1, 2, 4, 8 devices (on CPU a
  subprocess per count with ``--xla_force_host_platform_device_count``; on GPU/TPU the
  first N real devices).
- ``growth``: time per step as measurements K, modalities M and latent dimension D grow;
  fitted exponent (slope of log time against log size).
- ``chunks``: for the growth section's K and M layouts (and with ``--chunk_series=images``
  the image model at ``--chunk_image_batches``), the step in 1, 2, 4, 8 chunks
  (``--chunk_counts``, gradient accumulation) and the count ``train.microbatch_size=-1``
  picks (``steps.choose_microbatches``), in paired rounds: the auto choice against the
  fastest count, i.e. whether the auto rule is right on this machine.
- ``parts``: what the step spends its time on: encoder, causal prior, decoder (each forward
  and backward), the whole loss forward, forward + backward, and the optimiser update.
- ``bandwidth``: GB/s of a jitted elementwise ``a * x + b`` over float32 buffers of growing
  size: buffers above what the C allocator reuses (glibc's 32 MiB mmap ceiling, or a thread
  arena's 64 MiB with ``host_memory.tune_malloc``) are mapped and page-faulted afresh on
  every call, and the GB/s drop; so does the speed of a step whose temporaries
  (``xla_temp_mb``) exceed it.
- ``products``: GFLOP/s of a jitted float32 batched product ``(b, rows, w) @ (b, w, w)``
  (``w`` = numerical_case2's widest layer), the form of the step's per-measurement and
  per-seed layers, for each ``--product_rows`` and ``--product_batches``: how fast XLA runs
  the step's products at its batch sizes (on CPU, products of few rows run on one thread).

``--microbatch`` (default ``both``): the throughput, seeds and growth sections time the
one-pass step and the step a run with ``train.microbatch_size=-1`` uses (gradient
accumulation, ``steps.choose_microbatches``: one pass while the XLA temporaries fit
``steps.AUTO_MICROBATCH_TEMP_MB``, else chunks; the same step when that is one chunk). The
chunked step is rated with the FLOPs of the one-pass step (the same arithmetic; XLA's cost
analysis counts one iteration of a scan).

Timing: each measurement is ``--rounds`` rounds of ``--steps`` steps, blocked at the end of
the round (every step on a multi-device CPU mesh, as the training loop does); reported is the
fastest round (the least disturbed on a shared machine) and the median. Ratios pair the two
numbers of the same rounds. The persistent compilation cache is disabled so compile times
are real. Runs unchanged on GPU (device memory from ``Device.memory_stats``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.extend import core as jax_core  # noqa: E402
import numpy as np  # noqa: E402

from configs import default as default_config  # noqa: E402
from configs import synthetic as synthetic_config  # noqa: E402
from crl_jax import cpu_dots, experiment, host_memory, input_pipeline, methods, parallel, steps, train  # noqa: E402
from crl_jax.models import vae  # noqa: E402

SECTIONS = ("throughput", "seeds", "devices", "growth", "chunks", "parts", "bandwidth",
            "products")
MODELS = ("numerical_case2", "variant_mnist_3m")


# ----------------------------------------------------------------------------- configs
def model_config(model: str, data_dir: str, batch: int, num_seeds: int = 1):
    """The training config of a benchmark model (the shipped config files)."""
    if model == "numerical_case2":
        config = synthetic_config.get_config("case2")
    elif model == "variant_mnist_3m":
        try:
            from configs import variant_mnist
            config = variant_mnist.get_config()
        except ImportError:  # before configs/variant_mnist.py existed
            config = default_config.base_config()
            config.data.preset, config.model.encoder = "variant_mnist_3m", "conv"
        config.data.data_dir = data_dir
    else:
        raise ValueError(f"--models: unknown model {model!r}; choose from {list(MODELS)}")
    config.train.batch_size = int(batch)
    config.train.num_seeds = int(num_seeds)
    config.train.progress = False
    return config


def default_data_dir() -> str:
    env = os.environ.get("CRL_JAX_DATA_DIR", "")
    return env or os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))


# ----------------------------------------------------------------------------- timing
def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def _temp_bytes(compiled) -> float:
    try:
        mem = compiled.memory_analysis()
        return float(mem.temp_size_in_bytes) if mem is not None else float("nan")
    except (AttributeError, NotImplementedError):
        return float("nan")


def host_peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def device_peak_mb(device) -> float | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 2**20


class StepRunner:
    """A compiled train step with its (donated) state and one fixed batch.

    ``microbatches > 1``: the gradient-accumulation step. XLA's cost analysis counts one
    iteration of its ``lax.scan``, so pass ``flops`` (those of the one-pass step: the same
    arithmetic) to rate it."""

    def __init__(self, method, config, mesh, layout, batch, microbatches: int = 1,
                 flops: float | None = None, execute: bool = True):
        self.state = train.init_state(method, config, mesh, layout)
        self.microbatches = int(microbatches)
        t0 = time.perf_counter()
        self.compiled = train.jit_train_step(method, mesh, self.microbatches).lower(
            self.state, batch).compile()
        self.compile_s = time.perf_counter() - t0
        self.xla_flops = _flops(self.compiled) * mesh.devices.size  # SPMD: per-device
        self.product_flops = product_flops(jax.make_jaxpr(
            train.jit_train_step(method, mesh, self.microbatches))(self.state, batch))
        # XLA's count misses convolutions on GPU (product_flops); the products are a floor
        self.flops = (float(flops) if flops is not None
                      else float(np.nanmax([self.xla_flops, self.product_flops])))
        self.temp_mb = _temp_bytes(self.compiled) / 2**20
        self.batch = batch
        self.sync_each = parallel.needs_step_sync(mesh)
        if execute:
            self.run(1)  # warm-up (first execution allocates)

    def run(self, n: int) -> float:
        """Seconds per step over ``n`` steps."""
        t0 = time.perf_counter()
        for _ in range(n):
            self.state, metrics = self.compiled(self.state, self.batch)
            if self.sync_each:
                jax.block_until_ready(metrics)
        jax.block_until_ready((self.state, metrics))
        return (time.perf_counter() - t0) / n


def step_runners(method, config, mesh, layout, batch, mode: str) -> dict:
    """``{"one pass": runner}`` and/or ``{"auto": runner}`` (the chunks a run with
    ``train.microbatch_size=-1`` would use, chosen by ``train.resolve_microbatches`` from the
    one-pass step's XLA temporaries; the same runner object when it picks 1). With
    ``mode="auto"`` the one-pass step is only compiled (for its FLOPs and temporaries), never
    run: at large batches it would not fit in memory."""
    one = StepRunner(method, config, mesh, layout, batch, execute=mode != "auto")
    out = {} if mode == "auto" else {"one pass": one}
    if mode in ("auto", "both"):
        config.train.microbatch_size = -1
        n = train.resolve_microbatches(config, method, mesh, one.state, batch,
                                       one_pass_temp_bytes=one.temp_mb * 2**20)
        if n == 1 and mode == "auto":
            one.run(1)  # warm-up
        out["auto"] = one if n == 1 else StepRunner(method, config, mesh, layout, batch, n,
                                                    flops=one.flops)
    return out


class Matmul:
    """A jitted float32 ``(rows, width) @ (width, cols)`` on ``device``."""

    def __init__(self, rows: int, width: int, cols: int, device):
        ka, kb = jax.random.split(jax.random.PRNGKey(0))
        self.a = jax.device_put(jax.random.normal(ka, (rows, width), jnp.float32), device)
        self.b = jax.device_put(jax.random.normal(kb, (width, cols), jnp.float32), device)
        self.fn = jax.jit(jnp.matmul)
        self.flops = 2.0 * rows * width * cols
        self.shape = (rows, width, cols)
        jax.block_until_ready(self.fn(self.a, self.b))

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            out = self.fn(self.a, self.b)
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / n


def _reps(seconds_each: float, budget: float = 0.5, lo: int = 1, hi: int = 50) -> int:
    return int(min(max(budget / max(seconds_each, 1e-6), lo), hi))


def paired_rounds(runners: dict, reps: dict, rounds: int) -> dict:
    """Interleave the runners ``rounds`` times; per runner the list of seconds per call."""
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            times[name].append(runner.run(reps[name]))
    return times


def summary(ts) -> dict:
    return {"min_s": float(np.min(ts)), "median_s": float(np.median(ts)), "all_s": list(map(float, ts))}


# ----------------------------------------------------------------------------- builders
def setup_model(model: str, args, batch: int, num_seeds: int = 1, devices=None,
                prefetch_steps: int | None = None):
    config = model_config(model, args.data_dir, batch, num_seeds)
    if prefetch_steps is not None:
        config.train.prefetch_steps = int(prefetch_steps)
    mesh = parallel.make_mesh(devices if devices is not None else jax.devices()[:1])
    process, method, mesh = train.setup(config, None, mesh=mesh)
    source = input_pipeline.BatchSource.from_process(process, config.data, config.train,
                                                     parallel.batch_sharding(mesh))
    layout = experiment.data_layout(process.spec)
    return config, method, mesh, source, layout


def widest_layer(config) -> int:
    return int(max(config.model.hidden))


def images_available(data_dir: str) -> bool:
    return all(os.path.isdir(os.path.join(data_dir, d)) for d in ("mnist", "fashion-mnist"))


# ----------------------------------------------------------------------------- sections
def section_throughput(args) -> list[dict]:
    rows = []
    device = jax.devices()[0]
    peak = Matmul(2048, 2048, 2048, device)
    for model in args.models:
        if model == "variant_mnist_3m" and not images_available(args.data_dir):
            print(f"skip {model}: no mnist/ and fashion-mnist/ under --data_dir={args.data_dir}")
            continue
        for batch in args.batch_sizes:
            if model == "variant_mnist_3m" and batch > args.image_max_batch:
                continue
            config, method, mesh, source, layout = setup_model(model, args, batch)
            batch_arrays = source(0)
            jax.block_until_ready(batch_arrays)
            modes = step_runners(method, config, mesh, layout, batch_arrays, args.microbatch)
            sampler = _Sampler(source)
            rows_mm = batch * sum(layout.n_measurements)
            comparable = Matmul(rows_mm, widest_layer(config), widest_layer(config), device)
            runners = {"sample": sampler, "matmul": comparable, "peak": peak, **modes}
            reps = {"sample": 3, "matmul": _reps(comparable.run(1), args.budget),
                    "peak": _reps(peak.run(1), args.budget),
                    **{m: _reps(r.run(1), args.budget, args.steps, 50) for m, r in modes.items()}}
            times = paired_rounds(runners, reps, args.rounds)
            for mode, runner in modes.items():
                row = throughput_row(model, batch, mode, runner, times[mode], times, comparable,
                                     peak, device)
                rows.append(row)
                print(f"  {model} B={batch} {mode} ({runner.microbatches} chunk(s)): "
                      f"{row['steps_per_s']:.2f} steps/s, "
                      f"{row['achieved_flops'] / 1e9:.1f} GFLOP/s = {row['ratio_vs_matmul']:.2f} x "
                      f"matmul ({row['matmul_flops'] / 1e9:.1f} GFLOP/s)", flush=True)
            del modes, runners, sampler, comparable
    return rows


def throughput_row(model, batch, mode, runner, step_times, times, comparable, peak,
                   device) -> dict:
    """One row of the throughput table: ``step_times`` of ``runner`` against the sampler,
    comparable-matmul and peak-matmul ``times`` of the same rounds."""
    best = {k: float(np.min(times[k])) for k in ("sample", "matmul", "peak")}
    best["step"] = float(np.min(step_times))
    per_round = {"step": np.asarray(step_times), "matmul": np.asarray(times["matmul"])}
    return {
        "model": model, "batch": batch, "seeds": 1, "compile_s": runner.compile_s,
        "microbatch_mode": mode, "microbatches": runner.microbatches,
        "step": summary(step_times), "steps_per_s": 1.0 / best["step"],
        "samples_per_s": batch / best["step"], "flops_per_step": runner.flops,
        "xla_flops_per_step": runner.xla_flops, "product_flops_per_step": runner.product_flops,
        "achieved_flops": runner.flops / best["step"],
        "matmul_shape": comparable.shape,
        "matmul_flops": comparable.flops / best["matmul"],
        "peak_matmul_flops": peak.flops / best["peak"],
        "ratio_vs_matmul": (runner.flops / best["step"]) / (comparable.flops / best["matmul"]),
        "ratio_vs_matmul_per_round": list(map(float, (runner.flops / per_round["step"])
                                              / (comparable.flops / per_round["matmul"]))),
        "ratio_vs_matmul_median": float(np.median(
            (runner.flops / per_round["step"]) / (comparable.flops / per_round["matmul"]))),
        "ratio_vs_peak_matmul": (runner.flops / best["step"]) / (peak.flops / best["peak"]),
        "sample": summary(times["sample"]),
        "sample_fraction_of_step": best["sample"] / best["step"],
        "xla_temp_mb": runner.temp_mb, "host_peak_rss_mb": host_peak_rss_mb(),
        "device_peak_mb": device_peak_mb(device),
    }


class _Sampler:
    """Seconds per batch of ``source``, over whole chunks of ``source.prefetch_steps`` steps
    (one sampler call draws that many steps' batches, so partial chunks would mis-measure)."""

    def __init__(self, source):
        self.p = source.prefetch_steps
        self.source, self.step = source, self.p
        jax.block_until_ready(source(0))

    def run(self, n: int) -> float:
        n = -(-n // self.p) * self.p
        t0 = time.perf_counter()
        for _ in range(n):
            out = self.source(self.step)
            self.step += 1
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / n


class _OptimiserRunner:
    """The optimiser update alone (gradient clipping + Adam + apply) of all seeds' state:
    what every step pays per seed whatever the batch."""

    def __init__(self, method, config, mesh, layout, warm_up: bool = True):
        self.state = train.init_state(method, config, mesh, layout)
        self.grads = jax.tree.map(lambda p: p * 1e-3, self.state.params)
        self.fn = jax.jit(jax.vmap(lambda st, g: st.apply_gradients(grads=g)),
                          donate_argnums=(0,))
        if warm_up:   # compiles self.fn
            self.run(1)

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.state = self.fn(self.state, self.grads)
        jax.block_until_ready(self.state)
        return (time.perf_counter() - t0) / n


_LOOPS = ("scan", "while")


def jaxpr_equations(jaxpr, times: float = 1.0, loops: tuple = ()):
    """Every equation of a jaxpr, nested jaxprs included (``pjit``, ``custom_vjp``, loop
    bodies, ...), as ``(eqn, times, loops)``: how often it runs per call as far as known (a
    ``scan`` body its ``length`` times) and the loops around it (``"scan"``, ``"while"``),
    outermost first."""
    for eqn in jaxpr.eqns:
        yield eqn, times, loops
        name = eqn.primitive.name
        inner_times = times * eqn.params.get("length", 1) if name == "scan" else times
        inner_loops = loops + (name,) if name in _LOOPS else loops
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                sub = sub.jaxpr if isinstance(sub, jax_core.ClosedJaxpr) else sub
                if isinstance(sub, jax_core.Jaxpr):
                    yield from jaxpr_equations(sub, inner_times, inner_loops)


def jaxpr_matmuls(closed_jaxpr) -> list:
    """The ``dot_general`` equations of a jaxpr, nested jaxprs included (``pjit``,
    ``custom_vjp``, ...). Raises if one sits inside a loop (its product runs more than once)."""
    out = []
    for eqn, _, loops in jaxpr_equations(closed_jaxpr.jaxpr):
        if eqn.primitive.name == "dot_general":
            if loops:
                raise ValueError("jaxpr_matmuls: a dot_general inside a loop runs more "
                                 "than once per call; time the one-pass step")
            out.append(eqn)
    return out


def matmul_flops(eqn) -> float:
    """2 x output elements x contracted size of one ``dot_general`` equation."""
    (contract_lhs, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * float(np.prod(eqn.outvars[0].aval.shape)) * float(
        np.prod([lhs[d] for d in contract_lhs]))


def conv_flops(eqn) -> float:
    """2 x the multiply-adds of one ``conv_general_dilated`` equation that touch real input:
    taps on padding or on the holes of an input dilation (a transposed convolution's) are
    not counted, as in XLA's cost analysis."""
    dims = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    taps = 1.0
    for i, (ld, rd) in enumerate(zip(dims.lhs_spec[2:], dims.rhs_spec[2:])):
        size, window, length = lhs[ld], rhs[rd], out[dims.out_spec[2 + i]]
        lo = eqn.params["padding"][i][0]
        q = (np.arange(length)[:, None] * eqn.params["window_strides"][i]
             + np.arange(window)[None, :] * eqn.params["rhs_dilation"][i] - lo)
        dil = eqn.params["lhs_dilation"][i]
        taps *= float(np.sum((q >= 0) & (q <= (size - 1) * dil) & (q % dil == 0)))
    return (2.0 * out[dims.out_spec[0]] * out[dims.out_spec[1]] * rhs[dims.rhs_spec[1]]
            * taps)


_PRODUCT_FLOPS = {"dot_general": matmul_flops, "conv_general_dilated": conv_flops}


def product_flops(closed_jaxpr) -> float:
    """FLOPs of every matrix product and convolution of a jaxpr, nested jaxprs included, a
    ``scan`` body's counted ``length`` times (a ``while`` body's trip count is unknown:
    raises).

    A floor on the arithmetic of the program that does not depend on the backend: XLA's GPU
    cost analysis counts no FLOPs for the cuDNN calls that convolutions become (the image
    model's step at batch 256 on an H200: 10.3 GFLOP from XLA, 29.3 here), so
    :class:`StepRunner` rates a step by the larger of the two counts."""
    total = 0.0
    for eqn, times, loops in jaxpr_equations(closed_jaxpr.jaxpr):
        count = _PRODUCT_FLOPS.get(eqn.primitive.name)
        if count is None:
            continue
        if "while" in loops:
            raise ValueError("product_flops: products inside a while loop run an unknown "
                             "number of times")
        total += times * count(eqn)
    return total


class _MatmulsRunner:
    """The matrix products of the one-pass step alone: every ``dot_general`` of its jaxpr on
    random operands of the same shapes and dimension numbers, in one jitted program, with no
    elementwise work and no dependencies between them. What XLA's matrix products on this
    device need for one step's products; no fusion or schedule of the rest of the step can
    make the step faster than this plus the optimiser update."""

    def __init__(self, method, state, batch, warm_up: bool = True):
        """``state``: a train state of the step (only its shapes are read); ``warm_up``:
        compile and run ``fn`` once (off when only the operands and products are wanted)."""
        eqns = jaxpr_matmuls(jax.make_jaxpr(steps.make_train_step(method, 1))(state, batch))
        key = jax.random.PRNGKey(0)
        self.operands = []
        for i, eqn in enumerate(eqns):
            keys = jax.random.split(jax.random.fold_in(key, i), len(eqn.invars))
            self.operands.append(tuple(jax.random.normal(k, v.aval.shape, v.aval.dtype)
                                       for k, v in zip(keys, eqn.invars)))
        # (primitive, params) of each product; bench_seed_floor.py runs them in a scan
        self.prims = prims = [(eqn.primitive, dict(eqn.params)) for eqn in eqns]
        self.fn = jax.jit(lambda ops: [p.bind(*o, **kw) for (p, kw), o in zip(prims, ops)])
        self.count = len(eqns)
        self.flops = sum(matmul_flops(e) for e in eqns)
        if warm_up:
            self.run(1)

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            out = self.fn(self.operands)
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / n


FLOOR_PARTS = ("optimiser", "matmuls")


def section_seeds(args) -> list[dict]:
    rows = []
    for batch in args.seed_batches:
        runners, reps = {}, {}
        for s in args.seeds_list:
            config, method, mesh, source, layout = setup_model("numerical_case2", args, batch, s)
            for mode, runner in step_runners(method, config, mesh, layout, source(0),
                                             args.microbatch).items():
                runners[(mode, s)] = runner
                reps[(mode, s)] = _reps(runner.run(1), args.budget, args.steps, 50)
            if args.seed_floors == "on":
                runners[("optimiser", s)] = _OptimiserRunner(method, config, mesh, layout)
                runners[("matmuls", s)] = _MatmulsRunner(method, runner.state, runner.batch)
                for part in FLOOR_PARTS:
                    reps[(part, s)] = _reps(runners[(part, s)].run(1), args.budget, 3, 200)
            print(f"  B={batch} seeds={s}: compiled in {runner.compile_s:.1f} s", flush=True)
        times = paired_rounds(runners, reps, args.rounds)
        for mode in dict.fromkeys(m for m, _ in runners if m not in FLOOR_PARTS):
            s0 = args.seeds_list[0]
            base = float(np.min(times[(mode, s0)])) / s0
            for s in args.seeds_list:
                t = float(np.min(times[(mode, s)]))
                runner = runners[(mode, s)]
                row = {"model": "numerical_case2", "batch": batch, "seeds": s,
                       "microbatch_mode": mode, "microbatches": runner.microbatches,
                       "step": summary(times[(mode, s)]), "time_vs_one_seed": t / base,
                       "per_seed_cost_vs_one_seed": t / (s * base),
                       "xla_temp_mb": runner.temp_mb, "compile_s": runner.compile_s}
                if args.seed_floors == "on":
                    t_opt, t_mm = (float(np.min(times[(part, s)])) for part in FLOOR_PARTS)
                    row.update({
                        "optimiser": summary(times[("optimiser", s)]),
                        "optimiser_vs_one_seed_step": t_opt / base,
                        "matmuls": summary(times[("matmuls", s)]),
                        "matmuls_count": runners[("matmuls", s)].count,
                        "matmuls_flops": runners[("matmuls", s)].flops / t_mm,
                        # matmuls alone + optimiser alone, in units of one seed's step
                        "floor_vs_one_seed_step": (t_mm + t_opt) / base})
                rows.append(row)
                print(f"  B={batch} seeds={s} {mode} ({runner.microbatches} chunk(s)): "
                      f"{t * 1e3:.1f} ms/step, {t / base:.2f} x one seed", flush=True)
    return rows


def section_devices(args) -> list[dict]:
    platform_name = jax.devices()[0].platform
    rows = []
    for n in args.devices_list:
        if platform_name == "cpu":
            env = dict(os.environ)
            flags = [f for f in env.get("XLA_FLAGS", "").split()
                     if not f.startswith("--xla_force_host_platform_device_count")]
            env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
            env["JAX_PLATFORMS"] = "cpu"
            cmd = [sys.executable, os.path.abspath(__file__), "--_devices_worker", str(n),
                   f"--devices_batch={args.devices_batch}", f"--rounds={args.rounds}",
                   f"--steps={args.steps}", f"--budget={args.budget}",
                   f"--data_dir={args.data_dir}", f"--malloc_tuning={args.malloc_tuning}",
                   f"--cpu_dispatch={args.cpu_dispatch}"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"devices worker N={n} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        elif n <= jax.device_count():
            row = devices_row(n, args)
        else:
            continue
        rows.append(row)
        print(f"  devices={n}: {row['step']['min_s'] * 1e3:.1f} ms/step", flush=True)
    if rows:
        t1 = rows[0]["step"]["min_s"]
        for row in rows:
            row["speedup_vs_first"] = t1 / row["step"]["min_s"]
    return rows


def devices_row(n: int, args) -> dict:
    devices = jax.devices()[:n]
    if len(devices) != n:
        raise RuntimeError(f"asked for {n} devices, have {jax.device_count()}")
    config, method, mesh, source, layout = setup_model("numerical_case2", args,
                                                       args.devices_batch, 1, devices)
    runner = StepRunner(method, config, mesh, layout, source(0))
    reps = {"step": _reps(runner.run(1), args.budget, args.steps, 50)}
    times = paired_rounds({"step": runner}, reps, args.rounds)
    return {"devices": n, "platform": devices[0].platform, "batch": args.devices_batch,
            "step": summary(times["step"]), "compile_s": runner.compile_s,
            "sync_each_step": runner.sync_each, "flops_per_step": runner.flops}


def growth_layout(k: int = 3, m: int = 2, d_per: int = 3, obs: int = 10, eta: int = 1):
    names = tuple(f"m{i + 1}" for i in range(m))
    return vae.ModelLayout(names, ((obs,),) * m, (k,) * m, (d_per,) * m, (eta,) * m, 0)


def growth_setup(layout, args):
    """(method, config, mesh, batch) of numerical_case2's model on ``layout`` at
    ``--growth_batch``, one seed, one device, a random batch."""
    config = model_config("numerical_case2", args.data_dir, args.growth_batch)
    mesh = parallel.make_mesh(jax.devices()[:1])
    method = methods.build_method("personax", layout, config)
    keys = jax.random.split(jax.random.PRNGKey(0), len(layout.names))
    batch = tuple(
        jax.device_put(jax.random.normal(key, (1, args.growth_batch, k) + shape),
                       parallel.batch_sharding(mesh))
        for key, k, shape in zip(keys, layout.n_measurements, layout.obs_shapes))
    return method, config, mesh, batch


def growth_runners(layout, args) -> dict:
    method, config, mesh, batch = growth_setup(layout, args)
    return step_runners(method, config, mesh, layout, batch, args.microbatch)


GROWTH = {
    "measurements_K": ("K", lambda v: growth_layout(k=v)),
    "modalities_M": ("M", lambda v: growth_layout(m=v)),
    "latent_dim_D": ("D", lambda v: growth_layout(d_per=v // 2)),
}


def section_growth(args) -> dict:
    out = {}
    values = {"measurements_K": args.k_list, "modalities_M": args.m_list,
              "latent_dim_D": args.d_list}
    for name, (symbol, make) in GROWTH.items():
        runners = {}
        for v in values[name]:
            for mode, runner in growth_runners(make(v), args).items():
                runners[(mode, v)] = runner
            print(f"  {symbol}={v}: compiled in {runner.compile_s:.1f} s", flush=True)
        reps = {k: _reps(r.run(1), args.budget, args.steps, 50) for k, r in runners.items()}
        times = paired_rounds(runners, reps, args.rounds)
        xs = np.asarray(values[name], float)
        series = {}
        for mode in dict.fromkeys(m for m, _ in runners):
            ts = np.asarray([np.min(times[(mode, v)]) for v in values[name]])
            slope = float(np.polyfit(np.log(xs), np.log(ts), 1)[0])
            flops = np.asarray([runners[(mode, v)].flops for v in values[name]])
            flop_slope = float(np.polyfit(np.log(xs), np.log(flops), 1)[0])
            series[mode] = {
                "symbol": symbol, "values": values[name], "batch": args.growth_batch,
                "step_min_s": ts.tolist(),
                "step_median_s": [float(np.median(times[(mode, v)])) for v in values[name]],
                "flops_per_step": flops.tolist(), "time_exponent": slope,
                "xla_temp_mb": [runners[(mode, v)].temp_mb for v in values[name]],
                "microbatches": [runners[(mode, v)].microbatches for v in values[name]],
                "flops_exponent": flop_slope}
            print(f"  {name} {mode}: time exponent {slope:.2f} (FLOPs exponent "
                  f"{flop_slope:.2f})", flush=True)
        # the one-pass series at the top level (the layout of earlier result files)
        first = series.get("one pass") or next(iter(series.values()))
        out[name] = {**first, "series": series}
    return out


def section_chunks(args) -> list[dict]:
    """Is ``train.microbatch_size=-1`` right here? For each ``--chunk_series``: the growth
    layouts (``K`` over ``--k_list``, ``M`` over ``--m_list``, at ``--growth_batch``) and
    ``images`` (variant_mnist_3m at each ``--chunk_image_batches``), the step in each of
    ``--chunk_counts`` chunks (and the count ``train.resolve_microbatches`` picks), in paired
    rounds per layout; the auto step's time against the fastest."""
    rows = []
    for series in args.chunk_series:
        if series == "images":
            for b in args.chunk_image_batches:
                config, method, mesh, source, layout = setup_model("variant_mnist_3m", args, b)
                rows += _chunk_rows("images", "B", b, method, config, mesh, layout,
                                    source(0), b, args)
            continue
        name = {"K": "measurements_K", "M": "modalities_M"}[series]
        _, make = GROWTH[name]
        for v in (args.k_list if series == "K" else args.m_list):
            layout = make(v)
            method, config, mesh, batch = growth_setup(layout, args)
            rows += _chunk_rows(name, series, v, method, config, mesh, layout, batch,
                                args.growth_batch, args)
    return rows


def _chunk_rows(series, symbol, value, method, config, mesh, layout, batch, batch_size,
                args) -> list[dict]:
    """One layout of the chunks section: the step in each count, in paired rounds."""
    one = StepRunner(method, config, mesh, layout, batch)
    config.train.microbatch_size = -1   # the count training would use
    auto = train.resolve_microbatches(config, method, mesh, one.state, batch,
                                      one_pass_temp_bytes=one.temp_mb * 2**20)
    counts = sorted({n for n in args.chunk_counts if batch_size % n == 0} | {1, auto})
    runners = {n: one if n == 1 else StepRunner(method, config, mesh, layout, batch, n,
                                                flops=one.flops)
               for n in counts}
    reps = {n: _reps(r.run(1), args.budget, args.steps, 50) for n, r in runners.items()}
    times = paired_rounds(runners, reps, args.rounds)
    best = min(counts, key=lambda n: float(np.min(times[n])))
    print(f"  {symbol}={value} ({one.temp_mb:.0f} MB in one pass): " + " ".join(
        f"{n}:{np.min(times[n]) * 1e3:.1f}ms" for n in counts)
        + f"; auto {auto} is {np.min(times[auto]) / np.min(times[best]):.2f}x the "
          f"fastest ({best})", flush=True)
    return [{"series": series, "symbol": symbol, "value": value, "batch": batch_size,
             "chunks": n, "rows_per_chunk": batch_size // n,
             "one_pass_temp_mb": one.temp_mb, "xla_temp_mb": runners[n].temp_mb,
             "step": summary(times[n]), "auto_chunks": auto, "fastest_chunks": best,
             "vs_fastest": float(np.min(times[n]) / np.min(times[best]))}
            for n in counts]


def section_bandwidth(args) -> list[dict]:
    rows = []
    fn = jax.jit(lambda x: x * 1.0001 + 0.5)
    for mb in args.bandwidth_mb:
        x = jnp.ones((int(mb * 2**20 / 4),), jnp.float32)
        runner = _Fn(fn, x)
        times = paired_rounds({"f": runner}, {"f": _reps(runner.run(1), args.budget, 3, 2000)},
                              args.rounds)
        t = float(np.min(times["f"]))
        rows.append({"buffer_mb": mb, "min_s": t, "gb_per_s": 2 * mb / 1024 / t})
        print(f"  {mb:7.1f} MB in + out: {rows[-1]['gb_per_s']:6.1f} GB/s", flush=True)
    return rows


def section_products(args) -> list[dict]:
    width = widest_layer(model_config("numerical_case2", args.data_dir, 1))
    product = jax.jit(lambda x, w: jnp.einsum("bni,bij->bnj", x, w))
    runners, reps = {}, {}
    for rows in args.product_rows:
        for b in args.product_batches:
            kx, kw = jax.random.split(jax.random.PRNGKey(rows * 1000 + b))
            runners[(rows, b)] = _Fn(product, jax.random.normal(kx, (b, rows, width)),
                                     jax.random.normal(kw, (b, width, width)))
            reps[(rows, b)] = _reps(runners[(rows, b)].run(1), args.budget, 3, 2000)
    times = paired_rounds(runners, reps, args.rounds)
    out = []
    for (rows, b), ts in times.items():
        t = float(np.min(ts))
        out.append({"rows": rows, "batch": b, "width": width, "time": summary(ts),
                    "flops_per_s": 2.0 * b * rows * width * width / t})
    return out


def section_parts(args) -> list[dict]:
    rows = []
    for model, batch in ((m, args.parts_batch if m == "numerical_case2" else args.parts_image_batch)
                         for m in args.models):
        if model == "variant_mnist_3m" and not images_available(args.data_dir):
            continue
        config, method, mesh, source, layout = setup_model(model, args, batch)
        runners = part_runners(method, config, mesh, layout, source)
        reps = {k: _reps(r.run(1), args.budget, args.steps, 50) for k, r in runners.items()}
        times = paired_rounds(runners, reps, args.rounds)
        step = float(np.min(times["train step"]))
        for name in runners:
            t = float(np.min(times[name]))
            rows.append({"model": model, "batch": batch, "part": name, "min_s": t,
                         "median_s": float(np.median(times[name])), "fraction_of_step": t / step,
                         "flops": runners[name].flops})
            print(f"  {model} B={batch} {name:28s} {t * 1e3:8.1f} ms  {t / step:6.1%}",
                  flush=True)
    return rows


class _Fn:
    """A jitted function of fixed arguments, timed like a step."""

    def __init__(self, fn, *args_):
        self.args = args_
        self.compiled = jax.jit(fn).lower(*args_).compile()
        self.flops = _flops(self.compiled)
        jax.block_until_ready(self.compiled(*args_))

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            out = self.compiled(*self.args)
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / n


def _sum_all(tree):
    return sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(tree))


def part_runners(method, config, mesh, layout, source) -> dict:
    """Forward + backward of each part of the model on one seed's batch."""
    model = method.model
    xs = tuple(x[0] for x in source(0))  # drop the seed axis
    key = jax.random.PRNGKey(1)
    params = method.init(key, xs)
    post = model.apply({"params": params}, xs, method="encode")
    z = post["z_mean"]
    etas = [m for m, _ in post["eta"]]

    def encoder(p, xs):
        return jax.grad(lambda p: _sum_all(model.apply({"params": p}, xs, method="encode")))(p)

    def prior(p, z):
        return jax.grad(lambda p, z: jnp.sum(model.apply({"params": p}, z, method="log_prior")),
                        argnums=(0, 1))(p, z)

    def decoder(p, z, etas):
        return jax.grad(lambda p, z, e: _sum_all(model.apply({"params": p}, z, e, method="decode")),
                        argnums=(0, 1, 2))(p, z, etas)

    def loss_fwd(p, xs):
        return method.loss(p, xs, key)[0]

    def loss_fwd_bwd(p, xs):
        return jax.value_and_grad(lambda p: method.loss(p, xs, key)[0])(p)

    tx = steps.make_optimizer(config.train)
    opt_state = tx.init(params)

    def optimiser(p, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, p)
        return jax.tree_util.tree_map(jnp.add, p, updates), opt_state

    runners = {
        "encoder (fwd+bwd)": _Fn(encoder, params, xs),
        "causal prior (fwd+bwd)": _Fn(prior, params, z),
        "decoder (fwd+bwd)": _Fn(decoder, params, z, etas),
        "loss forward": _Fn(loss_fwd, params, xs),
        "loss forward+backward": _Fn(loss_fwd_bwd, params, xs),
        "optimiser update": _Fn(optimiser, params, opt_state, params),
    }
    runners["train step"] = StepRunner(method, config, mesh, layout, source(0))
    return runners


# ----------------------------------------------------------------------------- output
def _fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def print_tables(results: dict) -> None:
    if results.get("throughput"):
        print("\n## Throughput (1 seed, 1 device; best of rounds; 'ratio' = best step FLOP/s "
              "/ best matmul FLOP/s, 'r. med' = median over rounds of the per-round ratio)")
        print(f"{'model':18s} {'batch':>6s} {'step':>12s} {'steps/s':>8s} {'samples/s':>10s} {'GFLOP/step':>10s} "
              f"{'GFLOP/s':>8s} {'mm GFLOP/s':>10s} {'ratio':>6s} {'r. med':>6s} {'peak mm':>8s} "
              f"{'compile s':>9s} {'sample/step':>11s} {'RSS MB':>7s} {'temp MB':>7s} {'dev MB':>7s}")
        for r in results["throughput"]:
            mode = f"{r.get('microbatch_mode', 'one pass')}/{r.get('microbatches', 1)}"
            print(f"{r['model']:18s} {r['batch']:6d} {mode:>12s} {r['steps_per_s']:8.2f} "
                  f"{r['samples_per_s']:10.0f} {r['flops_per_step'] / 1e9:10.3f} "
                  f"{r['achieved_flops'] / 1e9:8.1f} {r['matmul_flops'] / 1e9:10.1f} "
                  f"{r['ratio_vs_matmul']:6.2f} {r['ratio_vs_matmul_median']:6.2f} "
                  f"{r['peak_matmul_flops'] / 1e9:8.1f} "
                  f"{r['compile_s']:9.1f} {r['sample_fraction_of_step']:11.3f} "
                  f"{r['host_peak_rss_mb']:7.0f} {_fmt(r['xla_temp_mb'], '7.0f')} "
                  f"{_fmt(r['device_peak_mb'], '7.0f')}")
    if results.get("seeds"):
        print("\n## Seeds trained together (vmap), numerical_case2")
        print(f"{'batch':>6s} {'seeds':>5s} {'step':>12s} {'ms/step':>8s} {'x 1 seed':>8s} "
              f"{'per-seed cost':>13s} {'optimiser ms':>12s} {'optimiser x 1 seed':>18s} "
              f"{'matmuls ms':>10s} {'mm GFLOP/s':>10s} {'floor x 1 seed':>14s}")
        print("  (floor = the step's matrix products alone + the optimiser update alone)")
        for r in results["seeds"]:
            mode = f"{r.get('microbatch_mode', 'one pass')}/{r.get('microbatches', 1)}"
            opt = r.get("optimiser", {}).get("min_s")
            mm = r.get("matmuls", {}).get("min_s")
            print(f"{r['batch']:6d} {r['seeds']:5d} {mode:>12s} {r['step']['min_s'] * 1e3:8.2f} "
                  f"{r['time_vs_one_seed']:8.2f} {r['per_seed_cost_vs_one_seed']:13.2f} "
                  f"{_fmt(opt and opt * 1e3, '12.2f')} "
                  f"{_fmt(r.get('optimiser_vs_one_seed_step'), '18.2f')} "
                  f"{_fmt(mm and mm * 1e3, '10.2f')} "
                  f"{_fmt(r.get('matmuls_flops') and r['matmuls_flops'] / 1e9, '10.1f')} "
                  f"{_fmt(r.get('floor_vs_one_seed_step'), '14.2f')}")
    if results.get("devices"):
        print("\n## Devices (fixed global batch), numerical_case2")
        print(f"{'devices':>7s} {'batch':>6s} {'ms/step':>8s} {'speedup':>7s} {'compile s':>9s}")
        for r in results["devices"]:
            print(f"{r['devices']:7d} {r['batch']:6d} {r['step']['min_s'] * 1e3:8.1f} "
                  f"{r['speedup_vs_first']:7.2f} {r['compile_s']:9.1f}")
    if results.get("growth"):
        print("\n## Growth (1 seed, batch per row below)")
        for name, top in results["growth"].items():
            for mode, g in top.get("series", {"one pass": top}).items():
                print(f"{name}, {mode} (batch {g['batch']}): exponent time "
                      f"{g['time_exponent']:.2f}, FLOPs {g['flops_exponent']:.2f}")
                print("  " + " ".join(f"{g['symbol']}={v}:{t * 1e3:.1f}ms"
                                      for v, t in zip(g["values"], g["step_min_s"])))
                print("  XLA temp MB / chunks: " + " ".join(
                    f"{g['symbol']}={v}:{m:.0f}/{c}" for v, m, c in
                    zip(g["values"], g["xla_temp_mb"], g.get("microbatches", [1] * len(g["values"])))))
    if results.get("chunks"):
        print("\n## Chunks per step (gradient accumulation), 1 seed; * = the auto choice, "
              "'auto/fastest' = its time over the fastest count's")
        layouts = dict.fromkeys((r["symbol"], r["value"]) for r in results["chunks"])
        for symbol, value in layouts:
            rs = [r for r in results["chunks"] if (r["symbol"], r["value"]) == (symbol, value)]
            auto = next(r for r in rs if r["chunks"] == r["auto_chunks"])
            print(f"  {symbol}={value:<3d} batch {rs[0]['batch']}, one pass "
                  f"{rs[0]['one_pass_temp_mb']:5.0f} MB: " + "  ".join(
                      f"{r['chunks']}{'*' if r is auto else ''}: {r['step']['min_s'] * 1e3:.1f} ms "
                      f"({r['xla_temp_mb']:.0f} MB)" for r in rs)
                  + f"   auto/fastest {auto['vs_fastest']:.2f}")
    if results.get("bandwidth"):
        print("\n## Elementwise bandwidth (a * x + b, float32; read + write)")
        print("  " + " ".join(f"{r['buffer_mb']:g}MB:{r['gb_per_s']:.1f}GB/s"
                              for r in results["bandwidth"]))
    if results.get("products"):
        rs = results["products"]
        batches = sorted({r["batch"] for r in rs})
        by = {(r["rows"], r["batch"]): r["flops_per_s"] for r in rs}
        print(f"\n## Batched products (b, rows, {rs[0]['width']}) @ (b, {rs[0]['width']}, "
              f"{rs[0]['width']}), GFLOP/s")
        print(f"{'rows':>6s} " + " ".join(f"{f'b={b}':>7s}" for b in batches))
        for rows in sorted({r["rows"] for r in rs}):
            print(f"{rows:6d} " + " ".join(f"{by[(rows, b)] / 1e9:7.1f}" for b in batches))
    if results.get("parts"):
        print("\n## Parts of the step")
        print(f"{'model':18s} {'batch':>6s} {'part':28s} {'ms':>8s} {'of step':>8s} {'GFLOP':>7s}")
        for r in results["parts"]:
            print(f"{r['model']:18s} {r['batch']:6d} {r['part']:28s} {r['min_s'] * 1e3:8.1f} "
                  f"{r['fraction_of_step']:8.1%} {r['flops'] / 1e9:7.3f}")


def add_host_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data_dir``, ``--malloc_tuning`` and ``--cpu_dispatch`` (bench_train, profile_step,
    bench_optimizer; :func:`apply_host_settings` applies the last two)."""
    parser.add_argument("--data_dir", default=default_data_dir(),
                        help="folder with mnist/ and fashion-mnist/ (default $CRL_JAX_DATA_DIR "
                             "or ../shared/data)")
    parser.add_argument("--malloc_tuning", default="on", choices=("on", "off"),
                        help="'on' (as training does): host_memory.tune_malloc(), so a step's "
                             "temporaries are reused instead of page-faulted every step; "
                             "'off': glibc's defaults")
    parser.add_argument("--cpu_dispatch", default=None, choices=host_memory.DISPATCH_MODES,
                        help="'inline' (as training does, unless $CRL_JAX_CPU_DISPATCH says "
                             "otherwise): single-device CPU steps run on the calling thread; "
                             "'async': JAX's default, on a worker thread "
                             "(host_memory.set_cpu_dispatch)")
    parser.add_argument("--cpu_dots", default=None, choices=cpu_dots.LIBRARIES,
                        help="library of XLA:CPU's float32 products: 'ynnpack' (XLA's default) "
                             "or 'eigen' (crl_jax.cpu_dots; training picks one per run). "
                             "Default: as XLA_FLAGS has it")


def write_rows(path: str, argv, malloc: dict, dispatch: dict, rows: list) -> None:
    """The JSON of a per-row benchmark (bench_optimizer, bench_seed_floor,
    bench_steps_per_call, profile_step): ``{"info": device, jax, argv, host settings and
    the load at the end, "rows": rows}``; ``argv`` None: the command line's."""
    info = {"device": str(jax.devices()[0]), "jax": jax.__version__,
            "argv": sys.argv[1:] if argv is None else list(argv), "malloc_tuning": malloc,
            "cpu_dispatch": dispatch["dispatch"], "cpu_dots": dispatch["dots"],
            "load_avg_at_end": list(os.getloadavg())}
    with open(path, "w") as f:
        json.dump({"info": info, "rows": rows}, f, indent=1)
    print(f"wrote {path}")


def apply_host_settings(args) -> tuple[dict, dict]:
    """``(malloc, dispatch)``: :func:`host_memory.tune_malloc` unless ``--malloc_tuning=off``,
    :func:`host_memory.set_cpu_dispatch` with ``--cpu_dispatch`` and, when given,
    :func:`cpu_dots.set_cpu_dots` with ``--cpu_dots``, before any JAX work (``dispatch``
    also holds ``"dots"``, the products' library in effect). An explicit ``--cpu_dispatch``
    or ``--cpu_dots`` that could not be applied (JAX's backend already started, as when
    ``main`` is called from a test) is an error: the numbers would not be of the setting
    asked for; the default dispatch then runs with the backend's mode and says which."""
    malloc = (host_memory.tune_malloc() if args.malloc_tuning == "on"
              else {"applied": False, "reason": "--malloc_tuning=off"})
    dispatch = host_memory.set_cpu_dispatch(args.cpu_dispatch)
    if not dispatch["applied"]:
        if args.cpu_dispatch is not None:
            raise RuntimeError(f"--cpu_dispatch={args.cpu_dispatch}: {dispatch['reason']}")
        print(f"note: CPU dispatch {dispatch['dispatch']!r} ({dispatch['reason']})", flush=True)
    library = args.cpu_dots
    if library is not None:
        dots = cpu_dots.set_cpu_dots(library, "--cpu_dots")
        if not dots["applied"]:
            raise RuntimeError(f"--cpu_dots={library}: {dots['reason']}")
    dispatch = {**dispatch, "dots": cpu_dots.in_effect()}
    return malloc, dispatch


def parse_seed_counts(parser: argparse.ArgumentParser, flag: str, text: str) -> list[int]:
    """Comma-separated seed counts >= 1 given to ``flag``, or the parser's usage error."""
    try:
        counts = [int(s) for s in text.split(",") if s]
    except ValueError:
        parser.error(f"{flag} must be comma-separated integers, got {text!r}")
    if not counts or min(counts) < 1:
        parser.error(f"{flag}: every count must be >= 1, got {text!r}")
    return counts


def require_model_data(parser: argparse.ArgumentParser, model: str, data_dir: str) -> None:
    """The parser's usage error when ``model`` needs image files that ``data_dir`` lacks."""
    if model == "variant_mnist_3m" and not images_available(data_dir):
        parser.error(f"--model=variant_mnist_3m needs mnist/ and fashion-mnist/ under "
                     f"--data_dir={data_dir}")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch_sizes", default="256,1024,4096,16384")
    p.add_argument("--image_max_batch", type=int, default=16384,
                   help="largest batch for variant_mnist_3m (images are ~100x costlier)")
    add_host_arguments(p)
    p.add_argument("--rounds", type=int, default=3, help="timing rounds per measurement")
    p.add_argument("--steps", type=int, default=2, help="least steps per round")
    p.add_argument("--budget", type=float, default=0.5, help="target seconds per round")
    p.add_argument("--seeds_list", default="1,2,4,8,16")
    p.add_argument("--seed_batches", default="512,4096")
    p.add_argument("--seed_floors", default="on", choices=("on", "off"),
                   help="seeds section: also time each seed count's optimiser update and "
                        "matrix products alone (two more compiles per count; 'off' where "
                        "compiles are slow, as on a GPU)")
    p.add_argument("--devices_list", default="1,2,4,8")
    p.add_argument("--devices_batch", type=int, default=4096)
    p.add_argument("--growth_batch", type=int, default=1024)
    p.add_argument("--k_list", default="1,2,4,6,8,10")
    p.add_argument("--m_list", default="2,3,4,6,8")
    p.add_argument("--d_list", default="4,8,16,32,64")
    p.add_argument("--parts_batch", type=int, default=4096)
    p.add_argument("--parts_image_batch", type=int, default=256)
    p.add_argument("--bandwidth_mb", default="1,4,8,16,24,32,64,128",
                   help="buffer sizes (MiB) of the bandwidth section")
    p.add_argument("--product_rows", default="16,128,256,512,768,1024,2048,4096",
                   help="rows of each matrix in the products section")
    p.add_argument("--product_batches", default="1,3,6,24",
                   help="matrices per batched product in the products section")
    p.add_argument("--chunk_counts", default="1,2,4,8",
                   help="chunks per step timed by the chunks section (with the auto choice)")
    p.add_argument("--chunk_series", default="K,M",
                   help="what the chunks section times: K and M (numerical_case2's growth "
                        "layouts at --growth_batch) and/or images (variant_mnist_3m)")
    p.add_argument("--chunk_image_batches", default="64,256",
                   help="batches of the chunks section's images series")
    p.add_argument("--microbatch", default="both", choices=("off", "auto", "both"),
                   help="time the one-pass step ('off'), the train.microbatch_size=-1 step "
                        "('auto': steps.choose_microbatches' chunks) or both (throughput, "
                        "seeds and growth sections)")
    p.add_argument("--out", default=None, help="write all results as JSON to this file")
    p.add_argument("--_devices_worker", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    args.models = [m for m in args.models.split(",") if m]
    bad = sorted(set(args.sections) - set(SECTIONS)) + sorted(set(args.models) - set(MODELS))
    if bad:
        p.error(f"unknown section(s)/model(s) {bad}; sections {list(SECTIONS)}, "
                f"models {list(MODELS)}")
    args.bandwidth_mb = [float(v) for v in args.bandwidth_mb.split(",") if v]
    for name in ("batch_sizes", "seeds_list", "seed_batches", "devices_list", "k_list",
                 "m_list", "d_list", "product_rows", "product_batches", "chunk_counts",
                 "chunk_image_batches"):
        setattr(args, name, _ints(getattr(args, name)))
    if args.rounds < 1 or args.steps < 1:
        p.error("--rounds and --steps must be >= 1")
    if "chunks" in args.sections and (not args.chunk_counts or min(args.chunk_counts) < 1):
        p.error("--chunk_counts must be comma-separated integers >= 1")
    args.chunk_series = [v for v in args.chunk_series.split(",") if v]
    if "chunks" in args.sections:
        bad = sorted(set(args.chunk_series) - {"K", "M", "images"})
        if bad or not args.chunk_series:
            p.error(f"--chunk_series: unknown {bad}; choose from K, M, images")
        if "images" in args.chunk_series:
            require_model_data(p, "variant_mnist_3m", args.data_dir)
            if not args.chunk_image_batches or min(args.chunk_image_batches) < 1:
                p.error("--chunk_image_batches must be comma-separated integers >= 1")
    if "products" in args.sections and (not args.product_rows or not args.product_batches
                                        or min(args.product_rows + args.product_batches) < 1):
        p.error("--product_rows and --product_batches must be comma-separated integers >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)  # real compile times
    malloc, dispatch = apply_host_settings(args)
    args.cpu_dispatch = dispatch["dispatch"]   # the mode in effect (for the devices workers)
    if args._devices_worker:
        print(json.dumps(devices_row(args._devices_worker, args)))
        return {}
    dev = jax.devices()[0]
    info = {
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "platform": dev.platform, "device_kind": dev.device_kind,
        "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
        "jax": jax.__version__, "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_avg_at_start": os.getloadavg(), "malloc_tuning": malloc,
        "cpu_dispatch": dispatch["dispatch"], "cpu_dots": dispatch["dots"],
    }
    print(f"{dev.platform} {dev.device_kind} x{jax.device_count()}, {os.cpu_count()} CPUs, "
          f"load {info['load_avg_at_start'][0]:.1f}, CPU dispatch {info['cpu_dispatch']}, "
          f"XLA_FLAGS={info['xla_flags']!r}", flush=True)
    results = {}
    t0 = time.time()
    for name in args.sections:
        print(f"# {name}", flush=True)
        results[name] = globals()[f"section_{name}"](args)
    info["load_avg_at_end"] = os.getloadavg()
    info["wall_s"] = time.time() - t0
    info["host_peak_rss_mb"] = host_peak_rss_mb()
    print_tables(results)
    print(f"\nload average at start {info['load_avg_at_start'][0]:.1f}, at end "
          f"{info['load_avg_at_end'][0]:.1f}; wall {info['wall_s']:.0f} s")
    out = {"info": info, **results}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1, default=float)
        print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
