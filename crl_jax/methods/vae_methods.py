"""VAE-based methods: ``personax`` (ours) and the VAE baselines that share its code.

- ``personax``: all K measurements per modality, fused posterior, learned causal prior.
- ``mmcrl`` (Sun et al. 2025): the same model with one measurement per modality.
- ``betavae``: isotropic Gaussian prior, no causal module (``loss.beta`` sets beta).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax

from crl_jax import losses
from crl_jax.methods.base import Method
from crl_jax.models import vae


@dataclasses.dataclass(frozen=True)
class VAEMethod(Method):
    model: Any = None
    loss_cfg: Any = None
    first_measurement_only: bool = False
    per_sample_loss: bool = True      # recon, KL and tie are per-sample means; L1 is on W

    def prepare(self, xs):
        if self.first_measurement_only:
            return tuple(x[:, :1] for x in xs)
        return tuple(xs)

    def init(self, key, xs):
        k_params, k_sample = jax.random.split(key)
        return self.model.init({"params": k_params, "sample": k_sample},
                               self.prepare(xs))["params"]

    def loss(self, params, xs, key):
        xs = self.prepare(xs)
        out = self.model.apply({"params": params}, xs, rngs={"sample": key})
        return losses.objective(out, xs, self.layout, self.loss_cfg)

    def encode(self, params, xs, true_z=None):
        return self.model.apply({"params": params}, self.prepare(xs), method="encode")["z_mean"]

    def adjacency(self, params):
        if self.model.prior != "causal":
            return None
        return self.model.apply({"params": params}, method="adjacency")


def build_vae_method(name: str, data_layout: vae.ModelLayout, config) -> VAEMethod:
    m = config.model
    first_only = name == "mmcrl"
    layout = data_layout
    if first_only:
        layout = dataclasses.replace(data_layout,
                                     n_measurements=(1,) * len(data_layout.names))
    prior = "isotropic" if name == "betavae" else m.prior
    model = vae.PersonaXVAE(
        layout=layout, encoder=m.encoder, hidden=tuple(int(h) for h in m.hidden),
        fusion=m.fusion, prior=prior, prior_hidden=int(m.prior_hidden),
        flow_units=int(m.flow_units))
    return VAEMethod(name=name, layout=layout, model=model, loss_cfg=config.loss,
                     first_measurement_only=first_only)
