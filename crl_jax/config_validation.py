"""Config checks that run before any long work; each failure names the field and the fix.

Every field of the configs with a range is checked here (the PersonaX-only fields in
``crl_jax.experiments.personax.validate_config``); tests/test_faults.py lists every field and
fails when one is added without a check or an explicit reason to have none.
"""
from __future__ import annotations

import math

import synthetic
from synthetic.spec import NOISES
from crl_jax import methods
from crl_jax.errors import UserError
from crl_jax.host import autotune
from crl_jax.models import networks, vae

SOURCES = ("synthetic", "personax")
SEED_LIMIT = 2 ** 32


class ConfigError(UserError, ValueError):
    """A config field has a value the run cannot use."""


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config.{field}: {message}")


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _value(config, field: str):
    section, name = field.split(".")
    return config[section][name]


def _positive(config, field: str, *, allow_inf: bool = False, also: str = "") -> None:
    raw = _value(config, field)
    v = _number(raw)
    _require(v > 0 and (allow_inf or math.isfinite(v)), field,
             f"must be a {'number' if allow_inf else 'finite number'} > 0{also}, got {raw!r}")


def _non_negative(config, field: str) -> None:
    raw = _value(config, field)
    v = _number(raw)
    _require(v >= 0 and math.isfinite(v), field, f"must be a finite number >= 0, got {raw!r}")


def _at_least(config, field: str, low: int, what: str = "") -> None:
    v = _value(config, field)
    _require(isinstance(v, int) and not isinstance(v, bool) and v >= low, field,
             f"must be an integer >= {low}{what}, got {v!r}")


def _seed(config, field: str) -> None:
    v = _value(config, field)
    _require(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < SEED_LIMIT, field,
             f"must be an integer in [0, 2**32), got {v!r}")


