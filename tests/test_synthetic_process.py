"""Vector-data generative processes: graph, mechanisms, mixing, determinism, save/load, CLI."""

from __future__ import annotations

import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LinearRegression
from sklearn.neighbors import KNeighborsRegressor

import synthetic
from synthetic import get_spec, load_process, make_process
from synthetic import mechanisms
from synthetic.graph import is_acyclic, sample_graph, topological_order
from synthetic.sample import main as sample_main

KEY = jax.random.PRNGKey(0)
# Few distinct specs and batch sizes: each (spec, n) pair compiles the sampler once.
N = 2048
N_STATS = 16384


@pytest.fixture(scope="module")
def case1():
    return make_process(jax.random.PRNGKey(11), get_spec("numerical_case1"))


@pytest.fixture(scope="module")
def case3_shared():
    return make_process(jax.random.PRNGKey(12), get_spec("numerical_case3", shared_dim=2))


@pytest.fixture(scope="module")
def content_style():
    return make_process(jax.random.PRNGKey(5), get_spec("content_style"))


def _tree_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_sample_shapes_dtypes(case3_shared):
    spec = case3_shared.spec
    s = case3_shared.sample(KEY, N)
    assert isinstance(s, synthetic.Sample)
    assert [x.shape for x in s.x] == [(N, 3, 7), (N, 3, 7), (N, 3, 8), (N, 3, 8)]
    assert all(x.dtype == jnp.float32 for x in s.x) and s.z.dtype == jnp.float32
    assert s.z.shape == (N, spec.latent_dim) == (N, 10)
    assert [e.shape for e in s.eta] == [(N, 3, 1)] * 4
    assert isinstance(s.adjacency, np.ndarray) and s.adjacency.shape == (10, 10)
    np.testing.assert_array_equal(s.adjacency, case3_shared.adjacency)
    assert all(np.isfinite(np.asarray(x)).all() for x in s.x)


def test_determinism_same_key_same_numbers_different_key_different():
    spec = get_spec("numerical_case1")
    p1, p2, p3 = (make_process(jax.random.PRNGKey(k), spec) for k in (3, 3, 4))
    assert _tree_equal(p1.params, p2.params)
    np.testing.assert_array_equal(p1.adjacency, p2.adjacency)
    for a_leaf, c_leaf in zip(jax.tree_util.tree_leaves(p1.params), jax.tree_util.tree_leaves(p3.params)):
        assert not np.allclose(np.asarray(a_leaf), np.asarray(c_leaf))  # every parameter array changes with the key
    a, b = p1.sample(KEY, N), p2.sample(KEY, N)
    assert _tree_equal((a.x, a.z, a.eta), (b.x, b.z, b.eta))
    c = p1.sample(jax.random.PRNGKey(1), N)
    assert not np.allclose(np.asarray(a.z), np.asarray(c.z))
    assert not np.allclose(np.asarray(a.x[0]), np.asarray(c.x[0]))
    d = p3.sample(KEY, N)  # same sampling key, different process
    assert not np.allclose(np.asarray(a.x[0]), np.asarray(d.x[0]))


@pytest.mark.parametrize("preset, n_cross, shared", [
    ("numerical_case1", 1, 0), ("numerical_case1", 3, 2), ("numerical_case2", 2, 0), ("numerical_case3", 3, 0),
    ("numerical_case3", 4, 1), ("numerical_case3", 9, 0)])
