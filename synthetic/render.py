"""Variant-MNIST rendering (Sun et al. 2025 App. D.2; PersonaX's 3-measurement version).

Latents (SCM values, roughly unit variance) are squashed to bounded ranges with
``b(z) = sigmoid(1.7 z)`` (close to the standard normal CDF, so the ranges are used evenly):

- z11 -> horizontal shift of the digit, ``(2 b - 1) * 4`` px at 28x28 (positive = right);
- z12 -> digit transparency (intensity scale) ``0.25 + 0.75 b``;
- z21 -> vertical shift of the fashion item, ``(2 b - 1) * 4`` px (positive = down); the item
  is first shrunk to 20x20 px (Fashion-MNIST items fill the frame) so it stays in the frame;
- z22 -> grey level (intensity scale) of the fashion item, ``0.25 + 0.75 b``.

MNIST digits already sit in a 20x20 box centred in 28x28, so a +-4 px shift keeps them in the
frame. Sub-pixel translation and scaling are bilinear interpolation written as two separable
tent-kernel matrices (``out = R_y @ img @ R_x^T``), zero outside the source image. Images are
rendered at 28x28 and, for image_size=14, 2x2 average-pooled. Digit measurement k multiplies
the grey digit by colour ``COLOURS[k]`` (RGB in [0, 1]); the fashion item is one grey channel.
Each measurement may have its own source image (Spec.identity='per_measurement'); the latents
move every measurement's image in the same way.
All functions are jnp, jit-able and vectorised over the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

CANVAS = 28
MAX_SHIFT = 4.0
FASHION_SCALE = 20.0 / 28.0
MIN_INTENSITY = 0.25
SQUASH = 1.7
# Colours of the digit measurements (red, green, blue, yellow, magenta, cyan).
COLOURS = np.array([[1.0, 0.25, 0.25], [0.25, 1.0, 0.25], [0.3, 0.5, 1.0],
                    [1.0, 1.0, 0.25], [1.0, 0.25, 1.0], [0.25, 1.0, 1.0]], dtype=np.float32)


def bounded(z: jax.Array) -> jax.Array:
    """Map an SCM value to (0, 1)."""
    return jax.nn.sigmoid(SQUASH * z)


def shift_px(z: jax.Array) -> jax.Array:
    """Translation in pixels (at 28x28), in (-MAX_SHIFT, MAX_SHIFT)."""
    return (2.0 * bounded(z) - 1.0) * MAX_SHIFT


def intensity(z: jax.Array) -> jax.Array:
    """Intensity scale in (MIN_INTENSITY, 1)."""
    return MIN_INTENSITY + (1.0 - MIN_INTENSITY) * bounded(z)


def _interp_matrix(offset: jax.Array, scale: float) -> jax.Array:
    """(n, 28, 28) bilinear resampling matrices: output index r samples source coordinate
    (r - c - offset) / scale + c, c = 13.5 the image centre."""
    c = (CANVAS - 1) / 2.0
    r = jnp.arange(CANVAS, dtype=jnp.float32)
    src = (r[None, :] - c - offset[:, None]) / scale + c  # (n, 28)
    return jax.nn.relu(1.0 - jnp.abs(src[:, :, None] - r[None, None, :]))


def warp(images: jax.Array, dx: jax.Array, dy: jax.Array, scale: float = 1.0) -> jax.Array:
    """Scale about the centre, then translate by (dx, dy) px: (n, 28, 28) -> (n, 28, 28), or
    (n, J, 28, 28) -> (n, J, 28, 28) with the same (dx[i], dy[i]) for all J images of sample i."""
    ry, rx = _interp_matrix(dy, scale), _interp_matrix(dx, scale)
    if images.ndim == 4:
        return jnp.einsum("nri,nkij,ncj->nkrc", ry, images, rx, precision=jax.lax.Precision.HIGHEST)
    return jnp.einsum("nri,nij,ncj->nrc", ry, images, rx, precision=jax.lax.Precision.HIGHEST)


def downsample(images: jax.Array, image_size: int) -> jax.Array:
    """Average-pool (n, ..., 28, 28, C) to image_size (28 or 14)."""
    if image_size == CANVAS:
        return images
    f = CANVAS // image_size
    *lead, h, w, ch = images.shape
    return images.reshape(*lead, h // f, f, w // f, f, ch).mean(axis=(-4, -2))


def render(z: jax.Array, digits: jax.Array, items: jax.Array, n_colours: int,
           image_size: int = 28) -> tuple[jax.Array, jax.Array]:
    """Render both modalities.

    z: (n, 4) latents (z11, z12, z21, z22); digits: (n, 28, 28) (one image for all colours) or
    (n, n_colours, 28, 28) (one per colour); items: (n, 28, 28) or (n, 1, 28, 28); uint8 or float.
    Returns digit images (n, n_colours, H, W, 3) and fashion images (n, 1, H, W, 1), float32 in [0, 1].
    """
    digits = jnp.asarray(digits, jnp.float32) / 255.0
    items = jnp.asarray(items, jnp.float32) / 255.0
    if digits.ndim == 4 and digits.shape[1] != n_colours:
        raise ValueError(f"digits has shape {digits.shape}; give (n, 28, 28), one image for all colours, "
                         f"or (n, n_colours={n_colours}, 28, 28), one per colour.")
    if items.ndim == 4:
        if items.shape[1] != 1:
            raise ValueError(f"items has shape {items.shape}; the fashion modality has one measurement: (n, 1, 28, 28).")
        items = items[:, 0]
    scale_d = intensity(z[:, 1])[:, None, None]
    grey_digit = warp(digits, shift_px(z[:, 0]), jnp.zeros_like(z[:, 0]))
    grey_digit = grey_digit * (scale_d[:, None] if digits.ndim == 4 else scale_d)
    grey_item = warp(items, jnp.zeros_like(z[:, 2]), shift_px(z[:, 2]), FASHION_SCALE) * intensity(z[:, 3])[:, None, None]
    colours = jnp.asarray(COLOURS[:n_colours])  # (K, 3)
    if digits.ndim == 3:
        grey_digit = grey_digit[:, None]
    digit_rgb = grey_digit[..., None] * colours[None, :, None, None, :]
    item = grey_item[:, None, :, :, None]
    return downsample(digit_rgb, image_size), downsample(item, image_size)