def validate(config, n_devices: int) -> None:
    d, m, lo, t, e = config.data, config.model, config.loss, config.train, config.eval
    source = config.data.get("source", "synthetic")
    _require(source in SOURCES, "data.source", f"{source!r} is not one of {list(SOURCES)}")
    _require(d.preset in synthetic.PRESETS, "data.preset",
             f"unknown preset {d.preset!r}; choose one of {list(synthetic.PRESETS)}")
    _require(m.name in methods.available(), "model.name",
             f"unknown model {m.name!r}; choose one of {list(methods.available())}")
    _require(m.encoder in networks.ENCODERS, "model.encoder",
             f"{m.encoder!r} is not one of {list(networks.ENCODERS)}")
    _require(m.fusion in vae.FUSIONS, "model.fusion",
             f"{m.fusion!r} is not one of {list(vae.FUSIONS)}")
    _require(m.prior in vae.PRIORS, "model.prior",
             f"{m.prior!r} is not one of {list(vae.PRIORS)}")
    _require(len(m.hidden) > 0 and all(int(h) > 0 for h in m.hidden), "model.hidden",
             f"needs positive layer widths, got {tuple(m.hidden)}")
    _require(int(d.n_measurements) >= 1, "data.n_measurements",
             f"must be >= 1, got {d.n_measurements}")
    _require(int(d.shared_dim) >= 0, "data.shared_dim", f"must be >= 0, got {d.shared_dim}")
    _require(int(d.image_size) in (14, 28), "data.image_size",
             f"must be 14 or 28, got {d.image_size}")
    identity = str(d.get("identity", ""))
    _require(identity in ("",) + synthetic.IDENTITIES, "data.identity",
             f"{identity!r} is not '' (the preset's) or one of {list(synthetic.IDENTITIES)}")
    _require(not identity or d.preset.startswith("variant_mnist"), "data.identity",
             f"says how variant_mnist images are chosen; preset {d.preset!r} has none, set it to ''")
    _require(int(d.train_size) >= 0, "data.train_size",
             "must be 0 (fresh samples every step) or a positive training-set size")
    for field in ("eval_fit_size", "val_size", "test_size"):
        _require(int(d[field]) >= 50, f"data.{field}",
                 f"held-out sets need at least 50 samples, got {d[field]}")
    _seed(config, "data.generator_seed")
    noise = str(d.get("noise", ""))
    _require(noise in ("",) + NOISES, "data.noise",
             f"{noise!r} is not '' (the preset's) or one of {list(NOISES)}")
    _require(int(d.get("n_cross_edges", -1)) >= -1, "data.n_cross_edges",
             f"must be -1 (the preset's graph) or a number of edges >= 0, got {d.n_cross_edges}")
    _at_least(config, "model.prior_hidden", 1)
    _at_least(config, "model.flow_units", 0, " (0: no flow)")
    _require(int(m.eta_dim) >= -1, "model.eta_dim",
             f"must be -1 (the preset's size) or a size >= 0, got {m.eta_dim}")
    _positive(config, "model.temperature")
    _require(m.similarity in ("l2", "cosine"), "model.similarity",
             f"{m.similarity!r} is not 'l2' or 'cosine'")
    _positive(config, "loss.recon_std", also=" (the std of the Gaussian likelihood; inf would drop the "
                                    "data term)")
    for field in ("beta", "lambda_sparse", "lambda_sparse_within", "lambda_tie"):
        _non_negative(config, f"loss.{field}")
    _require(lo.get("sparsity", "dependence") in ("dependence", "weights"), "loss.sparsity",
             f"{lo.get('sparsity')!r} is not 'dependence' (L1 on S) or 'weights' (L1 on |W|)")
    _at_least(config, "loss.dependence_rows", 1, " (rows of the batch on which S is computed)")
    if "stage_b" in config:
        _validate_stage_b(config)
    _require(int(t.steps) >= 1, "train.steps", f"must be >= 1, got {t.steps}")
    _require(int(t.num_seeds) >= 1, "train.num_seeds", f"must be >= 1, got {t.num_seeds}")
    _positive(config, "train.learning_rate")
    _positive(config, "train.grad_clip", allow_inf=True,
              also=" (the global gradient-norm clip; inf: no clipping; <= 0 would stop or "
                   "flip the updates)")
    _seed(config, "train.seed")
    _at_least(config, "train.prefetch_steps", 1)
    _at_least(config, "train.keep_checkpoints", 1)
    div = _number(t.get("divergence_factor", 0.0))
    _require(div == 0 or (div > 1 and math.isfinite(div)), "train.divergence_factor",
             f"must be 0 (no check) or a finite number > 1, got {t.get('divergence_factor')!r}")
    _require(int(t.batch_size) >= 1, "train.batch_size", "must be >= 1")
    _require(int(t.batch_size) % n_devices == 0, "train.batch_size",
             f"{t.batch_size} is not divisible by the {n_devices} devices of the data mesh; "
             f"use a multiple of {n_devices}")
    micro = int(t.get("microbatch_size", 0))
    _require(micro >= -1, "train.microbatch_size",
             f"must be 0 (whole batch in one pass), -1 (auto, CPU) or a positive chunk "
             f"size, got {micro}")
    if micro > 0:
        _require(int(t.batch_size) % micro == 0, "train.microbatch_size",
                 f"{micro} does not divide train.batch_size={t.batch_size}; use a divisor "
                 f"of it, or 0 to turn gradient accumulation off")
        _require(micro % n_devices == 0, "train.microbatch_size",
                 f"{micro} is not divisible by the {n_devices} devices of the data mesh "
                 f"(every chunk is spread over all devices); use a multiple of {n_devices}")
    _require(int(t.log_every) >= 1, "train.log_every", "must be >= 1")
    per_call = int(t.get("steps_per_call", 1))
    _require(per_call >= 1 or per_call == -1, "train.steps_per_call",
             f"must be >= 1, or -1 for the automatic choice, got {per_call}")
    _require(per_call == -1 or int(t.log_every) % per_call == 0, "train.steps_per_call",
             f"{per_call} does not divide train.log_every={t.log_every} (metrics are checked "
             f"between calls); use a divisor of it, 1, or -1 (auto: the largest divisor up "
             f"to {autotune.AUTO_STEPS_PER_CALL})")
    _require(int(t.checkpoint_every) >= 1 and int(t.checkpoint_every) % int(t.log_every) == 0,
             "train.checkpoint_every",
             f"must be a positive multiple of train.log_every ({t.log_every}) so that every "
             f"checkpoint is saved right after a finite-loss check")
    _require(t.schedule in ("cosine", "constant"), "train.schedule",
             f"{t.schedule!r} is not 'cosine' or 'constant'")
    _require(int(t.warmup_steps) >= 0, "train.warmup_steps",
             f"must be >= 0, got {t.warmup_steps}")
    # steps.make_optimizer: the cosine schedule decays over the steps after the warm-up
    _require(t.schedule != "cosine" or max(int(t.steps), 2) > max(int(t.warmup_steps), 1),
             "train.warmup_steps",
             f"the cosine schedule needs steps after the warm-up, but train.steps={t.steps} "
             f"<= train.warmup_steps={t.warmup_steps}; lower train.warmup_steps (e.g. "
             f"--config.train.warmup_steps={max(int(t.steps) // 10, 1)}), raise train.steps, or "
             f"set train.schedule='constant'")
    _require(e.r2_kind in ("kernel", "linear"), "eval.r2_kind",
             f"{e.r2_kind!r} is not 'kernel' or 'linear'")
    _require(int(e.shd_reversal_cost) in (1, 2), "eval.shd_reversal_cost", "must be 1 or 2")
    _non_negative(config, "eval.graph_threshold")
    _at_least(config, "eval.batch_size", 1, " (samples encoded at once)")
    _at_least(config, "eval.kernel_components", 1, " (Nystroem components of the kernel R²)")