def test_random_graph_rules_over_many_keys(preset, n_cross, shared):
    spec = get_spec(preset, n_cross_edges=n_cross, shared_dim=shared, edge_prob=0.6)
    allowed, cross, blocks = spec.allowed_edges_mask(), spec.cross_edges_mask(), spec.block_ids()
    seen_within = 0
    for seed in range(60):
        adj = sample_graph(jax.random.PRNGKey(seed), spec)
        assert adj.shape == (spec.latent_dim,) * 2 and set(np.unique(adj)) <= {0, 1}
        assert is_acyclic(adj)
        assert not (adj.astype(bool) & ~allowed).any()  # s has no parents; no later -> earlier edges
        assert int((adj * cross).sum()) == n_cross
        for m in range(1, len(spec.modalities)):  # at least one edge into each later modality
            assert (adj[blocks == m][:, (blocks >= 0) & (blocks < m)]).sum() >= 1
        seen_within += int((adj * (blocks[:, None] == blocks[None, :])).sum())
    assert seen_within > 0  # within-modality edges do occur
    # the graph is a deterministic function of the key and changes with it
    np.testing.assert_array_equal(sample_graph(KEY, spec), sample_graph(KEY, spec))
    graphs = {sample_graph(jax.random.PRNGKey(s), spec).tobytes() for s in range(20)}
    assert len(graphs) > 1


def test_within_modality_order_is_random():
    # both directions of a within-modality pair occur across keys (the causal order is not the index order)
    spec = get_spec("numerical_case2", edge_prob=1.0)
    fwd = bwd = 0
    for seed in range(30):
        adj = sample_graph(jax.random.PRNGKey(seed), spec)
        fwd += adj[1, 0]
        bwd += adj[0, 1]
    assert fwd > 0 and bwd > 0


def test_mixing_exactly_invertible_and_well_conditioned(case1, content_style):
    for process in (case1, content_style):
        spec = process.spec
        n = N if process is case1 else N_STATS  # (reuse compiled (spec, n) pairs of other tests)
        s = process.sample(jax.random.PRNGKey(7), n)
        for i, m in enumerate(spec.modalities):
            u = process.mixing_input(i, s.z, s.eta[i])
            assert u.shape == (n, m.n_measurements, spec.mixing_input_dims[i])
            for k in range(m.n_measurements):
                rec = process.inverse(m.name, k, s.x[i][:, k])
                np.testing.assert_allclose(np.asarray(rec), np.asarray(u[:, k]), atol=1e-4, rtol=0)
                np.testing.assert_allclose(np.asarray(process.forward(i, k, rec)), np.asarray(s.x[i][:, k]),
                                           atol=1e-5)
        thresholds = process.condition_thresholds()
        for name, conds in process.condition_numbers().items():
            assert conds.shape == (spec.modalities[spec.modality_names.index(name)].n_measurements, spec.mixing_depth)
            assert (conds <= thresholds[name] * (1 + 1e-6)).all() and (conds >= 1).all()


def test_inverse_with_shared_latent_recovers_s_z_eta(case3_shared):
    p = case3_shared
    s = p.sample(jax.random.PRNGKey(8), 1024)
    sl = p.spec.block_slices
    for i, name in enumerate(p.spec.modality_names):
        for k in range(3):
            rec = np.asarray(p.inverse(i, k, s.x[i][:, k]))
            scale = 1e-4 * max(1.0, np.abs(rec).max())  # float32 floor: eps * prod(layer condition numbers)
            np.testing.assert_allclose(rec[:, :2], np.asarray(s.z[:, sl["shared"]]), atol=scale)  # s first
            np.testing.assert_allclose(rec[:, 2:4], np.asarray(s.z[:, sl[name]]), atol=scale)  # then z_m
            np.testing.assert_allclose(rec[:, 4:], np.asarray(s.eta[i][:, k]), atol=scale)  # then eta_m^k


def test_explicit_max_condition_is_respected_and_impossible_one_errors():
    spec = get_spec("numerical_case1", max_condition=2.0)
    p = make_process(KEY, spec)
    assert all((c <= 2.0).all() for c in p.condition_numbers().values())
    with pytest.raises(ValueError, match="max_condition"):
        make_process(KEY, get_spec("numerical_case1", max_condition=1.0001))


