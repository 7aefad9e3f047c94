"""The grid of a sweep: settings (field -> value) and the run config of each.

A sweep config (``configs/sweeps/*.py``) is a ConfigDict with

- ``name``: the sweep's name;
- ``base``: a full training config (``configs/default.py`` fields);
- ``sweep.product``: a list of ``(field, values)``; every combination is run;
- ``sweep.zip``: a list of ``(field, values)`` of equal length, varied together (one axis
  of the product).

``field`` is a dotted path into ``base`` (``"model.name"``, ``"data.n_measurements"``), the
same path as a ``--config.field=value`` flag of ``crl_jax.main``.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from typing import Any

import ml_collections


@dataclasses.dataclass(frozen=True)
class Entry:
    """One run of the sweep: its directory name, its setting and its full config."""

    index: int
    name: str
    setting: dict
    config: Any


def _pairs(items, kind: str) -> list[tuple[str, tuple]]:
    out = []
    for item in items or ():
        if len(item) != 2 or not isinstance(item[0], str):
            raise ValueError(f"sweep.{kind}: each item must be (field, values), got {item!r}")
        field, values = item
        values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        if not values:
            raise ValueError(f"sweep.{kind}: field {field!r} has no values")
        out.append((field, values))
    return out


def expand(sweep) -> list[dict[str, Any]]:
    """All settings of the grid, in order (the last product field varies fastest)."""
    product = _pairs(sweep.get("product", ()), "product")
    zipped = _pairs(sweep.get("zip", ()), "zip")
    fields = [f for f, _ in product] + [f for f, _ in zipped]
    dupes = sorted({f for f in fields if fields.count(f) > 1})
    if dupes:
        raise ValueError(f"sweep: field(s) {dupes} appear more than once in product/zip")
    axes = [[((field, v),) for v in values] for field, values in product]
    if zipped:
        lengths = {f: len(v) for f, v in zipped}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"sweep.zip: all fields need the same number of values, got {lengths}")
        n = next(iter(lengths.values()))
        axes.append([tuple((f, values[i]) for f, values in zipped) for i in range(n)])
    return [dict(itertools.chain.from_iterable(combo)) for combo in itertools.product(*axes)]


def _fmt(value) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_fmt(v) for v in value) or "none"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def entry_name(setting: dict) -> str:
    """Directory name of a setting: ``field-value`` joined by ``__`` (``base`` if empty)."""
    if not setting:
        return "base"
    name = "__".join(f"{field}-{_fmt(v)}" for field, v in setting.items())
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name)


def apply_setting(base, setting: dict):
    """A copy of ``base`` with each dotted ``field`` set; unknown fields raise ValueError."""
    config = copy.deepcopy(base)
    for field, value in setting.items():
        *path, last = field.split(".")
        node = config
        for i, part in enumerate(path):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise ValueError(f"sweep field {field!r}: {'.'.join(path[:i + 1])!r} is not a "
                                 f"section of the base config")
            node = node[part]
        if not isinstance(node, ml_collections.ConfigDict) or last not in node:
            raise ValueError(f"sweep field {field!r} is not a field of the base config; add it "
                             f"to the sweep file's base config or fix the name")
        try:
            node[last] = value
        except (TypeError, ValueError) as err:
            raise ValueError(f"sweep field {field!r}: cannot set {value!r} ({err})") from err
    return config


def make_entries(sweep_config) -> list[Entry]:
    """The entries of a sweep config (see the module docstring)."""
    for key in ("name", "base", "sweep"):
        if key not in sweep_config:
            raise ValueError(f"sweep config has no {key!r}; a sweep file returns a ConfigDict "
                             f"with name, base (training config) and sweep (product/zip)")
    settings = expand(sweep_config.sweep)
    entries = [Entry(i, entry_name(s), s, apply_setting(sweep_config.base, s))
               for i, s in enumerate(settings)]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep: two settings map to the same directory name: {names}")
    return entries
