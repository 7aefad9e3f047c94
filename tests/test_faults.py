"""Bad input and faults, as a careful user meets them: every entry point answers with one line
on stderr (``PROG: error: ...``, no traceback) and the documented exit code, before long work;
repaired faults (a damaged checkpoint, a torn metrics line, a stale lock) go on with a warning.

The entry points are called in-process (``main(argv)`` returns the exit code) on smoke
configs; one trained workdir is shared (copied) by the resume and checkpoint faults. A check
that is removed makes its row fail: the row expects exit code 2 (or 3) and its message.
"""
from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable

import pandas as pd
import pytest

from configs import default as default_config
from configs import personax as personax_config
from configs import synthetic as synthetic_config
from configs import variant_mnist as variant_mnist_config
from crl_jax import cli, main as crl_main, resume, sweep
from crl_jax.data.fake_personax import make_fake_personax
from crl_jax.level1 import __main__ as level1
from synthetic import sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# smoke config (log and checkpoint every 10 steps) with a cheap evaluation
FAST = ["--config=configs/synthetic.py:smoke", "--config.train.steps=20",
        "--config.eval.plots=False", "--config.eval.r2_kind=linear",
        "--config.data.eval_fit_size=100", "--config.data.val_size=100",
        "--config.data.test_size=100"]
PERSONAX = ["--config=configs/personax.py:athle,smoke", "--config.eval.plots=False"]
ENTRY = {"main": (lambda a: crl_main.main(["main", *a]), crl_main.PROG),
         "sweep": (lambda a: sweep.main(["sweep", *a]), sweep.PROG),
         "level1": (level1.main, "python -m crl_jax.level1"),
         "sample": (sample.main, "python -m synthetic.sample")}


@dataclasses.dataclass
class Case:
    name: str
    entry: str
    args: Callable     # (env, dir) -> argv
    code: int          # expected exit code
    message: str       # in the error line (code != 0) or in a warning (code 0)
    prepare: Callable | None = None   # (env, dir) -> None, before the call


def _m(*extra):
    return lambda env, d: [*FAST, f"--workdir={d}/run", *extra]


def _resumed(*extra):
    return lambda env, d: [*FAST, f"--workdir={d}/run", *extra]


def _copy_trained(env, d):
    shutil.copytree(env.trained, f"{d}/run")


def _then(*steps):
    def prepare(env, d):
        for step in steps:
            step(env, d)
    return prepare


