"""`Process`: the sampled parameters of a generative process, and sampling from it.

`make_process(key, spec)` draws everything (graph if random, mechanism weights, mixing
weights and lifts) from `key`; `Process.sample(key, n)` is a jitted pure function of its key.
`Process.save` / `load_process` round-trip the spec (JSON) and parameters (.npz) exactly.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from synthetic import graph as graph_lib
from synthetic import image_data, mechanisms, mixing, render
from synthetic.spec import Spec

SPEC_FILE = "generator_spec.json"
PARAMS_FILE = "generator_params.npz"
FORMAT = "crl_jax.synthetic/1"


class Sample(NamedTuple):
    """One batch. x[m]: (n, K_m, *obs_shape_m) float32; z: (n, D) float32 in order [s, z_1..z_M];
    eta[m]: (n, K_m, e_m) (vector data: float32 exogenous inputs of the mixing; variant MNIST:
    int32 index, in the MNIST / Fashion-MNIST train pool, of the image each measurement shows,
    see Spec.identity); adjacency: (D, D) int, row = child."""

    x: tuple[jax.Array, ...]
    z: jax.Array
    eta: tuple[jax.Array, ...]
    adjacency: np.ndarray


class Process:
    """A fully specified generative process. Construct with `make_process` or `load_process`."""

    def __init__(self, spec: Spec, params: dict[str, Any], adjacency: np.ndarray,
                 images: dict[str, dict[str, jax.Array]] | None = None):
        adjacency = np.asarray(adjacency).astype(np.int64)
        d = spec.latent_dim
        if adjacency.shape != (d, d):
            raise ValueError(f"adjacency has shape {adjacency.shape}, expected ({d}, {d}) for this spec.")
        if np.any(adjacency.astype(bool) & ~spec.allowed_edges_mask()):
            raise ValueError("adjacency has edges the spec's design rules forbid (see Spec.allowed_edges_mask()).")
        if spec.kind == "variant_mnist" and images is None:
            raise ValueError("images (the MNIST / Fashion-MNIST pools) are required for kind='variant_mnist'.")
        if spec.identity == "fixed" and "fixed_image" not in params:
            raise ValueError("params['fixed_image'] (the chosen image of each modality) is required for identity='fixed'.")
        self._spec = spec
        self._params = jax.tree_util.tree_map(jnp.asarray, params)
        self._adjacency = adjacency
        self._adjacency.setflags(write=False)
        self._order = graph_lib.topological_order(adjacency)
        self._images = images or {}

    # ------------------------------------------------------------------ accessors
    @property
    def spec(self) -> Spec:
        return self._spec

    @property
    def params(self) -> dict[str, Any]:
        """Pytree of arrays: {'scm': {...}, 'mixing': {<modality>: {'weights', ['lift']}}} (vector),
        or {'scm': {...}, ['fixed_image': {<modality>: pool index}]} (variant MNIST, identity='fixed')."""
        return self._params

    @property
    def adjacency(self) -> np.ndarray:
        """(D, D) int, row = child, column = parent, over [s, z_1..z_M]."""
        return self._adjacency

    @property
    def topological_order(self) -> np.ndarray:
        return self._order

    # ------------------------------------------------------------------ sampling
    def sample(self, key: jax.Array, n: int) -> Sample:
        """Draw n samples; a pure function of (process, key). Recompiles once per distinct n."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n={n!r} must be a positive integer.")
        x, z, eta = _sample(self._params, self._images, jnp.asarray(self._adjacency), jnp.asarray(self._order),
                            key, spec=self._spec, n=int(n))
        return Sample(x=x, z=z, eta=eta, adjacency=np.array(self._adjacency))

    # ------------------------------------------------------------------ mixing access (vector data)
    def _modality_index(self, m: int | str) -> int:
        names = self._spec.modality_names
        if isinstance(m, str):
            if m not in names:
                raise ValueError(f"modality {m!r} is unknown; use one of {names} or an index.")
            return names.index(m)
        if not 0 <= int(m) < len(names):
            raise ValueError(f"modality index {m} out of range [0, {len(names)}).")
        return int(m)

    def _mixing_params(self, m: int | str, k: int) -> tuple[int, jax.Array, jax.Array | None]:
        if self._spec.kind != "vector":
            raise ValueError("mixing functions exist only for kind='vector' specs (images are rendered).")
        i = self._modality_index(m)
        mod = self._spec.modalities[i]
        if not 0 <= int(k) < mod.n_measurements:
            raise ValueError(f"measurement k={k} out of range [0, {mod.n_measurements}) for modality {mod.name!r}.")
        p = self._params["mixing"][mod.name]
        lift = p["lift"][k] if "lift" in p else None
        return i, p["weights"][k], lift

    def mixing_input(self, m: int | str, z: jax.Array, eta_m: jax.Array) -> jax.Array:
        """Input of modality m's mixings: concat(s, z_m, eta_m^k), shape (n, K_m, shared + d_m + e_m)."""
        i = self._modality_index(m)
        return _mixing_input(self._spec, jnp.asarray(z), self._spec.modalities[i].name, jnp.asarray(eta_m))

    def forward(self, m: int | str, k: int, u: jax.Array) -> jax.Array:
        """g_m^k: (..., shared + d_m + e_m) in order [s, z_m, eta_m^k] -> (..., obs_dim_m)."""
        i, w, lift = self._mixing_params(m, k)
        chex.assert_axis_dimension(u, -1, self._spec.mixing_input_dims[i])
        return mixing.mix_one(w, lift, jnp.asarray(u, jnp.float32))

    def inverse(self, m: int | str, k: int, x: jax.Array) -> jax.Array:
        """Exact inverse of g_m^k: x (..., obs_dim_m) -> (..., shared_dim + d_m + e_m), the mixing
        input in order [s, z_m, eta_m^k] (s omitted when shared_dim == 0)."""
        i, w, lift = self._mixing_params(m, k)
        chex.assert_axis_dimension(x, -1, self._spec.modalities[i].obs_dim)
        return mixing.unmix_one(w, lift, jnp.asarray(x, jnp.float32))

    def condition_thresholds(self) -> dict[str, float]:
        """The condition-number threshold each modality's layers were accepted under."""
        return {m.name: self._spec.condition_threshold(n_in)
                for m, n_in in zip(self._spec.modalities, self._spec.mixing_input_dims)}

    def condition_numbers(self) -> dict[str, np.ndarray]:
        """{modality: (K_m, mixing_depth) condition numbers of the mixing layers}."""
        if self._spec.kind != "vector":
            return {}
        return {name: np.asarray(mixing.condition_number(p["weights"])) for name, p in self._params["mixing"].items()}

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write directory/generator_spec.json (spec + adjacency) and directory/generator_params.npz."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "spec": self._spec.to_dict(), "adjacency": self._adjacency.tolist()}
        (directory / SPEC_FILE).write_text(json.dumps(meta, indent=2))
        flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
                for path, v in jax.tree_util.tree_flatten_with_path(self._params)[0]}
        np.savez(directory / PARAMS_FILE, **flat)
        return directory

    def __repr__(self) -> str:
        return (f"Process(spec={self._spec.name!r}, kind={self._spec.kind!r}, D={self._spec.latent_dim}, "
                f"edges={int(self._adjacency.sum())})")


