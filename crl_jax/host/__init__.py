"""Host (CPU) tuning, applied once per process at start-up, before the first JAX computation.

    from crl_jax import host
    host.setup(config)      # first cell of a notebook; crl_jax.main and crl_jax.sweep do it

:func:`setup` runs each step inline on the calling thread (:mod:`crl_jax.host.memory`), picks
the library of XLA:CPU's matrix products for the run (:mod:`crl_jax.host.dots`) and tunes
glibc's malloc so that XLA's per-step temporaries are reused (:mod:`crl_jax.host.memory`).
None of it changes what is computed beyond the rounding of the products; it only changes how
fast the CPU runs it. The model, loss and training loop do not import this package; the
pipelines (``crl_jax.experiments``) record :func:`status` in every report and resolve the
loop's automatic settings with :mod:`crl_jax.host.autotune`.

User-facing switches: ``CRL_JAX_CPU_DISPATCH=async`` (JAX's default dispatch),
``CRL_JAX_CPU_DOTS=ynnpack|eigen`` (force a products library), ``CRL_JAX_MALLOC_TUNING=0``
(glibc's defaults).
"""
from __future__ import annotations

from crl_jax.host import dots, memory
from crl_jax.host.dots import set_cpu_dots
from crl_jax.host.memory import cpu_dispatch_mode, set_cpu_dispatch, tune_malloc

_NOT_SET_UP = "crl_jax.host.setup() was not called before the first JAX computation"
_settings: dict = {}


def setup(configs=None, *, verbose: bool = False) -> dict:
    """Apply the host settings for the runs of ``configs`` (one config, a list of them for a
    sweep, or None: no products-library choice). Call before the first JAX computation; a
    later call changes nothing that JAX has already read and says so in what it returns.
    Returns (and remembers, for :func:`status`) ``{"cpu_dispatch": ..., "cpu_dots": ...,
    "malloc_tuning": ...}``; ``verbose`` prints them on one line."""
    _settings["cpu_dispatch"] = memory.set_cpu_dispatch()
    if configs is not None:
        _settings["cpu_dots"] = dots.apply(configs)
    _settings["malloc_tuning"] = memory.tune_malloc()
    out = status()
    if verbose:
        print(describe(out), flush=True)
    return out


def status() -> dict:
    """What is in effect now, in the form reports record (``cpu_dispatch``, ``cpu_dots``,
    ``malloc_tuning``); a setting :func:`setup` did not apply says so."""
    return {
        "cpu_dispatch": _settings.get("cpu_dispatch") or {
            "dispatch": memory.cpu_dispatch_mode(), "applied": False, "reason": _NOT_SET_UP},
        "cpu_dots": _settings.get("cpu_dots") or {
            "dots": dots.in_effect(), "applied": False, "reason": _NOT_SET_UP},
        "malloc_tuning": _settings.get("malloc_tuning") or {
            "applied": False, "reason": _NOT_SET_UP},
    }


def describe(settings: dict) -> str:
    """One line for the console: the dispatch, the products library and why, malloc."""
    d, p, m = settings["cpu_dispatch"], settings["cpu_dots"], settings["malloc_tuning"]
    why = f" ({p['reason']})" if p.get("reason") else ""
    return (f"host: {d['dispatch']} CPU dispatch; XLA:CPU products on {p['dots']}{why}; "
            f"malloc tuning {'on' if m.get('applied') else 'off'}"
            + ("" if m.get("applied") else f" ({m.get('reason', '')})"))


__all__ = ["cpu_dispatch_mode", "describe", "dots", "memory", "set_cpu_dispatch",
           "set_cpu_dots", "setup", "status", "tune_malloc"]
