"""Analytic tests of crl_jax.metrics.mcc."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from crl_jax.metrics import Matching, correlation_matrix, fit_matching, mcc, mcc_out_of_sample

METHODS = ("pearson", "spearman")


def _latents(n: int = 5000, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.mark.parametrize("method", METHODS)
def test_identity_gives_one(method):
    z = _latents()
    res = mcc(z, z, method=method)
    assert res.value == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(res.matching.true_idx, np.arange(4))
    np.testing.assert_array_equal(res.matching.est_idx, np.arange(4))


@pytest.mark.parametrize("method", METHODS)
def test_permutation_sign_and_scale_give_one_and_recover_matching(method):
    z = _latents()
    perm = np.array([2, 0, 3, 1])  # est column j is true component perm[j]
    signs = np.array([-1.0, 1.0, -1.0, 1.0])
    est = z[:, perm] * signs * np.array([3.0, 0.1, 7.0, 2.0]) + 5.0
    res = mcc(z, est, method=method)
    assert res.value == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(res.per_component, 1.0, atol=1e-12)
    # true component i is matched to the est column holding it, with that column's sign
    inv = np.argsort(perm)
    np.testing.assert_array_equal(res.matching.est_idx, inv[res.matching.true_idx])
    np.testing.assert_array_equal(res.matching.signs, signs[res.matching.est_idx])


@pytest.mark.parametrize("method", METHODS)
def test_independent_noise_gives_about_zero(method):
    z = _latents(seed=0)
    noise = _latents(seed=1)
    assert mcc(z, noise, method=method).value < 0.1


def test_monotone_elementwise_map_spearman_one_pearson_below_one():
    z = _latents()
    est = np.stack([z[:, 0] ** 3, np.exp(z[:, 1]), -np.exp(2 * z[:, 2]), np.sinh(3 * z[:, 3])], axis=1)
    assert mcc(z, est, method="spearman").value == pytest.approx(1.0, abs=1e-12)
    assert mcc(z, est, method="pearson").value < 0.9


def test_correlation_matrix_matches_numpy_and_scipy():
    rng = np.random.default_rng(3)
    true = rng.standard_normal((500, 3))
    est = np.column_stack([true[:, 0] + rng.standard_normal(500), -np.exp(true[:, 1]), rng.standard_normal(500), true[:, 2]])
    pearson = correlation_matrix(true, est, "pearson")
    assert pearson.shape == (3, 4)
    np.testing.assert_allclose(pearson, np.corrcoef(true.T, est.T)[:3, 3:], atol=1e-12)
    spearman = correlation_matrix(true, est, "spearman")
    np.testing.assert_allclose(spearman, spearmanr(true, est).statistic[:3, 3:], atol=1e-12)


def test_zero_variance_column_has_zero_correlation_not_nan():
    z = _latents(n=1000, d=2)
    est = np.column_stack([z[:, 0], np.full(1000, 3.0)])
    corr = correlation_matrix(z, est)
    assert np.all(np.isfinite(corr)) and corr[1, 1] == 0.0 and corr[0, 1] == 0.0
    assert mcc(z, est).value == pytest.approx(0.5, abs=0.05)


def test_more_estimated_than_true_components_matches_min_d():
    z = _latents(d=3)
    est = np.column_stack([_latents(d=2, seed=5), z[:, [2, 0, 1]]])
    res = mcc(z, est)
    assert res.per_component.shape == (3,)
    assert res.value == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(res.matching.est_idx, [3, 4, 2])


def test_fewer_estimated_than_true_components_and_blocks():
    z = _latents(d=4)
    est = z[:, [1, 0]]
    res = mcc(z, est, blocks={"a": slice(0, 2), "b": slice(2, 4)})
    np.testing.assert_array_equal(res.matching.true_idx, [0, 1])
    assert res.value == pytest.approx(1.0, abs=1e-12)
    assert res.per_block["a"] == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(res.per_block["b"])  # no true component of block b was matched


def test_per_block_uses_global_matching():
    z = _latents(d=4)
    noise = _latents(d=2, seed=9)
    est = np.column_stack([z[:, 0], noise[:, 0], z[:, 2] ** 3, noise[:, 1]])
    res = mcc(z, est, method="pearson", blocks={"a": [0, 1], "b": slice(2, 4)})
    expected = np.abs(correlation_matrix(z, est))[res.matching.true_idx, res.matching.est_idx]
    np.testing.assert_allclose(res.per_component, expected)
    assert res.per_block["a"] == pytest.approx(expected[:2].mean())
    assert res.per_block["b"] == pytest.approx(expected[2:].mean())
    assert res.value == pytest.approx(expected.mean())
    assert res.per_block["a"] == pytest.approx((1.0 + expected[1]) / 2)


def test_out_of_sample_uses_fit_matching_and_signs():
    z_val, z_test = _latents(seed=0), _latents(seed=1)
    # validation: est = identity; test: the estimator's columns 0 and 1 are swapped
    swap = np.array([1, 0, 2, 3])
    res = mcc_out_of_sample(z_val, z_val, z_test, z_test[:, swap])
    np.testing.assert_array_equal(res.matching.est_idx, np.arange(4))
    assert res.value == pytest.approx(0.5, abs=0.05)  # two components right, two ~0
    assert mcc(z_test, z_test[:, swap]).value == pytest.approx(1.0)  # in-sample refits
    # a sign learned on validation that flips on test counts negatively
    flipped = mcc_out_of_sample(z_val, z_val, z_test, -z_test)
    assert flipped.value == pytest.approx(-1.0, abs=1e-12)
    # same result through mcc(..., matching=...)
    m = fit_matching(z_val, z_val)
    assert mcc(z_test, z_test[:, swap], matching=m).value == pytest.approx(res.value)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda z: mcc(z, z[:-1]), "est"),
        (lambda z: mcc(np.where(np.arange(4) == 2, np.nan, z), z), "true"),
        (lambda z: mcc(z[:, 0], z), "true"),
        (lambda z: mcc(z, z, method="kendall"), "method"),
        (lambda z: mcc(z, z, blocks={"a": slice(0, 9)}), "blocks"),
        (lambda z: mcc(z, z, method="pearson", matching=fit_matching(z, z, "spearman")), "matching"),
        (lambda z: mcc(z, z, matching=(0, 1)), "matching"),
        (lambda z: mcc_out_of_sample(z, z, z[:, :2], z), "true_eval"),
        (lambda z: correlation_matrix(z, np.ones((100, 4, 1))), "est"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(call, name):
    z = _latents(n=100)
    with pytest.raises(ValueError, match=name):
        call(z)


def test_matching_is_dataclass_with_expected_fields():
    m = fit_matching(_latents(n=200), _latents(n=200, seed=2), method="spearman")
    assert isinstance(m, Matching) and m.method == "spearman"
    assert m.true_idx.shape == m.est_idx.shape == m.signs.shape == (4,)
    assert set(np.unique(m.signs)) <= {-1.0, 1.0}
