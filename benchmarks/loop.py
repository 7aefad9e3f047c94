"""What does the training loop cost per step, with S seeds, N steps per call and each
products library? (the loop)

    python -m benchmarks.loop seeds --batch=16 --seeds_list=1,2,4,8,16 --per_call_list=10 --out=s.json
    python -m benchmarks.loop libraries OUT_DIR [--cases="synthetic:512:1,3,8:600:100 ..."]
    python -m benchmarks.loop floor --batch=16 --seeds=1,8 --out=floor.json
    python -m benchmarks.loop optimizer --seeds=1,8
    python -m benchmarks.loop sampling --steps_per_call=10

- ``seeds``: the real loop (:func:`crl_jax.train.train`: sampler, metrics, checkpoints) on a
  shipped config (``--config``, default the synthetic default) at ``--batch``, for each seed
  count and steps per call; the median and best time per step over the logged windows (the
  first two, with compilation, left out). A dispatch costs ~0.4 ms on the project's CPU, most
  of a step of about a millisecond; a ``lax.scan`` of several steps pays it once.
- ``libraries``: ``seeds`` once per products library (YNNPACK, XLA's default, and Eigen), each
  in its own process (the library is fixed when JAX starts), case by case; one JSON per case
  and library in OUT_DIR (``CONFIG_bBATCH_sSEEDS_LIBRARY.json``), which ``benchmarks.plot``
  pairs up. What ``crl_jax.host.dots`` chooses from.
- ``floor``: in the loop's units (N steps scanned per call), the step, its matrix products
  alone and its optimiser update alone for each seed count: products + optimiser, over one
  seed's step, is what S seeds cost at the least with XLA's products and optimiser here.
- ``optimizer``: the optimiser update of S seeds' parameters as the project runs it (optax,
  vmapped), on one flat vector per seed, and the simplest stream with Adam's inputs and
  outputs; ms, bytes per parameter from XLA's cost analysis, GB/s and loop fusions.
- ``sampling``: the jitted step fed freshly sampled batches (as the loop does) against one
  fixed batch: what drawing the data inside the loop costs.

Host settings as training (``--malloc_tuning``, ``--cpu_dispatch``); the products library is
XLA's default unless ``--cpu_dots`` says otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from benchmarks import harness as h
from crl_jax import input_pipeline, parallel, steps, train
from crl_jax.experiments import synthetic as experiment
from crl_jax.host import autotune

LIBRARY_CASES = ("synthetic:16:1,8:3000:200 synthetic:64:1,8:2000:200 synthetic:128:3:1000:100 "
                 "synthetic:256:1,3,8:600:100 synthetic:512:1,3,8:600:100 "
                 "synthetic:1024:1,3:400:50 synthetic:4096:1:300:50 "
                 "variant_mnist_small:128:3:400:50 variant_mnist:128:3:60:10")
PROGRAMS = ("optax", "flat", "stream")


# ----------------------------------------------------------------------------- seeds
def run_loop(batch: int, seeds: int, per_call: int, steps_: int, log_every: int,
             config_name: str = "synthetic", data_dir: str = "") -> dict:
    """One run of the real training loop; ms per step over its logged windows."""
    config = h.load_config(config_name, data_dir)
    config.train.update(batch_size=batch, num_seeds=seeds, steps=steps_, progress=False,
                        log_every=log_every, checkpoint_every=steps_, steps_per_call=per_call)
    config.train.warmup_steps = min(int(config.train.warmup_steps), steps_ // 10)
    config.eval.plots = False
    with tempfile.TemporaryDirectory() as workdir:
        process, method, mesh = experiment.setup(config, workdir)
        source = input_pipeline.BatchSource.from_process(process, config.data, config.train,
                                                         parallel.batch_sharding(mesh))
        layout = experiment.model_layout(process.spec)
        settings = autotune.loop_settings(config, method, mesh, source, layout)
        t0 = time.perf_counter()
        train.train(config, workdir, method, mesh, source, layout, **settings)
        wall = time.perf_counter() - t0
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rates = [json.loads(line)["steps_per_sec"] for line in f][2:]
    ms = 1e3 / np.asarray(rates)
    return {"config": config_name, "batch": batch, "seeds": seeds, "steps_per_call": per_call,
            "steps": steps_, "ms_per_step_median": float(np.median(ms)),
            "ms_per_step_best": float(ms.min()), "wall_s": wall}


def cmd_seeds(args, argv) -> list[dict]:
    malloc, dispatch = h.apply_host_settings(args)
    rows = []
    for seeds in args.seeds_list:
        for per_call in args.per_call_list:
            rows.append(run_loop(args.batch, seeds, per_call, args.steps, args.log_every,
                                 args.config, args.data_dir))
            r = rows[-1]
            print(f"{args.config}, batch {r['batch']}, {seeds} seed(s), {per_call} step(s) "
                  f"per call: {r['ms_per_step_median']:.3f} ms/step median, "
                  f"{r['ms_per_step_best']:.3f} best ({dispatch['dispatch']} dispatch, "
                  f"{dispatch['dots']} products)", flush=True)
    if args.out:
        h.write_rows(args.out, argv, malloc, dispatch, rows)
    return rows


# ----------------------------------------------------------------------------- libraries
def parse_cases(text: str) -> list[tuple[str, int, str, int, int]]:
    """``config:batch:seeds:steps:log_every`` items, space-separated."""
    out = []
    for item in text.split():
        parts = item.split(":")
        if len(parts) != 5:
            raise ValueError(f"--cases: {item!r} is not config:batch:seeds:steps:log_every")
        config, batch, seeds, steps_, log_every = parts
        out.append((config, int(batch), seeds, int(steps_), int(log_every)))
    return out


def cmd_libraries(args, argv) -> list[str]:
    """Each case with YNNPACK, then with Eigen, back to back, each in a fresh process."""
    os.makedirs(args.out_dir, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "CRL_JAX_CPU_DOTS"}
    written = []
    for config, batch, seeds, steps_, log_every in parse_cases(args.cases):
        name = config.replace("_small", ":small")   # variant_mnist_small -> variant_mnist:small
        for lib in ("ynnpack", "eigen"):
            out = os.path.join(args.out_dir,
                               f"{config}_b{batch}_s{seeds.replace(',', '-')}_{lib}.json")
            cmd = [sys.executable, "-m", "benchmarks.loop", "seeds", f"--config={name}",
                   f"--batch={batch}", f"--seeds_list={seeds}", "--per_call_list=10",
                   f"--steps={steps_}", f"--log_every={log_every}", f"--cpu_dots={lib}",
                   f"--data_dir={args.data_dir}", f"--malloc_tuning={args.malloc_tuning}",
                   f"--out={out}"] + ([f"--cpu_dispatch={args.cpu_dispatch}"]
                                      if args.cpu_dispatch else [])
            proc = subprocess.run(cmd, cwd=h.ROOT, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            print("\n".join(line for line in proc.stdout.splitlines() if "ms/step" in line),
                  flush=True)
            written.append(out)
    return written


# ----------------------------------------------------------------------------- floor
def measure_floor(model: str, batch: int, seeds: int, args) -> dict:
    n = args.n
    config, method, mesh, source, layout = h.setup_model(model, args, batch, seeds)
    one = source(0)
    stacked = jax.tree.map(lambda x: jnp.stack([x] * n), one)
    multi = train.jit_train_steps(method, mesh)
    t_step, state = h.best_per_iteration(lambda st, b: multi(st, b)[0],
                                         train.init_state(method, config, mesh, layout), n,
                                         args.rounds, args.calls, stacked)

    opt = h.OptimiserRunner(method, config, mesh, layout, warm_up=False)
    update = jax.vmap(lambda st, g: st.apply_gradients(grads=g))
    opt_scan = jax.jit(lambda st, g: jax.lax.scan(lambda c, _: (update(c, g), None), st, None,
                                                  length=n)[0], donate_argnums=(0,))
    t_opt, _ = h.best_per_iteration(opt_scan, opt.state, n, args.rounds, args.calls, opt.grads)

    products = h.MatmulsRunner(method, state, one, warm_up=False)

    def body(ops, _):
        # each product's first operand takes one element of its output (times 1e-30), so
        # that XLA cannot hoist the products out of the loop
        outs = [p.bind(*o, **kw) for (p, kw), o in zip(products.prims, ops)]
        return [(o[0] + 1e-30 * out.reshape(-1)[-1],) + tuple(o[1:])
                for o, out in zip(ops, outs)], None

    mm_scan = jax.jit(lambda ops: jax.lax.scan(body, ops, None, length=n)[0],
                      donate_argnums=(0,))
    t_mm, _ = h.best_per_iteration(mm_scan, products.operands, n, args.rounds, args.calls)
    return {"model": model, "batch": batch, "seeds": seeds, "steps_per_call": n,
            "step_ms": t_step * 1e3, "optimiser_ms": t_opt * 1e3, "products_ms": t_mm * 1e3,
            "products_count": products.count, "products_flops": products.flops,
            "products_gflops_per_s": products.flops / t_mm / 1e9,
            "floor_ms": (t_opt + t_mm) * 1e3}


def cmd_floor(args, argv) -> list[dict]:
    malloc, dispatch = h.apply_host_settings(args)
    rows = []
    for s in args.seeds_list:
        rows.append(measure_floor(args.model, args.batch, s, args))
        r = rows[-1]
        print(f"  {args.model} B={args.batch} seeds={s}: step {r['step_ms']:.3f} ms, "
              f"optimiser alone {r['optimiser_ms']:.3f}, products alone {r['products_ms']:.3f} "
              f"({r['products_gflops_per_s']:.0f} GFLOP/s, {r['products_count']} products), "
              f"floor {r['floor_ms']:.3f} ms", flush=True)
    base = rows[0]["step_ms"] / rows[0]["seeds"]
    for r in rows:
        r["step_vs_one_seed"] = r["step_ms"] / base
        r["floor_vs_one_seed"] = r["floor_ms"] / base
        print(f"  seeds={r['seeds']}: step {r['step_vs_one_seed']:.2f}x one seed's step, "
              f"floor (products + optimiser alone) {r['floor_vs_one_seed']:.2f}x")
    if args.out:
        h.write_rows(args.out, argv, malloc, dispatch, rows)
    return rows


# ----------------------------------------------------------------------------- optimizer
def _cost(compiled) -> dict:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return dict(analysis or {})


def _loop_fusions(compiled) -> int:
    return sum(" fusion(" in line and "kind=kLoop" in line
               for line in compiled.as_text().splitlines())


class _Program:
    """A donated program ``carry, g -> carry`` with its compiled form and its carry."""

    def __init__(self, fn, carry, grads):
        self.compiled = jax.jit(fn, donate_argnums=(0,)).lower(carry, grads).compile()
        self.carry, self.grads = carry, grads
        self.run(1)

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.carry = self.compiled(self.carry, self.grads)
        jax.block_until_ready(self.carry)
        return (time.perf_counter() - t0) / n


def optimizer_programs(model: str, seeds: int, args) -> tuple[dict, int]:
    """The three programs for ``seeds`` stacked copies of ``model``'s parameters."""
    config, method, mesh, _, layout = h.setup_model(model, args, 16, seeds)
    params = train.init_state(method, config, mesh, layout).params
    n_params = int(sum(x.size for x in jax.tree.leaves(params)))
    tx = steps.make_optimizer(config.train)

    def update(carry, grads):
        def one(p, opt_state, g):
            updates, opt_state = tx.update(g, opt_state, p)
            return optax.apply_updates(p, updates), opt_state
        return jax.vmap(one)(*carry, grads)

    def stream(carry, g):
        p, mu, nu = carry
        return p + 1e-3 * g, 0.9 * mu + g, 0.999 * nu + g * g

    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(params)
    fresh = lambda x: jnp.array(x, copy=True)  # noqa: E731  (each program donates its own)
    programs = {
        "optax": _Program(update, (params, jax.vmap(tx.init)(params)),
                          jax.tree.map(lambda p: 1e-3 * p, params)),
        "flat": _Program(update, (fresh(flat), jax.vmap(tx.init)(flat)), 1e-3 * flat),
        "stream": _Program(stream, (fresh(flat), jnp.zeros_like(flat), jnp.ones_like(flat)),
                           1e-3 * flat),
    }
    return programs, n_params


