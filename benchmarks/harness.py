"""The shared harness of the benchmarks: models, timed runners, product FLOPs, host flags.

Every benchmark script (``python -m benchmarks.NAME`` from the repository root) builds its
models, times its programs and writes its JSON with these pieces, so that the numbers of
different scripts mean the same thing:

- models: :func:`model_config` / :func:`setup_model` (the shipped configs of
  ``numerical_case2`` and ``variant_mnist_3m``, with the one-stage ``personax_vae`` step), :func:`load_config` (a shipped config by name);
- timing: :class:`StepRunner` (a compiled train step with its donated state),
  :class:`Matmul`, :class:`Fn`, :class:`OptimiserRunner`, :class:`MatmulsRunner`;
  :func:`paired_rounds` interleaves runners so that they share the machine's state, and
  reports are the fastest round (the least disturbed on a shared machine) and the median;
- arithmetic: :func:`product_flops` counts the matrix products and convolutions of a jaxpr
  (XLA's GPU cost analysis leaves out cuDNN convolutions);
- host: :func:`add_host_arguments` / :func:`apply_host_settings` (``--malloc_tuning``,
  ``--cpu_dispatch``, ``--cpu_dots``: the settings of ``crl_jax.host``), :func:`write_rows`.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

from configs import synthetic as synthetic_config
from configs import variant_mnist as variant_mnist_config
from crl_jax import input_pipeline, parallel, steps, train
from crl_jax.experiments import synthetic as experiment
from crl_jax.host import autotune, dots, memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("numerical_case2", "variant_mnist_3m")
CONFIGS = ("synthetic", "synthetic:case2", "variant_mnist", "variant_mnist:small")


# ----------------------------------------------------------------------------- configs
def model_config(model: str, data_dir: str, batch: int, num_seeds: int = 1):
    """The training config of a benchmark model (the shipped config files)."""
    if model == "numerical_case2":
        config = synthetic_config.get_config("case2")
    elif model == "variant_mnist_3m":
        config = variant_mnist_config.get_config()
        config.data.data_dir = data_dir
    else:
        raise ValueError(f"--models: unknown model {model!r}; choose from {list(MODELS)}")
    # the step timed is the causal-prior VAE's (one stage; its loss takes microbatches): the
    # numbers in docs/PERFORMANCE.md are of this step, not of personax's two stages
    config.model.name = "personax_vae"
    config.loss.sparsity = "weights"   # its L1 on |W| (per-sample: the loss takes chunks)
    config.train.batch_size = int(batch)
    config.train.num_seeds = int(num_seeds)
    config.train.progress = False
    return config


def load_config(name: str, data_dir: str):
    """A shipped config by name (``synthetic``, ``synthetic:case2``, ``variant_mnist:small``)."""
    import importlib
    module, _, arg = name.partition(":")
    config = importlib.import_module(f"configs.{module}").get_config(arg or None)
    if module == "variant_mnist":
        config.data.data_dir = data_dir
    return config


def default_data_dir() -> str:
    env = os.environ.get("CRL_JAX_DATA_DIR", "")
    return env or os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))


def images_available(data_dir: str) -> bool:
    return all(os.path.isdir(os.path.join(data_dir, d)) for d in ("mnist", "fashion-mnist"))


def setup_model(model: str, args, batch: int, num_seeds: int = 1, devices=None,
                prefetch_steps: int | None = None):
    """``(config, method, mesh, source, layout)`` of a benchmark model on one device (or
    ``devices``); ``args.data_dir`` holds the image files."""
    config = model_config(model, args.data_dir, batch, num_seeds)
    if prefetch_steps is not None:
        config.train.prefetch_steps = int(prefetch_steps)
    mesh = parallel.make_mesh(devices if devices is not None else jax.devices()[:1])
    process, method, mesh = experiment.setup(config, None, mesh=mesh)
    source = input_pipeline.BatchSource.from_process(process, config.data, config.train,
                                                     parallel.batch_sharding(mesh))
    layout = experiment.model_layout(process.spec)
    return config, method, mesh, source, layout


def widest_layer(config) -> int:
    return int(max(config.model.hidden))


# ----------------------------------------------------------------------------- timing
def xla_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def temp_bytes(compiled) -> float:
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
                 flops: float | None = None, execute: bool = True, state=None):
        # ``state``: a fresh train state to start from (donated), e.g. a copy of another
        # runner's (:func:`initial_copy`), so that several runners compile init once
        self.state = train.init_state(method, config, mesh, layout) if state is None else state
        self.microbatches = int(microbatches)
        t0 = time.perf_counter()
        self.compiled = train.jit_train_step(method, mesh, self.microbatches).lower(
            self.state, batch).compile()
        self.compile_s = time.perf_counter() - t0
        self.xla_flops = xla_flops(self.compiled) * mesh.devices.size  # SPMD: per-device
        self.product_flops = product_flops(jax.make_jaxpr(
            train.jit_train_step(method, mesh, self.microbatches))(self.state, batch))
        # XLA's count misses convolutions on GPU (product_flops); the products are a floor
        self.flops = (float(flops) if flops is not None
                      else float(np.nanmax([self.xla_flops, self.product_flops])))
        self.temp_mb = temp_bytes(self.compiled) / 2**20
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
    ``train.microbatch_size=-1`` would use, chosen by ``autotune.resolve_microbatches`` from the
    one-pass step's XLA temporaries; the same runner object when it picks 1). With
    ``mode="auto"`` the one-pass step is only compiled (for its FLOPs and temporaries), never
    run: at large batches it would not fit in memory."""
    init = train.init_state(method, config, mesh, layout)
    one = StepRunner(method, config, mesh, layout, batch, execute=mode != "auto",
                     state=initial_copy(init))
    out = {} if mode == "auto" else {"one pass": one}
    if mode in ("auto", "both"):
        config.train.microbatch_size = -1
        n = autotune.resolve_microbatches(config, method, mesh, one.state, batch,
                                       one_pass_temp_bytes=one.temp_mb * 2**20)
        if n == 1 and mode == "auto":
            one.run(1)  # warm-up
        out["auto"] = one if n == 1 else StepRunner(method, config, mesh, layout, batch, n,
                                                    flops=one.flops, state=init)
    return out


