"""The optimiser update of S seeds against the memory traffic XLA:CPU needs for it.

    python benchmarks/bench_optimizer.py --seeds=1,8 --out=bench_optimizer.json

Every training step ends with the optimiser update, whose cost grows with the number of
seeds trained together and not with the batch (docs/PERFORMANCE.md, *Seeds*). For the
parameters of ``--model`` (S seeds stacked on a leading axis, as training holds them) this
times, in interleaved rounds, three donated, jitted programs:

- ``optax``: the project's update (``steps.make_optimizer``: global-norm clipping, Adam, apply),
  vmapped over seeds: what every step pays.
- ``flat``: the same update on one flat vector per seed (the parameter tree ravelled):
  the per-leaf kernels merged into one of each.
- ``stream``: the simplest program with Adam's inputs and outputs, (p, mu, nu, g) ->
  (p + a g, b mu + g, c nu + g^2) on the flat vectors: no clipping, no bias correction,
  no square root.

For each it prints ms per update, the bytes XLA's cost analysis counts per parameter, the
GB/s that makes, and the loop fusions of the compiled program. XLA:CPU in jaxlib 0.10.2 emits
one loop fusion per output (no multi-output fusion), so Adam's three outputs read the
gradient three times: 44 bytes per parameter with the clipping norm, 36 for ``stream``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import bench_train as bt  # noqa: E402  (also puts the repository root on sys.path)
from crl_jax import experiment, parallel, steps, train  # noqa: E402

PROGRAMS = ("optax", "flat", "stream")


def _cost(compiled) -> dict:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return dict(analysis or {})


def _loop_fusions(compiled) -> int:
    return sum(" fusion(" in line and "kind=kLoop" in line
               for line in compiled.as_text().splitlines())


class _Runner:
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


def runners_for(model: str, seeds: int, args) -> tuple[dict, int]:
    """The three programs for ``seeds`` stacked copies of ``model``'s parameters."""
    config = bt.model_config(model, args.data_dir, 16, seeds)
    mesh = parallel.make_mesh(jax.devices()[:1])
    process, method, mesh = train.setup(config, None, mesh=mesh)
    layout = experiment.data_layout(process.spec)
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
    fresh = lambda x: jnp.array(x, copy=True)  # noqa: E731  (each runner donates its own)
    runners = {
        "optax": _Runner(update, (params, jax.vmap(tx.init)(params)),
                         jax.tree.map(lambda p: 1e-3 * p, params)),
        "flat": _Runner(update, (fresh(flat), jax.vmap(tx.init)(flat)), 1e-3 * flat),
        "stream": _Runner(stream, (fresh(flat), jnp.zeros_like(flat), jnp.ones_like(flat)),
                          1e-3 * flat),
    }
    return runners, n_params


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    malloc, dispatch = bt.apply_host_settings(args)
    rows = []
    for s in args.seeds_list:
        runners, n_params = runners_for(args.model, s, args)
        reps = {k: bt._reps(r.run(1), args.budget, 3, 500) for k, r in runners.items()}
        times = bt.paired_rounds(runners, reps, args.rounds)
        for name in PROGRAMS:
            compiled = runners[name].compiled
            t = float(np.min(times[name]))
            bytes_accessed = float(_cost(compiled).get("bytes accessed", float("nan")))
            rows.append({"model": args.model, "seeds": s, "params": n_params, "program": name,
                         "time": bt.summary(times[name]),
                         "bytes_per_param": bytes_accessed / n_params,
                         "gb_per_s": bytes_accessed / t / 1e9,
                         "loop_fusions": _loop_fusions(compiled)})
    print_table(rows)
    if args.out:
        bt.write_rows(args.out, argv, malloc, dispatch, rows)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n## Optimiser update, {rows[0]['model'] if rows else ''}")
    print(f"{'seeds':>5s} {'params':>10s} {'program':>7s} {'ms':>7s} {'x optax':>7s} "
          f"{'B/param':>7s} {'GB/s':>6s} {'loop fusions':>12s}")
    optax_ms = {r["seeds"]: r["time"]["min_s"] for r in rows if r["program"] == "optax"}
    for r in rows:
        t = r["time"]["min_s"]
        print(f"{r['seeds']:5d} {r['params']:10,d} {r['program']:>7s} {t * 1e3:7.3f} "
              f"{t / optax_ms[r['seeds']]:7.2f} {r['bytes_per_param']:7.1f} "
              f"{r['gb_per_s']:6.1f} {r['loop_fusions']:12d}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="numerical_case2", choices=bt.MODELS)
    p.add_argument("--seeds", default="1,8", help="comma-separated seed counts (stacked)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    p.add_argument("--budget", type=float, default=0.3, help="seconds per timing round")
    bt.add_host_arguments(p)
    p.add_argument("--out", default="", help="write the rows as JSON here")
    args = p.parse_args(argv)
    args.seeds_list = bt.parse_seed_counts(p, "--seeds", args.seeds)
    if args.rounds < 1 or args.budget <= 0:
        p.error("--rounds must be >= 1 and --budget > 0")
    bt.require_model_data(p, args.model, args.data_dir)
    return args


if __name__ == "__main__":
    main()
