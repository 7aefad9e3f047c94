"""Which library runs XLA:CPU's float32 matrix products: YNNPACK (XLA's default) or Eigen.

On the project's 2-core CPU, YNNPACK runs a product of fewer than ~768 rows on one thread,
where Eigen uses both cores once a product is big enough; for tiny products YNNPACK's lower
overhead wins, and the convolutional image model is a few per cent slower with Eigen.
:func:`choose` therefore picks Eigen when the widest hidden product of one seed's step,
rows x width^2 (rows = the per-seed batch, or ``train.microbatch_size``), reaches
``EIGEN_MIN_PRODUCT``, the run trains at most ``EIGEN_MAX_SEEDS`` seeds together (with more,
Eigen was not clearly faster) and the encoder is not convolutional; YNNPACK otherwise.
The choice and its reason are printed at start-up and recorded in ``report.json``
(``cpu_dots``). ``$CRL_JAX_CPU_DOTS`` (``auto``, ``ynnpack``, ``eigen``) overrides it, and an
``XLA_FLAGS`` that already sets ``--xla_cpu_experimental_ynn_fusion_type`` is left alone.

The choice is an XLA flag read once per process when JAX's backend starts, so
:func:`set_cpu_dots` works only before the first JAX computation. Only the rounding of the
products differs between the libraries. On a GPU or TPU the step does not run on XLA:CPU, so
the choice does not touch it. Measurements: docs/PERFORMANCE.md.
"""
from __future__ import annotations

import os
import subprocess
import sys

ENV = "CRL_JAX_CPU_DOTS"
CHOICES = ("auto", "ynnpack", "eigen")
LIBRARIES = ("ynnpack", "eigen")
XLA_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
EIGEN_FLAG = XLA_FLAG + "="   # no YNNPACK fusions: XLA:CPU's own (Eigen) products
EIGEN_MIN_PRODUCT = 256 * 128 * 128   # rows x width^2: 256 rows at width 128
EIGEN_MAX_SEEDS = 5   # 1-5 seeds: Eigen 1.01-1.26x faster; 6-8: 0.94-1.07x, no clear gain

_PROBE = """
import jax, jax.numpy as jnp
x = jnp.ones((64, 128), jnp.float32)
text = jax.jit(jnp.dot).lower(x, x.T).compile().as_text()
raise SystemExit(3 if "__ynn_fusion" in text else 0)
"""
_probe_result: tuple[bool, str] | None = None
_added = False   # whether XLA_FLAGS holds EIGEN_FLAG because this module put it there


def requested() -> str:
    """``$CRL_JAX_CPU_DOTS`` (default ``auto``), checked."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV}={value!r}: must be one of {CHOICES} ('auto': chosen from the "
                         f"run's config, the default; 'ynnpack': XLA's default; 'eigen')")
    return value


def product_size(config) -> int | None:
    """rows x width^2 of the widest hidden-layer product of one seed's step; ``None`` when
    the config does not say (it is validated later, with errors that name the field)."""
    try:
        rows = int(config.train.get("microbatch_size", 0) or 0)
        if rows <= 0:   # 0: one pass; -1 (auto): chunks of >= 1024 rows where it splits
            rows = int(config.train.batch_size)
        width = max(int(h) for h in config.model.hidden)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return rows * width * width


def choose(configs) -> tuple[str, str]:
    """``(library, why)`` for the runs of ``configs`` (one config or several, as a sweep's
    entries, which share one process and so one library: Eigen only if all of them would
    pick it)."""
    configs = list(configs) if isinstance(configs, (list, tuple)) else [configs]
    value = requested()
    if value != "auto":
        return value, f"{ENV}={value}"
    for config in configs:
        if str(config.model.get("encoder", "mlp")) == "conv":
            return "ynnpack", "convolutional encoder (its step is slower with Eigen)"
        size = product_size(config)
        if size is None:
            return "ynnpack", "no batch size or hidden widths in the config"
        seeds = int(config.train.get("num_seeds", 1) or 1)
        if seeds > EIGEN_MAX_SEEDS:
            return "ynnpack", (f"{seeds} seeds > {EIGEN_MAX_SEEDS} (with many seeds Eigen "
                               f"was not clearly faster)")
        if size < EIGEN_MIN_PRODUCT:
            return "ynnpack", (f"widest product rows x width^2 = {size:,} < "
                               f"{EIGEN_MIN_PRODUCT:,} (small products: YNNPACK is faster)")
    return "eigen", (f"widest product rows x width^2 >= {EIGEN_MIN_PRODUCT:,}, <= "
                     f"{EIGEN_MAX_SEEDS} seeds (Eigen uses both cores on it, YNNPACK one)")


def in_effect() -> str:
    """The library ``XLA_FLAGS`` selects now (what a backend started now would use)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    values = [f.split("=", 1)[1] if "=" in f else "" for f in flags
              if f.split("=", 1)[0] == XLA_FLAG]
    if not values:
        return "ynnpack"
    return "eigen" if values[-1] == "" else "ynnpack"


