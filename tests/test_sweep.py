"""Sweep runner: grid expansion, every shipped sweep file, resume/skip, --sweep_index,
failures, aggregation (results.csv, summary.md, plots) and the command line."""
from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import pandas as pd
import pytest

from crl_jax import methods, sweep
from crl_jax.experiments import synthetic as experiment
from crl_jax.methods.base import Method
from crl_jax.sweeps import grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS = ("methods", "measurements", "sparsity", "sample_size", "shared_latent", "noise",
          "calibration", "cases")
# (field, full grid, smoke grid) of each shipped sweep.
EXPECTED = {
    "methods": [("model.name", ("personax", "personax_vae", "mmcrl", "betavae", "mcl",
                                "multiview", "oracle", "random_encoder", "pca", "fastica"),
                 ("personax", "mcl", "oracle", "pca"))],
    "measurements": [("data.n_measurements", (1, 2, 3, 5), (1, 2))],
    "sparsity": [("data.n_cross_edges", (1, 2, 4), (1, 2)),
                 ("stage_b.lambdas", ((0.0,), (0.1,), (0.3,), (1.0,),
                                      (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)),
                  ((0.0,), (0.0, 0.3)))],
    "sample_size": [("data.train_size", (1000, 3000, 10000, 30000, 100000), (200, 1000))],
    "shared_latent": [("data.shared_dim", (0, 1, 2), (0, 1))],
    "noise": [("data.noise", ("gaussian", "laplace", "uniform"), ("gaussian", "laplace"))],
    "calibration": [("model.name", ("mcl", "multiview", "oracle", "random_encoder", "pca"),
                     ("mcl", "oracle"))],
    "cases": [("data.preset", ("numerical_case1", "numerical_case2", "numerical_case3"),
               ("numerical_case1", "numerical_case3"))],
}


def _sweep_module(name):
    return importlib.import_module(f"configs.sweeps.{name}")


# ---------------------------------------------------------------------- grid
def _base():
    return ml_collections.ConfigDict({"model": {"name": "a", "lr": 1.0, "hidden": (4, 4)},
                                      "data": {"k": 1}})


def test_expand_product_and_zip_in_order():
    sweep_cfg = {"product": [("model.name", ("a", "b")), ("data.k", (1, 2))],
                 "zip": [("model.lr", (0.1, 0.2, 0.3)), ("model.hidden", ((2,), (3,), (4, 4)))]}
    settings = grid.expand(sweep_cfg)
    assert len(settings) == 2 * 2 * 3
    assert settings[0] == {"model.name": "a", "data.k": 1, "model.lr": 0.1, "model.hidden": (2,)}
    assert settings[1] == {"model.name": "a", "data.k": 1, "model.lr": 0.2, "model.hidden": (3,)}
    assert settings[-1] == {"model.name": "b", "data.k": 2, "model.lr": 0.3, "model.hidden": (4, 4)}
    assert grid.entry_name(settings[-1]) == "model.name-b__data.k-2__model.lr-0.3__model.hidden-4x4"
    assert grid.expand({}) == [{}] and grid.entry_name({}) == "base"


def test_grid_errors_name_the_problem():
    with pytest.raises(ValueError, match="same number of values"):
        grid.expand({"zip": [("a.b", (1, 2)), ("a.c", (1,))]})
    with pytest.raises(ValueError, match="more than once"):
        grid.expand({"product": [("a.b", (1,))], "zip": [("a.b", (2,))]})
    with pytest.raises(ValueError, match="'model.lrr' is not a field"):
        grid.apply_setting(_base(), {"model.lrr": 1.0})
    with pytest.raises(ValueError, match="'train' is not a section"):
        grid.apply_setting(_base(), {"train.steps": 1})
    with pytest.raises(ValueError, match="cannot set"):
        grid.apply_setting(_base(), {"model.lr": "fast"})
    base = _base()
    new = grid.apply_setting(base, {"model.lr": 0.5, "data.k": 3})
    assert (new.model.lr, new.data.k) == (0.5, 3) and (base.model.lr, base.data.k) == (1.0, 1)


