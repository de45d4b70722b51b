"""The on-disk dataset format: HDF5 shards and a JSON manifest (docs/format.md).

A dataset folder holds ``shard-NNNNN.h5`` files and, written last, ``manifest.json``. A T-sweep
folder holds one such dataset per exposure in ``T-<value>/`` sub-folders and a top-level manifest
that lists them. Everything here is readable with plain h5py and json; this module adds atomic
writing and a reader that is safe under multi-process data loaders and checks what it reads
(:mod:`csb_generator.shard_checks`: shards are untrusted input).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .atomic_files import write_bytes_atomic
from .shard_checks import (
    DatasetFormatError,
    check_sample,
    check_shard_file,
    inside_folder,
    sha256_file,
    shard_sha256s,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "NOISE_CONVENTION",
    "PLAN_NAME",
    "PREVIEW_NAME",
    "PROGRESS_DIR",
    "SHARD_ATTRIBUTES",
    "TRAJECTORY_NAME",
    "DatasetFormatError",
    "ShardDataset",
    "TSweepDataset",
    "dataset_identity",
    "open_dataset",
    "read_manifest",
    "sha256_file",
    "shard_name",
    "verify_dataset",
    "write_json_atomic",
    "write_shard",
]

FORMAT_NAME = "csb-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
"""The file that makes a folder a dataset: its options, its shards and their SHA-256, written
last by ``csb-generate`` (docs/format.md#manifestjson)."""
#: The other files of a dataset folder (docs/format.md): the run's plan and per-shard progress
#: records (hidden; a finished run removes them), a T-sweep's shared trajectory, the preview.
PLAN_NAME = ".csb-generate.json"
PROGRESS_DIR = ".progress"
TRAJECTORY_NAME = "trajectory.npy"
PREVIEW_NAME = "preview.png"
#: The degradation every dataset of this format applies, recorded in shards and manifests.
NOISE_CONVENTION = (
    "y = clip((Poisson(p * clip(b, 0, 1)) / p + N(0, (sigma / 255)^2)) / T, 0, 1), p = lam / 255, "
    "b = k * x with sum(k) = T (thesis convention)"
)
#: The root attributes of a shard, in the order they are written: the file's bytes depend on it.
SHARD_ATTRIBUTES = (
    "format",
    "format_version",
    "mode",
    "image_size",
    "psf_size",
    "channels",
    "noise_convention",
    "generator_version",
    "seed",
    "fingerprint",
    "shard",
    "first_index",
    "count",
    "options",
    "exposure",
)

#: Per-sample datasets in write order; every one has the sample axis first.
SAMPLE_FIELDS = (
    "sharp",
    "blurred",
    "kernel",
    "exposure",
    "lam",
    "sigma",
    "length",
    "anxiety",
    "centripetal",
    "gaussian",
    "freq_big_shakes",
    "index",
    "source",
    "crop",
    "padded",
    "trajectory",
)


def _trajectory_parameter(what: str) -> tuple[str, str, str]:
    """The attributes of a dimensionless trajectory parameter's dataset."""
    return (f"{what} (NaN for disk and file kernels)", "(N,)", "dimensionless")


#: What each per-sample dataset holds, stored as its attributes ``description``, ``layout`` and
#: ``units`` (units or range) so that h5py or ``h5dump -A`` alone tells a reader; docs/format.md
#: has the same table. None: an image, whose range is written from its dtype (:func:`_value_range`).
DATASET_ATTRIBUTES: dict[str, tuple[str, str, str | None]] = {
    "sharp": ("ground-truth crop", "(N, H, W, C)", None),
    "blurred": (
        "degraded crop: clip(noise(kernel * sharp) / T, 0, 1), * a true convolution",
        "(N, H, W, C)",
        None,
    ),
    "kernel": (
        "point-spread function applied by true convolution, origin at pixel (K // 2, K // 2)",
        "(N, K, K)",
        "fraction of the exposure per pixel; sums to T",
    ),
    "exposure": ("exposure fraction T", "(N,)", "fraction of the full exposure, (0, 1]"),
    "lam": (
        "shot-noise parameter lambda: a white pixel collects lambda / 255 * T photons (inf: none)",
        "(N,)",
        "photons per unit intensity, times 255",
    ),
    "sigma": ("read-noise standard deviation (0: none)", "(N,)", "8-bit grey levels"),
    "length": ("trajectory path length (NaN for disk and file kernels)", "(N,)", "pixels"),
    "anxiety": _trajectory_parameter("trajectory shakiness, 0 a straight segment"),
    "centripetal": _trajectory_parameter("trajectory pull back towards its start"),
    "gaussian": _trajectory_parameter("scale of the trajectory's random pushes"),
    "freq_big_shakes": _trajectory_parameter("frequency of the trajectory's abrupt inversions"),
    "index": ("sample index in the whole dataset", "(N,)", "0 to count - 1"),
    "source": ("index into the manifest's sources", "(N,)", "0 to len(sources) - 1"),
    "crop": ("crop box (top, left, height, width) in the downscaled source", "(N, 4)", "pixels"),
    "padded": ("True where reflection padding had to be used", "(N,)", "boolean"),
    "trajectory": (
        "trajectory positions, S time samples: real part column, imaginary part row",
        "(N, S)",
        "pixels",
    ),
}


def _value_range(array: np.ndarray) -> str:
    """The range of an image dataset from its dtype: integers at full scale, floats in [0, 1]."""
    if np.issubdtype(array.dtype, np.integer):
        return f"0-{np.iinfo(array.dtype).max} ({array.dtype.name}, full scale)"
    return f"[0, 1] ({array.dtype.name}, fraction of full scale)"


def dataset_identity(mode: str, seed: int, fingerprint: str) -> dict[str, Any]:
    """What every shard and every manifest of a dataset say of it: the format and its version,
    the mode, the seed, the fingerprint of its options and sources, and the noise convention."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "mode": mode,
        "seed": seed,
        "fingerprint": fingerprint,
        "noise_convention": NOISE_CONVENTION,
    }


def shard_name(shard: int) -> str:
    """File name of shard number ``shard``: ``shard-00000.h5`` and so on."""
    return f"shard-{shard:05d}.h5"


def write_json_atomic(path: str | Path, document: Mapping[str, Any]) -> None:
    """Write a JSON document so that ``path`` holds either the old or the complete new file."""
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=True) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def write_shard(
    path: str | Path,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    *,
    compression: str | None = "gzip",
) -> str:
    """Write one shard atomically and return its SHA-256.

    The HDF5 file is built in memory, then its bytes are written under a hidden temporary name in
    the same folder, flushed to disk and renamed, so a shard is visible under its final name only
    when complete, and a failing write (a full disk) is an ordinary ``OSError`` that leaves HDF5
    in a clean state. Object timestamps are not recorded, so the same arrays give the same bytes.

    Parameters
    ----------
    path : str or Path
        Final file name.
    arrays : mapping of str to ndarray
        Per-sample datasets, all with the same first (sample) axis length.
    attrs : mapping
        Root attributes (scalars or strings).
    compression : {"gzip", "lzf", None}, optional
        HDF5 filter of the image datasets. gzip (default, level 1) is readable by every HDF5 and
        deterministic; lzf is faster, but h5py's bundled encoder may emit different bytes for the
        same data (the decoded arrays are identical).

    Returns
    -------
    str
        Hex SHA-256 of the written file.
    """
    path = Path(path)
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"datasets of one shard must share their sample count, got {lengths}")
    options = {"compression_opts": 1} if compression == "gzip" else {}
    # The core driver without a backing store keeps the file in memory; the name is never opened.
    with h5py.File(path.name, "w", driver="core", backing_store=False, track_order=True) as handle:
        for key, value in attrs.items():
            handle.attrs[key] = value
        for name, array in arrays.items():
            array = np.asarray(array)
            compressed = compression is not None and array.ndim > 1
            dataset = handle.create_dataset(
                name,
                data=array,
                chunks=(1, *array.shape[1:]) if array.ndim > 0 and len(array) else None,
                compression=compression if compressed else None,
                track_times=False,
                **(options if compressed else {}),
            )
            if name in DATASET_ATTRIBUTES:
                description, layout, units = DATASET_ATTRIBUTES[name]
                dataset.attrs["description"] = description
                dataset.attrs["layout"] = layout
                dataset.attrs["units"] = _value_range(array) if units is None else units
            # Cached chunks get their place in the file when they are flushed. Flush now, not
            # when Python happens to free the dataset object (later under a profiler, as in a
            # dask worker), so the layout, and the bytes, never depend on it.
            dataset.flush()
        handle.flush()
        image = handle.id.get_file_image()
    write_bytes_atomic(path, image)
    return hashlib.sha256(image).hexdigest()


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read and check the manifest of a dataset folder.

    Raises
    ------
    DatasetFormatError
        If the folder has no manifest (the dataset is incomplete or not a dataset), the manifest is
        not valid JSON, or it is of another format or a newer version.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder} is not a folder")
    if not path.is_file():
        raise DatasetFormatError(
            f"{folder} has no {MANIFEST_NAME}: it is not a csb-generate dataset, or its generation "
            "has not finished (rerun the same csb-generate command to complete it)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetFormatError(f"cannot read {path}: {error}") from error
    if manifest.get("format") != FORMAT_NAME:
        raise DatasetFormatError(f"{path} is not a {FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DatasetFormatError(
            f"{path} has format version {version!r}; this reader supports up to {FORMAT_VERSION}"
        )
    return manifest


@dataclass(frozen=True)
class _ShardEntry:
    path: Path
    first_index: int
    count: int


class ShardDataset:
    """Random access to the samples of one dataset folder.

    Files are opened lazily, once per process, and never inherited across ``fork`` or pickled for
    ``spawn``, so one instance can be handed to a multi-worker PyTorch ``DataLoader``.

    Parameters
    ----------
    folder : str or Path
        A folder with ``manifest.json`` and its shards.
    verify : bool, optional
        Check each shard's SHA-256 against the manifest when the dataset is opened (default;
        once per process and file). False skips that for speed. The structural checks of
        :mod:`~csb_generator.shard_checks` (no external storage or links, the format's dtypes
        and shapes) and the per-sample range checks always run.

    Raises
    ------
    DatasetFormatError
        If the manifest or a shard is incomplete, damaged, not the manifest's, or breaks a rule
        of the format; the message names the file and the rule.

    Examples
    --------
    >>> dataset = open_dataset("shards/")                       # doctest: +SKIP
    >>> sample = dataset[0]                                     # doctest: +SKIP
    >>> sample["blurred"].shape, float(sample["kernel"].sum())  # doctest: +SKIP
    ((64, 64, 3), 1.0)
    """

    def __init__(self, folder: str | Path, verify: bool = True):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        manifest_path = self.folder / MANIFEST_NAME
        shards, total = self.manifest.get("shards"), self.manifest.get("count")
        if not isinstance(shards, list) or not _is_count(total):
            raise DatasetFormatError(
                f"{manifest_path}: needs 'shards', a list, and 'count', an integer >= 0"
            )
        entries = []
        expected = 0
        for number, shard in enumerate(shards):
            if not isinstance(shard, dict) or not _is_count(shard.get("count")):
                raise DatasetFormatError(f"{manifest_path}: shard entry {number} has no count")
            if shard.get("first_index") != expected:
                raise DatasetFormatError(f"{manifest_path}: shards do not cover a contiguous range")
            path = inside_folder(self.folder, shard.get("file"), manifest_path, "shard file")
            entries.append(_ShardEntry(path, expected, shard["count"]))
            expected += shard["count"]
        if expected != total:
            raise DatasetFormatError(f"{manifest_path}: shard counts do not add up to the total")
        missing = [str(entry.path) for entry in entries if not entry.path.is_file()]
        if missing:
            raise DatasetFormatError(f"{self.folder}: missing shard files {missing}")
        digests = shard_sha256s([entry.path for entry in entries]) if verify else None
        for number, (shard, entry) in enumerate(zip(shards, entries, strict=True)):
            if digests is not None and digests[number] != shard.get("sha256"):
                raise DatasetFormatError(
                    f"{entry.path}: its SHA-256 is not the manifest's: the file was changed or "
                    "damaged after it was written (regenerate it: rerun the csb-generate command)"
                )
            try:
                with h5py.File(entry.path, "r") as handle:
                    check_shard_file(handle, entry.path, entry.count)
            except OSError as error:
                raise DatasetFormatError(f"cannot read {entry.path}: {error}") from error
        self._entries = entries
        self._starts = np.array([entry.first_index for entry in entries], dtype=np.int64)
        self._handles: dict[int, h5py.File] = {}
        self._owner_pid = os.getpid()

    def __len__(self) -> int:
        return int(self.manifest["count"])

    @property
    def exposure(self) -> float | None:
        """The exposure T of a T-sweep part, or None for datasets with per-sample exposures."""
        return self.manifest.get("exposure")

    def _handle(self, shard: int) -> h5py.File:
        if os.getpid() != self._owner_pid:  # forked: the parent's handles are not ours to use
            self._handles = {}
            self._owner_pid = os.getpid()
        handle = self._handles.get(shard)
        if handle is None:
            handle = h5py.File(self._entries[shard].path, "r")
            self._handles[shard] = handle
        return handle

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Sample ``index`` as a dict of arrays (the per-sample datasets of the format)."""
        if not isinstance(index, int | np.integer):
            raise TypeError(f"sample index must be an integer, got {type(index).__name__}")
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(f"sample {index} out of range for a dataset of {size}")
        shard = int(np.searchsorted(self._starts, index, side="right") - 1)
        entry = self._entries[shard]
        try:
            handle = self._handle(shard)
            sample = {name: handle[name][index - entry.first_index] for name in handle}
        except OSError as error:  # a truncated or damaged file: name it
            raise DatasetFormatError(
                f"cannot read sample {index} from {entry.path}: {error}"
            ) from error
        check_sample(sample, entry.path, index)
        return sample

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for index in range(len(self)):
            yield self[index]

    def close(self) -> None:
        """Close the files this process opened."""
        if os.getpid() == self._owner_pid:
            for handle in self._handles.values():
                handle.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._owner_pid = os.getpid()

    def __repr__(self) -> str:
        return f"ShardDataset({str(self.folder)!r}, mode={self.manifest['mode']!r}, n={len(self)})"


