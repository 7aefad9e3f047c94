"""The training loop and its jitted helpers.

One jitted step trains all seeds at once (vmap over a leading seed axis) on a data-parallel
mesh (batch sharded over ``data``, state replicated, buffers donated). The host only looks
at the metrics every ``train.log_every`` steps: there it checks that the loss is finite,
writes the metrics file, updates the progress bar and, every ``train.checkpoint_every``
steps, saves an Orbax checkpoint, so a checkpoint never holds a non-finite state. Rerunning
the same command resumes from the latest checkpoint (an unreadable one is skipped,
:func:`crl_jax.checkpointing.open_and_restore`).

Faults stop training with one clear message: a non-finite loss, or one above
``train.divergence_factor`` times its value at the first step (an exploding but finite loss),
raises :class:`TrainingDiverged`; SIGINT / SIGTERM save a checkpoint at the next step boundary
and raise :class:`TrainingInterrupted` (a second signal stops at once).

:func:`train` may be called more than once in a run (a method trained in stages): each call
takes its own checkpoint folder, metrics file and step offset. The pipelines that build the
data and report on the result are in ``crl_jax.experiments``.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from crl_jax import checkpointing, parallel, steps
from crl_jax.errors import EXIT_DIVERGED, warn


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or Inf, or exploded; the last good checkpoint, if any, is kept."""

    exit_code = EXIT_DIVERGED


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT / SIGTERM: a checkpoint was saved at the step boundary after the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class _StopSignals:
    """While active (main thread only): SIGINT / SIGTERM set ``received`` instead of stopping
    the process mid-step; a second signal raises KeyboardInterrupt at once."""

    def __init__(self):
        self.received, self._previous = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped at once, "
                                    f"without saving")
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _read_metrics(path: str, resume_step: int) -> list[str]:
    """The lines of ``path`` up to ``resume_step``; unreadable lines (a line torn by a
    killed run) are dropped with a warning."""
    kept, torn = [], []
    with open(path) as f:
        lines = f.readlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            torn.append(i)
            continue
        if step <= resume_step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if torn:
        which = "its last line" if torn == [len(lines)] else f"line(s) {torn}"
        warn(f"{path}: dropped {which}, which is not a complete JSON record (written by a run "
             f"that was killed mid-write)")
    return kept


class _SummaryWriter:
    """metrics.jsonl always; TensorBoard event files when tensorboardX is installed.

    Only process 0 of a multi-process run writes (the metrics are the same everywhere).
    """

    def __init__(self, workdir: str, resume_step: int = 0, metrics_file: str = "metrics.jsonl",
                 tensorboard_dir: str = "tensorboard"):
        self._jsonl = self._tb = None
        if jax.process_index() != 0:
            return
        path = os.path.join(workdir, metrics_file)
        if os.path.exists(path):  # drop records logged after the checkpoint we resume from
            kept = _read_metrics(path, resume_step)
            with open(path, "w") as f:
                f.writelines(kept)
        self._jsonl = open(path, "a")
        try:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, tensorboard_dir))
        except ImportError:
            self._tb = None

    def write(self, step: int, record: dict) -> None:
        if self._jsonl is None:
            return
        self._jsonl.write(json.dumps({"step": step, **record}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in record.items():
                if isinstance(value, float):
                    self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def example_input(layout):
    """A 2-row batch of zeros with the shapes of ``layout`` (for ``init``)."""
    return tuple(jnp.zeros((2, k) + tuple(shape), jnp.float32)
                 for k, shape in zip(layout.n_measurements, layout.obs_shapes))


def _all_finite(tree) -> bool:
    leaves = jax.tree_util.tree_leaves(tree)
    return bool(jax.device_get(jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))))