def test_measurements_share_latents_but_differ_in_mixing(case1):
    s = case1.sample(jax.random.PRNGKey(9), N)
    for i, name in enumerate(case1.spec.modality_names):
        w = np.asarray(case1.params["mixing"][name]["weights"])
        lift = np.asarray(case1.params["mixing"][name]["lift"])
        recs = [np.asarray(case1.inverse(i, k, s.x[i][:, k])) for k in range(3)]
        for k in range(3):
            np.testing.assert_allclose(recs[k][:, :2], recs[0][:, :2], atol=1e-4)  # same z_m in every measurement
            for j in range(k):
                assert not np.allclose(w[k], w[j]) and not np.allclose(lift[k], lift[j])
                assert np.abs(np.asarray(s.x[i][:, k] - s.x[i][:, j])).mean() > 0.05  # observations differ
        # same input through two measurements' functions gives different observations
        u = recs[0]
        assert np.abs(np.asarray(case1.forward(i, 0, u) - case1.forward(i, 1, u))).mean() > 0.05
        # eta differs between measurements
        assert not np.allclose(np.asarray(s.eta[i][:, 0]), np.asarray(s.eta[i][:, 1]))


def _r2_linear_vs_knn(z: np.ndarray, adj: np.ndarray) -> np.ndarray:
    """(held-out linear R^2, held-out 20-NN R^2) of each non-root node on its parents."""
    out, n = [], z.shape[0] // 2
    for i in range(adj.shape[0]):
        pa = np.flatnonzero(adj[i])
        if pa.size == 0:
            continue
        xtr, xte, ytr, yte = z[:n, pa], z[n:, pa], z[:n, i], z[n:, i]
        lin = LinearRegression().fit(xtr, ytr).score(xte, yte)
        knn = KNeighborsRegressor(20).fit(xtr, ytr).score(xte, yte)
        out.append((lin, knn))
    return np.array(out)


def _scm_sample(mechanism: str, noise: str = "gaussian", noise_scale: float = 0.1, n: int = 6000) -> tuple:
    """z from the latent SCM alone (the same code path Process.sample uses), on a case-3 graph."""
    spec = get_spec("numerical_case3", edge_prob=0.8, n_cross_edges=4)
    adj = sample_graph(jax.random.PRNGKey(0), spec)
    order = topological_order(adj)
    params = mechanisms.make_scm_params(jax.random.PRNGKey(1), adj, order, mechanism, noise, noise_scale)
    eps = mechanisms.sample_noise(jax.random.PRNGKey(2), (n, spec.latent_dim), noise)
    z = jax.jit(mechanisms.forward, static_argnums=(4, 5))(params, eps, adj, order, mechanism, noise_scale)
    return np.asarray(z, np.float64), adj


@pytest.mark.parametrize("mechanism", ["mlp", "additive"])
def test_mechanisms_are_nonlinear(mechanism):
    z, adj = _scm_sample(mechanism)
    scores = _r2_linear_vs_knn(z, adj)
    assert len(scores) >= 4
    lin, knn = scores[:, 0], scores[:, 1]
    assert (knn > 0.95).all()  # children are (nearly) functions of their parents (noise_scale 0.1)
    gap = knn - lin  # a linear fit misses structure a nonparametric fit finds (the 'copy' control gives ~0)
    assert gap.mean() > 0.1 and (gap > 0.05).mean() >= 0.5


@pytest.mark.parametrize("mechanism", ["mlp", "additive", "copy"])
def test_conditional_mean_leaves_exactly_the_noise(mechanism):
    spec = get_spec("numerical_case3", edge_prob=0.8, n_cross_edges=4)
    adj = sample_graph(jax.random.PRNGKey(0), spec)
    order = topological_order(adj)
    params = mechanisms.make_scm_params(jax.random.PRNGKey(1), adj, order, mechanism, "laplace", 0.3)
    eps = mechanisms.sample_noise(jax.random.PRNGKey(2), (500, spec.latent_dim), "laplace")
    z = mechanisms.forward(params, eps, adj, order, mechanism, 0.3)
    residual = np.asarray(z - mechanisms.conditional_mean(params, z, adj, mechanism))
    roots = adj.sum(axis=1) == 0
    assert roots.any() and (~roots).any()
    np.testing.assert_allclose(residual, np.where(roots, 1.0, 0.3) * np.asarray(eps), atol=2e-5)