# ---------------------------------------------------------------------- shipped sweeps
@pytest.mark.parametrize("name", SWEEPS)
@pytest.mark.parametrize("variant", ["", "smoke"])
def test_shipped_sweep_grids_are_valid(name, variant):
    cfg = _sweep_module(name).get_config(variant)
    assert cfg.name == name
    entries = grid.make_entries(cfg)
    expected = EXPECTED[name]
    grids = [values if variant == "" else smoke for _, values, smoke in expected]
    assert len(entries) == int(pd.Series([len(g) for g in grids]).prod())
    assert [f for f, *_ in expected] == list(entries[0].setting)
    for (field, *_), values in zip(expected, grids):
        assert tuple(dict.fromkeys(e.setting[field] for e in entries)) == values
    sweep._validate(entries)   # every entry's config passes validation, data included
    for e in entries:
        spec = experiment.build_spec(e.config.data)
        for field, value in e.setting.items():
            section, key = field.split(".")
            assert e.config[section][key] == value
            if field == "data.noise":
                assert spec.noise == value
            if field == "data.n_cross_edges":
                assert spec.n_cross_edges == value
            if field == "data.n_measurements":
                assert spec.n_measurements == (value, value)
            if field == "data.shared_dim":
                assert spec.shared_dim == value
            if field == "data.preset":
                assert spec.name == value
    if variant == "smoke":
        assert entries[0].config.train.steps <= 30 and entries[0].config.eval.plots is False


def test_sweep_variants_and_presets():
    with pytest.raises(ValueError, match="unknown variant"):
        _sweep_module("methods").get_config("case9")
    with pytest.raises(ValueError, match="sweeps the preset itself"):
        _sweep_module("cases").get_config("case2")
    assert _sweep_module("cases").get_config("").base.train.num_seeds == 5
    with pytest.raises(ValueError, match="fixed shared"):
        _sweep_module("shared_latent").get_config("content_style")
    cfg = _sweep_module("methods").get_config("case3,smoke")
    assert cfg.base.data.preset == "numerical_case3"
    cfg = _sweep_module("measurements").get_config("variant_mnist_small")
    assert cfg.base.data.preset == "variant_mnist_3m" and cfg.base.data.image_size == 14


# ---------------------------------------------------------------------- running
def _cheap_methods_sweep():
    """methods:smoke restricted to the two controls that need no training (seconds)."""
    cfg = _sweep_module("methods").get_config("smoke")
    cfg.sweep.product = [("model.name", ("oracle", "pca"))]
    return cfg


