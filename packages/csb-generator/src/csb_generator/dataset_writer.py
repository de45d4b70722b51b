"""How a dataset folder is written: its shards (by one :class:`ShardWriter` in every runner),
each shard's progress record, the manifests, and the names of everything a run leaves there.

:mod:`csb_generator.generate` plans a run and fans its :class:`ShardTask` s out; this module is
what they write. The names and the attributes of one shard file are in
:mod:`csb_generator.shards`. A shard is written under a temporary name and renamed when complete;
then its SHA-256 goes into its progress record in ``.progress/``. ``manifest.json`` is written
last, from those records: a folder without it is incomplete.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic_files import atomic_output
from .modes import DatasetOptions, SampleMaker
from .shards import (
    MANIFEST_NAME,
    PLAN_NAME,
    PREVIEW_NAME,
    PROGRESS_DIR,
    SAMPLE_FIELDS,
    SHARD_ATTRIBUTES,
    TRAJECTORY_NAME,
    dataset_identity,
    sha256_file,
    shard_name,
    write_json_atomic,
    write_shard,
)
from .sources import SourceImage

if TYPE_CHECKING:
    from .generate import GenerationPlan

__all__ = [
    "ShardTask",
    "ShardWriter",
    "complete_shards",
    "dataset_entries",
    "part_folder",
    "progress_record_path",
    "shard_attributes",
    "shard_ranges",
    "write_manifests",
]

#: The packages whose versions a manifest records.
DEPENDENCIES = ("numpy", "scipy", "numba", "h5py", "imageio", "scikit-image", "pillow")


@dataclass(frozen=True)
class ShardTask:
    """One shard to write: the unit of work of every executor."""

    folder: Path
    exposure: float | None
    shard: int
    first_index: int
    count: int


def part_folder(out: Path, exposure: float) -> Path:
    """The folder of a T-sweep's part of exposure ``exposure`` inside ``out``."""
    return out / f"T-{exposure:.6g}"


def dataset_entries(out: Path) -> list[Path]:
    """Everything in ``out`` that a run writes there (finished or left by a killed run): what
    ``overwrite`` removes, and all it removes."""
    patterns = (
        "shard-*.h5",
        ".shard-*.tmp-*",
        "T-*",
        MANIFEST_NAME,
        PLAN_NAME,
        PROGRESS_DIR,
        TRAJECTORY_NAME,
        PREVIEW_NAME,
        f".{PREVIEW_NAME}.tmp-*",
        f".{MANIFEST_NAME}.tmp-*",
        f".{TRAJECTORY_NAME}.tmp-*",
    )
    return sorted({path for pattern in patterns for path in out.glob(pattern)})


def progress_record_path(folder: Path, shard: int) -> Path:
    """Where the record of shard ``shard`` of the dataset folder ``folder`` is kept."""
    return folder / PROGRESS_DIR / f"{shard_name(shard)}.json"


def complete_shards(folder: Path, shards: Sequence[tuple[int, int, int]]) -> set[int]:
    """Shards whose file exists and matches the hash recorded when it was written."""
    complete = set()
    for shard, first, count in shards:
        record_path = progress_record_path(folder, shard)
        path = folder / shard_name(shard)
        if not (record_path.is_file() and path.is_file()):
            continue
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record.get("first_index") == first and record.get("count") == count:
            if record.get("sha256") == sha256_file(path):
                complete.add(shard)
    return complete


def shard_ranges(count: int, shard_size: int) -> list[tuple[int, int, int]]:
    """``(shard, first_index, count)`` of each shard of a dataset of ``count`` samples."""
    return [
        (shard, first, min(shard_size, count - first))
        for shard, first in enumerate(range(0, count, shard_size))
    ]


def shard_attributes(plan_options: DatasetOptions, fingerprint: str, task: ShardTask) -> dict:
    """The HDF5 attributes of the shard of ``task`` (their list: ``shards.SHARD_ATTRIBUTES``)."""
    from . import __version__

    values = {
        **dataset_identity(plan_options.mode, plan_options.seed, fingerprint),
        "image_size": plan_options.image_size,
        "psf_size": plan_options.psf_size,
        "channels": plan_options.channels,
        "generator_version": __version__,
        "shard": task.shard,
        "first_index": task.first_index,
        "count": task.count,
        "options": json.dumps(plan_options.to_json(), sort_keys=True),
    }
    if task.exposure is not None:
        values["exposure"] = task.exposure
    return {key: values[key] for key in SHARD_ATTRIBUTES if key in values}


