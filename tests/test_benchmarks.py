"""benchmarks/bench_train.py runs end to end on tiny settings and writes what the docs cite.

Not a timing test: it checks that the script works and reports one-pass and microbatched
steps side by side (a tiny cache budget forces the microbatched path at a small batch).
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
    sys.path.insert(0, "benchmarks")
    from crl_jax import steps
    steps.AUTO_MICROBATCH_TEMP_MB = 0.25   # force chunks at small batches
    steps.AUTO_MICROBATCH_TEMP_MB_ASYNC = 0.25
    steps.AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS = 0.0
    import bench_train
    bench_train.main(sys.argv[1:])
""")


def _run(tmp_path, *args):
    out = tmp_path / "bench.json"
    common = ["--models=numerical_case2", "--rounds=1", "--steps=1", "--budget=0.01",
              f"--out={out}"]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args, *common], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def test_bench_train_tiny_run_reports_both_steps(tmp_path):
    result, stdout = _run(tmp_path, "--sections=throughput,seeds", "--batch_sizes=256",
                          "--seed_batches=16", "--seeds_list=1,2")

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

    seeds = result["seeds"]
    assert {(r["microbatch_mode"], r["seeds"]) for r in seeds} == {
        ("one pass", 1), ("one pass", 2), ("auto", 1), ("auto", 2)}
    assert all(r["optimiser"]["min_s"] > 0 for r in seeds)
    assert "optimiser" in stdout
    # the matmul floor: the step's products, twice as many FLOPs for twice the seeds
    one = {r["seeds"]: r for r in seeds if r["microbatch_mode"] == "one pass"}
    assert one[1]["matmuls_count"] == one[2]["matmuls_count"] > 0
    for r in one.values():
        assert r["matmuls"]["min_s"] > 0 and r["matmuls_flops"] > 0
        assert r["floor_vs_one_seed_step"] > r["optimiser_vs_one_seed_step"]
    assert "floor x 1 seed" in stdout


def _bench_train():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_train
    return bench_train


def test_jaxpr_matmuls_finds_nested_products_and_counts_their_flops():
    import jax
    import jax.numpy as jnp
    bt = _bench_train()

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
    bt = _bench_train()

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
    bt = _bench_train()
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
        xla = bt._flops(jax.jit(f).lower(p, x).compile())
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


def test_bench_train_seeds_without_floors(tmp_path):
    """--seed_floors=off (for slow compilers, e.g. a GPU's): the seeds' steps alone, and the
    table prints '-' where the floors would be."""
    result, stdout = _run(tmp_path, "--sections=seeds", "--seed_batches=16", "--seeds_list=1,2",
                          "--seed_floors=off", "--microbatch=off")
    rows = result["seeds"]
    assert [r["seeds"] for r in rows] == [1, 2]
    assert rows[0]["time_vs_one_seed"] == 1.0 and rows[1]["time_vs_one_seed"] > 0
    assert not any("optimiser" in r or "floor_vs_one_seed_step" in r for r in rows)
    assert "B=16 seeds=2: compiled in" in stdout


@pytest.mark.slow
def test_bench_train_growth_reports_both_series(tmp_path):
    result, stdout = _run(tmp_path, "--sections=growth", "--k_list=1,2", "--m_list=2,3",
                          "--d_list=4,8", "--growth_batch=64")
    for name in ("measurements_K", "modalities_M", "latent_dim_D"):
        series = result["growth"][name]["series"]
        assert set(series) == {"one pass", "auto"}
        assert all(np.isfinite(s["time_exponent"]) for s in series.values())
        assert len(series["auto"]["microbatches"]) == 2
    assert "## Growth" in stdout


@pytest.mark.slow
def test_bench_train_auto_only_never_runs_the_one_pass_step(tmp_path):
    result, _ = _run(tmp_path, "--sections=throughput", "--batch_sizes=64", "--microbatch=auto")
    (row,) = result["throughput"]
    assert row["microbatch_mode"] == "auto" and row["microbatches"] > 1
    assert row["flops_per_step"] > 0 and row["steps_per_s"] > 0


def test_bench_optimizer_tiny_run(tmp_path):
    """benchmarks/bench_optimizer.py: the three programs per seed count, on the parameters
    of the model (twice as many for two seeds), with XLA's byte counts: the stream moves at
    least the 28 bytes per parameter of Adam's inputs and outputs and no more than Adam."""
    out = tmp_path / "opt.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_optimizer.py", "--seeds=1,2",
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


