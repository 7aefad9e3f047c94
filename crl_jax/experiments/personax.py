"""Real-data CRL on a local PersonaX table (CelebPersona / AthlePersona layout).

``run(config, workdir)`` (``config.data.source == "personax"``, see ``configs/personax.py``):

1. checks the config (a missing table names ``config.data.path``) and resolves the column
   layout, then loads and validates the table (the loader names missing columns), all before
   any training;
2. applies the NaN policy (``prepare_for_crl``; the counts are printed and reported), splits
   the rows into train / validation (``data.val_fraction``, ``data.split_seed``) and z-scores
   every embedding dimension with train-row statistics;
3. builds the PersonaX VAE for a two-modality layout (``image``, ``text``; K and d from the
   table, latent sizes from the config) and trains ``train.num_seeds`` replicas with
   :func:`crl_jax.train.train` (checkpointed, resumable, NaN-safe);
4. encodes every kept row (posterior means) and writes ``latents_seed{i}.csv``;
5. runs PC on the learned latents with background knowledge forbidding edges into the shared
   latents, writes the edge list and the drawing, and writes the learned adjacency of the
   causal prior as a second view of the graph, plus ``report.json`` / ``report.md``
   (``crl_jax.reporting``).

There is no ground truth on real data; the held-out validation loss is the only fit check.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any

import chex
import jax
import numpy as np
import pandas as pd

from crl_jax import causal_discovery as cd
from crl_jax import config_validation, evaluation, input_pipeline, methods, parallel, reporting, train
from crl_jax.data import personax
from crl_jax.host import autotune
from crl_jax.models import vae

MODALITIES = ("image", "text")
NAN_POLICIES = ("drop", "impute_mean")
STANDARDISE = ("per_dim", "none")
ConfigError = config_validation.ConfigError


@dataclasses.dataclass
class PreparedData:
    """Model inputs and what the report needs about them."""

    ids: np.ndarray                      # (n,) ids of the kept rows
    xs: tuple[np.ndarray, ...]           # (n, K_m, d_m) float32 per modality, standardised
    train_rows: np.ndarray               # row indices into xs
    val_rows: np.ndarray
    layout: vae.ModelLayout
    columns: personax.PersonaXColumns
    nan_report: dict[str, Any]
    scaling: dict[str, tuple[np.ndarray, np.ndarray]]   # modality -> (mean, std), each (K, d)
    traits: pd.DataFrame                 # aggregated (median) traits of the kept rows
    features: pd.DataFrame               # features of the kept rows

    @property
    def id_name(self) -> str:
        return self.columns.id_column or "row"


# ----------------------------------------------------------------------------------------------
# configuration


def default_columns(n_image: int, n_text: int) -> dict[str, Any]:
    """The layout used when ``config.data.columns`` is "": id ``person_id``, image columns
    ``image_emb_0..``, text columns ``text_emb_{llm}`` for GPT-4o, DeepSeek-V3, Gemini
    (the fake table's names; real tables usually need a JSON layout)."""
    return {"id_column": "person_id",
            "image": [f"image_emb_{k}" for k in range(n_image)],
            "text": [f"text_emb_{llm}" for llm in personax.DEFAULT_LLMS[:n_text]]}


def resolve_columns(config) -> personax.PersonaXColumns:
    """``config.data.columns``: "" (the variant's default layout), a JSON path, inline JSON, or
    a dict / ConfigDict / PersonaXColumns."""
    d = config.data
    spec = d.get("columns", "")
    if isinstance(spec, personax.PersonaXColumns):
        cols = spec
    elif isinstance(spec, str) and spec.strip().startswith("{"):
        try:
            cols = personax.PersonaXColumns.from_dict(json.loads(spec))
        except json.JSONDecodeError as e:
            raise ConfigError(f"config.data.columns: inline JSON does not parse ({e}); give a JSON "
                              "object of PersonaXColumns fields or the path of a .json file") from None
    elif isinstance(spec, str) and spec:
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"config.data.columns={spec!r}: column layout file not found; pass "
                                    "--config.data.columns=/path/to/columns.json (or '' for the default layout)")
        cols = personax.PersonaXColumns.from_json(spec)
    elif isinstance(spec, str):
        cols = personax.PersonaXColumns.from_dict(default_columns(
            int(d.get("default_n_image", 1)), int(d.get("default_n_text", 3))))
    else:
        cols = personax.PersonaXColumns.from_dict(spec)
    for group in MODALITIES:
        if not getattr(cols, group):
            raise ConfigError(f"config.data.columns: the {group} embedding list is empty; the CRL model "
                              f"needs 1-3 {group} measurements (columns or .npy files)")
    return cols