def test_copy_mechanism_is_linear_control():
    # the same check on the linear 'copy' mechanism finds no gap, so the nonlinearity test can fail
    z, adj = _scm_sample("copy")
    scores = _r2_linear_vs_knn(z, adj)
    assert (scores[:, 0] > 0.98).all() and (scores[:, 0] >= scores[:, 1] - 0.01).all()


def test_scm_values_follow_graph_and_scale(case1):
    s = case1.sample(jax.random.PRNGKey(2), N_STATS)
    z = np.asarray(s.z, np.float64)
    adj = case1.adjacency
    roots = adj.sum(1) == 0
    assert roots.any() and (~roots).any()
    std = z.std(0)
    np.testing.assert_allclose(std[roots], 1.0, atol=0.03)  # roots = unit-variance noise
    np.testing.assert_allclose(std[~roots], np.sqrt(1 + 0.5 ** 2), atol=0.05)  # standardised signal + 0.5 noise
    h = N_STATS // 2
    for i in np.flatnonzero(~roots):  # every child depends on its parents ...
        knn = KNeighborsRegressor(20).fit(z[:h, adj[i] == 1], z[:h, i])
        assert knn.score(z[h:, adj[i] == 1], z[h:, i]) > 0.5
    for i in np.flatnonzero(roots):  # ... and roots on nothing earlier
        assert np.abs(np.corrcoef(z.T)[i, np.flatnonzero(roots)[np.flatnonzero(roots) != i]]).max(initial=0) < 0.05


NOISE_KURTOSIS = {"gaussian": 0.0, "laplace": 3.0, "uniform": -1.2}


@pytest.mark.parametrize("noise", sorted(NOISE_KURTOSIS))
def test_noise_types(noise):
    e = np.asarray(mechanisms.sample_noise(KEY, (100000,), noise), np.float64)
    assert abs(e.mean()) < 0.02 and abs(e.std() - 1.0) < 0.02
    assert abs(stats.kurtosis(e) - NOISE_KURTOSIS[noise]) < 0.15


def test_process_uses_the_spec_noise():
    p = make_process(KEY, get_spec("numerical_case1", noise="laplace"))
    z = np.asarray(p.sample(jax.random.PRNGKey(3), N_STATS).z, np.float64)
    for r in np.flatnonzero(p.adjacency.sum(1) == 0):
        assert abs(z[:, r].std() - 1.0) < 0.04
        assert abs(stats.kurtosis(z[:, r]) - 3.0) < 0.6  # Laplace, not Gaussian (0) or uniform (-1.2)


def test_content_style_structure(content_style):
    p = content_style
    s = p.sample(jax.random.PRNGKey(1), N_STATS)
    z = np.asarray(s.z, np.float64)
    c, s1, s2 = z[:, :5], z[:, 5:10], z[:, 10:15]
    corr = np.corrcoef(np.concatenate([c, s1], axis=1).T)
    assert np.abs(corr - np.eye(10)).max() < 0.05  # content and style independent, components independent
    diff = s2 - s1
    np.testing.assert_allclose(diff.std(0), 1.0, atol=0.03)  # view-2 style = view-1 style + N(0, 1)
    np.testing.assert_allclose(np.corrcoef(s1.T, diff.T)[:5, 5:], 0.0, atol=0.05)
    assert [x.shape for x in s.x] == [(N_STATS, 1, 10), (N_STATS, 1, 10)]
    # the content enters both views: it is recovered from each view's observation
    for i in range(2):
        np.testing.assert_allclose(np.asarray(p.inverse(i, 0, s.x[i][:, 0]))[:, :5], c, atol=1e-4)


