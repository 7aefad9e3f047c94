"""Specification of a synthetic multimodal, multi-measurement generative process.

A `Spec` is a frozen, hashable, JSON-serialisable description; `make_process` turns it into
sampled parameters. All checks happen here, before any sampling, and each raises one
`ValueError` that names the field and the fix.

Latent order everywhere: ``[s, z_1, ..., z_M]`` (shared block first, then the modality blocks
in modality order). Adjacency matrices are ``(D, D)`` with ``row = child, column = parent``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

import numpy as np

from synthetic import graph as graph_lib

KINDS = ("vector", "variant_mnist")
MECHANISMS = ("mlp", "additive", "copy")
NOISES = ("gaussian", "laplace", "uniform")
IMAGE_SIZES = (28, 14)
# Variant MNIST: how the digit / fashion images of a sample's measurements are chosen.
IDENTITIES = ("per_sample", "per_measurement", "fixed")
# Variant MNIST: the digit modality is rendered in up to this many colours (measurements).
MAX_DIGIT_COLOURS = 6


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
    """One modality: `latent_dim` causal latents, `n_measurements` measurements, each with
    `eta_dim` measurement-specific exogenous variables and an `obs_dim`-dimensional
    observation (for images `obs_dim` = H * W * C of one measurement)."""

    name: str
    latent_dim: int
    eta_dim: int
    n_measurements: int
    obs_dim: int


@dataclasses.dataclass(frozen=True)
class Spec:
    """Full description of a generative process (see synthetic/README.md).

    Fields:
      name: free label (preset name by default).
      modalities: tuple of `ModalitySpec`, in causal modality order.
      kind: 'vector' (invertible MLP mixing) or 'variant_mnist' (rendered images).
      shared_dim: dimension of the latent `s` shared by all modalities (0 = none).
      adjacency: explicit (D, D) 0/1 graph, row = child; None = random sparse DAG.
      n_cross_edges: number of cross-modal edges of the random graph
        (None -> M - 1, i.e. exactly one edge into each later modality).
      edge_prob: probability of each allowed within-modality edge and each s -> z edge of
        the random graph.
      mechanism: 'mlp' (random 1-hidden-layer tanh MLP of all parents), 'additive' (sum of
        random 1-D tanh networks of each parent) or 'copy' (child = sum of parents).
        'mlp' and 'additive' outputs are standardised (calibrated once from the key) so every
        node has a signal of unit variance before noise.
      noise: 'gaussian', 'laplace' or 'uniform' (all standardised to unit variance).
      noise_scale: standard deviation of the additive noise of non-root nodes (roots are
        pure unit-variance noise).
      mixing_depth: number of square linear layers of each invertible MLP (leaky-ReLU 0.2
        between layers).
      cond_quantile: default rejection threshold on each layer's condition number, as a
        quantile of the condition numbers of 25,000 reference matrices of that size drawn with
        a fixed key (Zimmermann et al. 2021 use 0.25; von Kuegelgen et al. 2021 use 0.001).
      max_condition: explicit threshold; overrides cond_quantile when not None.
      image_size: 28 or 14 (variant_mnist only).
      identity: how each sample's digit and fashion images are chosen (variant_mnist only,
        required there; None for vector specs): 'per_sample' (one random image per sample,
        shared by all its measurements), 'per_measurement' (one class per sample, then an
        independent random image of that class for each measurement) or 'fixed' (one image,
        chosen from the process key, for every sample). Only with 'fixed' do the measurements
        share z_m and nothing else; 'per_measurement' still shares the class.
      data_dir: folder holding mnist/ and fashion-mnist/ IDX files (variant_mnist only;
        None -> env CRL_JAX_DATA_DIR, then a local tensorflow-datasets copy).
    """

    name: str
    modalities: tuple[ModalitySpec, ...]
    kind: str = "vector"
    shared_dim: int = 0
    adjacency: tuple[tuple[int, ...], ...] | None = None
    n_cross_edges: int | None = None
    edge_prob: float = 0.5
    mechanism: str = "mlp"
    noise: str = "gaussian"
    noise_scale: float = 0.5
    mixing_depth: int = 3
    cond_quantile: float = 0.25
    max_condition: float | None = None
    image_size: int = 28
    identity: str | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        mods = self.modalities
        if isinstance(mods, ModalitySpec) or not isinstance(mods, Sequence):
            raise ValueError(
                "Spec.modalities must be a sequence of ModalitySpec; wrap a single one in a tuple.")
        mods = tuple(ModalitySpec(**m) if isinstance(m, Mapping) else m for m in mods)
        object.__setattr__(self, "modalities", mods)
        if self.adjacency is not None:
            try:
                adj = np.asarray(self.adjacency)
            except ValueError as e:  # ragged nested lists
                raise ValueError(
                    f"Spec.adjacency must be a square (D, D) 0/1 matrix, got a ragged sequence ({e}).")
            if adj.ndim == 2 and adj.size and not np.all(np.isin(adj, (0, 1))):
                raise ValueError("Spec.adjacency must contain only 0 and 1 (row = child, column = parent).")
            object.__setattr__(self, "adjacency", tuple(tuple(int(v) for v in row) for row in adj)
                               if adj.ndim == 2 else adj.tolist())
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", str(self.data_dir))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise one ValueError naming the offending field and the fix."""
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("Spec.name must be a non-empty string.")
        if self.kind not in KINDS:
            raise ValueError(f"Spec.kind={self.kind!r} is unknown; use one of {KINDS}.")
        if len(self.modalities) == 0:
            raise ValueError("Spec.modalities is empty; give at least one ModalitySpec.")
        names = [m.name for m in self.modalities]
        for i, m in enumerate(self.modalities):
            if not isinstance(m, ModalitySpec):
                raise ValueError(f"Spec.modalities[{i}] is {type(m).__name__}, expected ModalitySpec.")
            if not isinstance(m.name, str) or not m.name.isidentifier() or m.name == "shared":
                raise ValueError(
                    f"Spec.modalities[{i}].name={m.name!r} must be a Python identifier other than 'shared'.")
            for field, lo in (("latent_dim", 1), ("eta_dim", 0), ("n_measurements", 1), ("obs_dim", 1)):
                v = getattr(m, field)
                if not _is_int(v) or v < lo:
                    raise ValueError(
                        f"Spec.modalities[{i}] ({m.name!r}).{field}={v!r} must be an integer >= {lo}.")
        if len(set(names)) != len(names):
            raise ValueError(f"Spec.modalities names must be unique, got {names}.")
        if not _is_int(self.shared_dim) or self.shared_dim < 0:
            raise ValueError(f"Spec.shared_dim={self.shared_dim!r} must be an integer >= 0.")
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"Spec.mechanism={self.mechanism!r} is unknown; use one of {MECHANISMS}.")
        if self.noise not in NOISES:
            raise ValueError(f"Spec.noise={self.noise!r} is unknown; use one of {NOISES}.")
        if not _is_real(self.noise_scale) or not self.noise_scale > 0:
            raise ValueError(f"Spec.noise_scale={self.noise_scale!r} must be a finite number > 0.")
        if not _is_real(self.edge_prob) or not 0.0 <= self.edge_prob <= 1.0:
            raise ValueError(f"Spec.edge_prob={self.edge_prob!r} must be in [0, 1].")
        if not _is_int(self.mixing_depth) or self.mixing_depth < 1:
            raise ValueError(f"Spec.mixing_depth={self.mixing_depth!r} must be an integer >= 1.")
        if not _is_real(self.cond_quantile) or not 0.0005 <= self.cond_quantile <= 1.0:
            raise ValueError(f"Spec.cond_quantile={self.cond_quantile!r} must be in [0.0005, 1].")
        if self.max_condition is not None and (not _is_real(self.max_condition) or self.max_condition <= 1.0):
            raise ValueError(
                f"Spec.max_condition={self.max_condition!r} must be a number > 1 (or None for the default).")
        self._validate_kind()
        self._validate_graph()

    def _validate_kind(self) -> None:
        if self.kind == "vector":
            if self.identity is not None:
                raise ValueError(
                    f"Spec.identity={self.identity!r} applies only to kind='variant_mnist' (how the images are "
                    f"chosen); leave it None for kind='vector'.")
            for i, m in enumerate(self.modalities):
                n_in = self.shared_dim + m.latent_dim + m.eta_dim
                if m.obs_dim < n_in:
                    raise ValueError(
                        f"Spec.modalities[{i}] ({m.name!r}).obs_dim={m.obs_dim} is smaller than the mixing "
                        f"input shared_dim + latent_dim + eta_dim = {n_in}; the mixing would not be "
                        f"injective. Raise obs_dim to >= {n_in} or lower shared_dim/eta_dim.")
            return
        # variant_mnist
        if self.image_size not in IMAGE_SIZES:
            raise ValueError(f"Spec.image_size={self.image_size!r} must be one of {IMAGE_SIZES}.")
        if self.identity not in IDENTITIES:
            raise ValueError(
                f"Spec.identity={self.identity!r} is not valid for kind='variant_mnist'; use one of {IDENTITIES}.")
        if self.shared_dim != 0:
            raise ValueError("Spec.shared_dim must be 0 for kind='variant_mnist' (the images have no shared latent).")
        if self.mechanism == "copy":
            raise ValueError("Spec.mechanism='copy' is not meaningful for kind='variant_mnist'; use 'mlp' or 'additive'.")
        h = self.image_size
        expect = (("digit", 2, 1, h * h * 3), ("fashion", 2, 1, h * h * 1))
        got = tuple((m.name, m.latent_dim, m.eta_dim, m.obs_dim) for m in self.modalities)
        if got != expect:
            raise ValueError(
                f"Spec.modalities for kind='variant_mnist' must be (name, latent_dim, eta_dim, obs_dim) = "
                f"{expect} for image_size={h}, got {got}; build it with get_spec('variant_mnist_3m', ...).")
        k_digit, k_fashion = (m.n_measurements for m in self.modalities)
        if not 1 <= k_digit <= MAX_DIGIT_COLOURS:
            raise ValueError(
                f"Spec.modalities[0].n_measurements={k_digit} (digit colours) must be in 1..{MAX_DIGIT_COLOURS}.")
        if k_fashion != 1:
            raise ValueError(f"Spec.modalities[1].n_measurements={k_fashion} (fashion) must be 1.")
        if self.adjacency is None:
            raise ValueError("Spec.adjacency is required for kind='variant_mnist'; use get_spec('variant_mnist_3m').")

    def _validate_graph(self) -> None:
        d, m_count = self.latent_dim, len(self.modalities)
        allowed = self.allowed_edges_mask()
        if self.adjacency is not None:
            adj = np.asarray(self.adjacency)
            if adj.shape != (d, d):
                raise ValueError(
                    f"Spec.adjacency has shape {adj.shape}, expected ({d}, {d}) = (latent_dim, latent_dim) over "
                    f"[s, z_1..z_M]; give one row (child) and one column (parent) per latent.")
            bad = np.argwhere((adj != 0) & ~allowed)
            if bad.size:
                child, parent = bad[0]
                raise ValueError(
                    f"Spec.adjacency has a forbidden edge {parent} -> {child} (row {child}, column {parent}): "
                    f"edges may only go s -> modality latents, within a modality, or from an earlier to a "
                    f"later modality; see Spec.allowed_edges_mask(). Remove that entry.")
            if not graph_lib.is_acyclic(adj):
                raise ValueError("Spec.adjacency contains a directed cycle; give a DAG (row = child, column = parent).")
            if self.n_cross_edges is not None:
                n_cross = int((adj * self.cross_edges_mask()).sum())
                if n_cross != self.n_cross_edges:
                    raise ValueError(
                        f"Spec.n_cross_edges={self.n_cross_edges} disagrees with the {n_cross} cross-modal edges "
                        f"of Spec.adjacency; set n_cross_edges=None when adjacency is explicit.")
            return
        n_cross = self.resolved_n_cross_edges
        n_possible = int(self.cross_edges_mask().sum())
        if not _is_int(n_cross) or not (m_count - 1) <= n_cross <= n_possible:
            raise ValueError(
                f"Spec.n_cross_edges={self.n_cross_edges!r} must be an integer in [{m_count - 1}, {n_possible}]: "
                f"at least one edge into each later modality, at most all earlier->later pairs.")

    # ------------------------------------------------------------------ derived sizes
    @property
    def latent_dim(self) -> int:
        """D = shared_dim + sum of the modality latent dims."""
        return int(self.shared_dim + sum(m.latent_dim for m in self.modalities))

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def block_slices(self) -> dict[str, slice]:
        """{'shared': slice, <modality name>: slice} over [s, z_1..z_M] ('shared' only if shared_dim > 0)."""
        out: dict[str, slice] = {}
        if self.shared_dim > 0:
            out["shared"] = slice(0, self.shared_dim)
        start = self.shared_dim
        for m in self.modalities:
            out[m.name] = slice(start, start + m.latent_dim)
            start += m.latent_dim
        return out

    @property
    def obs_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-measurement observation shape per modality: (obs_dim,) or (H, W, C)."""
        if self.kind == "variant_mnist":
            h = self.image_size
            return ((h, h, 3), (h, h, 1))
        return tuple((m.obs_dim,) for m in self.modalities)

    @property
    def n_measurements(self) -> tuple[int, ...]:
        return tuple(m.n_measurements for m in self.modalities)

    @property
    def mixing_input_dims(self) -> tuple[int, ...]:
        """Input size of each modality's mixing: shared_dim + latent_dim + eta_dim (order [s, z_m, eta])."""
        return tuple(self.shared_dim + m.latent_dim + m.eta_dim for m in self.modalities)

    def condition_threshold(self, n: int) -> float:
        """Condition-number threshold for an n x n mixing layer."""
        from synthetic import mixing  # local: mixing imports jax

        if self.max_condition is not None:
            return float(self.max_condition)
        return mixing.reference_threshold(int(n), float(self.cond_quantile))

    @property
    def resolved_n_cross_edges(self) -> int:
        """Number of cross-modal edges of the graph (explicit or random)."""
        if self.adjacency is not None:
            return int((np.asarray(self.adjacency) * self.cross_edges_mask()).sum())
        return len(self.modalities) - 1 if self.n_cross_edges is None else self.n_cross_edges

    def block_ids(self) -> np.ndarray:
        """(D,) int: -1 for shared latents, m for latents of modality m."""
        ids = [-1] * self.shared_dim
        for i, m in enumerate(self.modalities):
            ids += [i] * m.latent_dim
        return np.asarray(ids, dtype=np.int64)

    def allowed_edges_mask(self) -> np.ndarray:
        """(D, D) bool, row = child: edges allowed by the design rules.

        s -> any modality latent; within a modality (any ordered pair; acyclicity is a separate
        constraint); modality a -> modality b only if a < b. Shared latents have no parents.
        """
        b = self.block_ids()
        child, parent = b[:, None], b[None, :]
        within = (child == parent) & (child >= 0) & ~np.eye(len(b), dtype=bool)
        from_shared = (parent == -1) & (child >= 0)
        cross = (parent >= 0) & (parent < child)
        return within | from_shared | cross

    def cross_edges_mask(self) -> np.ndarray:
        """(D, D) bool, row = child: allowed cross-modal (earlier -> later modality) edges."""
        b = self.block_ids()
        return (b[None, :] >= 0) & (b[None, :] < b[:, None])

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["modalities"] = [dataclasses.asdict(m) for m in self.modalities]
        d["adjacency"] = None if self.adjacency is None else [list(r) for r in self.adjacency]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Spec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"Spec: unknown field(s) {sorted(unknown)}; valid fields are {sorted(known)}.")
        d = dict(d)
        d["modalities"] = tuple(ModalitySpec(**m) for m in d["modalities"])
        if d.get("kind") == "variant_mnist" and "identity" not in d:
            d["identity"] = "per_sample"  # specs written before the field existed drew one image per sample
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "Spec":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "Spec":
        return dataclasses.replace(self, **changes)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)