def cmd_optimizer(args, argv) -> list[dict]:
    malloc, dispatch = h.apply_host_settings(args)
    rows = []
    for s in args.seeds_list:
        programs, n_params = optimizer_programs(args.model, s, args)
        reps = {k: h.reps_for(r.run(1), args.budget, 3, 500) for k, r in programs.items()}
        times = h.paired_rounds(programs, reps, args.rounds)
        for name in PROGRAMS:
            compiled = programs[name].compiled
            t = float(np.min(times[name]))
            bytes_accessed = float(_cost(compiled).get("bytes accessed", float("nan")))
            rows.append({"model": args.model, "seeds": s, "params": n_params, "program": name,
                         "time": h.summary(times[name]),
                         "bytes_per_param": bytes_accessed / n_params,
                         "gb_per_s": bytes_accessed / t / 1e9,
                         "loop_fusions": _loop_fusions(compiled)})
    print(f"\n## Optimiser update, {args.model}")
    print(f"{'seeds':>5s} {'params':>10s} {'program':>7s} {'ms':>7s} {'x optax':>7s} "
          f"{'B/param':>7s} {'GB/s':>6s} {'loop fusions':>12s}")
    optax_ms = {r["seeds"]: r["time"]["min_s"] for r in rows if r["program"] == "optax"}
    for r in rows:
        t = r["time"]["min_s"]
        print(f"{r['seeds']:5d} {r['params']:10,d} {r['program']:>7s} {t * 1e3:7.3f} "
              f"{t / optax_ms[r['seeds']]:7.2f} {r['bytes_per_param']:7.1f} "
              f"{r['gb_per_s']:6.1f} {r['loop_fusions']:12d}")
    if args.out:
        h.write_rows(args.out, argv, malloc, dispatch, rows)
    return rows