class TSweepDataset:
    """A T-sweep: one :class:`ShardDataset` per exposure, sharing trajectory, crops and noise seeds.

    Indexing runs over all parts in the manifest's order (part 0's samples first), for training one
    model on every T; :attr:`parts` gives each exposure's dataset alone.

    Attributes
    ----------
    manifest : dict
        The top-level manifest.
    parts : dict of float to ShardDataset
        The dataset of each exposure T, in the manifest's order.
    trajectory : ndarray of complex128
        The trajectory shared by every part (positions in pixels).
    """

    def __init__(self, folder: str | Path, verify: bool = True):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        manifest_path = self.folder / MANIFEST_NAME
        parts = self.manifest.get("parts")
        if not isinstance(parts, list) or not all(
            isinstance(part, dict) and isinstance(part.get("exposure"), int | float)
            for part in parts
        ):
            raise DatasetFormatError(f"{manifest_path}: 'parts' must list folders and exposures")
        self.parts = {
            float(part["exposure"]): ShardDataset(
                inside_folder(self.folder, part.get("folder"), manifest_path, "part folder"),
                verify=verify,
            )
            for part in parts
        }
        trajectory = self.manifest.get("trajectory_file")
        path = inside_folder(self.folder, trajectory, manifest_path, "trajectory file")
        try:
            self.trajectory = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DatasetFormatError(f"cannot read {path}: {error}") from error
        self._sizes = np.cumsum([len(part) for part in self.parts.values()])

    @property
    def exposures(self) -> list[float]:
        """The exposures T of the parts, in order."""
        return list(self.parts)

    def __len__(self) -> int:
        return int(self._sizes[-1]) if len(self._sizes) else 0

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(f"sample {index} out of range for a T-sweep of {size}")
        part = int(np.searchsorted(self._sizes, index, side="right"))
        start = 0 if part == 0 else int(self._sizes[part - 1])
        return list(self.parts.values())[part][index - start]

    def close(self) -> None:
        """Close the files this process opened."""
        for part in self.parts.values():
            part.close()

    def __repr__(self) -> str:
        return f"TSweepDataset({str(self.folder)!r}, exposures={self.exposures})"


