"""Contrastive baselines: ``mcl`` (Daunhawer et al. 2023) and ``multiview`` (Yao et al. 2024).

Both are encoders only (no decoder, no prior) trained with the symmetric InfoNCE loss

    L(a, b) = 1/2 [CE(sim(a_i, b_j) / tau, i = j) + CE(sim(b_i, a_j) / tau, i = j)]

between the representations of two *views* of the same sample, with the other samples of
the batch as negatives. ``sim`` is the negative squared Euclidean distance (the default of
Daunhawer et al.'s numerical simulations, ``LpSimCLRLoss(p=2, tau=1)``: unnormalised
representations) or the cosine similarity; ``tau`` is fixed or learned (log-parameterised).

Every view (one measurement of one modality) has its own encoder, ``FeatureEncoder`` (the
same trunk the VAE methods use) plus a linear head with ``shared_dim + d_m`` outputs: the
first ``shared_dim`` entries represent the shared latent ``s``, the rest the block ``z_m``.
``encode`` returns ``[s, z_1, ..., z_M]`` laid out as ``layout.block_slices``.

``mcl``: one encoder per modality on the *first* measurement of each modality (as ``mmcrl``;
Daunhawer et al. have one mechanism per modality). For every pair of modalities, one InfoNCE
term on the ``z_m`` parts and, when ``shared_dim > 0``, a separate one on the ``s`` parts, so
that the ``s`` block has exactly ``shared_dim`` dimensions in which to capture what all
modalities share (von Kuegelgen et al. 2021's encoder with output size = content size).

``multiview``: every measurement of every modality is a view with its own encoder. Views of
the same modality share ``(s, z_m)``: one InfoNCE term per pair on the whole vector. Views of
different modalities share only ``s``: one term per pair on the ``s`` parts when
``shared_dim > 0``. A modality with a single measurement has no second view of its ``z_m``;
its ``z_m`` part is then contrasted with the other modalities' ``z`` parts (the ``mcl``
term; a documented departure so that its block is trained at all). The representation of a
block is the mean of its views' outputs (``s``: the mean over all views).

Contrasted ``z`` parts of different modalities must have the same size (true of every
preset); otherwise the builder raises a ``ValueError`` naming ``model.latent_dims``.

Config fields (read with defaults, so older configs work): ``model.temperature`` (1.0),
``model.learn_temperature`` (False), ``model.similarity`` ("l2" or "cosine").
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crl_jax.methods.base import Method
from crl_jax.models import networks, vae

SIMILARITIES = ("l2", "cosine")


def info_nce(a: jnp.ndarray, b: jnp.ndarray, mask: jnp.ndarray, temperature,
             similarity: str = "l2") -> jnp.ndarray:
    """Symmetric InfoNCE between rows of ``a`` and ``b`` (B, P) on the coordinates ``mask``.

    Row ``i`` of ``a`` and row ``i`` of ``b`` are the positive pair, the other rows of the
    other array are negatives. ``mask`` (P,) is a 0/1 vector selecting the compared parts.
    """
    a, b = a * mask, b * mask
    if similarity == "l2":
        sq = (jnp.sum(a**2, -1)[:, None] + jnp.sum(b**2, -1)[None, :] - 2.0 * a @ b.T)
        logits = -jnp.maximum(sq, 0.0) / temperature
    elif similarity == "cosine":
        an = a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + 1e-8)
        bn = b / (jnp.linalg.norm(b, axis=-1, keepdims=True) + 1e-8)
        logits = an @ bn.T / temperature
    else:
        raise ValueError(f"model.similarity must be one of {SIMILARITIES}, got {similarity!r}")
    diag = jnp.diagonal(logits)
    a_to_b = jnp.mean(jax.nn.logsumexp(logits, axis=1) - diag)
    b_to_a = jnp.mean(jax.nn.logsumexp(logits, axis=0) - diag)
    return 0.5 * (a_to_b + b_to_a)


class RepresentationEncoder(nn.Module):
    """One view x -> representation (shared part first), via the VAEs' ``FeatureEncoder``."""

    kind: str
    hidden: Sequence[int]
    dim: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        features = networks.FeatureEncoder(self.kind, tuple(self.hidden))(x)
        return networks.Dense(self.dim)(features)


