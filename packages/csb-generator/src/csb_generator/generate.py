"""Running a dataset's generation: planning, resuming, and fanning shards out.

Generation is split in two so that a command-line tool can show what will happen and then report
progress: :func:`plan_generation` scans the sources, checks the output folder and lists the shards
still to write; :func:`run_generation` has them written (in this process, in a process pool, or
on a ``dask.distributed`` cluster, by one :class:`~csb_generator.dataset_writer.ShardWriter`
each) and, once every shard exists, the manifests. What is written, and under which names, is
:mod:`csb_generator.dataset_writer`.

Crash safety: a rerun keeps every shard whose recorded hash matches its file and regenerates the
rest, so an interrupted run, resumed, gives the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX (Windows): runs on one folder are not locked against each other
    fcntl = None

from .dataset_writer import (
    ShardTask,
    ShardWriter,
    complete_shards,
    dataset_entries,
    part_folder,
    shard_ranges,
    write_manifests,
)
from .modes import DatasetOptions, OptionError, SampleMaker
from .preview import write_preview
from .shards import (
    FORMAT_NAME,
    MANIFEST_NAME,
    PLAN_NAME,
    PREVIEW_NAME,
    sha256_file,
    shard_name,
    write_json_atomic,
)
from .sources import SourceError, SourceImage, scan_sources

__all__ = [
    "GenerationPlan",
    "GenerationReport",
    "OutputBusy",
    "OutputError",
    "generate_dataset",
    "plan_generation",
    "run_generation",
]

PREVIEW_SAMPLES = 6


class OutputError(ValueError):
    """The output folder cannot be used: it is a file, or holds a different dataset."""


class OutputBusy(OutputError):
    """Another ``csb-generate`` process on this machine is writing the output folder."""


@dataclass
class GenerationPlan:
    """What a run will do; made by :func:`plan_generation`.

    Attributes
    ----------
    options : DatasetOptions
    out : Path
        The output folder.
    source_root : Path or None
        The source folder (None: the built-in photographs).
    sources : list of SourceImage
        Usable sources, in manifest order.
    skipped : list of (str, str)
        Source files left out, with the reason.
    parts : list of (Path, float or None)
        Dataset folders with their exposure (one per T for a T-sweep, else the output folder).
    tasks : list of ShardTask
        Shards still to write in this run.
    kept : int
        Complete shards found on disk and kept.
    is_part : bool
        True when this run writes only its share of the shards (``--shard-index``).
    """

    options: DatasetOptions
    out: Path
    source_root: Path | None
    sources: list[SourceImage]
    skipped: list[tuple[str, str]]
    parts: list[tuple[Path, float | None]]
    tasks: list[ShardTask]
    kept: int
    is_part: bool
    fingerprint: str
    maker: SampleMaker
    input_files: dict[str, dict[str, str]]
    #: Descriptor of the output folder holding this run's lock (:func:`_lock_output`), closed
    #: by :func:`run_generation`.
    lock: int | None = None

    @property
    def samples_to_write(self) -> int:
        """Number of samples the remaining tasks will write."""
        return sum(task.count for task in self.tasks)


@dataclass
class GenerationReport:
    """What a run did."""

    out: Path
    shards_written: int = 0
    shards_kept: int = 0
    samples_written: int = 0
    manifest: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    redraws: int = 0
    padded: int = 0


def _input_files(maker: SampleMaker) -> dict[str, dict[str, str]]:
    return {
        name: {"path": path, "sha256": sha256_file(path)}
        for name, path in maker.input_files().items()
    }


def _fingerprint(
    options: DatasetOptions, sources: Sequence[SourceImage], input_files: dict[str, dict]
) -> str:
    # Contents, not paths: the same kernel file moved is the same dataset, an edited one is not.
    document = {
        "options": {**options.to_json(), "kernel": None, "trajectory": None},
        "kernel_spec": options.kernel if "kernel" not in input_files else None,
        "trajectory_spec": options.trajectory if "trajectory" not in input_files else None,
        "input_files": {name: entry["sha256"] for name, entry in input_files.items()},
        "sources": [[source.key, source.sha256] for source in sources],
    }
    text = json.dumps(document, sort_keys=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _check_output(out: Path, fingerprint: str, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"`out` {out} is a file, not a folder")
    if not out.exists():
        return
    # The entries first, the record second: a part of the same dataset running beside this one
    # (--shard-index) writes its plan before anything else, so whatever entry is seen here
    # comes with a plan that is then found. Read the other way round, the plan could appear
    # between the two looks and read as files of unknown origin.
    ours = dataset_entries(out)
    if not ours:
        return
    recorded = None
    for name in (MANIFEST_NAME, PLAN_NAME):
        path = out / name
        if path.is_file():
            try:
                recorded = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
            except (OSError, ValueError):
                recorded = "unreadable"
            break
    if recorded == fingerprint:
        return
    if overwrite:
        _remove(ours)
        return
    what = "a different dataset" if recorded else "dataset files of unknown origin"
    raise OutputError(
        f"`out` {out} holds {what} (other options, seed or sources); "
        "choose another folder or pass `overwrite` to replace it"
    )


def _lock_output(out: Path, shared: bool) -> int | None:
    """An advisory lock (``flock``) on the output folder, held until the descriptor is closed
    (or the process ends): exclusive for a lone run, shared for a ``--shard-index`` part, since
    the parts of one dataset may run side by side on one machine. Another process's conflicting
    lock refuses the run at once; it never waits.
    """
    if fcntl is None:
        return None
    descriptor = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise OutputBusy(
            f"`out` {out} is being written by another csb-generate process on this machine; "
            "wait for it to end (then rerun the same command: it resumes, or finds the dataset "
            "complete), or choose another folder"
        ) from None
    return descriptor


def _unlock(plan: GenerationPlan) -> None:
    if plan.lock is not None:
        os.close(plan.lock)
        plan.lock = None


def plan_generation(
    options: DatasetOptions,
    out: str | Path,
    *,
    source_root: str | Path | None = None,
    overwrite: bool = False,
    shard_index: int | None = None,
    num_shards: int | None = None,
) -> GenerationPlan:
    """Scan the sources, check the output folder, and list the shards still to write.

    Parameters
    ----------
    options : DatasetOptions
        Resolved options (:func:`~csb_generator.modes.resolve_options`).
    out : str or Path
        Output folder; created if missing.
    source_root : str or Path, optional
        Folder of source photographs (any depth). Default: the built-in photographs.
    overwrite : bool, optional
        Replace a different dataset found in ``out``. Default False: that is an error.
    shard_index, num_shards : int, optional
        Write only the shards ``k`` with ``k % num_shards == shard_index`` (counted over all
        parts), for spreading one dataset over machines; the run without them joins the parts.

    Raises
    ------
    OutputError
        If ``out`` is a file or holds a different dataset (without ``overwrite``).
    OutputBusy
        If another process on this machine is writing ``out`` (a lone run, or another part
        when this one is a lone run). The plan holds a lock on ``out`` until
        :func:`run_generation` ends, or the process does.
    csb_generator.sources.SourceError
        If the source folder is missing or unreadable, or no usable image remains.
    """
    # Absolute: dask workers and job-array tasks may run in other working directories.
    out = Path(out).absolute()
    if (shard_index is None) != (num_shards is None):
        raise OptionError("shard_index", "goes together with `num_shards`")
    if num_shards is not None and not (num_shards >= 1 and 0 <= shard_index < num_shards):
        raise OptionError("shard_index", f"must be in [0, {num_shards}) and `num_shards` >= 1")
    if out.exists() and not out.is_dir():
        raise OutputError(f"`out` {out} is a file, not a folder")
    root = None if source_root is None else Path(source_root).absolute()
    scan = scan_sources(root, image_size=options.image_size, downscale=options.downscale)
    if not scan.usable:
        where = "the built-in photographs" if root is None else str(root)
        reasons = "; ".join(f"{key}: {reason}" for key, reason in scan.skipped[:5])
        raise SourceError(
            f"no usable image in {where} ({len(scan.skipped)} skipped{': ' if reasons else ''}"
            f"{reasons})"
        )
    if any(source.bit_depth == 16 for source in scan.usable):
        options = replace(options, sharp_dtype="uint16")
    # The shared kernel is made before the output folder is touched: an impossible kernel is a
    # usage error that must not leave a half-prepared folder behind.
    maker = SampleMaker(options, scan.usable)
    input_files = _input_files(maker)
    fingerprint = _fingerprint(options, scan.usable, input_files)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock_output(out, shared=shard_index is not None)
    try:
        _check_output(out, fingerprint, overwrite)
        parts, tasks, kept = _prepare_output(out, options, fingerprint, shard_index, num_shards)
    except BaseException:
        if lock is not None:
            os.close(lock)
        raise
    return GenerationPlan(
        options=options,
        out=out,
        source_root=root,
        sources=scan.usable,
        skipped=list(scan.skipped),
        parts=parts,
        tasks=tasks,
        kept=kept,
        is_part=shard_index is not None,
        fingerprint=fingerprint,
        maker=maker,
        input_files=input_files,
        lock=lock,
    )


def _prepare_output(
    out: Path,
    options: DatasetOptions,
    fingerprint: str,
    shard_index: int | None,
    num_shards: int | None,
) -> tuple[list[tuple[Path, float | None]], list[ShardTask], int]:
    """Record the plan in ``out``, make the part folders, and list the shards to write (this
    run's share) and the complete ones kept: ``(parts, tasks, kept)``."""
    if shard_index is None:  # a lone run owns the folder: temporaries left by a kill are stale
        _remove(sorted(out.glob(".shard-*.tmp-*")) + sorted(out.glob("T-*/.shard-*.tmp-*")))
    write_json_atomic(
        out / PLAN_NAME,
        {"format": FORMAT_NAME, "fingerprint": fingerprint, "options": options.to_json()},
    )
    if options.mode_rules.part_per_exposure:
        parts = [(part_folder(out, t), t) for t in options.exposures]
    else:
        parts = [(out, None)]
    tasks, kept, number = [], 0, 0
    ranges = shard_ranges(options.count, options.shard_size)
    for folder, exposure in parts:
        folder.mkdir(exist_ok=True)
        complete = complete_shards(folder, ranges)
        for shard, first, count in ranges:
            mine = shard_index is None or number % num_shards == shard_index
            number += 1
            if not mine:
                continue
            if shard in complete:
                kept += 1
            else:
                tasks.append(ShardTask(folder, exposure, shard, first, count))
    return parts, tasks, kept


@contextlib.contextmanager
def _interrupt_flag() -> Iterator[threading.Event]:
    """Turn Ctrl-C into a flag that the generation loops check between samples.

    A KeyboardInterrupt raised inside numba-compiled code surfaces as a SystemError; checking a
    flag at safe points stops cleanly instead, with no shard half-built.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# A pool worker's writer and the queue its progress goes to, set once by the pool's initializer.
_POOL_WORKER: tuple[ShardWriter, Any] | None = None


def _start_pool_worker(writer: ShardWriter, progress: Any) -> None:
    global _POOL_WORKER
    # Ctrl-C reaches the whole process group; the parent alone decides what stops (see
    # _interrupt_flag), so a worker finishes its shard instead of dying inside numba code.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _POOL_WORKER = (writer, progress)


def _pool_task(task: ShardTask) -> dict[str, Any]:
    writer, progress = _POOL_WORKER
    return writer(task, lambda: progress.put(1))


def run_generation(
    plan: GenerationPlan,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int], None] | None = None,
    preview: bool = True,
) -> GenerationReport:
    """Write the planned shards, then (unless this run is one part) the manifests and preview.

    Parameters
    ----------
    plan : GenerationPlan
        From :func:`plan_generation`.
    workers : int, optional
        Processes on this machine, >= 1. 1 (default) works in this process.
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler (``tcp://host:8786``); its workers must see
        the output folder. Needs the ``csb-generator[dask]`` extra.
    progress : callable, optional
        Called with a number of samples each time that many are done.
    preview : bool, optional
        Write ``preview.png`` (blurred | sharp | kernel) in each dataset folder. Default True.

    Returns
    -------
    GenerationReport
    """
    if workers < 1:
        raise OptionError("workers", f"must be >= 1, got {workers}")
    try:
        return _run_locked(plan, workers, scheduler, progress, preview)
    finally:
        _unlock(plan)


def _run_locked(
    plan: GenerationPlan,
    workers: int,
    scheduler: str | None,
    progress: Callable[[int], None] | None,
    preview: bool,
) -> GenerationReport:
    report = GenerationReport(out=plan.out, shards_kept=plan.kept, skipped=plan.skipped)
    maker = plan.maker
    writer = ShardWriter(plan.options, plan.sources, plan.fingerprint, maker)
    tick = progress or (lambda count: None)
    with _interrupt_flag() as stop:
        if scheduler is not None:
            records = _run_on_dask(writer, plan.tasks, scheduler, tick, stop)
        elif workers == 1 or len(plan.tasks) <= 1:
            records = [writer(task, lambda: tick(1), stop) for task in plan.tasks]
        else:
            records = _run_in_pool(writer, plan.tasks, workers, tick, stop)
    report.shards_written = len(records)
    report.samples_written = sum(record["count"] for record in records)
    if plan.is_part:
        return report
    ranges = shard_ranges(plan.options.count, plan.options.shard_size)
    missing = [
        str(folder / shard_name(shard))
        for folder, _ in plan.parts
        for shard in sorted({shard for shard, _, _ in ranges} - complete_shards(folder, ranges))
    ]
    if missing:
        raise OutputError(f"shards are missing or damaged after the run: {missing[:5]}")
    report.manifest, report.redraws, report.padded = write_manifests(plan, maker)
    if preview:
        for folder, exposure in plan.parts:
            shown = range(min(PREVIEW_SAMPLES, plan.options.count))
            write_preview(folder / PREVIEW_NAME, [maker(i, exposure) for i in shown])
    return report


def _run_in_pool(
    writer: ShardWriter,
    tasks: Sequence[ShardTask],
    workers: int,
    tick: Callable[[int], None],
    stop: threading.Event,
) -> list[dict[str, Any]]:
    # spawn: the parent may hold threads (progress bars) and open HDF5 files, which fork copies.
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    records = []
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start_pool_worker,
        initargs=(writer, queue),
    ) as pool:
        futures = [pool.submit(_pool_task, task) for task in tasks]
        pending = set(futures)
        try:
            while pending:
                if stop.is_set():  # shards being written finish; the others never start
                    raise KeyboardInterrupt
                _drain(queue, tick, timeout=0.1)
                done = {future for future in pending if future.done()}
                records.extend(future.result() for future in done)
                pending -= done
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        _drain(queue, tick, timeout=0.0)
    return records


def _drain(queue: Any, tick: Callable[[int], None], timeout: float) -> None:
    import queue as queue_module

    try:
        tick(queue.get(timeout=timeout) if timeout else queue.get_nowait())
    except queue_module.Empty:
        return
    while True:
        try:
            tick(queue.get_nowait())
        except queue_module.Empty:
            return


def _run_on_dask(
    writer: ShardWriter,
    tasks: Sequence[ShardTask],
    scheduler: str,
    tick: Callable[[int], None],
    stop: threading.Event,
) -> list[dict[str, Any]]:
    try:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_as_completed
    except ImportError as error:
        raise RuntimeError(
            "`scheduler` needs dask.distributed: pip install 'csb-generator[dask]'"
        ) from error
    records = []
    with Client(scheduler, timeout="30s") as client:
        futures = [client.submit(writer, task, pure=False) for task in tasks]
        for future in dask_as_completed(futures):
            if stop.is_set():
                client.cancel(futures)
                raise KeyboardInterrupt
            record = future.result()
            records.append(record)
            tick(record["count"])
    return records


def generate_dataset(
    options: DatasetOptions,
    out: str | Path,
    *,
    source_root: str | Path | None = None,
    overwrite: bool = False,
    workers: int = 1,
    shard_index: int | None = None,
    num_shards: int | None = None,
    scheduler: str | None = None,
    preview: bool = True,
    progress: Callable[[int], None] | None = None,
) -> GenerationReport:
    """Generate (or resume, or complete) a dataset: :func:`plan_generation` then
    :func:`run_generation`; see them for the parameters.

    Examples
    --------
    >>> from csb_generator import generate_dataset, resolve_options
    >>> options = resolve_options("random", count=4, shard_size=2)
    >>> report = generate_dataset(options, "example-shards")  # doctest: +SKIP
    >>> report.samples_written                               # doctest: +SKIP
    4
    """
    plan = plan_generation(
        options,
        out,
        source_root=source_root,
        overwrite=overwrite,
        shard_index=shard_index,
        num_shards=num_shards,
    )
    return run_generation(
        plan, workers=workers, scheduler=scheduler, progress=progress, preview=preview
    )