def _summarise(window: list[dict]) -> dict:
    """Window of metric dicts, per step ((S,) arrays) or per call of several steps ((n, S))
    -> per-seed means and seed means."""
    stacked = jax.device_get(jax.tree_util.tree_map(
        lambda *xs: jnp.concatenate([x.reshape((-1,) + x.shape[-1:]) for x in xs]), *window))
    record = {}
    for name, values in stacked.items():
        per_seed = np.mean(np.asarray(values, np.float64), axis=0)
        record[name] = float(np.mean(per_seed))
        record[f"{name}_per_seed"] = [float(v) for v in per_seed]
    return record


def _kept(folder: str, last_good) -> str:
    if last_good is None:
        return (f"No checkpoint was saved before (the first is due at train.checkpoint_every); "
                f"{folder} holds none, so a rerun starts from step 0.")
    return f"The last good checkpoint (step {last_good}) is kept in {folder}."


def _check_loss(loss_per_seed, reference, factor: float, step: int, log_every: int,
                folder: str, last_good) -> None:
    """TrainingDiverged when a seed's mean loss since the last check is NaN/Inf, or above
    ``factor * max(|loss at the first step|, 1)`` (``factor`` 0: no such check)."""
    loss = np.asarray(loss_per_seed, np.float64)
    fix = ("Use a new --workdir with a lower train.learning_rate (or a larger "
           "loss.recon_std); a rerun here would diverge the same way.")
    bad = [i for i, v in enumerate(loss) if not np.isfinite(v)]
    if bad:
        raise TrainingDiverged(
            f"loss became NaN/Inf between steps {max(step - log_every, 0)} and {step} for "
            f"seed(s) {bad}; training stopped. {_kept(folder, last_good)} {fix}")
    if factor > 0:
        limit = factor * np.maximum(np.abs(reference), 1.0)
        bad = [i for i in range(loss.size) if loss[i] > limit[i]]
        if bad:
            i = bad[0]
            raise TrainingDiverged(
                f"loss diverged: {loss[i]:.3g} by step {step} for seed(s) {bad}, more than "
                f"train.divergence_factor={factor:g} times its first-step value "
                f"{reference[i]:.3g}; training stopped. {_kept(folder, last_good)} {fix} "
                f"(--config.train.divergence_factor=0 turns this check off)")


def init_state(method, config, mesh, data_layout):
    """The seed-stacked train state, replicated over ``mesh``."""
    tx = method.optimizer(config.train) or steps.make_optimizer(config.train)
    state = steps.create_train_states(method, example_input(data_layout), tx,
                                      int(config.train.seed), int(config.train.num_seeds))
    return jax.device_put(state, parallel.replicated(mesh))


def abstract_state(method, config, mesh, data_layout):
    """The shapes and dtypes of :func:`init_state` (nothing computed), e.g. to compile a step
    before training."""
    return jax.eval_shape(lambda: init_state(method, config, mesh, data_layout))


def _jit_on_mesh(fn, mesh, batch_axis: int = 1):
    """``fn(state, batches)`` jitted with the state replicated (and donated) and the batch
    data sharded over ``mesh`` along ``batch_axis``."""
    repl, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh, batch_axis)
    return jax.jit(fn, in_shardings=(repl, batch), out_shardings=(repl, repl),
                   donate_argnums=(0,))


def jit_train_step(method, mesh, microbatches: int = 1):
    return _jit_on_mesh(steps.make_train_step(method, microbatches), mesh)


def jit_train_steps(method, mesh, microbatches: int = 1):
    """Several train steps in one call: ``(state, stacked) -> (state, terms)``, ``stacked``
    the n steps' batches on a leading axis (``BatchSource.stacked``), each term stacked over
    the n steps. One ``lax.scan`` of the same step, so a step costs one dispatch in n (the
    dispatch, ~0.4 ms on the project's CPU, is most of a step of about a millisecond;
    ``train.steps_per_call``)."""
    step = steps.make_train_step(method, microbatches)
    return _jit_on_mesh(lambda state, stacked: jax.lax.scan(step, state, stacked), mesh,
                        batch_axis=2)


