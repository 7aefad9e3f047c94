"""Loading and validating a local PersonaX table (CelebPersona / AthlePersona layout).

A PersonaX table has one row per person and these column groups (all configurable through
`PersonaXColumns`):

- an id column (optional; row numbers are used when `id_column` is None),
- image embeddings: 1-3 measurements, each either a table column holding one vector per row
  (a list/array in Parquet, a string such as "[0.1, 0.2]" in CSV) or the path of a `.npy`
  file of shape (n, d) that is row-aligned with the table,
- text embeddings: 1-3 measurements (one per LLM), same two forms,
- Big Five trait scores per LLM, in columns named `trait_column_template.format(llm=..., trait=...)`
  (default "{llm}_{trait}", e.g. "4o_o"); a score equal to `insufficient_value` (default 0)
  means "insufficient information",
- biographical / facial-attribute features, each tagged "continuous", "discrete", "both" or "auto"
  (see `resolve_feature_kind` for the auto rule).

`load_table` validates everything up front and raises one clear error per problem;
`aggregate_traits` gives the paper's cross-LLM median (zeros dropped); `prepare_for_crl` applies an
explicit NaN policy to the embedding arrays that the CRL model consumes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

BIG_FIVE: dict[str, str] = {
    "openness": "o",
    "conscientiousness": "c",
    "extraversion": "e",
    "agreeableness": "a",
    "neuroticism": "n",
}
# Column prefixes used by the PersonaX reference notebooks for GPT-4o, DeepSeek-V3, Gemini-2.0-Flash.
DEFAULT_LLMS: tuple[str, ...] = ("4o", "DS", "gemini")
FEATURE_KINDS = ("continuous", "discrete", "both", "auto")
SUPPORTED_EXTENSIONS = (".parquet", ".pq", ".csv")
MAX_MEASUREMENTS = 3


@dataclasses.dataclass(frozen=True)
class PersonaXColumns:
    """Where each column group lives in the table.

    image / text: one entry per measurement; an entry ending in ".npy" is a file path (relative
    paths are resolved against the table's folder), anything else is a column name.
    traits: trait name -> token substituted for `{trait}` in `trait_column_template`.
    llms: tokens substituted for `{llm}`; empty means the trait columns are already aggregated
    (then the template must not contain `{llm}`).
    features: feature column -> kind ("continuous" | "discrete" | "both" | "auto").
    discrete_max_levels: the auto rule's level limit (see `resolve_feature_kind`).
    """

    id_column: str | None = "person_id"
    image: tuple[str, ...] = ("image_emb_0",)
    text: tuple[str, ...] = tuple(f"text_emb_{llm}" for llm in DEFAULT_LLMS)
    llms: tuple[str, ...] = DEFAULT_LLMS
    traits: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(BIG_FIVE))
    trait_column_template: str = "{llm}_{trait}"
    features: Mapping[str, str] = dataclasses.field(default_factory=dict)
    insufficient_value: float = 0.0
    discrete_max_levels: int = 10

    def __post_init__(self) -> None:
        # Normalise list-likes (e.g. from JSON / ConfigDict) into tuples and dicts.
        object.__setattr__(self, "image", _as_str_tuple(self.image, "image"))
        object.__setattr__(self, "text", _as_str_tuple(self.text, "text"))
        object.__setattr__(self, "llms", _as_str_tuple(self.llms, "llms"))
        object.__setattr__(self, "traits", dict(self.traits))
        object.__setattr__(self, "features", dict(self.features))
        for name, group in (("image", self.image), ("text", self.text)):
            if len(group) > MAX_MEASUREMENTS:
                raise ValueError(
                    f"PersonaXColumns.{name} has {len(group)} measurements; at most {MAX_MEASUREMENTS} "
                    f"are supported. Keep at most {MAX_MEASUREMENTS} entries.")
        for feat, kind in self.features.items():
            if kind not in FEATURE_KINDS:
                raise ValueError(
                    f"PersonaXColumns.features[{feat!r}] = {kind!r} is not a feature kind; use one of "
                    f"{FEATURE_KINDS}.")
        if not self.traits:
            raise ValueError("PersonaXColumns.traits is empty; give at least one trait, e.g. "
                             "{'openness': 'o'}.")
        if "{trait}" not in self.trait_column_template:
            raise ValueError(
                f"PersonaXColumns.trait_column_template={self.trait_column_template!r} lacks '{{trait}}'; "
                "use e.g. '{llm}_{trait}'.")
        if self.llms and "{llm}" not in self.trait_column_template:
            raise ValueError(
                f"PersonaXColumns.trait_column_template={self.trait_column_template!r} lacks '{{llm}}' but "
                f"llms={self.llms}; add '{{llm}}' or set llms=() for pre-aggregated trait columns.")
        if not self.llms and "{llm}" in self.trait_column_template:
            raise ValueError(
                "PersonaXColumns.llms is empty but trait_column_template contains '{llm}'; list the LLM "
                "column prefixes in llms.")
        if self.discrete_max_levels < 2:
            raise ValueError(
                f"PersonaXColumns.discrete_max_levels={self.discrete_max_levels} must be >= 2.")

    @property
    def trait_groups(self) -> tuple[str, ...]:
        """LLM names of the per-LLM trait columns ("aggregate" when the table is pre-aggregated)."""
        return self.llms if self.llms else ("aggregate",)

    def trait_column(self, llm: str, trait: str) -> str:
        token = self.traits[trait]
        if not self.llms:
            return self.trait_column_template.format(trait=token)
        return self.trait_column_template.format(llm=llm, trait=token)

    def replace(self, **changes: Any) -> "PersonaXColumns":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image"], d["text"], d["llms"] = list(self.image), list(self.text), list(self.llms)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PersonaXColumns":
        """Builds from a plain dict / ml_collections ConfigDict; unknown keys raise."""
        d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown PersonaXColumns field(s) {unknown}; known fields: {sorted(known)}.")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "PersonaXColumns":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"PersonaX column config {path!r} not found; pass an existing JSON file.")
        with open(path) as f:
            return cls.from_dict(json.load(f))


@dataclasses.dataclass
class PersonaXTable:
    """Validated table contents as numpy arrays.

    image: (n, K_img, d_img) float32 (NaN rows where an embedding is missing), or None if no image
    measurements were configured; text likewise. traits[trait] is (n, n_llms) float64 with the raw
    scores (insufficient-information zeros kept, NaN where missing), columns in `llms` order.
    features holds the raw feature columns (index 0..n-1); feature_kinds the resolved kinds.
    """

    ids: np.ndarray
    image: np.ndarray | None
    text: np.ndarray | None
    traits: dict[str, np.ndarray]
    llms: tuple[str, ...]
    features: pd.DataFrame
    feature_kinds: dict[str, str]
    columns: PersonaXColumns
    source: str = ""

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    def aggregated_traits(self) -> dict[str, np.ndarray]:
        return {t: aggregate_traits(v, self.columns.insufficient_value) for t, v in self.traits.items()}

    def per_llm_traits(self) -> dict[tuple[str, str], np.ndarray]:
        """(llm, trait) -> (n,) scores with insufficient-information values set to NaN."""
        out = {}
        for t, v in self.traits.items():
            clean = np.where(v == self.columns.insufficient_value, np.nan, v)
            for j, llm in enumerate(self.llms):
                out[(llm, t)] = clean[:, j]
        return out


def aggregate_traits(scores: np.ndarray, insufficient_value: float = 0.0) -> np.ndarray:
    """Median across LLMs after dropping `insufficient_value` and NaN (PersonaX's aggregation).

    scores: (n, n_llms). Rows where no LLM gave a usable score are NaN.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"aggregate_traits expects (n, n_llms) scores, got shape {scores.shape}.")
    clean = np.where(scores == insufficient_value, np.nan, scores)
    out = np.full(scores.shape[0], np.nan)
    ok = ~np.all(np.isnan(clean), axis=1)
    out[ok] = np.nanmedian(clean[ok], axis=1)
    return out


def resolve_feature_kind(series: pd.Series, kind: str, max_levels: int) -> str:
    """Resolves "auto": discrete if the column is non-numeric (object / string / category / bool), or
    numeric with only integer values and at most `max_levels` distinct non-missing values; otherwise
    continuous. Explicit kinds are returned unchanged."""
    if kind != "auto":
        return kind
    if not _is_numeric(series):
        return "discrete"
    vals = pd.to_numeric(series, errors="coerce").dropna().to_numpy(dtype=np.float64)
    if vals.size and np.all(vals == np.round(vals)) and np.unique(vals).size <= max_levels:
        return "discrete"
    return "continuous"


def read_dataframe(path: str | os.PathLike) -> pd.DataFrame:
    """Reads a Parquet or CSV file, with clear errors for missing files and other extensions."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(
            f"Unsupported PersonaX table extension {ext or '(none)'!r} for {path!r}; use one of "
            f"{SUPPORTED_EXTENSIONS} (convert e.g. with pandas: pd.read_excel(...).to_parquet('table.parquet')).")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PersonaX table {path!r} not found; check the --data path.")
    if ext == ".csv":
        try:
            return pd.read_csv(path)
        except pd.errors.EmptyDataError:
            raise ValueError(f"PersonaX table {path!r} is empty (no header row); check the "
                             "--data path or re-export the table.") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise ValueError(f"PersonaX table {path!r} is not a readable CSV file "
                             f"({' '.join(str(e).split())}); re-export it as CSV or Parquet.") from None
    try:
        return pd.read_parquet(path)
    except ImportError as e:
        raise ImportError(f"Reading {path!r} needs a Parquet engine ({e}); install pyarrow "
                          "(pip install 'crl_jax[parquet]') or convert the table to CSV.") from e
    except (OSError, ValueError) as e:   # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"PersonaX table {path!r} is not a readable Parquet file "
                         f"({' '.join(str(e).split())[:200]}); re-export it.") from None


def load_table(path: str | os.PathLike, columns: PersonaXColumns | Mapping[str, Any] | None = None,
               *, traits: Sequence[str] | None = None, features: Sequence[str] | None = None) -> PersonaXTable:
    """Reads and validates a PersonaX table.

    traits / features optionally restrict which traits and features are read (features not listed
    in `columns.features` get kind "auto"). Embedding groups are skipped when `columns.image` /
    `columns.text` are empty (Level I does not need them).
    """
    if columns is None:
        columns = PersonaXColumns()
    elif not isinstance(columns, PersonaXColumns):
        columns = PersonaXColumns.from_dict(columns)
    path = os.fspath(path)
    df = read_dataframe(path)
    return table_from_dataframe(df, columns, traits=traits, features=features,
                                base_dir=os.path.dirname(os.path.abspath(path)), source=path)


def table_from_dataframe(df: pd.DataFrame, columns: PersonaXColumns, *, traits: Sequence[str] | None = None,
                         features: Sequence[str] | None = None, base_dir: str = ".",
                         source: str = "<dataframe>") -> PersonaXTable:
    """Validation and conversion shared by `load_table` (see there)."""
    df = df.reset_index(drop=True)
    trait_names = list(columns.traits) if traits is None else list(traits)
    unknown = [t for t in trait_names if t not in columns.traits]
    if unknown:
        raise ValueError(f"Unknown trait(s) {unknown}; PersonaXColumns.traits defines {list(columns.traits)}.")
    if features is None:
        feature_kinds_in = dict(columns.features)
    else:
        feature_kinds_in = {f: columns.features.get(f, "auto") for f in features}

    # 1. Every referenced column must exist: one error listing all that are missing.
    needed: list[tuple[str, str]] = []
    if columns.id_column is not None:
        needed.append(("id_column", columns.id_column))
    for group in ("image", "text"):
        for k, src in enumerate(getattr(columns, group)):
            if not _is_npy(src):
                needed.append((f"{group}[{k}]", src))
    for t in trait_names:
        for llm in columns.trait_groups:
            needed.append((f"trait {t} ({llm})", columns.trait_column(llm, t)))
    for f in feature_kinds_in:
        needed.append((f"feature {f}", f))
    missing = [(field, col) for field, col in needed if col not in df.columns]
    if missing:
        listed = ", ".join(f"{col!r} (for {field})" for field, col in missing)
        raise ValueError(
            f"PersonaX table {source!r} is missing column(s): {listed}. Available columns: "
            f"{_preview(list(df.columns), 60)}. Fix the column names in PersonaXColumns / the CLI flags.")

    n = len(df)
    if n == 0:
        raise ValueError(f"PersonaX table {source!r} has no rows.")

    # 2. Ids: present, unique.
    if columns.id_column is None:
        ids = np.arange(n)
    else:
        id_series = df[columns.id_column]
        if id_series.isna().any():
            rows = np.flatnonzero(id_series.isna().to_numpy())[:5].tolist()
            raise ValueError(f"Id column {columns.id_column!r} has missing values (rows {rows}); every person "
                             "needs an id (or set id_column=None to use row numbers).")
        dup = id_series[id_series.duplicated(keep=False)]
        if len(dup):
            counts = dup.value_counts()
            examples = ", ".join(f"{k!r} x{v}" for k, v in counts.head(5).items())
            raise ValueError(
                f"Id column {columns.id_column!r} has {counts.size} duplicated id(s), e.g. {examples}; "
                "deduplicate the table (e.g. df.drop_duplicates(subset=...)) before loading.")
        ids = id_series.to_numpy()

    # 3. Trait scores: numeric.
    trait_arrays: dict[str, np.ndarray] = {}
    for t in trait_names:
        cols = [columns.trait_column(llm, t) for llm in columns.trait_groups]
        trait_arrays[t] = np.stack([_numeric_column(df, c, ids, f"trait {t!r}") for c in cols], axis=1)

    # 4. Features: kinds resolved; continuous ones must be numeric.
    feats = df[list(feature_kinds_in)].copy()
    kinds: dict[str, str] = {}
    for f, kind in feature_kinds_in.items():
        kinds[f] = resolve_feature_kind(feats[f], kind, columns.discrete_max_levels)
        if kinds[f] in ("continuous", "both"):
            feats[f] = _numeric_column(df, f, ids, f"{kinds[f]} feature {f!r}")

    # 5. Embeddings.
    image = _load_group(df, columns.image, "image", ids, base_dir)
    text = _load_group(df, columns.text, "text", ids, base_dir)

    return PersonaXTable(ids=ids, image=image, text=text, traits=trait_arrays, llms=columns.trait_groups,
                         features=feats, feature_kinds=kinds, columns=columns, source=source)


def prepare_for_crl(table: PersonaXTable, nan_policy: str = "drop") -> tuple[dict[str, Any], dict[str, Any]]:
    """Embedding arrays for the CRL model with an explicit NaN policy.

    nan_policy="drop": rows with any NaN in any image/text embedding are removed.
    nan_policy="impute_mean": NaN entries are replaced by the mean of that (measurement, dimension)
    over the rows where it is observed.
    Traits (cross-LLM median) and features are carried along for the kept rows with their NaNs left
    in place (they are not model inputs); the report counts them.

    Returns (arrays, report): arrays has "ids", "image" (n, K_img, d_img), "text" (n, K_txt, d_txt),
    "traits" (n, T) aggregated, "trait_names", "features" (DataFrame); report is JSON-friendly.
    """
    if nan_policy not in ("drop", "impute_mean"):
        raise ValueError(f"nan_policy={nan_policy!r} is not supported; use 'drop' or 'impute_mean'.")
    groups = {k: v for k, v in (("image", table.image), ("text", table.text)) if v is not None}
    if not groups:
        raise ValueError("prepare_for_crl needs embeddings but the table has none; configure "
                         "PersonaXColumns.image / .text.")
    n = table.n
    bad = np.zeros(n, dtype=bool)
    report: dict[str, Any] = {"nan_policy": nan_policy, "n_rows_in": n}
    for name, arr in groups.items():
        row_bad = np.isnan(arr).any(axis=(1, 2))
        report[f"{name}_rows_with_nan"] = int(row_bad.sum())
        report[f"{name}_nan_values"] = int(np.isnan(arr).sum())
        bad |= row_bad
    out = dict(groups)
    if nan_policy == "drop":
        keep = ~bad
        if not keep.any():
            raise ValueError("Every row has a missing embedding; nothing is left after nan_policy='drop'. "
                             "Use nan_policy='impute_mean' or fix the embeddings.")
        out = {k: v[keep] for k, v in out.items()}
        report["rows_dropped"] = int(bad.sum())
        report["dropped_ids_preview"] = [_jsonable(i) for i in table.ids[bad][:10]]
        report["values_imputed"] = 0
    else:
        keep = np.ones(n, dtype=bool)
        imputed = 0
        for k, v in out.items():
            mask = np.isnan(v)
            observed = (~mask).sum(axis=0)
            if np.any(observed == 0):
                m, d = np.argwhere(observed == 0)[0]
                raise ValueError(f"{k} measurement {m} dimension {d} is missing in every row; it cannot be "
                                 "mean-imputed. Fix or drop that measurement.")
            mean = np.nanmean(v, axis=0)
            out[k] = np.where(mask, mean[None], v).astype(np.float32)
            imputed += int(mask.sum())
        report["rows_dropped"] = 0
        report["values_imputed"] = imputed
    import chex  # boundary to the JAX model; imported here so Level I does not load JAX

    chex.assert_rank(list(out.values()), 3)
    chex.assert_tree_all_finite(out)
    chex.assert_equal_shape_prefix(list(out.values()), 1)
    agg = table.aggregated_traits()
    trait_names = list(agg)
    traits = np.stack([agg[t] for t in trait_names], axis=1)[keep] if trait_names else np.zeros((keep.sum(), 0))
    arrays = {"ids": table.ids[keep], **out, "traits": traits, "trait_names": trait_names,
              "features": table.features[keep].reset_index(drop=True)}
    report["n_rows_out"] = int(keep.sum())
    report["trait_nan_values"] = int(np.isnan(traits).sum())
    report["feature_nan_values"] = int(arrays["features"].isna().sum().sum())
    return arrays, report


# ----------------------------------------------------------------------------------------------
# helpers


def _as_str_tuple(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(f"PersonaXColumns.{name} must be a list of strings, got the string {value!r}; "
                         f"write [{value!r}].")
    out = tuple(value)
    if not all(isinstance(v, str) for v in out):
        raise ValueError(f"PersonaXColumns.{name} must contain strings, got {out!r}.")
    return out


def _is_npy(src: str) -> bool:
    return src.lower().endswith(".npy")


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _preview(items: Sequence[Any], k: int) -> str:
    shown = ", ".join(repr(i) for i in items[:k])
    return f"[{shown}{', ...' if len(items) > k else ''}] ({len(items)} total)"


def _jsonable(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _numeric_column(df: pd.DataFrame, col: str, ids: np.ndarray, what: str) -> np.ndarray:
    s = df[col]
    if pd.api.types.is_bool_dtype(s):
        return s.to_numpy(dtype=np.float64)
    conv = pd.to_numeric(s, errors="coerce")
    bad = conv.isna() & s.notna()
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())[:5]
        examples = ", ".join(f"row {r} (id {ids[r]!r}): {s.iloc[r]!r}" for r in rows)
        raise ValueError(
            f"Column {col!r} ({what}) must be numeric but has {int(bad.sum())} non-numeric value(s), e.g. "
            f"{examples}. Clean the column or tag the feature as 'discrete'.")
    out = conv.to_numpy(dtype=np.float64)
    inf = np.flatnonzero(np.isinf(out))
    if inf.size:
        examples = ", ".join(f"row {r} (id {ids[r]!r}): {s.iloc[r]!r}" for r in inf[:5])
        raise ValueError(
            f"Column {col!r} ({what}) has {inf.size} infinite value(s), e.g. {examples}. Replace "
            "them with finite numbers, or leave the cells empty (missing).")
    return out


_F32_MAX = float(np.finfo(np.float32).max)


def _check_finite_rows(mat: np.ndarray, ids: np.ndarray, where: str) -> None:
    """ValueError naming the first rows whose values are infinite or overflow float32 (the
    model's dtype); NaN is a missing value and allowed."""
    with np.errstate(invalid="ignore"):
        bad = np.isinf(mat) | (np.abs(mat) > _F32_MAX)
    rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
    if rows.size:
        examples = ", ".join(
            f"row {r} (id {ids[r]!r}) value {mat[r].reshape(-1)[np.argmax(bad[r].reshape(-1))]!r} "
            f"at position {int(np.argmax(bad[r].reshape(-1)))}" for r in rows[:3])
        raise ValueError(
            f"{where} has {rows.size} row(s) with infinite values or values beyond float32's "
            f"range (+-{_F32_MAX:.3g}), e.g. {examples}. Fix or rescale those embeddings "
            "(missing values may be left empty / NaN).")


def _parse_vector(cell: Any) -> np.ndarray | None:
    """One embedding cell -> 1-D float array, or None when missing. Raises ValueError when malformed."""
    if cell is None:
        return None
    if isinstance(cell, float) and np.isnan(cell):
        return None
    if isinstance(cell, str):
        body = cell.strip()
        if body == "" or body.lower() in ("nan", "none", "null"):
            return None
        body = body.strip("[]()").replace(",", " ")
        return np.array([float(tok) for tok in body.split()], dtype=np.float64)
    arr = np.asarray(cell, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D vector, got shape {arr.shape}")
    return arr


def _embedding_from_column(df: pd.DataFrame, col: str, ids: np.ndarray, field: str) -> np.ndarray:
    cells = df[col].tolist()
    vecs: list[np.ndarray | None] = []
    for r, cell in enumerate(cells):
        try:
            vecs.append(_parse_vector(cell))
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"Embedding column {col!r} ({field}) row {r} (id {ids[r]!r}) is not a numeric vector "
                f"({e}): {str(cell)[:80]!r}. Store embeddings as lists of numbers (Parquet) or strings like "
                "'[0.1, 0.2]' (CSV).") from None
    sizes = np.array([-1 if v is None else v.shape[0] for v in vecs])
    present = sizes[sizes >= 0]
    if present.size == 0:
        raise ValueError(f"Embedding column {col!r} ({field}) is empty in every row; check the column.")
    d = int(np.bincount(present).argmax())
    wrong = np.flatnonzero((sizes >= 0) & (sizes != d))
    if wrong.size:
        examples = ", ".join(f"row {r} (id {ids[r]!r}) has {sizes[r]}" for r in wrong[:5])
        raise ValueError(
            f"Embedding column {col!r} ({field}) has inconsistent sizes: most rows have {d} values but "
            f"{wrong.size} row(s) differ, e.g. {examples}. All embeddings of one measurement must have the "
            "same length.")
    full = np.full((len(vecs), d), np.nan, dtype=np.float64)
    rows = np.flatnonzero(sizes >= 0)
    if rows.size:
        full[rows] = np.stack([vecs[r] for r in rows])
    _check_finite_rows(full, ids, f"Embedding column {col!r} ({field})")
    return full.astype(np.float32)


def _embedding_from_npy(src: str, n: int, base_dir: str, field: str, ids: np.ndarray) -> np.ndarray:
    path = src if os.path.isabs(src) else os.path.join(base_dir, src)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Embedding file {path!r} ({field}) not found; .npy paths are resolved "
                                "relative to the table's folder.")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"Embedding file {path!r} ({field}) is not a readable .npy array ({e}); "
                         "rewrite it with numpy.save.") from None
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"Embedding file {path!r} ({field}) has shape {arr.shape}; expected (n_rows={n}, d), "
                         "row-aligned with the table.")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"Embedding file {path!r} ({field}) has non-numeric dtype {arr.dtype}.")
    _check_finite_rows(arr.astype(np.float64), ids, f"Embedding file {path!r} ({field})")
    return arr.astype(np.float32)


def _load_group(df: pd.DataFrame, sources: Iterable[str], group: str, ids: np.ndarray,
                base_dir: str) -> np.ndarray | None:
    sources = list(sources)
    if not sources:
        return None
    mats = []
    for k, src in enumerate(sources):
        field = f"{group}[{k}]"
        mats.append(_embedding_from_npy(src, len(df), base_dir, field, ids) if _is_npy(src)
                    else _embedding_from_column(df, src, ids, field))
    dims = [m.shape[1] for m in mats]
    if len(set(dims)) > 1:
        listed = ", ".join(f"{s!r}: {d}" for s, d in zip(sources, dims))
        raise ValueError(f"The {group} measurements have different embedding sizes ({listed}); all "
                         f"measurements of one modality must share d (project them to a common size first).")
    return np.stack(mats, axis=1)