class ShardWriter:
    """Writes the shards of one plan: the worker of every runner, set up the same way in this
    process, in a process pool and on a Dask cluster.

    It travels to a worker as the plan's options, sources and fingerprint. The worker builds its
    :class:`SampleMaker` (the decoded photographs, the dataset-wide kernel) at its first shard
    and keeps it for the next shards of the same plan.

    Parameters
    ----------
    options : DatasetOptions
    sources : sequence of SourceImage
        The usable sources, in manifest order.
    fingerprint : str
        The plan's fingerprint, recorded in every shard.
    maker : SampleMaker, optional
        A maker already built for these options and sources (the planning process's); it does
        not travel to other processes.
    """

    def __init__(
        self,
        options: DatasetOptions,
        sources: Sequence[SourceImage],
        fingerprint: str,
        maker: SampleMaker | None = None,
    ):
        self.options = options
        self.sources = list(sources)
        self.fingerprint = fingerprint
        self._maker = maker

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maker": None}

    @property
    def maker(self) -> SampleMaker:
        """This process's (and thread's) maker of the plan's samples."""
        if self._maker is None:
            self._maker = _worker_maker(self)
        return self._maker

    def __call__(
        self,
        task: ShardTask,
        on_sample: Callable[[], None] | None = None,
        stop: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Generate and write one shard, then record its hash; returns the record.

        Raises KeyboardInterrupt, before anything is written, when ``stop`` is set.
        """
        maker = self.maker
        samples = []
        for index in range(task.first_index, task.first_index + task.count):
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            samples.append(maker(index, task.exposure))
            if on_sample is not None:
                on_sample()
        fields = [name for name in SAMPLE_FIELDS if name in samples[0]]
        arrays = {name: np.stack([sample[name] for sample in samples]) for name in fields}
        options = self.options
        compression = None if options.compression == "none" else options.compression
        path = task.folder / shard_name(task.shard)
        digest = write_shard(
            path, arrays, shard_attributes(options, self.fingerprint, task), compression=compression
        )
        record = {
            "file": path.name,
            "shard": task.shard,
            "first_index": task.first_index,
            "last_index": task.first_index + task.count - 1,
            "count": task.count,
            "sha256": digest,
            "redraws": int(sum(sample["redraws"] for sample in samples)),
            "padded": int(arrays["padded"].sum()),
        }
        record_path = progress_record_path(task.folder, task.shard)
        record_path.parent.mkdir(exist_ok=True)
        write_json_atomic(record_path, record)
        return record


# The maker of the plan a worker thread last wrote: a Dask worker receives a new ShardWriter
# with every task and should not decode the photographs again for each. Per thread, because
# Dask runs tasks on threads and a maker's image cache is not thread-safe.
_WORKER_MAKERS = threading.local()


def _worker_maker(writer: ShardWriter) -> SampleMaker:
    kept = getattr(_WORKER_MAKERS, "kept", None)
    if kept is None or kept[0] != writer.fingerprint:
        kept = (writer.fingerprint, SampleMaker(writer.options, writer.sources))
        _WORKER_MAKERS.kept = kept
    return kept[1]


def _versions() -> dict[str, str]:
    found = {}
    for name in ("csb-generator", *DEPENDENCIES):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def write_manifests(plan: GenerationPlan, maker: SampleMaker) -> tuple[Path, int, int]:
    """Write each part's ``manifest.json`` from its shards' progress records (and, for a
    T-sweep, the top manifest and the shared trajectory); returns the top manifest's path and
    the total redraws and padded samples."""
    options = plan.options
    ranges = shard_ranges(options.count, options.shard_size)
    sources = [
        {
            "key": source.key,
            "height": source.height,
            "width": source.width,
            "bit_depth": source.bit_depth,
            "sha256": source.sha256,
        }
        for source in plan.sources
    ]
    common = {
        **dataset_identity(options.mode, options.seed, plan.fingerprint),
        "options": options.to_json(),
        "versions": _versions(),
        "source_root": "builtin:scikit-image"
        if plan.source_root is None
        else str(plan.source_root),
        "sources": sources,
        "input_files": plan.input_files,
        "skipped": {
            "count": len(plan.skipped),
            "inputs": [{"key": key, "reason": reason} for key, reason in plan.skipped],
        },
    }
    total_redraws, total_padded = maker.redraws, 0
    for folder, exposure in plan.parts:
        shards = []
        for shard, _, _ in ranges:
            record_path = progress_record_path(folder, shard)
            record = json.loads(record_path.read_text(encoding="utf-8"))
            shards.append(record)
        redraws = sum(record["redraws"] for record in shards)
        padded = sum(record["padded"] for record in shards)
        total_redraws += redraws
        total_padded += padded
        manifest = {
            **common,
            "count": options.count,
            "shards": [
                {
                    key: record[key]
                    for key in ("file", "count", "first_index", "last_index", "sha256")
                }
                for record in shards
            ],
            "redraws": redraws + maker.redraws,
            "padded": padded,
        }
        if exposure is not None:
            manifest["exposure"] = exposure
        if options.mode_rules.shares_kernel:
            manifest["shared_kernel"] = _shared_kernel_record(maker)
        write_json_atomic(folder / MANIFEST_NAME, manifest)
    if options.mode_rules.part_per_exposure:
        with atomic_output(plan.out / TRAJECTORY_NAME) as handle:
            np.save(handle, maker.trajectory.positions, allow_pickle=False)
        top = {
            **common,
            "parts": [
                {"exposure": exposure, "folder": folder.name, "count": options.count}
                for folder, exposure in plan.parts
            ],
            "count": options.count * len(plan.parts),
            "trajectory_file": TRAJECTORY_NAME,
            "shared_kernel": _shared_kernel_record(maker),
            "redraws": total_redraws,
            "padded": total_padded,
        }
        write_json_atomic(plan.out / MANIFEST_NAME, top)
    return plan.out / MANIFEST_NAME, total_redraws, total_padded


def _shared_kernel_record(maker: SampleMaker) -> dict[str, Any]:
    record: dict[str, Any] = {"redraws": maker.redraws}
    if maker.trajectory is not None:
        record["trajectory"] = {
            **{k: (None if math.isnan(v) else v) for k, v in maker.trajectory.parameters().items()},
            "angle": None if math.isnan(maker.trajectory.angle) else maker.trajectory.angle,
            "num_shakes": maker.trajectory.num_shakes,
            "num_samples": maker.trajectory.num_samples,
        }
    return record
