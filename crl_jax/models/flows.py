"""Invertible maps with exact log-determinants, one per latent block (stage B of ``personax``).

``BlockFlow`` maps a block representation ``r_m`` (d_m dims) to ``zhat_m``:

    x <- x A_0 + b_0                           (A_0 initialised at the identity)
    repeat n_layers:  x <- coupling(x);  x <- x A_l

``coupling`` is an affine coupling layer: the coordinates of one parity condition a small tanh
network that scales (``exp(tanh(.))``, so bounded) and shifts the others; its output layer
starts at zero, so the whole map starts at the identity. ``log|det|`` is exact: the couplings'
``sum(log scale)`` plus ``log|det A_l|`` of each linear layer.

Why it starts at the identity and is kept as small as the data allow: stage B refines the
stage-A representation, which on the numerical benchmarks is already close to a linear map
of the latents; the likelihood alone cannot tell apart many reparametrisations of a block
(e.g. a latent and the part of it its within-block parent does not explain), so a flexible
map drifts among them. Starting at the identity with little capacity keeps what the data
cannot decide where stage A put it, and the cross-modal sparsity moves what it can decide.
Where stage A's representation is far from linear (the images), one coupling cannot undo it;
``personax`` therefore chooses the number of couplings per block on validation (the
``active`` argument below; docs/MODEL.md 2a).
"""
from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp


def _identity(_key, shape):
    return jnp.eye(shape[0], dtype=jnp.float32)


class AffineCoupling(nn.Module):
    """``x[~mask]`` scaled and shifted by a network of ``x[mask]``; ``mask`` a 0/1 tuple."""

    mask: tuple[float, ...]
    hidden: int = 32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        keep = jnp.asarray(self.mask, x.dtype)
        h = nn.tanh(nn.Dense(self.hidden)(x * keep))
        h = nn.tanh(nn.Dense(self.hidden)(h))
        out = nn.Dense(2 * x.shape[-1], kernel_init=nn.initializers.zeros)(h)
        log_scale, shift = jnp.split(out, 2, axis=-1)
        log_scale = jnp.tanh(log_scale) * (1.0 - keep)
        return x * jnp.exp(log_scale) + shift * (1.0 - keep), jnp.sum(log_scale, axis=-1)


class BlockFlow(nn.Module):
    """(n, d) -> ((n, d), log|det J| per row); identity at initialisation.

    ``active`` (a scalar, traced or not; default all ``n_layers``): how many of the coupling
    layers (each with the linear map after it) act; the others are the identity, so one set
    of parameters holds the flows of every capacity up to ``n_layers`` (the replicas of
    ``personax``'s stage B choose their capacity this way inside one vmapped step)."""

    n_layers: int = 1
    hidden: int = 32

    @nn.compact
    def __call__(self, x: jnp.ndarray, active=None) -> tuple[jnp.ndarray, jnp.ndarray]:
        chex.assert_rank(x, 2)
        d = x.shape[-1]
        a0 = self.param("linear_0", _identity, (d, d))
        x = x @ a0 + self.param("bias_0", nn.initializers.zeros, (d,))
        log_det = jnp.broadcast_to(jnp.linalg.slogdet(a0)[1], x.shape[:1])
        for layer in range(self.n_layers if d > 1 else 0):
            mask = tuple(float((i + layer) % 2 == 0) for i in range(d))
            y, ld = AffineCoupling(mask, self.hidden, name=f"coupling_{layer}")(x)
            a = self.param(f"linear_{layer + 1}", _identity, (d, d))
            if active is not None:     # an inactive layer: identity coupling and linear map
                on = (layer < jnp.asarray(active)).astype(x.dtype)
                y, ld = on * y + (1.0 - on) * x, on * ld
                a = on * a + (1.0 - on) * jnp.eye(d, dtype=a.dtype)
            x = y @ a
            log_det = log_det + ld + jnp.linalg.slogdet(a)[1]
        return x, log_det


class LatentFlow(nn.Module):
    """One :class:`BlockFlow` per block of ``[s, z_1, ..., z_M]`` (block-diagonal map).

    Returns ``(zhat, log_det)`` with ``log_det`` per row and block, (n, n_blocks): the
    within-block order search of ``personax`` scores blocks separately."""

    block_sizes: Sequence[int]
    n_layers: int = 1
    hidden: int = 32

    @nn.compact
    def __call__(self, r: jnp.ndarray, active=None) -> tuple[jnp.ndarray, jnp.ndarray]:
        """``active``: (n_blocks,) active coupling layers per block (default: all)."""
        chex.assert_rank(r, 2)
        chex.assert_axis_dimension(r, 1, int(sum(self.block_sizes)))
        if active is not None:
            chex.assert_shape(active, (len(self.block_sizes),))
        outs, log_dets, start = [], [], 0
        for i, size in enumerate(self.block_sizes):
            z, ld = BlockFlow(self.n_layers, self.hidden, name=f"block_{i}")(
                r[:, start:start + size], None if active is None else active[i])
            outs.append(z)
            log_dets.append(ld)
            start += size
        return jnp.concatenate(outs, axis=-1), jnp.stack(log_dets, axis=-1)
