"""A run's workdir: checked before any work, and locked while a run uses it.

``prepare(workdir)`` creates the folder or says in one line why it cannot be used.
``lock(workdir)`` writes ``workdir/run.lock`` (PID, host, start time) for the duration of a
run, so a second run on the same workdir stops at once instead of interleaving its metrics and
checkpoints with the first. A lock whose process no longer exists on this host (a run killed
with ``kill -9``, a crashed machine) is stale: it is replaced, with a warning. A lock held by a
process on another host cannot be checked from here; the message says how to remove it.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time

from crl_jax.errors import WorkdirError, warn

LOCK_FILE = "run.lock"
_held: set[str] = set()   # lock files this process holds now


def prepare(workdir: str, flag: str = "--workdir") -> str:
    """Create ``workdir`` if needed; raises WorkdirError naming the problem and the fix
    (``flag``: how the user gave the folder)."""
    if not isinstance(workdir, str) or not workdir.strip():
        raise WorkdirError(f"{flag} is empty; pass the directory for the outputs, "
                           f"e.g. {flag}=/tmp/crl_run")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"{flag}={workdir} is a file, not a directory; pass a new or "
                           f"existing directory")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"{flag}={workdir} cannot be created ({e.strerror or e}); pass "
                           f"a directory under a writable folder") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise WorkdirError(f"{flag}={workdir} is not writable by this user; pass a "
                           f"writable directory")
    return workdir


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}   # torn or empty: the writer died between creating and writing it


def _try_create(path: str, info: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    return True


def acquire(workdir: str) -> str:
    """Take ``workdir/run.lock``; returns its path. Raises WorkdirError if a live run holds it."""
    path = os.path.abspath(os.path.join(workdir, LOCK_FILE))
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        if _try_create(path, info):
            _held.add(path)
            return path
        other = _read(path)
        pid, host = other.get("pid"), other.get("host")
        same_host = host == info["host"]
        if path in _held or (same_host and isinstance(pid, int) and _alive(pid)
                             and pid != os.getpid()):
            raise WorkdirError(
                f"--workdir={workdir} is in use by another run (process {pid} on {host}, "
                f"started {other.get('started', '?')}; {path}); wait for it to finish or use "
                f"another --workdir")
        if not same_host and host is not None:
            raise WorkdirError(
                f"--workdir={workdir} is locked by process {pid} on host {host} ({path}); if "
                f"that run is no longer running, delete {path} and rerun")
        age = time.time() - os.path.getmtime(path) if os.path.exists(path) else 0
        if not other and age < 10:   # being written right now by a starting run
            time.sleep(0.5)
            continue
        warn(f"removing the stale lock {path} of process {pid} (no longer running)")
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    raise WorkdirError(f"--workdir={workdir}: could not take the lock {path}; delete it if no "
                       f"run uses this workdir")


def release(path: str) -> None:
    _held.discard(path)
    if _read(path).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def lock(workdir: str, enabled: bool = True):
    """Hold ``workdir/run.lock`` for the block (``enabled=False``: a no-op, for the processes
    other than 0 of a multi-process run, which share process 0's workdir)."""
    if not enabled:
        yield None
        return
    path = acquire(workdir)
    try:
        yield path
    finally:
        release(path)
