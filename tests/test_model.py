"""Shapes and wiring of the PersonaX VAE for several layouts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from crl_jax import losses
from crl_jax.models.vae import ModelLayout, PersonaXVAE, fuse

LOSS = ConfigDict(dict(recon_std=1.0, beta=1.0, lambda_sparse=0.1, lambda_sparse_within=0.0,
                       lambda_tie=1.0))

LAYOUTS = {
    "two_vector": ModelLayout(("a", "b"), ((7,), (8,)), (3, 3), (2, 2), (1, 1), 0),
    "uneven_shared": ModelLayout(("a", "b", "c"), ((5,), (9,), (4,)), (1, 2, 5), (2, 3, 1),
                                 (1, 0, 2), 2),
    "images": ModelLayout(("digit", "fashion"), ((14, 14, 3), (14, 14, 1)), (3, 1), (2, 2),
                          (0, 0), 0),
}


def _inputs(layout, batch=4, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), len(layout.names))
    return tuple(jax.random.normal(k, (batch, n) + shape)
                 for k, n, shape in zip(keys, layout.n_measurements, layout.obs_shapes))


@pytest.mark.parametrize("name,encoder", [("two_vector", "mlp"), ("uneven_shared", "mlp"),
                                          ("images", "mlp"),
                                          pytest.param("images", "conv", marks=pytest.mark.slow)])
def test_shapes(name, encoder):
    layout = LAYOUTS[name]
    model = PersonaXVAE(layout, encoder=encoder, hidden=(16,), flow_units=2)
    xs = _inputs(layout)
    params = jax.jit(model.init)({"params": jax.random.PRNGKey(0),
                                  "sample": jax.random.PRNGKey(1)}, xs)
    out = jax.jit(model.apply)(params, xs, rngs={"sample": jax.random.PRNGKey(2)})
    d = layout.latent_dim
    assert out["z"].shape == out["z_mean"].shape == (4, d)
    assert out["log_prior"].shape == (4,)
    assert out["adjacency"].shape == (d, d)
    for x, r, k, e, (em, _) in zip(xs, out["recon"], layout.n_measurements, layout.eta_dims,
                                   out["eta"]):
        assert r.shape == x.shape
        assert em.shape == (4, k, e)
    loss, terms = losses.objective(out, xs, layout, LOSS)
    assert np.isfinite(float(loss)) and set(terms) >= {"recon", "kl", "tie", "l1_cross"}


def test_every_measurement_feeds_the_modality_latent():
    """Perturbing any single measurement changes the fused posterior mean of its block
    (the reference code let only the first measurement reach the evaluated latent)."""
    layout = LAYOUTS["two_vector"]
    model = PersonaXVAE(layout, hidden=(16,))
    xs = _inputs(layout)
    params = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, xs)
    base = model.apply(params, xs, method="encode")["z_mean"]
    for k in range(3):
        xs2 = (xs[0].at[:, k].add(1.0), xs[1])
        moved = model.apply(params, xs2, method="encode")["z_mean"]
        assert np.all(np.abs(np.asarray(moved - base))[:, :2].max(axis=1) > 1e-4)
        np.testing.assert_allclose(moved[:, 2:], base[:, 2:])  # other modality untouched


def test_product_of_experts_fusion():
    means = jnp.array([[[0.0], [2.0]]])
    logvars = jnp.log(jnp.array([[[1.0], [3.0]]]))
    mean, logvar = fuse(means, logvars, "poe")
    np.testing.assert_allclose(mean, [[0.5]], rtol=1e-6)          # (0/1 + 2/3) / (1 + 1/3)
    np.testing.assert_allclose(jnp.exp(logvar), [[0.75]], rtol=1e-6)
    mean, logvar = fuse(means, logvars, "mean")
    np.testing.assert_allclose(mean, [[1.0]])
    np.testing.assert_allclose(jnp.exp(logvar), [[1.0]], rtol=1e-6)  # (1 + 3) / 4


def test_wrong_input_shapes_and_layouts_raise_clear_errors():
    layout = LAYOUTS["two_vector"]
    model = PersonaXVAE(layout, hidden=(16,))
    xs = _inputs(layout)
    params = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, xs)
    with pytest.raises(AssertionError, match="modality 'b'"):
        model.apply(params, (xs[0], xs[1][:, :2]), method="encode")
    with pytest.raises(ValueError, match="modalities"):
        model.apply(params, (xs[0],), method="encode")
    with pytest.raises(ValueError, match="latent_dims"):
        ModelLayout(("a", "b"), ((7,), (8,)), (3, 3), (2,), (1, 1), 0)
    with pytest.raises(ValueError, match="fusion"):
        fuse(xs[0][..., :2], xs[0][..., :2], "max")


def test_loss_gradients_reach_adjacency_and_every_encoder():
    layout = LAYOUTS["uneven_shared"]
    model = PersonaXVAE(layout, hidden=(16,))
    xs = _inputs(layout, batch=16)
    params = jax.jit(model.init)({"params": jax.random.PRNGKey(0),
                                  "sample": jax.random.PRNGKey(1)}, xs)

    def loss_fn(p):
        out = model.apply(p, xs, rngs={"sample": jax.random.PRNGKey(3)})
        return losses.objective(out, xs, layout, LOSS)[0]

    grads = jax.jit(jax.grad(loss_fn))(params)["params"]
    mask = layout.allowed_mask()
    g_adj = np.asarray(grads["causal_prior"]["adjacency"])
    assert np.all(g_adj[mask] != 0) and np.all(g_adj[~mask] == 0)
    for name in layout.names:
        kernel = np.asarray(grads[f"encoder_{name}"]["FeatureEncoder_0"]["Dense_0"]["kernel"])
        assert np.all(np.abs(kernel).reshape(kernel.shape[0], -1).max(axis=1) > 0), \
            f"every measurement encoder of {name} gets a gradient"
