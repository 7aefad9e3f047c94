"""Optimiser, train state and the jitted ``train_step(state, batch) -> (state, metrics)``.

The state carries a leading seed axis: ``num_seeds`` independent replicas are initialised
and trained together with ``vmap`` (one program, one dispatch per step for all seeds).
"""
from __future__ import annotations

import math
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


# Auto microbatching (``train.microbatch_size = -1``, CPU only), measured on the project's
# 2-core CPU with ``host_memory.tune_malloc`` (docs/PERFORMANCE.md, *The auto rule since
# tune_malloc* and *Dispatch*):
# - one pass while the step's XLA temporaries fit AUTO_MICROBATCH_TEMP_MB: with inline CPU
#   dispatch (``host_memory.set_cpu_dispatch``, the default) one pass was the fastest or
#   tied up to 67 MB (8 modalities at batch 1024: 41.7 ms, 2 chunks 44.9) and 1.11x slower
#   than 4 chunks at 133 MB (numerical_case2 at batch 8192); splitting below that only costs
#   (chunks of <= 512 rows run their products on one core). With JAX's asynchronous
#   dispatch the step runs on a worker thread whose arena heap is 64 MiB: a larger buffer
#   is mapped and page-faulted afresh every step, so there the limit is
#   AUTO_MICROBATCH_TEMP_MB_ASYNC (one pass fastest up to 56 MB, chunks from 74 MB);
# - above it, the fewest chunks whose share fits AUTO_MICROBATCH_CHUNK_MB (and at most
#   AUTO_MICROBATCH_CHUNK_SHARE of the limit): a chunked step's own temporaries come out
#   above its share, and chunks of ~70 MB measured 6-7 % slower than chunks of 36-38 MB
#   (batch 8192: 2 / 4 chunks 74.8 / 70.4 ms; 16384: 4 / 8 chunks 148.6 / 138.6 ms);
# - but no chunk's share below AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS times the parameters'
#   bytes: every chunk re-reads the weights and adds its gradient into the accumulator,
#   passes over the parameters that for the 26 MB conv image model cost more than smaller
#   chunks save (batch 64: 1 / 2 / 4 / 8 chunks 178 / 157 / 152 / 160 ms; 256: 1 / 4 / 8 /
#   16 / 32 chunks 770 / 579 / 529 / 553 / 621 ms; 1024: 8 / 16 / 32 / 64 chunks 2.15 /
#   2.02 / 1.98 / 2.12 s; the rule picks 2, 8 and 32).
AUTO_MICROBATCH_TEMP_MB = 100.0
AUTO_MICROBATCH_TEMP_MB_ASYNC = 60.0
AUTO_MICROBATCH_CHUNK_MB = 45.0
AUTO_MICROBATCH_CHUNK_SHARE = 0.75
AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS = 3.0


# train.steps_per_call = -1 (auto, the default): the largest divisor of train.log_every up to
# this. Measured (docs/PERFORMANCE.md, *Dispatch*): 10 steps per call take one seed's step
# at batch 16 from 1.53 to 0.76 ms (the ~0.4 ms dispatch paid once in 10; 0.81 with 8) and
# make the default run's training 1.06-1.11x faster (median step 18.2-19.6 -> 17.1-17.3 ms,
# the same MCC); past 10 the dispatch left per step is under 0.05 ms.
AUTO_STEPS_PER_CALL = 10


def resolve_steps_per_call(train_cfg) -> int:
    """Steps per dispatch for ``train.steps_per_call`` (-1: the largest divisor of
    ``train.log_every`` up to :data:`AUTO_STEPS_PER_CALL`; configs without it: 1)."""
    n = int(train_cfg.get("steps_per_call", 1))
    if n != -1:
        return n
    log_every = int(train_cfg.log_every)
    return max(d for d in range(1, min(AUTO_STEPS_PER_CALL, log_every) + 1)
               if log_every % d == 0)


def num_microbatches(train_cfg) -> int:
    """Chunks per step for an explicit ``microbatch_size`` (0: one pass -> 1)."""
    micro = int(train_cfg.get("microbatch_size", 0))
    if micro < 0:
        raise ValueError("train.microbatch_size = -1 (auto) is resolved by "
                         "train.resolve_microbatches, which needs the compiled step")
    return 1 if micro == 0 else int(train_cfg.batch_size) // micro


def choose_microbatches(temp_bytes: float, batch_size: int, n_devices: int,
                        budget_mb: float | None = None, param_bytes: float = 0.0) -> int:
    """Chunks per step for ``train.microbatch_size = -1`` (the rule above the constants).

    One pass when ``temp_bytes`` (the one-pass step's XLA temporaries) fits ``budget_mb``
    (default :data:`AUTO_MICROBATCH_TEMP_MB`); otherwise the fewest chunks whose share of
    ``temp_bytes`` fits :data:`AUTO_MICROBATCH_CHUNK_MB` and
    :data:`AUTO_MICROBATCH_CHUNK_SHARE` of the budget, but no more chunks than
    keep each share at least :data:`AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS` x ``param_bytes``
    (the parameters of all seeds). Only counts that split ``batch_size`` into equal chunks
    divisible by ``n_devices`` qualify."""
    budget_mb = AUTO_MICROBATCH_TEMP_MB if budget_mb is None else budget_mb
    valid = [n for n in range(1, batch_size + 1)
             if batch_size % n == 0 and (batch_size // n) % n_devices == 0]
    if not valid:
        raise ValueError(f"batch_size={batch_size} does not split over {n_devices} devices")
    if temp_bytes <= budget_mb * 2**20:
        return valid[0]
    chunk_mb = min(AUTO_MICROBATCH_CHUNK_MB, AUTO_MICROBATCH_CHUNK_SHARE * budget_mb)
    need = max(2, int(math.ceil(temp_bytes / (chunk_mb * 2**20))))
    floor_bytes = AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS * param_bytes
    most = int(temp_bytes // floor_bytes) if floor_bytes > 0 else batch_size
    allowed = [n for n in valid if n <= max(most, 1)] or valid[:1]
    fitting = [n for n in allowed if n >= need]
    return min(fitting) if fitting else max(allowed)


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
    gradient, with chunk ``i``'s sampling noise drawn from ``fold_in(key, i)``. Why: on CPU
    a step's temporaries larger than the C allocator reuses are mapped and page-faulted
    afresh every step (docs/PERFORMANCE.md, *Host memory*); chunks keep them small. On an
    accelerator it bounds the activation memory of a large batch.
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