def test_sweep_index_resume_skip_and_aggregation(tmp_path, capsys):
    cfg = _cheap_methods_sweep()
    with pytest.raises(ValueError, match="--sweep_index=2 is out of range"):
        sweep.run_sweep(cfg, str(tmp_path), sweep_index=2)

    # One entry, as an array job would: nothing aggregated.
    assert sweep.run_sweep(cfg, str(tmp_path), sweep_index=1) == {"ran": "model.name-pca"}
    pca_report = tmp_path / "model.name-pca" / "report.json"
    assert pca_report.exists() and not (tmp_path / "model.name-oracle").exists()
    assert not (tmp_path / "results.csv").exists()
    out = sweep.run_sweep(cfg, str(tmp_path), aggregate_only=True)
    assert out["rows"] == 2 and out["pending"] == ["model.name-oracle"]
    assert "Not run yet: `model.name-oracle`" in (tmp_path / "summary.md").read_text()

    # The full sweep runs the missing entry only.
    mtime = pca_report.stat().st_mtime_ns
    capsys.readouterr()
    out = sweep.run_sweep(cfg, str(tmp_path))
    log = capsys.readouterr().out
    assert "2/2 model.name-pca: finished earlier, skipped" in log
    assert "1/2 model.name-oracle: running" in log
    assert pca_report.stat().st_mtime_ns == mtime
    assert out["done"] == ["model.name-oracle", "model.name-pca"] and not out["pending"]

    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == 2 * 2   # entries x seeds
    assert list(df["model.name"]) == ["oracle", "oracle", "pca", "pca"]
    assert list(df["seed"]) == [0, 1, 0, 1]
    for col in ("mcc_pearson", "mcc_spearman", "mcc_pearson_val", "mcc_pearson_m1",
                "mcc_pearson_m2", "r2_m1", "r2_m2", "r2_mean", "r2_m1_from_m2", "r2_m2_from_m1",
                "shd", "f1", "train_seconds", "mcc_pearson_identifiable",
                "mcc_pearson_not_identifiable"):
        assert col in df.columns, col
    assert (df[df["model.name"] == "oracle"]["mcc_spearman"] > 0.99).all()
    assert df[["mcc_pearson_identifiable", "mcc_pearson_not_identifiable"]].notna().all().all()
    assert df["shd"].isna().all()   # no method here learns a graph
    summary = (tmp_path / "summary.md").read_text()
    assert "2 of 2 runs finished" in summary
    oracle_row = next(line for line in summary.splitlines() if line.startswith("| oracle |"))
    assert oracle_row.split(" | ")[1] == "2"   # seeds
    assert (tmp_path / "plots" / "model.name.png").stat().st_size > 0

    # --aggregate_only from the command line rewrites the same table.
    os.remove(tmp_path / "results.csv")
    proc = subprocess.run(
        [sys.executable, "-m", "crl_jax.sweep", "--config=configs/sweeps/methods.py:smoke",
         f"--workdir={tmp_path}", "--aggregate_only"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = pd.read_csv(tmp_path / "results.csv")
    # The file's grid has 4 methods; only the two finished ones have rows.
    pd.testing.assert_frame_equal(again, df)
    assert "Not run yet: `model.name-personax`, `model.name-mcl`" in \
        (tmp_path / "summary.md").read_text()


@dataclasses.dataclass(frozen=True)
class _Diverges(Method):
    """A one-parameter method whose loss is NaN: exercises the failure path in seconds."""

    def init(self, key, xs):
        return {"w": jnp.zeros(())}

    def loss(self, params, xs, key):
        loss = params["w"] * jnp.nan
        return loss, {"loss": loss}

    def encode(self, params, xs, true_z=None):
        return jnp.zeros((xs[0].shape[0], self.layout.latent_dim))


def test_a_diverging_entry_is_recorded_and_the_sweep_goes_on(tmp_path):
    methods.register("diverges_test", lambda name, layout, config: _Diverges(name, layout))
    try:
        cfg = _sweep_module("methods").get_config("smoke")
        cfg.sweep.product = [("model.name", ("diverges_test", "pca"))]
        out = sweep.run_sweep(cfg, str(tmp_path))
    finally:
        methods._BUILDERS.pop("diverges_test")
    assert out["failed"] == ["model.name-diverges_test"] and out["done"] == ["model.name-pca"]
    assert "NaN" in (tmp_path / "model.name-diverges_test" / "failed.json").read_text()
    assert out["rows"] == 2
    assert "Failed (see failed.json" in (tmp_path / "summary.md").read_text()


# ---------------------------------------------------------------------- every :smoke sweep
# Every shipped sweep's :smoke version, end to end (most of it one compilation per data
# shape). The default run keeps the calibration task (one method, one preset); the other
# sweeps (grids over methods, presets and other config fields: cases 178 s, methods 96 s,
# the other five together 5.4 minutes on 2 cores of an AMD EPYC) are `slow`; their grids are
# checked above without training.
_DEFAULT_RUN_SWEEPS = ("calibration",)


@pytest.mark.parametrize("name", [
    name if name in _DEFAULT_RUN_SWEEPS else pytest.param(name, marks=pytest.mark.slow)
    for name in SWEEPS])
def test_every_smoke_sweep_runs_end_to_end(tmp_path, name):
    cfg = _sweep_module(name).get_config("smoke")
    cfg.base.train.steps = 4
    cfg.base.train.log_every = 2
    cfg.base.train.checkpoint_every = 2
    out = sweep.run_sweep(cfg, str(tmp_path))
    entries = grid.make_entries(cfg)
    assert not out["failed"] and not out["pending"]
    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == len(entries) * cfg.base.train.num_seeds
    assert df["mcc_pearson"].between(0, 1).all()
    for field in entries[0].setting:
        assert (tmp_path / "plots" / f"{field}.png").exists()
