"""Multi-process training: 2 processes on loopback train the same model as 1 process.

Process 0 is started with ``CRL_JAX_COORDINATOR=127.0.0.1:<free port>``,
``CRL_JAX_NUM_PROCESSES=2``, ``CRL_JAX_PROCESS_ID=0``, process 1 gets the same as arguments
(the ``crl_jax.main`` flags); both call ``parallel.maybe_initialize_distributed``
(``jax.distributed.initialize``; CPU collectives over gloo) and runs the real training loop ``train.train`` on the global 2-device mesh, each
process holding half of every batch. A third process trains the same config alone on one
device. Losses per step and final parameters must agree to float tolerance, and only
process 0 may write the metrics.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 420
STEPS, BATCH, SEEDS = 3, 64, 2

WORKER = textwrap.dedent(f"""
    import json, os, sys
    import jax, numpy as np
    from crl_jax import parallel
    # argv: workdir [coordinator num_processes process_id] (else the environment)
    coordinator, num, pid = (sys.argv[2], int(sys.argv[3]), int(sys.argv[4])) \
        if len(sys.argv) > 2 else ("", 0, -1)
    distributed = parallel.maybe_initialize_distributed(coordinator, num, pid)
    from configs import synthetic as cfgs
    from crl_jax import input_pipeline, train
    from crl_jax.experiments import synthetic as experiment
    config = cfgs.get_config("smoke")
    config.train.update(steps={STEPS}, warmup_steps=1, log_every=1, checkpoint_every={STEPS},
                        batch_size={BATCH}, num_seeds={SEEDS})
    config.model.hidden = (16,)
    config.model.prior_hidden = 4
    workdir = sys.argv[1]
    process, method, mesh = experiment.setup(config, workdir)
    batches = input_pipeline.BatchSource.from_process(
        process, config.data, config.train, parallel.batch_sharding(mesh))
    local_shards = [list(s.data.shape) for s in batches(0)[0].addressable_shards]
    state, step = train.train(config, workdir, method, mesh, batches,
                              experiment.model_layout(process.spec))
    params = jax.device_get(state.params)
    flat = {{jax.tree_util.keystr(k): np.asarray(v)
             for k, v in jax.tree_util.tree_leaves_with_path(params)}}
    pid = jax.process_index()
    np.savez(os.path.join(workdir, f"params_{{pid}}.npz"), **flat)
    with open(os.path.join(workdir, f"info_{{pid}}.json"), "w") as f:
        json.dump({{"distributed": distributed, "process_count": jax.process_count(),
                   "device_count": jax.device_count(), "step": step,
                   "mesh_devices": int(mesh.devices.size), "local_shards": local_shards}}, f)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CRL_JAX_") or k == "CRL_JAX_DATA_DIR"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="", **extra)  # one CPU device per process
    return env


def _start(workdir, env, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(workdir), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    """Wait for all (bounded); on timeout or failure kill the ones still running."""
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError(f"multi-process training did not finish within {TIMEOUT_S} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return outs


def _losses(workdir) -> np.ndarray:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1)), records
    return np.array([r["loss_per_seed"] for r in records])


@pytest.mark.slow
def test_two_processes_train_the_same_model_as_one(tmp_path):
    multi, single = tmp_path / "two_processes", tmp_path / "one_process"
    multi.mkdir()
    single.mkdir()
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [  # process 0 configured by environment variables, process 1 by arguments
        _start(multi, _env(CRL_JAX_COORDINATOR=coordinator, CRL_JAX_NUM_PROCESSES="2",
                           CRL_JAX_PROCESS_ID="0")),
        _start(multi, _env(), coordinator, "2", "1"),
        _start(single, _env())]
    _finish(procs)

    infos = [json.loads((multi / f"info_{i}.json").read_text()) for i in range(2)]
    ref_info = json.loads((single / "info_0.json").read_text())
    for info in infos:
        assert info["distributed"] and info["process_count"] == 2
        assert info["device_count"] == info["mesh_devices"] == 2
        assert info["step"] == STEPS
        # Each process holds exactly half of the global batch of every seed.
        assert info["local_shards"] == [[SEEDS, BATCH // 2, 3, 7]]
    assert not ref_info["distributed"] and ref_info["process_count"] == 1
    assert ref_info["local_shards"] == [[SEEDS, BATCH, 3, 7]]

    # Only process 0 writes the metrics (one line per logged step), the same losses as alone.
    losses = _losses(multi)
    np.testing.assert_allclose(losses, _losses(single), rtol=2e-5, atol=1e-5)
    assert np.all(np.isfinite(losses)) and np.all(losses[0] != losses[-1])  # it trained
    assert (multi / "checkpoints" / str(STEPS)).is_dir()

    ref = np.load(single / "params_0.npz")
    p0, p1 = np.load(multi / "params_0.npz"), np.load(multi / "params_1.npz")
    assert set(p0.files) == set(p1.files) == set(ref.files)
    for name in ref.files:
        np.testing.assert_array_equal(p0[name], p1[name], err_msg=name)  # one replicated state
        np.testing.assert_allclose(p0[name], ref[name], rtol=2e-4, atol=2e-6, err_msg=name)
