"""The benchmarks (``python -m benchmarks.NAME``) run end to end on tiny settings and write
what the docs cite; the shared harness counts products and times iterations correctly.

Not timing tests: they check that the scripts work and report what they say (a tiny cache
budget forces the microbatched path at a small batch).
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import sys
    from crl_jax.host import autotune
    autotune.AUTO_MICROBATCH_TEMP_MB = 0.25   # force chunks at small batches
    autotune.AUTO_MICROBATCH_TEMP_MB_ASYNC = 0.25
    autotune.AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS = 0.0
    from benchmarks import step
    step.main(sys.argv[1:])
""")


def _run(tmp_path, *args):
    out = tmp_path / "bench.json"
    common = ["--models=numerical_case2", "--rounds=1", "--steps=1", "--budget=0.01",
              f"--out={out}"]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args, *common], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def test_step_tiny_run_reports_both_steps(tmp_path):
    result, stdout = _run(tmp_path, "--sections=throughput", "--batch_sizes=256")

    rows = {r["microbatch_mode"]: r for r in result["throughput"]}
    assert set(rows) == {"one pass", "auto"}
    assert rows["one pass"]["microbatches"] == 1 and rows["auto"]["microbatches"] > 1
    # the chunked step is rated with the one-pass FLOPs (same arithmetic)
    assert rows["auto"]["flops_per_step"] == rows["one pass"]["flops_per_step"] > 0
    assert rows["auto"]["xla_temp_mb"] < rows["one pass"]["xla_temp_mb"]
    for r in rows.values():
        assert np.isfinite(r["ratio_vs_matmul"]) and r["ratio_vs_matmul"] > 0
    # on CPU XLA counts every product plus the elementwise work: it is the larger count
    one = rows["one pass"]
    assert 0.9 * one["xla_flops_per_step"] < one["product_flops_per_step"] < one["xla_flops_per_step"]
    assert one["flops_per_step"] == one["xla_flops_per_step"]
    # the chunked step's scan body is counted once per chunk: the same products in all
    assert rows["auto"]["product_flops_per_step"] == pytest.approx(one["product_flops_per_step"])

    assert "## Throughput" in stdout


def _harness():
    from benchmarks import harness
    return harness


def test_jaxpr_matmuls_finds_nested_products_and_counts_their_flops():
    import jax
    import jax.numpy as jnp
    bt = _harness()

    @jax.custom_vjp
    def inner(x, w):
        return x @ w

    inner.defvjp(lambda x, w: (x @ w, None), lambda _, g: (g, g))

    def f(x, w, v):
        y = jax.jit(lambda a, b: jnp.einsum("bij,bjk->bik", a, b))(x, w)   # inside a pjit
        return inner(y[0], v)                                               # inside custom_vjp

    x, w, v = jnp.ones((3, 5, 7)), jnp.ones((3, 7, 11)), jnp.ones((11, 2))
    eqns = bt.jaxpr_matmuls(jax.make_jaxpr(f)(x, w, v))
    assert len(eqns) == 2
    assert sorted(bt.matmul_flops(e) for e in eqns) == [2.0 * 5 * 2 * 11, 2.0 * 3 * 5 * 11 * 7]


def test_jaxpr_matmuls_refuses_products_inside_a_loop():
    import jax
    import jax.numpy as jnp
    bt = _harness()

    def f(x, w):
        return jax.lax.scan(lambda c, wi: (c @ wi, None), x, w)[0]

    with pytest.raises(ValueError, match="inside a loop"):
        bt.jaxpr_matmuls(jax.make_jaxpr(f)(jnp.ones((4, 4)), jnp.ones((3, 4, 4))))


