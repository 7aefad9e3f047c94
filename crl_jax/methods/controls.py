"""Controls that bracket every method's numbers (none is trained by gradient).

- ``oracle``: the true latents through a random per-dimension strictly monotone map, with a
  random permutation and sign flips inside each block (fixed by the seed). A monotone map
  leaves rank correlations unchanged, so the Spearman MCC is 1 by construction, and the map
  is invertible per block, so the block R^2 is at the regression's ceiling (~1). The map is
  mildly nonlinear, so the Pearson MCC is just below 1. This is the metric's ceiling: the
  best any encoder could score on this pipeline. (A map that mixes dimensions inside a block,
  like ``metrics.random_invertible_map``, would keep R^2 at the ceiling but lower MCC.)
- ``random_encoder``: the ``personax`` model at initialisation (its encoder and its
  initial graph), i.e. what structure an untrained network already exposes.
- ``pca`` / ``fastica`` (scikit-learn): one linear map per block, fitted on the flattened
  observations of all measurements of that modality (``shared``: of all modalities), with
  as many components as the block has latent dimensions; fitted on the evaluation's ``fit``
  split. PCA is deterministic (all seeds equal); FastICA's seed i uses
  ``random_state = train.seed * 1000 + i``.
"""
from __future__ import annotations

import dataclasses
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np

from crl_jax.methods.base import Method
from crl_jax.methods.vae_methods import build_vae_method
from crl_jax.models import vae


# ---------------------------------------------------------------------- oracle
def monotone_map(z: jnp.ndarray, params: dict) -> jnp.ndarray:
    """Per-dimension ``a z + b tanh(c z + d)`` (a, b, c > 0: strictly increasing), then the
    signed permutation ``z @ perm.T`` (perm block-diagonal)."""
    y = params["a"] * z + params["b"] * jnp.tanh(params["c"] * z + params["d"])
    return y @ params["perm"].T


@dataclasses.dataclass(frozen=True)
class OracleMethod(Method):
    trainable: bool = False

    def init(self, key, xs):
        d = self.layout.latent_dim
        ka, kb, kc, kd, kp, ks = jax.random.split(key, 6)
        perm = jnp.zeros((d, d))
        for sl in self.layout.block_slices.values():
            idx = jnp.arange(sl.start, sl.stop)
            perm = perm.at[idx, jax.random.permutation(jax.random.fold_in(kp, sl.start), idx)
                           ].set(1.0)
        signs = jnp.where(jax.random.bernoulli(ks, 0.5, (d,)), 1.0, -1.0)
        return {"a": jax.random.uniform(ka, (d,), minval=0.5, maxval=1.5),
                "b": jax.random.uniform(kb, (d,), minval=0.2, maxval=1.0),
                "c": jax.random.uniform(kc, (d,), minval=0.5, maxval=2.0),
                "d": jax.random.normal(kd, (d,)) * 0.5,
                "perm": perm * signs[:, None]}

    def encode(self, params, xs, true_z):
        if true_z is None:
            raise ValueError("oracle: encode needs the true latents (true_z).")
        chex.assert_shape(true_z, (None, self.layout.latent_dim),
                          custom_message="oracle needs model.latent_dims = () (the true sizes)")
        return monotone_map(true_z, params)


def build_oracle(name: str, data_layout: vae.ModelLayout, config) -> OracleMethod:
    return OracleMethod(name=name, layout=data_layout)


# ---------------------------------------------------------------------- random encoder
def build_random_encoder(name: str, data_layout: vae.ModelLayout, config):
    """The ``personax_vae`` model at initialisation, never trained."""
    method = build_vae_method("personax_vae", data_layout, config)
    return dataclasses.replace(method, name=name, trainable=False)


# ---------------------------------------------------------------------- PCA / FastICA
@dataclasses.dataclass(frozen=True)
class LinearProjectionMethod(Method):
    """Per block ``(x_block - mean) @ proj``; ``mean``/``proj`` fitted by scikit-learn."""

    trainable: bool = False
    algorithm: str = "pca"
    seed: int = 0

    def _inputs(self, xs):
        """{block: (n, F) array} (numpy or jax) of what each block's map reads."""
        flat = [x.reshape(x.shape[0], -1) for x in xs]
        xp = jnp if isinstance(flat[0], jax.Array) else np
        out = {"shared": xp.concatenate(flat, -1)} if self.layout.shared_dim else {}
        out.update(zip(self.layout.names, flat))
        return out

    def _feature_dims(self) -> dict[str, int]:
        dims = [int(k * np.prod(s)) for k, s in zip(self.layout.n_measurements,
                                                    self.layout.obs_shapes)]
        out = {"shared": sum(dims)} if self.layout.shared_dim else {}
        out.update(zip(self.layout.names, dims))
        return out

    def init(self, key, xs):
        slices = self.layout.block_slices
        return {b: {"mean": jnp.zeros((f,)), "proj": jnp.zeros((f, slices[b].stop - slices[b].start))}
                for b, f in self._feature_dims().items()}

    def _fit_block(self, x: np.ndarray, n_components: int, seed_index: int):
        from sklearn.decomposition import PCA, FastICA
        if self.algorithm == "pca":
            est = PCA(n_components=n_components, svd_solver="full").fit(x)
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*did not converge.*")
                est = FastICA(n_components=n_components, whiten="unit-variance",
                              max_iter=1000, random_state=self.seed * 1000 + seed_index).fit(x)
        return est.mean_.astype(np.float32), est.components_.T.astype(np.float32)

    def fit(self, params, xs, true_z):
        n_seeds = int(np.asarray(jax.tree_util.tree_leaves(params)[0]).shape[0])
        inputs = {b: np.asarray(v, np.float64) for b, v in self._inputs(tuple(xs)).items()}
        slices = self.layout.block_slices
        out = {}
        for b, x in inputs.items():
            n_comp = slices[b].stop - slices[b].start
            if not np.all(np.isfinite(x)):
                raise ValueError(f"{self.algorithm}: the fit sample of block {b!r} has NaN/Inf")
            if n_comp > min(x.shape):
                raise ValueError(f"{self.algorithm}: block {b!r} asks for {n_comp} components "
                                 f"from {x.shape[1]} features and {x.shape[0]} samples")
            if self.algorithm == "pca":   # deterministic: one fit serves every seed
                fits = [self._fit_block(x, n_comp, 0)] * n_seeds
            else:
                fits = [self._fit_block(x, n_comp, i) for i in range(n_seeds)]
            out[b] = {"mean": np.stack([f[0] for f in fits]),
                      "proj": np.stack([f[1] for f in fits])}
        return out

    def encode(self, params, xs, true_z=None):
        inputs = self._inputs(tuple(jnp.asarray(x) for x in xs))
        order = (["shared"] if self.layout.shared_dim else []) + list(self.layout.names)
        return jnp.concatenate([(inputs[b] - params[b]["mean"]) @ params[b]["proj"]
                                for b in order], axis=-1)


def build_linear_projection(name: str, data_layout: vae.ModelLayout, config):
    if name not in ("pca", "fastica"):
        raise ValueError(f"build_linear_projection: unknown method {name!r}")
    return LinearProjectionMethod(name=name, layout=data_layout, algorithm=name,
                                  seed=int(config.train.seed))
