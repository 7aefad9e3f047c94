"""Block R^2: how well one block of variables is predicted from another, out of sample.

Pipeline (the same for every call):

1. Inputs and targets are standardised with the TRAIN split's mean and std.
2. Features: ``linear`` = the standardised inputs (ordinary least squares, alpha 0 by
   default, with the intercept carried by centring); ``kernel`` = Nystroem features of an
   RBF kernel ``exp(-gamma ||x - x'||^2)`` with ``min(n_components, n_train)`` landmarks
   drawn from the train split (seeded), i.e. features whose inner products give the Nystroem
   kernel ``k(x, C) K_CC^+ k(C, x')`` (computed with a pivoted Cholesky of ``K_CC``, see
   ``_NystroemFeatures``). Ridge on these features equals kernel ridge regression
   (``sklearn.kernel_ridge.KernelRidge``, no intercept, on centred targets) with the
   Nystroem kernel, same ``gamma`` and ``alpha``; with all train rows as landmarks it is
   exact kernel ridge (tested to 1e-6 R^2).
3. Hyper-parameters (gamma, alpha) are chosen on the VALIDATION split by a grid; the test
   split is only scored. Default grid: ``gamma in {1/8, 1/4, 1/2, 1, 2, 4} / d_in`` (d_in =
   input dimension, inputs standardised) and ``alpha in {1e-6, 1e-5, ..., 1e3}``. Above
   ``GAMMA_SEARCH_ROWS`` (20,000) train or validation rows, gamma is chosen on a seeded
   random subset of 20,000 train and 20,000 validation rows, then refitted on all train rows
   with alpha chosen on all validation rows (reported in ``params["gamma_search_rows"]``).
4. Reported R^2 is on the TEST split: per target dimension ``1 - SSE / SST`` (SST around the
   test mean, as ``sklearn.metrics.r2_score``; it may be negative), then the UNIFORM average
   over target dimensions. A target dimension with zero test variance scores 1 if predicted
   exactly, else 0 (sklearn's convention).

Everything is float64 numpy; the train gram matrix is accumulated in row chunks, so
100,000 train rows with 1000 landmarks need ~100 MB and run in 15-30 s on 2 shared cores
(python -m benchmarks.metrics). Ridge solves (one Cholesky per alpha) run on one BLAS
thread: at that size threads gain little and are ~10x slower on an oversubscribed box.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping, Sequence

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import scipy.spatial.distance
from threadpoolctl import threadpool_limits

from crl_jax.metrics._checks import as_samples, block_indices, check_choice, check_same_n

KINDS = ("linear", "kernel")
SPLITS = ("train", "val", "test")
DEFAULT_GAMMA_SCALES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)  # times 1 / d_in
DEFAULT_ALPHAS = tuple(10.0 ** np.arange(-6, 4))
_CHUNK = 8192
GAMMA_SEARCH_ROWS = 20000  # kernel: gamma chosen on at most this many train/val rows
_PIVOT_TOL = 1e-10  # residual-variance cut-off of the landmark kernel's pivoted Cholesky


@dataclasses.dataclass(frozen=True)
class R2Result:
    r2: float
    params: dict


# ----------------------------------------------------------------------------- features


class _LinearFeatures:
    """Identity features of the (train-standardised, hence centred) inputs."""

    def __init__(self) -> None:
        self.settings = [None]

    def chunks(self, x: np.ndarray, settings: Sequence[int] | None = None) -> Iterator[tuple[slice, int, np.ndarray]]:
        for start in range(0, x.shape[0], _CHUNK):
            rows = slice(start, start + _CHUNK)
            yield rows, 0, x[rows]


def _sqdist(x: np.ndarray, c: np.ndarray, c_sq: np.ndarray) -> np.ndarray:
    """Squared distances (n, m): direct (exact, ~4x faster) in low dimension, via BLAS above."""
    if x.shape[1] <= 32:
        return scipy.spatial.distance.cdist(x, c, "sqeuclidean")
    d2 = (x * x).sum(axis=1)[:, None] + c_sq[None, :] - 2.0 * (x @ c.T)
    return np.maximum(d2, 0.0, out=d2)


class _NystroemFeatures:
    """RBF Nystroem features for several gammas, sharing the landmark distances.

    ``K_CC`` is factorised by a pivoted (rank-revealing) Cholesky, ``K_CC[P, P] = L L^T``
    truncated where the largest remaining pivot falls below ``_PIVOT_TOL`` (the kernel's
    diagonal is 1, so the dropped landmarks are reproduced from the kept ones to that
    residual variance). Features ``phi(x) = L^{-1} k(C_P, x)`` satisfy ``phi(x) . phi(x') =
    k(x, C) K_CC^+ k(C, x')`` up to that tolerance: the Nystroem kernel of
    ``sklearn.kernel_approximation.Nystroem``, at about a tenth of an eigendecomposition's cost,
    and without amplifying round-off in the null directions of a rank-deficient ``K_CC``.
    """

    def __init__(self, landmarks: np.ndarray, gammas: Sequence[float]) -> None:
        self.landmarks = landmarks
        self.c_sq = (landmarks * landmarks).sum(axis=1)
        self.settings = list(gammas)
        d2 = _sqdist(landmarks, landmarks, self.c_sq)
        self._pivots, self._factors = [], []
        for gamma in self.settings:
            chol, piv, rank, info = scipy.linalg.lapack.dpstrf(np.exp(-gamma * d2), lower=1, tol=_PIVOT_TOL)
            if info < 0:
                raise RuntimeError(f"pivoted Cholesky of the landmark kernel failed (LAPACK info={info}).")
            lower = np.tril(chol[:rank, :rank])
            self._pivots.append(piv[:rank] - 1)  # LAPACK pivots are 1-based
            self._factors.append(lower)

    def chunks(self, x: np.ndarray, settings: Sequence[int] | None = None) -> Iterator[tuple[slice, int, np.ndarray]]:
        """Features ``k(x, C_P) L^{-T}`` per chunk of rows and per gamma (all, or ``settings``).

        The features themselves (not ``L^{-1} K L^{-T}`` of a raw gram) enter every product,
        so the train gram ``phi^T phi`` is positive semi-definite to round-off.
        """
        settings = range(len(self.settings)) if settings is None else settings
        for start in range(0, x.shape[0], _CHUNK):
            rows = slice(start, start + _CHUNK)
            d2 = _sqdist(x[rows], self.landmarks, self.c_sq)
            for s in settings:
                raw = np.take(d2, self._pivots[s], axis=1)
                np.exp(np.multiply(raw, -self.settings[s], out=raw), out=raw)
                # triangular solve, stabler than forming L^{-1}: phi^T = L^{-1} raw^T
                phi_t = scipy.linalg.solve_triangular(
                    self._factors[s], raw.T, lower=True, overwrite_b=True, check_finite=False
                )
                yield rows, s, phi_t.T


# ----------------------------------------------------------------------------- ridge core


def _ridge_pinv(h: np.ndarray, b: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Solutions (A, p, t) of (h + alpha I) w = b for all alphas; pseudo-inverse at alpha 0."""
    evals, evecs = np.linalg.eigh(h)
    evals = np.maximum(evals, 0.0)
    denom = evals[None, :] + alphas[:, None]
    tol = max(evals.max(), 1e-300) * 1e-12
    inv = np.where(denom > tol, 1.0 / np.where(denom > tol, denom, 1.0), 0.0)
    return np.matmul(evecs, inv[:, :, None] * (evecs.T @ b)[None])


def _ridge_cholesky(h: np.ndarray, b: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Solutions (A, p, t) of (h + alpha I) w = b, alpha > 0: one Cholesky per alpha.

    Several times cheaper than an eigendecomposition of h at p ~ 1000; h + alpha I is
    positive definite with condition number <= trace(h) / alpha ~ n / alpha.
    """
    eye = np.eye(h.shape[0])
    try:
        # One BLAS thread: at this size threaded potrf gains little on an idle machine and is
        # ~10x slower on a busy one (measured on the shared 2-core CI box).
        with threadpool_limits(limits=1, user_api="blas"):
            return np.stack([scipy.linalg.cho_solve(scipy.linalg.cho_factor(h + a * eye), b) for a in alphas])
    except np.linalg.LinAlgError:  # round-off made h + alpha I indefinite: use the eigen route
        return _ridge_pinv(h, b, alphas)


def _r2_per_dim(sse: np.ndarray, y: np.ndarray) -> np.ndarray:
    sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    safe = np.where(sst > 0, sst, 1.0)
    return np.where(sst > 0, 1.0 - sse / safe, np.where(sse == 0, 1.0, 0.0))


def _sse(features, weights: dict[int, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sum of squared errors (S, A, t) for ``weights[s]`` of shape (A, p_s, t); absent s stay 0."""
    n_alpha, t = next(iter(weights.values())).shape[0], y.shape[1]
    # (p, A * t) so each chunk needs one well-shaped matrix product instead of A skinny ones
    flat = {s: w.transpose(1, 0, 2).reshape(w.shape[1], n_alpha * t) for s, w in weights.items()}
    out = np.zeros((len(features.settings), n_alpha, t))
    for rows, s, phi in features.chunks(x, sorted(weights)):
        resid = (phi @ flat[s]).reshape(-1, n_alpha, t) - y[rows][:, None, :]
        out[s] += np.einsum("naj,naj->aj", resid, resid)
    return out


def _ridge_select(
    features,
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    groups: Sequence[np.ndarray],
    alphas: np.ndarray,
    allowed: Sequence[Sequence[int]] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[dict]:
    """Ridge on ``features`` for every (setting, alpha); per target group, choose on val.

    ``allowed[g]`` restricts the settings (gammas) group g may choose from (default all);
    only settings some group may use are fitted. With ``test=(x_te, y_te)`` the chosen
    model of each group is scored there ("r2").
    """
    n_set = len(features.settings)
    allowed = [list(range(n_set))] * len(groups) if allowed is None else [list(a) for a in allowed]
    fitted = sorted({s for a in allowed for s in a})
    gram: dict[int, np.ndarray] = {}
    cross: dict[int, np.ndarray] = {}
    for rows, s, phi in features.chunks(x_tr, fitted):
        g = phi.T @ phi  # numpy dispatches a.T @ a to a symmetric rank-k update
        with threadpool_limits(limits=1, user_api="blas"):  # skinny product: threads only hurt
            c = phi.T @ y_tr[rows]
        gram[s] = gram[s] + g if s in gram else g
        cross[s] = cross[s] + c if s in cross else c
    solve = _ridge_pinv if isinstance(features, _LinearFeatures) else _ridge_cholesky
    weights = {s: solve(gram[s], cross[s], alphas) for s in fitted}  # each (A, p_s, t)
    r2_val = _r2_per_dim(_sse(features, weights, x_va, y_va), y_va)  # (S, A, t)
    results = []
    for idx, ok in zip(groups, allowed):
        score = np.full(r2_val.shape[:2], -np.inf)
        score[ok] = r2_val[ok][:, :, idx].mean(axis=2)
        s, a = np.unravel_index(np.argmax(score), score.shape)
        results.append({"setting": int(s), "alpha_index": int(a), "val_r2": float(score[s, a]), "idx": idx})
    if test is None:
        return results
    x_te, y_te = test
    # Score the chosen models only: one weight column block per target, zero elsewhere.
    chosen = {res["setting"]: np.zeros((1,) + weights[res["setting"]].shape[1:]) for res in results}
    for res in results:
        chosen[res["setting"]][0][:, res["idx"]] = weights[res["setting"]][res["alpha_index"]][:, res["idx"]]
    sse_te = _sse(features, chosen, x_te, y_te)[:, 0]  # (S, t)
    for res in results:
        per_dim = _r2_per_dim(sse_te[res["setting"], res["idx"]], y_te[:, res["idx"]])
        res["r2"] = float(per_dim.mean())
    return results


# ----------------------------------------------------------------------------- inputs


def _splits(splits: object, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(splits, Mapping):
        missing = [k for k in SPLITS if k not in splits]
        if missing:
            raise ValueError(f"{name} is missing split(s) {missing}; give {{'train', 'val', 'test'}} arrays.")
        parts = [splits[k] for k in SPLITS]
    elif isinstance(splits, (tuple, list)) and len(splits) == 3:
        parts = list(splits)
    else:
        raise ValueError(f"{name} must be a dict with 'train', 'val', 'test' or a 3-tuple of arrays.")
    arrs = tuple(as_samples(p, f"{name}[{k!r}]") for p, k in zip(parts, SPLITS))
    dims = {a.shape[1] for a in arrs}
    if len(dims) != 1:
        raise ValueError(f"{name}: train/val/test must have the same number of columns; got {[a.shape[1] for a in arrs]}.")
    return arrs  # type: ignore[return-value]


def _check_pair(xs, x_name: str, ys, y_name: str) -> None:
    for k, a, b in zip(SPLITS, xs, ys):
        check_same_n(a, f"{x_name}[{k!r}]", b, f"{y_name}[{k!r}]")


def _standardise(tr: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = tr.mean(axis=0), tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (tr,) + others]


def _resolve_grid(kind: str, grid: Mapping[str, Sequence[float]] | None, d_in: int) -> tuple[list[float], np.ndarray]:
    allowed = ("gamma", "alpha") if kind == "kernel" else ("alpha",)
    grid = dict(grid or {})
    unknown = set(grid) - set(allowed)
    if unknown:
        raise ValueError(f"grid has unknown key(s) {sorted(unknown)} for kind={kind!r}; allowed: {list(allowed)}.")
    default_alphas = DEFAULT_ALPHAS if kind == "kernel" else (0.0,)
    alphas = np.asarray(grid.get("alpha", default_alphas), dtype=np.float64).ravel()
    gammas = [float(g) for g in np.ravel(grid.get("gamma", np.asarray(DEFAULT_GAMMA_SCALES) / d_in))]
    min_alpha = 0.0 if kind == "linear" else np.finfo(np.float64).tiny
    if alphas.size == 0 or np.any(~np.isfinite(alphas)) or np.any(alphas < min_alpha):
        bound = ">= 0" if kind == "linear" else "> 0 (kernel ridge)"
        raise ValueError(f"grid['alpha'] must be a non-empty list of finite values {bound}; got {alphas.tolist()}.")
    if not gammas or any(not np.isfinite(g) or g <= 0 for g in gammas):
        raise ValueError(f"grid['gamma'] must be a non-empty list of finite values > 0; got {gammas}.")
    return gammas, alphas


def _make_features(kind: str, x_tr: np.ndarray, n_components: int, seed: int, gammas: list[float]):
    if kind == "linear":
        return _LinearFeatures()
    m = min(int(n_components), x_tr.shape[0])
    idx = np.random.default_rng(seed).choice(x_tr.shape[0], size=m, replace=False)
    return _NystroemFeatures(x_tr[np.sort(idx)], gammas)


def _fit_groups(xs, ys, groups, kind: str, n_components: int, seed: int, grid) -> list[R2Result]:
    """Regress the groups of columns of ys from xs (both already validated 3-tuples).

    Kernel with more than ``GAMMA_SEARCH_ROWS`` train (or validation) rows: gamma is chosen
    on a seeded random subset of that many train and validation rows, then the chosen gamma
    is refitted on all train rows and alpha chosen on all validation rows. Below that size
    every (gamma, alpha) is fitted on everything.
    """
    x_tr, x_va, x_te = _standardise(*xs)
    y_tr, y_va, y_te = _standardise(*ys)
    gammas, alphas = _resolve_grid(kind, grid, x_tr.shape[1])
    features = _make_features(kind, x_tr, n_components, seed, gammas)
    allowed, search_rows = None, None
    big = max(x_tr.shape[0], x_va.shape[0]) > GAMMA_SEARCH_ROWS
    if kind == "kernel" and len(gammas) > 1 and big:
        rng = np.random.default_rng([seed, 1])
        tr = rng.permutation(x_tr.shape[0])[:GAMMA_SEARCH_ROWS]
        va = rng.permutation(x_va.shape[0])[:GAMMA_SEARCH_ROWS]
        search = _ridge_select(features, x_tr[tr], y_tr[tr], x_va[va], y_va[va], groups, alphas)
        allowed, search_rows = [[res["setting"]] for res in search], (tr.size, va.size)
    raw = _ridge_select(features, x_tr, y_tr, x_va, y_va, groups, alphas, allowed=allowed, test=(x_te, y_te))
    out = []
    for res in raw:
        params = {"kind": kind, "alpha": float(alphas[res["alpha_index"]]), "val_r2": res["val_r2"]}
        if search_rows is not None:
            params["gamma_search_rows"] = search_rows
        on_edge = alphas.size > 1 and res["alpha_index"] in (0, alphas.size - 1)
        if kind == "kernel":
            params.update(gamma=gammas[res["setting"]], n_components=int(features.landmarks.shape[0]))
            on_edge = on_edge or (len(gammas) > 1 and res["setting"] in (0, len(gammas) - 1))
        params["at_grid_edge"] = bool(on_edge)
        out.append(R2Result(r2=res["r2"], params=params))
    return out


def _validate_common(kind: str, n_components: int) -> None:
    check_choice(kind, "kind", KINDS)
    if int(n_components) < 1:
        raise ValueError(f"n_components must be >= 1; got {n_components}.")


# ----------------------------------------------------------------------------- public API


def fit_predict_r2(
    x_train: object,
    y_train: object,
    x_val: object,
    y_val: object,
    x_test: object,
    y_test: object,
    kind: str = "linear",
    n_components: int = 1000,
    seed: int = 0,
    grid: Mapping[str, Sequence[float]] | None = None,
) -> R2Result:
    """Test R^2 (uniform average over y's columns) of predicting y from x; see module docstring.

    ``grid``: optional ``{"gamma": [...], "alpha": [...]}`` (gamma in units of standardised
    inputs; linear accepts only "alpha", default OLS). ``params`` reports the chosen
    ``gamma``/``alpha``, the validation R^2 and whether the choice lies on the grid's edge.
    """
    _validate_common(kind, n_components)
    xs = _splits((x_train, x_val, x_test), "x")
    ys = _splits((y_train, y_val, y_test), "y")
    _check_pair(xs, "x", ys, "y")
    groups = [np.arange(ys[0].shape[1])]
    return _fit_groups(xs, ys, groups, kind, n_components, seed, grid)[0]


def block_r2_matrix(
    true_splits: object,
    est_splits: object,
    true_blocks: Mapping[str, object],
    est_blocks: Mapping[str, object],
    kind: str = "kernel",
    seed: int = 0,
    n_components: int = 1000,
    grid: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """All block-to-block test R^2 values, both directions.

    Returns ``{"true_from_est": {true_block: {est_block: r2}}, "est_from_true": {est_block:
    {true_block: r2}}}``: the outer key of each inner dict is the TARGET block, the inner key
    the SOURCE block. Same-named entries are the block identifiability; the other entries of
    ``true_from_est[t]`` measure leakage of other estimated blocks into true block t (and
    ``est_from_true[e][t]``, t != e, how much of true block t estimated block e contains).
    Hyper-parameters are chosen on validation separately for every (target, source) pair.
    """
    _validate_common(kind, n_components)
    ts = _splits(true_splits, "true_splits")
    es = _splits(est_splits, "est_splits")
    _check_pair(ts, "true_splits", es, "est_splits")
    t_idx = block_indices(true_blocks, ts[0].shape[1], "true_blocks")
    e_idx = block_indices(est_blocks, es[0].shape[1], "est_blocks")
    result: dict[str, dict[str, dict[str, float]]] = {
        "true_from_est": {t: {} for t in t_idx},
        "est_from_true": {e: {} for e in e_idx},
    }
    directions = (("true_from_est", es, e_idx, ts, t_idx), ("est_from_true", ts, t_idx, es, e_idx))
    for key, src, src_idx, tgt, tgt_idx in directions:
        for src_name, cols in src_idx.items():
            xs = tuple(a[:, cols] for a in src)
            fits = _fit_groups(xs, tgt, list(tgt_idx.values()), kind, n_components, seed, grid)
            for tgt_name, fit in zip(tgt_idx, fits):
                result[key][tgt_name][src_name] = fit.r2
    return result


def block_identifiability(
    true_splits: object,
    est_splits: object,
    blocks: Mapping[str, object],
    kind: str = "kernel",
    seed: int = 0,
    est_blocks: Mapping[str, object] | None = None,
    n_components: int = 1000,
    grid: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, float]:
    """``{block: test R^2 of true block from the same-named estimated block}``.

    ``blocks`` slices the true dimensions; the estimated ones use ``est_blocks`` if given
    (same names required), else the same slices.
    """
    _validate_common(kind, n_components)
    ts = _splits(true_splits, "true_splits")
    es = _splits(est_splits, "est_splits")
    _check_pair(ts, "true_splits", es, "est_splits")
    t_idx = block_indices(blocks, ts[0].shape[1], "blocks")
    e_idx = block_indices(est_blocks if est_blocks is not None else blocks, es[0].shape[1], "est_blocks")
    if set(e_idx) != set(t_idx):
        raise ValueError(f"est_blocks names {sorted(e_idx)} must equal blocks names {sorted(t_idx)}.")
    out = {}
    for name, cols in t_idx.items():
        xs = tuple(a[:, e_idx[name]] for a in es)
        ys = tuple(a[:, cols] for a in ts)
        out[name] = _fit_groups(xs, ys, [np.arange(cols.size)], kind, n_components, seed, grid)[0].r2
    return out


def random_invertible_map(d: int, seed: int, n_layers: int = 2, slope: float = 0.2):
    """A random invertible nonlinear map R^d -> R^d: orthogonal layers with leaky-ReLU.

    Returns a function ``f(x)`` acting on (n, d) arrays. Orthogonal weights keep it well
    conditioned; leaky-ReLU (slope 0.2) makes it nonlinear and keeps it invertible.
    """
    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(n_layers):
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        layers.append((q * np.sign(np.diag(r)), rng.standard_normal(d) * 0.5))

    def apply(x: np.ndarray) -> np.ndarray:
        h = x
        for i, (w, b) in enumerate(layers):
            h = h @ w + b
            if i < len(layers) - 1:
                h = np.where(h > 0, h, slope * h)
        return h

    return apply


def oracle_ceiling(
    true_splits: object,
    blocks: Mapping[str, object],
    kind: str = "kernel",
    seed: int = 0,
    n_components: int = 1000,
    grid: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, float]:
    """``{block: test R^2 of true block b from f_b(true block b)}``, f_b a random invertible map.

    The inputs are standardised with train statistics before ``f_b`` (the same map for all
    splits); this is the best R^2 the pipeline can report for a perfect block encoder.
    """
    _validate_common(kind, n_components)
    ts = _splits(true_splits, "true_splits")
    t_idx = block_indices(blocks, ts[0].shape[1], "blocks")
    out = {}
    for b, (name, cols) in enumerate(t_idx.items()):
        ys = tuple(a[:, cols] for a in ts)
        f = random_invertible_map(cols.size, seed=np.random.SeedSequence([seed, b]).generate_state(1)[0])
        xs = tuple(f(a) for a in _standardise(*ys))
        out[name] = _fit_groups(xs, ys, [np.arange(cols.size)], kind, n_components, seed, grid)[0].r2
    return out
