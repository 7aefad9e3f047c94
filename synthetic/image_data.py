"""MNIST / Fashion-MNIST image pools for the variant-MNIST benchmark (no downloads, ever).

Where the images come from, in this order:
  1. `data_dir` (the Spec field / function argument): DIR/mnist/*.gz and DIR/fashion-mnist/*.gz,
     the standard IDX gzip files (train-images-idx3-ubyte.gz, ...);
  2. the environment variable CRL_JAX_DATA_DIR, same layout;
  3. a tensorflow-datasets copy that is already prepared locally (TFDS_DATA_DIR or
     ~/tensorflow_datasets); read with `tfds.data_source` (array_record, no TensorFlow) or,
     for a TFRecord copy, `tfds.load` (needs TensorFlow). Never downloads.
Otherwise FileNotFoundError explains both ways to provide the files. Decoded arrays are cached
in-process.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path

import numpy as np

ENV_VAR = "CRL_JAX_DATA_DIR"
# dataset name -> (sub-folder of the data dir, tensorflow-datasets name)
DATASETS = {"mnist": ("mnist", "mnist"), "fashion_mnist": ("fashion-mnist", "fashion_mnist")}
_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Decode one IDX file (optionally gzip-compressed) into a numpy array.

    A damaged file (truncated, not gzip, failed CRC, a header that promises more data than
    the file holds) raises ValueError naming the file and the problem."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    fix = "replace it with an intact copy of the standard IDX file"
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path} is damaged: not a complete gzip file ({e}); {fix}.") from None
    except OSError as e:
        raise ValueError(f"{path} cannot be read ({e.strerror or e}); {fix}.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r}); {fix}.")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError(f"{path} is damaged: its IDX header is cut short; {fix}.")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    need = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset < need:
        raise ValueError(f"{path} is damaged: its header says shape {shape} ({need} bytes of "
                         f"data) but it holds {len(data) - offset}; {fix}.")
    arr = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


@functools.lru_cache(maxsize=16)
def _read_idx_cached(path: str) -> np.ndarray:
    arr = read_idx(path)
    arr.setflags(write=False)
    return arr


def _check(dataset: str, split: str, what: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is unknown; use one of {sorted(DATASETS)}.")
    if (split, what) not in _FILES:
        raise ValueError(f"split={split!r} is unknown; use 'train' or 'test'.")


def _tfds_data_dir() -> Path:
    return Path(os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")


def _missing_message(dataset: str, where: str) -> str:
    sub = DATASETS[dataset][0]
    return (f"{dataset} images not found ({where}). Either set the Spec field data_dir (or the CLI flag "
            f"--data_dir, or the environment variable {ENV_VAR}) to a folder holding {sub}/"
            f"{_FILES[('train', 'images')]} and the other standard IDX gzip files (layout DIR/mnist/*.gz, "
            f"DIR/fashion-mnist/*.gz), or, with network access, prepare them once with "
            f"`tfds build mnist fashion_mnist` (tensorflow-datasets, file_format array_record) so a local "
            f"copy exists under TFDS_DATA_DIR={_tfds_data_dir()}.")


def _from_dir(root: Path, dataset: str, split: str, what: str, field: str) -> np.ndarray:
    path = root / DATASETS[dataset][0] / _FILES[(split, what)]
    if not path.is_file():
        raise FileNotFoundError(_missing_message(dataset, f"{field}={str(root)!r} has no {path}"))
    return _read_idx_cached(str(path.resolve()))


@functools.lru_cache(maxsize=8)
def _from_tfds(dataset: str, split: str, what: str, tfds_dir: str) -> np.ndarray | None:
    """A prepared local tensorflow-datasets copy, or None if there is none. Never downloads."""
    name = DATASETS[dataset][1]
    if not any((Path(tfds_dir) / name).glob("*/dataset_info.json")):
        return None
    import tensorflow_datasets as tfds  # only now: importing it is slow

    key = "image" if what == "images" else "label"
    try:
        source = tfds.data_source(name, split=split, data_dir=tfds_dir, download=False)
        arr = np.stack([np.asarray(source[i][key]) for i in range(len(source))])
    except Exception:  # TFRecord copy (needs TensorFlow) or another format
        try:
            ds = tfds.load(name, split=split, data_dir=tfds_dir, download=False, batch_size=-1)
            arr = np.asarray(tfds.as_numpy(ds)[key])
        except Exception as e:  # noqa: BLE001 - report why the local copy is unusable
            raise FileNotFoundError(
                _missing_message(dataset, f"a tensorflow-datasets copy under {tfds_dir} could not be read: {e}")) from e
    if what == "images" and arr.ndim == 4:
        arr = arr[..., 0]
    arr = arr.astype(np.uint8 if what == "images" else np.int64)
    arr.setflags(write=False)
    return arr


def _load(dataset: str, split: str, what: str, data_dir: str | os.PathLike | None) -> np.ndarray:
    _check(dataset, split, what)
    if data_dir is not None:
        return _from_dir(Path(data_dir), dataset, split, what, "data_dir")
    env = os.environ.get(ENV_VAR)
    if env:
        return _from_dir(Path(env), dataset, split, what, ENV_VAR)
    arr = _from_tfds(dataset, split, what, str(_tfds_data_dir()))
    if arr is None:
        raise FileNotFoundError(_missing_message(
            dataset, f"no data_dir given, {ENV_VAR} unset, no prepared tensorflow-datasets copy in {_tfds_data_dir()}"))
    return arr


def load_images(dataset: str, split: str = "train", data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """(N, 28, 28) uint8 read-only images of `dataset` ('mnist' or 'fashion_mnist')."""
    return _load(dataset, split, "images", data_dir)


def load_labels(dataset: str, split: str = "train", data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """(N,) integer class labels of `dataset`."""
    return _load(dataset, split, "labels", data_dir)


def check_available(data_dir: str | os.PathLike | None = None) -> None:
    """Raise FileNotFoundError early if either image pool is missing."""
    for dataset in DATASETS:
        load_images(dataset, "train", data_dir)


def class_index(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class lookup tables of a labelled pool, for drawing an image of a given class.

    Returns int32 arrays: 'labels' (N,), 'order' (N,) pool indices sorted by class (stable),
    'offsets' (C,) and 'counts' (C,): the images of class c are order[offsets[c]:offsets[c] + counts[c]].
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or labels.min() < 0:
        raise ValueError(f"labels must be a non-empty 1-D array of class ids >= 0, got shape {labels.shape}.")
    counts = np.bincount(labels)
    return {"labels": labels.astype(np.int32), "order": np.argsort(labels, kind="stable").astype(np.int32),
            "offsets": (np.cumsum(counts) - counts).astype(np.int32), "counts": counts.astype(np.int32)}
