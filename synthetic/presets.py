"""Named presets: ``get_spec('numerical_case1', n_measurements=3, shared_dim=0)``.

| preset            | modalities (latent + eta -> obs per measurement)      | cross edges |
| ----------------- | ------------------------------------------------------ | ----------- |
| numerical_case1   | m1: 2+1 -> 7, m2: 2+1 -> 8            (x: 15 total)    | 1           |
| numerical_case2   | m1: 3+1 -> 10, m2: 3+1 -> 10          (x: 20 total)    | 2           |
| numerical_case3   | m1..m4: 2+1 -> 7, 7, 8, 8             (x: 30 total)    | 4           |
| variant_mnist_3m  | digit: 2 latents, 3 colours (28,28,3); fashion: 2 latents, 1 grey (28,28,1) | fixed |
| content_style     | content s: 5; view1, view2: 5 style each -> 10         | 5 (j -> j)  |

"x: 15 total" (Sun et al. App. D.1) is read as the sum over modalities of one measurement's
observed dimension, so each measurement of each modality has its own 7- or 8-dim vector.

Overrides: every Spec field by name (mechanism, noise, noise_scale, n_cross_edges, edge_prob,
mixing_depth, max_condition, adjacency, data_dir, image_size, name, ...), plus
  - n_measurements: int (all modalities) or tuple per modality (numerical, content_style;
    for variant_mnist_3m the number of digit colours, 1..6);
  - identity: variant_mnist_3m only, 'fixed' (default), 'per_measurement' or 'per_sample'
    (see Spec.identity and VARIANT_MNIST_IDENTITY);
  - shared_dim: int (numerical: default 0; content_style: the content dimension, default 5);
  - obs_dims: tuple per modality (numerical presets);
  - style_dim, obs_dim: ints (content_style; obs_dim defaults to shared_dim + style_dim).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from synthetic.spec import ModalitySpec, Spec

_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(Spec) if f.name != "modalities")


def _per_modality(value: Any, n: int, field: str) -> tuple[Any, ...]:
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"{field} has {len(value)} entries, expected one per modality ({n}).")
        return tuple(value)
    return (value,) * n


def _numerical(name: str, latent: int, obs: tuple[int, ...], n_cross: int) -> Callable[..., Spec]:
    def build(n_measurements: Any = 3, shared_dim: int = 0, obs_dims: Any = obs, **fields: Any) -> Spec:
        m = len(obs)
        ks = _per_modality(n_measurements, m, "n_measurements")
        ds = _per_modality(obs_dims, m, "obs_dims")
        mods = tuple(ModalitySpec(f"m{i + 1}", latent, 1, ks[i], ds[i]) for i in range(m))
        kwargs = dict(name=name, n_cross_edges=n_cross, mechanism="mlp", noise="gaussian")
        kwargs.update(fields)
        return Spec(modalities=mods, shared_dim=shared_dim, **kwargs)

    build.extra = ("n_measurements", "shared_dim", "obs_dims")  # type: ignore[attr-defined]
    return build


VARIANT_MNIST_ADJACENCY = ((0, 0, 0, 0), (1, 0, 0, 0), (1, 0, 0, 0), (0, 0, 1, 0))  # (z11, z12, z21, z22), row = child
# The theory's premise is that a modality's measurements share z_m and nothing else. 'fixed' is
# the only identity setting where that holds exactly: 'per_sample' shares the image (about
# ln 60000 nats beyond z_m), 'per_measurement' still shares its class (about ln 10 nats).
VARIANT_MNIST_IDENTITY = "fixed"


def _variant_mnist(n_measurements: int = 3, image_size: int = 28, **fields: Any) -> Spec:
    h = image_size
    mods = (ModalitySpec("digit", 2, 1, n_measurements, h * h * 3), ModalitySpec("fashion", 2, 1, 1, h * h))
    kwargs = dict(name="variant_mnist_3m", kind="variant_mnist", adjacency=VARIANT_MNIST_ADJACENCY,
                  mechanism="mlp", noise="gaussian", identity=VARIANT_MNIST_IDENTITY)
    kwargs.update(fields)
    return Spec(modalities=mods, image_size=image_size, **kwargs)


_variant_mnist.extra = ("n_measurements",)  # type: ignore[attr-defined]


def _content_style(n_measurements: Any = 1, shared_dim: int = 5, style_dim: int = 5, obs_dim: int | None = None,
                   **fields: Any) -> Spec:
    """von Kuegelgen et al. 2021, sec. 5.1 (independent-latents setting): content c = s ~ N(0, I),
    style of view 1 ~ N(0, I), style of view 2 = style of view 1 + N(0, I) on every coordinate
    (their defaults: change probability 1, perturbation std c_param = 1), as SCM edges
    view1_j -> view2_j with mechanism 'copy' and noise_scale 1. Each view has its own invertible
    3-layer MLP (the multimodal variant of their shared-mixing setup) whose layers are accepted
    below the 0.1% quantile of condition numbers (their cond_thresh_ratio=0.001), no eta,
    obs dim = 10."""
    if not isinstance(style_dim, (int, np.integer)) or style_dim < 1:
        raise ValueError(f"style_dim={style_dim!r} must be an integer >= 1.")
    obs_dim = shared_dim + style_dim if obs_dim is None else obs_dim
    ks = _per_modality(n_measurements, 2, "n_measurements")
    mods = (ModalitySpec("view1", style_dim, 0, ks[0], obs_dim), ModalitySpec("view2", style_dim, 0, ks[1], obs_dim))
    d = max(int(shared_dim), 0) + 2 * style_dim
    adj = np.zeros((d, d), dtype=np.int64)
    v1 = np.arange(style_dim) + max(int(shared_dim), 0)
    adj[v1 + style_dim, v1] = 1
    kwargs = dict(name="content_style", adjacency=adj, mechanism="copy", noise="gaussian", noise_scale=1.0,
                  cond_quantile=0.001)
    kwargs.update(fields)
    return Spec(modalities=mods, shared_dim=shared_dim, **kwargs)


_content_style.extra = ("n_measurements", "shared_dim", "style_dim", "obs_dim")  # type: ignore[attr-defined]

_BUILDERS: dict[str, Callable[..., Spec]] = {
    "numerical_case1": _numerical("numerical_case1", 2, (7, 8), 1),
    "numerical_case2": _numerical("numerical_case2", 3, (10, 10), 2),
    "numerical_case3": _numerical("numerical_case3", 2, (7, 7, 8, 8), 4),
    "variant_mnist_3m": _variant_mnist,
    "content_style": _content_style,
}
PRESETS: tuple[str, ...] = tuple(_BUILDERS)
# The vector presets of Sun et al. App. D.1 (they take n_measurements, shared_dim, obs_dims).
NUMERICAL_PRESETS: tuple[str, ...] = tuple(p for p in PRESETS if p.startswith("numerical_"))


def get_spec(preset_name: str, **overrides: Any) -> Spec:
    """The Spec of a named preset, with overrides (see module docstring)."""
    if preset_name not in _BUILDERS:
        raise ValueError(f"preset {preset_name!r} is unknown; valid presets: {', '.join(PRESETS)}.")
    build = _BUILDERS[preset_name]
    valid = set(build.extra) | set(_SPEC_FIELDS)  # type: ignore[attr-defined]
    if preset_name == "variant_mnist_3m":
        valid -= {"kind", "shared_dim"}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"get_spec({preset_name!r}): unknown override(s) {unknown}; valid: {sorted(valid)}.")
    return build(**overrides)