def test_product_flops_counts_convolutions_like_xla_and_loops_per_iteration():
    """Convolutions (strided, transposed i.e. input-dilated, grouped) and their gradients:
    the count matches XLA's CPU cost analysis up to the elementwise work it adds (counting a
    transposed convolution's taps on the dilation holes would give 2.4x); a scan body counts
    once per iteration; a product inside a while loop has no known count."""
    import jax
    import jax.numpy as jnp
    bt = _harness()
    nhwc = ("NHWC", "HWIO", "NHWC")

    def net(p, x):
        y = jax.nn.relu(jax.lax.conv_general_dilated(x, p[0], (2, 2), "SAME",
                                                     dimension_numbers=nhwc))
        y = jax.lax.conv_transpose(y, p[1], (2, 2), "SAME", dimension_numbers=nhwc)
        y = jax.lax.conv_general_dilated(y, p[2], (1, 1), "SAME", dimension_numbers=nhwc,
                                         feature_group_count=2)
        return jnp.sum(y ** 2)

    p = (jnp.ones((3, 3, 4, 16)), jnp.ones((4, 4, 16, 8)), jnp.ones((3, 3, 4, 6)))
    x = jnp.ones((8, 28, 28, 4))
    for f in (net, jax.grad(net)):
        ours = bt.product_flops(jax.make_jaxpr(f)(p, x))
        xla = bt.xla_flops(jax.jit(f).lower(p, x).compile())
        assert 0.97 * xla < ours < xla
    # the first convolution alone, by hand: 8 x 14 x 14 x 16 outputs, 3 x 3 x 4 taps except
    # where the window overhangs: SAME padding of a stride-2 3-tap window on 28 pads 0 / 1,
    # so the last output row and column lose one tap each (13 x 3 + 2 = 41 per dimension)
    conv = jax.make_jaxpr(lambda x, k: jax.lax.conv_general_dilated(
        x, k, (2, 2), "SAME", dimension_numbers=nhwc))(x, p[0])
    assert bt.product_flops(conv) == 2.0 * 8 * 16 * 4 * 41 * 41

    def scanned(c, w):
        return jax.lax.scan(lambda c, wi: (c @ wi, None), c, w)[0]

    jx = jax.make_jaxpr(scanned)(jnp.ones((5, 4)), jnp.ones((3, 4, 4)))
    assert bt.product_flops(jx) == 3 * 2.0 * 5 * 4 * 4

    def looped(c, w):
        return jax.lax.while_loop(lambda s: s[1] < 3, lambda s: (s[0] @ w, s[1] + 1), (c, 0))[0]

    with pytest.raises(ValueError, match="while loop"):
        bt.product_flops(jax.make_jaxpr(looped)(jnp.ones((4, 4)), jnp.ones((4, 4))))

    def scan_in_while(c, w):   # the scan's count is known, the loop around it is not
        return jax.lax.while_loop(lambda s: s[1] < 3,
                                  lambda s: (scanned(s[0], w), s[1] + 1), (c, 0))[0]

    with pytest.raises(ValueError, match="while loop"):
        bt.product_flops(jax.make_jaxpr(scan_in_while)(jnp.ones((5, 4)), jnp.ones((3, 4, 4))))


@pytest.mark.slow
def test_step_growth_reports_both_series(tmp_path):
    result, stdout = _run(tmp_path, "--sections=growth", "--k_list=1,2", "--m_list=2,3",
                          "--d_list=4,8", "--growth_batch=64")
    for name in ("measurements_K", "modalities_M", "latent_dim_D"):
        series = result["growth"][name]["series"]
        assert set(series) == {"one pass", "auto"}
        assert all(np.isfinite(s["time_exponent"]) for s in series.values())
        assert len(series["auto"]["microbatches"]) == 2
    assert "## Growth" in stdout


@pytest.mark.slow
def test_step_auto_only_never_runs_the_one_pass_step(tmp_path):
    result, _ = _run(tmp_path, "--sections=throughput", "--batch_sizes=64", "--microbatch=auto")
    (row,) = result["throughput"]
    assert row["microbatch_mode"] == "auto" and row["microbatches"] > 1
    assert row["flops_per_step"] > 0 and row["steps_per_s"] > 0


@pytest.mark.slow
def test_loop_optimizer_tiny_run(tmp_path):
    """``benchmarks.loop optimizer``: the three programs per seed count, on the parameters
    of the model (twice as many for two seeds), with XLA's byte counts: the stream moves at
    least the 28 bytes per parameter of Adam's inputs and outputs and no more than Adam."""
    out = tmp_path / "opt.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.loop", "optimizer", "--seeds=1,2",
                           "--rounds=1", "--budget=0.01", f"--out={out}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = {(r["seeds"], r["program"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {(s, p) for s in (1, 2) for p in ("optax", "flat", "stream")}
    assert rows[(2, "optax")]["params"] == 2 * rows[(1, "optax")]["params"] > 100_000
    for s in (1, 2):
        optax_row, flat, stream = (rows[(s, p)] for p in ("optax", "flat", "stream"))
        assert 28.0 <= stream["bytes_per_param"] <= optax_row["bytes_per_param"]
        assert flat["loop_fusions"] < optax_row["loop_fusions"]
        assert all(r["time"]["min_s"] > 0 and r["gb_per_s"] > 0
                   for r in (optax_row, flat, stream))
    assert "## Optimiser update" in proc.stdout


def test_loop_optimizer_rejects_bad_seed_counts():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.loop", "optimizer", "--seeds=0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--seeds" in proc.stderr


