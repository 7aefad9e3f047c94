"""Encoder and decoder networks (one instance per measurement, stacked with ``nn.vmap``)."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

ENCODERS = ("mlp", "conv")


class MLP(nn.Module):
    """Dense stack with leaky-ReLU hidden layers; the last layer is linear."""

    features: Sequence[int]

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for width in self.features[:-1]:
            x = nn.leaky_relu(nn.Dense(width)(x), 0.2)
        return nn.Dense(self.features[-1])(x)


class FeatureEncoder(nn.Module):
    """Observation (vector or image) -> feature vector, for one measurement."""

    kind: str
    hidden: Sequence[int]

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.kind == "conv":
            if x.ndim != 4:
                raise ValueError(f"model.encoder='conv' needs image observations (B, H, W, C); "
                                 f"got shape {x.shape}. Use model.encoder='mlp' for vectors.")
            for channels in (32, 64):
                x = nn.leaky_relu(nn.Conv(channels, (4, 4), strides=(2, 2))(x), 0.2)
            x = x.reshape(x.shape[0], -1)
        else:
            x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = nn.leaky_relu(nn.Dense(width)(x), 0.2)
        return x


class GaussianHead(nn.Module):
    """Features -> (mean, log-variance) of a diagonal Gaussian."""

    dim: int

    @nn.compact
    def __call__(self, h: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        mean = nn.Dense(self.dim)(h)
        logvar = nn.Dense(self.dim, kernel_init=nn.initializers.zeros,
                          bias_init=nn.initializers.constant(-2.0))(h)
        return mean, jnp.clip(logvar, -12.0, 6.0)


class MeasurementEncoder(nn.Module):
    """One measurement x_m^k -> features, q(z_m | x_m^k) and q(eta_m^k | x_m^k)."""

    kind: str
    hidden: Sequence[int]
    latent_dim: int
    eta_dim: int

    @nn.compact
    def __call__(self, x):
        h = FeatureEncoder(self.kind, self.hidden)(x)
        z_mean, z_logvar = GaussianHead(self.latent_dim)(h)
        if self.eta_dim > 0:
            eta_mean, eta_logvar = GaussianHead(self.eta_dim)(h)
        else:
            eta_mean = eta_logvar = jnp.zeros(h.shape[:-1] + (0,), h.dtype)
        return h, z_mean, z_logvar, eta_mean, eta_logvar


class MeasurementDecoder(nn.Module):
    """(s, z_m, eta_m^k) -> reconstruction of x_m^k, for one measurement."""

    kind: str
    hidden: Sequence[int]
    obs_shape: tuple[int, ...]

    @nn.compact
    def __call__(self, code: jnp.ndarray) -> jnp.ndarray:
        n_out = int(np.prod(self.obs_shape))
        if self.kind == "conv" and len(self.obs_shape) == 3:
            height, width, channels = self.obs_shape
            h0, w0 = -(-height // 4), -(-width // 4)   # upsample x4, then crop to size
            h = MLP(tuple(reversed(self.hidden)) + (64 * h0 * w0,))(code)
            h = nn.leaky_relu(h, 0.2).reshape(code.shape[0], h0, w0, 64)
            h = nn.leaky_relu(nn.ConvTranspose(32, (4, 4), strides=(2, 2))(h), 0.2)
            out = nn.ConvTranspose(channels, (4, 4), strides=(2, 2))(h)
            return out[:, :height, :width, :]
        out = MLP(tuple(reversed(self.hidden)) + (n_out,))(code)
        return out.reshape((code.shape[0],) + tuple(self.obs_shape))


def stacked(module_cls, axis: int = 1, in_axes=1):
    """``module_cls`` with independent parameters per measurement along ``axis``."""
    return nn.vmap(module_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                   in_axes=in_axes, out_axes=axis)
