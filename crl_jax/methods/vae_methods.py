"""VAE-based methods: ``personax_vae`` (the paper's one-stage model) and the VAE baselines
that share its code.

- ``personax_vae``: all K measurements per modality, fused posterior, learned causal prior.
- ``mmcrl`` (Sun et al. 2025): the same model with one measurement per modality.
- ``betavae``: isotropic Gaussian prior, no causal module (``loss.beta`` sets beta).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax

import jax.numpy as jnp

from crl_jax import losses
from crl_jax.methods.base import Method
from crl_jax.models import vae


@dataclasses.dataclass(frozen=True)
class VAEMethod(Method):
    model: Any = None
    loss_cfg: Any = None
    first_measurement_only: bool = False
    # recon, KL and tie are per-sample means and the L1 on |W| is parameter-only; the L1 on S
    # is not (S is a batch statistic: a mean of Jacobians times a batch std), so with it on, a
    # step's gradient is not the mean of its chunks' gradients (build_vae sets this)
    per_sample_loss: bool = True

    def prepare(self, xs):
        if self.first_measurement_only:
            return tuple(x[:, :1] for x in xs)
        return tuple(xs)

    def init(self, key, xs):
        k_params, k_sample = jax.random.split(key)
        return self.model.init({"params": k_params, "sample": k_sample},
                               self.prepare(xs))["params"]

    @property
    def dependence_sparsity(self) -> bool:
        """Whether the L1 and the graph use the scale-free dependence S (else |W|)."""
        return (self.model.prior == "causal"
                and self.loss_cfg.get("sparsity", "dependence") == "dependence")

    def loss(self, params, xs, key):
        xs = self.prepare(xs)
        out = self.model.apply({"params": params}, xs, rngs={"sample": key})
        if self.dependence_sparsity:
            rows = int(self.loss_cfg.get("dependence_rows", 128))
            out["dependence"] = self.model.apply({"params": params}, out["z"][:rows],
                                                 method="dependence")
        return losses.objective(out, xs, self.layout, self.loss_cfg)

    @staticmethod
    def _model_params(params):
        return params["model"] if "dependence" in params else params

    def encode(self, params, xs, true_z=None):
        return self.model.apply({"params": self._model_params(params)}, self.prepare(xs),
                                method="encode")["z_mean"]

    def select(self, params, xs):
        """With the dependence sparsity: ``S`` on (up to 2000 of) the validation sample's
        posterior means becomes the graph (seed-stacked params in and out)."""
        if not self.dependence_sparsity:
            return params
        xs = tuple(x[:2000] for x in xs)

        def one(p):
            z = self.encode(p, xs)
            s = self.model.apply({"params": p}, z, method="dependence")
            return {"model": p, "dependence": s * jnp.asarray(self.layout.allowed_mask(),
                                                              s.dtype)}

        return jax.jit(jax.vmap(one))(params)

    def adjacency(self, params):
        if self.model.prior != "causal":
            return None
        if "dependence" in params:
            return params["dependence"]
        return self.model.apply({"params": params}, method="adjacency")


def build_vae_method(name: str, data_layout: vae.ModelLayout, config) -> VAEMethod:
    m = config.model
    first_only = name == "mmcrl"  # the others see every measurement
    layout = data_layout
    if first_only:
        layout = dataclasses.replace(data_layout,
                                     n_measurements=(1,) * len(data_layout.names))
    prior = "isotropic" if name == "betavae" else m.prior
    model = vae.PersonaXVAE(
        layout=layout, encoder=m.encoder, hidden=tuple(int(h) for h in m.hidden),
        fusion=m.fusion, prior=prior, prior_hidden=int(m.prior_hidden),
        flow_units=int(m.flow_units))
    method = VAEMethod(name=name, layout=layout, model=model, loss_cfg=config.loss,
                       first_measurement_only=first_only)
    penalised = (float(config.loss.get("lambda_sparse", 0.0)) > 0
                 or float(config.loss.get("lambda_sparse_within", 0.0)) > 0)
    return dataclasses.replace(method,
                               per_sample_loss=not (method.dependence_sparsity and penalised))
