"""Resuming a run: the saved config against the new one, and the config history.

A workdir with progress (a checkpoint in any ``checkpoints*/`` folder, or a ``report.json``)
is continued only with a config that trains the same model on the same data. Fields that
change the model, the data, the loss or the optimisation are an error that lists them. The
fields in :data:`ALLOWED_ON_RESUME` may change: how long to train and how to log, checkpoint and
evaluate. Each start appends an entry to ``config.json["_history"]`` (time, the checkpoint
steps it resumed from, the fields that changed); the rest of ``config.json`` is the config
of the latest start, and the report lists the changes made on resume.
"""
from __future__ import annotations

import fnmatch
import json
import os
import time

from crl_jax.errors import ResumeError, warn

HISTORY_KEY = "_history"

# field (glob) -> why changing it on resume is sound
ALLOWED_ON_RESUME = {
    "train.steps": "train longer (or stop sooner); the cosine schedule then decays over the "
                   "new total, so the steps after the resume follow a stretched schedule",
    "train.log_every": "metrics cadence",
    "train.checkpoint_every": "checkpoint cadence",
    "train.keep_checkpoints": "how many checkpoints are kept",
    "train.progress": "progress bar",
    "train.steps_per_call": "steps per dispatch (the same steps)",
    "train.microbatch_size": "gradient accumulation chunks (the same per-sample mean loss)",
    "train.prefetch_steps": "batches drawn per sampler call (the same batches)",
    "train.divergence_factor": "when a growing loss stops training",
    "eval.*": "evaluation after training",
    "causal_discovery.*": "PC after training (PersonaX tables)",
    "data.eval_fit_size": "held-out evaluation samples",
    "data.val_size": "held-out evaluation samples",
    "data.test_size": "held-out evaluation samples",
    "data.data_dir": "where the image files are (the images themselves are compared)",
}


def allowed(field: str) -> bool:
    return any(fnmatch.fnmatchcase(field, pattern) for pattern in ALLOWED_ON_RESUME)


def flatten(tree, prefix: str = "") -> dict:
    """Nested dicts -> {"a.b.c": leaf}."""
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def as_json(config) -> dict:
    """The config as config.json holds it (JSON types: tuples are lists)."""
    return json.loads(config.to_json_best_effort())


def progress(workdir: str) -> dict[str, int]:
    """{checkpoint folder: latest committed step} of every ``checkpoints*`` folder."""
    out = {}
    if not os.path.isdir(workdir):
        return out
    for name in sorted(os.listdir(workdir)):
        path = os.path.join(workdir, name)
        if name.startswith("checkpoints") and os.path.isdir(path):
            steps = [int(s) for s in os.listdir(path) if s.isdigit()]
            if steps:
                out[name] = max(steps)
    return out


def load(workdir: str) -> dict | None:
    """config.json of ``workdir`` (with its history), or None when there is none."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise ResumeError(f"{path} is damaged ({e}); it records the config of the run in "
                          f"this workdir: restore it, or use a new --workdir") from None


def diff(old: dict, new: dict) -> dict[str, list]:
    """{field: [old value, new value]} of the fields whose values differ; fields the saved
    config lacks (written by an older version) are left out."""
    a, b = flatten(old), flatten(new)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b))
            if k in a and a.get(k) != b.get(k)}


def _fmt(v) -> str:
    return json.dumps(v) if not isinstance(v, str) else repr(v)


def check(config, workdir: str) -> dict[str, list]:
    """The changed fields when ``workdir`` holds progress of a run; raises ResumeError when
    one of them may not change on resume."""
    saved = load(workdir)
    done = progress(workdir)
    finished = os.path.exists(os.path.join(workdir, "report.json"))
    if saved is None or not (done or finished):
        return {}
    saved = {k: v for k, v in saved.items() if k != HISTORY_KEY}
    new = as_json(config)
    missing = sorted(set(flatten(new)) - set(flatten(saved)))
    if missing:
        warn(f"{os.path.join(workdir, 'config.json')} has no {', '.join(missing)} (written by "
             f"an older version); the run goes on with the values given now")
    changes = diff(saved, new)
    bad = {k: v for k, v in changes.items() if not allowed(k)}
    if bad:
        where = (", ".join(f"{d} at step {s}" for d, s in done.items()) if done
                 else "a finished report")
        listed = "; ".join(f"{k}: {_fmt(a)} -> {_fmt(b)}" for k, (a, b) in bad.items())
        raise ResumeError(
            f"--workdir={workdir} holds a run ({where}) whose config differs in fields that "
            f"change the model, data or optimisation: {listed}. Use a new --workdir for the "
            f"new config, or rerun with the saved values (config.json). Fields that may change "
            f"on resume: {', '.join(ALLOWED_ON_RESUME)}")
    return changes


def record(workdir: str, config) -> str:
    """Write ``config.json``: this config plus the history of every start."""
    path = os.path.join(workdir, "config.json")
    try:
        saved = load(workdir)
    except ResumeError:
        saved = None
        os.replace(path, path + f".damaged-{int(time.time())}")
        warn(f"{path} was damaged; kept it as {path}.damaged-* and wrote a new one")
    new = as_json(config)
    history = []
    if saved is not None:
        history = saved.pop(HISTORY_KEY, None) or [{"started": None, "resumed_from": {},
                                                    "changed": {}}]
    done = progress(workdir)
    history.append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed_from": done,
                    "changed": diff(saved, new) if saved is not None else {}})
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({**new, HISTORY_KEY: history}, f, indent=1)
    os.replace(tmp, path)
    return path


def changes_on_resume(workdir: str) -> list[dict]:
    """The history entries that resumed a run with changed fields (for the report)."""
    try:
        saved = load(workdir) or {}
    except ResumeError:
        return []
    return [e for e in saved.get(HISTORY_KEY, []) if e.get("resumed_from") and e.get("changed")]
