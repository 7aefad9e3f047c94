"""Analytic tests of crl_jax.metrics.block_r2."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

from crl_jax.metrics import (
    block_identifiability,
    block_r2_matrix,
    fit_predict_r2,
    mcc,
    oracle_ceiling,
    random_invertible_map,
)
from crl_jax.metrics.block_r2 import _standardise


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """The CI box has 2 cores shared by several jobs; multi-threaded OpenBLAS is ~10x slower
    there than one thread (spinning threads). Results do not depend on the thread count."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield

BLOCKS = {"a": slice(0, 2), "b": slice(2, 4)}
SMALL_GRID = {"gamma": [0.25, 1.0], "alpha": [1e-2, 1.0, 100.0]}


def _splits(n_train=1500, n_val=500, n_test=1000, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((n, d)) for k, n in zip(("train", "val", "test"), (n_train, n_val, n_test))}


def _map(splits, f):
    return {k: f(v) for k, v in splits.items()}


def _rotation(theta):
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def _nonlinear_target(x, rng):
    return np.column_stack([np.sin(2 * x[:, 0]) + x[:, 1] ** 2, np.tanh(x[:, 2] * x[:, 0])]) + 0.1 * rng.standard_normal(
        (x.shape[0], 2)
    )


def test_rotation_inside_blocks_block_r2_one_while_mcc_below_one():
    true = _splits()
    rot = _rotation(np.pi / 4)
    est = _map(true, lambda z: np.column_stack([z[:, :2] @ rot, z[:, 2:] @ rot.T]))
    linear = block_identifiability(true, est, BLOCKS, kind="linear")
    assert linear["a"] == pytest.approx(1.0, abs=1e-9) and linear["b"] == pytest.approx(1.0, abs=1e-9)
    kernel = block_identifiability(true, est, BLOCKS, kind="kernel", grid=SMALL_GRID)
    assert kernel["a"] > 0.97 and kernel["b"] > 0.97, kernel
    assert mcc(true["test"], est["test"]).value < 0.8  # every entry of a 45-degree rotation is 0.707


def test_independent_block_r2_about_zero_out_of_sample():
    true = _splits(seed=0)
    est = _splits(seed=1)  # independent of the truth
    for kind in ("linear", "kernel"):
        r2 = block_identifiability(true, est, BLOCKS, kind=kind)
        for value in r2.values():
            assert -0.05 < value < 0.05, (kind, r2)


def test_linear_matches_ordinary_least_squares():
    rng = np.random.default_rng(2)
    x = _splits(d=3, seed=2)
    b = rng.standard_normal((3, 2))
    y = _map(x, lambda v: v @ b + 0.5 + rng.standard_normal((v.shape[0], 2)))
    res = fit_predict_r2(x["train"], y["train"], x["val"], y["val"], x["test"], y["test"], kind="linear")
    ols = LinearRegression().fit(x["train"], y["train"])
    assert res.r2 == pytest.approx(r2_score(y["test"], ols.predict(x["test"])), abs=1e-10)
    assert res.params["alpha"] == 0.0


@pytest.mark.parametrize("d", [3, 40])  # both distance code paths (direct <= 32 < BLAS)
def test_kernel_with_all_landmarks_equals_exact_kernel_ridge(d):
    rng = np.random.default_rng(4)
    x = _splits(n_train=300, n_val=100, n_test=300, d=d, seed=4)
    y = _map(x, lambda v: _nonlinear_target(v, rng))
    grid = {"gamma": [1.2 / d], "alpha": [0.5]}
    res = fit_predict_r2(x["train"], y["train"], x["val"], y["val"], x["test"], y["test"], kind="kernel", grid=grid)
    assert res.params["n_components"] == 300
    xs, ys = _standardise(x["train"], x["test"]), _standardise(y["train"], y["test"])
    exact = KernelRidge(kernel="rbf", gamma=1.2 / d, alpha=0.5).fit(xs[0], ys[0])
    assert res.r2 == pytest.approx(r2_score(ys[1], exact.predict(xs[1])), abs=1e-6)


def _nystroem_vs_exact(n_train):
    rng = np.random.default_rng(5)
    x = _splits(n_train=n_train, n_val=500, n_test=1000, d=3, seed=5)
    y = _map(x, lambda v: _nonlinear_target(v, rng))
    res = fit_predict_r2(x["train"], y["train"], x["val"], y["val"], x["test"], y["test"], kind="kernel", n_components=1000)
    xs, ys = _standardise(x["train"], x["test"]), _standardise(y["train"], y["test"])
    exact = KernelRidge(kernel="rbf", gamma=res.params["gamma"], alpha=res.params["alpha"]).fit(xs[0], ys[0])
    return res, r2_score(ys[1], exact.predict(xs[1]))