def _mixing_input(spec: Spec, z: jax.Array, name: str, eta: jax.Array) -> jax.Array:
    """concat(s, z_m, eta_m^k) for every measurement: (n, K, shared + d_m + e_m)."""
    n, k = eta.shape[:2]
    slices = spec.block_slices
    parts = [z[:, slices["shared"]]] if spec.shared_dim > 0 else []
    parts.append(z[:, slices[name]])
    parts = [jnp.broadcast_to(p[:, None, :], (n, k, p.shape[-1])) for p in parts]
    return jnp.concatenate(parts + [eta], axis=-1)


@functools.partial(jax.jit, static_argnames=("spec", "n"))
def _sample(params, images, adjacency, order, key, spec: Spec, n: int):
    """Jitted sampler, compiled once per (spec, n) and shared by all processes of that spec."""
    k_eps, k_eta = jax.random.split(key)
    eps = mechanisms.sample_noise(k_eps, (n, spec.latent_dim), spec.noise)
    z = mechanisms.forward(params["scm"], eps, adjacency, order, spec.mechanism, spec.noise_scale)
    if spec.kind == "variant_mnist":
        k_digit = spec.modalities[0].n_measurements
        idx = [_image_indices(spec.identity, images[m.name], params.get("fixed_image", {}).get(m.name), k, n,
                              m.n_measurements)
               for m, k in zip(spec.modalities, jax.random.split(k_eta))]
        # one shared image per sample renders once and is tinted K times; otherwise one image per measurement
        picked = [images[m.name]["images"][i if spec.identity == "per_measurement" else i[:, 0]]
                  for m, i in zip(spec.modalities, idx)]
        x_d, x_f = render.render(z, picked[0], picked[1], k_digit, spec.image_size)
        eta = tuple(i[:, :, None].astype(jnp.int32) for i in idx)
        return (x_d.astype(jnp.float32), x_f.astype(jnp.float32)), z.astype(jnp.float32), eta
    xs, etas = [], []
    for i, m in enumerate(spec.modalities):  # trace-time loop over modalities
        eta = jax.random.normal(jax.random.fold_in(k_eta, i), (n, m.n_measurements, m.eta_dim))
        u = _mixing_input(spec, z, m.name, eta)
        xs.append(mixing.mix(params["mixing"][m.name], u).astype(jnp.float32))
        etas.append(eta.astype(jnp.float32))
    return tuple(xs), z.astype(jnp.float32), tuple(etas)


