"""tensorflow-datasets builder: prepare a small array_record copy offline, read it back without TensorFlow."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from synthetic import Spec, get_spec, make_process, tfds_builder  # noqa: E402


def _expected(preset: str, seed: int, split_index: int, n: int, chunk: int, **overrides) -> dict[str, np.ndarray]:
    """The documented key scheme, computed directly with the public API."""
    process = make_process(jax.random.fold_in(jax.random.PRNGKey(seed), 0), get_spec(preset, **overrides))
    split_key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 1), split_index)
    parts = [process.sample(jax.random.fold_in(split_key, c), chunk) for c in range(-(-n // chunk))]
    out = {"z": np.concatenate([np.asarray(p.z) for p in parts])[:n]}
    for i, name in enumerate(process.spec.modality_names):
        out[f"x_{name}"] = np.concatenate([np.asarray(p.x[i]) for p in parts])[:n]
        out[f"eta_{name}"] = np.concatenate([np.asarray(p.eta[i]) for p in parts])[:n]
    out["adjacency"] = process.adjacency
    return out


def test_prepare_offline_and_read_back_identical(tmp_path):
    # In /work/venv TensorFlow is not installed: writing array_record and tfds.data_source work without it.
    # numerical_case3 with shared_dim=2 and chunk 2048: the (spec, n) the process tests compile too
    builder = tfds_builder.prepare("numerical_case3", str(tmp_path), seed=7, n_train=300, n_validation=0,
                                   n_test=40, chunk=2048, shared_dim=2)
    name = builder.builder_config.name
    assert name.startswith("numerical_case3_s7_n300-0-40_c2048_")
    files = sorted(p.name for p in (tmp_path / "crl_synthetic" / name / "1.0.0").iterdir())
    assert any(f.startswith("crl_synthetic-train.array_record") for f in files)
    assert not any("tfrecord" in f for f in files)
    assert set(builder.info.splits.keys()) == {"train", "test"}

    for split, split_index, n in (("train", 0, 300), ("test", 2, 40)):
        expected = _expected("numerical_case3", 7, split_index, n, 2048, shared_dim=2)
        # read through the registered name, as a user would (no TensorFlow needed)
        source = tfds.data_source(f"crl_synthetic/{name}", split=split, data_dir=str(tmp_path), download=False)
        assert len(source) == n
        got = {k: np.stack([np.asarray(source[i][k]) for i in range(n)]) for k in source[0]}
        keys = ("z", "x_m1", "x_m2", "x_m3", "x_m4", "eta_m1", "eta_m2", "eta_m3", "eta_m4")
        assert set(got) == {"index", *keys}
        np.testing.assert_array_equal(got["index"], np.arange(n))  # generation order is kept
        for k in keys:
            assert got[k].dtype == np.float32
            np.testing.assert_array_equal(got[k], expected[k])

    meta = builder.info.metadata
    assert Spec.from_json(meta["spec_json"]) == get_spec("numerical_case3", shared_dim=2)
    np.testing.assert_array_equal(np.asarray(meta["adjacency"]), expected["adjacency"])
    assert meta["seed"] == 7 and meta["block_slices"]["shared"] == [0, 2]

    # preparing again reuses the copy (no regeneration) and reads the same numbers
    again = tfds_builder.prepare("numerical_case3", str(tmp_path), seed=7, n_train=300, n_validation=0,
                                 n_test=40, chunk=2048, shared_dim=2)
    np.testing.assert_array_equal(again.as_data_source(split="test")[5]["x_m2"], expected["x_m2"][5])


def test_builder_config_validation(tmp_path):
    with pytest.raises(ValueError, match="unknown override"):
        tfds_builder.make_builder("numerical_case1", str(tmp_path), colour=1)
    with pytest.raises(ValueError, match="preset='nope'"):
        tfds_builder.SyntheticConfig(name="x", preset="nope")
    with pytest.raises(ValueError, match="n_train=-1"):
        tfds_builder.SyntheticConfig(name="x", preset="numerical_case1", n_train=-1)
    # (content_style has an explicit graph, so building its DatasetInfo samples no process: fast)
    b = tfds_builder.make_builder("content_style", str(tmp_path))
    assert b.builder_config.name == "content_style"  # defaults keep the preset's name
    assert json.loads(b.builder_config.overrides_json) == {}
    # differently configured copies never share a directory
    names = {tfds_builder.make_builder("content_style", str(tmp_path), **kw).builder_config.name
             for kw in ({}, {"seed": 1}, {"n_measurements": 2}, {"n_measurements": 1}, {"n_train": 5})}
    assert len(names) == 5


def test_variant_mnist_copy(tmp_path, data_dir):
    builder = tfds_builder.prepare("variant_mnist_3m", str(tmp_path / "tfds"), seed=1, n_train=12, n_validation=0,
                                   n_test=0, chunk=12, image_size=14, data_dir=str(data_dir))
    assert "data_dir" not in builder.builder_config.overrides_json  # where the images live is not part of the data
    source = builder.as_data_source(split="train")
    expected = _expected("variant_mnist_3m", 1, 0, 12, 12, image_size=14, data_dir=str(data_dir))
    got = {k: np.stack([np.asarray(source[i][k]) for i in range(12)]) for k in source[0]}
    assert got["x_digit"].shape == (12, 3, 14, 14, 3) and got["x_fashion"].shape == (12, 1, 14, 14, 1)
    assert got["eta_digit"].dtype == np.int32
    for k in ("z", "x_digit", "x_fashion", "eta_digit", "eta_fashion"):
        np.testing.assert_array_equal(got[k], expected[k])