class ViewEncoders(nn.Module):
    """One encoder per measurement of each modality; returns (B, K_m, shared + d_m) each."""

    layout: vae.ModelLayout
    kind: str = "mlp"
    hidden: Sequence[int] = (128, 128)

    @nn.compact
    def __call__(self, xs):
        lay = self.layout
        if len(xs) != len(lay.names):
            raise ValueError(f"expected {len(lay.names)} modalities {lay.names}, got {len(xs)}")
        outs = []
        for name, x, k, shape, d in zip(lay.names, xs, lay.n_measurements, lay.obs_shapes,
                                        lay.latent_dims):
            chex.assert_shape(x, (None, k) + tuple(shape),
                              custom_message=f"modality {name!r}: (batch, K, *obs_shape)")
            enc = networks.stacked(RepresentationEncoder)(
                self.kind, tuple(self.hidden), lay.shared_dim + d, name=f"encoder_{name}")
            outs.append(enc(x))
        return outs


@dataclasses.dataclass(frozen=True)
class ContrastiveMethod(Method):
    """Encoders trained by InfoNCE over a static list of (view i, view j, compared parts)."""

    network: Any = None
    pairs: tuple = ()                 # ((view_i, view_j, part), ...), part "s" | "z" | "sz"
    first_measurement_only: bool = False
    temperature: float = 1.0
    learn_temperature: bool = False
    similarity: str = "l2"

    # ------------------------------------------------------------------ views
    def prepare(self, xs):
        if self.first_measurement_only:
            return tuple(x[:, :1] for x in xs)
        return tuple(xs)

    @property
    def _width(self) -> int:
        return self.layout.shared_dim + max(self.layout.latent_dims)

    def _views(self, params, xs) -> jnp.ndarray:
        """All views' representations zero-padded to a common width: (V, B, width)."""
        outs = self.network.apply({"params": params["encoders"]}, self.prepare(xs))
        width = self._width
        views = []
        for out in outs:
            padded = jnp.pad(out, ((0, 0), (0, 0), (0, width - out.shape[-1])))
            views.append(jnp.moveaxis(padded, 1, 0))
        return jnp.concatenate(views, axis=0)

    def _pair_arrays(self):
        s = self.layout.shared_dim
        width = self._width
        masks = {"s": np.arange(width) < s, "z": np.arange(width) >= s,
                 "sz": np.ones(width, bool)}
        i = np.array([p[0] for p in self.pairs], np.int32)
        j = np.array([p[1] for p in self.pairs], np.int32)
        m = np.stack([masks[p[2]] for p in self.pairs]).astype(np.float32)
        return i, j, m

    # ------------------------------------------------------------------ Method API
    def init(self, key, xs):
        params = {"encoders": self.network.init(key, self.prepare(xs))["params"]}
        if self.learn_temperature:
            params["log_temperature"] = jnp.asarray(np.log(self.temperature), jnp.float32)
        return params

    def _tau(self, params):
        if self.learn_temperature:
            return jnp.exp(params["log_temperature"])
        return self.temperature

    def loss(self, params, xs, key):
        del key  # deterministic objective
        views = self._views(params, xs)
        i, j, m = self._pair_arrays()
        tau = self._tau(params)
        per_pair = jax.vmap(lambda a, b, mask: info_nce(a, b, mask, tau, self.similarity))(
            views[i], views[j], jnp.asarray(m))
        loss = jnp.mean(per_pair)
        return loss, {"loss": loss, "infonce": loss, "temperature": jnp.asarray(tau)}

    def encode(self, params, xs, true_z=None):
        outs = self.network.apply({"params": params["encoders"]}, self.prepare(xs))
        s = self.layout.shared_dim
        blocks = [jnp.mean(out[:, :, s:], axis=1) for out in outs]
        if s:
            shared = jnp.mean(jnp.concatenate([out[:, :, :s] for out in outs], axis=1), axis=1)
            blocks.insert(0, shared)
        return jnp.concatenate(blocks, axis=-1)


