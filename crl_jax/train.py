"""Training loop and ``train_and_evaluate(config, workdir)`` (also called from notebooks).

One jitted step trains all seeds at once (vmap over a leading seed axis) on a data-parallel
mesh (batch sharded over ``data``, state replicated, buffers donated). The host only looks
at the metrics every ``train.log_every`` steps: there it checks that the loss is finite,
writes ``metrics.jsonl``, updates the progress bar and, every ``train.checkpoint_every``
steps, saves an Orbax checkpoint, so a checkpoint never holds a non-finite state. Rerunning
the same command resumes from the latest checkpoint.
"""
from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from crl_jax import checkpointing, config_validation, experiment, input_pipeline, methods
from crl_jax import cpu_dots, host_memory, parallel
from crl_jax import evaluation, plotting, reporting, steps


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class _SummaryWriter:
    """metrics.jsonl always; TensorBoard event files when tensorboardX is installed.

    Only process 0 of a multi-process run writes (the metrics are the same everywhere).
    """

    def __init__(self, workdir: str, resume_step: int = 0):
        self._jsonl = self._tb = None
        if jax.process_index() != 0:
            return
        path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(path):  # drop records logged after the checkpoint we resume from
            with open(path) as f:
                kept = [line for line in f if line.strip()
                        and json.loads(line)["step"] <= resume_step]
            with open(path, "w") as f:
                f.writelines(kept)
        self._jsonl = open(path, "a")
        try:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
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


def _example_input(layout):
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


def setup(config, workdir: str | None, mesh=None):
    """Validated objects of a run: (process, method, mesh)."""
    mesh = parallel.make_mesh() if mesh is None else mesh
    config_validation.validate(config, n_devices=mesh.devices.size)
    process = experiment.load_or_make_process(config.data, workdir)
    config_validation.validate_against_spec(config, process.spec)
    layout = experiment.build_layout(process.spec, config.model)
    method = methods.build_method(config.model.name, layout, config)
    config_validation.validate_against_method(config, method)
    return process, method, mesh


def init_state(method, config, mesh, data_layout):
    tx = steps.make_optimizer(config.train)
    state = steps.create_train_states(method, _example_input(data_layout), tx,
                                      int(config.train.seed), int(config.train.num_seeds))
    return jax.device_put(state, parallel.replicated(mesh))


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


