"""Cost of sampling inside the training loop: time per step of the jitted train step fed
freshly sampled batches (``input_pipeline.BatchSource``, as ``train.train`` does) against the
same step fed one fixed batch, numerical_case2, one seed, interleaved over 5 rounds, with
the host settings training uses (``host_memory.tune_malloc``, inline CPU dispatch; see
``--malloc_tuning`` and ``--cpu_dispatch``).

``--steps_per_call=N`` > 1 (default 10, what ``train.steps_per_call = -1`` picks at the
default ``log_every``): the loop's scanned path, ``train.jit_train_steps`` over the N
batches of one ``BatchSource.stacked`` call; 1: single steps, their batches drawn
``--prefetch_steps`` at a time.

    python benchmarks/bench_sampling_in_loop.py
    python benchmarks/bench_sampling_in_loop.py --steps_per_call=1
    python benchmarks/bench_sampling_in_loop.py --steps_per_call=1 --prefetch_steps=1   # one sampler call per step
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax  # noqa: E402

import bench_train as bt  # noqa: E402
from crl_jax import train  # noqa: E402  (bench_train put the repository root on sys.path)


class _ScanRunner:
    """``train.jit_train_steps`` compiled for ``n`` steps per call, with its state."""

    def __init__(self, method, config, mesh, layout, stacked):
        self.state = train.init_state(method, config, mesh, layout)
        self.compiled = train.jit_train_steps(method, mesh).lower(self.state, stacked).compile()


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps_per_call", type=int, default=10)
    p.add_argument("--prefetch_steps", type=int, default=8)
    p.add_argument("--batch_sizes", default="256,1024,4096")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    bt.add_host_arguments(p)
    a = p.parse_args(argv)
    if a.steps_per_call < 1 or a.prefetch_steps < 1 or a.rounds < 1:
        p.error("--steps_per_call, --prefetch_steps and --rounds must be >= 1")
    args = bt.parse_args(["--sections=throughput"])   # setup_model's defaults
    _, dispatch = bt.apply_host_settings(a)
    n_call = a.steps_per_call
    print(f"load average at start {os.getloadavg()[0]:.1f}; train.steps_per_call={n_call}"
          + (f", train.prefetch_steps={a.prefetch_steps}" if n_call == 1 else "")
          + f"; CPU dispatch {dispatch['dispatch']}", flush=True)
    rows = []
    for batch in (int(b) for b in a.batch_sizes.split(",")):
        config, method, mesh, source, layout = bt.setup_model(
            "numerical_case2", args, batch, prefetch_steps=a.prefetch_steps)
        if n_call == 1:
            fixed = source(0)
            r = bt.StepRunner(method, config, mesh, layout, fixed, execute=False)
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
            pf = a.prefetch_steps
            calls = max(4 * pf, int(a.seconds / per_call) // pf * pf)
        else:
            calls = max(4, int(a.seconds / per_call))

        def loop(fresh, start):
            t0 = time.perf_counter()
            for i in range(calls):
                b = draw(start + i * unit) if fresh else fixed
                r.state, m = r.compiled(r.state, b)
            jax.block_until_ready((r.state, m))
            return (time.perf_counter() - t0) / (calls * unit)

        tf, tx = [], []
        for k in range(a.rounds):
            tx.append(loop(False, 0))
            tf.append(loop(True, (k + 1) * calls * unit))
        row = {"batch": batch, "steps_per_call": n_call, "fixed_ms": min(tx) * 1e3,
               "fresh_ms": min(tf) * 1e3, "overhead": min(tf) / min(tx) - 1}
        rows.append(row)
        print(f"batch {batch}: fixed batch {row['fixed_ms']:.3f} ms/step, fresh batch "
              f"{row['fresh_ms']:.3f} ms/step, sampling overhead {row['overhead']:+.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
