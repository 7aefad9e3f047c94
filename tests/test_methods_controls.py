"""Controls: oracle (metric ceiling), random encoder (untrained), PCA and FastICA (sklearn)."""
from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.decomposition import PCA, FastICA

from configs import synthetic as synthetic_config
from crl_jax import experiments, methods
from crl_jax.methods import controls
from crl_jax.models import vae


def _smoke(name: str, **train_fields):
    config = synthetic_config.get_config("smoke")
    config.model.name = name
    config.eval.plots = False
    config.train.steps = 4
    config.train.log_every = 2
    config.train.warmup_steps = 1
    config.train.checkpoint_every = 2
    for k, v in train_fields.items():
        config.train[k] = v
    return config


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """One smoke run per control, shared by the tests below."""
    out = {}
    for name in ("oracle", "random_encoder", "pca", "fastica"):
        workdir = tmp_path_factory.mktemp(name)
        out[name] = (experiments.run(_smoke(name), str(workdir)), workdir)
    return out


@pytest.mark.parametrize("name", ["oracle", "random_encoder", "pca", "fastica"])
def test_control_runs_through_the_pipeline_and_reports_metrics(reports, name):
    report, workdir = reports[name]
    assert report["model"] == name and report["num_seeds"] == 2
    summary = report["evaluation"]["summary"]
    for key in ("mcc_pearson", "mcc_spearman", "mcc_pearson_val"):
        per_seed = summary[key]["per_seed"]
        assert len(per_seed) == 2 and all(0.0 <= v <= 1.0 for v in per_seed), (key, per_seed)
    assert set(summary["r2_block"]) == {"m1", "m2"}
    assert all(np.isfinite(v["mean"]) for v in summary["r2_block"].values())
    assert json.loads((workdir / "report.json").read_text())["model"] == name
    # Not trained by gradient: no checkpoint, no training metrics.
    assert not (workdir / "metrics.jsonl").exists()
    # Only random_encoder (the personax model at init) has a graph to score.
    assert ("graph" in summary) == (name == "random_encoder")


def test_oracle_is_the_ceiling_and_random_encoder_is_clearly_below(reports):
    oracle = reports["oracle"][0]["evaluation"]["summary"]
    rand = reports["random_encoder"][0]["evaluation"]["summary"]
    assert min(oracle["mcc_spearman"]["per_seed"]) > 0.99
    assert min(oracle["mcc_pearson"]["per_seed"]) > 0.95
    for block, stat in oracle["r2_block"].items():
        assert min(stat["per_seed"]) > 0.95, block
    assert rand["mcc_spearman"]["mean"] < oracle["mcc_spearman"]["mean"] - 0.15
    assert rand["mcc_pearson"]["mean"] < oracle["mcc_pearson"]["mean"] - 0.1
    assert np.mean([s["mean"] for s in rand["r2_block"].values()]) < \
        np.mean([s["mean"] for s in oracle["r2_block"].values()]) - 0.1


def _layout(shared_dim=0, k=(2, 1), obs=((6,), (5,)), latent=(2, 2)):
    return vae.ModelLayout(names=("a", "b"), obs_shapes=obs, n_measurements=k,
                           latent_dims=latent, eta_dims=(1, 1), shared_dim=shared_dim)


def test_oracle_map_is_strictly_monotone_per_dimension_and_stays_in_its_block():
    layout = _layout(shared_dim=1)
    method = controls.OracleMethod(name="oracle", layout=layout)
    params = method.init(jax.random.PRNGKey(3), None)
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (500, layout.latent_dim)))
    y = np.asarray(method.encode(params, None, jnp.asarray(z)))
    perm = np.asarray(params["perm"])
    # A signed permutation that never leaves a block.
    assert np.array_equal(np.abs(perm).sum(0), np.ones(5)) and np.array_equal(np.abs(perm).sum(1), np.ones(5))
    for sl in layout.block_slices.values():
        assert np.abs(perm[sl, :]).sum() == sl.stop - sl.start
        assert np.abs(perm[sl, sl]).sum() == sl.stop - sl.start
    rows, cols = np.nonzero(perm)
    for r, c in zip(rows, cols):
        rho = stats.spearmanr(z[:, c], y[:, r])[0]
        assert abs(rho) == pytest.approx(1.0, abs=1e-12)
        assert np.sign(rho) == perm[r, c]
        assert abs(np.corrcoef(z[:, c], y[:, r])[0, 1]) < 1.0 - 1e-6  # genuinely nonlinear
    # Fixed by the seed.
    again = method.init(jax.random.PRNGKey(3), None)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)
    with pytest.raises(ValueError, match="true latents"):
        method.encode(params, None, None)


