"""Minibatches from the generative process, produced on device (no host round trip).

``train_size == 0``: every step draws fresh samples from the process. ``train_size > 0``:
a fixed training set is drawn once and each step gathers a random minibatch from it. The
batch of step ``t`` is a pure function of ``(train.seed, t)``, so a resumed run sees the
same batches as an uninterrupted one. Shapes: one array per modality, (S, B, K, *obs).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_TRAIN_SET_SALT = 0x7A11
_BATCH_SALT = 0xBA7C


class BatchSource:
    def __init__(self, process, data_cfg, train_cfg, sharding):
        self.num_seeds = int(train_cfg.num_seeds)
        self.batch_size = int(train_cfg.batch_size)
        self.train_size = int(data_cfg.train_size)
        self._key = jax.random.fold_in(jax.random.PRNGKey(int(train_cfg.seed)), _BATCH_SALT)
        s, b = self.num_seeds, self.batch_size

        def split_seeds(xs):
            return tuple(x.reshape((s, b) + x.shape[1:]) for x in xs)

        self.train_set = ()
        if self.train_size == 0:
            def make(key, _unused):
                return split_seeds(process.sample(key, s * b).x)
        else:
            train_key = jax.random.fold_in(
                jax.random.PRNGKey(int(train_cfg.seed)), _TRAIN_SET_SALT)
            self.train_set = process.sample(train_key, self.train_size).x

            def make(key, train_set):
                idx = jax.random.randint(key, (s * b,), 0, self.train_size)
                return split_seeds(tuple(jnp.take(x, idx, axis=0) for x in train_set))

        self._make = jax.jit(make, out_shardings=sharding)

    def __call__(self, step: int):
        return self._make(jax.random.fold_in(self._key, step), self.train_set)
