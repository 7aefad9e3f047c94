"""Cost of sampling inside the training loop: steps/s of the jitted train step fed a fresh
sampled batch every step (``input_pipeline.BatchSource``, as ``train.train`` does) against the
same step fed one fixed batch, numerical_case2, one seed, interleaved over 5 rounds, with
the host settings training uses (``host_memory.tune_malloc``, inline CPU dispatch; see
``--malloc_tuning`` and ``--cpu_dispatch``).

    python benchmarks/bench_sampling_in_loop.py
    python benchmarks/bench_sampling_in_loop.py --prefetch_steps=1   # one sampler call per step
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax  # noqa: E402

import bench_train as bt  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prefetch_steps", type=int, default=8)
    p.add_argument("--batch_sizes", default="256,1024,4096")
    bt.add_host_arguments(p)
    a = p.parse_args(argv)
    args = bt.parse_args(["--sections=throughput"])   # setup_model's defaults
    _, dispatch = bt.apply_host_settings(a)
    print(f"load average at start {os.getloadavg()[0]:.1f}; train.prefetch_steps={a.prefetch_steps}"
          f"; CPU dispatch {dispatch['dispatch']}")
    for batch in (int(b) for b in a.batch_sizes.split(",")):
        config, method, mesh, source, layout = bt.setup_model(
            "numerical_case2", args, batch, prefetch_steps=a.prefetch_steps)
        fixed = source(0)
        jax.block_until_ready(fixed)
        r = bt.StepRunner(method, config, mesh, layout, fixed)
        n = max(4 * a.prefetch_steps, int(2.0 / r.run(3)) // a.prefetch_steps * a.prefetch_steps)

        def loop(fresh, start):
            t0 = time.perf_counter()
            for i in range(n):
                b = source(start + i) if fresh else fixed
                r.state, m = r.compiled(r.state, b)
            jax.block_until_ready((r.state, m))
            return (time.perf_counter() - t0) / n

        tf, tx = [], []
        for k in range(5):
            tx.append(loop(False, 0))
            tf.append(loop(True, (k + 1) * n))
        print(f"batch {batch}: fixed batch {min(tx) * 1e3:.3f} ms/step, fresh batch "
              f"{min(tf) * 1e3:.3f} ms/step, sampling overhead {min(tf) / min(tx) - 1:+.3f}", flush=True)


if __name__ == "__main__":
    main()