def test_step_products_section(tmp_path):
    """The products section: one row per (rows, batch of matrices) at the model's width."""
    result, stdout = _run(tmp_path, "--sections=products", "--product_rows=16,64",
                          "--product_batches=1,3")
    rows = {(r["rows"], r["batch"]): r for r in result["products"]}
    assert set(rows) == {(16, 1), (16, 3), (64, 1), (64, 3)}
    assert all(r["width"] == 128 and r["flops_per_s"] > 0 and r["time"]["min_s"] > 0
               for r in rows.values())
    assert "## Batched products" in stdout


def test_step_products_rejects_bad_sizes():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.step", "--sections=products",
                           "--product_rows=0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--product_rows" in proc.stderr


# slow (5 minutes on 2 cores, most of it compilation): the chunks section's argument checks
# below stay in the default run
@pytest.mark.slow
def test_step_chunks_section_times_the_auto_choice_against_the_others(tmp_path):
    """The chunks section: per layout, the step in each count (the auto count included,
    here forced above 1 by the tiny budget of SCRIPT) against the fastest of them."""
    result, stdout = _run(tmp_path, "--sections=chunks", "--k_list=1", "--m_list=2",
                          "--growth_batch=64", "--chunk_counts=1,2")
    by_layout = {}
    for r in result["chunks"]:
        by_layout.setdefault((r["symbol"], r["value"]), []).append(r)
    assert set(by_layout) == {("K", 1), ("M", 2)}
    for rows in by_layout.values():
        auto = rows[0]["auto_chunks"]
        assert auto > 1 and 64 % auto == 0
        assert sorted(r["chunks"] for r in rows) == sorted({1, 2, auto})
        assert [r["vs_fastest"] for r in rows if r["chunks"] == rows[0]["fastest_chunks"]] == [1.0]
        assert all(r["vs_fastest"] >= 1.0 and r["rows_per_chunk"] * r["chunks"] == 64
                   for r in rows)
        one = next(r for r in rows if r["chunks"] == 1)
        assert all(r["one_pass_temp_mb"] == one["xla_temp_mb"] > 0 for r in rows)
    assert "## Chunks per step" in stdout and "auto/fastest" in stdout


@pytest.mark.slow
def test_step_chunks_section_images_series(tmp_path):
    """--chunk_series=images: the image model's step in each count at each batch (the
    series the GPU run needs for the image step's slowdown at batch 4096)."""
    result, stdout = _run(tmp_path, "--sections=chunks", "--chunk_series=images",
                          "--chunk_image_batches=8", "--chunk_counts=1,2")
    rows = result["chunks"]
    assert {r["series"] for r in rows} == {"images"} and {r["batch"] for r in rows} == {8}
    assert {1, 2} <= {r["chunks"] for r in rows}
    assert all(r["vs_fastest"] >= 1.0 and r["rows_per_chunk"] * r["chunks"] == 8 for r in rows)
    assert "B=8" in stdout