def _validate_stage_b(config) -> None:
    """``personax``'s stage B (crl_jax/methods/personax.py)."""
    b = config.stage_b
    _at_least(config, "stage_b.steps", 1)
    _positive(config, "stage_b.learning_rate")
    _require(0 <= int(b.warmup_steps) < int(b.steps), "stage_b.warmup_steps",
             f"must be in [0, stage_b.steps={b.steps}), got {b.warmup_steps}")
    _positive(config, "stage_b.grad_clip", allow_inf=True,
              also=" (each replica's gradient-norm clip; inf: no clipping)")
    layers = b.flow_layers
    layers = (layers,) if isinstance(layers, int) and not isinstance(layers, bool) else layers
    _require(isinstance(layers, (tuple, list)) and len(layers) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in layers),
        "stage_b.flow_layers", f"must be an integer >= 0 (0: a linear map per block) or a "
        f"tuple of them (candidates chosen per block on validation), got {b.flow_layers!r}")
    _at_least(config, "stage_b.flow_hidden", 1)
    _at_least(config, "stage_b.prior_hidden", 1)
    _at_least(config, "stage_b.flow_units", 0, " (0: no flow)")
    _positive(config, "stage_b.prior_init")
    lams = tuple(b.lambdas)
    _require(len(lams) >= 1 and all(math.isfinite(_number(v)) and _number(v) >= 0 for v in lams),
             "stage_b.lambdas", f"needs one or more finite lambdas >= 0, got {lams}")
    _non_negative(config, "stage_b.order_lambda")
    if "restarts" in b:     # runs recorded before the field existed had one
        _at_least(config, "stage_b.restarts", 1)
    _at_least(config, "stage_b.max_orders", 1)
    _non_negative(config, "stage_b.nll_margin")
    _at_least(config, "stage_b.penalty_rows", 2, " (S needs a spread over rows)")
    _non_negative(config, "stage_b.anchor")
    _non_negative(config, "stage_b.within_weight")
    _require(b.get("penalty", "l1") in ("l1", "log"), "stage_b.penalty",
             f"must be 'l1' (the dependence S) or 'log' (scale * log(1 + S / scale)), "
             f"got {b.get('penalty')!r}")
    _positive(config, "stage_b.penalty_scale")


def validate_against_method(config, method) -> None:
    """Checks that need the built method (``-1``, auto, keeps one pass for such methods)."""
    _require(int(config.train.get("microbatch_size", 0)) <= 0 or not method.trainable
             or method.per_sample_loss, "train.microbatch_size",
             f"method {method.name!r} compares samples across the batch (its loss is not a "
             f"per-sample mean), so splitting the batch would change its objective; set "
             f"it to 0 (or -1, auto, which keeps one pass for it)"
             + (" or use loss.sparsity = 'weights' (the L1 on |W|, a per-sample loss)"
                if getattr(method, "dependence_sparsity", False) else ""))


def validate_against_spec(config, spec) -> None:
    """Checks that need the generator spec (model sizes vs data)."""
    m = config.model
    n_mod = len(spec.modalities)
    if len(m.latent_dims):
        _require(len(m.latent_dims) == n_mod, "model.latent_dims",
                 f"has {len(m.latent_dims)} entries but preset {spec.name!r} has {n_mod} "
                 f"modalities; give one size per modality or () for the true sizes")
        _require(all(int(v) > 0 for v in m.latent_dims), "model.latent_dims",
                 "sizes must be positive")
    if m.encoder == "conv":
        _require(all(len(s) == 3 for s in spec.obs_shapes), "model.encoder",
                 f"'conv' needs image data, preset {spec.name!r} is vector data; use 'mlp'")