def _image_indices(identity: str, pool: dict[str, jax.Array], fixed: jax.Array | None, key: jax.Array, n: int,
                   k: int) -> jax.Array:
    """(n, k) int pool indices of the image each of the k measurements of n samples shows."""
    size = pool["images"].shape[0]
    if identity == "per_sample":
        return jnp.broadcast_to(jax.random.randint(key, (n,), 0, size)[:, None], (n, k))
    if identity == "fixed":
        return jnp.broadcast_to(jnp.asarray(fixed, jnp.int32), (n, k))
    # per_measurement: the class of a uniformly drawn image (classes in proportion to the pool,
    # so each measurement's image is uniform over the pool), then k independent images of it
    k_class, k_pos = jax.random.split(key)
    c = pool["labels"][jax.random.randint(k_class, (n,), 0, size)]
    pos = jax.random.randint(k_pos, (n, k), 0, pool["counts"][c][:, None])
    return pool["order"][pool["offsets"][c][:, None] + pos]


POOLS = {"digit": "mnist", "fashion": "fashion_mnist"}  # modality -> image data set


def _load_pools(spec: Spec) -> dict[str, dict[str, jax.Array]]:
    """Per modality: 'images' (N, 28, 28) uint8, plus the class tables of image_data.class_index
    when identity='per_measurement'."""
    pools = {}
    for name, dataset in POOLS.items():
        images = image_data.load_images(dataset, "train", spec.data_dir)
        pool = {"images": images}
        if spec.identity == "per_measurement":
            labels = image_data.load_labels(dataset, "train", spec.data_dir)
            if labels.shape != images.shape[:1]:
                raise ValueError(f"{dataset}: {labels.shape[0]} labels for {images.shape[0]} images; the files disagree.")
            pool.update(image_data.class_index(labels))
        pools[name] = {k: jnp.asarray(v) for k, v in pool.items()}
    return pools


def make_process(key: jax.Array, spec: Spec) -> Process:
    """Sample every parameter of the process described by `spec` from `key` (deterministic)."""
    if not isinstance(spec, Spec):
        raise ValueError(f"spec must be a synthetic.Spec (use synthetic.get_spec(name)), got {type(spec).__name__}.")
    images = _load_pools(spec) if spec.kind == "variant_mnist" else None  # fail early if files are missing
    k_graph, k_scm, k_mix = jax.random.split(key, 3)
    if spec.adjacency is not None:
        adjacency = np.asarray(spec.adjacency, dtype=np.int64)
    else:
        adjacency = graph_lib.sample_graph(k_graph, spec)
    order = graph_lib.topological_order(adjacency)
    params: dict[str, Any] = {"scm": mechanisms.make_scm_params(
        k_scm, adjacency, order, spec.mechanism, spec.noise, spec.noise_scale)}
    if spec.kind == "vector":
        params["mixing"] = {
            m.name: mixing.make_mixing_params(
                jax.random.fold_in(k_mix, i), m.n_measurements, n_in, m.obs_dim, spec.mixing_depth,
                spec.condition_threshold(n_in), mixing.n_candidates(spec.cond_quantile))
            for i, (m, n_in) in enumerate(zip(spec.modalities, spec.mixing_input_dims))}
    elif spec.identity == "fixed":  # images have no mixing weights: k_mix picks the fixed images
        params["fixed_image"] = {
            m.name: jax.random.randint(jax.random.fold_in(k_mix, i), (), 0, images[m.name]["images"].shape[0])
            for i, m in enumerate(spec.modalities)}
    return Process(spec, params, adjacency, images)


def load_process(directory: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Process:
    """Rebuild a saved process; `data_dir` overrides the saved Spec.data_dir (image presets)."""
    directory = Path(directory)
    spec_path, params_path = directory / SPEC_FILE, directory / PARAMS_FILE
    for p in (spec_path, params_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found; pass the directory given to Process.save().")
    meta = json.loads(spec_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{spec_path}: format {meta.get('format')!r} is not {FORMAT!r}.")
    spec = Spec.from_dict(meta["spec"])
    if data_dir is not None:
        spec = spec.replace(data_dir=str(data_dir))
    params: dict[str, Any] = {}
    with np.load(params_path) as npz:
        for name in npz.files:
            node = params
            *parents, leaf = name.split("/")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = npz[name]
    images = _load_pools(spec) if spec.kind == "variant_mnist" else None
    return Process(spec, params, np.asarray(meta["adjacency"]), images)
