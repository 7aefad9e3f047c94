"""Loop settings chosen for the host: steps per dispatch and microbatches per step.

The training loop (:func:`crl_jax.train.train`) takes both as plain integers; the pipelines
(``crl_jax.experiments``) resolve the config's automatic values here:

- ``train.steps_per_call = -1``: the largest divisor of ``train.log_every`` up to
  :data:`AUTO_STEPS_PER_CALL`. A dispatch costs ~0.4 ms on the project's CPU, most of a step
  of about a millisecond; ten steps in one ``lax.scan`` per call pay it once (one seed at
  batch 16: 1.53 -> 0.76 ms per step; past ten, under 0.05 ms per step is left to gain).
- ``train.microbatch_size = -1``: on CPU, one pass while the compiled step's XLA temporaries
  fit :data:`AUTO_MICROBATCH_TEMP_MB` (:data:`AUTO_MICROBATCH_TEMP_MB_ASYNC` with JAX's
  asynchronous dispatch, whose worker thread re-maps buffers above 64 MiB every step), else the
  fewest chunks whose share fits :data:`AUTO_MICROBATCH_CHUNK_MB` (and at most
  :data:`AUTO_MICROBATCH_CHUNK_SHARE` of the budget), but no share below
  :data:`AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS` times the parameters' bytes (every chunk
  re-reads the weights and adds into the gradient accumulator). On GPU/TPU one pass (chunking
  only serialises work the device does in parallel).

The constants were measured on the project's 2-core CPU (docs/PERFORMANCE.md).
"""
from __future__ import annotations

import math

import jax

from crl_jax import steps, train
from crl_jax.host import memory

AUTO_STEPS_PER_CALL = 10

AUTO_MICROBATCH_TEMP_MB = 100.0
AUTO_MICROBATCH_TEMP_MB_ASYNC = 60.0
AUTO_MICROBATCH_CHUNK_MB = 45.0
AUTO_MICROBATCH_CHUNK_SHARE = 0.75
AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS = 3.0


def resolve_steps_per_call(train_cfg) -> int:
    """Steps per dispatch for ``train.steps_per_call`` (-1: the largest divisor of
    ``train.log_every`` up to :data:`AUTO_STEPS_PER_CALL`; configs without it: 1)."""
    n = int(train_cfg.get("steps_per_call", 1))
    if n != -1:
        return n
    log_every = int(train_cfg.log_every)
    return max(d for d in range(1, min(AUTO_STEPS_PER_CALL, log_every) + 1)
               if log_every % d == 0)


def choose_microbatches(temp_bytes: float, batch_size: int, n_devices: int,
                        budget_mb: float | None = None, param_bytes: float = 0.0) -> int:
    """Chunks per step for ``train.microbatch_size = -1`` (the rule in the module docstring).

    One pass when ``temp_bytes`` (the one-pass step's XLA temporaries) fits ``budget_mb``
    (default :data:`AUTO_MICROBATCH_TEMP_MB`); otherwise the fewest chunks whose share of
    ``temp_bytes`` fits the chunk limits, but no more chunks than keep each share at least
    :data:`AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS` x ``param_bytes`` (the parameters of all
    seeds). Only counts that split ``batch_size`` into equal chunks divisible by
    ``n_devices`` qualify."""
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


def _nbytes(x) -> int:
    return int(math.prod(x.shape)) * x.dtype.itemsize


def resolve_microbatches(config, method, mesh, state, batch,
                         one_pass_temp_bytes: float | None = None) -> int:
    """Chunks per step for ``train.microbatch_size`` (0 -> 1; N -> batch_size / N; -1 auto).

    ``state``: the train state or its shapes (``train.abstract_state``). ``batch``: one
    step's batch, or a function returning it, called only when the step must be compiled.
    ``one_pass_temp_bytes``: the one-pass step's temporaries when the caller has compiled it
    already (the benchmarks), to skip the compile.
    """
    if int(config.train.get("microbatch_size", 0)) != -1:
        return steps.num_microbatches(config.train)
    if not method.trainable or not method.per_sample_loss:
        return 1
    if mesh.devices.flat[0].platform != "cpu":
        return 1
    temp = one_pass_temp_bytes
    if temp is None:
        batch = batch() if callable(batch) else batch
        compiled = train.jit_train_step(method, mesh).lower(state, batch).compile()
        temp = float(getattr(compiled.memory_analysis(), "temp_size_in_bytes", 0) or 0)
    param_bytes = sum(_nbytes(x) for x in jax.tree.leaves(state.params))
    budget = (AUTO_MICROBATCH_TEMP_MB_ASYNC if memory.cpu_dispatch_mode() == "async"
              else AUTO_MICROBATCH_TEMP_MB)
    n = choose_microbatches(temp, int(config.train.batch_size), mesh.devices.size,
                            budget_mb=budget, param_bytes=param_bytes)
    if jax.process_index() == 0:
        print(f"train.microbatch_size=-1 (auto): the one-pass step needs {temp / 2**20:.0f} MB "
              f"of temporaries; {n} chunk(s) of {int(config.train.batch_size) // n} per step",
              flush=True)
    return n


def loop_settings(config, method, mesh, batches, data_layout) -> dict:
    """``{"microbatches": n, "steps_per_call": n}`` for :func:`crl_jax.train.train`, from the
    config's values (automatic ones resolved as above)."""
    micro = 1
    if method.trainable:
        state = (train.abstract_state(method, config, mesh, data_layout)
                 if int(config.train.get("microbatch_size", 0)) == -1 else None)
        micro = resolve_microbatches(config, method, mesh, state, lambda: batches(0))
    return {"microbatches": micro, "steps_per_call": resolve_steps_per_call(config.train)}
