"""The data-parallel step on 8 (forced CPU) devices equals the single-device step, in one
pass (personax's stage A and the causal-prior VAE) and with gradient accumulation over 4
microbatches (the VAE; each microbatch spread over all devices). The default run checks
personax's stage A (120 s on 2 EPYC cores, a cold compilation cache); the VAE's two cases
are `slow` (the three cases together took 226 s)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from configs import synthetic as cfgs
    from crl_jax import input_pipeline, parallel, train
    from crl_jax.experiments import synthetic as experiment
    # personax's stage A (InfoNCE compares rows across the batch: one pass only) and the
    # causal-prior VAE, in one pass and in 4 microbatches
    for name, microbatches in json.loads(sys.argv[1]):
        config = cfgs.get_config("smoke")
        config.train.batch_size = 64
        config.model.name = name
        config.loss.sparsity = "weights"   # the VAE's L1 on |W|: a per-sample loss (chunks)
        results = []
        for devices in (jax.devices()[:1], jax.devices()):
            mesh = parallel.make_mesh(devices)
            process, method, mesh = experiment.setup(config, None, mesh=mesh)
            state = train.init_state(method, config, mesh, method.layout)
            step_fn = train.jit_train_step(method, mesh, microbatches)
            batches = input_pipeline.BatchSource.from_process(
                process, config.data, config.train, parallel.batch_sharding(mesh))
            losses = []
            for step in range(3):
                batch = batches(step)
                assert len(batch[0].sharding.device_set) == len(devices)
                state, terms = step_fn(state, batch)
                jax.block_until_ready(terms)
                losses.append(np.asarray(terms["loss"]))
            results.append((np.stack(losses), jax.device_get(state.params)))
        (l1, p1), (l8, p8) = results
        np.testing.assert_allclose(l1, l8, rtol=2e-5, atol=1e-5)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), p1, p8)
    print("EQUIVALENT", l1[-1])
""")


def _check(cases):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cases)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "EQUIVALENT" in proc.stdout


def test_sharded_step_matches_single_device():
    _check([["personax", 1]])


@pytest.mark.slow
def test_sharded_vae_step_matches_single_device_in_one_pass_and_in_microbatches():
    _check([["personax_vae", 1], ["personax_vae", 4]])