def test_bench_optimizer_rejects_bad_seed_counts():
    proc = subprocess.run([sys.executable, "benchmarks/bench_optimizer.py", "--seeds=0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--seeds" in proc.stderr


def test_bench_train_products_section(tmp_path):
    """The products section: one row per (rows, batch of matrices) at the model's width."""
    result, stdout = _run(tmp_path, "--sections=products", "--product_rows=16,64",
                          "--product_batches=1,3")
    rows = {(r["rows"], r["batch"]): r for r in result["products"]}
    assert set(rows) == {(16, 1), (16, 3), (64, 1), (64, 3)}
    assert all(r["width"] == 128 and r["flops_per_s"] > 0 and r["time"]["min_s"] > 0
               for r in rows.values())
    assert "## Batched products" in stdout


def test_bench_train_products_rejects_bad_sizes():
    proc = subprocess.run([sys.executable, "benchmarks/bench_train.py", "--sections=products",
                           "--product_rows=0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--product_rows" in proc.stderr


def test_bench_train_chunks_section_times_the_auto_choice_against_the_others(tmp_path):
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
def test_bench_train_chunks_section_images_series(tmp_path):
    """--chunk_series=images: the image model's step in each count at each batch (the
    series the GPU run needs for the image step's slowdown at batch 4096)."""
    result, stdout = _run(tmp_path, "--sections=chunks", "--chunk_series=images",
                          "--chunk_image_batches=8", "--chunk_counts=1,2")
    rows = result["chunks"]
    assert {r["series"] for r in rows} == {"images"} and {r["batch"] for r in rows} == {8}
    assert {1, 2} <= {r["chunks"] for r in rows}
    assert all(r["vs_fastest"] >= 1.0 and r["rows_per_chunk"] * r["chunks"] == 8 for r in rows)
    assert "B=8" in stdout


def test_bench_train_chunks_rejects_bad_series(tmp_path):
    for flags, message in ((["--chunk_series=K,Q"], "--chunk_series"),
                           (["--chunk_series=images", f"--data_dir={tmp_path}"],
                            "needs mnist/ and fashion-mnist/")):
        proc = subprocess.run([sys.executable, "benchmarks/bench_train.py", "--sections=chunks",
                               *flags], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_bench_train_chunks_rejects_bad_counts():
    proc = subprocess.run([sys.executable, "benchmarks/bench_train.py", "--sections=chunks",
                           "--chunk_counts=0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--chunk_counts" in proc.stderr


def test_bench_changes_leaky_compares_the_two_activations(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_changes
    from crl_jax.models import networks
    out = tmp_path / "changes.json"
    result = bench_changes.main(["--changes=leaky", "--leaky_cases=M2:96", "--rounds=1",
                                 "--budget=0.01", f"--out={out}"])
    assert networks.leaky_relu is bench_changes._LEAKY_RELU   # restored after the run
    rows = {r["what"].split(", ")[-1].split(":")[0]: r for r in result["changes"]}
    assert set(rows) == {"one pass", "auto"}
    one = rows["one pass"]
    # the flax form keeps each hidden layer's product output too: 2 modalities x K=3 x
    # 4 hidden layers x 96 rows x 128 units x 4 bytes more
    extra = one["temp_mb_before"] - one["temp_mb_after"]
    assert extra >= 0.75 * 2 * 4 * 3 * 96 * 128 * 4 / 2**20, one
    assert one["chunks_before"] == one["chunks_after"] == 1
    assert json.loads(out.read_text())["changes"][0]["change"] == "leaky"
    with pytest.raises(SystemExit):
        bench_changes.main(["--changes=leaky", "--leaky_cases=M2"])


def test_bench_steps_per_call_tiny_run(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_steps_per_call
    out = tmp_path / "spc.json"
    rows = bench_steps_per_call.main(["--batch=8", "--seeds_list=1", "--per_call_list=1,2",
                                      "--steps=30", "--log_every=10", f"--out={out}"])
    assert [(r["seeds"], r["steps_per_call"]) for r in rows] == [(1, 1), (1, 2)]
    assert all(r["steps"] == 30 and 0 < r["ms_per_step_best"] <= r["ms_per_step_median"]
               for r in rows)
    assert json.loads(out.read_text())["rows"] == rows
    with pytest.raises(SystemExit):   # 3 does not divide --log_every
        bench_steps_per_call.parse_args(["--per_call_list=3", "--log_every=10"])
    with pytest.raises(SystemExit):
        bench_steps_per_call.parse_args(["--config=mnist"])
    # another shipped config (the image model's MLP variant): its own data and widths
    rows = bench_steps_per_call.main(["--config=variant_mnist:small", "--batch=8",
                                      "--seeds_list=1", "--per_call_list=2", "--steps=30",
                                      "--log_every=10"])
    assert [(r["config"], r["batch"], r["steps_per_call"]) for r in rows] == [
        ("variant_mnist:small", 8, 2)]


@pytest.mark.parametrize("per_call", [1, 2])
def test_bench_sampling_in_loop_tiny_run(per_call):
    """Both of the loop's paths: single steps (prefetched chunks) and the scanned calls fed
    by BatchSource.stacked."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_sampling_in_loop
    rows = bench_sampling_in_loop.main([f"--steps_per_call={per_call}", "--batch_sizes=16",
                                        "--rounds=1", "--seconds=0.01", "--prefetch_steps=2"])
    assert [(r["batch"], r["steps_per_call"]) for r in rows] == [(16, per_call)]
    assert rows[0]["fixed_ms"] > 0 and rows[0]["fresh_ms"] > 0
    with pytest.raises(SystemExit):
        bench_sampling_in_loop.main(["--steps_per_call=0"])


def test_benchmarks_take_the_products_library(tmp_path):
    """--cpu_dots sets YNNPACK or Eigen products before JAX starts and the JSON says which;
    asked for after the backend started (here, in the test process) it is an error rather
    than numbers of the other library."""
    out = tmp_path / "spc.json"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "CRL_JAX_CPU_DOTS")}
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_steps_per_call.py", "--batch=8", "--seeds_list=1",
         "--per_call_list=2", "--steps=30", "--log_every=10", "--cpu_dots=eigen",
         f"--out={out}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text())["info"]["cpu_dots"] == "eigen"
    assert "eigen products" in proc.stdout
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_steps_per_call
    from crl_jax import cpu_dots
    other = "eigen" if cpu_dots.in_effect() == "ynnpack" else "ynnpack"
    with pytest.raises(RuntimeError, match=f"--cpu_dots={other}: JAX's backend had already"):
        bench_steps_per_call.main(["--batch=8", "--seeds_list=1", "--per_call_list=2",
                                   "--steps=30", "--log_every=10", f"--cpu_dots={other}"])


def test_bench_cpu_dots_script_runs_both_libraries(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "CRL_JAX_CPU_DOTS")}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", "benchmarks/bench_cpu_dots.sh", str(tmp_path),
                           "synthetic:8:1:30:10"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for lib in ("ynnpack", "eigen"):
        result = json.loads((tmp_path / f"synthetic_b8_s1_{lib}.json").read_text())
        assert result["info"]["cpu_dots"] == lib
        assert [(r["batch"], r["seeds"]) for r in result["rows"]] == [(8, 1)]
    assert proc.stdout.count("ms/step") == 2


def test_bench_seed_floor_tiny_run(tmp_path):
    """The scanned step, products and optimiser for 1 and 2 seeds: the floor is their sum,
    the products are the step's (2 seeds: exactly twice one seed's FLOPs, the same count)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_seed_floor
    out = tmp_path / "floor.json"
    rows = bench_seed_floor.main(["--batch=4", "--seeds=1,2", "--n=2", "--rounds=1",
                                  "--calls=2", f"--out={out}"])
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
            bench_seed_floor.parse_args(bad)


def test_bench_seed_floor_times_per_iteration():
    """Seconds per scanned iteration: a call of n iterations divided by n and by the calls."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import time
    import bench_seed_floor

    def call(carry):   # stands for a scanned call of 4 iterations taking 20 ms
        time.sleep(0.02)
        return carry + 1

    seconds, carry = bench_seed_floor.best_per_iteration(call, 0, 4, 2, 3)
    assert carry == 1 + 2 * 3                       # warm-up, then rounds x calls
    assert 0.005 <= seconds < 0.0075
