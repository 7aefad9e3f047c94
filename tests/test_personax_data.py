"""PersonaX table loading, validation, NaN policies, and the fake table with planted dependencies."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from crl_jax.data import fake_personax
from crl_jax.data.fake_personax import FEATURE_TRUE_KINDS, make_fake_personax
from crl_jax.data.personax import (PersonaXColumns, aggregate_traits, load_table, prepare_for_crl,
                                   resolve_feature_kind)

N = 120


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    out = tmp_path_factory.mktemp("fake") / "fake.parquet"
    return make_fake_personax(seed=3, n=N, out_path=out, n_image=2, write_csv_copy=True)


def _write(df: pd.DataFrame, path) -> str:
    path = os.fspath(path)
    if path.endswith(".csv"):
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


# ---------------------------------------------------------------------------------------------
# round trips


def test_parquet_and_csv_load_to_the_same_arrays(fake):
    a = load_table(fake.paths["table"], fake.columns)
    b = load_table(fake.paths["csv"], fake.columns)
    assert a.image.shape == (N, 2, 16) and a.text.shape == (N, 3, 24)
    assert a.image.dtype == np.float32
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.image, b.image, rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(a.text, b.text, rtol=1e-5, atol=1e-6, equal_nan=True)
    for t in a.traits:
        np.testing.assert_array_equal(a.traits[t], b.traits[t])
    # Embedding cells that were None in the table are whole NaN rows, others fully finite.
    df = fake.table
    for k, col in enumerate(fake.columns.image):
        missing = df[col].isna().to_numpy()
        assert missing.any()
        assert np.isnan(a.image[missing, k]).all() and np.isfinite(a.image[~missing, k]).all()
        np.testing.assert_allclose(a.image[~missing, k], np.stack(df[col][~missing].to_list()), rtol=1e-6)


def test_feature_kinds_resolved_by_the_auto_rule(fake):
    table = load_table(fake.paths["table"], fake.columns)
    assert table.feature_kinds == FEATURE_TRUE_KINDS
    s = pd.Series([1.0, 2.0, 3.0, np.nan])
    assert resolve_feature_kind(s, "auto", 10) == "discrete"
    assert resolve_feature_kind(pd.Series(np.arange(30.0)), "auto", 10) == "continuous"  # too many levels
    assert resolve_feature_kind(pd.Series([0.5, 1.0, 2.0]), "auto", 10) == "continuous"  # non-integer
    assert resolve_feature_kind(pd.Series(["a", "b"]), "auto", 10) == "discrete"
    assert resolve_feature_kind(pd.Series([True, False]), "auto", 10) == "discrete"
    assert resolve_feature_kind(pd.Series(np.arange(30.0)), "discrete", 10) == "discrete"  # explicit wins


def test_aggregate_traits_is_median_without_insufficient_zeros():
    scores = np.array([[0, 3, 4], [1, 2, 5], [0, 0, np.nan], [2, 5, 0], [4, np.nan, 4]], dtype=float)
    np.testing.assert_array_equal(aggregate_traits(scores), [3.5, 2.0, np.nan, 3.5, 4.0])


def test_fake_traits_have_insufficient_zeros_and_median_matches(fake):
    table = load_table(fake.paths["table"], fake.columns)
    raw = table.traits["openness"]
    assert raw.shape == (N, 3) and (raw == 0).any() and np.isnan(raw).any()
    assert set(np.unique(raw[~np.isnan(raw)])) <= {0, 1, 2, 3, 4, 5}
    agg = table.aggregated_traits()["openness"]
    for i in range(N):
        vals = [v for v in raw[i] if not np.isnan(v) and v != 0]
        if vals:
            assert agg[i] == np.median(vals)
        else:
            assert np.isnan(agg[i])
    per = table.per_llm_traits()[("DS", "openness")]
    np.testing.assert_array_equal(per, np.where(raw[:, 1] == 0, np.nan, raw[:, 1]))


def test_npy_embeddings_referenced_by_the_config(tmp_path, fake):
    df = fake.table.drop(columns=list(fake.columns.image))
    img = np.random.default_rng(0).normal(size=(N, 5)).astype(np.float32)
    np.save(tmp_path / "img0.npy", img)
    np.save(tmp_path / "img1.npy", img + 1)
    path = _write(df, tmp_path / "t.parquet")
    cols = fake.columns.replace(image=("img0.npy", os.fspath(tmp_path / "img1.npy")))  # relative and absolute
    table = load_table(path, cols)
    assert table.image.shape == (N, 2, 5)
    np.testing.assert_array_equal(table.image[:, 1], img + 1)
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        load_table(path, cols.replace(image=("nope.npy",)))
    np.save(tmp_path / "short.npy", img[:10])
    with pytest.raises(ValueError, match=r"short.npy.*\(10, 5\).*n_rows=120"):
        load_table(path, cols.replace(image=("short.npy",)))
    np.save(tmp_path / "wide.npy", np.zeros((N, 7)))
    with pytest.raises(ValueError, match="different embedding sizes"):
        load_table(path, cols.replace(image=("img0.npy", "wide.npy")))


def test_columns_config_roundtrips_through_json_and_dicts(fake):
    with open(fake.paths["columns"]) as f:
        d = json.load(f)
    cols = PersonaXColumns.from_dict(d)
    assert cols == fake.columns
    assert PersonaXColumns.from_json(fake.paths["columns"]) == fake.columns
    with pytest.raises(ValueError, match="Unknown PersonaXColumns field"):
        PersonaXColumns.from_dict({**d, "colour": 1})
    with pytest.raises(ValueError, match="not a feature kind"):
        PersonaXColumns(features={"height": "ordinal"})
    with pytest.raises(ValueError, match="at most 3"):
        PersonaXColumns(text=("a", "b", "c", "d"))
    with pytest.raises(ValueError, match="lacks '\\{llm\\}'"):
        PersonaXColumns(trait_column_template="final_{trait}")
    pre = PersonaXColumns(llms=(), trait_column_template="final_{trait}")  # pre-aggregated traits
    assert pre.trait_column("aggregate", "openness") == "final_o"


# ---------------------------------------------------------------------------------------------
# validation errors


def test_missing_columns_are_named_with_the_available_ones(tmp_path, fake):
    path = _write(fake.table.drop(columns=["height", "DS_e"]), tmp_path / "t.parquet")
    with pytest.raises(ValueError) as e:
        load_table(path, fake.columns)
    msg = str(e.value)
    assert "'height' (for feature height)" in msg and "'DS_e' (for trait extraversion (DS))" in msg
    assert "Available columns" in msg and "'weight'" in msg


def test_duplicate_ids_are_shown(tmp_path, fake):
    df = fake.table.copy()
    df.loc[5, "person_id"] = df.loc[2, "person_id"]
    path = _write(df, tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=rf"duplicated id.*{df.loc[2, 'person_id']}.*x2"):
        load_table(path, fake.columns)


def test_inconsistent_embedding_sizes_name_row_and_column(tmp_path, fake):
    df = fake.table.copy()
    df.at[7, "text_emb_DS"] = np.zeros(23, dtype=np.float32)
    path = _write(df, tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"'text_emb_DS'.*inconsistent sizes.*24.*row 7 .*has 23"):
        load_table(path, fake.columns)


def test_malformed_embedding_string_in_csv(tmp_path, fake):
    df = pd.read_csv(fake.paths["csv"])
    df.loc[4, "image_emb_1"] = "[0.1, abc]"
    path = _write(df, tmp_path / "t.csv")
    with pytest.raises(ValueError, match=r"'image_emb_1'.*row 4.*not a numeric vector"):
        load_table(path, fake.columns)


def test_non_numeric_values_where_numbers_are_needed(tmp_path, fake):
    df = fake.table.copy()
    df["4o_c"] = df["4o_c"].astype(object)
    df.loc[9, "4o_c"] = "high"
    path = _write(df, tmp_path / "t.csv")
    with pytest.raises(ValueError, match=r"'4o_c'.*trait 'conscientiousness'.*non-numeric.*row 9.*'high'"):
        load_table(path, fake.columns)
    df = fake.table.copy()
    df["weight"] = df["weight"].astype(object)
    df.loc[3, "weight"] = "70kg"
    path = _write(df, tmp_path / "t2.csv")
    with pytest.raises(ValueError, match=r"'weight'.*continuous feature.*'70kg'"):
        load_table(path, fake.columns)
    # Tagged "auto", a text column is simply discrete.
    assert load_table(path, fake.columns.replace(features={"weight": "auto"})).feature_kinds["weight"] == "discrete"


def test_file_errors(tmp_path, fake):
    with pytest.raises(FileNotFoundError, match="absent.parquet"):
        load_table(tmp_path / "absent.parquet", fake.columns)
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(ValueError, match=r"Unsupported.*'\.xlsx'.*\.parquet"):
        load_table(tmp_path / "t.xlsx", fake.columns)
    with pytest.raises(ValueError, match="Unknown trait"):
        load_table(fake.paths["table"], fake.columns, traits=["grumpiness"])


# ---------------------------------------------------------------------------------------------
# NaN policies for CRL


def test_prepare_for_crl_drop_and_impute(fake):
    table = load_table(fake.paths["table"], fake.columns)
    bad = np.isnan(table.image).any(axis=(1, 2)) | np.isnan(table.text).any(axis=(1, 2))
    assert bad.any()
    arrays, report = prepare_for_crl(table, "drop")
    assert report["rows_dropped"] == bad.sum() and report["n_rows_out"] == N - bad.sum()
    assert not np.isnan(arrays["image"]).any() and not np.isnan(arrays["text"]).any()
    np.testing.assert_array_equal(arrays["ids"], table.ids[~bad])
    assert arrays["traits"].shape == (N - bad.sum(), 5) and len(arrays["features"]) == N - bad.sum()

    arrays, report = prepare_for_crl(table, "impute_mean")
    assert report["rows_dropped"] == 0 and arrays["image"].shape == (N, 2, 16)
    assert report["values_imputed"] == np.isnan(table.image).sum() + np.isnan(table.text).sum()
    assert not np.isnan(arrays["text"]).any()
    miss = np.isnan(table.text)
    mean = np.nanmean(table.text, axis=0)
    np.testing.assert_allclose(arrays["text"][miss], np.broadcast_to(mean, table.text.shape)[miss], rtol=1e-6)
    np.testing.assert_array_equal(arrays["text"][~miss], table.text[~miss])
    with pytest.raises(ValueError, match="nan_policy"):
        prepare_for_crl(table, "zero")


# ---------------------------------------------------------------------------------------------
# fake table


def test_fake_is_deterministic_and_truth_is_planted():
    a = make_fake_personax(seed=1, n=60)
    b = make_fake_personax(seed=1, n=60)
    c = make_fake_personax(seed=2, n=60)
    pd.testing.assert_frame_equal(a.table.drop(columns=["image_emb_0", "image_emb_1"]),
                                  b.table.drop(columns=["image_emb_0", "image_emb_1"]))
    np.testing.assert_array_equal(a.table["image_emb_0"][0], b.table["image_emb_0"][0])
    assert not np.allclose(a.table["height"].fillna(0), c.table["height"].fillna(0))
    assert sorted(map(tuple, a.truth["dependent_pairs"])) == sorted([
        ("height", "extraversion"), ("weight", "conscientiousness"), ("smiling", "agreeableness"),
        ("occupation", "conscientiousness")])
    adj = np.array(a.truth["latent_adjacency_child_by_parent"])
    names = a.truth["latent_names"]
    assert adj[names.index("txt2"), names.index("img2")] == 1  # the cross-modal image -> text edge
    assert adj[names.index("img2"), names.index("txt2")] == 0 and adj.sum() == 3


def test_fake_cli_writes_table_truth_and_layout(tmp_path, capsys):
    out = tmp_path / "cli.csv"
    fake_personax.main([f"--out={out}", "--n=40", "--n_image=3"])
    assert "planted dependent" in capsys.readouterr().out
    table = load_table(out, PersonaXColumns.from_json(tmp_path / "cli_columns.json"))
    assert table.image.shape[:2] == (40, 3)
    assert json.loads((tmp_path / "cli_truth.json").read_text())["n"] == 40
    with pytest.raises(ValueError, match="n_image"):
        make_fake_personax(0, 50, n_image=4)