# ----------------------------------------------------------------------------- sampling
class _ScanRunner:
    """``train.jit_train_steps`` compiled for ``n`` steps per call, with its state."""

    def __init__(self, method, config, mesh, layout, stacked):
        self.state = train.init_state(method, config, mesh, layout)
        self.compiled = train.jit_train_steps(method, mesh).lower(self.state, stacked).compile()


def cmd_sampling(args, argv) -> list[dict]:
    _, dispatch = h.apply_host_settings(args)
    n_call = args.steps_per_call
    print(f"load average at start {os.getloadavg()[0]:.1f}; train.steps_per_call={n_call}"
          + (f", train.prefetch_steps={args.prefetch_steps}" if n_call == 1 else "")
          + f"; CPU dispatch {dispatch['dispatch']}", flush=True)
    rows = []
    for batch in args.batch_sizes:
        config, method, mesh, source, layout = h.setup_model(
            "numerical_case2", args, batch, prefetch_steps=args.prefetch_steps)
        if n_call == 1:
            fixed = source(0)
            r = h.StepRunner(method, config, mesh, layout, fixed, execute=False)
            draw, unit = source, 1
        else:
            fixed = source.stacked(0, n_call)
            r = _ScanRunner(method, config, mesh, layout, fixed)
            draw, unit = (lambda first: source.stacked(first, n_call)), n_call
        jax.block_until_ready(fixed)
        r.state, m = r.compiled(r.state, fixed)       # warm-up (first execution allocates)
        jax.block_until_ready(draw(0))                # and the sampler's compile
        t0 = time.perf_counter()
        r.state, m = r.compiled(r.state, fixed)
        jax.block_until_ready((r.state, m))
        per_call = time.perf_counter() - t0
        if n_call == 1:   # whole sampler calls: a multiple of the prefetched chunk
            pf = args.prefetch_steps
            calls = max(4 * pf, int(args.seconds / per_call) // pf * pf)
        else:
            calls = max(4, int(args.seconds / per_call))

        def loop(fresh, start):
            t0 = time.perf_counter()
            for i in range(calls):
                b = draw(start + i * unit) if fresh else fixed
                r.state, m = r.compiled(r.state, b)
            jax.block_until_ready((r.state, m))
            return (time.perf_counter() - t0) / (calls * unit)

        tf, tx = [], []
        for k in range(args.rounds):
            tx.append(loop(False, 0))
            tf.append(loop(True, (k + 1) * calls * unit))
        row = {"batch": batch, "steps_per_call": n_call, "fixed_ms": min(tx) * 1e3,
               "fresh_ms": min(tf) * 1e3, "overhead": min(tf) / min(tx) - 1}
        rows.append(row)
        print(f"batch {batch}: fixed batch {row['fixed_ms']:.3f} ms/step, fresh batch "
              f"{row['fresh_ms']:.3f} ms/step, sampling overhead {row['overhead']:+.3f}",
              flush=True)
    return rows


# ----------------------------------------------------------------------------- arguments
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.loop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)

    s = sub.add_parser("seeds", help="the real loop: seeds x steps per call")
    s.add_argument("--config", default="synthetic", choices=h.CONFIGS,
                   help="the shipped config trained (its model, data and loss; --batch and "
                        "--seeds_list replace its batch size and seeds)")
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--seeds_list", default="1,8")
    s.add_argument("--per_call_list", default="1,10")
    s.add_argument("--steps", type=int, default=4000)
    s.add_argument("--log_every", type=int, default=200)
    s.add_argument("--out", default=None)

    lib = sub.add_parser("libraries", help="the loop with YNNPACK and with Eigen products")
    lib.add_argument("out_dir")
    lib.add_argument("--cases", default=LIBRARY_CASES,
                     help="space-separated config:batch:seeds:steps:log_every")

    f = sub.add_parser("floor", help="step, products alone, optimiser alone, scanned")
    f.add_argument("--model", default="numerical_case2", choices=h.MODELS)
    f.add_argument("--batch", type=int, default=16)
    f.add_argument("--seeds", default="1,8", help="comma-separated seed counts (vmap); the "
                                                   "first is the one the others are rated by")
    f.add_argument("--n", type=int, default=10, help="iterations per scanned call (the "
                                                     "training loop's default steps per call)")
    f.add_argument("--rounds", type=int, default=7)
    f.add_argument("--calls", type=int, default=60, help="scanned calls per round")
    f.add_argument("--out", default="", help="write the rows as JSON here")

    o = sub.add_parser("optimizer", help="the optimiser update's programs per seed count")
    o.add_argument("--model", default="numerical_case2", choices=h.MODELS)
    o.add_argument("--seeds", default="1,8", help="comma-separated seed counts (stacked)")
    o.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    o.add_argument("--budget", type=float, default=0.3, help="seconds per timing round")
    o.add_argument("--out", default="", help="write the rows as JSON here")

    sa = sub.add_parser("sampling", help="fresh batches against a fixed batch")
    sa.add_argument("--steps_per_call", type=int, default=10)
    sa.add_argument("--prefetch_steps", type=int, default=8)
    sa.add_argument("--batch_sizes", default="256,1024,4096")
    sa.add_argument("--rounds", type=int, default=5)
    sa.add_argument("--seconds", type=float, default=2.0, help="time per measurement")

    for parser in (s, lib, f, o, sa):
        h.add_host_arguments(parser)
    args = p.parse_args(argv)
    sp = {"seeds": s, "libraries": lib, "floor": f, "optimizer": o, "sampling": sa}[args.what]
    if args.what == "seeds":
        args.seeds_list = h.parse_seed_counts(sp, "--seeds_list", args.seeds_list)
        args.per_call_list = h.ints(args.per_call_list)
        if args.config.startswith("variant_mnist"):
            h.require_model_data(sp, "variant_mnist_3m", args.data_dir)
        bad = [n for n in args.per_call_list if n < 1 or args.log_every % n]
        if bad:
            sp.error(f"--per_call_list: {bad} must be >= 1 and divide "
                     f"--log_every={args.log_every}")
        if args.steps < 3 * args.log_every:
            sp.error(f"--steps={args.steps} must be at least 3 x --log_every={args.log_every} "
                     f"(the first two windows, with compilation, are not counted)")
    elif args.what == "libraries":
        try:
            parse_cases(args.cases)
        except ValueError as err:
            sp.error(str(err))
        if args.cpu_dots:
            sp.error("--cpu_dots: 'libraries' runs both")
    elif args.what in ("floor", "optimizer"):
        args.seeds_list = h.parse_seed_counts(sp, "--seeds", args.seeds)
        for flag in ("batch", "n", "rounds", "calls"):
            if getattr(args, flag, 1) < 1:
                sp.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
        if getattr(args, "budget", 1) <= 0:
            sp.error("--budget must be > 0")
        h.require_model_data(sp, args.model, args.data_dir)
        args.microbatch = "off"   # the one-pass step, as the floor's
    else:
        args.batch_sizes = h.ints(args.batch_sizes)
        if min([args.steps_per_call, args.prefetch_steps, args.rounds]) < 1:
            sp.error("--steps_per_call, --prefetch_steps and --rounds must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    return {"seeds": cmd_seeds, "libraries": cmd_libraries, "floor": cmd_floor,
            "optimizer": cmd_optimizer, "sampling": cmd_sampling}[args.what](args, argv)


if __name__ == "__main__":
    main()
