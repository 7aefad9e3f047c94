"""Orbax checkpoints of the (seed-stacked) train state in ``workdir/checkpoints``.

:func:`open_and_restore` falls back to an older checkpoint when the latest cannot be read
(a file truncated by a full disk or a killed copy): the damaged step folder is moved aside to
``<folder>_damaged/<step>-<time>`` with a warning, and training resumes from the step before.
Each save writes ``<step>/crl_jax_sha256.json`` (size and SHA-256 of every file), so damage is
found by comparing files before Orbax reads them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import jax
import orbax.checkpoint as ocp

from crl_jax.errors import CheckpointError, warn


def manager(workdir: str, keep: int = 2, subdir: str = "checkpoints") -> ocp.CheckpointManager:
    """A manager of ``workdir/subdir`` keeping the last ``keep`` checkpoints."""
    path = os.path.abspath(os.path.join(workdir, subdir))
    options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True)
    return ocp.CheckpointManager(path, options=options)


MANIFEST = "crl_jax_sha256.json"


def _files(step_dir: str) -> dict[str, tuple[int, str]]:
    out = {}
    for root, _, names in os.walk(step_dir):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, step_dir)
            if rel.startswith(MANIFEST):
                continue
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[rel] = (os.path.getsize(path), h.hexdigest())
    return out


def save(mngr: ocp.CheckpointManager, step: int, state) -> None:
    mngr.save(int(step), args=ocp.args.StandardSave(state), force=True)
    mngr.wait_until_finished()
    if jax.process_index() == 0:
        step_dir = os.path.join(str(mngr.directory), str(int(step)))
        tmp = os.path.join(step_dir, MANIFEST + ".tmp")
        with open(tmp, "w") as f:
            json.dump(_files(step_dir), f)
        os.replace(tmp, os.path.join(step_dir, MANIFEST))


def damage(step_dir: str) -> str | None:
    """What is wrong with the files of a saved step (None: intact, or saved without a
    manifest)."""
    path = os.path.join(step_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            expected = {k: tuple(v) for k, v in json.load(f).items()}
    except ValueError:
        return f"its manifest {MANIFEST} is damaged"
    found = _files(step_dir)
    for rel, (size, digest) in expected.items():
        if rel not in found:
            return f"{rel} is missing"
        if found[rel][0] != size:
            return f"{rel} has {found[rel][0]} bytes, {size} were saved"
        if found[rel][1] != digest:
            return f"{rel} differs from what was saved"
    return None


def restore_latest(mngr: ocp.CheckpointManager, target):
    """(state, step) from the latest checkpoint, or (target, 0) when there is none."""
    step = mngr.latest_step()
    if step is None:
        return target, 0
    return mngr.restore(step, args=ocp.args.StandardRestore(target)), int(step)


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def open_and_restore(workdir: str, keep: int, subdir: str, target):
    """(manager, state, step, restored): the newest readable checkpoint of
    ``workdir/subdir`` restored into ``target`` (``restored`` False and step 0 when there is
    none). A checkpoint that cannot be read is moved aside with a warning and the one before
    it is tried; CheckpointError when none can be read."""
    mngr = manager(workdir, keep, subdir)
    folder = os.path.abspath(os.path.join(workdir, subdir))
    errors = []
    while True:
        step = mngr.latest_step()
        if step is None:
            break
        problem = damage(os.path.join(folder, str(step)))
        if problem is not None:
            errors.append((int(step), problem))
        else:
            try:
                state = mngr.restore(step, args=ocp.args.StandardRestore(target))
                return mngr, state, int(step), True
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: try the one before
                errors.append((int(step), _first_line(e)))
        mngr.close()
        aside = os.path.join(f"{folder}_damaged", f"{step}-{int(time.time())}")
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        shutil.move(os.path.join(folder, str(step)), aside)
        older = [s for s in manager(workdir, keep, subdir).all_steps()]
        warn(f"checkpoint step {step} in {folder} cannot be restored ({errors[-1][1]}); "
             f"moved it to {aside} and "
             + (f"trying step {max(older)}" if older else "found no older checkpoint"))
        mngr = manager(workdir, keep, subdir)
    if errors:
        mngr.close()
        steps = ", ".join(str(s) for s, _ in errors)
        raise CheckpointError(
            f"no checkpoint in {folder} is intact and restorable (steps {steps}, moved to "
            f"{folder}_damaged/; first problem: {errors[0][1]}); rerun to train from step 0, "
            f"or, if the config changed since they were saved, use a new --workdir")
    return mngr, target, 0, False