def test_nystroem_agrees_with_exact_kernel_ridge_n2000():
    res, exact = _nystroem_vs_exact(2000)
    assert res.r2 > 0.8  # a learnable target, so the comparison is not trivial
    assert abs(res.r2 - exact) < 0.01, (res.r2, exact, res.params)


def test_nonlinear_oracle_ceiling_kernel_beats_linear():
    true = _splits(n_train=2000)
    kernel = oracle_ceiling(true, BLOCKS, kind="kernel", seed=0)
    linear = oracle_ceiling(true, BLOCKS, kind="linear", seed=0)
    for name in BLOCKS:
        assert kernel[name] > 0.95, kernel
        assert linear[name] < kernel[name]
    assert oracle_ceiling(true, BLOCKS, kind="kernel", seed=0) == kernel  # deterministic


def test_random_invertible_map_is_invertible_and_seeded():
    x = np.random.default_rng(0).standard_normal((1000, 3))
    f = random_invertible_map(3, seed=7)
    y = f(x)
    assert np.linalg.matrix_rank(np.column_stack([y, np.ones(1000)])) == 4
    np.testing.assert_array_equal(random_invertible_map(3, seed=7)(x), y)
    assert not np.allclose(random_invertible_map(3, seed=8)(x), y)
    # piecewise-linear and injective: distinct inputs never collide
    assert np.min(np.linalg.norm(y[:-1] - y[1:], axis=1)) > 0


def test_block_r2_matrix_diagonal_and_leakage():
    true = _splits()
    rng = np.random.default_rng(6)
    noise = _splits(d=2, seed=11)
    # est block "a" = invertible map of true a; est block "b" = true a leaked in, true b absent
    est = {
        k: np.column_stack([np.tanh(v[:, :2] @ _rotation(0.3)) + v[:, :2], v[:, 0:1] + 0.05 * noise[k][:, :1], noise[k][:, 1:]])
        for k, v in true.items()
    }
    out = block_r2_matrix(true, est, BLOCKS, BLOCKS, kind="kernel", grid=SMALL_GRID)
    assert set(out) == {"true_from_est", "est_from_true"}
    tfe, eft = out["true_from_est"], out["est_from_true"]
    assert set(tfe) == {"a", "b"} and set(tfe["a"]) == {"a", "b"}
    assert tfe["a"]["a"] > 0.95  # identified block
    assert abs(tfe["b"]["a"]) < 0.05 and abs(tfe["b"]["b"]) < 0.05  # true b lost
    assert 0.4 < tfe["a"]["b"] < 0.6  # leakage: est b holds one of true a's two dims
    assert eft["b"]["a"] > 0.45 and abs(eft["b"]["b"]) < 0.05
    del rng


def test_block_identifiability_equals_matrix_diagonal():
    true = _splits(n_train=800)
    est = _map(true, lambda z: np.column_stack([z[:, 2:] ** 3, z[:, :2] @ _rotation(1.0)]))
    est_blocks = {"a": slice(2, 4), "b": slice(0, 2)}
    diag = block_identifiability(true, est, BLOCKS, kind="kernel", est_blocks=est_blocks, grid=SMALL_GRID)
    full = block_r2_matrix(true, est, BLOCKS, est_blocks, kind="kernel", grid=SMALL_GRID)
    for name in BLOCKS:
        assert diag[name] == pytest.approx(full["true_from_est"][name][name], abs=1e-8)
    assert diag["a"] > 0.98 and diag["b"] > 0.9


def test_standardisation_makes_r2_scale_invariant():
    rng = np.random.default_rng(8)
    x = _splits(d=3, seed=8)
    y = _map(x, lambda v: _nonlinear_target(v, rng))
    base = fit_predict_r2(*[a for k in ("train", "val", "test") for a in (x[k], y[k])], kind="kernel", grid=SMALL_GRID)
    scaled = fit_predict_r2(
        *[a for k in ("train", "val", "test") for a in (1e3 * x[k] - 7, 1e-3 * y[k] + 4)], kind="kernel", grid=SMALL_GRID
    )
    assert scaled.r2 == pytest.approx(base.r2, abs=1e-6)
    assert scaled.params["val_r2"] == pytest.approx(base.params["val_r2"], abs=1e-6)
    assert {k: v for k, v in scaled.params.items() if k != "val_r2"} == {
        k: v for k, v in base.params.items() if k != "val_r2"
    }


