"""Invertible mixing g_m^k for vector data, and its exact inverse.

Each measurement k of a modality gets its own invertible MLP
``u -> W_L . lrelu(... lrelu(W_1 u))`` (no biases, leaky-ReLU slope 0.2 between layers) with
square layers drawn as in Hyvarinen's PCL / Zimmermann et al. 2021: entries U(-1, 1), columns
L2-normalised, kept only if the condition number is at most a threshold. Rejection is
vectorised: a fixed number of candidates is drawn with `jax.random` and the first acceptable
one is taken, so the result is a pure function of the key. An optional random lift with
orthonormal columns (QR of a Gaussian matrix) maps to the observed dimension; its exact
left-inverse is its transpose.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

SLOPE = 0.2
CHUNK = 256  # candidates tested per round of the rejection sampler
REFERENCE_POOL = 25000  # as in Zimmermann et al.'s / von Kuegelgen et al.'s code
_HI = jax.lax.Precision.HIGHEST  # no TF32/bf16 matmuls on accelerators: the inverse must be exact


def leaky_relu(x: jax.Array) -> jax.Array:
    return jnp.where(x >= 0, x, SLOPE * x)


def leaky_relu_inverse(y: jax.Array) -> jax.Array:
    return jnp.where(y >= 0, y, y / SLOPE)


@functools.partial(jax.jit, static_argnames=("count", "n"))
def _pcl_matrices(key: jax.Array, count: int, n: int) -> jax.Array:
    """`count` n x n matrices with U(-1, 1) entries and unit-norm columns."""
    a = jax.random.uniform(key, (count, n, n), minval=-1.0, maxval=1.0)
    return a / jnp.linalg.norm(a, axis=-2, keepdims=True)


@functools.partial(jax.jit, static_argnames=("n",))
def _candidates(keys: jax.Array, chunk: jax.Array, n: int) -> jax.Array:
    """(layers, CHUNK, n, n): chunk number `chunk` of each layer's candidate sequence."""
    return jax.vmap(lambda k: _pcl_matrices(jax.random.fold_in(k, chunk), CHUNK, n))(keys)


def condition_number(w: np.ndarray | jax.Array) -> np.ndarray:
    """Spectral condition number over the last two axes (numpy, float64)."""
    s = np.linalg.svd(np.asarray(w, dtype=np.float64), compute_uv=False)
    return s[..., 0] / s[..., -1]


@functools.lru_cache(maxsize=None)
def reference_threshold(n: int, quantile: float = 0.25) -> float:
    """`quantile` of the condition numbers of 25,000 PCL matrices of size n (fixed key 0)."""
    conds = condition_number(_pcl_matrices(jax.random.PRNGKey(0), REFERENCE_POOL, n))
    return float(np.quantile(conds, quantile))


def n_candidates(quantile: float) -> int:
    """Candidates per layer so that none is acceptable with probability (1 - q)^N < e^-30."""
    return int(CHUNK * max(1, np.ceil(30.0 / quantile / CHUNK)))


def sample_layers(key: jax.Array, shape: tuple[int, ...], n: int, threshold: float, count: int = CHUNK) -> jax.Array:
    """(*shape, n, n) matrices: for each, the first acceptable (condition number <= threshold)
    of a fixed sequence of `count` candidates drawn from its own key.

    Candidates are drawn and tested CHUNK at a time, vectorised over all layers, stopping once
    every layer has one; the result equals testing all `count` at once, so it depends only on
    the key.
    """
    keys = jax.random.split(key, int(np.prod(shape)))
    chosen = np.zeros((keys.shape[0], n, n), dtype=np.float32)
    found = np.zeros(keys.shape[0], dtype=bool)
    for chunk in range(max(1, count // CHUNK)):
        cands = np.asarray(_candidates(keys, chunk, n=n))
        ok = condition_number(cands) <= threshold  # (layers, CHUNK)
        new = ~found & ok.any(axis=1)
        chosen[new] = cands[new, ok.argmax(axis=1)[new]]
        found |= new
        if found.all():
            break
    if not found.all():
        raise ValueError(
            f"Spec.max_condition={threshold:.3g}: none of {count} random {n}x{n} candidates had a condition "
            f"number that low; raise max_condition, or leave it None to use Spec.cond_quantile.")
    return jnp.asarray(chosen.reshape(tuple(shape) + (n, n)))


def make_mixing_params(key: jax.Array, n_measurements: int, n_in: int, obs_dim: int, depth: int,
                       threshold: float, count: int = CHUNK) -> dict[str, jax.Array]:
    """Parameters of the K mixings of one modality: 'weights' (K, depth, n_in, n_in) and, when
    obs_dim > n_in, 'lift' (K, obs_dim, n_in) with orthonormal columns."""
    k_w, k_l = jax.random.split(key)
    params = {"weights": sample_layers(k_w, (n_measurements, depth), n_in, threshold, count)}
    if obs_dim > n_in:
        params["lift"] = _lift(k_l, n_measurements, obs_dim, n_in)
    return params


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _lift(key: jax.Array, k: int, obs_dim: int, n_in: int) -> jax.Array:
    """(k, obs_dim, n_in) matrices with orthonormal columns (QR of Gaussians, sign-fixed)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (k, obs_dim, n_in)))
    return q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]


@jax.jit
def mix_one(weights: jax.Array, lift: jax.Array | None, u: jax.Array) -> jax.Array:
    """One measurement's g: u (..., n_in) -> x (..., obs_dim)."""
    h = u
    for layer in range(weights.shape[0]):
        if layer > 0:
            h = leaky_relu(h)
        h = jnp.matmul(h, weights[layer].T, precision=_HI)
    return h if lift is None else jnp.matmul(h, lift.T, precision=_HI)


@jax.jit
def unmix_one(weights: jax.Array, lift: jax.Array | None, x: jax.Array) -> jax.Array:
    """Exact inverse of `mix_one` on its image: x (..., obs_dim) -> u (..., n_in)."""
    if lift is None:
        h = x
    else:  # pseudo-inverse (L^T L)^-1 L^T: exact even though float32 columns are not exactly orthonormal
        gram = jnp.matmul(lift.T, lift, precision=_HI)
        h = jnp.linalg.solve(gram, jnp.matmul(x, lift, precision=_HI).reshape(-1, lift.shape[1]).T).T
        h = h.reshape(x.shape[:-1] + (lift.shape[1],))
    for layer in reversed(range(weights.shape[0])):
        h = jnp.linalg.solve(weights[layer], h.reshape(-1, h.shape[-1]).T).T.reshape(h.shape)
        if layer > 0:
            h = leaky_relu_inverse(h)
    return h


def mix(params: dict[str, jax.Array], u: jax.Array) -> jax.Array:
    """All K measurements of one modality: u (n, K, n_in) -> x (n, K, obs_dim)."""
    lift = params.get("lift")
    if lift is None:
        return jax.vmap(lambda w, uk: mix_one(w, None, uk), in_axes=(0, 1), out_axes=1)(params["weights"], u)
    return jax.vmap(mix_one, in_axes=(0, 0, 1), out_axes=1)(params["weights"], lift, u)
