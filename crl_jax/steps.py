"""Optimiser, train state and the jitted ``train_step(state, batch) -> (state, metrics)``.

The state carries a leading seed axis: ``num_seeds`` independent replicas are initialised
and trained together with ``vmap`` (one program, one dispatch per step for all seeds).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax TrainState plus the replica's base PRNG key (raw uint32, checkpointable)."""

    rng: jax.Array = flax.struct.field(default=None)


def make_optimizer(train_cfg) -> optax.GradientTransformation:
    lr = train_cfg.learning_rate
    if train_cfg.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, lr, max(int(train_cfg.warmup_steps), 1), max(int(train_cfg.steps), 2),
            end_value=0.05 * lr)
    elif train_cfg.schedule == "constant":
        schedule = optax.join_schedules(
            [optax.linear_schedule(0.0, lr, max(int(train_cfg.warmup_steps), 1)),
             optax.constant_schedule(lr)], [max(int(train_cfg.warmup_steps), 1)])
    else:
        raise ValueError(f"train.schedule must be 'cosine' or 'constant', "
                         f"got {train_cfg.schedule!r}")
    return optax.chain(optax.clip_by_global_norm(train_cfg.grad_clip), optax.adam(schedule))


def create_train_states(method, example_xs, tx, seed: int, num_seeds: int) -> TrainState:
    """``num_seeds`` replicas stacked on a leading axis; replica i folds ``i`` into ``seed``."""
    def init_one(index):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), index)
        k_params, k_rng = jax.random.split(key)
        params = method.init(k_params, example_xs)
        return TrainState.create(apply_fn=None, params=params, tx=tx, rng=k_rng)

    # One compiled program for all replicas (op-by-op init would dispatch every layer). A
    # loop over the replicas rather than vmap: the same values, bit for bit, but XLA:CPU
    # compiles the loop's one replica in about 60 % of the time it takes for the vmapped
    # replicas (each parameter's threefry is a while loop; compiling init was a third of a
    # smoke run's compile time).
    return jax.jit(lambda indices: jax.lax.map(init_one, indices))(jnp.arange(num_seeds))


def num_microbatches(train_cfg) -> int:
    """Chunks per step for an explicit ``microbatch_size`` (0: one pass -> 1)."""
    micro = int(train_cfg.get("microbatch_size", 0))
    if micro < 0:
        raise ValueError("train.microbatch_size = -1 (auto) is resolved by "
                         "crl_jax.host.autotune.resolve_microbatches, which needs the "
                         "compiled step")
    return 1 if micro == 0 else int(train_cfg.batch_size) // micro


def split_microbatches(xs, n: int):
    """``(B, ...)`` arrays -> ``(n, B / n, ...)``; chunk ``j`` holds rows ``j, j + n, ...``.

    Strided rather than contiguous: the batch axis is sharded over devices in contiguous
    blocks, and a strided chunk takes an equal share of every device's block, so each chunk
    stays spread over all devices (no data movement).
    """
    def split(x):
        b = x.shape[0]
        return jnp.moveaxis(x.reshape((b // n, n) + x.shape[1:]), 1, 0)

    return tuple(split(x) for x in xs)


def make_train_step(method, microbatches: int = 1) -> Callable[[TrainState, Any], tuple]:
    """The per-replica step of ``method.loss``, vmapped over the seed axis (jit it outside).

    ``microbatches > 1``: gradient accumulation. The batch is split into that many equal
    chunks (:func:`split_microbatches`), a ``lax.scan`` computes each chunk's loss and
    gradient and the step applies their mean. For a loss that is a per-sample mean plus
    parameter-only terms (``method.per_sample_loss``) that mean is the full batch's
    gradient, with chunk ``i``'s sampling noise drawn from ``fold_in(key, i)``. Chunks keep a
    large step's temporaries small (on CPU, those the C allocator does not reuse are
    page-faulted afresh every step); on an accelerator they bound the activation memory.
    """
    if microbatches < 1:
        raise ValueError(f"microbatches must be >= 1, got {microbatches}")
    if microbatches > 1 and not getattr(method, "per_sample_loss", False):
        raise ValueError(
            f"method {method.name!r} compares samples across the batch (its loss is not a "
            f"per-sample mean), so splitting the batch would change the objective; set "
            f"train.microbatch_size = 0 for it.")
    grad_fn = jax.value_and_grad(method.loss, has_aux=True)

    def grads_and_terms(params, xs, key):
        if microbatches == 1:
            (_, terms), grads = grad_fn(params, xs, key)
            return grads, terms

        def chunk(total, inputs):
            index, xs_chunk = inputs
            (_, terms), grads = grad_fn(params, xs_chunk, jax.random.fold_in(key, index))
            return jax.tree.map(jnp.add, total, grads), terms

        zeros = jax.tree.map(jnp.zeros_like, params)
        total, terms = jax.lax.scan(
            chunk, zeros, (jnp.arange(microbatches), split_microbatches(xs, microbatches)))
        grads = jax.tree.map(lambda g: g / microbatches, total)
        return grads, jax.tree.map(lambda t: jnp.mean(t, axis=0), terms)

    def single(state: TrainState, xs):
        key = jax.random.fold_in(state.rng, state.step)
        grads, terms = grads_and_terms(state.params, xs, key)
        terms["grad_norm"] = optax.global_norm(grads)
        return state.apply_gradients(grads=grads), terms

    def train_step(state: TrainState, batch):
        return jax.vmap(single)(state, tuple(batch))

    return train_step
