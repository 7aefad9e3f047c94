"""Encoder and decoder networks (one instance per measurement, stacked with ``nn.vmap``).

On CPU the image convolutions are patch matrix products (:class:`Conv4x4s2`,
:class:`ConvTranspose4x4s2`): numerically the same maps and parameter trees as
``nn.Conv`` / ``nn.ConvTranspose`` with a 4x4 kernel, stride 2 and 'SAME' padding, which
other backends use. Why: ``nn.vmap`` over measurements turns a convolution with
per-measurement kernels into a grouped convolution, which XLA:CPU runs (and
differentiates) through a slow generic emitter: the variant-MNIST step was 2.8x slower at
batch 128 (docs/PERFORMANCE.md). The price is memory (patches: ~3.6x the temporary memory).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_KERNEL, _STRIDE = 4, 2
# Transposed 4x4 stride-2 convolution as 4 output phases: output row 2a + p reads rows
# a - 1 + offset of the input (offset in the input padded by 1) through kernel row ``tap``.
_PHASE_TAPS = (((0, 0), (1, 2)), ((1, 1), (2, 3)))   # phase p -> ((offset, tap), ...)

ENCODERS = ("mlp", "conv")


@jax.custom_vjp
def dense(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    """``x @ kernel + bias`` (x: (..., in), kernel: (in, out)), with its own kernel gradient:
    one matrix product whose output columns are the wider of (in, out).

    Why: autodiff's kernel gradient is an (out, in) product ``dy^T x`` and a transpose, and
    XLA:CPU folds the transpose into the product. For the decoder's last layer and the
    encoder's heads (128 -> 10, 128 -> 8) that makes a (128, 10) product, which XLA:CPU runs
    5-7x slower than the (10, 128) one (thin output). Here that product keeps (out, in) and
    is transposed after an ``optimization_barrier`` (a copy of out x in values), so XLA
    cannot fold it back; square and widening layers take ``x^T dy`` directly. Measured on
    the default run's step (3 seeds x batch 512, 2 CPU cores): 20.9 -> 17.8 ms, the same MCC
    (docs/PERFORMANCE.md). Same values as autodiff
    (tests/test_networks_equivalence.py). Reverse mode only: nothing in the project
    differentiates the networks forward-mode (``jax.jvp`` raises on a ``custom_vjp``)."""
    return x @ kernel + bias


def _dense_fwd(x, kernel, bias):
    return dense(x, kernel, bias), (x, kernel)


def _dense_bwd(residuals, dy):
    x, kernel = residuals
    n_in, n_out = kernel.shape
    rows = tuple(range(x.ndim - 1))
    contract_rows = ((rows, rows), ((), ()))
    if n_in <= n_out:
        d_kernel = jax.lax.dot_general(x, dy, contract_rows)
    else:
        d_kernel = jax.lax.optimization_barrier(jax.lax.dot_general(dy, x, contract_rows)).T
    # dx as autodiff writes it (contract dy's last axis with the kernel's output axis): a
    # written-out ``dy @ kernel.T`` made XLA:CPU materialise the transposed kernel, inside
    # the microbatch loop once per chunk (24.5 MB a chunk for the conv image model).
    d_x = jax.lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())))
    return d_x, d_kernel, jnp.sum(dy, axis=rows)


dense.defvjp(_dense_fwd, _dense_bwd)


LEAKY_SLOPE = 0.2   # of every hidden activation (the reference model's)


@jax.custom_vjp
def leaky_relu(x: jnp.ndarray) -> jnp.ndarray:
    """Leaky ReLU with slope ``LEAKY_SLOPE`` = 1/5, whose backward pass keeps only its output.

    Why: with ``nn.leaky_relu`` XLA:CPU fuses a copy of the forward's bias add and select into
    the backward's mask, so the step kept every hidden layer's matrix-product output *and*
    its activation until the backward pass: 96 of the 111 MB of temporaries of
    numerical_case2 at batch 4096, half of them products (``python -m benchmarks.profiling memory``).
    Here the output is a division (``x / 5`` below zero), which XLA does not duplicate into
    consumers, and the gradient's mask is read from the output's sign (the same as the
    input's: dividing by 1 or 5 keeps it), so the product output dies in the forward pass:
    80.7 -> 50.0 MB for the growth layout M = 6 at batch 1024 (docs/PERFORMANCE.md).
    Values: the slope is exactly 1/5 (``x / 5`` correctly rounded),
    where ``nn.leaky_relu(x, 0.2)`` multiplies by float32(0.2); they differ by at most one
    unit in the last place, below zero (tests/test_networks_equivalence.py)."""
    return x / jnp.where(x >= 0, 1.0, 1.0 / LEAKY_SLOPE).astype(x.dtype)


def _leaky_relu_fwd(x):
    y = leaky_relu(x)
    return y, y


def _leaky_relu_bwd(y, dy):
    return (jnp.where(y >= 0, dy, dy / jnp.asarray(1.0 / LEAKY_SLOPE, dy.dtype)),)


leaky_relu.defvjp(_leaky_relu_fwd, _leaky_relu_bwd)


class Dense(nn.Module):
    """``nn.Dense`` (same parameter names, shapes and initialisers) through :func:`dense`."""

    features: int
    kernel_init: object = nn.initializers.lecun_normal()
    bias_init: object = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        return dense(x, kernel, bias)


class MLP(nn.Module):
    """Dense stack with leaky-ReLU hidden layers; the last layer is linear."""

    features: Sequence[int]

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for width in self.features[:-1]:
            x = leaky_relu(Dense(width)(x))
        return Dense(self.features[-1])(x)


def matmul_convolutions() -> bool:
    """Whether the conv layers use the patch matrix products (on CPU) or flax's library
    convolutions (GPU/TPU, where grouped convolutions are fast and the patches would cost
    memory: the patch form needs ~3.6x the step's temporary memory of the conv form)."""
    return jax.default_backend() == "cpu"


def _conv(features: int, name: str) -> nn.Module:
    if matmul_convolutions():
        return Conv4x4s2(features, name=name)
    return nn.Conv(features, (_KERNEL, _KERNEL), strides=(_STRIDE, _STRIDE), name=name)


def _conv_transpose(features: int, name: str) -> nn.Module:
    if matmul_convolutions():
        return ConvTranspose4x4s2(features, name=name)
    return nn.ConvTranspose(features, (_KERNEL, _KERNEL), strides=(_STRIDE, _STRIDE), name=name)


def _same_padding(size: int) -> tuple[int, tuple[int, int]]:
    """Output size and (low, high) padding of a 'SAME' 4x4 stride-2 convolution."""
    out = -(-size // _STRIDE)
    total = max((out - 1) * _STRIDE + _KERNEL - size, 0)
    return out, (total // 2, total - total // 2)


class Conv4x4s2(nn.Module):
    """``nn.Conv(features, (4, 4), strides=(2, 2))`` (padding 'SAME') as one matrix product
    of the 16 strided views of the input (im2col) with the (16 * C_in, features) kernel."""

    features: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        n, height, width, c_in = x.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (_KERNEL, _KERNEL, c_in, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        (oh, pad_h), (ow, pad_w) = _same_padding(height), _same_padding(width)
        xp = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
        views = [xp[:, i:i + _STRIDE * (oh - 1) + 1:_STRIDE, j:j + _STRIDE * (ow - 1) + 1:_STRIDE]
                 for i in range(_KERNEL) for j in range(_KERNEL)]          # kernel taps (i, j)
        patches = jnp.concatenate(views, axis=-1)                           # (n, oh, ow, 16 c_in)
        return patches @ kernel.reshape(-1, self.features) + bias


class ConvTranspose4x4s2(nn.Module):
    """``nn.ConvTranspose(features, (4, 4), strides=(2, 2))`` (padding 'SAME', output twice
    the input size) as one matrix product: the 9 shifted views of the input times a kernel
    that maps each view to the 4 output phases it feeds (2x2 sub-pixel form)."""

    features: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        n, height, width, c_in = x.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (_KERNEL, _KERNEL, c_in, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        patches = jnp.concatenate([xp[:, di:di + height, dj:dj + width]
                                   for di in range(3) for dj in range(3)], axis=-1)
        # phase_kernel[di, dj, :, p, q] = kernel[tap_i, tap_j] where view (di, dj) feeds
        # output phase (p, q); zero elsewhere. Built with static index arrays.
        di, ti, p = np.array([(o, t, ph) for ph in range(2) for o, t in _PHASE_TAPS[ph]]).T
        phase_kernel = jnp.zeros((3, 3, 2, 2, c_in, self.features), kernel.dtype)
        phase_kernel = phase_kernel.at[di[:, None], di[None, :], p[:, None], p[None, :]].set(
            kernel[ti[:, None], ti[None, :]])
        phase_kernel = phase_kernel.transpose(0, 1, 4, 2, 3, 5).reshape(9 * c_in, -1)
        y = (patches @ phase_kernel).reshape(n, height, width, 2, 2, self.features)
        y = y.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * height, 2 * width, self.features)
        return y + bias


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
            for i, channels in enumerate((32, 64)):   # names as nn.Conv's: same params
                x = leaky_relu(_conv(channels, name=f"Conv_{i}")(x))
            x = x.reshape(x.shape[0], -1)
        else:
            x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = leaky_relu(Dense(width)(x))
        return x


_LOGVAR_RANGE = (-12.0, 6.0)
_LOGVAR_BIAS_INIT = -2.0


class GaussianHead(nn.Module):
    """Features -> (mean, log-variance) of a diagonal Gaussian.

    The parameters of two ``nn.Dense(dim)`` (``Dense_0``: mean, ``Dense_1``: log-variance,
    which starts at zero kernel and bias -2), applied as one :func:`dense` product, the form
    of the encoder's fused heads (one definition of the parameters for both). On the
    ``content_style`` step (shared latent) it measured the same as two ``nn.Dense`` (within
    5 %), so this is for one code path, not speed."""

    dim: int

    @nn.compact
    def __call__(self, h: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        out = dense(h, *_gaussian_head_params(self.dim, h.shape[-1]))
        return out[..., :self.dim], jnp.clip(out[..., self.dim:], *_LOGVAR_RANGE)


class _DenseParams(nn.Module):
    """The (kernel, bias) that ``nn.Dense(features)`` of this name would create."""

    features: int
    kernel_init: object = nn.initializers.lecun_normal()
    bias_init: object = nn.initializers.zeros

    @nn.compact
    def __call__(self, in_features: int):
        return (self.param("kernel", self.kernel_init, (in_features, self.features)),
                self.param("bias", self.bias_init, (self.features,)))


def _gaussian_head_params(dim: int, in_features: int):
    """Inside a compact method: the parameters of a :class:`GaussianHead` (the two
    ``nn.Dense`` it would have as ``Dense_0`` / ``Dense_1``: same names, shapes and initial
    values), as one (in, 2 * dim) kernel [mean | logvar] and bias."""
    k_mean, b_mean = _DenseParams(dim, name="Dense_0")(in_features)
    k_logvar, b_logvar = _DenseParams(
        dim, nn.initializers.zeros, nn.initializers.constant(_LOGVAR_BIAS_INIT),
        name="Dense_1")(in_features)
    return jnp.concatenate([k_mean, k_logvar], axis=1), jnp.concatenate([b_mean, b_logvar])


class _GaussianHeadParams(nn.Module):
    """The parameters of a :class:`GaussianHead` without applying it (the encoder fuses
    several heads into one product)."""

    dim: int

    @nn.compact
    def __call__(self, in_features: int):
        return _gaussian_head_params(self.dim, in_features)


class MeasurementEncoder(nn.Module):
    """One measurement x_m^k -> features, q(z_m | x_m^k) and q(eta_m^k | x_m^k)."""

    kind: str
    hidden: Sequence[int]
    latent_dim: int
    eta_dim: int

    @nn.compact
    def __call__(self, x):
        h = FeatureEncoder(self.kind, self.hidden)(x)
        # The z and eta heads (GaussianHead_0, GaussianHead_1: the parameters GaussianHead
        # would have) as ONE matrix product: four thin products (2 or 1 output columns
        # each) doubled the encoder's time on CPU (docs/PERFORMANCE.md).
        d, e = self.latent_dim, self.eta_dim
        heads = [_GaussianHeadParams(d, name="GaussianHead_0")(h.shape[-1])]
        if e > 0:
            heads.append(_GaussianHeadParams(e, name="GaussianHead_1")(h.shape[-1]))
        out = dense(h, jnp.concatenate([k for k, _ in heads], axis=1),
                    jnp.concatenate([b for _, b in heads]))
        z_mean, z_logvar = out[:, :d], jnp.clip(out[:, d:2 * d], *_LOGVAR_RANGE)
        if e > 0:
            eta_mean = out[:, 2 * d:2 * d + e]
            eta_logvar = jnp.clip(out[:, 2 * d + e:], *_LOGVAR_RANGE)
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
            h = leaky_relu(h).reshape(code.shape[0], h0, w0, 64)
            h = leaky_relu(_conv_transpose(32, name="ConvTranspose_0")(h))
            out = _conv_transpose(channels, name="ConvTranspose_1")(h)
            return out[:, :height, :width, :]
        out = MLP(tuple(reversed(self.hidden)) + (n_out,))(code)
        return out.reshape((code.shape[0],) + tuple(self.obs_shape))


def stacked(module_cls, axis: int = 1, in_axes=1):
    """``module_cls`` with independent parameters per measurement along ``axis``."""
    return nn.vmap(module_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                   in_axes=in_axes, out_axes=axis)
