"""Real-data CRL pipeline (configs/personax.py, crl_jax/experiments/personax.py, crl_jax/causal_discovery.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from configs import personax as personax_config
from crl_jax import causal_discovery as cd
from crl_jax import config_validation
from crl_jax.experiments import personax as personax_crl
from crl_jax.data.fake_personax import make_fake_personax
from crl_jax.data.personax import PersonaXColumns, load_table, prepare_for_crl
from crl_jax.models import vae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_FAKE = 160


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    out = tmp_path_factory.mktemp("pxcrl") / "fake.parquet"
    return make_fake_personax(seed=1, n=N_FAKE, out_path=out, n_image=1)


def _r2(x: np.ndarray, y: np.ndarray) -> float:
    """In-sample linear R^2 of y from x (rows with a missing y dropped)."""
    ok = ~np.isnan(y)
    design = np.c_[x[ok], np.ones(ok.sum())]
    beta, *_ = np.linalg.lstsq(design, y[ok], rcond=None)
    return float(1.0 - np.var(y[ok] - design @ beta) / np.var(y[ok]))


def _latents_with_traits(workdir, seed: int, table) -> pd.DataFrame:
    """latents_seed{seed}.csv joined by id with the table's median traits."""
    traits = pd.DataFrame(table.aggregated_traits())
    traits["person_id"] = table.ids
    return pd.read_csv(os.path.join(workdir, f"latents_seed{seed}.csv")).merge(traits, on="person_id")


def _config(fake, variant="athle,smoke", **data):
    config = personax_config.get_config(variant)
    config.data.path = fake.paths["table"]
    config.data.columns = fake.paths["columns"]
    for k, v in data.items():
        config.data[k] = v
    return config


# ---------------------------------------------------------------------------------------------
# config


def test_variants_carry_the_paper_sizes():
    celeb, athle = personax_config.get_config("celeb"), personax_config.get_config("athle")
    assert (celeb.data.shared_dim, tuple(celeb.model.latent_dims)) == (3, (10, 5))
    assert (athle.data.shared_dim, tuple(athle.model.latent_dims)) == (2, (5, 5))
    assert (celeb.data.default_n_image, celeb.data.default_n_text) == (3, 3)
    assert (athle.data.default_n_image, athle.data.default_n_text) == (1, 3)
    assert celeb.data.source == athle.data.source == "personax"
    smoke = personax_config.get_config("celeb,smoke")
    assert smoke.train.steps < 100 and smoke.data.shared_dim == 3
    with pytest.raises(ValueError, match="bad variant"):
        personax_config.get_config("celeb,athle")
    with pytest.raises(ValueError, match="bad variant"):
        personax_config.get_config("mnist")


def test_columns_accept_default_json_path_inline_json_and_dict(fake, tmp_path):
    config = _config(fake)
    assert personax_crl.resolve_columns(config) == PersonaXColumns.from_json(fake.paths["columns"])
    config.data.columns = json.dumps(fake.columns.to_dict())
    assert personax_crl.resolve_columns(config) == fake.columns
    config.data.columns = fake.columns.to_dict()
    assert personax_crl.resolve_columns(config) == fake.columns
    config.data.columns = ""
    default = personax_crl.resolve_columns(config)
    assert default.image == ("image_emb_0",) and default.text == ("text_emb_4o", "text_emb_DS", "text_emb_gemini")
    assert personax_crl.resolve_columns(personax_config.get_config("celeb")).image == (
        "image_emb_0", "image_emb_1", "image_emb_2")
    config.data.columns = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="config.data.columns"):
        personax_crl.resolve_columns(config)
    config.data.columns = {**fake.columns.to_dict(), "text": []}
    with pytest.raises(config_validation.ConfigError, match="text embedding list is empty"):
        personax_crl.resolve_columns(config)


# ---------------------------------------------------------------------------------------------
# bad configs fail before any training


