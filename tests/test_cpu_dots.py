"""crl_jax.host.dots: which library runs XLA:CPU's products, chosen per run before JAX starts.

The choice is an XLA flag read when the backend starts, so what it does is checked in fresh
child processes: the compiled products are YNNPACK fusions or not, as asked."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from configs import synthetic, variant_mnist
from crl_jax.host import dots as cpu_dots

ROOT = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent("""
    import json, sys
    from configs import synthetic
    from crl_jax.host import dots as cpu_dots
    config = synthetic.get_config(sys.argv[1])
    out = {"set": cpu_dots.apply(config)}
    import jax, jax.numpy as jnp
    x = jnp.ones((512, 128), jnp.float32)
    text = jax.jit(jnp.dot).lower(x, x.T).compile().as_text()   # the backend starts here
    out["ynn_fusion"] = "__ynn_fusion" in text
    out["after_start"] = cpu_dots.set_cpu_dots(
        "ynnpack" if out["set"]["dots"] == "eigen" else "eigen")
    print(json.dumps(out))
""")


def _probe(variant, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("CRL_JAX_CPU_DOTS", "XLA_FLAGS")}
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-c", PROBE, variant], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(cpu_dots.ENV, raising=False)
    return monkeypatch


def test_choice_follows_the_size_of_the_products(clean_env):
    default = synthetic.get_config()               # 3 seeds x 512 rows, width 128
    assert cpu_dots.product_size(default) == 512 * 128 * 128
    assert cpu_dots.choose(default)[0] == "eigen"
    assert cpu_dots.choose(synthetic.get_config("smoke"))[0] == "ynnpack"   # width 32
    small = synthetic.get_config()
    small.train.batch_size = 128                   # below 256 rows at width 128
    assert cpu_dots.choose(small)[0] == "ynnpack"
    chunked = synthetic.get_config()
    chunked.train.microbatch_size = 128            # the products have the chunk's rows
    assert cpu_dots.product_size(chunked) == 128 * 128 * 128
    assert cpu_dots.choose(chunked)[0] == "ynnpack"
    many = synthetic.get_config()
    many.train.num_seeds = 5                       # up to 5 seeds: Eigen
    assert cpu_dots.choose(many)[0] == "eigen"
    many.train.num_seeds = 6                       # more: Eigen was not clearly faster
    assert cpu_dots.choose(many)[0] == "ynnpack" and "6 seeds" in cpu_dots.choose(many)[1]
    auto = synthetic.get_config()
    auto.train.microbatch_size = -1                # auto: rated at the whole batch
    assert cpu_dots.choose(auto)[0] == "eigen"
    conv = variant_mnist.get_config()              # convolutional encoder: YNNPACK
    assert cpu_dots.choose(conv) == ("ynnpack", cpu_dots.choose(conv)[1])
    assert "convolutional" in cpu_dots.choose(conv)[1]
    # a sweep's entries share one process: Eigen only if every entry would pick it
    assert cpu_dots.choose([default, default])[0] == "eigen"
    assert cpu_dots.choose([default, small])[0] == "ynnpack"


def test_unreadable_config_falls_back_to_xla_default(clean_env):
    config = synthetic.get_config()
    config.model.hidden = ()                       # validation names it later
    assert cpu_dots.product_size(config) is None
    assert cpu_dots.choose(config)[0] == "ynnpack"


def test_environment_overrides_and_bad_values(clean_env):
    clean_env.setenv(cpu_dots.ENV, "ynnpack")
    assert cpu_dots.choose(synthetic.get_config()) == ("ynnpack", f"{cpu_dots.ENV}=ynnpack")
    clean_env.setenv(cpu_dots.ENV, "Eigen")
    assert cpu_dots.choose(synthetic.get_config("smoke"))[0] == "eigen"
    clean_env.setenv(cpu_dots.ENV, "mkl")
    with pytest.raises(ValueError, match=f"{cpu_dots.ENV}='mkl'.*auto"):
        cpu_dots.choose(synthetic.get_config())
    with pytest.raises(ValueError, match="library='mkl'"):
        cpu_dots.set_cpu_dots("mkl")


@pytest.mark.parametrize("flags, expected", [
    ("", "ynnpack"),
    ("--xla_force_host_platform_device_count=8", "ynnpack"),
    ("--xla_cpu_experimental_ynn_fusion_type=", "eigen"),
    ("--xla_cpu_experimental_ynn_fusion_type=dot", "ynnpack"),
    ("--xla_cpu_experimental_ynn_fusion_type=dot --xla_cpu_experimental_ynn_fusion_type=",
     "eigen"),                                     # the last one wins
])
def test_in_effect_reads_xla_flags(monkeypatch, flags, expected):
    monkeypatch.setenv("XLA_FLAGS", flags)
    assert cpu_dots.in_effect() == expected


def test_after_the_backend_started_nothing_changes(monkeypatch):
    import jax
    jax.block_until_ready(jax.numpy.ones(2) + 1)   # this process's backend has started
    before = os.environ.get("XLA_FLAGS", "")
    out = cpu_dots.set_cpu_dots("eigen" if cpu_dots.in_effect() == "ynnpack" else "ynnpack")
    assert out["applied"] is False and "already started" in out["reason"]
    assert os.environ.get("XLA_FLAGS", "") == before


def test_eigen_choice_removes_ynnpack_products_in_a_fresh_process():
    out = _probe("")                               # the default run: Eigen
    assert out["set"]["dots"] == "eigen" and out["set"]["applied"] is True
    assert out["ynn_fusion"] is False
    assert out["after_start"]["applied"] is False  # fixed once the backend runs
    assert out["after_start"]["dots"] == "eigen"


def test_ynnpack_choice_keeps_xla_default_in_a_fresh_process():
    out = _probe("smoke")
    assert out["set"] == {"dots": "ynnpack", "applied": True,
                          "reason": cpu_dots.choose(synthetic.get_config("smoke"))[1]}
    assert out["ynn_fusion"] is True


def test_user_xla_flag_is_left_alone():
    out = _probe("", {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"})
    assert out["set"]["applied"] is False and "left as it is" in out["set"]["reason"]
    assert out["ynn_fusion"] is True               # the user's setting, not the auto choice


def test_environment_override_in_a_fresh_process():
    out = _probe("", {cpu_dots.ENV: "ynnpack"})
    assert out["set"]["dots"] == "ynnpack" and out["ynn_fusion"] is True


def test_sweep_chooses_for_the_entries_it_runs(monkeypatch):
    """A sweep's entries share one process: crl_jax.sweep.start picks one products library
    for the entries this process runs (all of them, or one of a job array)."""
    from configs.sweeps import methods
    from crl_jax import host, sweep

    seen = []
    monkeypatch.setattr(host, "_settings", {})   # this worker's own settings stay as they are
    monkeypatch.setattr(cpu_dots, "apply", lambda configs: seen.append(configs) or {
        "dots": "ynnpack", "applied": True, "reason": "test"})
    sweep_config = methods.get_config("smoke")
    entries = sweep.grid.make_entries(sweep_config)
    assert sweep.start(sweep_config, sweep_index=1)["cpu_dots"]["reason"] == "test"
    sweep.start(sweep_config)
    assert [len(c) for c in seen] == [1, len(entries)] and len(entries) > 1
    assert seen[0][0].model.name == entries[1].config.model.name


@pytest.mark.parametrize("rc, applies, words", [(0, True, ""), (3, False, "leaves YNNPACK"),
                                                (1, False, "does not accept")])
def test_flag_check_decides_whether_eigen_can_be_set(monkeypatch, rc, applies, words):
    """XLA aborts a process on an unknown flag, so the flag is tried in a child first."""
    seen = {}

    def fake_run(cmd, env, **kwargs):
        seen["flags"] = env["XLA_FLAGS"]
        return subprocess.CompletedProcess(cmd, rc)

    monkeypatch.setattr(cpu_dots, "_probe_result", None)
    monkeypatch.setattr(cpu_dots.subprocess, "run", fake_run)
    ok, reason = cpu_dots._flag_supported()
    assert ok is applies and words in reason
    assert seen["flags"].endswith(cpu_dots.EIGEN_FLAG)
