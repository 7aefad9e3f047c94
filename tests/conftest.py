"""Shared test configuration. Other helpers may add fixtures here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# MNIST / Fashion-MNIST IDX files: $CRL_JAX_DATA_DIR, else ../shared/data from the repository root.
DATA_DIR = Path(os.environ.get("CRL_JAX_DATA_DIR") or REPO_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder holding mnist/ and fashion-mnist/ IDX gzip files (read-only; never downloaded)."""
    return DATA_DIR


# One persistent XLA compilation cache for the whole test session (all xdist workers and the
# subprocesses they start): identical train steps compiled by several tests are compiled once.
_CACHE = Path(os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "crl_jax_test_xla_cache")))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Tests run with the host settings the entry points use (inline CPU dispatch unless
# $CRL_JAX_CPU_DISPATCH says otherwise, glibc malloc tuning; XLA's default products library):
# JAX reads them when its backend starts, so before any test touches JAX.
from crl_jax import host  # noqa: E402

host.setup()
