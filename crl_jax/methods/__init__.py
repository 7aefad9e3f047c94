"""Methods selectable by ``config.model.name`` (ours, baselines, controls)."""
from __future__ import annotations

from crl_jax.methods.base import Method
from crl_jax.methods.contrastive import ContrastiveMethod, build_contrastive_method
from crl_jax.methods.controls import (LinearProjectionMethod, OracleMethod,
                                      build_linear_projection, build_oracle,
                                      build_random_encoder)
from crl_jax.methods.personax import PersonaXMethod, build_personax
from crl_jax.methods.vae_methods import VAEMethod, build_vae_method

_BUILDERS = {
    "personax": build_personax,
    "personax_vae": build_vae_method,
    "mmcrl": build_vae_method,
    "betavae": build_vae_method,
    "mcl": build_contrastive_method,
    "multiview": build_contrastive_method,
    "oracle": build_oracle,
    "random_encoder": build_random_encoder,
    "pca": build_linear_projection,
    "fastica": build_linear_projection,
}

METHODS = tuple(_BUILDERS)


def register(name: str, builder) -> None:
    """Add a method: ``builder(name, data_layout, config) -> Method``."""
    _BUILDERS[name] = builder


def build_method(name: str, data_layout, config) -> Method:
    if name not in _BUILDERS:
        raise ValueError(f"config.model.name: unknown method {name!r}; choose one of "
                         f"{sorted(_BUILDERS)}")
    return _BUILDERS[name](name, data_layout, config)


def available() -> tuple[str, ...]:
    return tuple(sorted(_BUILDERS))


__all__ = ["METHODS", "ContrastiveMethod", "LinearProjectionMethod", "Method", "OracleMethod",
           "PersonaXMethod", "VAEMethod", "available", "build_method", "register"]
