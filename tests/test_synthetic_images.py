"""Variant-MNIST: image loader, rendering, and what each latent does to the pictures."""

from __future__ import annotations

import gzip
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from synthetic import get_spec, image_data, load_process, make_process, render
from synthetic.sample import main as sample_main

N = 512  # one batch size for all image tests: the sampler compiles once per (spec, n)
COLS = np.arange(28, dtype=np.float64)


@pytest.fixture(scope="module")
def process(data_dir):
    # rendering is checked on varied images: one random image per sample (identity tests: test_synthetic_identity.py)
    return make_process(jax.random.PRNGKey(0), get_spec("variant_mnist_3m", identity="per_sample", data_dir=str(data_dir)))


@pytest.fixture(scope="module")
def batch(process):
    return process.sample(jax.random.PRNGKey(1), N)


@pytest.fixture(scope="module")
def pools(data_dir):
    return (image_data.load_images("mnist", "train", data_dir).astype(np.float64) / 255.0,
            image_data.load_images("fashion_mnist", "train", data_dir).astype(np.float64) / 255.0)


def _centroid(img: np.ndarray, axis: int) -> np.ndarray:
    """Intensity-weighted mean column (axis=1 summed out -> columns) or row (axis=2) of (n, 28, 28)."""
    return (img.sum(axis=axis) * COLS).sum(axis=1) / img.sum(axis=(1, 2))


