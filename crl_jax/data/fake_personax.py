"""A small PersonaX-layout table with planted dependencies, for tests and dry runs.

Generative process (all randomness from one numpy Generator seeded by `seed`):

    latents   s1, s2 (shared), img1..img3 (image-specific), txt1..txt3 (text-specific)
    edges     s1 -> img1,  s2 -> txt1,  img2 -> txt2 (the cross-modal image -> text edge)
    traits    openness <- txt1, conscientiousness <- txt2, extraversion <- txt3,
              agreeableness <- s1, neuroticism <- s2
    per LLM   score = clip(round(3 + 1.1 (trait + bias_llm + 0.35 noise)), 1, 5); a fraction is set
              to 0 ("insufficient information") and a fraction to NaN (missing)
    features  height (continuous)  <- extraversion   (tanh)
              weight (continuous)  <- conscientiousness (quadratic: non-monotone)
              smiling (binary)     <- agreeableness  (logistic)
              occupation (3 cats)  <- conscientiousness (thresholds)
              latitude, birth_year (continuous), gender, big_nose, birth_month (discrete): independent
    embeddings image measurement k = MLP_k([s, img, eta_k]); text measurement of LLM k =
              MLP_k([s, txt, eta_k]); each MLP a different random leaky-ReLU map.

The ground truth (dependent feature-trait pairs, derived from the DAG by the common-ancestor rule,
and the latent graph) is returned and written next to the table as `<stem>_truth.json`; the column
layout is written as `<stem>_columns.json` (loadable with `PersonaXColumns.from_json`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from crl_jax.data.personax import BIG_FIVE, DEFAULT_LLMS, PersonaXColumns

LATENTS = ("s1", "s2", "img1", "img2", "img3", "txt1", "txt2", "txt3")
LATENT_EDGES = (("s1", "img1"), ("s2", "txt1"), ("img2", "txt2"))
TRAIT_LATENT = {"openness": "txt1", "conscientiousness": "txt2", "extraversion": "txt3",
                "agreeableness": "s1", "neuroticism": "s2"}
FEATURE_PARENTS = {"height": ("extraversion",), "weight": ("conscientiousness",),
                   "smiling": ("agreeableness",), "occupation": ("conscientiousness",),
                   "latitude": (), "birth_year": (), "gender": (), "big_nose": (), "birth_month": ()}
# "auto" kinds exercise the loader's detection rule; birth_month (12 integer levels) is tagged.
FEATURE_KINDS = {"height": "auto", "weight": "continuous", "smiling": "auto", "occupation": "auto",
                 "latitude": "auto", "birth_year": "auto", "gender": "auto", "big_nose": "discrete",
                 "birth_month": "discrete"}
FEATURE_TRUE_KINDS = {"height": "continuous", "weight": "continuous", "smiling": "discrete",
                      "occupation": "discrete", "latitude": "continuous", "birth_year": "continuous",
                      "gender": "discrete", "big_nose": "discrete", "birth_month": "discrete"}


@dataclasses.dataclass
class FakePersonaX:
    table: pd.DataFrame
    columns: PersonaXColumns
    truth: dict[str, Any]
    paths: dict[str, str]


def latent_adjacency() -> np.ndarray:
    """(8, 8) 0/1 adjacency over LATENTS, row = child, column = parent."""
    a = np.zeros((len(LATENTS), len(LATENTS)), dtype=int)
    for parent, child in LATENT_EDGES:
        a[LATENTS.index(child), LATENTS.index(parent)] = 1
    return a


def dependent_pairs() -> list[tuple[str, str]]:
    """(feature, trait) pairs that are marginally dependent in the full DAG (common-ancestor rule)."""
    nodes = list(LATENTS) + list(TRAIT_LATENT) + list(FEATURE_PARENTS)
    idx = {v: i for i, v in enumerate(nodes)}
    reach = np.eye(len(nodes), dtype=bool)  # reach[a, b]: a is an ancestor of b (or a == b)
    edges = list(LATENT_EDGES) + [(z, t) for t, z in TRAIT_LATENT.items()] + \
        [(t, f) for f, ps in FEATURE_PARENTS.items() for t in ps]
    for a, b in edges:
        reach[idx[a], idx[b]] = True
    for k in range(len(nodes)):  # transitive closure (Floyd-Warshall on booleans)
        reach |= reach[:, [k]] & reach[[k], :]
    out = []
    for f in FEATURE_PARENTS:
        for t in TRAIT_LATENT:
            if np.any(reach[:, idx[f]] & reach[:, idx[t]]):
                out.append((f, t))
    return out


def _random_mlps(rng: np.random.Generator, k: int, d_in: int, d_hidden: int, d_out: int) -> tuple[np.ndarray, ...]:
    w1 = rng.normal(size=(k, d_in, d_hidden)) / np.sqrt(d_in)
    b1 = rng.normal(scale=0.3, size=(k, 1, d_hidden))
    w2 = rng.normal(size=(k, d_hidden, d_out)) / np.sqrt(d_hidden)
    return w1, b1, w2


def _apply_mlps(params: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
    """x: (k, n, d_in) -> (k, n, d_out); one different leaky-ReLU MLP per measurement."""
    w1, b1, w2 = params
    h = np.einsum("kni,kih->knh", x, w1) + b1
    h = np.where(h > 0, h, 0.2 * h)
    return np.einsum("knh,kho->kno", h, w2)


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


def _vector_string(v: np.ndarray | None) -> str | None:
    """CSV cell for one embedding: "[0.1, 0.2, ...]" (None stays empty)."""
    return None if v is None else "[" + ", ".join(f"{x:.7g}" for x in v) + "]"


def make_fake_personax(seed: int, n: int, out_path: str | os.PathLike | None = None, *,
                       n_image: int = 2, image_dim: int = 16, text_dim: int = 24,
                       llms: Sequence[str] = DEFAULT_LLMS, nan_fraction: float = 0.03,
                       insufficient_fraction: float = 0.05, write_csv_copy: bool = False) -> FakePersonaX:
    """Generates the fake table; writes it (Parquet or CSV by `out_path`'s extension) when out_path is
    given, plus `<stem>_truth.json`, `<stem>_columns.json` and, with write_csv_copy, `<stem>.csv`."""
    if n < 20:
        raise ValueError(f"n={n} is too small for a PersonaX fake table; use n >= 20.")
    if not 1 <= n_image <= 3:
        raise ValueError(f"n_image={n_image} must be 1, 2 or 3 image measurements.")
    if not 1 <= len(llms) <= 3:
        raise ValueError(f"llms={tuple(llms)} must name 1-3 LLMs (one text measurement each).")
    for name, frac in (("nan_fraction", nan_fraction), ("insufficient_fraction", insufficient_fraction)):
        if not 0.0 <= frac < 0.5:
            raise ValueError(f"{name}={frac} must be in [0, 0.5).")
    if out_path is not None:
        ext = os.path.splitext(os.fspath(out_path))[1].lower()
        if ext not in (".parquet", ".csv"):
            raise ValueError(f"out_path {os.fspath(out_path)!r} must end in .parquet or .csv.")
    rng = np.random.default_rng(seed)
    llms = tuple(llms)

    # Latents (nonlinear mechanisms along LATENT_EDGES), standardised.
    z = {v: rng.normal(size=n) for v in LATENTS}
    z["img1"] = np.tanh(1.5 * z["s1"]) + 0.5 * z["img1"]
    z["txt1"] = np.tanh(1.5 * z["s2"]) + 0.5 * z["txt1"]
    z["txt2"] = np.tanh(1.5 * z["img2"]) + 0.5 * z["txt2"]
    lat = _standardise(np.stack([z[v] for v in LATENTS], axis=1))
    col = {v: lat[:, i] for i, v in enumerate(LATENTS)}

    # Traits: true trait = its latent; per-LLM integer scores 1..5, with 0s and NaNs.
    df = pd.DataFrame({"person_id": [f"p{seed}_{i:05d}" for i in range(n)]})
    true_traits = {t: col[zname] for t, zname in TRAIT_LATENT.items()}
    bias = rng.normal(scale=0.2, size=len(llms))
    for t, v in true_traits.items():
        noisy = v[None] + bias[:, None] + 0.35 * rng.normal(size=(len(llms), n))
        scores = np.clip(np.round(3 + 1.1 * noisy), 1, 5)
        scores[rng.random(scores.shape) < insufficient_fraction] = 0.0
        scores[rng.random(scores.shape) < nan_fraction] = np.nan
        for j, llm in enumerate(llms):
            df[f"{llm}_{BIG_FIVE[t]}"] = scores[j]

    # Features.
    e, c, a = true_traits["extraversion"], true_traits["conscientiousness"], true_traits["agreeableness"]
    feats: dict[str, np.ndarray] = {
        "height": 170 + 7 * np.tanh(1.5 * e) + 3 * rng.normal(size=n),
        "weight": 70 + 5 * (c ** 2 - 1) + 3 * rng.normal(size=n),
        "smiling": (rng.random(n) < 1 / (1 + np.exp(-2.5 * a))).astype(float),
        "occupation": np.array(["musician", "actor", "athlete"], dtype=object)[
            np.digitize(c + 0.5 * rng.normal(size=n), [-0.6, 0.6])],
        "latitude": rng.uniform(-40, 60, size=n),
        "birth_year": rng.integers(1940, 2001, size=n).astype(float),
        "gender": np.where(rng.random(n) < 0.5, "female", "male").astype(object),
        "big_nose": (rng.random(n) < 0.3).astype(float),
        "birth_month": rng.integers(1, 13, size=n).astype(float),
    }
    for f, v in feats.items():
        miss = rng.random(n) < nan_fraction
        v = v.copy()
        v[miss] = None if v.dtype == object else np.nan
        df[f] = v

    # Embeddings through different random nonlinear maps per measurement.
    s = lat[:, :2]
    img_in = np.concatenate([np.broadcast_to(np.concatenate([s, lat[:, 2:5]], 1), (n_image, n, 5)),
                             rng.normal(size=(n_image, n, 2))], axis=2)
    txt_in = np.concatenate([np.broadcast_to(np.concatenate([s, lat[:, 5:8]], 1), (len(llms), n, 5)),
                             rng.normal(size=(len(llms), n, 2))], axis=2)
    img = _apply_mlps(_random_mlps(rng, n_image, 7, 32, image_dim), img_in)
    txt = _apply_mlps(_random_mlps(rng, len(llms), 7, 32, text_dim), txt_in)
    img_missing = rng.random((n_image, n)) < nan_fraction / 2
    txt_missing = rng.random((len(llms), n)) < nan_fraction / 2
    image_cols = tuple(f"image_emb_{k}" for k in range(n_image))
    text_cols = tuple(f"text_emb_{llm}" for llm in llms)
    for k, name in enumerate(image_cols):
        df[name] = [None if m else row.astype(np.float32) for row, m in zip(img[k], img_missing[k])]
    for k, name in enumerate(text_cols):
        df[name] = [None if m else row.astype(np.float32) for row, m in zip(txt[k], txt_missing[k])]

    columns = PersonaXColumns(id_column="person_id", image=image_cols, text=text_cols, llms=llms,
                              traits=dict(BIG_FIVE), trait_column_template="{llm}_{trait}",
                              features=dict(FEATURE_KINDS))
    truth = {
        "seed": seed, "n": n,
        "dependent_pairs": [list(p) for p in dependent_pairs()],
        "feature_parents": {f: list(p) for f, p in FEATURE_PARENTS.items()},
        "feature_kinds": dict(FEATURE_TRUE_KINDS),
        "trait_latent": dict(TRAIT_LATENT),
        "latent_names": list(LATENTS),
        "latent_blocks": {"shared": ["s1", "s2"], "image": ["img1", "img2", "img3"],
                          "text": ["txt1", "txt2", "txt3"]},
        "latent_adjacency_child_by_parent": latent_adjacency().tolist(),
        "cross_modal_edges": [["img2", "txt2"]],
        "insufficient_fraction": insufficient_fraction, "nan_fraction": nan_fraction,
    }
    paths: dict[str, str] = {}
    if out_path is not None:
        paths = write_fake(df, columns, truth, os.fspath(out_path), write_csv_copy)
    return FakePersonaX(table=df, columns=columns, truth=truth, paths=paths)


def write_fake(df: pd.DataFrame, columns: PersonaXColumns, truth: dict[str, Any], out_path: str,
               write_csv_copy: bool) -> dict[str, str]:
    stem, ext = os.path.splitext(out_path)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    paths = {"table": out_path, "truth": f"{stem}_truth.json", "columns": f"{stem}_columns.json"}
    emb_cols = list(columns.image) + list(columns.text)
    if ext.lower() == ".parquet":
        df.to_parquet(out_path, index=False)
    if ext.lower() == ".csv" or write_csv_copy:
        csv_path = out_path if ext.lower() == ".csv" else f"{stem}.csv"
        csv_df = df.copy()
        for c in emb_cols:
            csv_df[c] = [_vector_string(v) for v in df[c]]
        csv_df.to_csv(csv_path, index=False)
        paths["csv"] = csv_path
    with open(paths["truth"], "w") as f:
        json.dump(truth, f, indent=2)
    with open(paths["columns"], "w") as f:
        json.dump(columns.to_dict(), f, indent=2)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write a fake PersonaX table with planted dependencies.")
    p.add_argument("--out", required=True, help="output table, .parquet or .csv")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n_image", type=int, default=2, help="image measurements (1-3)")
    p.add_argument("--csv", action="store_true", help="also write a CSV copy next to a Parquet table")
    args = p.parse_args(argv)
    fake = make_fake_personax(args.seed, args.n, args.out, n_image=args.n_image, write_csv_copy=args.csv)
    print(f"wrote {args.n} rows: " + ", ".join(f"{k}={v}" for k, v in fake.paths.items()))
    print("planted dependent (feature, trait) pairs: " +
          ", ".join(f"{f}~{t}" for f, t in fake.truth["dependent_pairs"]))


if __name__ == "__main__":
    main()
