"""Checks that make a shared dataset safe to read: shards are untrusted input.

An HDF5 file can make its reader open other files: a dataset can keep its bytes in an external
raw file (``/etc/passwd`` as a "blurred" image), a link can point into another file, a virtual
dataset can map other files' data. A manifest can name shard files outside its folder. None of
these is ever written by ``csb-generate``, so the reader refuses them all before it reads a
value, and checks that every dataset has the dtype, rank and shape of docs/format.md, that each
shard file is the one the manifest's SHA-256 names, and that each sample's values are in range.
Every refusal is a :class:`DatasetFormatError` that names the file and
the rule.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

import h5py
import numpy as np

__all__ = [
    "DATASET_LAYOUT",
    "DatasetFormatError",
    "check_sample",
    "check_shard_file",
    "inside_folder",
    "sha256_file",
    "shard_sha256",
    "shard_sha256s",
]

_FLOATS = ("float32",)
_IMAGE_INTEGERS = ("uint8", "uint16")
#: name -> (allowed dtypes, rank): the per-sample datasets of docs/format.md.
DATASET_LAYOUT: dict[str, tuple[tuple[str, ...], int]] = {
    "sharp": (_IMAGE_INTEGERS, 4),
    "blurred": (("float32", "float16", *_IMAGE_INTEGERS), 4),
    "kernel": (_FLOATS, 3),
    "exposure": (_FLOATS, 1),
    "lam": (_FLOATS, 1),
    "sigma": (_FLOATS, 1),
    "length": (_FLOATS, 1),
    "anxiety": (_FLOATS, 1),
    "centripetal": (_FLOATS, 1),
    "gaussian": (_FLOATS, 1),
    "freq_big_shakes": (_FLOATS, 1),
    "index": (("int64",), 1),
    "source": (("int32",), 1),
    "crop": (("int32",), 2),
    "padded": (("bool",), 1),
    "trajectory": (("complex64",), 2),
}
REQUIRED = ("sharp", "blurred", "kernel", "exposure")
#: A kernel sums to the exposure T <= 1; float32 accumulation leaves this much slack.
_SUM_SLACK = 1e-3

# (resolved path, size, mtime) -> SHA-256: each shard is hashed once per process.
_DIGESTS: dict[tuple[str, int, int], str] = {}


class DatasetFormatError(ValueError):
    """A path is not a complete dataset of this format, or its files disagree with each other
    or with the format; the message names the file and the rule."""


def inside_folder(folder: Path, name: Any, manifest: Path, what: str) -> Path:
    """``folder / name``, refused unless ``name`` is a relative path that stays in ``folder``
    (no ``..``, no absolute path, no symbolic link out of it)."""
    if not isinstance(name, str) or not name:
        raise DatasetFormatError(f"{manifest}: {what} must be a file name, got {name!r}")
    relative = PurePosixPath(name)
    if relative.is_absolute() or Path(name).is_absolute() or ".." in relative.parts:
        raise DatasetFormatError(
            f"{manifest}: {what} {name!r} leaves the dataset folder (absolute or '..'); a "
            "dataset only names files inside its own folder"
        )
    path = folder / name
    root = folder.resolve()
    if path.exists() and root not in path.resolve().parents:
        raise DatasetFormatError(
            f"{manifest}: {what} {name!r} is a symbolic link out of the dataset folder, to "
            f"{path.resolve()}"
        )
    return path


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def shard_sha256(path: Path) -> str:
    """:func:`sha256_file` of a shard, computed once per process for each (size, mtime)."""
    status = path.stat()
    key = (str(path.resolve()), status.st_size, status.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def shard_sha256s(paths: Sequence[Path]) -> list[str]:
    """:func:`shard_sha256` of each path, hashed on as many threads as the process has cores.

    hashlib and file reads release the GIL, so threads hash files side by side.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(len(paths), cores or 1)
    if workers <= 1:
        return [shard_sha256(path) for path in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(shard_sha256, paths))