def initial_copy(state):
    """A copy of a fresh train state (a runner donates the one it gets)."""
    return jax.tree.map(jnp.copy, state)


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


def reps_for(seconds_each: float, budget: float = 0.5, lo: int = 1, hi: int = 50) -> int:
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


def best_per_iteration(fn, carry, n: int, rounds: int, calls: int, *rest):
    """``(seconds per iteration, carry)``: best of ``rounds`` rounds of ``calls`` calls of a
    scanned ``fn(carry, *rest) -> carry`` of ``n`` iterations (the carry donated)."""
    carry = fn(carry, *rest)   # compile and warm up
    jax.block_until_ready(carry)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            carry = fn(carry, *rest)
        jax.block_until_ready(carry)
        best = min(best, (time.perf_counter() - t0) / (calls * n))
    return best, carry


class Fn:
    """A jitted function of fixed arguments, timed like a step."""

    def __init__(self, fn, *args_):
        self.args = args_
        self.compiled = jax.jit(fn).lower(*args_).compile()
        self.flops = xla_flops(self.compiled)
        jax.block_until_ready(self.compiled(*args_))

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            out = self.compiled(*self.args)
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / n


class Sampler:
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


class OptimiserRunner:
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


# ----------------------------------------------------------------------------- products
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


class MatmulsRunner:
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
        # (primitive, params) of each product; benchmarks.loop's floor runs them in a scan
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


# ----------------------------------------------------------------------------- host and output
def add_host_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data_dir``, ``--malloc_tuning``, ``--cpu_dispatch`` and ``--cpu_dots`` (every
    benchmark; :func:`apply_host_settings` applies the last three)."""
    parser.add_argument("--data_dir", default=default_data_dir(),
                        help="folder with mnist/ and fashion-mnist/ (default $CRL_JAX_DATA_DIR "
                             "or ../shared/data)")
    parser.add_argument("--malloc_tuning", default="on", choices=("on", "off"),
                        help="'on' (as training does): crl_jax.host.tune_malloc(), so a step's "
                             "temporaries are reused instead of page-faulted every step; "
                             "'off': glibc's defaults")
    parser.add_argument("--cpu_dispatch", default=None, choices=memory.DISPATCH_MODES,
                        help="'inline' (as training does, unless $CRL_JAX_CPU_DISPATCH says "
                             "otherwise): single-device CPU steps run on the calling thread; "
                             "'async': JAX's default, on a worker thread "
                             "(crl_jax.host.set_cpu_dispatch)")
    parser.add_argument("--cpu_dots", default=None, choices=dots.LIBRARIES,
                        help="library of XLA:CPU's float32 products: 'ynnpack' (XLA's default) "
                             "or 'eigen' (crl_jax.host.dots; training picks one per run). "
                             "Default: as XLA_FLAGS has it")


def write_rows(path: str, argv, malloc: dict, dispatch: dict, rows: list) -> None:
    """The JSON of a per-row benchmark: ``{"info": device, jax, argv, host settings and the
    load at the end, "rows": rows}``; ``argv`` None: the command line's."""
    info = {"device": str(jax.devices()[0]), "jax": jax.__version__,
            "argv": sys.argv[1:] if argv is None else list(argv), "malloc_tuning": malloc,
            "cpu_dispatch": dispatch["dispatch"], "cpu_dots": dispatch["dots"],
            "load_avg_at_end": list(os.getloadavg())}
    with open(path, "w") as f:
        json.dump({"info": info, "rows": rows}, f, indent=1)
    print(f"wrote {path}")


def apply_host_settings(args) -> tuple[dict, dict]:
    """``(malloc, dispatch)``: ``tune_malloc`` unless ``--malloc_tuning=off``,
    ``set_cpu_dispatch`` with ``--cpu_dispatch`` and, when given, ``set_cpu_dots`` with
    ``--cpu_dots`` (:mod:`crl_jax.host`), before any JAX work (``dispatch``
    also holds ``"dots"``, the products' library in effect). An explicit ``--cpu_dispatch``
    or ``--cpu_dots`` that could not be applied (JAX's backend already started, as when
    ``main`` is called from a test) is an error: the numbers would not be of the setting
    asked for; the default dispatch then runs with the backend's mode and says which."""
    malloc = (memory.tune_malloc() if args.malloc_tuning == "on"
              else {"applied": False, "reason": "--malloc_tuning=off"})
    dispatch = memory.set_cpu_dispatch(args.cpu_dispatch)
    if not dispatch["applied"]:
        if args.cpu_dispatch is not None:
            raise RuntimeError(f"--cpu_dispatch={args.cpu_dispatch}: {dispatch['reason']}")
        print(f"note: CPU dispatch {dispatch['dispatch']!r} ({dispatch['reason']})", flush=True)
    library = args.cpu_dots
    if library is not None:
        chosen = dots.set_cpu_dots(library, "--cpu_dots")
        if not chosen["applied"]:
            raise RuntimeError(f"--cpu_dots={library}: {chosen['reason']}")
    dispatch = {**dispatch, "dots": dots.in_effect()}
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


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]