def train(config, workdir: str, method, mesh, batches, data_layout, *,
          microbatches: int = 1, steps_per_call: int = 1,
          checkpoint_dir: str = "checkpoints", metrics_file: str = "metrics.jsonl",
          step_offset: int = 0, initial_state=None, stop_after_step=None,
          stage: str | None = None):
    """Train (or resume) ``method`` to ``config.train.steps``; returns (state, last step).

    ``batches``: an :class:`input_pipeline.BatchSource`; ``data_layout``: the shapes of the
    data it yields. ``microbatches``: chunks per step (gradient accumulation);
    ``steps_per_call``: steps per dispatch (a ``lax.scan``; must divide ``train.log_every``).
    The pipelines resolve both from the config (``crl_jax.host.autotune.loop_settings``).
    ``checkpoint_dir`` (under ``workdir``), ``metrics_file`` and ``step_offset`` (added to
    the step numbers written to the metrics) let a run call this once per training stage;
    ``stage`` (a name) is then written into each metrics record.
    ``initial_state``: the state to start from when there is no checkpoint (default: a fresh
    :func:`init_state`), e.g. a later stage holding an earlier one's frozen parameters.
    ``stop_after_step`` ends the run early after checkpointing that step, as a pre-empted
    job would; rerunning resumes from there.
    """
    t_cfg = config.train
    per_call = int(steps_per_call)
    if per_call < 1 or int(t_cfg.log_every) % per_call:
        raise ValueError(f"steps_per_call={steps_per_call} must be >= 1 and divide "
                         f"train.log_every={t_cfg.log_every}")
    state = (init_state(method, config, mesh, data_layout) if initial_state is None
             else initial_state)
    if not method.trainable:  # controls fitted on the host at evaluation (PCA, ...)
        return state, int(t_cfg.steps)
    mngr, state, step, restored = checkpointing.open_and_restore(
        workdir, t_cfg.keep_checkpoints, checkpoint_dir, state)
    total = int(t_cfg.steps)
    if step >= total:   # finished earlier: leave the metrics (a later stage's too) as they are
        mngr.close()
        return state, step
    train_step = jit_train_step(method, mesh, microbatches)
    train_steps = jit_train_steps(method, mesh, microbatches) if per_call > 1 else None
    last = total if stop_after_step is None else min(total, int(stop_after_step))
    sync_each_step = parallel.needs_step_sync(mesh)
    writer = _SummaryWriter(workdir, resume_step=step + int(step_offset),
                            metrics_file=metrics_file)
    bar = tqdm.tqdm(total=total, initial=step,
                    disable=not t_cfg.progress or jax.process_index() != 0,
                    desc=f"train {method.name} x{t_cfg.num_seeds} seeds", unit="step")
    folder = os.path.join(workdir, checkpoint_dir)
    last_good = step if restored else None   # the newest checkpoint on disk
    window, step_last, reference = [], step, None
    factor = float(t_cfg.get("divergence_factor", 0.0))
    t_start = t_last = time.time()
    signals = _StopSignals()
    try:
        with signals:
            while step < total:
                if (train_steps is not None and step % per_call == 0
                        and step + per_call <= last and signals.received is None):
                    # per_call divides log_every: the checks below fall between calls
                    state, terms = train_steps(state, batches.stacked(step, per_call))
                    step += per_call
                else:   # one step at a time up to the next multiple (a resumed or stopped run)
                    state, terms = train_step(state, batches(step))
                    step += 1
                window.append(terms)
                if sync_each_step:
                    jax.block_until_ready(terms)
                stopping = ((stop_after_step is not None and step >= stop_after_step)
                            or signals.received is not None)
                if step % int(t_cfg.log_every) and step != total and not stopping:
                    continue
                if reference is None:   # the loss at the first step of this session, per seed
                    first = np.asarray(jax.device_get(window[0]["loss"]), np.float64)
                    reference = first.reshape(-1, first.shape[-1])[0]
                record = _summarise(window)
                window = []
                _check_loss(record["loss_per_seed"], reference, factor, step,
                            int(t_cfg.log_every), folder, last_good)
                now = time.time()
                record["steps_per_sec"] = (step - step_last) / max(now - t_last, 1e-9)
                record["elapsed_sec"] = now - t_start
                record["microbatches"] = int(microbatches)  # chunks per step
                if stage is not None:
                    record["stage"] = stage
                t_last, step_last = now, step
                writer.write(step + int(step_offset), record)
                bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "recon", "kl", "tie")
                                 if k in record})  # methods without a decoder lack recon/kl/tie
                bar.update(step - bar.n)
                if step % int(t_cfg.checkpoint_every) == 0 or step == total or stopping:
                    if not _all_finite(state.params):
                        raise TrainingDiverged(
                            f"parameters became NaN/Inf by step {step}; training stopped. "
                            f"{_kept(folder, last_good)}")
                    checkpointing.save(mngr, step, state)
                    last_good = step
                if stopping:
                    break
    finally:
        bar.close()
        writer.close()
        mngr.close()
    if signals.received is not None:
        name = signal.Signals(signals.received).name
        raise TrainingInterrupted(
            f"stopped by {name}: checkpoint saved at step {step} in {folder}; rerun the same "
            f"command to resume", signals.received)
    return state, step
    train_step = jit_train_step(method, mesh, microbatches)
    train_steps = jit_train_steps(method, mesh, microbatches) if per_call > 1 else None
    last = total if stop_after_step is None else min(total, int(stop_after_step))
    sync_each_step = parallel.needs_step_sync(mesh)
    writer = _SummaryWriter(workdir, resume_step=step + int(step_offset),
                            metrics_file=metrics_file)
    bar = tqdm.tqdm(total=total, initial=step,
                    disable=not t_cfg.progress or jax.process_index() != 0,
                    desc=f"train {method.name} x{t_cfg.num_seeds} seeds", unit="step")
    window, last_good, step_last = [], step, step
    t_start = t_last = time.time()
    try:
        while step < total:
            if train_steps is not None and step % per_call == 0 and step + per_call <= last:
                # per_call divides log_every: the checks below fall between calls
                state, terms = train_steps(state, batches.stacked(step, per_call))
                step += per_call
            else:   # one step at a time up to the next multiple (a resumed or stopped run)
                state, terms = train_step(state, batches(step))
                step += 1
            window.append(terms)
            if sync_each_step:
                jax.block_until_ready(terms)
            stopping = stop_after_step is not None and step >= stop_after_step
            if step % int(t_cfg.log_every) and step != total and not stopping:
                continue
            record = _summarise(window)
            window = []
            bad = [i for i, v in enumerate(record["loss_per_seed"]) if not np.isfinite(v)]
            if bad:
                raise TrainingDiverged(
                    f"loss became NaN/Inf between steps {step - int(t_cfg.log_every)} and "
                    f"{step} for seed(s) {bad}; training stopped. The last good checkpoint "
                    f"(step {last_good}) is kept in {os.path.join(workdir, checkpoint_dir)}. "
                    f"Try a lower train.learning_rate or a larger loss.recon_std.")
            now = time.time()
            record["steps_per_sec"] = (step - step_last) / max(now - t_last, 1e-9)
            record["elapsed_sec"] = now - t_start
            record["microbatches"] = int(microbatches)  # chunks per step
            t_last, step_last = now, step
            writer.write(step + int(step_offset), record)
            bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "recon", "kl", "tie")
                             if k in record})  # methods without a decoder lack recon/kl/tie
            bar.update(step - bar.n)
            if step % int(t_cfg.checkpoint_every) == 0 or step == total or stopping:
                if not _all_finite(state.params):
                    raise TrainingDiverged(
                        f"parameters became NaN/Inf by step {step}; the last good checkpoint "
                        f"(step {last_good}) is kept.")
                checkpointing.save(mngr, step, state)
                last_good = step
            if stopping:
                break
    finally:
        bar.close()
        writer.close()
        mngr.close()
    return state, step
