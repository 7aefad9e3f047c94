"""Writing a Level-I result: p-value CSV and heatmap per test, long table, timings JSON."""

from __future__ import annotations

import json
import os
from typing import Any

from crl_jax.level1.citests import TESTS
from crl_jax.level1.plots import pvalue_heatmap
from crl_jax.level1.runner import Level1Result


def write_outputs(result: Level1Result, out_dir: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Files written (returned as name -> path):
    pvalues_{test}.csv   rows = features, columns = "{llm}:{trait}" (NaN = failed, see status)
    heatmap_{test}.png   the same matrix as a heatmap
    results_long.csv     test, feature, trait, llm, n_used, p_value, status, dependent, seconds
    timings.json         per-test pair counts and seconds, total wall time, run settings (`extra`)
    """
    os.makedirs(out_dir, exist_ok=True)
    paths: dict[str, str] = {}
    df = result.results
    for test in result.tests:
        pm = result.pvalue_matrix(test)
        if pm.empty:
            continue
        r = df[df["test"] == test]
        status = r.assign(col=r["llm"] + ":" + r["trait"]).pivot(index="feature", columns="col",
                                                                  values="status").reindex_like(pm)
        csv = os.path.join(out_dir, f"pvalues_{test}.csv")
        pm.to_csv(csv, index_label="feature")
        png = os.path.join(out_dir, f"heatmap_{test}.png")
        pvalue_heatmap(pm, status, list(result.groups), list(result.traits), result.alpha,
                       f"{test.upper()}: {TESTS[test].description}", png)
        paths[f"pvalues_{test}"], paths[f"heatmap_{test}"] = csv, png
    long_csv = os.path.join(out_dir, "results_long.csv")
    df.to_csv(long_csv, index=False)
    paths["results_long"] = long_csv
    timing = os.path.join(out_dir, "timings.json")
    with open(timing, "w") as f:
        json.dump({**result.timings, "alpha": result.alpha, "feature_kinds": result.feature_kinds,
                   **(extra or {})}, f, indent=2)
    paths["timings"] = timing
    return paths
