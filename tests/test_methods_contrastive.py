"""Contrastive baselines: InfoNCE, pair lists, encoders' block layout, smoke training."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic as synthetic_config
from crl_jax import experiments, methods
from crl_jax.methods import contrastive
from crl_jax.models import vae


def _config(name: str):
    config = synthetic_config.get_config("smoke")
    config.model.name = name
    config.eval.plots = False
    return config


def _layout(shared_dim=0, k=(3, 2), latent=(2, 2)):
    return vae.ModelLayout(names=("a", "b"), obs_shapes=((6,), (5,)), n_measurements=k,
                           latent_dims=latent, eta_dims=(1, 1), shared_dim=shared_dim)


@pytest.mark.parametrize("similarity", ["l2", "cosine"])
def test_info_nce_analytic_values(similarity):
    rng = np.random.default_rng(0)
    b, p = 64, 4
    mask = jnp.ones(p)
    a = jnp.asarray(rng.normal(size=(b, 64)) * 10.0)   # nearly orthogonal directions
    # Perfectly aligned, well separated pairs: loss ~ 0.
    tau = 0.05 if similarity == "cosine" else 1.0
    assert float(contrastive.info_nce(a, a, jnp.ones(64), tau, similarity)) < 1e-2
    # Independent views: about log(B) (chance).
    indep = jnp.asarray(rng.normal(size=(b, p)))
    small = jnp.asarray(rng.normal(size=(b, p)))
    loss = float(contrastive.info_nce(small * 1e-3, indep * 1e-3, mask, 1.0, similarity)) \
        if similarity == "l2" else float(contrastive.info_nce(small, indep, mask, 10.0, similarity))
    assert loss == pytest.approx(np.log(b), abs=0.05)
    # Symmetric in its two arguments.
    x, y = jnp.asarray(rng.normal(size=(b, p))), jnp.asarray(rng.normal(size=(b, p)))
    np.testing.assert_allclose(contrastive.info_nce(x, y, mask, 0.5, similarity),
                               contrastive.info_nce(y, x, mask, 0.5, similarity), rtol=1e-5)
    # Masked-out coordinates do not matter.
    part = jnp.asarray([1.0, 1.0, 0.0, 0.0])
    y2 = y.at[:, 2:].set(rng.normal(size=(b, 2)) * 100)
    np.testing.assert_allclose(contrastive.info_nce(x, y, part, 0.5, similarity),
                               contrastive.info_nce(x, y2, part, 0.5, similarity), rtol=1e-5)


def test_pair_lists():
    assert contrastive.mcl_pairs(2, 0) == ((0, 1, "z"),)
    assert contrastive.mcl_pairs(3, 2) == ((0, 1, "z"), (0, 1, "s"), (0, 2, "z"), (0, 2, "s"),
                                           (1, 2, "z"), (1, 2, "s"))
    # Views of one modality share (s, z_m); different modalities share nothing without s.
    assert contrastive.multiview_pairs((3, 2), 0) == (
        (0, 1, "sz"), (0, 2, "sz"), (1, 2, "sz"), (3, 4, "sz"))
    # With s: cross-modality pairs compare s; a single-measurement modality's z falls back
    # to the other modality's views.
    pairs = contrastive.multiview_pairs((2, 1), 1)
    assert pairs == ((0, 1, "sz"), (0, 2, "s"), (0, 2, "z"), (1, 2, "s"), (1, 2, "z"))


def test_builders_check_sizes_and_settings():
    config = _config("mcl")
    with pytest.raises(ValueError, match="config.model.latent_dims"):
        methods.build_method("mcl", _layout(latent=(2, 3)), config)
    # multiview with K >= 2 everywhere and no shared latent never compares z across modalities.
    methods.build_method("multiview", _layout(latent=(2, 3)), _config("multiview"))
    with pytest.raises(ValueError, match="no pair of views"):
        methods.build_method("multiview", vae.ModelLayout(("a",), ((4,),), (1,), (2,), (1,)),
                             _config("multiview"))
    config.model.similarity = "dot"
    with pytest.raises(ValueError, match="config.model.similarity"):
        methods.build_method("mcl", _layout(), config)


@pytest.mark.parametrize("name", ["mcl", "multiview"])
def test_encode_layout_matches_blocks_and_loss_has_gradients(name):
    layout = _layout(shared_dim=1)
    config = _config(name)
    config.model.learn_temperature = True
    method = methods.build_method(name, layout, config)
    rng = np.random.default_rng(1)
    xs = tuple(jnp.asarray(rng.normal(size=(16, k) + s), jnp.float32)
               for k, s in zip(layout.n_measurements, layout.obs_shapes))
    params = jax.jit(method.init)(jax.random.PRNGKey(0), xs)
    z = jax.jit(method.encode)(params, xs, None)
    assert z.shape == (16, layout.latent_dim)
    outs = method.network.apply({"params": params["encoders"]}, method.prepare(xs))
    k_used = (1, 1) if name == "mcl" else layout.n_measurements
    assert [o.shape for o in outs] == [(16, k, 3) for k in k_used]
    # Block layout: [s | a | b]; s = mean of every view's first entry, z_m = mean of its views.
    np.testing.assert_allclose(z[:, 0], jnp.mean(jnp.concatenate([o[:, :, 0] for o in outs], 1), 1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z[:, layout.block_slices["a"]], jnp.mean(outs[0][:, :, 1:], 1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z[:, layout.block_slices["b"]], jnp.mean(outs[1][:, :, 1:], 1),
                               rtol=1e-5, atol=1e-6)
    (loss, terms), grads = jax.jit(jax.value_and_grad(method.loss, has_aux=True))(
        params, xs, jax.random.PRNGKey(1))
    assert np.isfinite(loss) and set(terms) >= {"loss", "infonce", "temperature"}
    assert float(jnp.abs(grads["log_temperature"])) > 0
    for name_, leaf in jax.tree_util.tree_leaves_with_path(grads["encoders"]):
        assert float(jnp.max(jnp.abs(leaf))) > 0, name_


@pytest.mark.parametrize("name", ["mcl", "multiview"])
def test_contrastive_method_trains_on_smoke_and_reports_metrics(tmp_path, name):
    config = _config(name)
    config.train.steps = 20
    config.train.log_every = 5
    config.train.checkpoint_every = 10
    config.eval.plots = name == "mcl"   # the figures of a method without recon/kl/tie terms
    report = experiments.run(config, str(tmp_path))
    if name == "mcl":
        for fig in ("training_curves.png", "latent_scatter.png", "r2_blocks.png"):
            assert (tmp_path / fig).stat().st_size > 0, fig
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [5, 10, 15, 20]
    assert "recon" not in lines[0] and lines[0]["temperature"] == pytest.approx(1.0)
    assert lines[-1]["infonce"] < lines[0]["infonce"], [r["infonce"] for r in lines]
    summary = report["evaluation"]["summary"]
    assert report["model"] == name and "graph" not in summary
    assert len(summary["mcc_pearson"]["per_seed"]) == 2
    assert all(0.0 <= v <= 1.0 for v in summary["mcc_spearman"]["per_seed"])
    assert set(summary["r2_block"]) == {"m1", "m2"}
