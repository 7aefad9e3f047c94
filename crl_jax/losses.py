"""The PersonaX objective.

    L = recon + beta * KL(q || p_causal) + lambda_sparse * sum(S o cross_mask)
        + lambda_sparse_within * sum(S o within_mask) + lambda_tie * tie

``S`` is the scale-free dependence of the prior's noises on the latents
(``causal_prior.dependence``, on the first ``loss.dependence_rows`` posterior samples of the
batch), so the penalty cannot be escaped by a small adjacency weight followed by large
weights in the noise model. ``loss.sparsity = "weights"`` penalises ``|W|`` instead (the
paper's form, which that escape defeats).

KL is estimated with the reparameterised sample: the entropy of the Gaussian posterior is
analytic, the cross-entropy with the causal prior is ``-log p(z_sample)``. Every term is
differentiable in every parameter that should learn, the adjacency included (through the
prior density and the L1 term).

``lambda_sparse_within`` is an addition to the paper's objective (default 0 keeps the
paper's loss): an L1 on within-modality and shared edges, for users who want a sparser
learned graph inside blocks.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

_LOG_2PI = float(np.log(2.0 * np.pi))


def gaussian_entropy(logvar: jnp.ndarray) -> jnp.ndarray:
    """Entropy of a diagonal Gaussian, summed over the last axis."""
    return 0.5 * jnp.sum(1.0 + _LOG_2PI + logvar, axis=-1)


def kl_standard_normal(mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
    """KL(N(mean, exp(logvar)) || N(0, 1)), summed over all but the batch axis."""
    kl = 0.5 * (jnp.exp(logvar) + mean**2 - 1.0 - logvar)
    return jnp.sum(kl.reshape(kl.shape[0], -1), axis=-1)


def reconstruction(xs, recons, recon_std: float) -> jnp.ndarray:
    """Gaussian negative log-likelihood (up to a constant) per sample, all measurements."""
    total = 0.0
    for x, xr in zip(xs, recons):
        sq = jnp.sum(((x - xr) ** 2).reshape(x.shape[0], -1), axis=-1)
        total = total + 0.5 * sq / recon_std**2
    return total


def tie(measurement_means, fused_means) -> jnp.ndarray:
    """Disagreement of each measurement's posterior mean with the fused one, per sample."""
    total = 0.0
    for per_k, fused in zip(measurement_means, fused_means):
        total = total + jnp.mean(jnp.sum((per_k - fused[:, None, :]) ** 2, axis=-1), axis=-1)
    return total


def objective(out, xs, layout, loss_cfg):
    """Scalar loss and a dict of its terms (batch means), from the model's output dict."""
    recon = reconstruction(xs, out["recon"], loss_cfg.recon_std)
    kl_z = -gaussian_entropy(out["z_logvar"]) - out["log_prior"]
    kl_eta = sum(kl_standard_normal(m, lv) for m, lv in out["eta"])
    slices = layout.block_slices
    fused = [out["z_mean"][:, slices[n]] for n in layout.names]
    tie_term = tie(out["measurement_means"], fused)
    adjacency = out.get("dependence", out["adjacency"])   # S >= 0, or the weights W
    cross = jnp.asarray(layout.cross_mask(), adjacency.dtype)
    within = jnp.asarray(layout.allowed_mask() & ~layout.cross_mask(), adjacency.dtype)
    l1_cross = jnp.sum(jnp.abs(adjacency * cross))
    l1_within = jnp.sum(jnp.abs(adjacency * within))
    kl = jnp.mean(kl_z + kl_eta)
    terms = {
        "recon": jnp.mean(recon),
        "kl": kl,
        "kl_z": jnp.mean(kl_z),
        "kl_eta": jnp.mean(kl_eta),
        "tie": jnp.mean(tie_term),
        "l1_cross": l1_cross,
        "l1_within": l1_within,
    }
    loss = (terms["recon"] + loss_cfg.beta * kl + loss_cfg.lambda_sparse * l1_cross
            + loss_cfg.get("lambda_sparse_within", 0.0) * l1_within
            + loss_cfg.lambda_tie * terms["tie"])
    terms["loss"] = loss
    return loss, terms
