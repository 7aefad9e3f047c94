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

    # One compiled program for all replicas (op-by-op init would dispatch every layer).
    return jax.jit(jax.vmap(init_one))(jnp.arange(num_seeds))


def make_train_step(method) -> Callable[[TrainState, Any], tuple]:
    """The per-replica step of ``method.loss``, vmapped over the seed axis (jit it outside)."""

    def single(state: TrainState, xs):
        key = jax.random.fold_in(state.rng, state.step)
        loss_fn = lambda params: method.loss(params, xs, key)  # noqa: E731
        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        terms["grad_norm"] = optax.global_norm(grads)
        return state.apply_gradients(grads=grads), terms

    def train_step(state: TrainState, batch):
        return jax.vmap(single)(state, tuple(batch))

    return train_step
