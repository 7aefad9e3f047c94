"""Training of ``personax``: stage A, then the two phases of stage B (see
``crl_jax/methods/personax.py`` for the method).

Each stage is an ordinary run of :func:`crl_jax.train.train` (jitted, seed-vmapped,
checkpointed, resumable) with its own checkpoint folder, its steps appended to
``metrics.jsonl`` after the previous stage's (``stage`` field). Rerunning the command resumes
the stage it stopped in; finished stages are restored from their last checkpoint. Stage B
is trained on stage A's final parameters: when those change (a resume with more
``train.steps``), the stage-B checkpoints are of the old stage A and are removed, so that stage
B trains again (``stage_a.sha256`` in the workdir fingerprints the stage A they were built on).
``restore_only=True`` (diagnostics of a finished run, :mod:`crl_jax.remixing`) restores the three
stages and refuses, without training or writing anything, when one is unfinished or stage A's
fingerprint differs from the recorded one.

| stage | what trains | steps | checkpoints |
| --- | --- | --- | --- |
| ``blocks`` | the multiview encoders | ``train.steps`` | ``checkpoints/`` |
| ``orders`` | ``stage_b.restarts`` replicas per within-block order and flow capacity | ``stage_b.steps`` | ``checkpoints_orders/`` |
| ``sparsity`` | ``stage_b.restarts`` replicas per lambda | ``stage_b.steps`` | ``checkpoints_sparsity/`` |
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from crl_jax import checkpointing, parallel, resume, steps, train
from crl_jax.errors import CheckpointError, ResumeError, warn
from crl_jax.methods import personax

STAGES = ("blocks", "orders", "sparsity")
STAGE_B_DIRS = ("checkpoints_orders", "checkpoints_sparsity")
FINGERPRINT = "stage_a.sha256"


def fingerprint(params) -> str:
    """sha256 of a parameter tree's values (host copies, in tree order)."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(jax.device_get(params)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def drop_stale_stage_b(workdir, params_a, *, restore_only: bool = False) -> None:
    """Remove stage-B checkpoints built on another stage A than ``params_a`` and record the
    fingerprint of ``params_a`` (before stage B saves anything). ``restore_only``: write and
    remove nothing; ResumeError when the recorded fingerprint is missing or differs."""
    if not workdir:
        return
    path = os.path.join(workdir, FINGERPRINT)
    new = fingerprint(params_a)
    old = open(path).read().strip() if os.path.exists(path) else None
    if restore_only:
        if old != new:
            raise ResumeError(
                f"{workdir}: stage A's parameters (sha256 {new[:12]}) are not the ones stage B "
                f"was trained on ({path}: {'missing' if old is None else old[:12]}); refusing "
                f"to restore (restore_only: a normal rerun would retrain stage B)")
        return
    stale = [d for d in STAGE_B_DIRS if os.path.isdir(os.path.join(workdir, d))]
    if old is not None and old != new and stale:
        warn(f"{workdir}: stage A changed since stage B was trained (a resume with other "
             f"train.steps); removing {', '.join(stale)} so that stage B trains again")
        for d in stale:
            shutil.rmtree(os.path.join(workdir, d))
    if old != new:
        os.makedirs(workdir, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write(new + "\n")
        os.replace(path + ".tmp", path)


def require_finished(workdir, subdir: str, total: int, stage: str) -> None:
    """CheckpointError unless ``workdir/subdir`` holds an intact checkpoint at step >= ``total``
    as its newest (read-only: what :func:`crl_jax.train.train` would restore)."""
    folder = os.path.join(workdir or "", subdir)
    last = resume.progress(workdir).get(subdir) if workdir else None
    if last is None or last < int(total):
        raise CheckpointError(
            f"{folder}: stage {stage} is unfinished (newest checkpoint "
            f"{'none' if last is None else f'step {last}'}, needs step {int(total)}); refusing "
            f"to train (restore_only): finish the run with its training command first")
    problem = checkpointing.damage(os.path.join(folder, str(last)))
    if problem is not None:
        raise CheckpointError(f"{folder}: the checkpoint of step {last} is damaged ({problem}); "
                              f"refusing to repair it (restore_only)")


def stage_config(config):
    """``config`` with ``train`` set up for a stage-B phase (steps, warm-up)."""
    cfg = config.copy_and_resolve_references()
    cfg.train.steps = int(config.stage_b.steps)
    cfg.train.warmup_steps = int(config.stage_b.warmup_steps)
    return cfg


def standardisation(block, params_a, batches, n_batches: int = 8) -> dict:
    """Per-seed mean and std of the stage-A representation over ``n_batches`` training
    batches (those of steps 0.., the same on every rerun)."""
    encode = jax.jit(jax.vmap(block.encode))
    reps = [encode(params_a, tuple(batches(i))) for i in range(n_batches)]
    r = jnp.concatenate(reps, axis=1)                          # (S, n, D)
    return {"mean": jnp.mean(r, axis=1), "std": jnp.std(r, axis=1) + 1e-6}


def _initial_state(stage, config, mesh, data_layout, params_a, stats, orders, lambdas,
                   capacity):
    """Fresh stage-B train state whose frozen parameters are the given ones (per seed)."""
    t_cfg = config.train
    state = steps.create_train_states(stage, train.example_input(data_layout),
                                      stage.optimizer(t_cfg), int(t_cfg.seed),
                                      int(t_cfg.num_seeds))
    # copies: the train step donates its state, and the next phase needs these again
    params_a, stats = jax.tree.map(jnp.copy, (params_a, stats))
    params = dict(state.params, block=params_a, standardise=stats,
                  orders=jnp.asarray(orders, jnp.float32),
                  lambdas=jnp.asarray(lambdas, jnp.float32),
                  capacity=jnp.asarray(capacity, jnp.float32))
    return jax.device_put(state.replace(params=params), parallel.replicated(mesh))


def train_personax(config, workdir, method: personax.PersonaXMethod, mesh, batches,
                   data_layout, val_xs, *, loop_settings=None, stop_after_step=None,
                   restore_only: bool = False):
    """Train both stages; returns ``(stage-B params of the sparsity phase, info)`` or
    ``(None, info)`` when stopped early. ``val_xs``: the validation sample's observations
    (the order choice between the phases reads them). ``restore_only``: restore finished
    stages only; raise (CheckpointError / ResumeError) instead of training, repairing or
    writing anything when a stage is unfinished or stage A's fingerprint differs."""
    loop_settings = dict(loop_settings or {})
    loop_settings.pop("microbatches", None)    # InfoNCE and the replicas' penalty compare rows
    n_seeds = int(config.train.num_seeds)
    total_a, total_b = int(config.train.steps), int(config.stage_b.steps)
    info = {"stage_steps": {"blocks": total_a, "orders": total_b, "sparsity": total_b}}
    if restore_only:   # all three checked before anything is restored
        for subdir, stage, total in (("checkpoints", "blocks", total_a),
                                     (STAGE_B_DIRS[0], "orders", total_b),
                                     (STAGE_B_DIRS[1], "sparsity", total_b)):
            require_finished(workdir, subdir, total, stage)

    state_a, step = train.train(config, workdir, method.block, mesh, batches, data_layout,
                                stop_after_step=stop_after_step, stage="blocks",
                                **loop_settings)
    if step < total_a:
        return None, info
    params_a = state_a.params
    drop_stale_stage_b(workdir, params_a, restore_only=restore_only)
    stats = standardisation(method.block, params_a, batches)
    cfg_b = stage_config(config)
    stop = None if stop_after_step is None else int(stop_after_step) - total_a

    # phase 1: within-block orders
    candidates, capacity = method.order_replicas()
    stage1 = method.component_stage(len(candidates))
    lam_order = float(config.stage_b.order_lambda)
    init1 = _initial_state(stage1, cfg_b, mesh, data_layout, params_a, stats,
                           np.broadcast_to(candidates, (n_seeds,) + candidates.shape),
                           np.full((n_seeds, len(candidates)), lam_order),
                           np.broadcast_to(capacity, (n_seeds,) + capacity.shape))
    state1, step = train.train(cfg_b, workdir, stage1, mesh, batches, data_layout,
                               checkpoint_dir="checkpoints_orders", step_offset=total_a,
                               initial_state=init1, stop_after_step=stop, stage="orders",
                               **loop_settings)
    if step < total_b:
        return None, info
    scores = jax.jit(jax.vmap(stage1.scores, in_axes=(0, None)))(state1.params, tuple(val_xs))
    margin = float(config.stage_b.nll_margin)
    chosen, chosen_capacity = jax.vmap(lambda o, c, b: personax.choose_block_flows(
        o, c, b, method.block_sizes, margin))(
        state1.params["orders"], state1.params["capacity"], scores["block_loss"])
    info["orders"] = np.asarray(chosen)
    info["flow_layers"] = np.asarray(chosen_capacity)
    info["order_block_loss"] = np.asarray(scores["block_loss"])

    # phase 2: sparsity path with the chosen orders and capacities; its flows hold only the
    # couplings some block chose (the others would be gated off in every replica anyway)
    lambdas = method.replica_lambdas
    stage2 = trimmed(method, int(np.max(info["flow_layers"]))).component_stage(len(lambdas))
    init2 = _initial_state(stage2, cfg_b, mesh, data_layout, params_a, stats,
                           jnp.broadcast_to(chosen[:, None], (n_seeds, len(lambdas)) +
                                            chosen.shape[1:]),
                           np.broadcast_to(lambdas, (n_seeds, len(lambdas))),
                           jnp.broadcast_to(chosen_capacity[:, None],
                                            (n_seeds, len(lambdas), len(method.block_sizes))))
    stop = None if stop is None else stop - total_b
    state2, step = train.train(cfg_b, workdir, stage2, mesh, batches, data_layout,
                               checkpoint_dir="checkpoints_sparsity",
                               step_offset=total_a + total_b, initial_state=init2,
                               stop_after_step=stop, stage="sparsity", **loop_settings)
    if step < total_b:
        return None, info
    return padded(method, state2.params), info


def trimmed(method: personax.PersonaXMethod, n_layers: int) -> personax.PersonaXMethod:
    """``method`` whose flows have ``n_layers`` couplings (at most its own)."""
    n_layers = min(int(n_layers), int(method.flow.n_layers))
    if n_layers == method.flow.n_layers:
        return method
    return dataclasses.replace(method, flow=method.flow.clone(n_layers=n_layers))


def padded(method: personax.PersonaXMethod, params: dict) -> dict:
    """Stage-B parameters (seeds x replicas) whose flows lack some of ``method.flow``'s
    couplings -> the full structure, the missing layers at their initial values.
    They lie beyond every replica's ``capacity``, so the flows compute the same function."""
    lead = params["lambdas"].shape                       # (seeds, replicas)
    d = method.layout.latent_dim
    full = traverse_util.flatten_dict(
        method.flow.init(jax.random.PRNGKey(0), jnp.zeros((2, d)))["params"])
    have = traverse_util.flatten_dict(params["replicas"]["flow"])
    flow = traverse_util.unflatten_dict(
        {k: have[k] if k in have else jnp.broadcast_to(v, lead + v.shape)
         for k, v in full.items()})
    return dict(params, replicas=dict(params["replicas"], flow=flow))