def _no_training_happened(workdir) -> bool:
    return not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_missing_table_names_config_data_path(fake, tmp_path):
    workdir = tmp_path / "run"
    config = _config(fake, path=str(tmp_path / "missing.parquet"))
    with pytest.raises(FileNotFoundError, match=r"config\.data\.path=.*missing\.parquet"):
        personax_crl.run(config, str(workdir))
    config.data.path = ""
    with pytest.raises(config_validation.ConfigError, match=r"config\.data\.path is empty"):
        personax_crl.run(config, str(workdir))
    assert _no_training_happened(workdir)


def test_missing_column_is_named_before_training(fake, tmp_path):
    workdir = tmp_path / "run"
    config = _config(fake)
    config.data.columns = {**fake.columns.to_dict(), "image": ["image_emb_9"]}
    with pytest.raises(ValueError, match=r"missing column\(s\): 'image_emb_9' \(for image\[0\]\).*config\.data\.path"):
        personax_crl.run(config, str(workdir))
    config.data.columns = {**fake.columns.to_dict(), "llms": ["4o", "XX"]}
    with pytest.raises(ValueError, match="XX_o.*load_traits=False"):
        personax_crl.run(config, str(workdir))
    assert _no_training_happened(workdir)


@pytest.mark.parametrize("field,value,match", [
    ("causal_discovery.indep_test", "chisq", "indep_test"),
    ("causal_discovery.alpha", 1.5, "alpha"),
    ("causal_discovery.seed_index", 2, "seed_index"),
    ("data.nan_policy", "zero", "nan_policy"),
    ("data.val_fraction", 0.9, "val_fraction"),
    ("model.encoder", "conv", "model.encoder"),
    ("model.latent_dims", (5,), "latent_dims"),
    ("model.eta_dim", -1, "eta_dim"),
    ("model.name", "oracle", "true latents"),
])
def test_bad_settings_raise_config_errors(fake, tmp_path, field, value, match):
    config = _config(fake)
    group, name = field.split(".")
    config[group][name] = value
    with pytest.raises(config_validation.ConfigError, match=match):
        personax_crl.run(config, str(tmp_path / "run"))
    assert _no_training_happened(tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# data preparation


def test_load_data_splits_and_standardises_on_train_rows(fake):
    config = _config(fake, val_fraction=0.25)
    data = personax_crl.load_data(config, personax_crl.resolve_columns(config))
    table = load_table(fake.paths["table"], fake.columns)
    arrays, report = prepare_for_crl(table, "drop")
    n = arrays["ids"].shape[0]
    assert report["rows_dropped"] > 0 and n == N_FAKE - report["rows_dropped"]
    np.testing.assert_array_equal(data.ids, arrays["ids"])
    assert data.val_rows.size == round(0.25 * n) and data.train_rows.size == n - data.val_rows.size
    assert np.intersect1d(data.train_rows, data.val_rows).size == 0
    for x, raw in zip(data.xs, (arrays["image"], arrays["text"])):
        np.testing.assert_allclose(x[data.train_rows].mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(x[data.train_rows].std(0), 1.0, atol=1e-4)
        assert np.abs(x[data.val_rows].mean(0)).max() > 1e-3  # validation rows did not set the scaling
        mean, std = raw[data.train_rows].mean(0), raw[data.train_rows].std(0)
        np.testing.assert_allclose(x, (raw - mean) / std, rtol=1e-4, atol=1e-4)
    assert data.layout == vae.ModelLayout(("image", "text"), ((16,), (24,)), (1, 3), (5, 5), (2, 2), 2)
    a, b = personax_crl.split_rows(50, 0.2, 3), personax_crl.split_rows(50, 0.2, 3)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], personax_crl.split_rows(50, 0.2, 4)[1])


def test_imputation_keeps_every_row(fake):
    config = _config(fake, nan_policy="impute_mean")
    data = personax_crl.load_data(config, personax_crl.resolve_columns(config))
    assert data.ids.shape[0] == N_FAKE and data.nan_report["values_imputed"] > 0
    assert all(np.isfinite(x).all() for x in data.xs)


def test_resume_refuses_a_different_table(tmp_path):
    fp = {"rows_sha1": "a", "n_rows": 10}
    personax_crl._check_resume(str(tmp_path), fp)
    (tmp_path / "checkpoints" / "10").mkdir(parents=True)
    personax_crl._check_resume(str(tmp_path), fp)  # same data: fine
    with pytest.raises(config_validation.ConfigError, match="rows_sha1"):
        personax_crl._check_resume(str(tmp_path), {"rows_sha1": "b", "n_rows": 10})


