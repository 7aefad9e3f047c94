"""Host memory and dispatch settings for XLA:CPU (process-wide; applied by ``crl_jax.host.setup``).

:func:`tune_malloc`: XLA:CPU allocates every execution's temporaries with ``malloc`` and frees
them after it. glibc serves an allocation above its mmap threshold (dynamic, at most 32 MiB)
with a fresh ``mmap``, so a step with more temporaries than that page-faults all of them again
on every step. Raising the mmap and trim thresholds (``mallopt``) keeps freed temporaries in
the heap for the next step; a top pad above a thread arena's 64 MiB heap keeps glibc from
unmapping a heap that became entirely free. The cost: the process keeps the memory it freed.
``CRL_JAX_MALLOC_TUNING=0`` turns it off; a no-op away from glibc (macOS, musl).

:func:`set_cpu_dispatch`: with JAX's default asynchronous CPU dispatch a computation runs on a
worker thread whose arena heap is 64 MiB, so a step with more temporaries than that is still
mapped afresh every step. Inline dispatch (the default here) runs it on the calling thread,
whose main arena has no such cap; the price is that the ~0.4 ms dispatch is no longer
overlapped, which matters only for steps of about a millisecond (several steps per call,
``train.steps_per_call``, amortise it). JAX reads the setting when its backend starts, so it
must be set before the first JAX computation; ``CRL_JAX_CPU_DISPATCH=async`` keeps JAX's
default. Measurements: docs/PERFORMANCE.md.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 1 << 30       # allocations up to 1 GiB come from the heap
TRIM_THRESHOLD_BYTES = 2**31 - 1     # keep up to 2 GiB of freed memory at the heap top
TOP_PAD_BYTES = 128 << 20            # > a thread arena's 64 MiB heap: empty heaps are kept

DISPATCH_ENV = "CRL_JAX_CPU_DISPATCH"
DISPATCH_MODES = ("inline", "async")
_JAX_DISPATCH_FLAG = "jax_cpu_enable_async_dispatch"

_applied: dict | None = None


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        version = libc.gnu_get_libc_version().decode()
        _ = libc.mallopt
    except (OSError, AttributeError):
        return None   # not glibc
    return libc, version


def tune_malloc() -> dict:
    """Apply the thresholds once per process; returns what was done (for logs and reports):
    ``{"applied": bool, "reason": str, ...}``."""
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get("CRL_JAX_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no"):
        _applied = {"applied": False, "reason": "CRL_JAX_MALLOC_TUNING=0"}
        return _applied
    found = _glibc()
    if found is None:
        _applied = {"applied": False, "reason": "not glibc (nothing to tune)"}
        return _applied
    libc, version = found
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    ok_pad = libc.mallopt(_M_TOP_PAD, TOP_PAD_BYTES) == 1
    ok = ok_mmap and ok_trim and ok_pad
    _applied = {"applied": ok, "glibc": version,
                "mmap_threshold": MMAP_THRESHOLD_BYTES if ok_mmap else None,
                "trim_threshold": TRIM_THRESHOLD_BYTES if ok_trim else None,
                "top_pad": TOP_PAD_BYTES if ok_pad else None,
                "reason": "" if ok else "mallopt refused a setting"}
    return _applied


def cpu_dispatch_mode() -> str:
    """``"inline"`` or ``"async"``: how JAX dispatches single-device CPU computations now."""
    import jax
    return "async" if jax.config.values[_JAX_DISPATCH_FLAG] else "inline"


def set_cpu_dispatch(mode: str | None = None) -> dict:
    """Make JAX run single-device CPU computations ``"inline"`` on the calling thread (the
    default) or ``"async"`` on a worker thread (JAX's default); ``mode=None`` reads
    ``$CRL_JAX_CPU_DISPATCH``. Call it before the first JAX computation: JAX reads the
    setting when its CPU backend starts. Returns ``{"dispatch": the mode in effect,
    "applied": whether it is the one asked for, "reason": why not}``; after the backend has
    started with the other mode it changes nothing and says so."""
    source = "mode"
    if mode is None:
        mode, source = os.environ.get(DISPATCH_ENV, "inline").strip().lower(), DISPATCH_ENV
    if mode not in DISPATCH_MODES:
        raise ValueError(f"{source}={mode!r}: CPU dispatch must be one of {DISPATCH_MODES} "
                         f"('inline': steps run on the calling thread, the default; 'async': "
                         f"JAX's default)")
    import jax
    from jax._src import xla_bridge

    current = cpu_dispatch_mode()
    if current == mode:
        return {"dispatch": mode, "applied": True, "reason": ""}
    if xla_bridge.backends_are_initialized():
        return {"dispatch": current, "applied": False,
                "reason": f"JAX's backend had already started with {current!r} dispatch (it "
                          f"reads the setting once, when it starts): call "
                          f"crl_jax.host.set_cpu_dispatch({mode!r}) before the first "
                          f"JAX computation"}
    jax.config.update(_JAX_DISPATCH_FLAG, mode == "async")
    return {"dispatch": mode, "applied": True, "reason": ""}
