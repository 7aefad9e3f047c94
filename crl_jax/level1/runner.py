"""Level I: every trait against every feature, with every applicable test, in parallel over pairs.

Which pairs are tested:
- continuous tests (kci, rcit, hsic) on features of kind "continuous" or "both", with the trait
  scores used as numbers;
- discrete tests (chisq, gsq) on features of kind "discrete" or "both", with the trait scores as
  categories (`citests.discretise_trait`) and the feature as category codes.
Trait groups: "median" (cross-LLM median after dropping the insufficient-information value, as in
PersonaX) and each LLM's own scores (insufficient-information value -> missing). Rows missing
either variable are dropped per pair.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from crl_jax.data.personax import PersonaXTable
from crl_jax.level1.citests import ALL_TESTS, CONTINUOUS, DISCRETE, TESTS, discretise_trait, encode_discrete, \
    run_pair_test

MEDIAN = "median"
RESULT_COLUMNS = ["test", "feature", "trait", "llm", "n_used", "p_value", "status", "dependent", "seconds"]


@dataclasses.dataclass
class Level1Result:
    results: pd.DataFrame  # long table, RESULT_COLUMNS
    timings: dict[str, Any]
    alpha: float
    tests: tuple[str, ...]
    features: tuple[str, ...]
    traits: tuple[str, ...]
    groups: tuple[str, ...]  # trait groups in column order ("median" first, then LLMs)
    feature_kinds: dict[str, str]

    def column_labels(self) -> list[str]:
        return [f"{g}:{t}" for g in self.groups for t in self.traits]

    def pvalue_matrix(self, test: str) -> pd.DataFrame:
        """Rows = features the test applies to, columns = "{llm}:{trait}" grouped by LLM."""
        r = self.results[self.results["test"] == test]
        feats = [f for f in self.features if f in set(r["feature"])]
        mat = r.assign(col=r["llm"] + ":" + r["trait"]).pivot(index="feature", columns="col", values="p_value")
        return mat.reindex(index=feats, columns=self.column_labels())


def _applies(test: str, kind: str) -> bool:
    family = TESTS[test].kind
    return kind == "both" or kind == family


def _pair_seed(seed: int, *ids: int) -> int:
    return int(np.random.SeedSequence([seed, *ids]).generate_state(1)[0])


def _unit(test: str, x: np.ndarray, ys: list[tuple[int, np.ndarray, int]], max_n: int | None,
          min_n: int) -> list[tuple[int, float, int, str, float]]:
    """One parallel work unit: one test, one feature, several trait columns."""
    out = []
    for idx, y, seed in ys:
        r = run_pair_test(test, x, y, seed=seed, max_n=max_n, min_n=min_n)
        out.append((idx, r.p_value, r.n_used, r.status, r.seconds))
    return out


def validate_request(table: PersonaXTable, features: Sequence[str] | None, traits: Sequence[str] | None,
                     tests: Sequence[str], groups: Sequence[str] | None, alpha: float, jobs: int,
                     max_n: int | None, min_n: int) -> tuple[list[str], list[str], list[str]]:
    """Checks every argument up front; returns (features, traits, groups)."""
    unknown = [t for t in tests if t not in TESTS]
    if unknown or not tests:
        raise ValueError(f"Unknown or no test(s) {list(unknown) or list(tests)}; choose from {ALL_TESTS}.")
    features = list(table.features.columns) if features is None else list(features)
    missing = [f for f in features if f not in table.feature_kinds]
    if missing or not features:
        raise ValueError(f"Feature(s) {missing or features} not loaded; loaded features: "
                         f"{list(table.feature_kinds)}. Load them with load_table(..., features=...).")
    traits = list(table.traits) if traits is None else list(traits)
    missing = [t for t in traits if t not in table.traits]
    if missing or not traits:
        raise ValueError(f"Trait(s) {missing or traits} not loaded; loaded traits: {list(table.traits)}.")
    available = [MEDIAN] + [g for g in table.llms if table.columns.llms]
    groups = available if groups is None else list(groups)
    bad = [g for g in groups if g not in available]
    if bad or not groups:
        raise ValueError(f"Unknown trait group(s) {bad or groups} for --llms; available: {available}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha} must be in (0, 1).")
    if jobs == 0 or jobs < -1:
        raise ValueError(f"jobs={jobs} must be a positive number of processes or -1 (all cores).")
    if max_n is not None and max_n < min_n:
        raise ValueError(f"max_n={max_n} must be >= min_n={min_n}.")
    if min_n < 6:
        raise ValueError(f"min_n={min_n} must be >= 6 (the HSIC gamma approximation needs n >= 6).")
    if not any(_applies(t, table.feature_kinds[f]) for t in tests for f in features):
        kinds = {f: table.feature_kinds[f] for f in features}
        raise ValueError(f"No test in {list(tests)} applies to the features' kinds {kinds}; continuous tests "
                         "need continuous features, discrete tests discrete ones.")
    return features, traits, groups


def run_level1(table: PersonaXTable, *, features: Sequence[str] | None = None,
               traits: Sequence[str] | None = None, tests: Sequence[str] = ALL_TESTS,
               llms: Sequence[str] | None = None, alpha: float = 0.05, jobs: int = 1,
               max_n: int | None = None, seed: int = 0, min_n: int = 10,
               progress: bool = True) -> Level1Result:
    """Runs the Level-I pairwise tests. llms: trait groups ("median" and/or LLM names; default all).

    jobs > 1 (or -1) runs work units in joblib worker processes; results do not depend on jobs
    (each pair's randomness comes from a seed derived from `seed` and the pair's position)."""
    tests = tuple(tests)
    features, traits, groups = validate_request(table, features, traits, tests, llms, alpha, jobs, max_n, min_n)

    agg = table.aggregated_traits()
    per_llm = table.per_llm_traits()
    trait_num = {(g, t): agg[t] if g == MEDIAN else per_llm[(g, t)] for g in groups for t in traits}
    trait_cat = {k: discretise_trait(v, table.columns.discrete_max_levels) for k, v in trait_num.items()}
    feat_num, feat_cat = {}, {}
    for f in features:
        kind = table.feature_kinds[f]
        if kind in ("continuous", "both"):
            feat_num[f] = table.features[f].to_numpy(dtype=np.float64)
        if kind in ("discrete", "both"):
            feat_cat[f] = encode_discrete(table.features[f])

    rows: list[dict[str, Any]] = []
    units = []
    for ti, test in enumerate(tests):
        family = TESTS[test].kind
        for fi, f in enumerate(features):
            if not _applies(test, table.feature_kinds[f]):
                continue
            x = feat_num[f] if family == CONTINUOUS else feat_cat[f]
            for gi, g in enumerate(groups):
                ys = []
                for ri, t in enumerate(traits):
                    y = trait_num[(g, t)] if family == CONTINUOUS else trait_cat[(g, t)]
                    ys.append((len(rows), y, _pair_seed(seed, ti, fi, gi, ri)))
                    rows.append({"test": test, "feature": f, "trait": t, "llm": g})
                units.append((test, x, ys))

    t0 = time.perf_counter()
    bar = tqdm(total=len(rows), desc="Level I pairs", unit="pair", disable=not progress)
    outputs: list[tuple[int, float, int, str, float]] = []
    if jobs == 1:
        for test, x, ys in units:
            outputs.extend(_unit(test, x, ys, max_n, min_n))
            bar.update(len(ys))
    else:
        from joblib import Parallel, delayed
        par = Parallel(n_jobs=jobs, return_as="generator_unordered")
        for out in par(delayed(_unit)(test, x, ys, max_n, min_n) for test, x, ys in units):
            outputs.extend(out)
            bar.update(len(out))
    bar.close()
    wall = time.perf_counter() - t0

    for idx, p, n_used, status, seconds in outputs:
        rows[idx].update(n_used=n_used, p_value=p, status=status, seconds=seconds)
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    ok = df["status"] == "ok"
    df["dependent"] = pd.array(np.where(ok, df["p_value"] < alpha, False), dtype="boolean")
    df.loc[~ok, "dependent"] = pd.NA

    timings: dict[str, Any] = {"wall_seconds": wall, "jobs": jobs, "n_pairs": len(df), "per_test": {}}
    for test in tests:
        r = df[df["test"] == test]
        timings["per_test"][test] = {
            "n_pairs": int(len(r)), "n_failed": int((r["status"] != "ok").sum()),
            "compute_seconds": float(r["seconds"].sum()),
            "mean_seconds_per_pair": float(r["seconds"].mean()) if len(r) else float("nan"),
            "max_seconds_per_pair": float(r["seconds"].max()) if len(r) else float("nan"),
            "mean_n_used": float(r["n_used"].mean()) if len(r) else float("nan"),
        }
    return Level1Result(results=df, timings=timings, alpha=alpha, tests=tests, features=tuple(features),
                        traits=tuple(traits), groups=tuple(groups),
                        feature_kinds={f: table.feature_kinds[f] for f in features})


def summarise(result: Level1Result) -> str:
    """Short human-readable summary: per test counts and time, then the dependent median pairs."""
    lines = [f"Level I: {len(result.results)} pairs, alpha={result.alpha}, "
             f"wall {result.timings['wall_seconds']:.1f} s with jobs={result.timings['jobs']}"]
    df = result.results
    for test in result.tests:
        r = df[df["test"] == test]
        t = result.timings["per_test"][test]
        lines.append(f"  {test:6s} {len(r):4d} pairs  {int(r['dependent'].sum()):4d} dependent  "
                     f"{t['n_failed']:3d} failed  {t['compute_seconds']:.2f} s compute "
                     f"({1000 * t['mean_seconds_per_pair']:.1f} ms/pair, mean n={t['mean_n_used']:.0f})")
    head = MEDIAN if MEDIAN in result.groups else result.groups[0]
    dep = df[(df["llm"] == head) & df["dependent"].fillna(False).astype(bool)]
    if len(dep):
        pairs = dep.groupby(["feature", "trait"])["test"].apply(lambda s: ",".join(s)).reset_index()
        lines.append(f"  dependent ({head} traits): " +
                     "; ".join(f"{a}~{b} [{c}]" for a, b, c in pairs.itertuples(index=False)))
    failed = df[df["status"] != "ok"]
    if len(failed):
        lines.append(f"  failed: {len(failed)} pair(s), e.g. {failed.iloc[0]['test']} "
                     f"{failed.iloc[0]['feature']}~{failed.iloc[0]['trait']} ({failed.iloc[0]['llm']}): "
                     f"{failed.iloc[0]['status']}")
    return "\n".join(lines)
