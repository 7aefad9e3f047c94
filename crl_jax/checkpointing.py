"""Orbax checkpoints of the (seed-stacked) train state in ``workdir/checkpoints``."""
from __future__ import annotations

import os

import orbax.checkpoint as ocp


def manager(workdir: str, keep: int = 2, subdir: str = "checkpoints") -> ocp.CheckpointManager:
    """A manager of ``workdir/subdir`` keeping the last ``keep`` checkpoints."""
    path = os.path.abspath(os.path.join(workdir, subdir))
    options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True)
    return ocp.CheckpointManager(path, options=options)


def save(mngr: ocp.CheckpointManager, step: int, state) -> None:
    mngr.save(int(step), args=ocp.args.StandardSave(state), force=True)
    mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, target):
    """(state, step) from the latest checkpoint, or (target, 0) when there is none."""
    step = mngr.latest_step()
    if step is None:
        return target, 0
    return mngr.restore(step, args=ocp.args.StandardRestore(target)), int(step)
