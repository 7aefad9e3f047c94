"""Minibatches produced on device (no host round trip), one array per modality (S, B, K, *obs).

``BatchSource.stacked(first, n)``: the batches of ``n`` consecutive steps in one call, stacked
on a leading axis (``(n, S, B, K_m, *obs)``), for ``train.steps_per_call``.

``BatchSource.from_process``: with ``data.train_size == 0`` every step draws fresh samples
from the generative process; with ``train_size > 0`` a fixed training set is drawn once.
``BatchSource.from_arrays``: a fixed training set given as arrays (real data). The batch of
step ``t`` is a pure function of ``(train.seed, t)``, so a resumed run sees the same batches
as an uninterrupted one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

_TRAIN_SET_SALT = 0x7A11
_BATCH_SALT = 0xBA7C


class BatchSource:
    """``source(step) -> tuple of (S, B, K_m, *obs) arrays`` sharded by ``sharding`` (a
    NamedSharding of the batch axis, axis 1)."""

    def __init__(self, make, train_set, train_cfg, sharding):
        self.num_seeds = int(train_cfg.num_seeds)
        self.batch_size = int(train_cfg.batch_size)
        self.prefetch_steps = int(train_cfg.get("prefetch_steps", 8))
        if self.prefetch_steps < 1:
            raise ValueError(f"train.prefetch_steps={self.prefetch_steps} must be >= 1 (the "
                             "number of steps' batches drawn per sampler call; 1 = one per step).")
        self.train_set = train_set
        self._key = jax.random.fold_in(jax.random.PRNGKey(int(train_cfg.seed)), _BATCH_SALT)
        s, b, p = self.num_seeds, self.batch_size, self.prefetch_steps

        def make_split(key, step, data):
            # The step's key is derived inside the jitted function: an eager fold_in is a
            # separate dispatch.
            key = jax.random.fold_in(key, step)
            return tuple(x.reshape((s, b) + x.shape[1:]) for x in make(key, s * b, data))

        def make_stacked(key, first, data, n):
            # The batches of steps first .. first + n - 1 in one call (vmap over the step):
            # the sampler is many small operations, so one call per step cost ~12 % of a
            # numerical_case2 step at batch 256; n steps per call amortise it. Each batch is
            # still the one of its own step key, so batches do not depend on n.
            steps = first + jnp.arange(n, dtype=jnp.uint32)
            return jax.vmap(lambda st: make_split(key, st, data))(steps)

        def make_chunk(key, first, data):
            out = make_stacked(key, first, data, p)
            return tuple(tuple(x[i] for x in out) for i in range(p))

        self._make = jax.jit(make_chunk, out_shardings=sharding)
        stacked_sharding = NamedSharding(sharding.mesh, P(None, *sharding.spec))
        self._make_stacked = jax.jit(make_stacked, static_argnums=3,
                                     out_shardings=stacked_sharding)
        self._chunk_first = None
        self._chunk = ()

    @classmethod
    def from_process(cls, process, data_cfg, train_cfg, sharding) -> "BatchSource":
        train_size = int(data_cfg.train_size)
        if train_size == 0:
            return cls(lambda key, n, _: process.sample(key, n).x, (), train_cfg, sharding)
        key = jax.random.fold_in(jax.random.PRNGKey(int(train_cfg.seed)), _TRAIN_SET_SALT)
        return cls.from_arrays(process.sample(key, train_size).x, train_cfg, sharding)

    @classmethod
    def from_arrays(cls, xs, train_cfg, sharding) -> "BatchSource":
        xs = tuple(jnp.asarray(x) for x in xs)
        n = xs[0].shape[0]
        if any(x.shape[0] != n for x in xs):
            raise ValueError(f"training arrays disagree on the number of rows: "
                             f"{[x.shape[0] for x in xs]}")

        def gather(key, size, data):
            idx = jax.random.randint(key, (size,), 0, n)
            return tuple(jnp.take(x, idx, axis=0) for x in data)

        return cls(gather, xs, train_cfg, sharding)

    def __call__(self, step: int):
        step = int(step)
        first = step - step % self.prefetch_steps
        if first != self._chunk_first:
            self._chunk = self._make(self._key, np.uint32(first), self.train_set)
            self._chunk_first = first
        return self._chunk[step - first]

    def stacked(self, first: int, n: int):
        """The batches of steps ``first .. first + n - 1``, each ``source(step)``, stacked:
        a tuple of ``(n, S, B, K_m, *obs)`` arrays (batch axis 2 sharded). One sampler call
        for the n steps of one ``train.steps_per_call`` dispatch, handed to the scan as it is
        (``train.jit_train_steps``), instead of n arrays stacked again inside the call."""
        return self._make_stacked(self._key, np.uint32(int(first)), self.train_set, int(n))