def _flag_supported() -> tuple[bool, str]:
    """Whether this jaxlib accepts the flag and it removes the YNNPACK fusions, checked once
    in a child process (XLA aborts the process on an unknown flag)."""
    global _probe_result
    if _probe_result is None:
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " "
                                           + EIGEN_FLAG).strip(), JAX_PLATFORMS="cpu")
        try:
            rc = subprocess.run([sys.executable, "-c", _PROBE], env=env, timeout=120,
                                capture_output=True).returncode
        except (OSError, subprocess.TimeoutExpired) as err:
            _probe_result = (False, f"the check of {EIGEN_FLAG} failed to run ({err})")
        else:
            if rc == 0:
                _probe_result = (True, "")
            elif rc == 3:
                _probe_result = (False, f"{EIGEN_FLAG} leaves YNNPACK fusions in place on "
                                        f"this jaxlib; products stay on YNNPACK")
            else:
                _probe_result = (False, f"this jaxlib does not accept {EIGEN_FLAG} (the check "
                                        f"exited with {rc}); products stay on YNNPACK")
    return _probe_result


def set_cpu_dots(library: str, why: str = "") -> dict:
    """Make XLA:CPU run float32 products with ``library`` (``"ynnpack"`` or ``"eigen"``)
    from the next backend start: adds or removes ``EIGEN_FLAG`` in ``XLA_FLAGS``. Call it
    before the first JAX computation. Returns ``{"dots": the library in effect, "applied":
    whether it is the one asked for, "reason": why (not)}``."""
    from jax._src import xla_bridge

    global _added
    if library not in LIBRARIES:
        raise ValueError(f"library={library!r}: must be one of {LIBRARIES}")
    flags = os.environ.get("XLA_FLAGS", "")
    current = in_effect()
    if XLA_FLAG in flags and not _added:
        return {"dots": current, "applied": current == library,
                "reason": f"XLA_FLAGS sets {XLA_FLAG} itself; left as it is"}
    if current == library:
        return {"dots": current, "applied": True, "reason": why}
    if xla_bridge.backends_are_initialized():
        return {"dots": current, "applied": False,
                "reason": f"JAX's backend had already started with {current} products (XLA "
                          f"reads XLA_FLAGS once, when it starts): call "
                          f"crl_jax.host.set_cpu_dots({library!r}) before the first JAX "
                          f"computation, or set {ENV}={library} for the entry points"}
    if library == "ynnpack":   # drop the flag this module added earlier in the process
        kept = [f for f in flags.split() if f != EIGEN_FLAG]
        os.environ["XLA_FLAGS"] = " ".join(kept)
        _added = False
        return {"dots": "ynnpack", "applied": True, "reason": why}
    ok, problem = _flag_supported()
    if not ok:
        return {"dots": current, "applied": False, "reason": problem}
    os.environ["XLA_FLAGS"] = (flags + " " + EIGEN_FLAG).strip()
    _added = True
    return {"dots": "eigen", "applied": True, "reason": why}


def apply(configs) -> dict:
    """:func:`choose` for ``configs``, then :func:`set_cpu_dots` (the entry points)."""
    return set_cpu_dots(*choose(configs))