def test_hyperparameters_never_depend_on_test_split():
    rng = np.random.default_rng(9)
    x = _splits(d=3, seed=9)
    y = _map(x, lambda v: _nonlinear_target(v, rng))
    a = fit_predict_r2(x["train"], y["train"], x["val"], y["val"], x["test"], y["test"], kind="kernel")
    b = fit_predict_r2(x["train"], y["train"], x["val"], y["val"], x["test"], rng.standard_normal(y["test"].shape), kind="kernel")
    assert a.params == b.params  # the test targets changed completely, the choice did not
    assert a.r2 > 0.8 and b.r2 < 0.0  # a good predictor of y scores below 0 on unrelated noise
    c = fit_predict_r2(x["train"], y["train"], x["val"], y["val"], x["test"], y["test"], kind="kernel")
    assert c == a  # same seed, same numbers


def test_user_grid_is_used():
    x = _splits(n_train=300, d=2)
    y = _map(x, lambda v: np.sin(v))
    res = fit_predict_r2(x["train"], y["train"], x["val"], y["val"], x["test"], y["test"], kind="kernel", grid=SMALL_GRID)
    assert res.params["gamma"] in SMALL_GRID["gamma"] and res.params["alpha"] in SMALL_GRID["alpha"]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"y_train": np.zeros((99, 2))}, "y"),
        ({"x_val": np.full((50, 3), np.nan)}, "x"),
        ({"x_train": np.zeros(100)}, "x"),
        ({"kind": "poly"}, "kind"),
        ({"kind": "linear", "grid": {"gamma": [1.0]}}, "grid"),
        ({"grid": {"alpha": [-1.0]}}, "alpha"),
        ({"n_components": 0}, "n_components"),
    ],
)
def test_fit_predict_bad_input(kwargs, name):
    rng = np.random.default_rng(0)
    args = {
        "x_train": rng.standard_normal((100, 3)), "y_train": rng.standard_normal((100, 2)),
        "x_val": rng.standard_normal((50, 3)), "y_val": rng.standard_normal((50, 2)),
        "x_test": rng.standard_normal((50, 3)), "y_test": rng.standard_normal((50, 2)),
        "kind": "kernel",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        fit_predict_r2(**args)


def test_block_functions_bad_input():
    true = _splits(n_train=100, n_val=50, n_test=50)
    with pytest.raises(ValueError, match="est_splits"):
        block_r2_matrix(true, {"train": true["train"], "val": true["val"]}, BLOCKS, BLOCKS)
    with pytest.raises(ValueError, match="est_splits"):
        block_r2_matrix(true, _splits(n_train=90, n_val=50, n_test=50), BLOCKS, BLOCKS)
    with pytest.raises(ValueError, match="true_blocks"):
        block_r2_matrix(true, true, {"a": slice(0, 6)}, BLOCKS)
    with pytest.raises(ValueError, match="est_blocks"):
        block_identifiability(true, true, BLOCKS, est_blocks={"x": slice(0, 2)})
    with pytest.raises(ValueError, match="kind"):
        oracle_ceiling(true, BLOCKS, kind="rbf")


def test_large_n_gamma_search_on_subset_then_full_refit(monkeypatch):
    import crl_jax.metrics.block_r2 as block_r2

    rng = np.random.default_rng(12)
    x = _splits(n_train=1200, n_val=400, n_test=400, d=3, seed=12)
    y = _map(x, lambda v: _nonlinear_target(v, rng))
    args = [a for k in ("train", "val", "test") for a in (x[k], y[k])]
    full = fit_predict_r2(*args, kind="kernel", n_components=300)
    assert "gamma_search_rows" not in full.params
    monkeypatch.setattr(block_r2, "GAMMA_SEARCH_ROWS", 300)
    sub = fit_predict_r2(*args, kind="kernel", n_components=300)
    assert sub.params["gamma_search_rows"] == (300, 300)
    # the final model is the full fit restricted to the gamma the subset chose
    alphas = list(block_r2.DEFAULT_ALPHAS)
    refit = fit_predict_r2(*args, kind="kernel", n_components=300, grid={"gamma": [sub.params["gamma"]], "alpha": alphas})
    assert sub.r2 == pytest.approx(refit.r2, abs=1e-12) and sub.params["alpha"] == refit.params["alpha"]
    assert sub.r2 > full.r2 - 0.02