def validate_config(config, n_devices: int) -> personax.PersonaXColumns:
    """Every check that does not need the table; returns the column layout."""
    d, m, cdc = config.data, config.model, config.causal_discovery
    path = str(d.get("path", ""))
    if not path:
        raise ConfigError("config.data.path is empty; pass --config.data.path=/path/to/table.parquet "
                          "(CelebPersona / AthlePersona table, Parquet or CSV)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config.data.path={path!r}: file not found; pass the path of your local "
                                "PersonaX table (.parquet, .pq or .csv)")
    config_validation.validate(config, n_devices=n_devices)

    def require(ok: bool, field: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"config.{field}: {msg}")

    require(d.nan_policy in NAN_POLICIES, "data.nan_policy", f"{d.nan_policy!r} is not one of {NAN_POLICIES}")
    require(0.0 <= float(d.val_fraction) <= 0.5, "data.val_fraction",
            f"must be in [0, 0.5], got {d.val_fraction}")
    require(d.standardise in STANDARDISE, "data.standardise", f"{d.standardise!r} is not one of {STANDARDISE}")
    require(m.name != "personax", "model.name",
            "the two-stage 'personax' runs on synthetic data only so far; use 'personax_vae' "
            "(the causal-prior VAE, configs/personax.py's default) or a baseline")
    for field in ("default_n_image", "default_n_text"):
        require(1 <= int(d[field]) <= 3, f"data.{field}",
                f"the default layout has 1-3 measurements per modality, got {d[field]}")
    for field, value in (("data.split_seed", d.split_seed), ("causal_discovery.subsample_seed",
                                                             cdc.subsample_seed)):
        require(isinstance(value, int) and 0 <= value < config_validation.SEED_LIMIT, field,
                f"must be an integer in [0, 2**32), got {value!r}")
    require(m.name != "oracle", "model.name",
            "the 'oracle' control encodes the true latents, which real data does not have")
    require(m.encoder == "mlp", "model.encoder",
            f"embeddings are vectors; use 'mlp', not {m.encoder!r}")
    require(len(m.latent_dims) == len(MODALITIES) and all(int(v) > 0 for v in m.latent_dims),
            "model.latent_dims", f"give two positive sizes (image, text), got {tuple(m.latent_dims)}")
    require(int(m.eta_dim) >= 0, "model.eta_dim",
            f"real data has no true eta size; give a size >= 0, got {m.eta_dim}")
    require(int(cdc.seed_index) == -1 or 0 <= int(cdc.seed_index) < int(config.train.num_seeds),
            "causal_discovery.seed_index",
            f"{cdc.seed_index} is not -1 (every seed) or a seed in [0, {config.train.num_seeds})")
    try:
        cd.check_pc_args(cdc.indep_test, cdc.alpha, cdc.max_n)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return resolve_columns(config)


def model_layout(config, xs: tuple[np.ndarray, ...]) -> vae.ModelLayout:
    """Data shapes from the arrays, latent sizes from the config."""
    return vae.ModelLayout(
        names=MODALITIES,
        obs_shapes=tuple((int(x.shape[2]),) for x in xs),
        n_measurements=tuple(int(x.shape[1]) for x in xs),
        latent_dims=tuple(int(v) for v in config.model.latent_dims),
        eta_dims=(int(config.model.eta_dim),) * len(MODALITIES),
        shared_dim=int(config.data.shared_dim))


def latent_blocks(layout: vae.ModelLayout) -> dict[str, list[str]]:
    """``{"shared": ["shared_0", ..], "image": [..], "text": [..]}`` in the latent order."""
    names = reporting.latent_names(layout.block_slices)
    return {block: names[sl] for block, sl in layout.block_slices.items()}


# ----------------------------------------------------------------------------------------------
# data


