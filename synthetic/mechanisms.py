"""Latent structural causal model over [s, z_1..z_M]: parameters, noise and ancestral sampling.

Every non-root node is ``z_i = standardise(f_i(Pa(z_i))) + noise_scale * eps_i`` (for
'copy': ``z_i = sum(Pa(z_i)) + noise_scale * eps_i``); roots are ``z_i = eps_i``. The noise
`eps` has unit variance for every noise type. The standardisation constants are computed once
in `make_scm_params` from a fixed-size calibration batch drawn from the key, so sampling stays a
pure per-sample function (no batch statistics at sampling time).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

HIDDEN = 16  # hidden units of each mechanism network
CALIBRATION_SIZE = 16384
_PRE_ACT_SCALE = 2.0  # std of the tanh pre-activations: large enough to bend the function visibly
_HI = jax.lax.Precision.HIGHEST


def sample_noise(key: jax.Array, shape: tuple[int, ...], noise: str) -> jax.Array:
    """Zero-mean, unit-variance noise of the given type."""
    if noise == "gaussian":
        return jax.random.normal(key, shape)
    if noise == "laplace":
        return jax.random.laplace(key, shape) / jnp.sqrt(2.0)
    if noise == "uniform":
        return jax.random.uniform(key, shape, minval=-jnp.sqrt(3.0), maxval=jnp.sqrt(3.0))
    raise ValueError(f"noise={noise!r} is unknown; use 'gaussian', 'laplace' or 'uniform'.")


def _init_weights(key: jax.Array, adjacency: jax.Array, mechanism: str) -> dict[str, jax.Array]:
    d = adjacency.shape[0]
    k1, k2, k3 = jax.random.split(key, 3)
    if mechanism == "mlp":
        n_pa = jnp.maximum(adjacency.sum(axis=1), 1).astype(jnp.float32)
        w1_scale = (_PRE_ACT_SCALE / jnp.sqrt(n_pa))[:, None, None]
        return {
            "w1": jax.random.normal(k1, (d, d, HIDDEN)) * w1_scale,  # [child, parent, hidden]
            "b1": jax.random.uniform(k2, (d, HIDDEN), minval=-1.0, maxval=1.0),
            "w2": jax.random.normal(k3, (d, HIDDEN)) / np.sqrt(HIDDEN),
        }
    if mechanism == "additive":
        return {
            "a": jax.random.normal(k1, (d, d, HIDDEN)) * _PRE_ACT_SCALE,  # [child, parent, hidden]
            "b": jax.random.uniform(k2, (d, d, HIDDEN), minval=-1.0, maxval=1.0),
            "v": jax.random.normal(k3, (d, d, HIDDEN)) / np.sqrt(HIDDEN),
        }
    if mechanism == "copy":
        return {}
    raise ValueError(f"mechanism={mechanism!r} is unknown; use 'mlp', 'additive' or 'copy'.")


def _signal(params: dict[str, jax.Array], z: jax.Array, i: jax.Array, mask: jax.Array, mechanism: str) -> jax.Array:
    """f_i evaluated on the current (partially filled) latent batch z, shape (n,); `mask` (D,)
    is row i of the adjacency, so non-parents contribute nothing."""
    if mechanism == "mlp":
        h = jnp.tanh(jnp.matmul(z * mask, params["w1"][i], precision=_HI) + params["b1"][i])
        return jnp.matmul(h, params["w2"][i], precision=_HI)
    if mechanism == "additive":
        h = jnp.tanh(z[:, :, None] * params["a"][i] + params["b"][i])  # (n, D, H)
        return jnp.einsum("ndh,dh,d->n", h, params["v"][i], mask, precision=_HI)
    return jnp.matmul(z, mask, precision=_HI)  # copy


def forward(params: dict[str, jax.Array], eps: jax.Array, adjacency: jax.Array, order: jax.Array,
            mechanism: str, noise_scale: float, calibrate: bool = False):
    """Ancestral sampling: a `lax.scan` over the nodes in topological `order`.

    eps: (n, D) unit-variance noise; adjacency (D, D) 0/1 and order (D,) int may be traced, so
    one compilation serves every graph of the same size. Returns z (n, D); with calibrate=True
    returns (z, mean, std): the batch statistics of each node's signal (0 and 1 for roots).
    """
    adj = jnp.asarray(adjacency, eps.dtype)
    is_root = adj.sum(axis=1) == 0
    standardise = mechanism != "copy"

    def step(z, i):
        f = _signal(params, z, i, adj[i], mechanism)
        mu, sd = jnp.zeros((), eps.dtype), jnp.ones((), eps.dtype)
        if standardise:
            if calibrate:
                mu = jnp.where(is_root[i], 0.0, f.mean())
                sd = jnp.where(is_root[i], 1.0, jnp.maximum(f.std(), 1e-6))
            else:
                mu, sd = params["mean"][i], params["std"][i]
            f = (f - mu) / sd
        value = jnp.where(is_root[i], eps[:, i], f + noise_scale * eps[:, i])
        return z.at[:, i].set(value), (mu, sd)

    z, (mus, sds) = jax.lax.scan(step, jnp.zeros_like(eps), jnp.asarray(order))
    if calibrate:
        order = jnp.asarray(order)
        return z, jnp.zeros(eps.shape[1]).at[order].set(mus), jnp.ones(eps.shape[1]).at[order].set(sds)
    return z


def conditional_mean(params: dict[str, jax.Array], z: jax.Array, adjacency: jax.Array,
                     mechanism: str) -> jax.Array:
    """E[z_i | Pa(z_i)] for every node of fully sampled latents z (n, D): the (standardised)
    signal of the parents, 0 for roots; so ``z - conditional_mean`` is ``eps`` for roots and
    ``noise_scale * eps`` for the other nodes. One vmap over the nodes."""
    adj = jnp.asarray(adjacency, z.dtype)
    nodes = jnp.arange(adj.shape[0])
    f = jax.vmap(lambda i: _signal(params, z, i, adj[i], mechanism), out_axes=1)(nodes)
    if mechanism != "copy":
        f = (f - params["mean"]) / params["std"]
    return jnp.where(adj.sum(axis=1) == 0, 0.0, f)


@functools.partial(jax.jit, static_argnames=("mechanism", "noise", "noise_scale"))
def _make_params(key, adjacency, order, mechanism: str, noise: str, noise_scale: float):
    """One compiled call per (D, mechanism, noise, noise_scale): weights, then calibration."""
    k_w, k_cal = jax.random.split(key)
    params = _init_weights(k_w, adjacency, mechanism)
    d = adjacency.shape[0]
    if mechanism == "copy":
        params.update(mean=jnp.zeros(d), std=jnp.ones(d))
        return params
    eps = sample_noise(k_cal, (CALIBRATION_SIZE, d), noise)
    _, mean, std = forward(params, eps, adjacency, order, mechanism, noise_scale, calibrate=True)
    params.update(mean=mean, std=std)
    return params


def make_scm_params(key: jax.Array, adjacency: np.ndarray, order: np.ndarray, mechanism: str, noise: str,
                    noise_scale: float) -> dict[str, jax.Array]:
    """Mechanism weights plus per-node standardisation constants (`mean`, `std`, shape (D,)),
    the latter the signal statistics of a CALIBRATION_SIZE batch drawn from the key."""
    if mechanism not in ("mlp", "additive", "copy"):
        raise ValueError(f"mechanism={mechanism!r} is unknown; use 'mlp', 'additive' or 'copy'.")
    return _make_params(key, jnp.asarray(adjacency, jnp.int32), jnp.asarray(order, jnp.int32),
                        mechanism=mechanism, noise=noise, noise_scale=float(noise_scale))