def test_step_chunks_rejects_bad_series(tmp_path):
    for flags, message in ((["--chunk_series=K,Q"], "--chunk_series"),
                           (["--chunk_series=images", f"--data_dir={tmp_path}"],
                            "needs mnist/ and fashion-mnist/")):
        proc = subprocess.run([sys.executable, "-m", "benchmarks.step", "--sections=chunks",
                               *flags], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_step_chunks_rejects_bad_counts():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.step", "--sections=chunks",
                           "--chunk_counts=0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--chunk_counts" in proc.stderr


@pytest.mark.slow
def test_loop_seeds_tiny_run(tmp_path):
    from benchmarks import loop
    out = tmp_path / "spc.json"
    rows = loop.main(["seeds", "--batch=8", "--seeds_list=1", "--per_call_list=1,2",
                      "--steps=30", "--log_every=10", f"--out={out}"])
    assert [(r["seeds"], r["steps_per_call"]) for r in rows] == [(1, 1), (1, 2)]
    assert all(r["steps"] == 30 and 0 < r["ms_per_step_best"] <= r["ms_per_step_median"]
               for r in rows)
    assert json.loads(out.read_text())["rows"] == rows
    with pytest.raises(SystemExit):   # 3 does not divide --log_every
        loop.parse_args(["seeds", "--per_call_list=3", "--log_every=10"])
    with pytest.raises(SystemExit):
        loop.parse_args(["seeds", "--config=mnist"])
    # another shipped config (the image model's MLP variant): its own data and widths
    rows = loop.main(["seeds", "--config=variant_mnist:small", "--batch=8", "--seeds_list=1",
                      "--per_call_list=2", "--steps=30", "--log_every=10"])
    assert [(r["config"], r["batch"], r["steps_per_call"]) for r in rows] == [
        ("variant_mnist:small", 8, 2)]


@pytest.mark.slow
@pytest.mark.parametrize("per_call", [1, 2])
def test_loop_sampling_tiny_run(per_call):
    """Both of the loop's paths: single steps (prefetched chunks) and the scanned calls fed
    by BatchSource.stacked."""
    from benchmarks import loop
    rows = loop.main(["sampling", f"--steps_per_call={per_call}", "--batch_sizes=16",
                      "--rounds=1", "--seconds=0.01", "--prefetch_steps=2"])
    assert [(r["batch"], r["steps_per_call"]) for r in rows] == [(16, per_call)]
    assert rows[0]["fixed_ms"] > 0 and rows[0]["fresh_ms"] > 0
    with pytest.raises(SystemExit):
        loop.main(["sampling", "--steps_per_call=0"])


@pytest.mark.slow
def test_benchmarks_take_the_products_library(tmp_path):
    """--cpu_dots sets YNNPACK or Eigen products before JAX starts and the JSON says which;
    asked for after the backend started (here, in the test process) it is an error rather
    than numbers of the other library."""
    out = tmp_path / "spc.json"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "CRL_JAX_CPU_DOTS")}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.loop", "seeds", "--batch=8", "--seeds_list=1",
         "--per_call_list=2", "--steps=30", "--log_every=10", "--cpu_dots=eigen",
         f"--out={out}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text())["info"]["cpu_dots"] == "eigen"
    assert "eigen products" in proc.stdout
    import jax
    from benchmarks import loop
    from crl_jax.host import dots
    jax.devices()   # this process's backend has started (it may not have, in this worker)
    other = "eigen" if dots.in_effect() == "ynnpack" else "ynnpack"
    with pytest.raises(RuntimeError, match=f"--cpu_dots={other}: JAX's backend had already"):
        loop.main(["seeds", "--batch=8", "--seeds_list=1", "--per_call_list=2", "--steps=30",
                   "--log_every=10", f"--cpu_dots={other}"])


@pytest.mark.slow
def test_loop_libraries_runs_both_libraries(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "CRL_JAX_CPU_DOTS")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.loop", "libraries", str(tmp_path),
                           "--cases=synthetic:8:1:30:10"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for lib in ("ynnpack", "eigen"):
        result = json.loads((tmp_path / f"synthetic_b8_s1_{lib}.json").read_text())
        assert result["info"]["cpu_dots"] == lib
        assert [(r["batch"], r["seeds"]) for r in result["rows"]] == [(8, 1)]
    assert proc.stdout.count("ms/step") == 2


@pytest.mark.slow
def test_loop_floor_tiny_run(tmp_path):
    """The scanned step, products and optimiser for 1 and 2 seeds: the floor is their sum,
    the products are the step's (2 seeds: exactly twice one seed's FLOPs, the same count)."""
    from benchmarks import loop
    out = tmp_path / "floor.json"
    rows = loop.main(["floor", "--batch=4", "--seeds=1,2", "--n=2", "--rounds=1", "--calls=2",
                      f"--out={out}"])
    assert [(r["seeds"], r["steps_per_call"]) for r in rows] == [(1, 2), (2, 2)]
    one, two = rows
    assert two["products_flops"] == 2 * one["products_flops"] > 0
    assert two["products_count"] == one["products_count"] > 10
    for r in rows:
        assert r["step_ms"] > 0 and r["optimiser_ms"] > 0 and r["products_ms"] > 0
        assert r["floor_ms"] == pytest.approx(r["optimiser_ms"] + r["products_ms"])
        assert r["floor_vs_one_seed"] == pytest.approx(r["floor_ms"] / one["step_ms"])
    assert one["step_vs_one_seed"] == 1.0
    assert json.loads(out.read_text())["rows"] == rows
    for bad in (["--n=0"], ["--seeds=0"], ["--calls=0"]):
        with pytest.raises(SystemExit):
            loop.parse_args(["floor", *bad])


def test_harness_times_per_scanned_iteration():
    """Seconds per scanned iteration: a call of n iterations divided by n and by the calls."""
    import time
    from benchmarks import harness

    def call(carry):   # stands for a scanned call of 4 iterations taking 20 ms
        time.sleep(0.02)
        return carry + 1

    seconds, carry = harness.best_per_iteration(call, 0, 4, 2, 3)
    assert carry == 1 + 2 * 3                       # warm-up, then rounds x calls
    assert 0.005 <= seconds < 0.0075
