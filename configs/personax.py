"""PersonaX CRL on a local CelebPersona / AthlePersona table (Level II on real data; docs/PERSONAX.md).

    python -m crl_jax.main --config=configs/personax.py:celeb --config.data.path=/path/to/celebpersona.parquet --config.data.columns=/path/to/celeb_columns.json --workdir=runs/celeb

Expected: no score (real data has no ground truth); latents_seed{i}.csv, the PC graph on the learned latents and report.md in the workdir.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import default
from configs import synthetic as synthetic_config

# The paper's latent sizes and measurement counts (PersonaX, ICLR 2026, section 5).
VARIANTS = {
    "celeb": {"shared_dim": 3, "image_dim": 10, "text_dim": 5, "n_image": 3, "n_text": 3},
    "athle": {"shared_dim": 2, "image_dim": 5, "text_dim": 5, "n_image": 1, "n_text": 3},
}
def apply_smoke(config: ml_collections.ConfigDict) -> None:
    """A run of a few seconds: the synthetic smoke settings plus a small PC sample."""
    synthetic_config.apply_smoke(config)
    config.causal_discovery.max_n = 500


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    unknown = [p for p in parts if p not in VARIANTS and p != "smoke"]
    datasets = [p for p in parts if p in VARIANTS]
    if unknown or len(datasets) > 1:
        raise ValueError(f"configs/personax.py: bad variant {arg!r}; give one of {sorted(VARIANTS)} "
                         "optionally followed by ',smoke' (e.g. 'celeb' or 'athle,smoke')")
    dataset = datasets[0] if datasets else "celeb"
    v = VARIANTS[dataset]

    config = default.base_config()
    config.data.source = "personax"
    config.data.dataset = dataset                 # informational: which paper setting
    config.data.path = ""                         # the table (.parquet / .pq / .csv); required
    # "" = experiments.personax.default_columns(...); a JSON path; inline JSON; or (Python) a dict / PersonaXColumns.
    config.data.columns = config_dict.FieldReference("", field_type=object)
    config.data.default_n_image = v["n_image"]    # measurement counts of the default layout
    config.data.default_n_text = v["n_text"]
    config.data.load_traits = True                # carry Big Five medians for the report
    config.data.nan_policy = "drop"               # "drop" rows or "impute_mean"
    config.data.val_fraction = 0.1                # held-out rows for the validation loss
    config.data.split_seed = 0
    config.data.standardise = "per_dim"           # "per_dim" z-scores (train rows) or "none"
    config.data.shared_dim = v["shared_dim"]      # latents shared by image and text

    config.model.name = "personax_vae"            # the two-stage personax: synthetic data only
    config.model.latent_dims = (v["image_dim"], v["text_dim"])   # (image, text)
    config.model.eta_dim = 2                      # measurement-specific latents per measurement
    config.model.hidden = (256, 256)

    config.train.steps = 20000
    config.train.batch_size = 256
    config.train.num_seeds = 3

    config.causal_discovery = ml_collections.ConfigDict()
    config.causal_discovery.indep_test = "fisherz"  # "fisherz", "kci", "rcit", "fastkci"
    config.causal_discovery.alpha = 0.05
    config.causal_discovery.max_n = 0             # rows for PC (seeded subsample); 0 = all rows
    config.causal_discovery.seed_index = 0        # which trained seed; -1 = every seed
    config.causal_discovery.subsample_seed = 0
    config.causal_discovery.stable = True

    if "smoke" in parts:
        apply_smoke(config)
    return config