# ---------------------------------------------------------------------- pair lists
def _view_index(n_measurements: Sequence[int]) -> list[tuple[int, int]]:
    """(modality, measurement) of each view, in the order ``_views`` stacks them."""
    return [(m, k) for m, kk in enumerate(n_measurements) for k in range(kk)]


def mcl_pairs(n_modalities: int, shared_dim: int) -> tuple:
    """One view per modality; per modality pair a ``z`` term and (shared_dim > 0) an ``s`` term."""
    pairs = []
    for a, b in itertools.combinations(range(n_modalities), 2):
        pairs.append((a, b, "z"))
        if shared_dim:
            pairs.append((a, b, "s"))
    return tuple(pairs)


def multiview_pairs(n_measurements: Sequence[int], shared_dim: int) -> tuple:
    """Pairs of views that share content (see the module docstring)."""
    views = _view_index(n_measurements)
    pairs = []
    for (va, (ma, _)), (vb, (mb, _)) in itertools.combinations(enumerate(views), 2):
        if ma == mb:
            pairs.append((va, vb, "sz"))
            continue
        if shared_dim:
            pairs.append((va, vb, "s"))
        if n_measurements[ma] == 1 or n_measurements[mb] == 1:
            pairs.append((va, vb, "z"))
    return tuple(pairs)


def build_contrastive_method(name: str, data_layout: vae.ModelLayout, config) -> ContrastiveMethod:
    m = config.model
    similarity = str(m.get("similarity", "l2"))
    if similarity not in SIMILARITIES:
        raise ValueError(f"config.model.similarity: {similarity!r} is not one of {SIMILARITIES}")
    temperature = float(m.get("temperature", 1.0))
    if not temperature > 0:
        raise ValueError(f"config.model.temperature must be > 0, got {temperature}")
    layout = data_layout
    if name == "mcl":
        layout = dataclasses.replace(data_layout, n_measurements=(1,) * len(data_layout.names))
        pairs = mcl_pairs(len(layout.names), layout.shared_dim)
    elif name == "multiview":
        pairs = multiview_pairs(layout.n_measurements, layout.shared_dim)
    else:
        raise ValueError(f"build_contrastive_method: unknown contrastive method {name!r}")
    contrasted = {tuple(sorted((a, b))) for a, b, part in pairs if part == "z"}
    views = _view_index(layout.n_measurements)
    for a, b in contrasted:
        da, db = layout.latent_dims[views[a][0]], layout.latent_dims[views[b][0]]
        if da != db:
            raise ValueError(
                f"config.model.latent_dims: {name} contrasts the blocks of modalities "
                f"{layout.names[views[a][0]]!r} and {layout.names[views[b][0]]!r}, which need "
                f"the same size (got {da} and {db}); give equal latent_dims.")
    if not pairs:
        raise ValueError(
            f"{name}: no pair of views shares content (one modality with one measurement and "
            f"no shared latent); contrastive learning has nothing to learn from. Use more "
            f"measurements (data.n_measurements) or modalities.")
    network = ViewEncoders(layout=layout, kind=m.encoder, hidden=tuple(int(h) for h in m.hidden))
    return ContrastiveMethod(name=name, layout=layout, network=network, pairs=pairs,
                             first_measurement_only=name == "mcl", temperature=temperature,
                             learn_temperature=bool(m.get("learn_temperature", False)),
                             similarity=similarity)