# ---------------------------------------------------------------------------------------------
# PC with background knowledge


def _linear_sem(rng, n, parents: dict[str, dict[str, float]], order: list[str]) -> np.ndarray:
    values: dict[str, np.ndarray] = {}
    for v in order:
        values[v] = sum(w * values[p] for p, w in parents.get(v, {}).items()) + rng.normal(size=n)
    return np.stack([values[v] for v in order], axis=1)


def _skeleton(edges) -> set[frozenset]:
    return {frozenset((e.source, e.target)) for e in edges}


def test_pc_recovers_a_planted_linear_gaussian_skeleton():
    names = ["shared_0", "shared_1", "image_0", "image_1", "text_0", "text_1"]
    parents = {"image_0": {"shared_0": 0.8}, "image_1": {"image_0": 0.8},
               "text_0": {"image_1": 0.8, "shared_1": 0.8}, "text_1": {"text_0": 0.8}}
    data = _linear_sem(np.random.default_rng(0), 3000, parents, names)
    truth = {frozenset((p, c)) for c, ps in parents.items() for p in ps}
    res = cd.run_pc(data, names, no_parents=names[:2], indep_test="fisherz", alpha=0.01)
    assert _skeleton(res.edges) == truth
    # image_1 -> text_0 <- shared_1 is a v-structure: identified, then propagated down the chain.
    directed = {(e.source, e.target) for e in res.edges if e.type == "directed"}
    assert {("image_1", "text_0"), ("shared_1", "text_0"), ("text_0", "text_1")} <= directed
    # Background knowledge orients shared_0 - image_0 (PC alone leaves that chain undirected).
    assert ("shared_0", "image_0") in directed
    plain = cd.run_pc(data, names, indep_test="fisherz", alpha=0.01)
    assert _skeleton(plain.edges) == truth
    assert any(e.type == "undirected" and "shared_0" in (e.source, e.target) for e in plain.edges)


def test_background_knowledge_never_lets_an_edge_into_a_shared_latent():
    rng = np.random.default_rng(1)
    # Truth with edges INTO the shared nodes (a collider at shared_0, shared_0 -> shared_1):
    names = ["shared_0", "shared_1", "image_0", "text_0"]
    parents = {"shared_0": {"image_0": 1.0, "text_0": 1.0}, "shared_1": {"shared_0": 0.7}}
    data = _linear_sem(rng, 3000, parents, ["image_0", "text_0", "shared_0", "shared_1"])
    data = data[:, [2, 3, 0, 1]]  # columns in `names` order
    plain = cd.run_pc(data, names, alpha=0.01)
    assert cd.edges_into(plain.edges, ["shared_0", "shared_1"])  # the test has teeth
    res = cd.run_pc(data, names, no_parents=["shared_0", "shared_1"], alpha=0.01)
    assert cd.edges_into(res.edges, ["shared_0", "shared_1"]) == []
    assert frozenset(("shared_0", "shared_1")) not in _skeleton(res.edges)
    directed = {(e.source, e.target) for e in res.edges if e.type == "directed"}
    assert {("shared_0", "image_0"), ("shared_0", "text_0")} <= directed
    # Random dense data: many edges, still none into the shared block.
    mix = rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6))
    names6 = ["shared_0", "shared_1", "image_0", "image_1", "text_0", "text_1"]
    dense = cd.run_pc(mix, names6, no_parents=names6[:2], alpha=0.05)
    assert len(dense.edges) >= 4 and cd.edges_into(dense.edges, names6[:2]) == []