def test_save_load_identical_samples(tmp_path, case3_shared):
    case3_shared.save(tmp_path / "gen")
    assert (tmp_path / "gen" / "generator_spec.json").is_file()
    assert (tmp_path / "gen" / "generator_params.npz").is_file()
    loaded = load_process(tmp_path / "gen")
    assert loaded.spec == case3_shared.spec
    np.testing.assert_array_equal(loaded.adjacency, case3_shared.adjacency)
    assert _tree_equal(loaded.params, case3_shared.params)
    a, b = case3_shared.sample(jax.random.PRNGKey(4), N), loaded.sample(jax.random.PRNGKey(4), N)
    assert _tree_equal((a.x, a.z, a.eta), (b.x, b.z, b.eta))
    with pytest.raises(FileNotFoundError, match="generator_spec.json"):
        load_process(tmp_path / "nowhere")


def test_bad_arguments(case1):
    with pytest.raises(ValueError, match="spec must be a synthetic.Spec"):
        make_process(KEY, "numerical_case1")
    p = case1
    with pytest.raises(ValueError, match="n=0"):
        p.sample(KEY, 0)
    with pytest.raises(ValueError, match="modality 'm9' is unknown"):
        p.inverse("m9", 0, jnp.zeros((2, 7)))
    with pytest.raises(ValueError, match="measurement k=3"):
        p.inverse(0, 3, jnp.zeros((2, 7)))


def test_sampling_prints_nothing(capfd, case1):
    capfd.readouterr()
    jax.block_until_ready(case1.sample(KEY, 4096))  # includes compiling for n = 4096
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_sampling_4096_is_fast(case1):
    p = case1
    jax.block_until_ready(p.sample(KEY, 4096))  # compiled already, or now
    t = time.perf_counter()
    for i in range(5):
        jax.block_until_ready(p.sample(jax.random.PRNGKey(i), 4096))
    assert (time.perf_counter() - t) / 5 < 0.5


def test_cli_writes_npz(tmp_path, capsys):
    out = tmp_path / "d" / "case3.npz"
    assert sample_main(["--preset=numerical_case3", f"--n={N}", f"--out={out}", "--seed=3", "--n_measurements=3",
                        "--shared_dim=2"]) == 0
    printed = capsys.readouterr().out
    assert "x_m1" in printed and f"({N}, 3, 7)" in printed and "mean" in printed
    names = ["m1", "m2", "m3", "m4"]
    with np.load(out) as f:
        assert set(f.files) == {*(f"x_{m}" for m in names), *(f"eta_{m}" for m in names), "z", "adjacency",
                                "spec_json"}
        assert [f[f"x_{m}"].shape for m in names] == [(N, 3, 7), (N, 3, 7), (N, 3, 8), (N, 3, 8)]
        assert f["z"].shape == (N, 10) and f["eta_m1"].shape == (N, 3, 1) and f["adjacency"].shape == (10, 10)
        spec = synthetic.Spec.from_json(str(f["spec_json"]))
        assert spec.shared_dim == 2 and spec.n_measurements == (3, 3, 3, 3)
        # the generator saved beside the file reproduces it (seed 3: params fold_in 0, samples fold_in 1)
        p = load_process(tmp_path / "d" / "case3_generator")
        s = p.sample(jax.random.fold_in(jax.random.PRNGKey(3), 1), N)
        np.testing.assert_array_equal(np.asarray(s.x[3]), f["x_m4"])
        np.testing.assert_array_equal(np.asarray(s.z), f["z"])


def test_cli_subprocess_rejects_unknown_preset(tmp_path):
    r = subprocess.run([sys.executable, "-m", "synthetic.sample", "--preset=nope", "--n=5",
                        f"--out={tmp_path / 'a.npz'}"], capture_output=True, text=True)
    assert r.returncode != 0 and "invalid choice" in r.stderr and "numerical_case1" in r.stderr