def test_random_encoder_is_personax_vae_at_init_and_not_trainable():
    config = _smoke("random_encoder")
    layout = _layout()
    rand = methods.build_method("random_encoder", layout, config)
    ours = methods.build_method("personax_vae", layout, config)
    assert not rand.trainable and ours.trainable
    xs = tuple(jnp.asarray(np.random.default_rng(0).normal(size=(7, k) + s), jnp.float32)
               for k, s in zip(layout.n_measurements, layout.obs_shapes))
    key = jax.random.PRNGKey(5)
    run = lambda m: jax.jit(lambda k, x: m.encode(m.init(k, x), x, None))(key, xs)  # noqa: E731
    np.testing.assert_array_equal(run(rand), run(ours))


def _mixture_data(layout, n=2000, seed=0):
    """x of each modality: a random linear map of its block (+ a little noise)."""
    rng = np.random.default_rng(seed)
    z = rng.laplace(size=(n, layout.latent_dim))
    xs = []
    for name, k, shape in zip(layout.names, layout.n_measurements, layout.obs_shapes):
        zb = z[:, layout.block_slices[name]]
        if layout.shared_dim:
            zb = np.concatenate([z[:, layout.block_slices["shared"]], zb], -1)
        a = rng.normal(size=(zb.shape[1], k * shape[0]))
        x = zb @ a + 0.01 * rng.normal(size=(n, k * shape[0]))
        xs.append(x.reshape((n, k) + shape).astype(np.float32))
    return tuple(xs), z


@pytest.mark.parametrize("algorithm", ["pca", "fastica"])
def test_linear_controls_match_sklearn_and_recover_linear_blocks(algorithm):
    layout = _layout()
    config = _smoke(algorithm, seed=4)
    method = methods.build_method(algorithm, layout, config)
    assert not method.trainable
    xs, z = _mixture_data(layout)
    init = jax.vmap(lambda k: method.init(k, xs))(jax.random.split(jax.random.PRNGKey(0), 3))
    params = method.fit(init, xs, z)
    assert params["a"]["proj"].shape == (3, 12, 2) and params["b"]["proj"].shape == (3, 5, 2)
    est = np.asarray(jax.vmap(method.encode, in_axes=(0, None, None))(params, xs, None))
    assert est.shape == (3, 2000, 4)
    # Each seed's block equals scikit-learn's transform on the same flattened data.
    for seed in range(3):
        for name, sl in layout.block_slices.items():
            x = xs[layout.names.index(name)].reshape(2000, -1).astype(np.float64)
            ref = (PCA(2, svd_solver="full") if algorithm == "pca" else
                   FastICA(2, whiten="unit-variance", max_iter=1000,
                           random_state=4 * 1000 + seed)).fit(x).transform(x)
            np.testing.assert_allclose(est[seed][:, sl], ref, rtol=1e-3, atol=1e-3)
    # Linear mixtures: the block is recovered up to an invertible linear map.
    for name, sl in layout.block_slices.items():
        coef, res, *_ = np.linalg.lstsq(np.c_[est[0][:, sl], np.ones(2000)], z[:, sl], rcond=None)
        r2 = 1.0 - res / (2000 * z[:, sl].var(0))
        assert np.all(r2 > 0.99), (name, r2)
    if algorithm == "pca":   # deterministic: all seeds equal
        np.testing.assert_allclose(est[0], est[2], atol=1e-5)
    else:                    # independent components: each seed recovers z up to sign/permutation
        corr = np.abs(np.corrcoef(est[0].T, z.T)[:4, 4:])
        assert np.all(corr.max(1) > 0.99), corr


def test_linear_controls_with_a_shared_block_and_bad_sizes():
    layout = _layout(shared_dim=1)
    method = methods.build_method("pca", layout, _smoke("pca"))
    xs, z = _mixture_data(layout, n=500)
    params = method.fit(jax.vmap(lambda k: method.init(k, xs))(jax.random.split(
        jax.random.PRNGKey(0), 1)), xs, z)
    assert params["shared"]["proj"].shape == (1, 17, 1)   # all modalities' features
    est = np.asarray(method.encode(jax.tree_util.tree_map(lambda a: a[0], params), xs, None))
    assert est.shape == (500, 5)
    flat = np.concatenate([x.reshape(500, -1) for x in xs], -1)
    np.testing.assert_allclose(est[:, :1], PCA(1, svd_solver="full").fit_transform(flat),
                               rtol=1e-3, atol=1e-3)
    big = dataclasses.replace(method, layout=_layout(latent=(20, 2)))
    with pytest.raises(ValueError, match="20 components"):
        big.fit(jax.vmap(lambda k: big.init(k, xs))(jax.random.split(jax.random.PRNGKey(0), 1)),
                xs, z)
