"""Data parallelism: a 1-D device mesh with a ``data`` axis (jit + NamedSharding).

The batch is sharded along its example axis, parameters and optimiser state are
replicated; XLA inserts the gradient all-reduce. This replaces ``pmap``. On a multi-host
run, call :func:`maybe_initialize_distributed` first so that ``jax.devices()`` spans all
hosts.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 1) -> NamedSharding:
    """Shard axis ``batch_axis`` (axis 1 under the leading seed axis) over ``data``."""
    return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def needs_step_sync(mesh: Mesh) -> bool:
    """Several CPU devices: block on each step (JAX's CPU collectives can deadlock when
    many steps are dispatched without waiting)."""
    return mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu"


def maybe_initialize_distributed(coordinator: str = "", num_processes: int = 0,
                                 process_id: int = -1) -> bool:
    """``jax.distributed.initialize`` when flags or the usual environment ask for it.

    Arguments (``crl_jax.main`` flags ``--coordinator``, ``--num_processes``,
    ``--process_id``) win over the environment variables ``CRL_JAX_COORDINATOR`` (host:port
    of process 0), ``CRL_JAX_NUM_PROCESSES``, ``CRL_JAX_PROCESS_ID``. On Cloud TPU, SLURM,
    Open MPI and Kubernetes, ``jax.distributed.initialize()`` with no arguments detects
    all three; set ``CRL_JAX_DISTRIBUTED=auto`` for that. See docs/DISTRIBUTED.md.
    """
    coordinator = coordinator or os.environ.get("CRL_JAX_COORDINATOR", "")
    num_processes = num_processes or int(os.environ.get("CRL_JAX_NUM_PROCESSES", "0"))
    if process_id < 0:
        process_id = int(os.environ.get("CRL_JAX_PROCESS_ID", "-1"))
    auto = os.environ.get("CRL_JAX_DISTRIBUTED", "") == "auto"
    if not coordinator and not auto:
        return False
    # CPU processes exchange gradients over gloo (older jax defaulted to no collectives).
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if auto:
        jax.distributed.initialize()
        return True
    if num_processes <= 0 or process_id < 0:
        raise ValueError("distributed run: set the number of processes and this process's id "
                         "(CRL_JAX_NUM_PROCESSES, CRL_JAX_PROCESS_ID) along with "
                         "CRL_JAX_COORDINATOR.")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return True
