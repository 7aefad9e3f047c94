"""Synthetic data with known latents: generate, train, evaluate on held-out samples, report.

``run(config, workdir)`` (``config.data.source == "synthetic"``, the default):

1. validates the config, builds (or, on resume, reloads) the generative process of
   ``config.data`` and saves it in ``workdir/generator``, so a run can be re-evaluated on
   fresh samples of exactly the same process;
2. trains ``train.num_seeds`` replicas of ``config.model.name`` on batches drawn from the
   process (:func:`crl_jax.train.train`: checkpointed, resumable, NaN-safe; ``personax``
   runs its stages through it, ``crl_jax.staged``);
3. evaluates on fresh held-out samples (MCC, block R², graph; ``crl_jax.evaluation``), draws
   the figures and writes ``report.json`` / ``report.md`` (``crl_jax.reporting``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import jax

import synthetic
from crl_jax import (config_validation, evaluation, host, input_pipeline, methods, parallel,
                     plotting, reporting, staged, train)
from crl_jax.host import autotune
from crl_jax.models import vae


def spec_overrides(data_cfg) -> dict:
    """The data fields each preset understands."""
    out = _optional_overrides(data_cfg)
    preset = data_cfg.preset
    if preset in synthetic.NUMERICAL_PRESETS:
        return {**out, "n_measurements": int(data_cfg.n_measurements),
                "shared_dim": int(data_cfg.shared_dim)}
    out.pop("n_cross_edges", None)  # the other presets have a fixed graph
    if preset.startswith("variant_mnist"):
        out.update({"image_size": int(data_cfg.image_size),
                    "n_measurements": int(data_cfg.n_measurements)})
        if data_cfg.data_dir:
            out["data_dir"] = str(data_cfg.data_dir)
        if data_cfg.get("identity", ""):
            out["identity"] = str(data_cfg.identity)
    return out


def _optional_overrides(data_cfg) -> dict:
    """Optional data fields: ``data.noise`` ("" = the preset's) and
    ``data.n_cross_edges`` (-1 = the preset's; numerical presets only)."""
    out = {}
    if data_cfg.get("noise", ""):
        out["noise"] = str(data_cfg.noise)
    if int(data_cfg.get("n_cross_edges", -1)) >= 0:
        out["n_cross_edges"] = int(data_cfg.n_cross_edges)
    return out


def build_spec(data_cfg):
    return synthetic.get_spec(data_cfg.preset, **spec_overrides(data_cfg))


def load_or_make_process(data_cfg, workdir: str | None):
    """The generative process of this run; saved beside the run, reloaded on resume.

    Multi-process runs: process 0 loads or makes and saves it, the others then load what it
    wrote (after a barrier), so every process trains on the same generator.
    """
    if workdir and jax.process_count() > 1:
        from jax.experimental import multihost_utils
        if jax.process_index() == 0:
            process = _load_or_make_process(data_cfg, workdir)
        multihost_utils.sync_global_devices("crl_jax: generator saved")
        if jax.process_index() != 0:
            process = _load_or_make_process(data_cfg, workdir)
        return process
    return _load_or_make_process(data_cfg, workdir)


def _load_or_make_process(data_cfg, workdir: str | None):
    spec = build_spec(data_cfg)
    gen_dir = os.path.join(workdir, "generator") if workdir else None
    if gen_dir and os.path.exists(os.path.join(gen_dir, "generator_spec.json")):
        process = synthetic.load_process(gen_dir)
        if _comparable(process.spec) != _comparable(spec):
            raise ValueError(
                f"workdir {workdir!r} holds a run of a different generative process "
                f"({process.spec.name}); use a new --workdir or the original data config.")
        return process
    process = synthetic.make_process(jax.random.PRNGKey(int(data_cfg.generator_seed)), spec)
    if gen_dir:
        os.makedirs(gen_dir, exist_ok=True)
        process.save(gen_dir)
    return process


def _comparable(spec) -> str:
    d = dataclasses.asdict(spec)
    d.pop("data_dir", None)  # where the images live is not part of the process
    return json.dumps(d, sort_keys=True, default=str)


def model_layout(spec, model_cfg=None) -> vae.ModelLayout:
    """The data's shapes with the model's latent sizes (``model.latent_dims``,
    ``model.eta_dim``); ``model_cfg=None``: the true sizes (the data as generated)."""
    latent_dims = tuple(m.latent_dim for m in spec.modalities)
    eta_dims = tuple(m.eta_dim for m in spec.modalities)
    if model_cfg is not None:
        latent_dims = tuple(int(d) for d in model_cfg.latent_dims) or latent_dims
        if int(model_cfg.eta_dim) >= 0:
            eta_dims = (int(model_cfg.eta_dim),) * len(spec.modalities)
    return vae.ModelLayout(
        names=tuple(m.name for m in spec.modalities),
        obs_shapes=tuple(tuple(s) for s in spec.obs_shapes),
        n_measurements=tuple(spec.n_measurements),
        latent_dims=latent_dims,
        eta_dims=eta_dims,
        shared_dim=int(spec.shared_dim),
    )


def setup(config, workdir: str | None, mesh=None):
    """Validated objects of a run: (process, method, mesh)."""
    mesh = parallel.make_mesh() if mesh is None else mesh
    config_validation.validate(config, n_devices=mesh.devices.size)
    process = load_or_make_process(config.data, workdir)
    config_validation.validate_against_spec(config, process.spec)
    method = methods.build_method(config.model.name, model_layout(process.spec, config.model),
                                  config)
    config_validation.validate_against_method(config, method)
    return process, method, mesh


def run(config, workdir: str, *, stop_after_step=None) -> dict | None:
    """Train ``config.train.num_seeds`` replicas, evaluate on held-out data, write reports.

    Writes ``config.json``, ``generator/``, ``checkpoints/``, ``metrics.jsonl``,
    ``report.json``, ``report.md`` and figures into ``workdir``; returns the report dict
    (``None`` when stopped early by ``stop_after_step``).
    """
    os.makedirs(workdir, exist_ok=True)
    process, method, mesh = setup(config, workdir)
    lead_process = jax.process_index() == 0   # the only writer of a multi-process run
    if lead_process:
        reporting.write_config(workdir, config)
    t0 = time.time()
    batches = input_pipeline.BatchSource.from_process(process, config.data, config.train,
                                                      parallel.batch_sharding(mesh))
    layout = model_layout(process.spec)
    stages = None
    if isinstance(method, methods.PersonaXMethod):   # stage A, then stage B's two phases
        settings = autotune.loop_settings(config, method.block, mesh, batches, layout)
        val_xs = evaluation.heldout_samples(process, config.data)["val"].x
        params, stages = staged.train_personax(config, workdir, method, mesh, batches, layout,
                                               val_xs, loop_settings=settings,
                                               stop_after_step=stop_after_step)
        if params is None:
            return None
        step = int(config.train.steps)
    else:
        state, step = train.train(config, workdir, method, mesh, batches, layout,
                                  **autotune.loop_settings(config, method, mesh, batches, layout),
                                  stop_after_step=stop_after_step)
        if step < int(config.train.steps):
            return None
        params = state.params
    train_seconds = time.time() - t0
    t1 = time.time()
    settings = host.status()
    report = {"source": "synthetic", "model": config.model.name, "preset": process.spec.name,
              "num_seeds": int(config.train.num_seeds), "steps": step,
              "train_seconds": train_seconds, "devices": mesh.devices.size,
              "malloc_tuning": settings["malloc_tuning"],
              "cpu_dispatch": settings["cpu_dispatch"],
              "cpu_dots": settings["cpu_dots"],
              "evaluation": evaluation.evaluate_run(method, params, process, config)}
    if stages is not None:
        report["stages"] = stages
    report["eval_seconds"] = time.time() - t1
    if config.eval.plots and lead_process:
        report["figures"] = plotting.all_figures(
            workdir, report["evaluation"], reporting.latent_names(process.spec.block_slices))
    if not lead_process:
        return reporting.clean(report)
    clean = reporting.write(workdir, report)
    print(reporting.markdown(clean))
    return clean
