"""HSIC gamma test: statistic definition, agreement with the permutation test, size and power."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from crl_jax.level1.hsic import hsic_gamma_test, hsic_permutation_test, median_width


def _naive_stat(x, y, wx, wy):
    """n * HSIC_b = trace(K H L H) / n, with an explicit centring matrix."""
    n = x.shape[0]
    k = np.exp(-(x[:, None] - x[None]) ** 2 / (2 * wx ** 2))
    l = np.exp(-(y[:, None] - y[None]) ** 2 / (2 * wy ** 2))
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / n


def test_statistic_matches_the_trace_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=80)
    y = np.sin(2 * x) + rng.normal(size=80)
    r = hsic_gamma_test(x, y)
    assert r.width_x == pytest.approx(np.median(pdist(x[:, None])))
    assert r.statistic == pytest.approx(_naive_stat(x, y, r.width_x, r.width_y), rel=1e-10)
    # 2-D inputs are accepted and (n,) equals (n, 1).
    r2 = hsic_gamma_test(x[:, None], np.stack([y, y], 1) / np.sqrt(2))
    assert r2.statistic == pytest.approx(r.statistic, rel=1e-10)


def test_median_width_ignores_ties_and_rejects_constants():
    x = np.array([0.0] * 8 + [1.0, 3.0])  # most distances are zero
    assert median_width(x) == pytest.approx(np.median(pdist(x[:, None])[pdist(x[:, None]) > 0]))
    with pytest.raises(ValueError, match="constant"):
        median_width(np.ones(20))
    with pytest.raises(ValueError, match="NaN"):
        hsic_gamma_test(np.array([1.0, np.nan] * 5), np.arange(10.0))


@pytest.mark.parametrize("case", range(6))
def test_gamma_p_value_agrees_with_permutation_test(case):
    rng = np.random.default_rng(100 + case)
    n = 150
    x = rng.normal(size=n)
    strength = [0.0, 0.0, 0.0, 0.25, 0.4, 0.8][case]
    y = strength * x ** 2 + (rng.standard_t(5, size=n) if case % 2 else rng.normal(size=n))
    g = hsic_gamma_test(x, y)
    p = hsic_permutation_test(x, y, n_perm=1000, seed=case)
    assert p.statistic == pytest.approx(g.statistic)
    assert abs(g.p_value - p.p_value) <= 0.05, (g.p_value, p.p_value)
    assert (g.p_value < 0.05) == (p.p_value < 0.05)


def test_size_on_independent_data_and_power_on_dependent_data():
    rng = np.random.default_rng(7)
    reps, n = 50, 150
    rejected = 0
    for r in range(reps):
        x = rng.normal(size=n) if r % 2 else rng.exponential(size=n)
        y = rng.uniform(size=n) if r % 3 else rng.normal(size=(n, 2))
        rejected += hsic_gamma_test(x, y).p_value < 0.05
    assert rejected / reps <= 0.12, rejected
    # Power on a zero-correlation (non-monotone) dependence.
    detected = 0
    for _ in range(20):
        x = rng.normal(size=n)
        detected += hsic_gamma_test(x, x ** 2 + 0.5 * rng.normal(size=n)).p_value < 0.05
    assert detected >= 19
