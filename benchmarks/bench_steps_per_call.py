"""The training loop's time per step with ``train.steps_per_call`` steps per dispatch.

Runs ``train.train`` (sampler, metrics, checkpoints: the real loop) on the synthetic default
(numerical_case1; ``--config`` for another shipped config) at a small batch, for each seed
count and each steps-per-call value, and reports the median and best time per step over the
logged windows (``steps_per_sec`` in ``metrics.jsonl``; the first two windows, with
compilation, are left out). Host settings as training (``--malloc_tuning``,
``--cpu_dispatch``); the products' library is XLA's default (YNNPACK) unless ``--cpu_dots``
says otherwise (training picks one per run: crl_jax/cpu_dots.py). Why: a dispatch costs
~0.4 ms on the project's CPU, most of a step of about a millisecond; a ``lax.scan`` of
several steps pays it once (docs/PERFORMANCE.md, *Dispatch*).

    python benchmarks/bench_steps_per_call.py --out=benchmarks/results/bench_steps_per_call_cpu.json
    python benchmarks/bench_steps_per_call.py --cpu_dispatch=async
    python benchmarks/bench_steps_per_call.py --batch=512 --seeds_list=3 --per_call_list=10 --cpu_dots=eigen
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train as bt  # noqa: E402  (also puts the repository root on sys.path)


CONFIGS = ("synthetic", "synthetic:case2", "variant_mnist", "variant_mnist:small")


def load_config(name: str, data_dir: str):
    """A shipped config by name (``synthetic``, ``variant_mnist:small``, ...)."""
    import importlib
    module, _, arg = name.partition(":")
    config = importlib.import_module(f"configs.{module}").get_config(arg or None)
    if module == "variant_mnist":
        config.data.data_dir = data_dir
    return config


def run(batch: int, seeds: int, per_call: int, steps: int, log_every: int,
        config_name: str = "synthetic", data_dir: str = "") -> dict:
    from crl_jax import experiment, input_pipeline, parallel, train

    config = load_config(config_name, data_dir)
    config.train.update(batch_size=batch, num_seeds=seeds, steps=steps, progress=False,
                        log_every=log_every, checkpoint_every=steps, steps_per_call=per_call)
    config.train.warmup_steps = min(int(config.train.warmup_steps), steps // 10)
    config.eval.plots = False
    with tempfile.TemporaryDirectory() as workdir:
        process, method, mesh = train.setup(config, workdir)
        source = input_pipeline.BatchSource.from_process(process, config.data, config.train,
                                                         parallel.batch_sharding(mesh))
        t0 = time.perf_counter()
        train.train(config, workdir, method, mesh, source, experiment.data_layout(process.spec))
        wall = time.perf_counter() - t0
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rates = [json.loads(line)["steps_per_sec"] for line in f][2:]
    ms = 1e3 / np.asarray(rates)
    return {"config": config_name, "batch": batch, "seeds": seeds, "steps_per_call": per_call,
            "steps": steps,
            "ms_per_step_median": float(np.median(ms)), "ms_per_step_best": float(ms.min()),
            "wall_s": wall}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="synthetic", choices=CONFIGS,
                   help="the shipped config trained (its model, data and loss; --batch and "
                        "--seeds_list replace its batch size and seeds)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds_list", default="1,8")
    p.add_argument("--per_call_list", default="1,8")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--log_every", type=int, default=200)
    p.add_argument("--out", default=None)
    bt.add_host_arguments(p)
    args = p.parse_args(argv)
    args.seeds_list = bt.parse_seed_counts(p, "--seeds_list", args.seeds_list)
    args.per_call_list = bt._ints(args.per_call_list)
    if args.config.startswith("variant_mnist"):
        bt.require_model_data(p, "variant_mnist_3m", args.data_dir)
    bad = [n for n in args.per_call_list if n < 1 or args.log_every % n]
    if bad:
        p.error(f"--per_call_list: {bad} must be >= 1 and divide --log_every={args.log_every}")
    if args.steps < 3 * args.log_every:
        p.error(f"--steps={args.steps} must be at least 3 x --log_every={args.log_every} "
                f"(the first two windows, with compilation, are not counted)")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    malloc, dispatch = bt.apply_host_settings(args)
    rows = []
    for seeds in args.seeds_list:
        for per_call in args.per_call_list:
            rows.append(run(args.batch, seeds, per_call, args.steps, args.log_every,
                            args.config, args.data_dir))
            r = rows[-1]
            print(f"{args.config}, batch {r['batch']}, {seeds} seed(s), {per_call} step(s) "
                  f"per call: {r['ms_per_step_median']:.3f} ms/step median, "
                  f"{r['ms_per_step_best']:.3f} best ({dispatch['dispatch']} dispatch, "
                  f"{dispatch['dots']} products)",
                  flush=True)
    if args.out:
        bt.write_rows(args.out, argv, malloc, dispatch, rows)
    return rows


if __name__ == "__main__":
    main()
