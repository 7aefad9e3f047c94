"""Level I end to end on the planted fake table: detection, outputs, parallel determinism, failures."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from crl_jax.data.fake_personax import make_fake_personax
from crl_jax.data.personax import PersonaXColumns, load_table
from crl_jax.level1 import citests, run_level1, summarise, write_outputs
from crl_jax.level1.__main__ import main

N = 300


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    out = tmp_path_factory.mktemp("level1") / "fake.parquet"
    return make_fake_personax(seed=11, n=N, out_path=out)


@pytest.fixture(scope="module")
def level1_table(fake):
    return load_table(fake.paths["table"], fake.columns.replace(image=(), text=()))


@pytest.fixture(scope="module")
def full_result(level1_table):
    return run_level1(level1_table, jobs=1, progress=False)


def test_planted_pairs_are_found_and_independent_pairs_mostly_not(fake, full_result):
    df = full_result.results
    assert (df["status"] == "ok").all()
    planted = {tuple(p) for p in fake.truth["dependent_pairs"]}
    is_planted = np.array([(f, t) in planted for f, t in zip(df["feature"], df["trait"])])
    dep = df[is_planted]
    # Every planted pair is tested by the tests for its feature's kind, in every trait group...
    assert set(dep["test"][dep["feature"].isin(["height", "weight"])]) == {"kci", "rcit", "hsic"}
    assert set(dep["test"][dep["feature"].isin(["smiling", "occupation"])]) == {"chisq", "gsq"}
    assert len(dep) == 2 * 3 * 4 + 2 * 2 * 4
    # ...and found with every test, for the median traits and for each LLM's own scores.
    assert (dep["p_value"] < 0.05).all(), dep[dep["p_value"] >= 0.05]
    ind = df[~is_planted]
    rates = ind.groupby("test")["dependent"].mean()
    assert (rates <= 0.12).all(), rates
    assert ind["dependent"].mean() <= 0.08


def test_pvalue_matrix_layout(full_result, level1_table):
    kci = full_result.pvalue_matrix("kci")
    assert list(kci.index) == ["height", "weight", "latitude", "birth_year"]
    assert kci.columns[0] == "median:openness" and kci.columns[5] == "4o:openness"
    assert kci.shape == (4, 4 * 5) and not kci.isna().any().any()
    chisq = full_result.pvalue_matrix("chisq")
    assert list(chisq.index) == ["smiling", "occupation", "gender", "big_nose", "birth_month"]
    r = full_result.results
    row = r[(r.test == "chisq") & (r.feature == "gender") & (r.trait == "neuroticism") & (r.llm == "gemini")]
    assert chisq.loc["gender", "gemini:neuroticism"] == row["p_value"].item()
    # n_used counts the rows where both the feature and the trait are present.
    feat = level1_table.features["height"].notna().to_numpy()
    trait = ~np.isnan(level1_table.aggregated_traits()["extraversion"])
    used = r[(r.test == "kci") & (r.feature == "height") & (r.trait == "extraversion") & (r.llm == "median")]
    assert used["n_used"].item() == (feat & trait).sum() < N


def test_cli_end_to_end_parallel_matches_in_process(fake, level1_table, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--traits=extraversion,conscientiousness,agreeableness", "--llms=median,DS"]
    rc = main([f"--data={fake.paths['table']}", f"--columns={fake.paths['columns']}", f"--out={out}",
               "--jobs=2", "--no_progress", *args])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "height~extraversion [kci,rcit,hsic]" in printed and "failed" not in printed.split("dependent")[0]
    for test in ("kci", "rcit", "hsic", "chisq", "gsq"):
        img = matplotlib.image.imread(out / f"heatmap_{test}.png")
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300
        pm = pd.read_csv(out / f"pvalues_{test}.csv", index_col="feature")
        assert list(pm.columns) == [f"{g}:{t}" for g in ("median", "DS")
                                    for t in ("extraversion", "conscientiousness", "agreeableness")]
    long = pd.read_csv(out / "results_long.csv")
    assert list(long.columns) == ["test", "feature", "trait", "llm", "n_used", "p_value", "status", "dependent",
                                  "seconds"]
    timings = json.loads((out / "timings.json").read_text())
    assert timings["jobs"] == 2 and set(timings["per_test"]) == {"kci", "rcit", "hsic", "chisq", "gsq"}
    assert timings["per_test"]["kci"]["n_pairs"] == 4 * 3 * 2
    # Same numbers as a sequential in-process run (seeds depend on the pair, not on scheduling).
    seq = run_level1(level1_table, traits=["extraversion", "conscientiousness", "agreeableness"],
                     llms=["median", "DS"], jobs=1, progress=False).results
    key = ["test", "feature", "trait", "llm"]
    merged = long.merge(seq, on=key, suffixes=("_cli", "_seq"))
    assert len(merged) == len(seq) == len(long)
    np.testing.assert_array_equal(merged["p_value_cli"], merged["p_value_seq"])


def test_a_failing_test_is_recorded_as_failed_in_every_output(level1_table, tmp_path, monkeypatch):
    def broken(x, y, seed):
        if np.mean(x) > 100.0:  # height and birth_year, not weight or latitude
            raise RuntimeError("kernel exploded")
        return citests._hsic(x, y, seed)

    monkeypatch.setitem(citests.TESTS, "hsic", citests.CITestSpec("continuous", broken, "HSIC (broken)"))
    res = run_level1(level1_table, tests=["hsic"], llms=["median"], jobs=1, progress=False)
    r = res.results
    failed = r["status"] != "ok"
    assert failed.any() and (~failed).any()
    assert (r.loc[failed, "status"] == "failed: RuntimeError: kernel exploded").all()
    assert r.loc[failed, "p_value"].isna().all() and r.loc[failed, "dependent"].isna().all()
    paths = write_outputs(res, str(tmp_path))
    pm = pd.read_csv(paths["pvalues_hsic"], index_col="feature")
    assert pm.isna().sum().sum() == failed.sum() and (pm.fillna(1.0) > 0).all().all()
    assert "failed: " in summarise(res)
    assert res.timings["per_test"]["hsic"]["n_failed"] == failed.sum()


def test_bad_requests_fail_before_any_work(fake, level1_table, tmp_path, capsys):
    with pytest.raises(ValueError, match="Unknown or no test"):
        run_level1(level1_table, tests=["pearson"])
    with pytest.raises(ValueError, match=r"Unknown trait group.*'gpt5'.*available: \['median', '4o'"):
        run_level1(level1_table, llms=["gpt5"])
    with pytest.raises(ValueError, match="not loaded"):
        run_level1(level1_table, features=["shoe_size"])
    with pytest.raises(ValueError, match="alpha"):
        run_level1(level1_table, alpha=1.5)
    with pytest.raises(ValueError, match="No test"):
        run_level1(level1_table, features=["height"], tests=["chisq"])
    capsys.readouterr()
    assert main([f"--data={fake.paths['table']}", f"--out={tmp_path}", "--features=height,shoe_size"]) == 2
    assert "missing column(s): 'shoe_size'" in capsys.readouterr().err
    assert main([f"--data={fake.paths['table']}", f"--out={tmp_path}", "--features=height:ordinal"]) == 2
    assert "kind 'ordinal'" in capsys.readouterr().err


def test_both_kind_and_pre_aggregated_traits(tmp_path):
    rng = np.random.default_rng(0)
    n = 150
    o = rng.integers(1, 6, size=n).astype(float)
    df = pd.DataFrame({"final_o": o, "final_c": rng.integers(1, 6, size=n).astype(float),
                       "year": (o + rng.integers(0, 2, size=n)).astype(float)})
    df.loc[:4, "final_o"] = 0.0  # insufficient information -> dropped
    path = tmp_path / "agg.csv"
    df.to_csv(path, index=False)
    cols = PersonaXColumns(id_column=None, image=(), text=(), llms=(), trait_column_template="final_{trait}",
                           traits={"openness": "o", "conscientiousness": "c"}, features={"year": "both"})
    res = run_level1(load_table(path, cols), jobs=1, progress=False)
    r = res.results
    assert res.groups == ("median",) and set(r["test"]) == {"kci", "rcit", "hsic", "chisq", "gsq"}
    op = r[r.trait == "openness"]
    assert (op["n_used"] == n - 5).all() and (op["p_value"] < 1e-3).all()