def split_rows(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split into (train, validation) row indices, each sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    if n - n_val < 2:
        raise ValueError(f"only {n - n_val} training rows are left (n={n}, "
                         f"config.data.val_fraction={val_fraction}); use a smaller val_fraction.")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def fit_scaling(x: np.ndarray, rows: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per (measurement, dimension) on ``rows``; constant dimensions get std 1."""
    if mode == "none":
        return np.zeros(x.shape[1:], np.float32), np.ones(x.shape[1:], np.float32)
    mean = x[rows].mean(axis=0)
    std = x[rows].std(axis=0)
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def load_data(config, columns: personax.PersonaXColumns) -> PreparedData:
    """Load, validate, apply the NaN policy, split and standardise (see module docstring)."""
    d = config.data
    try:
        table = personax.load_table(d.path, columns, traits=None if d.load_traits else [])
    except ValueError as e:
        hint = (" Trait columns are only used for the report; --config.data.load_traits=False skips them."
                if d.load_traits else "")
        raise ValueError(f"{e} [config.data.path={d.path!r}, layout from config.data.columns]{hint}") from None
    arrays, nan_report = personax.prepare_for_crl(table, d.nan_policy)
    xs = tuple(np.asarray(arrays[m], np.float32) for m in MODALITIES)
    n = xs[0].shape[0]
    train_rows, val_rows = split_rows(n, float(d.val_fraction), int(d.split_seed))
    scaling = {m: fit_scaling(x, train_rows, d.standardise) for m, x in zip(MODALITIES, xs)}
    xs = tuple(((x - scaling[m][0]) / scaling[m][1]).astype(np.float32) for m, x in zip(MODALITIES, xs))
    chex.assert_tree_all_finite(xs)
    traits = pd.DataFrame(arrays["traits"], columns=arrays["trait_names"])
    return PreparedData(ids=np.asarray(arrays["ids"]), xs=xs, train_rows=train_rows, val_rows=val_rows,
                        layout=model_layout(config, xs), columns=columns, nan_report=nan_report,
                        scaling=scaling, traits=traits, features=arrays["features"])


def fingerprint(config, data: PreparedData) -> dict[str, Any]:
    """What must not change when a run resumes: the rows, split, scaling and layout."""
    h = hashlib.sha1()
    h.update(json.dumps([str(i) for i in data.ids]).encode())
    h.update(data.train_rows.tobytes())
    for mean, std in data.scaling.values():
        h.update(mean.tobytes())
        h.update(std.tobytes())
    return {"rows_sha1": h.hexdigest(), "n_rows": int(data.ids.shape[0]),
            "layout": dataclasses.asdict(data.layout), "nan_policy": config.data.nan_policy,
            "model": config.model.name}


def _check_resume(workdir: str, fp: dict) -> None:
    path = os.path.join(workdir, "data_fingerprint.json")
    has_ckpt = os.path.isdir(os.path.join(workdir, "checkpoints")) and os.listdir(
        os.path.join(workdir, "checkpoints"))
    if has_ckpt and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old != json.loads(json.dumps(fp)):
            changed = sorted(k for k in set(old) | set(fp) if old.get(k) != json.loads(json.dumps(fp)).get(k))
            raise ConfigError(f"workdir {workdir!r} holds checkpoints of a run on different data or layout "
                              f"(changed: {changed}); use a new --workdir or the original table and config")
    with open(path, "w") as f:
        json.dump(fp, f, indent=1)


# ----------------------------------------------------------------------------------------------
# after training


def encode_all(method, params, xs: tuple[np.ndarray, ...], batch_size: int) -> np.ndarray:
    """Posterior means of every row for every seed: (S, n, D) float64."""
    n = xs[0].shape[0]
    out = evaluation.encode_seeds(method.encode, params, xs, np.zeros((n, 1), np.float32), batch_size)
    if not np.all(np.isfinite(out)):
        raise FloatingPointError("the trained encoder produced NaN/Inf latents; check the embeddings "
                                 "and try a lower train.learning_rate")
    return out


def loss_terms(method, params, xs: tuple[np.ndarray, ...], rows: np.ndarray, batch_size: int,
               seed: int = 0) -> dict[str, list[float]]:
    """Per-seed means of the loss terms over ``rows`` (one fixed sampling key)."""
    if rows.size == 0:
        return {}
    fn = jax.jit(jax.vmap(lambda p, x, k: method.loss(p, x, k)[1], in_axes=(0, None, None)))
    key = jax.random.PRNGKey(seed)
    total: dict[str, np.ndarray] = {}
    for start in range(0, rows.size, batch_size):
        idx = rows[start:start + batch_size]
        terms = jax.device_get(fn(params, tuple(x[idx] for x in xs), jax.random.fold_in(key, start)))
        for k, v in terms.items():
            total[k] = total.get(k, 0.0) + np.asarray(v, np.float64) * idx.size
    return {k: [float(x) for x in v / rows.size] for k, v in total.items()}


def write_latents(path: str, data: PreparedData, latents: np.ndarray, names: list[str]) -> str:
    df = pd.DataFrame(latents, columns=names)
    df.insert(0, data.id_name, data.ids)
    df.to_csv(path, index=False)
    return path


def latent_correlations(latents: np.ndarray, names: list[str], data: PreparedData) -> pd.DataFrame:
    """Spearman correlation of each latent (rows) with each aggregated trait and numeric feature
    (columns), pairwise over rows where the trait / feature is present."""
    others = data.traits.copy()
    for f in data.features.columns:
        if pd.api.types.is_numeric_dtype(data.features[f]) and not pd.api.types.is_bool_dtype(data.features[f]):
            others[f] = data.features[f].to_numpy(dtype=np.float64)
    if others.shape[1] == 0:
        return pd.DataFrame(index=names)
    both = pd.concat([pd.DataFrame(latents, columns=names), others.reset_index(drop=True)], axis=1)
    corr = both.corr(method="spearman", min_periods=10)
    return corr.loc[names, list(others.columns)]


def graph_agreement(pc_edges: list[cd.Edge], prior_edges: list[cd.Edge]) -> dict[str, Any]:
    """Skeleton overlap of the PC graph and the thresholded prior graph."""
    a = {frozenset((e.source, e.target)) for e in pc_edges}
    b = {frozenset((e.source, e.target)) for e in prior_edges}
    union = a | b
    return {"pc_edges": len(a), "prior_edges": len(b), "common": len(a & b),
            "jaccard": (len(a & b) / len(union)) if union else 1.0,
            "common_pairs": sorted("-".join(sorted(p)) for p in a & b)}


# ----------------------------------------------------------------------------------------------
# the pipeline


def run(config, workdir: str, *, stop_after_step=None) -> dict | None:
    """Train on the table, encode every row, run PC, write outputs; ``None`` if stopped early."""
    mesh = parallel.make_mesh()
    columns = validate_config(config, n_devices=mesh.devices.size)
    data = load_data(config, columns)
    nr = data.nan_report
    print(f"PersonaX table {config.data.path}: {nr['n_rows_in']} rows; NaN policy {nr['nan_policy']}: "
          f"{nr['rows_dropped']} rows dropped, {nr['values_imputed']} values imputed "
          f"(image rows with NaN {nr.get('image_rows_with_nan', 0)}, text rows with NaN "
          f"{nr.get('text_rows_with_nan', 0)}); {data.train_rows.size} train / {data.val_rows.size} "
          f"validation rows")
    cdc = config.causal_discovery
    n_pc = data.ids.shape[0] if int(cdc.max_n) == 0 else min(int(cdc.max_n), data.ids.shape[0])
    cd.check_pc_rows(n_pc, sum(data.layout.latent_dims) + int(data.layout.shared_dim),
                     f"config.data.path={config.data.path!r}")
    if cdc.indep_test in ("kci", "fastkci") and n_pc > 1000:
        print(f"warning: PC with {cdc.indep_test} on {n_pc} rows will be slow (its tests are O(n^2) or "
              "worse; measured: 18 latents, 200 rows took 4-12 minutes on 2 CPU cores); set "
              "--config.causal_discovery.max_n to a few hundred or use fisherz.")
    method = methods.build_method(config.model.name, data.layout, config)
    config_validation.validate_against_method(config, method)
    os.makedirs(workdir, exist_ok=True)
    _check_resume(workdir, fingerprint(config, data))
    reporting.write_config(workdir, config)
    pd.DataFrame({data.id_name: data.ids, "split": np.where(
        np.isin(np.arange(data.ids.shape[0]), data.val_rows), "val", "train")}).to_csv(
        os.path.join(workdir, "rows.csv"), index=False)
    np.savez(os.path.join(workdir, "scaling.npz"),
             **{f"{m}_{k}": v for m, (mean, std) in data.scaling.items() for k, v in (("mean", mean), ("std", std))})

    t0 = time.time()
    batches = input_pipeline.BatchSource.from_arrays(
        tuple(x[data.train_rows] for x in data.xs), config.train, parallel.batch_sharding(mesh))
    state, step = train.train(config, workdir, method, mesh, batches, data.layout,
                              **autotune.loop_settings(config, method, mesh, batches, data.layout),
                              stop_after_step=stop_after_step)
    train_seconds = time.time() - t0
    if step < int(config.train.steps):
        return None

    t1 = time.time()
    params = state.params
    if not method.trainable:  # controls fitted on the host (PCA, FastICA): fit on the train rows
        params = method.fit(params, tuple(x[data.train_rows] for x in data.xs), None)
    names, blocks = reporting.latent_names(data.layout.block_slices), latent_blocks(data.layout)
    batch = int(config.eval.batch_size)
    latents = encode_all(method, params, data.xs, batch)
    n_seeds = latents.shape[0]
    files = [write_latents(os.path.join(workdir, f"latents_seed{i}.csv"), data, latents[i], names)
             for i in range(n_seeds)]
    n_check = data.val_rows.size or min(batch, data.train_rows.size)
    train_check = np.sort(np.random.default_rng(int(config.data.split_seed)).choice(
        data.train_rows, size=min(n_check, data.train_rows.size), replace=False))
    terms = {"train": loss_terms(method, params, data.xs, train_check, batch),
             "val": loss_terms(method, params, data.xs, data.val_rows, batch)} if method.trainable else {}

    seeds = list(range(n_seeds)) if int(cdc.seed_index) == -1 else [int(cdc.seed_index)]
    pc_report, prior_report, correlations = {}, {}, {}
    has_prior = method.adjacency(jax.tree_util.tree_map(lambda a: a[0], params)) is not None
    weights = np.asarray(jax.vmap(method.adjacency)(params)) if has_prior else None
    for i in seeds:
        res = cd.run_pc(latents[i], names, no_parents=blocks.get("shared", []), indep_test=cdc.indep_test,
                        alpha=float(cdc.alpha), max_n=int(cdc.max_n), seed=int(cdc.subsample_seed),
                        stable=bool(cdc.stable))
        edges_csv = cd.write_edges(res.edges, os.path.join(workdir, f"pc_edges_seed{i}.csv"))
        png = cd.draw_graph(res.edges, blocks, os.path.join(workdir, f"pc_graph_seed{i}.png"),
                            f"PC ({res.indep_test}, alpha={res.alpha}) on learned latents, seed {i}, "
                            f"n={res.n_used}")
        files += [edges_csv, png]
        pc_report[str(i)] = {"indep_test": res.indep_test, "alpha": res.alpha, "n_used": res.n_used,
                             "seconds": res.seconds, "edges": [dataclasses.asdict(e) for e in res.edges],
                             "edges_csv": edges_csv, "png": png}
        corr = latent_correlations(latents[i], names, data)
        if corr.shape[1]:
            path = os.path.join(workdir, f"latent_trait_spearman_seed{i}.csv")
            corr.to_csv(path)
            files.append(path)
            correlations[str(i)] = {c: {"best_latent": str(corr[c].abs().idxmax()),
                                        "rho": float(corr[c][corr[c].abs().idxmax()])}
                                    for c in corr.columns if corr[c].notna().any()}
        if has_prior:
            thr = float(config.eval.graph_threshold)
            prior_edges = cd.adjacency_edges(weights[i], names, thr)
            prior_png = cd.draw_graph(prior_edges, blocks, os.path.join(workdir, f"prior_graph_seed{i}.png"),
                                      f"learned prior adjacency |W| > {thr}, seed {i}")
            files.append(prior_png)
            prior_report[str(i)] = {"threshold": thr, "edges": [dataclasses.asdict(e) for e in prior_edges],
                                    "png": prior_png, "agreement_with_pc": graph_agreement(res.edges, prior_edges)}
    if has_prior:
        thr = float(config.eval.graph_threshold)
        for i in range(n_seeds):
            files.append(cd.write_edges(cd.adjacency_edges(weights[i], names, thr),
                                        os.path.join(workdir, f"prior_edges_seed{i}.csv")))
            w_path = os.path.join(workdir, f"prior_adjacency_seed{i}.csv")
            pd.DataFrame(weights[i], index=names, columns=names).to_csv(w_path)
            files.append(w_path)
    if config.eval.plots and os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        from crl_jax import plotting

        files.append(plotting.training_curves(os.path.join(workdir, "metrics.jsonl"),
                                              os.path.join(workdir, "training_curves.png")))

    report = {
        "source": "personax", "model": config.model.name, "dataset": config.data.get("dataset", ""),
        "data": {"path": os.path.abspath(config.data.path), "nan_report": data.nan_report,
                 "n_train": int(data.train_rows.size), "n_val": int(data.val_rows.size),
                 "n_measurements": dict(zip(MODALITIES, data.layout.n_measurements)),
                 "embedding_dims": {m: s[0] for m, s in zip(MODALITIES, data.layout.obs_shapes)},
                 "standardise": config.data.standardise, "columns": data.columns.to_dict()},
        "latent_blocks": blocks,
        "training": {"num_seeds": n_seeds, "steps": step, "train_seconds": train_seconds,
                     "devices": int(mesh.devices.size)},
        "loss_terms": terms,
        "causal_discovery": pc_report,
        "prior_graph": prior_report,
        "latent_trait_spearman_best": correlations,
        "post_seconds": time.time() - t1,
    }
    report["files"] = sorted(os.path.basename(f) for f in files) + ["report.json", "report.md", "rows.csv"]
    report = reporting.write(workdir, report, nan_as_null=True)
    print(reporting.markdown(report))
    return report
