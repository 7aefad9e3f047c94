"""tensorflow-datasets builder for frozen copies of the synthetic presets (array_record, no TensorFlow).

    from synthetic import tfds_builder
    builder = tfds_builder.prepare("numerical_case1", "/data/tfds", seed=0, n_train=10000)
    ds = builder.as_data_source(split="train")           # or, after this module is imported:
    ds = tfds.data_source("crl_synthetic/numerical_case1", data_dir="/data/tfds")
    ds[i]["x_m1"], ds[i]["z"], ds[i]["index"]

One builder, `CrlSynthetic` (registered as 'crl_synthetic'), with one `SyntheticConfig` per preset
(config name = preset name by default; give another `name` for another seed/size/overrides).
`_split_generators` calls the generator directly (nothing is downloaded). Examples are written in
generation order (shuffling disabled), so element i of a split is sample i of `split_arrays`.

Randomness: process parameters from ``fold_in(PRNGKey(seed), 0)``; split s (train 0,
validation 1, test 2) from ``fold_in(fold_in(PRNGKey(seed), 1), s)``, sampled in chunks of
`chunk` with ``fold_in(split_key, chunk_index)`` (the last chunk truncated).

Features per example: index (int64), z (D,) float32, x_<modality> (K_m, *obs_shape) float32,
eta_<modality> (K_m, e_m) (omitted when e_m = 0). The spec (JSON), adjacency and seed are in the
dataset metadata. Found with tensorflow-datasets 4.9.10 in an environment without TensorFlow:
writing array_record and reading with `tfds.data_source` both work without TensorFlow; the
default TFRecord format would need TensorFlow, so always pass file_format='array_record'
(`prepare` does).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, Iterator

import jax
import numpy as np
import tensorflow_datasets as tfds

from synthetic.presets import PRESETS, get_spec
from synthetic.process import Process, make_process
from synthetic.spec import Spec

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
    """preset + overrides (a JSON object string, e.g. '{"shared_dim": 2}') + seed + split sizes."""

    preset: str = "numerical_case1"
    overrides_json: str = "{}"
    seed: int = 0
    n_train: int = 10000
    n_validation: int = 2000
    n_test: int = 2000
    chunk: int = 4096

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"SyntheticConfig.preset={self.preset!r} is unknown; valid presets: {', '.join(PRESETS)}.")
        for field in ("n_train", "n_validation", "n_test"):
            if getattr(self, field) < 0:
                raise ValueError(f"SyntheticConfig.{field}={getattr(self, field)} must be >= 0.")
        if self.chunk < 1:
            raise ValueError(f"SyntheticConfig.chunk={self.chunk} must be >= 1.")
        if not isinstance(json.loads(self.overrides_json), dict):
            raise ValueError("SyntheticConfig.overrides_json must encode a JSON object of get_spec overrides.")

    @property
    def overrides(self) -> dict[str, Any]:
        return json.loads(self.overrides_json)

    def spec(self) -> Spec:
        return get_spec(self.preset, **self.overrides)

    def split_size(self, split: str) -> int:
        return {"train": self.n_train, "validation": self.n_validation, "test": self.n_test}[split]


@functools.lru_cache(maxsize=8)
def _process(spec: Spec, seed: int) -> Process:
    return make_process(jax.random.fold_in(jax.random.PRNGKey(seed), 0), spec)


def split_arrays(config: SyntheticConfig, split: str, image_dir: str | None = None, start_chunk: int = 0,
                 stop_chunk: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The examples of one split as dicts of arrays, chunk by chunk (what the builder writes).

    image_dir: where the MNIST / Fashion-MNIST files are (variant_mnist_3m; None -> the usual
    Spec.data_dir / CRL_JAX_DATA_DIR / tensorflow-datasets lookup). It does not change the data.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; use one of {SPLITS}.")
    spec = config.spec()
    if image_dir is not None:
        spec = spec.replace(data_dir=str(image_dir))
    process = _process(spec, config.seed)
    n = config.split_size(split)
    split_key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), SPLITS.index(split))
    n_chunks = -(-n // config.chunk)
    for c in range(start_chunk, n_chunks if stop_chunk is None else min(stop_chunk, n_chunks)):
        size = min(config.chunk, n - c * config.chunk)
        s = process.sample(jax.random.fold_in(split_key, c), config.chunk)
        out = {"index": np.arange(c * config.chunk, c * config.chunk + size, dtype=np.int64),
               "z": np.asarray(s.z[:size])}
        for m, x, eta in zip(spec.modalities, s.x, s.eta):
            out[f"x_{m.name}"] = np.asarray(x[:size])
            if m.eta_dim > 0:
                out[f"eta_{m.name}"] = np.asarray(eta[:size])
        yield out


class CrlSynthetic(tfds.core.GeneratorBasedBuilder):
    """Frozen samples of a crl_jax synthetic generative process (see synthetic/README.md)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    BUILDER_CONFIGS = [SyntheticConfig(name=p, preset=p, description=f"synthetic preset {p}") for p in PRESETS]

    def __init__(self, *, image_dir: str | None = None, **kwargs: Any):
        self._image_dir = None if image_dir is None else str(image_dir)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        config: SyntheticConfig = self.builder_config
        spec = config.spec()
        features: dict[str, Any] = {
            "index": tfds.features.Scalar(dtype=np.int64),
            "z": tfds.features.Tensor(shape=(spec.latent_dim,), dtype=np.float32),
        }
        for m, shape in zip(spec.modalities, spec.obs_shapes):
            features[f"x_{m.name}"] = tfds.features.Tensor(shape=(m.n_measurements, *shape), dtype=np.float32)
            if m.eta_dim > 0:
                dtype = np.int32 if spec.kind == "variant_mnist" else np.float32
                features[f"eta_{m.name}"] = tfds.features.Tensor(shape=(m.n_measurements, m.eta_dim), dtype=dtype)
        # explicit graphs (variant_mnist_3m, content_style) need no process, hence no images, here
        adjacency = (np.asarray(spec.adjacency) if spec.adjacency is not None
                     else _process(spec, config.seed).adjacency)
        metadata = tfds.core.MetadataDict(
            spec_json=spec.to_json(), adjacency=adjacency.tolist(), seed=config.seed, preset=config.preset,
            latent_order="[s, z_1..z_M]", block_slices={k: [v.start, v.stop] for k, v in spec.block_slices.items()})
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__, features=tfds.features.FeaturesDict(features),
            disable_shuffling=True, metadata=metadata, homepage="https://github.com/ (crl_jax synthetic/)")

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        del dl_manager  # nothing to download: the generator is the source
        config: SyntheticConfig = self.builder_config
        return {split: self._generate_examples(split) for split in SPLITS if config.split_size(split) > 0}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for chunk in split_arrays(self.builder_config, split, self._image_dir):
            for j in range(chunk["index"].shape[0]):
                yield int(chunk["index"][j]), {k: v[j] for k, v in chunk.items()}


