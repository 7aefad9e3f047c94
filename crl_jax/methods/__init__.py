"""Methods selectable by ``config.model.name`` (ours, baselines, controls)."""
from __future__ import annotations

from crl_jax.methods.base import Method
from crl_jax.methods.vae_methods import VAEMethod, build_vae_method

_BUILDERS = {
    "personax": build_vae_method,
    "mmcrl": build_vae_method,
    "betavae": build_vae_method,
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


__all__ = ["METHODS", "Method", "VAEMethod", "available", "build_method", "register"]
