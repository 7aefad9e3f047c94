"""The five unconditional independence tests of PersonaX Level I, behind one safe entry point.

- kci   : causal-learn KCI (Zhang et al. 2011), unconditional form = HSIC statistic with Gaussian
          kernels (causal-learn's empirical width rule, inputs z-scored) and a gamma approximation.
- rcit  : causal-learn RCIT, unconditional form RIT (Strobl et al. 2019): 5 random Fourier features
          per variable, Lindsay-Pilla-Basak approximation of the null. Its random features come from
          numpy's global generator, which is seeded from the pair's seed and restored afterwards.
- hsic  : HSIC with Gretton et al.'s (2008) gamma approximation, implemented in `hsic.py`.
- chisq : causal-learn chi-square test of independence on the contingency table.
- gsq   : causal-learn G-square (likelihood-ratio) test on the same table.

`run_pair_test` drops incomplete rows, optionally subsamples, checks that the test can run, and
turns every failure into status "failed: <reason>" with a NaN p-value (never p = 0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from causallearn.utils.cit import CIT

from crl_jax.level1.hsic import hsic_gamma_test

CONTINUOUS = "continuous"
DISCRETE = "discrete"


@contextlib.contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """causal-learn's RIT draws from np.random; make it reproducible without leaking state."""
    state = np.random.get_state()
    np.random.seed(seed % (2 ** 32))
    try:
        yield
    finally:
        np.random.set_state(state)


def _kci(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    return CIT(np.column_stack([x, y]), "kci")(0, 1)


def _rcit(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    with _seeded_global_numpy(seed):
        return CIT(np.column_stack([x, y]), "rcit")(0, 1)


def _hsic(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    return hsic_gamma_test(x, y).p_value


def _chisq(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    return CIT(np.column_stack([x, y]).astype(np.int64), "chisq")(0, 1)


def _gsq(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    return CIT(np.column_stack([x, y]).astype(np.int64), "gsq")(0, 1)


@dataclasses.dataclass(frozen=True)
class CITestSpec:
    kind: str  # CONTINUOUS or DISCRETE: which variables it applies to
    fn: Callable[[np.ndarray, np.ndarray, int], float]
    description: str


TESTS: dict[str, CITestSpec] = {
    "kci": CITestSpec(CONTINUOUS, _kci, "kernel-based (causal-learn KCI, gamma approximation)"),
    "rcit": CITestSpec(CONTINUOUS, _rcit, "randomized kernel test (causal-learn RCIT/RIT, LPB4)"),
    "hsic": CITestSpec(CONTINUOUS, _hsic, "HSIC, gamma approximation (Gretton et al. 2008)"),
    "chisq": CITestSpec(DISCRETE, _chisq, "Pearson chi-square on the contingency table (causal-learn)"),
    "gsq": CITestSpec(DISCRETE, _gsq, "G-square likelihood ratio on the contingency table (causal-learn)"),
}
ALL_TESTS: tuple[str, ...] = tuple(TESTS)


@dataclasses.dataclass(frozen=True)
class PairResult:
    p_value: float  # NaN when the test failed
    n_used: int
    status: str  # "ok" or "failed: <reason>"
    seconds: float


def encode_discrete(values: pd.Series | np.ndarray) -> np.ndarray:
    """Category codes 0..L-1 (sorted levels) as floats, NaN where missing."""
    codes, _ = pd.factorize(pd.Series(values), sort=True)
    return np.where(codes < 0, np.nan, codes).astype(np.float64)


def discretise_trait(values: np.ndarray, max_levels: int = 10, n_bins: int = 5) -> np.ndarray:
    """Trait scores for the discrete tests.

    Scores with at most `max_levels` distinct values (per-LLM integer scores; cross-LLM medians of
    integer scores, which add half-points) are used as categories as they are. Otherwise the scores
    are cut into `n_bins` quantile bins. Returns float codes with NaN where missing.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    levels = np.unique(v[ok])
    out = np.full(v.shape, np.nan)
    if levels.size <= max_levels:
        out[ok] = np.searchsorted(levels, v[ok])
        return out
    edges = np.unique(np.quantile(v[ok], np.linspace(0, 1, n_bins + 1)[1:-1]))
    out[ok] = np.searchsorted(edges, v[ok], side="right")
    return out


def _prepare_pair(x: np.ndarray, y: np.ndarray, seed: int, max_n: int | None,
                  min_n: int) -> tuple[np.ndarray, np.ndarray, str | None]:
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if max_n is not None and x.shape[0] > max_n:
        idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], size=max_n, replace=False))
        x, y = x[idx], y[idx]
    n = x.shape[0]
    if n < min_n:
        return x, y, f"only {n} complete rows (need >= {min_n})"
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return x, y, "non-finite values (inf) in the data"
    for name, v in (("feature", x), ("trait", y)):
        if np.all(v == v[0]):
            return x, y, f"{name} is constant on the {n} complete rows"
    return x, y, None


def run_pair_test(test: str, x: np.ndarray, y: np.ndarray, seed: int = 0, max_n: int | None = None,
                  min_n: int = 10) -> PairResult:
    """Runs one test on (x, y) with rows missing in either dropped. Never raises for data problems:
    any failure is returned as status "failed: ..." with p = NaN."""
    if test not in TESTS:
        raise ValueError(f"Unknown test {test!r}; choose from {ALL_TESTS}.")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"run_pair_test expects two 1-D arrays of equal length, got {x.shape} and {y.shape}.")
    x, y, problem = _prepare_pair(x, y, seed, max_n, min_n)
    n = int(x.shape[0])
    if problem is not None:
        return PairResult(np.nan, n, f"failed: {problem}", 0.0)
    t0 = time.perf_counter()
    try:
        p = float(TESTS[test].fn(x, y, seed))
    except Exception as e:  # noqa: BLE001 - any library failure is recorded, not propagated
        msg = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
        return PairResult(np.nan, n, f"failed: {msg[:200]}", time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    if not np.isfinite(p):
        return PairResult(np.nan, n, f"failed: test returned p={p}", seconds)
    if -1e-9 <= p < 0.0 or 1.0 < p <= 1.0 + 1e-9:  # round-off of 1 - cdf
        p = min(max(p, 0.0), 1.0)
    if not 0.0 <= p <= 1.0:
        return PairResult(np.nan, n, f"failed: test returned p={p} outside [0, 1]", seconds)
    return PairResult(p, n, "ok", seconds)