def make_builder(preset: str, tfds_dir: str, *, seed: int = 0, n_train: int = 10000, n_validation: int = 2000,
                 n_test: int = 2000, chunk: int = 4096, name: str | None = None, **overrides: Any) -> CrlSynthetic:
    """A builder for `preset` writing under `tfds_dir` (the tensorflow-datasets data_dir).

    overrides: get_spec overrides (JSON-serialisable); an override `data_dir` names the folder of
    the MNIST / Fashion-MNIST files for variant_mnist_3m and is not part of the config (it does
    not change the data). `name` defaults to the preset name when seed, sizes and overrides are
    the defaults, else to a name that encodes them, so differently configured copies never share
    a directory.
    """
    image_dir = overrides.pop("data_dir", None)
    get_spec(preset, **overrides)  # validate now, with the usual error messages
    default = (seed, n_train, n_validation, n_test, chunk, overrides) == (0, 10000, 2000, 2000, 4096, {})
    if default and name in (None, preset):
        config: SyntheticConfig | str = preset  # the registered config (tfds requires that very object)
    else:
        if name is None:
            digest = hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
            name = f"{preset}_s{seed}_n{n_train}-{n_validation}-{n_test}_c{chunk}" + (f"_{digest}" if overrides else "")
        config = SyntheticConfig(name=name, preset=preset, overrides_json=json.dumps(overrides, sort_keys=True),
                                 seed=seed, n_train=n_train, n_validation=n_validation, n_test=n_test, chunk=chunk,
                                 description=f"synthetic preset {preset}")
    return CrlSynthetic(config=config, data_dir=tfds_dir, file_format="array_record", image_dir=image_dir)


def prepare(preset: str, tfds_dir: str, **kwargs: Any) -> CrlSynthetic:
    """Build (once) the array_record copy under `tfds_dir` and return the builder; reuses an
    existing copy. kwargs as for `make_builder`."""
    builder = make_builder(preset, tfds_dir, **kwargs)
    builder.download_and_prepare(file_format="array_record",
                                 download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder
