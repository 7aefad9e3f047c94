"""The PersonaX multimodal, multi-measurement VAE with a learned causal prior."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crl_jax.models import causal_prior as cp
from crl_jax.models import networks

FUSIONS = ("poe", "mean")
PRIORS = ("causal", "isotropic")


@dataclasses.dataclass(frozen=True)
class ModelLayout:
    """Static shapes of the data the model sees (hashable, so it can be a module field)."""

    names: tuple[str, ...]
    obs_shapes: tuple[tuple[int, ...], ...]   # per-measurement observation shape per modality
    n_measurements: tuple[int, ...]           # K_m
    latent_dims: tuple[int, ...]              # d_m of the model
    eta_dims: tuple[int, ...]                 # e_m of the model
    shared_dim: int = 0

    def __post_init__(self):
        m = len(self.names)
        for field in ("obs_shapes", "n_measurements", "latent_dims", "eta_dims"):
            if len(getattr(self, field)) != m:
                raise ValueError(f"ModelLayout.{field} has {len(getattr(self, field))} entries "
                                 f"but there are {m} modalities {self.names}.")
        if any(d <= 0 for d in self.latent_dims) or any(k <= 0 for k in self.n_measurements):
            raise ValueError(f"latent dims {self.latent_dims} and measurement counts "
                             f"{self.n_measurements} must all be positive.")
        if any(e < 0 for e in self.eta_dims) or self.shared_dim < 0:
            raise ValueError("eta dims and shared_dim must be >= 0.")

    @property
    def latent_dim(self) -> int:
        return self.shared_dim + sum(self.latent_dims)

    @property
    def block_slices(self) -> dict[str, slice]:
        """Blocks of the model latent ``[s, z_1, ..., z_M]``."""
        out, start = {}, 0
        if self.shared_dim:
            out["shared"] = slice(0, self.shared_dim)
            start = self.shared_dim
        for name, d in zip(self.names, self.latent_dims):
            out[name] = slice(start, start + d)
            start += d
        return out

    def allowed_mask(self) -> np.ndarray:
        return cp.allowed_edges_mask(self.shared_dim, self.latent_dims)

    def cross_mask(self) -> np.ndarray:
        return cp.cross_modal_mask(self.shared_dim, self.latent_dims)


def fuse(means: jnp.ndarray, logvars: jnp.ndarray, how: str):
    """Fuse K Gaussian posteriors (axis 1) into one: product of experts or mean."""
    if how == "poe":
        precision = jnp.exp(-logvars)
        total = jnp.sum(precision, axis=1)
        mean = jnp.sum(precision * means, axis=1) / total
        return mean, -jnp.log(total)
    if how == "mean":
        k = means.shape[1]
        mean = jnp.mean(means, axis=1)
        # Variance of the average of K independent Gaussians.
        return mean, jax.nn.logsumexp(logvars, axis=1) - 2.0 * jnp.log(k)
    raise ValueError(f"model.fusion must be one of {FUSIONS}, got {how!r}")


class PersonaXVAE(nn.Module):
    """Encoders per measurement, fused modality posteriors, decoders per measurement, prior.

    ``__call__(xs)`` takes a tuple with one array per modality, shaped (B, K_m, *obs_shape),
    and returns a dict of posterior parameters, reparameterised samples, reconstructions and
    the prior log-density of the sample. Randomness comes from the ``"sample"`` rng.
    """

    layout: ModelLayout
    encoder: str = "mlp"
    hidden: Sequence[int] = (128, 128)
    fusion: str = "poe"
    prior: str = "causal"
    prior_hidden: int = 16
    flow_units: int = 0

    def setup(self):
        lay = self.layout
        self.encoders = [
            networks.stacked(networks.MeasurementEncoder)(
                self.encoder, tuple(self.hidden), d, e, name=f"encoder_{n}")
            for n, d, e in zip(lay.names, lay.latent_dims, lay.eta_dims)]
        self.decoders = [
            networks.stacked(networks.MeasurementDecoder, in_axes=1)(
                self.encoder, tuple(self.hidden), tuple(shape), name=f"decoder_{n}")
            for n, shape in zip(lay.names, lay.obs_shapes)]
        if lay.shared_dim:
            self.shared_trunk = networks.MLP(tuple(self.hidden))
            self.shared_head = networks.GaussianHead(lay.shared_dim)
        if self.prior == "causal":
            mask = tuple(tuple(bool(v) for v in row) for row in lay.allowed_mask())
            self.causal_prior = cp.CausalPrior(mask, hidden=self.prior_hidden,
                                               flow_units=self.flow_units)
        elif self.prior != "isotropic":
            raise ValueError(f"model.prior must be one of {PRIORS}, got {self.prior!r}")

    def _check(self, xs):
        lay = self.layout
        if len(xs) != len(lay.names):
            raise ValueError(f"expected {len(lay.names)} modalities {lay.names}, got {len(xs)}")
        for name, x, k, shape in zip(lay.names, xs, lay.n_measurements, lay.obs_shapes):
            chex.assert_shape(x, (None, k) + tuple(shape),
                              custom_message=f"modality {name!r}: (batch, K, *obs_shape)")

    def encode(self, xs):
        """Posterior parameters: fused (B, D) mean/logvar of z and per-measurement terms."""
        self._check(xs)
        feats, z_means, z_logvars, per_meas, etas = [], [], [], [], []
        for enc, x in zip(self.encoders, xs):
            h, zm, zl, em, el = enc(x)
            mean, logvar = fuse(zm, zl, self.fusion)
            feats.append(jnp.mean(h, axis=1))
            z_means.append(mean)
            z_logvars.append(logvar)
            per_meas.append(zm)
            etas.append((em, el))
        if self.layout.shared_dim:
            s_mean, s_logvar = self.shared_head(self.shared_trunk(jnp.concatenate(feats, -1)))
            z_means.insert(0, s_mean)
            z_logvars.insert(0, s_logvar)
        return {"z_mean": jnp.concatenate(z_means, -1),
                "z_logvar": jnp.concatenate(z_logvars, -1),
                "measurement_means": per_meas, "eta": etas}

    def log_prior(self, z: jnp.ndarray) -> jnp.ndarray:
        if self.prior == "causal":
            return self.causal_prior(z)
        return jnp.sum(-0.5 * (z**2 + np.log(2 * np.pi)), axis=-1)

    def dependence(self, z: jnp.ndarray) -> jnp.ndarray:
        """Scale-free dependence ``S`` (D, D) of the causal prior's noises on the latents
        over the rows of ``z`` (``causal_prior.dependence``); causal prior only."""
        return self.causal_prior.dependence(z)

    def adjacency(self) -> jnp.ndarray:
        """Learned weighted adjacency over the model latent (zeros for an isotropic prior)."""
        if self.prior == "causal":
            return self.causal_prior.adjacency()
        d = self.layout.latent_dim
        return jnp.zeros((d, d))

    def decode(self, z: jnp.ndarray, etas: Sequence[jnp.ndarray]):
        """Reconstructions, one (B, K_m, *obs_shape) array per modality."""
        slices = self.layout.block_slices
        s = z[:, slices["shared"]] if self.layout.shared_dim else z[:, :0]
        outs = []
        for dec, name, eta, k in zip(self.decoders, self.layout.names, etas,
                                     self.layout.n_measurements):
            zm = jnp.concatenate([s, z[:, slices[name]]], -1)
            code = jnp.concatenate(
                [jnp.broadcast_to(zm[:, None, :], zm.shape[:1] + (k,) + zm.shape[1:]), eta], -1)
            outs.append(dec(code))
        return outs

    def __call__(self, xs):
        post = self.encode(xs)
        key = self.make_rng("sample")
        kz, ke = jax.random.split(key)
        z = post["z_mean"] + jnp.exp(0.5 * post["z_logvar"]) * jax.random.normal(
            kz, post["z_mean"].shape)
        eta_keys = jax.random.split(ke, len(xs))
        etas = [m + jnp.exp(0.5 * lv) * jax.random.normal(k, m.shape)
                for (m, lv), k in zip(post["eta"], eta_keys)]
        post["z"] = z
        post["eta_sample"] = etas
        post["recon"] = self.decode(z, etas)
        post["log_prior"] = self.log_prior(z)
        post["adjacency"] = self.adjacency()
        return post