def resolve_microbatches(config, method, mesh, state, batch,
                         one_pass_temp_bytes: float | None = None) -> int:
    """Chunks per step for ``train.microbatch_size`` (0 -> 1; N -> batch_size / N).

    ``-1`` (auto): on CPU, compile the one-pass step, read the size of its XLA temporaries
    and keep one pass while they fit ``steps.AUTO_MICROBATCH_TEMP_MB`` (with asynchronous
    CPU dispatch ``steps.AUTO_MICROBATCH_TEMP_MB_ASYNC``, host_memory), else split the batch
    into chunks small enough for the cache but not so many that the per-chunk passes over
    the parameters dominate (``steps.choose_microbatches``; measured on the project's CPU,
    see host_memory); on GPU/TPU one pass (there chunking only serialises work the device
    does in parallel).
    ``batch``: one step's batch, or a function returning it, called only when the step must
    be compiled (the loop's: a scanned run would otherwise compile the single-step sampler
    only for this, ~1 s). ``one_pass_temp_bytes``: that size when the caller has compiled
    the step already (the benchmark), to skip the compile.
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
        memory = jit_train_step(method, mesh).lower(state, batch).compile().memory_analysis()
        temp = float(getattr(memory, "temp_size_in_bytes", 0) or 0)
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(state.params))
    budget = (steps.AUTO_MICROBATCH_TEMP_MB_ASYNC if host_memory.cpu_dispatch_mode() == "async"
              else steps.AUTO_MICROBATCH_TEMP_MB)
    n = steps.choose_microbatches(temp, int(config.train.batch_size), mesh.devices.size,
                                  budget_mb=budget, param_bytes=param_bytes)
    if jax.process_index() == 0:
        print(f"train.microbatch_size=-1 (auto): the one-pass step needs {temp / 2**20:.0f} MB "
              f"of temporaries; {n} chunk(s) of {int(config.train.batch_size) // n} per step",
              flush=True)
    return n


def train(config, workdir: str, method, mesh, batches, data_layout, *,
          stop_after_step=None):
    """Train (or resume) to ``config.train.steps``; returns (state, last step).

    ``batches``: an :class:`input_pipeline.BatchSource`; ``data_layout``: the shapes of the
    data it yields. ``stop_after_step`` ends the run early after checkpointing that step, as
    a pre-empted job would; rerunning resumes from there.
    """
    t_cfg = config.train
    host_memory.tune_malloc()   # reuse the step's temporaries instead of page-faulting them
    state = init_state(method, config, mesh, data_layout)
    if not method.trainable:  # controls fitted on the host at evaluation (PCA, ...)
        return state, int(t_cfg.steps)
    mngr = checkpointing.manager(workdir, t_cfg.keep_checkpoints)
    state, step = checkpointing.restore_latest(mngr, state)
    total = int(t_cfg.steps)
    microbatches = resolve_microbatches(config, method, mesh, state, lambda: batches(step))
    train_step = jit_train_step(method, mesh, microbatches)
    per_call = steps.resolve_steps_per_call(t_cfg)
    train_steps = jit_train_steps(method, mesh, microbatches) if per_call > 1 else None
    last = total if stop_after_step is None else min(total, int(stop_after_step))
    sync_each_step = parallel.needs_step_sync(mesh)
    writer = _SummaryWriter(workdir, resume_step=step)
    bar = tqdm.tqdm(total=total, initial=step,
                    disable=not t_cfg.progress or jax.process_index() != 0,
                    desc=f"train {config.model.name} x{t_cfg.num_seeds} seeds", unit="step")
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
                    f"(step {last_good}) is kept in {os.path.join(workdir, 'checkpoints')}. "
                    f"Try a lower train.learning_rate or a larger loss.recon_std.")
            now = time.time()
            record["steps_per_sec"] = (step - step_last) / max(now - t_last, 1e-9)
            record["elapsed_sec"] = now - t_start
            record["microbatches"] = microbatches  # chunks per step (auto's choice included)
            t_last, step_last = now, step
            writer.write(step, record)
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


def _latent_names(spec) -> list[str]:
    names = []
    for block, sl in spec.block_slices.items():
        names += [f"{block}[{i}]" for i in range(sl.stop - sl.start)]
    return names


def train_and_evaluate(config, workdir: str, *, stop_after_step=None) -> dict | None:
    """Train ``config.train.num_seeds`` replicas, evaluate on held-out data, write reports.

    Writes ``config.json``, ``generator/``, ``checkpoints/``, ``metrics.jsonl``,
    ``report.json``, ``report.md`` and figures into ``workdir``; returns the report dict
    (``None`` when stopped early by ``stop_after_step``).
    """
    # first, before any JAX work: JAX reads them when its backend starts (crl_jax.main calls
    # nothing in JAX before this; from a notebook they apply if nothing ran before)
    dispatch = host_memory.set_cpu_dispatch()
    dots = cpu_dots.apply(config)   # YNNPACK or Eigen products for this run's sizes
    source = config.data.get("source", "synthetic")
    if source == "personax":
        from crl_jax import personax_crl  # real-data pipeline (no ground truth)
        return personax_crl.train_and_evaluate(config, workdir, stop_after_step=stop_after_step)
    if source != "synthetic":
        raise config_validation.ConfigError(
            f"config.data.source: {source!r} is not 'synthetic' or 'personax'")
    os.makedirs(workdir, exist_ok=True)
    process, method, mesh = setup(config, workdir)
    lead_process = jax.process_index() == 0   # the only writer of a multi-process run
    if lead_process:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=1))
    t0 = time.time()
    batches = input_pipeline.BatchSource.from_process(process, config.data, config.train,
                                                      parallel.batch_sharding(mesh))
    state, step = train(config, workdir, method, mesh, batches,
                        experiment.data_layout(process.spec), stop_after_step=stop_after_step)
    train_seconds = time.time() - t0
    if step < int(config.train.steps):
        return None
    t1 = time.time()
    report = {"model": config.model.name, "preset": process.spec.name,
              "num_seeds": int(config.train.num_seeds), "steps": step,
              "train_seconds": train_seconds, "devices": mesh.devices.size,
              "malloc_tuning": host_memory.tune_malloc(),
              "cpu_dispatch": dispatch,
              "cpu_dots": dots,
              "evaluation": evaluation.evaluate_run(method, state.params, process, config)}
    report["eval_seconds"] = time.time() - t1
    if config.eval.plots and lead_process:
        report["figures"] = plotting.all_figures(workdir, report["evaluation"],
                                                 _latent_names(process.spec))
    if not lead_process:
        return reporting.clean(report)
    clean = reporting.write(workdir, report)
    print(reporting.markdown(clean))
    return clean