def check_shard_file(handle: h5py.File, path: Path, count: int) -> None:
    """Refuse a shard file that could make its reader open another file, or whose datasets
    are not those of the format (dtype, rank, ``count`` samples, images of one shape)."""
    rule = "the format has plain datasets only"
    for name in handle:
        link = handle.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise DatasetFormatError(
                f"{path}: {name!r} is an external link to {link.filename!r} ({rule})"
            )
        if isinstance(link, h5py.SoftLink):
            raise DatasetFormatError(f"{path}: {name!r} is a soft link to {link.path!r} ({rule})")
        item = handle[name]
        if not isinstance(item, h5py.Dataset):
            raise DatasetFormatError(f"{path}: {name!r} is a group ({rule})")
        if name not in DATASET_LAYOUT:
            raise DatasetFormatError(
                f"{path}: {name!r} is not a dataset of this format (docs/format.md)"
            )
        if item.external:
            raise DatasetFormatError(f"{path}: {name!r} keeps its data in external files ({rule})")
        if item.is_virtual:
            raise DatasetFormatError(
                f"{path}: {name!r} is a virtual dataset mapping other files ({rule})"
            )
        dtypes, rank = DATASET_LAYOUT[name]
        if item.dtype.name not in dtypes or item.ndim != rank:
            raise DatasetFormatError(
                f"{path}: {name!r} is {item.dtype.name} of rank {item.ndim}; the format has "
                f"{' or '.join(dtypes)} of rank {rank} (docs/format.md)"
            )
        if item.shape[0] != count:
            raise DatasetFormatError(
                f"{path}: {name!r} holds {item.shape[0]} samples; the manifest says {count}"
            )
    missing = [name for name in REQUIRED if name not in handle]
    if missing:
        raise DatasetFormatError(f"{path}: missing datasets {missing}")
    if handle["blurred"].shape != handle["sharp"].shape:
        raise DatasetFormatError(
            f"{path}: 'blurred' {handle['blurred'].shape} and 'sharp' {handle['sharp'].shape} "
            "differ in shape"
        )
    kernel = handle["kernel"].shape
    if kernel[1] != kernel[2]:
        raise DatasetFormatError(f"{path}: 'kernel' {kernel} is not square")
    if "crop" in handle and handle["crop"].shape[1] != 4:
        raise DatasetFormatError(f"{path}: 'crop' {handle['crop'].shape} is not (n, 4)")


def _finite_in(values: np.ndarray, low: float, high: float) -> bool:
    values = np.asarray(values, dtype=np.float64)
    return bool(np.all(np.isfinite(values)) and values.min() >= low and values.max() <= high)


def check_sample(sample: Mapping[str, np.ndarray], path: Path, index: int) -> None:
    """Refuse a sample whose values are out of the format's range: a float image outside
    [0, 1], a kernel with negative or non-finite entries or a sum above 1, an exposure outside
    (0, 1], negative noise parameters."""
    where = f"{path}: sample {index}"
    blurred = sample["blurred"]
    if blurred.dtype.kind == "f" and not _finite_in(blurred, 0.0, 1.0):
        raise DatasetFormatError(f"{where}: 'blurred' has values outside [0, 1] or not finite")
    kernel = np.asarray(sample["kernel"], dtype=np.float64)
    if not _finite_in(kernel, 0.0, math.inf) or kernel.sum() > 1 + _SUM_SLACK:
        raise DatasetFormatError(
            f"{where}: 'kernel' is negative, not finite or sums to more than 1"
        )
    if not _finite_in(sample["exposure"], 0.0, 1.0) or float(sample["exposure"]) <= 0:
        raise DatasetFormatError(
            f"{where}: 'exposure' {float(sample['exposure'])} is not in (0, 1]"
        )
    for name in ("sigma", "lam"):
        if name in sample and not float(sample[name]) >= 0:  # lam may be inf
            raise DatasetFormatError(f"{where}: {name!r} {float(sample[name])} is negative or NaN")
