"""Variant MNIST `identity`: which image each colour measurement shows (Spec.identity)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import synthetic
from configs import variant_mnist
from crl_jax import config_validation
from crl_jax.experiments import synthetic as experiment
from synthetic import Spec, get_spec, image_data, load_process, make_process, render
from synthetic.presets import VARIANT_MNIST_IDENTITY
from synthetic.sample import main as sample_main

N = 256  # one batch size and 14x14 images: the sampler compiles once per identity setting
K = 3


def _spec(identity: str, data_dir, **kw):
    return get_spec("variant_mnist_3m", image_size=14, identity=identity, data_dir=str(data_dir), **kw)


@pytest.fixture(scope="module")
def processes(data_dir):
    return {mode: make_process(jax.random.PRNGKey(0), _spec(mode, data_dir)) for mode in synthetic.IDENTITIES}


@pytest.fixture(scope="module")
def samples(processes):
    return {mode: p.sample(jax.random.PRNGKey(1), N) for mode, p in processes.items()}


@pytest.fixture(scope="module")
def labels(data_dir):
    return image_data.load_labels("mnist", "train", data_dir), image_data.load_labels("fashion_mnist", "train", data_dir)


def _indices(sample):
    """(N, K) digit and (N, 1) fashion pool indices recorded in eta."""
    return np.asarray(sample.eta[0])[..., 0], np.asarray(sample.eta[1])[..., 0]


def test_per_sample_measurements_share_one_image(samples):
    idx_d, idx_f = _indices(samples["per_sample"])
    assert idx_d.shape == (N, K) and idx_f.shape == (N, 1)
    np.testing.assert_array_equal(idx_d, np.repeat(idx_d[:, :1], K, axis=1))
    assert len(np.unique(idx_d[:, 0])) > 0.9 * N and len(np.unique(idx_f)) > 0.9 * N  # a new image per sample


def test_per_measurement_same_class_different_images(samples, labels):
    idx_d, idx_f = _indices(samples["per_measurement"])
    lab_d, lab_f = labels
    for a, b in ((0, 1), (0, 2), (1, 2)):  # a different image in (almost) every sample and pair of colours
        assert np.mean(idx_d[:, a] != idx_d[:, b]) > 0.98
    np.testing.assert_array_equal(lab_d[idx_d], np.repeat(lab_d[idx_d[:, :1]], K, axis=1))  # one class per sample
    assert set(lab_d[idx_d[:, 0]]) == set(range(10)) and set(lab_f[idx_f[:, 0]]) == set(range(10))
    assert len(np.unique(idx_d)) > 0.9 * idx_d.size and len(np.unique(idx_f)) > 0.9 * N


def test_fixed_one_image_everywhere(processes, samples, data_dir):
    for sample in (samples["fixed"], processes["fixed"].sample(jax.random.PRNGKey(2), N)):
        idx_d, idx_f = _indices(sample)
        assert np.unique(idx_d).size == 1 and np.unique(idx_f).size == 1
        fixed = processes["fixed"].params["fixed_image"]
        assert idx_d[0, 0] == int(fixed["digit"]) and idx_f[0, 0] == int(fixed["fashion"])
    # the image is part of the process: another process key picks another one
    other = make_process(jax.random.PRNGKey(5), _spec("fixed", data_dir)).params["fixed_image"]
    assert (int(other["digit"]), int(other["fashion"])) != (int(fixed["digit"]), int(fixed["fashion"]))


@pytest.mark.parametrize("mode", synthetic.IDENTITIES)
def test_each_measurement_renders_its_recorded_image(mode, samples, data_dir):
    """Colour k shows the image eta records for it, rendered exactly as a shared image would be."""
    s = samples[mode]
    digits = image_data.load_images("mnist", "train", data_dir)
    items = image_data.load_images("fashion_mnist", "train", data_dir)
    idx_d, idx_f = _indices(s)
    for k in range(K):
        ref_d, ref_f = render.render(s.z, digits[idx_d[:, k]], items[idx_f[:, 0]], K, 14)
        np.testing.assert_allclose(np.asarray(s.x[0][:, k]), np.asarray(ref_d[:, k]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(s.x[1]), np.asarray(ref_f), atol=1e-6)
    grey = np.asarray(s.x[0], np.float64) / render.COLOURS[:K][None, :, None, None, :]
    differs = np.abs(grey[:, 0, ..., 0] - grey[:, 1, ..., 0]).max(axis=(1, 2)) > 1e-3
    assert differs.mean() > 0.98 if mode == "per_measurement" else not differs.any()


def test_latents_do_not_depend_on_identity(samples):
    z = np.asarray(samples["per_sample"].z)
    for mode in ("per_measurement", "fixed"):
        np.testing.assert_array_equal(np.asarray(samples[mode].z), z)


def test_preset_default_and_config(data_dir):
    assert VARIANT_MNIST_IDENTITY == "fixed"
    assert get_spec("variant_mnist_3m").identity == "fixed"
    assert get_spec("numerical_case1").identity is None
    config = variant_mnist.get_config("smoke")
    config.data.data_dir = str(data_dir)
    assert config.data.identity == ""  # "" = the preset's default
    assert experiment.build_spec(config.data).identity == "fixed"
    config.data.identity = "per_measurement"
    assert experiment.build_spec(config.data).identity == "per_measurement"
    config_validation.validate(config, n_devices=1)


def test_invalid_identity_names_the_field(data_dir):
    with pytest.raises(ValueError, match=r"Spec\.identity='per_image'.*per_sample.*per_measurement.*fixed"):
        get_spec("variant_mnist_3m", identity="per_image")
    with pytest.raises(ValueError, match=r"Spec\.identity=None"):
        get_spec("variant_mnist_3m", identity=None)
    with pytest.raises(ValueError, match=r"Spec\.identity='fixed' applies only to kind='variant_mnist'"):
        get_spec("numerical_case1", identity="fixed")
    config = variant_mnist.get_config("smoke")
    config.data.identity = "per_image"
    with pytest.raises(config_validation.ConfigError, match=r"config\.data\.identity: 'per_image'"):
        config_validation.validate(config, n_devices=1)
    config.data.preset, config.data.identity = "numerical_case1", "fixed"
    with pytest.raises(config_validation.ConfigError, match=r"config\.data\.identity: .*numerical_case1"):
        config_validation.validate(config, n_devices=1)


@pytest.mark.parametrize("mode", synthetic.IDENTITIES)
def test_save_load_round_trip(mode, processes, samples, tmp_path, data_dir):
    processes[mode].save(tmp_path)
    loaded = load_process(tmp_path, data_dir=data_dir)
    assert loaded.spec.identity == mode and loaded.spec == processes[mode].spec
    s, ref = loaded.sample(jax.random.PRNGKey(1), N), samples[mode]
    for a, b in zip(jax.tree_util.tree_leaves((s.x, s.z, s.eta)), jax.tree_util.tree_leaves((ref.x, ref.z, ref.eta))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_spec_saved_without_identity_loads_as_per_sample(processes, tmp_path, data_dir):
    processes["per_sample"].save(tmp_path)
    meta_path = tmp_path / "generator_spec.json"
    meta = json.loads(meta_path.read_text())
    del meta["spec"]["identity"]
    meta_path.write_text(json.dumps(meta))
    assert load_process(tmp_path, data_dir=data_dir).spec.identity == "per_sample"


@pytest.mark.parametrize("mode", synthetic.IDENTITIES)
def test_sampling_is_deterministic_in_the_key(mode, processes, samples):
    again = processes[mode].sample(jax.random.PRNGKey(1), N)
    for a, b in zip(jax.tree_util.tree_leaves((again.x, again.eta)), jax.tree_util.tree_leaves((samples[mode].x,
                                                                                              samples[mode].eta))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = processes[mode].sample(jax.random.PRNGKey(2), N)
    assert not np.array_equal(np.asarray(other.x[0]), np.asarray(samples[mode].x[0]))
    assert np.array_equal(np.asarray(other.eta[0]), np.asarray(samples[mode].eta[0])) == (mode == "fixed")


def test_cli_identity_flag(tmp_path, data_dir, labels, capsys):
    out = tmp_path / "vm.npz"
    assert sample_main(["--preset=variant_mnist_3m", "--n=64", f"--out={out}", f"--data_dir={data_dir}",
                        "--identity=per_measurement"]) == 0
    with np.load(out) as f:
        idx = f["eta_digit"][..., 0]
        assert Spec.from_json(str(f["spec_json"])).identity == "per_measurement"
    assert np.mean(idx[:, 0] != idx[:, 1]) > 0.9 and (labels[0][idx] == labels[0][idx[:, :1]]).all()
    capsys.readouterr()
    assert sample_main(["--preset=numerical_case1", "--n=4", f"--out={out}", "--identity=fixed"]) == 2
    assert "--identity is only for variant_mnist_3m" in capsys.readouterr().err