def _truncate_checkpoint(step: int, keep: int = 10):
    def prepare(env, d):
        files = sorted((os.path.getsize(p), p) for p in glob.glob(
            f"{d}/run/checkpoints/{step}/**/*", recursive=True) if os.path.isfile(p))
        size, path = files[-1]
        with open(path, "r+b") as f:
            f.truncate(min(keep, size // 2))
    return prepare


def _lock(pid_of):
    def prepare(env, d):
        os.makedirs(f"{d}/run", exist_ok=True)
        with open(f"{d}/run/run.lock", "w") as f:
            json.dump({"pid": pid_of(env), "host": os.uname().nodename, "started": "earlier"}, f)
    return prepare


def _write(path_in_dir: str, text: str):
    def prepare(env, d):
        os.makedirs(os.path.dirname(f"{d}/{path_in_dir}"), exist_ok=True)
        with open(f"{d}/{path_in_dir}", "w") as f:
            f.write(text)
    return prepare


def _append(path_in_run: str, text: str):
    def prepare(env, d):
        with open(f"{d}/run/{path_in_run}", "a") as f:
            f.write(text)
    return prepare


def _table(edit):
    """A copy of the fake PersonaX CSV, edited; written to DIR/table.csv."""
    def prepare(env, d):
        df = pd.read_csv(env.fake.paths["table"])
        edit(df).to_csv(f"{d}/table.csv", index=False)
    return prepare


def _set_cell(column: str, row: int, value):
    def edit(df):
        df[column] = df[column].astype(object)
        df.loc[row, column] = value
        return df
    return edit


def _px(*extra):
    return lambda env, d: [*PERSONAX, f"--config.data.path={d}/table.csv",
                           f"--config.data.columns={env.fake.paths['columns']}",
                           f"--workdir={d}/run", *extra]


def _l1(*extra, data=None):
    return lambda env, d: [f"--data={data or env.fake.paths['table']}",
                           f"--columns={env.fake.paths['columns']}", f"--out={d}/out",
                           "--no_progress", *extra]


def _images(damage):
    """DIR/images: links to the intact IDX files, MNIST's training images damaged."""
    def prepare(env, d):
        for sub in ("mnist", "fashion-mnist"):
            os.makedirs(f"{d}/images/{sub}")
            for src in glob.glob(f"{env.data_dir}/{sub}/*.gz"):
                os.symlink(src, f"{d}/images/{sub}/{os.path.basename(src)}")
        target = f"{d}/images/mnist/train-images-idx3-ubyte.gz"
        with open(target, "rb") as f:
            data = f.read()
        os.remove(target)
        with open(target, "wb") as f:
            f.write(damage(data))
    return prepare


def _crc(data: bytes) -> bytes:
    b = bytearray(data)
    b[-8] ^= 0xFF   # the CRC-32 of the gzip trailer
    return bytes(b)


def _short_payload(data: bytes) -> bytes:
    return gzip.compress(gzip.decompress(data)[:100_000])


def _vm(*extra):
    return lambda env, d: ["--config=configs/variant_mnist.py:smoke",
                           f"--config.data.data_dir={d}/images", f"--workdir={d}/run", *extra]


def _sample(*extra):
    return lambda env, d: ["--preset=numerical_case1", "--n=10", f"--out={d}/s.npz", *extra]


def _dead_pid(env):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


CASES = [
    # --- crl_jax.main: flags and the config file
    Case("config_missing", "main", lambda e, d: ["--config=configs/nope.py", f"--workdir={d}"],
         2, "configs/nope.py not found"),
    Case("config_not_python", "main", lambda e, d: ["--config=README.md", f"--workdir={d}"],
         2, "is not a Python config file"),
    Case("config_syntax_error", "main", lambda e, d: [f"--config={d}/bad.py", f"--workdir={d}/w"],
         2, "not a valid Python config file", _write("bad.py", "def get_config(:\n")),
    Case("config_bad_variant", "main",
         lambda e, d: ["--config=configs/synthetic.py:case9", f"--workdir={d}"], 2,
         "unknown variant 'case9'"),
    Case("override_unknown_field", "main", _m("--config.train.nosuch=1"), 2,
         "--config.train.nosuch: the config has no such field"),
    Case("override_bad_type", "main", _m("--config.train.steps=abc"), 2,
         "--config.train.steps=abc"),
    Case("unknown_flag", "main", _m("--nosuchflag=1"), 2, "unknown flag --nosuchflag"),
    Case("workdir_missing", "main", lambda e, d: FAST, 2, "--workdir is required"),
    Case("config_flag_missing", "main", lambda e, d: [f"--workdir={d}"], 2,
         "--config is required"),
    Case("workdir_empty", "main", lambda e, d: [*FAST, "--workdir="], 2, "--workdir is empty"),
    Case("workdir_is_file", "main", lambda e, d: [*FAST, f"--workdir={d}/f"], 2,
         "is a file, not a directory", _write("f", "x")),
    Case("workdir_under_file", "main", lambda e, d: [*FAST, f"--workdir={d}/f/run"], 2,
         "cannot be created", _write("f", "x")),
    Case("positional_argument", "main", _m("extra"), 2, "unexpected arguments ['extra']"),
    # --- crl_jax.main: config fields out of range (each before any training)
    Case("grad_clip_negative", "main", _m("--config.train.grad_clip=-1"), 2,
         "config.train.grad_clip"),
    Case("grad_clip_zero", "main", _m("--config.train.grad_clip=0"), 2, "config.train.grad_clip"),
    Case("recon_std_inf", "main", _m("--config.loss.recon_std=inf"), 2, "config.loss.recon_std"),
    Case("recon_std_zero", "main", _m("--config.loss.recon_std=0"), 2, "config.loss.recon_std"),
    Case("learning_rate_nan", "main", _m("--config.train.learning_rate=nan"), 2,
         "config.train.learning_rate"),
    Case("eval_batch_size_zero", "main", _m("--config.eval.batch_size=0"), 2,
         "config.eval.batch_size"),
    Case("kernel_components_zero", "main", _m("--config.eval.kernel_components=0"), 2,
         "config.eval.kernel_components"),
    Case("val_size_small", "main", _m("--config.data.val_size=10"), 2, "config.data.val_size"),
    Case("steps_zero", "main", _m("--config.train.steps=0"), 2, "config.train.steps"),
    Case("num_seeds_zero", "main", _m("--config.train.num_seeds=0"), 2, "config.train.num_seeds"),
    Case("beta_negative", "main", _m("--config.loss.beta=-1"), 2, "config.loss.beta"),
    Case("model_unknown", "main", _m("--config.model.name=transformer"), 2, "config.model.name"),
    Case("preset_unknown", "main", _m("--config.data.preset=case9"), 2, "config.data.preset"),
    Case("seed_negative", "main", _m("--config.train.seed=-1"), 2, "config.train.seed"),
    Case("source_unknown", "main", _m("--config.data.source=excel"), 2, "config.data.source"),
    Case("divergence_factor_below_one", "main", _m("--config.train.divergence_factor=0.5"), 2,
         "config.train.divergence_factor"),
    Case("temperature_zero", "main", _m("--config.model.temperature=0"), 2,
         "config.model.temperature"),
    Case("noise_unknown", "main", _m("--config.data.noise=cauchy"), 2, "config.data.noise"),
    Case("keep_checkpoints_zero", "main", _m("--config.train.keep_checkpoints=0"), 2,
         "config.train.keep_checkpoints"),
    # --- resume, lock and checkpoint faults on a trained workdir (20 steps, checkpoints 10, 20)
    Case("resume_model_changed", "main", _resumed("--config.model.hidden=(64,64)"), 2,
         "model.hidden: [32, 32] -> [64, 64]", _copy_trained),
    Case("resume_seeds_changed", "main", _resumed("--config.train.num_seeds=3"), 2,
         "train.num_seeds: 2 -> 3", _copy_trained),
    Case("resume_learning_rate_changed", "main", _resumed("--config.train.learning_rate=0.01"),
         2, "train.learning_rate: 0.001 -> 0.01", _copy_trained),
    Case("resume_config_json_damaged", "main", _resumed(), 2, "config.json is damaged",
         _then(_copy_trained, _append("config.json", "{{"))),
    Case("workdir_locked_by_live_process", "main", _resumed(), 2, "is in use by another run",
         _then(_copy_trained, _lock(lambda env: os.getppid()))),
    Case("every_checkpoint_damaged", "main", _resumed(), 2, "no checkpoint in",
         _then(_copy_trained, _truncate_checkpoint(20), _truncate_checkpoint(10))),
    Case("nan_before_first_checkpoint", "main",
         _m("--config.train.learning_rate=1e30", "--config.train.checkpoint_every=20"), 3,
         "No checkpoint was saved before"),
    Case("loss_explodes_but_stays_finite", "main",
         _m("--config.train.learning_rate=3", "--config.train.schedule=constant"), 3,
         "loss diverged"),
    # repaired faults: a warning, then the run goes on
    Case("stale_lock", "main", _resumed(), 0, "removing the stale lock",
         _then(_copy_trained, _lock(_dead_pid))),
    Case("latest_checkpoint_damaged", "main", _resumed(), 0,
         "checkpoint step 20 in", _then(_copy_trained, _truncate_checkpoint(20))),
    Case("metrics_last_line_torn", "main", _resumed("--config.train.steps=30"), 0,
         "dropped its last line", _then(_copy_trained, _append("metrics.jsonl", '{"step": 2'))),
    # --- PersonaX tables
    Case("personax_path_missing", "main",
         lambda e, d: [*PERSONAX, f"--workdir={d}/run"], 2, "config.data.path is empty"),
    Case("personax_too_few_rows_for_pc", "main", _px(), 2, "PC on the learned latents needs",
         _table(lambda df: df.head(5))),
    Case("personax_embedding_inf", "main", _px(), 2, "'image_emb_0' (image[0]) has 1 row(s)",
         _table(_set_cell("image_emb_0", 3, "[inf" + ", 0.1" * 15 + "]"))),
    Case("personax_embedding_overflows_float32", "main", _px(), 2, "beyond float32's range",
         _table(_set_cell("text_emb_DS", 7, "[1e39" + ", 0.1" * 23 + "]"))),
    Case("personax_feature_inf", "main", _px(), 2, "Column 'weight'",
         _table(_set_cell("weight", 2, "inf"))),
    # --- variant MNIST image files
    Case("idx_truncated_gzip", "main", _vm(), 2, "is damaged: not a complete gzip file",
         _images(lambda b: b[: len(b) // 2])),
    Case("idx_not_gzip", "main", _vm(), 2, "not a complete gzip file",
         _images(lambda b: b"plain text, not gzip")),
    Case("idx_crc_error", "main", _vm(), 2, "train-images-idx3-ubyte.gz is damaged",
         _images(_crc)),
    Case("idx_shorter_than_header", "main", _vm(), 2, "its header says shape (60000, 28, 28)",
         _images(_short_payload)),
    Case("images_missing", "main",
         lambda e, d: ["--config=configs/variant_mnist.py:smoke",
                       f"--config.data.data_dir={d}", f"--workdir={d}/run"], 2,
         "mnist images not found"),
    # --- crl_jax.sweep
    Case("sweep_config_missing", "sweep",
         lambda e, d: ["--config=configs/sweeps/nope.py", f"--workdir={d}"], 2, "not found"),
    Case("sweep_index_out_of_range", "sweep",
         lambda e, d: ["--config=configs/sweeps/measurements.py:smoke", f"--workdir={d}",
                       "--sweep_index=99"], 2, "--sweep_index=99 is out of range"),
    Case("sweep_bad_base_field", "sweep",
         lambda e, d: ["--config=configs/sweeps/measurements.py:smoke", f"--workdir={d}",
                       "--config.base.train.grad_clip=-1"], 2,
         "sweep entry 0"),
    # --- crl_jax.level1
    Case("level1_data_missing", "level1", _l1(data="/nonexistent/table.csv"), 2,
         "--data=/nonexistent/table.csv: not found"),
    Case("level1_empty_csv", "level1", lambda e, d: _l1(data=f"{d}/empty.csv")(e, d), 2,
         "is empty (no header row)", _write("empty.csv", "")),
    Case("level1_alpha_out_of_range", "level1", _l1("--alpha=2"), 2, "--alpha=2.0 must be in (0, 1)"),
    Case("level1_alpha_not_a_number", "level1", _l1("--alpha=x"), 2, "invalid float value: 'x'"),
    Case("level1_unknown_test", "level1", _l1("--tests=kci,magic"), 2, "['magic']"),
    Case("level1_out_is_file", "level1", lambda e, d: _l1()(e, d)[:2] + [f"--out={d}/f"], 2,
         "--out=", _write("f", "x")),
    Case("level1_feature_inf", "level1", lambda e, d: _l1(data=f"{d}/table.csv")(e, d), 2,
         "infinite value", _table(_set_cell("weight", 4, "-inf"))),
    # --- synthetic.sample
    Case("sample_n_zero", "sample", lambda e, d: _sample()(e, d)[:1] + ["--n=0", f"--out={d}/s.npz"],
         2, "--n=0 must be >= 1"),
    Case("sample_out_not_npz", "sample",
         lambda e, d: ["--preset=numerical_case1", "--n=4", f"--out={d}/s.txt"], 2,
         "must end in .npz"),
    Case("sample_preset_unknown", "sample",
         lambda e, d: ["--preset=case9", "--n=4", f"--out={d}/s.npz"], 2, "invalid choice"),
    Case("sample_data_dir_missing", "sample",
         lambda e, d: ["--preset=variant_mnist_3m", "--n=4", f"--out={d}/s.npz",
                       f"--data_dir={d}/none"], 2, "is not a directory"),
    Case("sample_measurements_zero", "sample", _sample("--n_measurements=0"), 2,
         "--n_measurements=0 must be >= 1"),
    Case("sample_idx_damaged", "sample",
         lambda e, d: ["--preset=variant_mnist_3m", "--n=4", f"--out={d}/s.npz",
                       f"--data_dir={d}/images"], 2, "is damaged",
         _images(lambda b: b[: len(b) // 3])),
]


class Env:
    """What the cases share (built on first use, once per test process)."""

    def __init__(self, factory, data_dir):
        self._factory, self.data_dir = factory, str(data_dir)
        self._trained = self._fake = None

    @property
    def trained(self) -> str:
        if self._trained is None:
            d = self._factory.mktemp("trained")
            assert crl_main.main(["main", *FAST, f"--workdir={d}/run"]) == 0
            self._trained = f"{d}/run"
        return self._trained

    @property
    def fake(self):
        if self._fake is None:
            out = self._factory.mktemp("fake") / "fake.csv"
            self._fake = make_fake_personax(seed=1, n=40, out_path=out, n_image=1)
        return self._fake


@pytest.fixture(scope="module")
def env(tmp_path_factory, data_dir):
    return Env(tmp_path_factory, data_dir)


def test_at_least_40_cases_with_unique_names():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)) and len(CASES) >= 40
    assert sum(c.code != 0 for c in CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_or_fault(case, env, tmp_path, capsys):
    d = str(tmp_path)
    if case.prepare is not None:
        case.prepare(env, d)
    argv = case.args(env, d)
    capsys.readouterr()
    fn, prog = ENTRY[case.entry]
    t0 = time.time()
    code = fn(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
    assert code == case.code, err[-3000:]
    if case.code:
        assert len(errors) == 1, err[-3000:]
        assert case.message in errors[0], errors[0]
    else:
        assert errors == [] and case.message in err, err[-3000:]
        assert os.path.exists(f"{d}/run/report.json")
    if case.code == 2 and case.name not in ("personax_too_few_rows_for_pc",):
        assert time.time() - t0 < 30, "a bad input must be found before long work"


# ---------------------------------------------------------------------------------------------
# what the repaired faults leave behind


def test_resume_with_more_steps_is_recorded_and_config_json_keeps_history(env, tmp_path, capsys):
    shutil.copytree(env.trained, tmp_path / "run")
    assert crl_main.main(["main", *FAST, f"--workdir={tmp_path}/run",
                          "--config.train.steps=30"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["steps"] == 30
    first, second = saved[resume.HISTORY_KEY]
    assert first["resumed_from"] == {} and first["changed"] == {}
    assert second["resumed_from"] == {"checkpoints": 20, "checkpoints_orders": 20,
                                      "checkpoints_sparsity": 20}
    assert second["changed"] == {"train.steps": [20, 30]}
    # stage B was built on the 20-step stage A: it is removed and trained again after step 30
    assert "stage A changed since stage B was trained" in capsys.readouterr().err
    steps = [json.loads(l)["step"] for l in open(tmp_path / "run" / "metrics.jsonl")]
    assert steps == [10, 20, 30, 40, 50, 60, 70]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["steps"] == 30
    assert report["config_changes_on_resume"][0]["changed"] == {"train.steps": [20, 30]}
    assert "train.steps: 20 -> 30" in (tmp_path / "run" / "report.md").read_text()


def test_damaged_latest_checkpoint_resumes_from_the_one_before(env, tmp_path, capsys):
    shutil.copytree(env.trained, tmp_path / "run")
    _truncate_checkpoint(20)(env, str(tmp_path))
    assert crl_main.main(["main", *FAST, f"--workdir={tmp_path}/run"]) == 0
    assert "trying step 10" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["10", "20"]   # re-saved
    assert len(os.listdir(tmp_path / "run" / "checkpoints_damaged")) == 1
    steps = [json.loads(l)["step"] for l in open(tmp_path / "run" / "metrics.jsonl")]
    assert steps == [10, 20]


def test_torn_metrics_line_is_dropped(env, tmp_path, capsys):
    shutil.copytree(env.trained, tmp_path / "run")
    _append("metrics.jsonl", '{"step": 2')(env, str(tmp_path))
    assert crl_main.main(["main", *FAST, f"--workdir={tmp_path}/run",
                          "--config.train.steps=30"]) == 0
    assert "not a complete JSON record" in capsys.readouterr().err
    steps = [json.loads(l)["step"] for l in open(tmp_path / "run" / "metrics.jsonl")]
    assert steps == [10, 20, 30, 40, 50, 60, 70]     # stage A to 30, then stage B again


def test_lock_is_released_after_a_run_and_after_an_error(env, tmp_path, capsys):
    assert crl_main.main(["main", *FAST, f"--workdir={tmp_path}/run",
                          "--config.train.learning_rate=1e30"]) == 3
    assert not (tmp_path / "run" / "run.lock").exists()


def test_debug_keeps_the_traceback(tmp_path, monkeypatch):
    with pytest.raises(Exception, match="config.train.grad_clip"):
        crl_main.main(["main", *FAST, f"--workdir={tmp_path}", "--config.train.grad_clip=-1",
                       "--debug"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(Exception, match="--n=0"):
        sample.main(["--preset=numerical_case1", "--n=0", f"--out={tmp_path}/s.npz"])


def test_a_bug_is_not_disguised_as_a_user_error(monkeypatch):
    """Errors raised outside this repository's checks keep their traceback."""
    def broken(argv):
        import numpy as np
        return np.frombuffer(b"abc", dtype=np.float64)   # ValueError raised by numpy
    assert cli.explain(_raised(broken)) is None
    with pytest.raises(ValueError):
        cli.run(broken, [], prog="x")


def _raised(fn):
    try:
        fn([])
    except Exception as e:  # noqa: BLE001
        return e
    raise AssertionError("no error")


# ---------------------------------------------------------------------------------------------
# every config field with a range is checked


# fields without a range: booleans, free text, paths checked where they are used
NO_RANGE = {
    "data.data_dir": "a folder, checked when the images are read",
    "data.path": "the PersonaX table, checked by experiments.personax (case personax_path_missing)",
    "data.columns": "a column layout, checked by experiments.personax.resolve_columns",
    "data.dataset": "informational",
    "data.load_traits": "boolean",
    "eval.plots": "boolean",
    "train.progress": "boolean",
    "model.learn_temperature": "boolean",
    "causal_discovery.stable": "boolean",
}
# field -> a value out of its range
BAD_VALUE = {
    "data.source": "excel", "data.preset": "case9", "data.n_measurements": 0,
    "data.shared_dim": -1, "data.generator_seed": -1, "data.image_size": 20,
    "data.identity": "sometimes", "data.train_size": -1, "data.eval_fit_size": 0,
    "data.val_size": 10, "data.test_size": 0, "data.noise": "cauchy", "data.n_cross_edges": -2,
    "data.default_n_image": 0, "data.default_n_text": 4, "data.nan_policy": "keep",
    "data.val_fraction": 0.9, "data.split_seed": -1, "data.standardise": "minmax",
    "model.name": "transformer", "model.encoder": "resnet", "model.hidden": (0,),
    "model.fusion": "max", "model.prior": "flow", "model.prior_hidden": 0,
    "model.flow_units": -1, "model.latent_dims": (0, 3), "model.eta_dim": -2,
    "model.temperature": 0.0, "model.similarity": "dot",
    "loss.recon_std": float("inf"), "loss.beta": -1.0, "loss.lambda_sparse": float("nan"),
    "loss.lambda_sparse_within": -1.0, "loss.lambda_tie": float("inf"),
    "train.steps": 0, "train.batch_size": 0, "train.learning_rate": 0.0,
    "train.warmup_steps": -1, "train.schedule": "linear", "train.grad_clip": 0.0,
    "train.seed": -1, "train.num_seeds": 0, "train.prefetch_steps": 0,
    "train.microbatch_size": -2, "train.steps_per_call": 0, "train.log_every": 0,
    "train.checkpoint_every": 0, "train.keep_checkpoints": 0, "train.divergence_factor": 0.5,
    "eval.graph_threshold": -0.1, "eval.shd_reversal_cost": 3, "eval.r2_kind": "cubic",
    "eval.kernel_components": 0, "eval.batch_size": 0,
    "causal_discovery.indep_test": "gsq", "causal_discovery.alpha": 1.5,
    "causal_discovery.max_n": -1, "causal_discovery.seed_index": 7,
    "causal_discovery.subsample_seed": -1,
    "loss.sparsity": "l2", "loss.dependence_rows": 0,
    "stage_b.steps": 0, "stage_b.learning_rate": -1e-3, "stage_b.warmup_steps": 5000,
    "stage_b.grad_clip": 0.0, "stage_b.flow_layers": (1, -1), "stage_b.flow_hidden": 0,
    "stage_b.prior_hidden": 0, "stage_b.flow_units": -1, "stage_b.lambdas": (0.1, -1.0),
    "stage_b.order_lambda": -0.5, "stage_b.max_orders": 0, "stage_b.nll_margin": -0.1,
    "stage_b.penalty_rows": 1, "stage_b.anchor": -0.1, "stage_b.prior_init": 0.0,
    "stage_b.within_weight": -1.0, "stage_b.penalty": "l2", "stage_b.penalty_scale": 0.0,
    "stage_b.restarts": 0,
}


def _all_fields() -> set[str]:
    out = set()
    for config in (synthetic_config.get_config(), variant_mnist_config.get_config(),
                   personax_config.get_config(), default_config.base_config()):
        out |= set(resume.flatten(resume.as_json(config)))
    return out


def test_every_config_field_has_a_check_or_a_reason_to_have_none():
    missing = sorted(_all_fields() - set(BAD_VALUE) - set(NO_RANGE))
    assert missing == [], f"config fields with neither a bad-value row nor a reason: {missing}"


@pytest.mark.parametrize("field", sorted(BAD_VALUE))
def test_each_field_out_of_range_is_a_config_error_naming_it(field, env, tmp_path):
    from crl_jax.config_validation import ConfigError
    from crl_jax.experiments import personax as personax_experiment
    from crl_jax.experiments import synthetic as synthetic_experiment

    section, name = field.split(".")
    personax_only = section == "causal_discovery" or name in (
        "default_n_image", "default_n_text", "nan_policy", "val_fraction", "split_seed",
        "standardise")
    if personax_only:
        config = personax_config.get_config("athle,smoke")
        config.data.path, config.data.columns = env.fake.paths["table"], env.fake.paths["columns"]
    else:
        config = synthetic_config.get_config("smoke")
    config[section][name] = BAD_VALUE[field]
    with pytest.raises(ConfigError, match=f"config.{field}"):
        if personax_only:
            personax_experiment.validate_config(config, n_devices=1)
        else:
            synthetic_experiment.setup(config, str(tmp_path))


# ---------------------------------------------------------------------------------------------
# signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_at_the_next_step_and_exits_cleanly(tmp_path, sig):
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "crl_jax.main", *FAST, f"--workdir={workdir}",
           "--config.train.steps=100000", "--config.train.checkpoint_every=1000",
           "--config.train.steps_per_call=1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    (line,) = [l for l in err.splitlines() if l.startswith("python -m crl_jax.main: error:")]
    assert f"stopped by {signal.Signals(sig).name}: checkpoint saved at step" in line
    step = int(line.split("checkpoint saved at step ")[1].split()[0])
    assert step >= 20 and step % 1000 != 0     # saved at the stop, not at checkpoint_every
    assert sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()) == [step]
    assert json.loads(metrics.read_text().splitlines()[-1])["step"] == step
    assert not (workdir / "run.lock").exists()
