"""What the trainer and the evaluator need from a method (ours, a baseline or a control).

A method is a frozen dataclass of pure functions over an explicit parameter pytree, so that
the same jitted, seed-vmapped, data-parallel step and the same held-out evaluation serve
every method:

- ``init(key, xs) -> params``
- ``loss(params, xs, key) -> (scalar, dict of scalar terms)``; used only if ``trainable``
- ``encode(params, xs, true_z) -> (n, latent_dim)`` posterior means / representations.
  ``true_z`` is handed to every encoder; only the ``oracle`` control reads it.
- ``adjacency(params) -> (D, D)`` learned weighted graph over the latent, or ``None``
- ``fit(params, xs, true_z) -> params``: host-side fitting before evaluation for methods
  that are not trained by gradient (PCA, FastICA); the identity for the others.
- ``prepare(xs) -> xs``: what the method sees of a batch (e.g. ``mmcrl`` keeps only the
  first measurement of each modality).
- ``select(params, xs) -> params``: choices made on the validation sample's observations
  (never its latents) before evaluation, e.g. which trained replica to report, or the graph
  read from the validation data; seed-stacked params in and out. The identity by default.
- ``choices(selected_params) -> dict``: what :meth:`select` chose, per seed, for the report
  (``{}`` by default).
- ``optimizer(train_cfg) -> optax transform or None``: a method's own optimiser (``None``:
  the config's, ``steps.make_optimizer``).
"""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    layout: Any                      # the ModelLayout of the data the method sees
    trainable: bool = True
    # The loss is a mean over samples plus parameter-only terms, so the gradient of a batch
    # is the mean of its equal chunks' gradients (train.microbatch_size may split it).
    per_sample_loss: bool = False

    @property
    def latent_blocks(self) -> dict[str, slice]:
        return self.layout.block_slices

    def prepare(self, xs):
        return tuple(xs)

    def init(self, key, xs):
        raise NotImplementedError

    def loss(self, params, xs, key):
        raise NotImplementedError

    def encode(self, params, xs, true_z):
        raise NotImplementedError

    def adjacency(self, params):
        return None

    def fit(self, params, xs, true_z):
        return params

    def select(self, params, xs):
        return params

    def choices(self, params) -> dict:
        return {}

    def optimizer(self, train_cfg):
        return None
