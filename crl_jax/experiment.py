"""From a config to the objects of one experiment: generator spec and process, model."""
from __future__ import annotations

import dataclasses
import json
import os

import jax

import synthetic
from crl_jax.models import vae

NUMERICAL_PRESETS = ("numerical_case1", "numerical_case2", "numerical_case3")


def spec_overrides(data_cfg) -> dict:
    """The data fields each preset understands."""
    out = _optional_overrides(data_cfg)
    preset = data_cfg.preset
    if preset in NUMERICAL_PRESETS:
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


def data_layout(spec) -> vae.ModelLayout:
    """Shapes of the data as generated (all measurements, true latent sizes)."""
    return vae.ModelLayout(
        names=tuple(m.name for m in spec.modalities),
        obs_shapes=tuple(tuple(s) for s in spec.obs_shapes),
        n_measurements=tuple(spec.n_measurements),
        latent_dims=tuple(m.latent_dim for m in spec.modalities),
        eta_dims=tuple(m.eta_dim for m in spec.modalities),
        shared_dim=int(spec.shared_dim),
    )


def build_layout(spec, model_cfg) -> vae.ModelLayout:
    """The model's layout: the data's shapes with the model's latent sizes."""
    latent_dims = tuple(int(d) for d in model_cfg.latent_dims) or tuple(
        m.latent_dim for m in spec.modalities)
    eta_dims = tuple(m.eta_dim for m in spec.modalities)
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