def test_pc_subsample_and_input_checks():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(400, 3))
    res = cd.run_pc(data, ["a", "b", "c"], max_n=100, seed=0)
    assert res.n_used == 100
    with pytest.raises(ValueError, match="indep_test"):
        cd.run_pc(data, ["a", "b", "c"], indep_test="gsq")
    with pytest.raises(ValueError, match="shape"):
        cd.run_pc(data, ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        cd.run_pc(np.where(data > 2, np.nan, data), ["a", "b", "c"])
    with pytest.raises(ValueError, match="not nodes"):
        cd.background_knowledge(["a", "b"], ["s"])


def test_endpoint_matrix_and_adjacency_conventions():
    # causal-learn: i -> j is graph[j, i] = 1, graph[i, j] = -1.
    g = np.zeros((4, 4), int)
    g[0, 1], g[1, 0] = -1, 1    # a -> b
    g[2, 1], g[1, 2] = -1, 1    # c -> b
    g[2, 3], g[3, 2] = -1, -1   # c - d
    g[0, 3], g[3, 0] = 1, 1     # a <-> d
    edges = cd.edges_from_endpoints(g, ["a", "b", "c", "d"])
    assert {(e.source, e.target, e.type) for e in edges} == {
        ("a", "b", "directed"), ("c", "b", "directed"), ("c", "d", "undirected"), ("a", "d", "bidirected")}
    assert {(e.source, e.target) for e in cd.edges_into(edges, ["b"])} == {("a", "b"), ("c", "b")}
    w = np.zeros((3, 3))
    w[2, 0], w[1, 0] = -0.5, 0.05  # row = child: x -> z strong, x -> y below threshold
    prior = cd.adjacency_edges(w, ["x", "y", "z"], threshold=0.1)
    assert prior == [cd.Edge("x", "z", "directed", -0.5)]
    frame = cd.edges_frame(prior)
    assert list(frame.columns) == ["source", "target", "type", "weight"]


def test_draw_graph_writes_a_png(tmp_path):
    blocks = {"shared": ["shared_0"], "image": ["image_0", "image_1"], "text": ["text_0"]}
    edges = [cd.Edge("shared_0", "image_0", "directed"), cd.Edge("image_0", "image_1", "undirected"),
             cd.Edge("image_1", "text_0", "bidirected")]
    path = cd.draw_graph(edges, blocks, str(tmp_path / "g.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    pos = cd.block_layout(blocks)
    assert pos["image_0"][0] == pos["image_1"][0] != pos["text_0"][0]   # one column per block
    assert pos["shared_0"][1] > max(p[1] for n, p in pos.items() if n != "shared_0")  # shared row on top
    with pytest.raises(ValueError, match="no block"):
        cd.draw_graph([cd.Edge("zz", "image_0", "directed")], blocks, str(tmp_path / "h.png"))


# ---------------------------------------------------------------------------------------------
# end to end through the command line


def test_main_runs_the_pipeline_on_the_fake_table(fake, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "crl_jax.main", "--config=configs/personax.py:athle,smoke",
         f"--config.data.path={fake.paths['table']}", f"--config.data.columns={fake.paths['columns']}",
         f"--workdir={workdir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = load_table(fake.paths["table"], fake.columns)
    arrays, nan_report = prepare_for_crl(table, "drop")
    n = arrays["ids"].shape[0]
    assert f"{nan_report['rows_dropped']} rows dropped" in proc.stdout

    names = ([f"shared_{i}" for i in range(2)] + [f"image_{i}" for i in range(5)]
             + [f"text_{i}" for i in range(5)])
    for seed in (0, 1):
        lat = pd.read_csv(workdir / f"latents_seed{seed}.csv")
        assert list(lat.columns) == ["person_id"] + names and lat.shape == (n, 13)
        np.testing.assert_array_equal(lat["person_id"].to_numpy(), arrays["ids"])
        assert np.isfinite(lat[names].to_numpy()).all() and lat[names].std().min() > 0
    a, b = (pd.read_csv(workdir / f"latents_seed{s}.csv")[names].to_numpy() for s in (0, 1))
    assert not np.allclose(a, b)  # two independently initialised seeds
    # Rows and ids line up: joined by id, the latents predict the traits (the fake table's traits
    # are noisy functions of the latents behind the embeddings); with shuffled rows they do not
    # (chance R^2 with 12 regressors and ~145 rows is about 0.08).
    joined = _latents_with_traits(workdir, 0, table)
    traits = list(table.traits)
    aligned = np.mean([_r2(joined[names].to_numpy(), joined[t].to_numpy()) for t in traits])
    perm = np.random.default_rng(0).permutation(len(joined))
    shuffled = np.mean([_r2(joined[names].to_numpy()[perm], joined[t].to_numpy()) for t in traits])
    assert aligned > 0.3 and aligned > 2.5 * shuffled, (aligned, shuffled)

    edges = pd.read_csv(workdir / "pc_edges_seed0.csv")
    assert list(edges.columns) == ["source", "target", "type"]
    assert set(edges["type"]) <= set(cd.EDGE_TYPES)
    assert set(edges["source"]) | set(edges["target"]) <= set(names)
    assert not edges["target"].str.startswith("shared_").any()
    for name in ("pc_graph_seed0.png", "prior_graph_seed0.png", "training_curves.png"):
        with open(workdir / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    prior = pd.read_csv(workdir / "prior_edges_seed0.csv")
    assert list(prior.columns) == ["source", "target", "type", "weight"]
    assert not prior["target"].str.startswith("shared_").any()  # the prior has no edges into s
    w = pd.read_csv(workdir / "prior_adjacency_seed1.csv", index_col=0)
    assert list(w.index) == names == list(w.columns) and np.all(w.to_numpy()[:2] == 0)

    rows = pd.read_csv(workdir / "rows.csv")
    assert (rows["split"] == "val").sum() == round(0.1 * n)
    report = json.loads((workdir / "report.json").read_text())
    assert report["data"]["nan_report"]["rows_dropped"] == nan_report["rows_dropped"]
    assert report["data"]["n_measurements"] == {"image": 1, "text": 3}
    assert report["training"]["steps"] == 30 and report["training"]["num_seeds"] == 2
    assert report["latent_blocks"]["shared"] == names[:2]
    pc_edges = report["causal_discovery"]["0"]["edges"]
    assert [(e["source"], e["target"], e["type"]) for e in pc_edges] == list(
        edges.itertuples(index=False, name=None))
    assert len(report["loss_terms"]["val"]["loss"]) == 2
    assert np.isfinite(report["loss_terms"]["val"]["recon"]).all()
    assert set(report["latent_trait_spearman_best"]["0"]) >= {"openness", "height"}
    for name in report["files"]:
        assert (workdir / name).exists(), name
    assert "PC on the learned latents" in (workdir / "report.md").read_text()


@pytest.mark.slow
def test_training_on_the_fake_table_separates_a_text_only_latent(tmp_path):
    """3000 steps on a 3000-row fake table with the true latent sizes (2 shared / 3 / 3), 2 seeds:
    the latents explain the traits almost up to their noise ceiling, and extraversion, which
    depends only on the text-specific latent txt3, is explained by the text block alone (R^2 of
    the image and shared blocks near 0). Took 54 s on the 2-core development machine."""
    fake = make_fake_personax(seed=0, n=3000, out_path=tmp_path / "fake.parquet", n_image=1)
    config = personax_config.get_config("athle")
    config.data.path, config.data.columns = fake.paths["table"], fake.paths["columns"]
    config.model.latent_dims = (3, 3)
    config.model.hidden = (128, 128)
    config.train.steps, config.train.num_seeds, config.train.progress = 3000, 2, False
    workdir = str(tmp_path / "run")
    report = personax_crl.run(config, workdir)
    assert report["training"]["steps"] == 3000
    table = load_table(fake.paths["table"], fake.columns)
    for seed in (0, 1):
        joined = _latents_with_traits(workdir, seed, table)
        blocks = {b: [c for c in joined.columns if c.startswith(b + "_")] for b in ("shared", "image", "text")}
        every = sum(blocks.values(), [])
        for trait in table.traits:
            assert _r2(joined[every].to_numpy(), joined[trait].to_numpy()) > 0.75, (seed, trait)
        y = joined["extraversion"].to_numpy()
        r2 = {b: _r2(joined[c].to_numpy(), y) for b, c in blocks.items()}
        assert r2["text"] > 0.6 and r2["image"] < 0.1 and r2["shared"] < 0.1, (seed, r2)
