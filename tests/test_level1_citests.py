"""The five Level-I tests behind `run_pair_test`: agreement with scipy, failure handling, seeding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from crl_jax.level1 import citests
from crl_jax.level1.citests import discretise_trait, encode_discrete, run_pair_test


def _table(x, y):
    return pd.crosstab(x, y).to_numpy()


@pytest.mark.parametrize("seed", range(4))
def test_chisq_and_gsq_agree_with_scipy(seed):
    rng = np.random.default_rng(seed)
    n = 300
    x = rng.integers(0, 3 + seed % 2, size=n).astype(float)
    y = (x * (seed % 3) + rng.integers(0, 4, size=n)) % 5  # independent for seed 0 and 3
    table = _table(x, y)
    chi2, p_chi, dof, _ = chi2_contingency(table, correction=False)
    g, p_g, _, _ = chi2_contingency(table, correction=False, lambda_="log-likelihood")
    r_chi = run_pair_test("chisq", x, y)
    r_g = run_pair_test("gsq", x, y)
    assert r_chi.status == "ok" and r_g.status == "ok"
    assert r_chi.p_value == pytest.approx(p_chi, rel=1e-9, abs=1e-300)
    assert r_g.p_value == pytest.approx(p_g, rel=1e-9, abs=1e-300)
    if seed in (1, 2):
        assert r_chi.p_value < 1e-6 and r_g.p_value < 1e-6


def test_missing_rows_are_dropped_per_pair_and_codes_are_categories():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=200).astype(float)
    y = rng.integers(0, 2, size=200).astype(float)
    x[:13] = np.nan
    y[10:20] = np.nan
    r = run_pair_test("chisq", x, y)
    ok = ~(np.isnan(x) | np.isnan(y))
    assert r.n_used == ok.sum() == 180
    assert r.p_value == pytest.approx(chi2_contingency(_table(x[ok], y[ok]), correction=False)[1], rel=1e-9)
    codes = encode_discrete(pd.Series(["b", None, "a", "c", "a"]))
    np.testing.assert_array_equal(codes, [1, np.nan, 0, 2, 0])


def test_discretise_trait_keeps_few_levels_and_bins_many():
    v = np.array([1, 1.5, 2, 5, np.nan, 1.5])
    np.testing.assert_array_equal(discretise_trait(v), [0, 1, 2, 3, np.nan, 1])
    many = np.random.default_rng(0).normal(size=500)
    codes = discretise_trait(many, max_levels=10, n_bins=5)
    assert set(np.unique(codes)) == {0, 1, 2, 3, 4}
    assert np.all(np.abs(np.bincount(codes.astype(int)) - 100) <= 1)  # quantile bins


@pytest.mark.parametrize("test", ["kci", "rcit", "hsic"])
def test_continuous_tests_detect_nonlinear_dependence_only(test):
    rng = np.random.default_rng(1)
    n = 300
    dep_p, ind_p = [], []
    for rep in range(10):
        x = rng.normal(size=n)
        dep_p.append(run_pair_test(test, x, x ** 2 + 0.5 * rng.normal(size=n), seed=rep).p_value)
        ind_p.append(run_pair_test(test, x, rng.standard_t(4, size=n), seed=rep).p_value)
    assert max(dep_p) < 0.01, dep_p
    # 10 independent draws at alpha = 0.05: P(>= 3 rejections) ~ 1% for a test with the right size.
    assert np.all(np.isfinite(ind_p)) and sum(p < 0.05 for p in ind_p) <= 2, ind_p


def test_rcit_is_seeded_and_leaves_global_state_alone():
    rng = np.random.default_rng(2)
    x = rng.normal(size=200)
    y = np.tanh(x) + rng.normal(size=200)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = run_pair_test("rcit", x, y, seed=5).p_value
    assert np.array_equal(np.random.get_state()[1], before)
    assert run_pair_test("rcit", x, y, seed=5).p_value == a
    assert run_pair_test("rcit", x, y, seed=6).p_value != a  # different random features


def test_max_n_subsamples_reproducibly():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=500), rng.normal(size=500)
    a = run_pair_test("hsic", x, y, seed=1, max_n=120)
    assert a.n_used == 120 and a.status == "ok"
    assert a.p_value == run_pair_test("hsic", x, y, seed=1, max_n=120).p_value
    assert a.p_value != run_pair_test("hsic", x, y, seed=2, max_n=120).p_value


def test_failures_are_recorded_as_failed_never_as_zero(monkeypatch):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=100), rng.normal(size=100)
    const = run_pair_test("kci", np.ones(100), y)
    assert np.isnan(const.p_value) and const.status == "failed: feature is constant on the 100 complete rows"
    few = run_pair_test("hsic", np.r_[x[:5], np.full(95, np.nan)], y)
    assert np.isnan(few.p_value) and few.status.startswith("failed: only 5 complete rows")
    inf = run_pair_test("rcit", np.r_[np.inf, x[1:]], y)
    assert np.isnan(inf.p_value) and "non-finite" in inf.status

    def boom(a, b, seed):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setitem(citests.TESTS, "kci", citests.CITestSpec("continuous", boom, "broken"))
    r = run_pair_test("kci", x, y)
    assert np.isnan(r.p_value) and r.status == "failed: LinAlgError: SVD did not converge"
    monkeypatch.setitem(citests.TESTS, "kci", citests.CITestSpec("continuous", lambda a, b, s: np.nan, "nan"))
    r = run_pair_test("kci", x, y)
    assert np.isnan(r.p_value) and r.status.startswith("failed: test returned p=nan")
    with pytest.raises(ValueError, match="Unknown test"):
        run_pair_test("pearson", x, y)
