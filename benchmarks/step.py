"""How fast is the training step, and how does it grow? (throughput and growth)

    python -m benchmarks.step --out=step.json                        # every section
    python -m benchmarks.step --sections=throughput --batch_sizes=256,4096
    python -m benchmarks.step --sections=growth --microbatch=off --cpu_dots=eigen

Sections (``--sections``, comma-separated):

- ``throughput``: steps/s and samples/s of the real jitted train step (one seed, one device)
  per model and batch size; its compile time; its FLOPs (XLA's cost analysis, or where larger
  the matrix products and convolutions counted in its jaxpr); the achieved FLOP/s against a
  jitted matmul of comparable shape ``(batch * sum_m K_m, width) @ (width, width)`` timed in the
  same rounds (``ratio_vs_matmul``) and a 2048^3 matmul; the time to sample a batch; peak host
  RSS, XLA's temporaries of the step, the device's peak memory where it reports it.
- ``growth``: time per step as measurements K, modalities M and latent dimension D grow, with
  the fitted exponent (slope of log time against log size).
- ``devices``: time per step at a fixed global batch on 1, 2, 4, 8 devices (on CPU one
  subprocess per count with ``--xla_force_host_platform_device_count``).
- ``chunks``: the step in 1, 2, 4, 8 chunks (gradient accumulation) against the count
  ``train.microbatch_size=-1`` picks: is the auto rule right on this machine?
- ``parts``: encoder, causal prior, decoder (each forward and backward), the loss forward,
  forward + backward, and the optimiser update, against the whole step.
- ``bandwidth``: GB/s of an elementwise ``a * x + b`` over growing float32 buffers.
- ``products``: GFLOP/s of the batched product ``(b, rows, w) @ (b, w, w)`` the step's layers
  use, per rows and b.

``--microbatch`` (default ``both``): time the one-pass step and the step a run with
``train.microbatch_size=-1`` uses (the same step when that is one chunk; a chunked step is
rated with the one-pass step's FLOPs). Each measurement is ``--rounds`` interleaved rounds;
reported are the fastest round and the median. The persistent compilation cache is off so
compile times are real. Runs unchanged on GPU. Seeds and the training loop:
``benchmarks.loop``; where the step's time goes: ``benchmarks.profiling``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness as h
from benchmarks.harness import (Matmul, StepRunner, images_available, model_config,
                                paired_rounds, setup_model, step_runners, summary, widest_layer)
from crl_jax import methods, parallel, steps, train
from crl_jax.host import autotune
from crl_jax.models import vae

SECTIONS = ("throughput", "devices", "growth", "chunks", "parts", "bandwidth", "products")
MODELS = h.MODELS


def _sum_all(tree):
    return sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(tree))


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
            sampler = h.Sampler(source)
            rows_mm = batch * sum(layout.n_measurements)
            comparable = Matmul(rows_mm, widest_layer(config), widest_layer(config), device)
            runners = {"sample": sampler, "matmul": comparable, "peak": peak, **modes}
            reps = {"sample": 3, "matmul": h.reps_for(comparable.run(1), args.budget),
                    "peak": h.reps_for(peak.run(1), args.budget),
                    **{m: h.reps_for(r.run(1), args.budget, args.steps, 50) for m, r in modes.items()}}
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
        "xla_temp_mb": runner.temp_mb, "host_peak_rss_mb": h.host_peak_rss_mb(),
        "device_peak_mb": h.device_peak_mb(device),
    }


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
            cmd = [sys.executable, "-m", "benchmarks.step", "--_devices_worker", str(n),
                   f"--devices_batch={args.devices_batch}", f"--rounds={args.rounds}",
                   f"--steps={args.steps}", f"--budget={args.budget}",
                   f"--data_dir={args.data_dir}", f"--malloc_tuning={args.malloc_tuning}",
                   f"--cpu_dispatch={args.cpu_dispatch}"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800,
                                  cwd=h.ROOT)
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
    reps = {"step": h.reps_for(runner.run(1), args.budget, args.steps, 50)}
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
    method = methods.build_method("personax_vae", layout, config)
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
        reps = {k: h.reps_for(r.run(1), args.budget, args.steps, 50) for k, r in runners.items()}
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
    ``--chunk_counts`` chunks (and the count ``autotune.resolve_microbatches`` picks), in paired
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
    init = train.init_state(method, config, mesh, layout)   # init compiled once
    one = StepRunner(method, config, mesh, layout, batch, state=h.initial_copy(init))
    config.train.microbatch_size = -1   # the count training would use
    auto = autotune.resolve_microbatches(config, method, mesh, one.state, batch,
                                      one_pass_temp_bytes=one.temp_mb * 2**20)
    counts = sorted({n for n in args.chunk_counts if batch_size % n == 0} | {1, auto})
    runners = {n: one if n == 1 else StepRunner(method, config, mesh, layout, batch, n,
                                                flops=one.flops, state=h.initial_copy(init))
               for n in counts}
    reps = {n: h.reps_for(r.run(1), args.budget, args.steps, 50) for n, r in runners.items()}
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
        runner = h.Fn(fn, x)
        times = paired_rounds({"f": runner}, {"f": h.reps_for(runner.run(1), args.budget, 3, 2000)},
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
            runners[(rows, b)] = h.Fn(product, jax.random.normal(kx, (b, rows, width)),
                                     jax.random.normal(kw, (b, width, width)))
            reps[(rows, b)] = h.reps_for(runners[(rows, b)].run(1), args.budget, 3, 2000)
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
        reps = {k: h.reps_for(r.run(1), args.budget, args.steps, 50) for k, r in runners.items()}
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
        "encoder (fwd+bwd)": h.Fn(encoder, params, xs),
        "causal prior (fwd+bwd)": h.Fn(prior, params, z),
        "decoder (fwd+bwd)": h.Fn(decoder, params, z, etas),
        "loss forward": h.Fn(loss_fwd, params, xs),
        "loss forward+backward": h.Fn(loss_fwd_bwd, params, xs),
        "optimiser update": h.Fn(optimiser, params, opt_state, params),
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch_sizes", default="256,1024,4096,16384")
    p.add_argument("--image_max_batch", type=int, default=16384,
                   help="largest batch for variant_mnist_3m (images are ~100x costlier)")
    h.add_host_arguments(p)
    p.add_argument("--rounds", type=int, default=3, help="timing rounds per measurement")
    p.add_argument("--steps", type=int, default=2, help="least steps per round")
    p.add_argument("--budget", type=float, default=0.5, help="target seconds per round")
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
                        "('auto': crl_jax.host.autotune's chunks) or both (throughput and "
                        "growth sections)")
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
    for name in ("batch_sizes", "devices_list", "k_list",
                 "m_list", "d_list", "product_rows", "product_batches", "chunk_counts",
                 "chunk_image_batches"):
        setattr(args, name, h.ints(getattr(args, name)))
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
            h.require_model_data(p, "variant_mnist_3m", args.data_dir)
            if not args.chunk_image_batches or min(args.chunk_image_batches) < 1:
                p.error("--chunk_image_batches must be comma-separated integers >= 1")
    if "products" in args.sections and (not args.product_rows or not args.product_batches
                                        or min(args.product_rows + args.product_batches) < 1):
        p.error("--product_rows and --product_batches must be comma-separated integers >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)  # real compile times
    malloc, dispatch = h.apply_host_settings(args)
    args.cpu_dispatch = dispatch["dispatch"]   # the mode in effect (for the devices workers)
    if args._devices_worker:
        print(json.dumps(devices_row(args._devices_worker, args)))
        return {}
    dev = jax.devices()[0]
    info = {
        "command": " ".join([os.path.relpath(sys.argv[0], h.ROOT)] + sys.argv[1:]),
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
    info["host_peak_rss_mb"] = h.host_peak_rss_mb()
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
