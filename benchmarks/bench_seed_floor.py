"""The seeds' floor in the training loop's units: a step, its products alone and its
optimiser update alone, each run N times in one ``lax.scan`` per call.

    python benchmarks/bench_seed_floor.py --batch=16 --seeds=1,8 --out=bench_seed_floor.json

The training loop runs ``train.steps_per_call`` (10) steps per dispatch, so one seed's step
there pays a tenth of a dispatch. ``bench_train.py --sections=seeds`` times the products
alone and the optimiser alone as separate calls, each with its own dispatch, which puts its
floor in the units of a single dispatched step. Here all three are scanned the same way:

- ``step``: ``train.jit_train_steps`` (the loop's scan of the train step) over N copies of
  one batch;
- ``optimiser``: the update of all seeds' state (clipping, Adam, apply; vmapped over seeds)
  N times, the state carried;
- ``products``: every ``dot_general`` of the one-pass step's jaxpr on random operands
  (``bench_train._MatmulsRunner``) N times; each product's first operand takes one element
  of its last output (times 1e-30), so that XLA cannot hoist them out of the loop. That adds
  one scalar read and one small elementwise pass per product, which is inside the floor.

products + optimiser, over one seed's step, is what S seeds cost at the least with XLA's
products and optimiser on this device: no fusion or schedule of the rest can go below it.
Times are the best round of ``--rounds``, per iteration (ms per step).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train as bt  # noqa: E402  (also puts the repository root on sys.path)


def best_per_iteration(fn, carry, n: int, rounds: int, calls: int, *rest):
    """``(seconds per iteration, carry)``: best of ``rounds`` rounds of ``calls`` calls of a
    scanned ``fn(carry, *rest) -> carry`` of ``n`` iterations (the carry donated)."""
    import jax
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


def measure(model: str, batch: int, seeds: int, args) -> dict:
    import jax
    import jax.numpy as jnp
    from crl_jax import train

    n = args.n
    config, method, mesh, source, layout = bt.setup_model(model, args, batch, seeds)
    one = source(0)
    stacked = jax.tree.map(lambda x: jnp.stack([x] * n), one)
    multi = train.jit_train_steps(method, mesh)
    t_step, state = best_per_iteration(lambda st, b: multi(st, b)[0],
                                       train.init_state(method, config, mesh, layout), n,
                                       args.rounds, args.calls, stacked)

    opt = bt._OptimiserRunner(method, config, mesh, layout, warm_up=False)
    update = jax.vmap(lambda st, g: st.apply_gradients(grads=g))
    opt_scan = jax.jit(lambda st, g: jax.lax.scan(lambda c, _: (update(c, g), None), st, None,
                                                  length=n)[0], donate_argnums=(0,))
    t_opt, _ = best_per_iteration(opt_scan, opt.state, n, args.rounds, args.calls, opt.grads)

    products = bt._MatmulsRunner(method, state, one, warm_up=False)

    def body(ops, _):
        outs = [p.bind(*o, **kw) for (p, kw), o in zip(products.prims, ops)]
        return [(o[0] + 1e-30 * out.reshape(-1)[-1],) + tuple(o[1:])
                for o, out in zip(ops, outs)], None

    mm_scan = jax.jit(lambda ops: jax.lax.scan(body, ops, None, length=n)[0],
                      donate_argnums=(0,))
    t_mm, _ = best_per_iteration(mm_scan, products.operands, n, args.rounds, args.calls)
    return {"model": model, "batch": batch, "seeds": seeds, "steps_per_call": n,
            "step_ms": t_step * 1e3, "optimiser_ms": t_opt * 1e3, "products_ms": t_mm * 1e3,
            "products_count": products.count, "products_flops": products.flops,
            "products_gflops_per_s": products.flops / t_mm / 1e9,
            "floor_ms": (t_opt + t_mm) * 1e3}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="numerical_case2", choices=bt.MODELS)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", default="1,8", help="comma-separated seed counts (vmap); the "
                                                   "first is the one the others are rated by")
    p.add_argument("--n", type=int, default=10, help="iterations per scanned call (the "
                                                     "training loop's default steps per call)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=60, help="scanned calls per round")
    bt.add_host_arguments(p)
    p.add_argument("--out", default="", help="write the rows as JSON here")
    args = p.parse_args(argv)
    args.seeds_list = bt.parse_seed_counts(p, "--seeds", args.seeds)
    for flag in ("batch", "n", "rounds", "calls"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    bt.require_model_data(p, args.model, args.data_dir)
    args.microbatch = "off"   # bt.setup_model reads it: the one-pass step, as the floor's
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    malloc, dispatch = bt.apply_host_settings(args)
    rows = []
    for s in args.seeds_list:
        rows.append(measure(args.model, args.batch, s, args))
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
        bt.write_rows(args.out, argv, malloc, dispatch, rows)
    return rows


if __name__ == "__main__":
    main()
