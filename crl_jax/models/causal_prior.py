"""Learned latent causal model used as the VAE prior (Level II of PersonaX).

The prior over ``z = [s, z_1, ..., z_M]`` (``D`` dims) is a structural causal model with a
learnable weighted adjacency ``W`` (row = child, column = parent) masked to the allowed
edges, and one noise model per dimension

    eps_i = h_i(z_i, W_i * z) = flow_i((z_i - mu_i(W_i * z)) * exp(-sigma_i(W_i * z)))

so that

    log p(z) = sum_i [ log N(eps_i; 0, 1) + log |d h_i / d z_i| ].

Why this is a density: the allowed-edge mask is strictly lower triangular in the latent
order (edges ``j -> i`` only for ``j < i``; no edges into the shared block), so the map
``z -> eps`` has a triangular Jacobian whose diagonal is ``d h_i / d z_i``, and every ``h_i``
is strictly increasing in ``z_i`` for fixed parents (positive scale, monotone flow). The
order of latents inside a block is only a labelling convention: latents are identified up
to permutation, so the model can always label them topologically.

The derivative ``d h_i / d z_i`` is taken with ``jax.grad`` of the scalar map, vectorised
over dimensions and batch with ``vmap`` (no Python loop over dimensions). The parents enter
through ``W_i * z``, so the adjacency receives gradients from the density (the reference
code's hard threshold did not). The first layer of each conditional MLP is weight
normalised per input so that the edge strength lives in ``|W|`` and an L1 penalty on ``W``
cannot be undone by growing the MLP weights.
"""
from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_LOG_2PI = float(np.log(2.0 * np.pi))
_MAX_LOG_SCALE = 5.0


def allowed_edges_mask(shared_dim: int, block_dims: Sequence[int]) -> np.ndarray:
    """Edges the prior may learn, over ``[s, z_1, ..., z_M]`` (row = child).

    Shared -> modality latents, within a modality (in latent order) and from earlier to
    later modalities. Nothing enters the shared block. Strictly lower triangular, hence a
    DAG for every setting of the weights.
    """
    dim = shared_dim + int(sum(block_dims))
    mask = np.tril(np.ones((dim, dim), dtype=bool), k=-1)
    mask[:shared_dim, :] = False
    return mask


def cross_modal_mask(shared_dim: int, block_dims: Sequence[int]) -> np.ndarray:
    """The allowed edges that join two different modality blocks (the sparse ones)."""
    labels = np.concatenate(
        [np.full(shared_dim, -1)] + [np.full(d, m) for m, d in enumerate(block_dims)])
    different = labels[:, None] != labels[None, :]
    modal = (labels[:, None] >= 0) & (labels[None, :] >= 0)
    return allowed_edges_mask(shared_dim, block_dims) & different & modal


def _softplus_inverse(x: float) -> float:
    return float(np.log(np.expm1(x)))