def open_dataset(path: str | Path, verify: bool = True) -> ShardDataset | TSweepDataset:
    """Open a dataset written by ``csb-generate``, checking it as untrusted input.

    Parameters
    ----------
    path : str or Path
        The dataset folder (the ``--out`` of ``csb-generate``), or one ``T-*`` part of a T-sweep.
    verify : bool, optional
        Check every shard's SHA-256 against the manifest (default); False skips it for speed
        (:class:`ShardDataset`).

    Returns
    -------
    ShardDataset or TSweepDataset
        A T-sweep folder gives a :class:`TSweepDataset`; any other a :class:`ShardDataset`.

    Raises
    ------
    DatasetFormatError
        If the folder is not a complete dataset, or a file in it breaks a rule of the format
        (:mod:`~csb_generator.shard_checks`); the message names the file and the rule.
    """
    manifest = read_manifest(path)
    if "parts" in manifest:
        return TSweepDataset(path, verify=verify)
    return ShardDataset(path, verify=verify)


def verify_dataset(path: str | Path) -> dict[str, int]:
    """Check a whole dataset as untrusted input: every shard's structure and SHA-256, then
    every sample's values (:mod:`~csb_generator.shard_checks`). ``csb-generate --verify``.

    Parameters
    ----------
    path : str or Path
        A dataset folder, a T-sweep or one of its parts.

    Returns
    -------
    dict
        ``{"datasets": ..., "shards": ..., "samples": ...}``: what was checked.

    Raises
    ------
    DatasetFormatError
        At the first file or sample that breaks a rule; the message names it and the rule.
    """
    dataset = open_dataset(path, verify=True)
    parts = list(dataset.parts.values()) if isinstance(dataset, TSweepDataset) else [dataset]
    try:
        for part in parts:
            for index in range(len(part)):
                part[index]
    finally:
        dataset.close()
    return {
        "datasets": len(parts),
        "shards": sum(len(part.manifest["shards"]) for part in parts),
        "samples": sum(len(part) for part in parts),
    }


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