# ---------------------------------------------------------------- loader
def test_idx_files_decode_with_known_label_counts(data_dir):
    x = image_data.load_images("mnist", "train", data_dir)
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8 and x.max() == 255
    np.testing.assert_array_equal(np.bincount(image_data.load_labels("mnist", "train", data_dir)),
                                  [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    np.testing.assert_array_equal(np.bincount(image_data.load_labels("mnist", "test", data_dir)),
                                  [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    f = image_data.load_images("fashion_mnist", "test", data_dir)
    assert f.shape == (10000, 28, 28)
    assert image_data.load_images("mnist", "train", data_dir) is x  # decoded once per process (cached)


def test_read_idx_roundtrip_and_bad_magic(tmp_path):
    arr = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    header = bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(tmp_path / "a.gz", "wb") as f:
        f.write(header + arr.tobytes())
    np.testing.assert_array_equal(image_data.read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "b").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(ValueError, match="not an IDX file"):
        image_data.read_idx(tmp_path / "b")


def test_missing_image_dir_raises_clear_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="data_dir=.*CRL_JAX_DATA_DIR.*tfds build mnist fashion_mnist"):
        make_process(jax.random.PRNGKey(0), get_spec("variant_mnist_3m", data_dir=str(tmp_path)))
    # neither a data dir, nor the env var, nor a prepared tensorflow-datasets copy
    monkeypatch.delenv(image_data.ENV_VAR, raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match="CRL_JAX_DATA_DIR unset.*tfds build"):
        image_data.load_images("mnist")
    with pytest.raises(ValueError, match="dataset='cifar'"):
        image_data.load_images("cifar", data_dir=tmp_path)


def test_env_var_is_used(monkeypatch, data_dir):
    monkeypatch.setenv(image_data.ENV_VAR, str(data_dir))
    assert image_data.load_images("fashion_mnist").shape == (60000, 28, 28)
    monkeypatch.setenv(image_data.ENV_VAR, "/nonexistent/images")
    with pytest.raises(FileNotFoundError, match="CRL_JAX_DATA_DIR='/nonexistent/images'"):
        image_data.load_images("mnist")


# ---------------------------------------------------------------- process output
def test_shapes_ranges_and_graph(process, batch):
    xd, xf = batch.x
    assert xd.shape == (N, 3, 28, 28, 3) and xf.shape == (N, 1, 28, 28, 1)
    assert xd.dtype == jnp.float32 and xf.dtype == jnp.float32
    assert float(xd.min()) >= 0 and float(xd.max()) <= 1 and float(xf.max()) <= 1
    assert batch.z.shape == (N, 4)
    assert batch.eta[0].shape == (N, 3, 1) and batch.eta[1].shape == (N, 1, 1)
    np.testing.assert_array_equal(batch.adjacency, [[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
    z = np.asarray(batch.z)
    # the SCM edges are real: parents predict children, non-adjacent roots do not
    assert abs(stats.spearmanr(z[:, 0], z[:, 1])[0]) > 0.2 and abs(stats.spearmanr(z[:, 2], z[:, 3])[0]) > 0.2


def test_colour_measurements_share_digit_and_position(batch):
    xd = np.asarray(batch.x[0], np.float64)
    grey = xd / render.COLOURS[:3][None, :, None, None, :]  # undo each measurement's colour
    for k in range(3):
        for c in range(3):
            np.testing.assert_allclose(grey[:, k, :, :, c], grey[:, 0, :, :, 0], atol=1e-5)
    # ... while the observations themselves differ between measurements
    assert np.abs(xd[:, 0] - xd[:, 1]).mean() > 0.01 and np.abs(xd[:, 1] - xd[:, 2]).mean() > 0.01
    np.testing.assert_array_equal(np.asarray(batch.eta[0])[:, 0], np.asarray(batch.eta[0])[:, 2])


def test_latents_move_what_they_claim(batch, pools):
    digits, items = pools
    z = np.asarray(batch.z, np.float64)
    idx_d, idx_f = np.asarray(batch.eta[0])[:, 0, 0], np.asarray(batch.eta[1])[:, 0, 0]
    grey = np.asarray(batch.x[0], np.float64)[:, 0, :, :, 0] / render.COLOURS[0, 0]
    item = np.asarray(batch.x[1], np.float64)[:, 0, :, :, 0]
    src_d, src_f = digits[idx_d], items[idx_f]  # the exogenous identity recorded in eta

    # z11 -> horizontal position of the digit (and not its vertical position)
    cx = _centroid(grey, 1)
    assert np.corrcoef(cx, z[:, 0])[0, 1] > 0.9
    dx = cx - _centroid(src_d, 1)
    assert stats.spearmanr(dx, z[:, 0])[0] > 0.99
    np.testing.assert_allclose(np.median(np.abs(dx - np.asarray(render.shift_px(z[:, 0])))), 0, atol=0.05)
    vertical = np.abs(_centroid(grey, 2) - _centroid(src_d, 2))  # changes only if a wide digit touches the edge
    assert np.quantile(vertical, 0.95) < 1e-3 and vertical.max() < 0.5
    # z12 -> transparency: intensity relative to the source digit
    ratio = grey.sum(axis=(1, 2)) / src_d.sum(axis=(1, 2))
    assert stats.spearmanr(ratio, z[:, 1])[0] > 0.99 and abs(stats.spearmanr(ratio, z[:, 0])[0]) < 0.9
    # z21 -> vertical position of the fashion item (after shrinking it to 20 px about the centre)
    cy = _centroid(item, 2)
    assert np.corrcoef(cy, z[:, 2])[0, 1] > 0.85
    dy = cy - ((_centroid(src_f, 2) - 13.5) * render.FASHION_SCALE + 13.5)
    assert stats.spearmanr(dy, z[:, 2])[0] > 0.99
    # z22 -> grey level
    ratio_f = item.sum(axis=(1, 2)) / src_f.sum(axis=(1, 2))
    assert stats.spearmanr(ratio_f, z[:, 3])[0] > 0.99
    # objects stay in the frame: almost no mass on the outermost pixels
    assert grey[:, :, [0, 27]].sum() / grey.sum() < 0.01 and item[:, [0, 27], :].sum() / item.sum() < 0.01


def test_render_monotone_sweeps(pools):
    digits, items = pools
    sweep = jnp.linspace(-2.5, 2.5, 11)
    zeros = jnp.zeros_like(sweep)
    d = jnp.asarray(np.repeat(digits[:1] * 255, 11, axis=0))
    f = jnp.asarray(np.repeat(items[:1] * 255, 11, axis=0))
    fn = jax.jit(render.render, static_argnums=(3, 4))
    for j, (measure_digit, measure) in enumerate([
            (True, lambda g: _centroid(g, 1)), (True, lambda g: g.mean(axis=(1, 2))),
            (False, lambda g: _centroid(g, 2)), (False, lambda g: g.mean(axis=(1, 2)))]):
        z = jnp.stack([sweep if i == j else zeros for i in range(4)], axis=1)
        xd, xf = fn(z, d, f, 3, 28)
        g = np.asarray(xd[:, 0, :, :, 0] if measure_digit else xf[:, 0, :, :, 0], np.float64)
        assert (np.diff(measure(g)) > 0).all(), f"latent {j} does not move its attribute monotonically"


def test_image_size_14_is_2x2_pool_of_28(process, batch, data_dir):
    p14 = make_process(jax.random.PRNGKey(0), get_spec("variant_mnist_3m", image_size=14, identity="per_sample",
                                                       data_dir=str(data_dir)))
    s14 = p14.sample(jax.random.PRNGKey(1), N)
    assert s14.x[0].shape == (N, 3, 14, 14, 3) and s14.x[1].shape == (N, 1, 14, 14, 1)
    np.testing.assert_array_equal(np.asarray(s14.z), np.asarray(batch.z))
    x28 = np.asarray(batch.x[0])
    pooled = x28.reshape(N, 3, 14, 2, 14, 2, 3).mean(axis=(3, 5))
    np.testing.assert_allclose(np.asarray(s14.x[0]), pooled, atol=1e-6)


def test_determinism_save_load_and_speed(process, batch, tmp_path, data_dir):
    again = process.sample(jax.random.PRNGKey(1), N)
    np.testing.assert_array_equal(np.asarray(again.x[0]), np.asarray(batch.x[0]))
    other = process.sample(jax.random.PRNGKey(2), N)
    assert not np.array_equal(np.asarray(other.eta[0]), np.asarray(batch.eta[0]))
    process.save(tmp_path)
    loaded = load_process(tmp_path, data_dir=data_dir)
    s = loaded.sample(jax.random.PRNGKey(1), N)
    np.testing.assert_array_equal(np.asarray(s.x[1]), np.asarray(batch.x[1]))
    np.testing.assert_array_equal(np.asarray(s.z), np.asarray(batch.z))
    jax.block_until_ready(process.sample(jax.random.PRNGKey(3), 4096))
    t = time.perf_counter()
    jax.block_until_ready(process.sample(jax.random.PRNGKey(4), 4096))
    assert time.perf_counter() - t < 3.0  # 4096 x (3 colour + 1 grey) 28x28 images, on a shared CPU


def test_cli_image_preset_writes_npz_and_png(tmp_path, data_dir, capsys):
    out = tmp_path / "vm.npz"
    assert sample_main(["--preset=variant_mnist_3m", f"--n={N}", f"--out={out}", f"--data_dir={data_dir}"]) == 0
    with np.load(out) as f:
        assert f["x_digit"].shape == (N, 3, 28, 28, 3) and f["x_fashion"].shape == (N, 1, 28, 28, 1)
        assert f["z"].shape == (N, 4) and f["eta_digit"].dtype == np.int32
    png = tmp_path / "vm_examples.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out
    assert sample_main(["--preset=variant_mnist_3m", "--n=4", f"--out={out}", "--shared_dim=1"]) == 2
    assert "--shared_dim is not available" in capsys.readouterr().err