class CausalPrior(nn.Module):
    """log p(z) of a nonlinear SCM with a learnable masked adjacency.

    Attributes:
      mask: (D, D) nested tuple of bools, the allowed edges (row = child).
      hidden: width of each per-dimension conditional MLP.
      flow_units: number of tanh units of the per-dimension monotone flow on eps (0 = off).
      adjacency_init: initial value of every allowed weight (kept away from 0 so that the
        conditional MLPs see their parents from the start).
    """

    mask: tuple[tuple[bool, ...], ...]
    hidden: int = 16
    flow_units: int = 0
    adjacency_init: float = 0.3

    def _mask_array(self) -> jnp.ndarray:
        return jnp.asarray(np.asarray(self.mask, dtype=np.float32))

    @property
    def dim(self) -> int:
        return len(self.mask)

    def setup(self):
        d, h, u = self.dim, self.hidden, self.flow_units
        mask = self._mask_array()
        self.raw_adjacency = self.param(
            "adjacency", lambda _k, shape: jnp.full(shape, self.adjacency_init) * mask, (d, d))
        lecun = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        self.w1 = self.param("w1", nn.initializers.normal(1.0), (d, d, h))
        self.b1 = self.param("b1", nn.initializers.normal(0.1), (d, h))
        self.w2 = self.param("w2", lecun, (d, h, 2))
        self.b2 = self.param("b2", nn.initializers.zeros, (d, 2))
        if u > 0:
            self.flow_linear = self.param(
                "flow_linear", nn.initializers.constant(_softplus_inverse(1.0)), (d,))
            self.flow_amp = self.param("flow_amp", nn.initializers.constant(-3.0), (d, u))
            self.flow_slope = self.param("flow_slope", nn.initializers.normal(1.0), (d, u))
            self.flow_shift = self.param("flow_shift", nn.initializers.normal(1.0), (d, u))

    def adjacency(self) -> jnp.ndarray:
        """Weighted adjacency (D, D); exactly zero outside the allowed edges."""
        return self.raw_adjacency * self._mask_array()

    def _dim_params(self):
        # Weight-normalise the first layer per (child, parent) input so that |W| carries
        # the edge strength.
        w1 = self.w1 / (jnp.linalg.norm(self.w1, axis=-1, keepdims=True) + 1e-6)
        params = {"w1": w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}
        if self.flow_units > 0:
            params.update(flow_linear=self.flow_linear, flow_amp=self.flow_amp,
                          flow_slope=self.flow_slope, flow_shift=self.flow_shift)
        return params

    def _h(self, p, z_i: jnp.ndarray, pre: jnp.ndarray) -> jnp.ndarray:
        """Noise of one dimension: scalar z_i, pre (hidden,) = (W_i * z) @ w1_i, the first
        layer of its conditional MLP before the bias. Increasing in z_i."""
        hid = jnp.tanh(pre + p["b1"])
        loc, log_scale = hid @ p["w2"] + p["b2"]
        log_scale = _MAX_LOG_SCALE * jnp.tanh(log_scale / _MAX_LOG_SCALE)
        eps = (z_i - loc) * jnp.exp(-log_scale)
        if self.flow_units > 0:
            eps = (jax.nn.softplus(p["flow_linear"]) * eps + jnp.sum(
                jax.nn.softplus(p["flow_amp"]) * jnp.tanh(
                    jax.nn.softplus(p["flow_slope"]) * eps + p["flow_shift"])))
        return eps

    def noise(self, z: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Returns (eps, log|d h_i / d z_i|), each (B, D)."""
        chex.assert_rank(z, 2)
        chex.assert_axis_dimension(z, 1, self.dim)
        params = self._dim_params()
        # (W_i * z) @ w1_i for every dimension i as one product, without the (B, D, D)
        # tensor of parents. W_ii = 0, so it does not depend on z_i.
        pre = jnp.einsum("bj,ijh->bih", z, self.adjacency()[:, :, None] * params.pop("w1"))
        value_and_grad = jax.value_and_grad(self._h, argnums=1)
        per_dim = jax.vmap(value_and_grad, in_axes=(0, 0, 0))      # over dimensions
        per_batch = jax.vmap(per_dim, in_axes=(None, 0, 0))         # over the batch
        eps, slope = per_batch(params, z, pre)
        return eps, jnp.log(jnp.abs(slope))

    def dependence(self, z: jnp.ndarray) -> jnp.ndarray:
        """Scale-free dependence of each noise on each latent over the rows of ``z``:
        ``S[i, j] = mean |d eps_i / d z_j| * std(z_j)`` (D, D), see :func:`dependence`."""
        return dependence(lambda rows: self.noise(rows)[0], z)

    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        """log p(z) per sample, shape (B,)."""
        eps, log_det = self.noise(z)
        return jnp.sum(-0.5 * (eps**2 + _LOG_2PI) + log_det, axis=-1)


def dependence(noise_fn, z: jnp.ndarray) -> jnp.ndarray:
    """``S[i, j] = mean_n |d eps_i / d z_j|(z_n) * std(z_j)``, shape (D, D).

    ``noise_fn``: (B, D) latents -> (B, D) noises of the causal prior. S measures how much
    one standard deviation of latent ``j`` moves noise ``i`` (the noise has unit scale under
    the prior), so it cannot be made small by rescaling: the adjacency ``W`` can (a small
    ``W_ij`` times large weights after it is the same model), which is why the sparsity
    penalty and the graph readout use S. The Jacobian is exact (``jax.jacfwd`` per row).
    """
    chex.assert_rank(z, 2)
    jac = jax.vmap(jax.jacfwd(lambda row: noise_fn(row[None])[0]))(z)      # (n, D, D)
    return jnp.mean(jnp.abs(jac), axis=0) * jnp.std(z, axis=0)[None, :]
