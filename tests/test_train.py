"""Training loop: main smoke run, resume equivalence, NaN handling, config validation."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import synthetic as synthetic_config
from crl_jax import config_validation, input_pipeline, parallel, train
from crl_jax.experiments import synthetic as experiment
from crl_jax.host import autotune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _smoke(**train_overrides):
    config = synthetic_config.get_config("smoke")
    config.eval.plots = False
    for k, v in train_overrides.items():
        config.train[k] = v
    return config


def test_main_smoke_run_writes_reports_and_plots(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "crl_jax.main", "--config=configs/synthetic.py:smoke",
         f"--workdir={workdir}", "--config.train.steps=20"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("config.json", "metrics.jsonl", "report.json", "report.md",
                 "training_curves.png", "latent_scatter.png", "r2_blocks.png", "graph.png",
                 "generator/generator_spec.json"):
        assert (workdir / name).exists(), name
    report = json.loads((workdir / "report.json").read_text())
    assert report["steps"] == 20 and report["num_seeds"] == 2
    if "CRL_JAX_CPU_DISPATCH" not in os.environ:   # main applies it before JAX starts
        assert report["cpu_dispatch"] == {"dispatch": "inline", "applied": True, "reason": ""}
        assert "host: inline CPU dispatch; XLA:CPU products on " in proc.stdout
    if "CRL_JAX_CPU_DOTS" not in os.environ and "ynn_fusion" not in os.environ.get("XLA_FLAGS", ""):
        # small products (hidden width 32): XLA's default YNNPACK (crl_jax.host.dots)
        assert report["cpu_dots"]["dots"] == "ynnpack" and report["cpu_dots"]["applied"]
    summary = report["evaluation"]["summary"]
    assert len(summary["mcc_pearson"]["per_seed"]) == 2
    assert 0.0 <= summary["mcc_pearson"]["mean"] <= 1.0
    assert set(summary["r2_block"]) == {"m1", "m2"}
    assert "shd" in summary["graph"]
    lines = (workdir / "metrics.jsonl").read_text().strip().splitlines()
    records = [json.loads(line) for line in lines]
    # personax: stage A's 20 steps, then 20 of each stage-B phase, numbered after them
    assert [r["step"] for r in records] == [10, 20, 30, 40, 50, 60]
    assert [r.get("stage") for r in records] == ["blocks"] * 2 + ["orders"] * 2 + ["sparsity"] * 2
    text = (workdir / "report.md").read_text()
    assert "MCC (Pearson)" in text
    # case1's graph: z1 -> z0 -> z2 across, z3 alone; only block m1 is pinned by the sparsity
    assert report["evaluation"]["identifiable"] == [True, True, False, False]
    assert "MCC, the 2 of 4 latents cross-modal sparsity can identify" in text
    assert len(summary["mcc_pearson_identifiable"]["per_seed"]) == 2
    events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0, "TensorBoard summaries (tensorboardX)"


def _final_params(config, workdir, stop_after_step=None, **stage):
    process, method, mesh = experiment.setup(config, str(workdir))
    batches = input_pipeline.BatchSource.from_process(
        process, config.data, config.train, parallel.batch_sharding(mesh))
    layout = experiment.model_layout(process.spec)
    settings = {**autotune.loop_settings(config, method, mesh, batches, layout), **stage}
    state, step = train.train(config, str(workdir), method, mesh, batches, layout,
                              stop_after_step=stop_after_step, **settings)
    return jax.device_get(state.params), step


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path):
    config = _smoke(steps=20, log_every=5, checkpoint_every=5)
    straight, step = _final_params(config, tmp_path / "a")
    assert step == 20
    _, step = _final_params(config, tmp_path / "b", stop_after_step=10)
    assert step == 10
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:  # logged after the checkpoint,
        f.write(json.dumps({"step": 12, "loss": 0.0}) + "\n")  # then the job died
    resumed, step = _final_params(config, tmp_path / "b")
    assert step == 20
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           straight, resumed)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().strip().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [5, 10, 15, 20]


def _count_scan_calls(monkeypatch) -> list:
    """Steps of every ``train.jit_train_steps`` call, appended as the loop makes them."""
    calls = []
    real = train.jit_train_steps

    def counting(*args):
        fn = real(*args)
        return lambda state, stacked: (calls.append(stacked[0].shape[0]), fn(state, stacked))[1]

    monkeypatch.setattr(train, "jit_train_steps", counting)
    return calls


@pytest.mark.slow
def test_several_steps_per_call_train_the_same_model(tmp_path, monkeypatch):
    """train.steps_per_call = 4: the same steps as one per call (a lax.scan of the same
    step), 4 per dispatch where they fit, single steps up to a stop that is not a multiple;
    and a run stopped there and resumed matches."""
    config = _smoke(steps=20, log_every=4, checkpoint_every=8, steps_per_call=1)
    single, _ = _final_params(config, tmp_path / "one")
    calls = _count_scan_calls(monkeypatch)
    config.train.steps_per_call = 4
    several, step = _final_params(config, tmp_path / "four")
    assert step == 20 and calls == [4] * 5
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           single, several)
    lines = (tmp_path / "four" / "metrics.jsonl").read_text().strip().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [4, 8, 12, 16, 20]
    one_log = json.loads((tmp_path / "one" / "metrics.jsonl").read_text().splitlines()[0])
    assert json.loads(lines[0])["loss"] == pytest.approx(one_log["loss"], rel=1e-5)
    calls.clear()
    _, step = _final_params(config, tmp_path / "stopped", stop_after_step=10)
    assert step == 10 and calls == [4, 4]          # steps 9 and 10 one at a time
    resumed, step = _final_params(config, tmp_path / "stopped")
    assert step == 20 and calls == [4, 4, 4, 4]    # 11, 12 single; 13-16, 17-20
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           single, resumed)


@pytest.mark.parametrize("log_every,per_call,expected", [
    (100, -1, 10), (10, -1, 10), (5, -1, 5), (12, -1, 6), (7, -1, 7), (11, -1, 1),
    (100, 4, 4), (100, None, 1)])
def test_steps_per_call_auto_is_the_largest_divisor_of_log_every_up_to_10(
        log_every, per_call, expected):
    config = _smoke(log_every=log_every, checkpoint_every=log_every)
    if per_call is None:   # a config saved before the field existed: one step per call
        del config.train["steps_per_call"]
    else:
        config.train.steps_per_call = per_call
    assert autotune.resolve_steps_per_call(config.train) == expected
    config_validation.validate(config, 1)


def test_default_config_dispatches_several_steps_per_call(tmp_path, monkeypatch):
    """The shipped default (-1) scans log_every's largest divisor up to 10 steps per call:
    the smoke config's 30 steps, logged every 10, are 3 calls of 10, whose batches come from
    BatchSource.stacked alone (the single-step sampler, ~1 s to compile, is never used)."""
    calls = _count_scan_calls(monkeypatch)
    single = []
    real_call = input_pipeline.BatchSource.__call__
    monkeypatch.setattr(input_pipeline.BatchSource, "__call__",
                        lambda self, step: (single.append(step), real_call(self, step))[1])
    config = _smoke()
    assert config.train.steps_per_call == -1
    _, step = _final_params(config, tmp_path)
    assert step == 30 and calls == [10, 10, 10] and single == []


@pytest.mark.slow
def test_loop_runs_twice_in_one_workdir_for_a_staged_method(tmp_path):
    """A second training stage: its own checkpoint folder, the same metrics file with its
    steps after the first stage's; stopped and resumed, the first stage's records and
    checkpoint stay as they were."""
    config = _smoke(steps=20, log_every=10, checkpoint_every=10)
    stage_a, step = _final_params(config, tmp_path)
    assert step == 20
    config_b = _smoke(steps=20, log_every=10, checkpoint_every=10, learning_rate=3e-3)
    stage_b = {"checkpoint_dir": "stage_b/checkpoints", "step_offset": 20}
    _, step = _final_params(config_b, tmp_path, stop_after_step=10, **stage_b)
    assert step == 10
    with open(tmp_path / "metrics.jsonl", "a") as f:   # logged after stage B's checkpoint
        f.write(json.dumps({"step": 35, "loss": 0.0}) + "\n")
    resumed, step = _final_params(config_b, tmp_path, **stage_b)
    assert step == 20
    lines = (tmp_path / "metrics.jsonl").read_text().strip().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20, 30, 40]
    for sub in ("checkpoints", "stage_b/checkpoints"):
        assert ocp.CheckpointManager(os.path.abspath(tmp_path / sub)).latest_step() == 20, sub
    straight_b, _ = _final_params(config_b, tmp_path / "b_alone")
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           straight_b, resumed)
    again, step = _final_params(config, tmp_path)   # stage A's checkpoint, untouched
    assert step == 20
    jax.tree_util.tree_map(np.testing.assert_array_equal, stage_a, again)
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(stage_a),
                                                     jax.tree_util.tree_leaves(resumed)))


def test_steps_per_call_must_divide_log_every(tmp_path):
    config = _smoke(steps=20, log_every=10, checkpoint_every=10)
    with pytest.raises(ValueError, match="steps_per_call=3 must be >= 1 and divide"):
        _final_params(config, tmp_path, steps_per_call=3)


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    config = _smoke(steps=20, log_every=5, checkpoint_every=5)
    _final_params(config, tmp_path, stop_after_step=10)
    config.train.learning_rate = 1e30   # blows the parameters up on the next steps
    with pytest.raises(train.TrainingDiverged, match="last good checkpoint"):
        _final_params(config, tmp_path)
    mngr = ocp.CheckpointManager(os.path.abspath(tmp_path / "checkpoints"))
    assert mngr.latest_step() == 10
    restored = mngr.restore(10)
    leaves = jax.tree_util.tree_leaves(restored)
    assert leaves and all(np.all(np.isfinite(np.asarray(x))) for x in leaves)


@pytest.mark.parametrize("field,value,match", [
    ("data.preset", "numerical_case9", "config.data.preset"),
    ("model.name", "transformer", "config.model.name"),
    ("model.encoder", "resnet", "config.model.encoder"),
    ("train.batch_size", 60, "config.train.batch_size.*divisible by the 8 devices"),
    ("train.checkpoint_every", 15, "config.train.checkpoint_every"),
    ("loss.beta", -1.0, "config.loss.beta"),
    ("train.warmup_steps", 30, "config.train.warmup_steps.*train.steps=30"),  # smoke: 30 steps
    ("train.warmup_steps", -1, "config.train.warmup_steps: must be >= 0"),
    ("train.steps_per_call", 3, "config.train.steps_per_call: 3 does not divide "
                                "train.log_every=10"),
    ("train.steps_per_call", 0, "config.train.steps_per_call: must be >= 1, or -1"),
    ("train.steps_per_call", -2, "config.train.steps_per_call: must be >= 1, or -1"),
])
def test_bad_config_fails_in_validation_naming_the_field(field, value, match):
    config = _smoke()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(config_validation.ConfigError, match=match):
        config_validation.validate(config, n_devices=8)


def test_config_checks_against_the_data(tmp_path):
    config = _smoke()
    config.model.latent_dims = (2, 2, 2)
    with pytest.raises(config_validation.ConfigError, match="config.model.latent_dims"):
        experiment.setup(config, str(tmp_path))
    config = _smoke()
    config.model.encoder = "conv"
    with pytest.raises(config_validation.ConfigError, match="config.model.encoder"):
        experiment.setup(config, str(tmp_path / "b"))


def test_unknown_config_variant_is_rejected():
    with pytest.raises(ValueError, match="unknown variant"):
        synthetic_config.get_config("case7")
