"""The causal prior is a proper density, with the Jacobian term, and trains its adjacency."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate

from crl_jax.models import causal_prior as cp


def _prior(shared, blocks, flow_units=3, seed=0, adjacency_scale=1.0):
    mask = cp.allowed_edges_mask(shared, blocks)
    prior = cp.CausalPrior(tuple(map(tuple, mask)), hidden=8, flow_units=flow_units)
    d = mask.shape[0]
    params = prior.init(jax.random.PRNGKey(seed), jnp.zeros((1, d)))
    # Random, non-trivial weights everywhere (init puts equal weights on the edges).
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [leaf + 0.5 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    params = jax.tree_util.tree_unflatten(tree, leaves)
    params["params"]["adjacency"] = adjacency_scale * params["params"]["adjacency"]
    return prior, params, mask


def test_allowed_mask_is_dag_with_rules():
    mask = cp.allowed_edges_mask(1, (2, 3))
    assert mask.shape == (6, 6)
    assert not mask[0].any(), "nothing may enter the shared latent"
    assert mask[1:, 0].all(), "shared -> every modality latent is allowed"
    assert not np.triu(mask).any(), "strictly lower triangular = acyclic"
    cross = cp.cross_modal_mask(1, (2, 3))
    assert cross[3:, 1:3].all() and not cross[1:3, 3:].any(), "only earlier -> later modality"
    assert not cross[:, 0].any() and not cross[1, :].any()


@pytest.mark.parametrize("flow_units", [0, 3])
def test_log_density_matches_brute_force_change_of_variables(flow_units):
    prior, params, mask = _prior(1, (2, 2), flow_units=flow_units)
    z = jax.random.normal(jax.random.PRNGKey(3), (7, mask.shape[0])) * 1.5

    def eps_of(zi):
        return prior.apply(params, zi[None], method="noise")[0][0]

    @jax.jit
    def brute_force(zi):
        jac = jax.jacfwd(eps_of)(zi)     # the full D x D Jacobian of z -> eps
        _, logdet = jnp.linalg.slogdet(jac)
        eps = eps_of(zi)
        return jac, jnp.sum(-0.5 * eps**2 - 0.5 * jnp.log(2 * jnp.pi)) + logdet

    for zi, logp in zip(z, jax.jit(prior.apply)(params, z)):
        jac, brute = brute_force(zi)
        np.testing.assert_allclose(np.triu(np.asarray(jac), 1), 0.0, atol=1e-6)
        np.testing.assert_allclose(logp, brute, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("flow_units", [0, 4])
def test_one_dimensional_density_integrates_to_one(flow_units):
    prior, params, _ = _prior(0, (1,), flow_units=flow_units, seed=5)
    grid = jnp.linspace(-40.0, 40.0, 200001)[:, None]
    dens = np.exp(np.asarray(prior.apply(params, grid), np.float64))
    total = integrate.trapezoid(dens, np.asarray(grid[:, 0], np.float64))
    assert abs(total - 1.0) < 1e-3


def test_two_dimensional_density_with_an_edge_integrates_to_one():
    prior, params, _ = _prior(0, (2,), flow_units=2, seed=7, adjacency_scale=3.0)
    assert abs(float(prior.apply(params, method="adjacency")[1, 0])) > 0.1
    axis = np.linspace(-25.0, 25.0, 1001)
    zz = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    dens = np.exp(np.asarray(prior.apply(params, jnp.asarray(zz)), np.float64)).reshape(1001, 1001)
    total = integrate.trapezoid(integrate.trapezoid(dens, axis, axis=1), axis)
    assert abs(total - 1.0) < 5e-3
    # Without the Jacobian term the same function would not be a density.
    eps, logdet = prior.apply(params, jnp.asarray(zz), method="noise")
    no_jac = np.exp(np.asarray(jnp.sum(-0.5 * eps**2 - 0.5 * jnp.log(2 * jnp.pi), -1),
                               np.float64)).reshape(1001, 1001)
    assert abs(integrate.trapezoid(integrate.trapezoid(no_jac, axis, axis=1), axis) - 1) > 0.05


def test_adjacency_gets_gradient_from_density_and_masked_edges_stay_zero():
    prior, params, mask = _prior(1, (2, 2), flow_units=0)
    z = jax.random.normal(jax.random.PRNGKey(0), (64, mask.shape[0]))

    def nll(p):
        return -jnp.mean(prior.apply(p, z))

    grad = jax.grad(nll)(params)["params"]["adjacency"]
    assert np.all(np.abs(np.asarray(grad))[mask] > 0), "every allowed edge learns from log p"
    assert np.all(np.asarray(grad)[~mask] == 0.0)
    tx = optax.adam(1e-2)
    opt = tx.init(params)
    for _ in range(20):
        g = jax.grad(nll)(params)
        upd, opt = tx.update(g, opt)
        params = optax.apply_updates(params, upd)
    adj = np.asarray(prior.apply(params, method="adjacency"))
    assert np.all(adj[~mask] == 0.0)
    assert np.any(adj[mask] != 0.0)
