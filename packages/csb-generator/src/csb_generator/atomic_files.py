"""Atomic file writes: a file appears under its final name complete, or not at all.

Every file that csb-generate and diffdeblur write for a user (shards, manifests, progress
records, checkpoints, restored images, reports) goes through :func:`atomic_output`, so a killed
run or a full disk never leaves a half-written file under a final name, and a rerun can trust
whatever it finds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_output", "remove_abandoned_temporaries", "temporary_name", "write_bytes_atomic"]


def temporary_name(path: str | Path) -> Path:
    """Where a write to ``path`` goes before its rename: ``.NAME.tmp-PID`` in the same folder.

    Hidden, so that no glob for finished files (``shard-*.h5``) sees it, and tagged with the
    writer's process ID, so that two writers never share one and a cleaner can tell whether its
    writer is still alive.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False


def remove_abandoned_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of writes to ``path`` whose writer died before its rename.

    A killed writer leaves one :func:`temporary_name` per kill; those of live processes (another
    writer's, or this process's own) are left alone.

    Parameters
    ----------
    path : str or Path
        The final file name whose temporaries to look for.

    Returns
    -------
    list of Path
        The temporaries removed.
    """
    path = Path(path)
    removed = []
    for temporary in path.parent.glob(f".{path.name}.tmp-*"):
        pid = temporary.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _process_is_gone(int(pid)):
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a directory
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file handle whose contents replace ``path`` when the block ends without error.

    The data go to :func:`temporary_name` ``(path)``, are flushed to disk, and the temporary is
    renamed over ``path`` (atomic on POSIX and Windows); the folder is then synced so that the
    rename survives a power cut. If the block raises, or the write fails (a full disk), the
    temporary is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : str or Path
        Final file name; its folder must exist.

    Yields
    ------
    file object
        Open for binary writing.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_output(folder / "notes.txt") as handle:
    ...     _ = handle.write(b"complete")
    >>> (folder / "notes.txt").read_bytes()
    b'complete'
    >>> sorted(p.name for p in folder.iterdir())
    ['notes.txt']
    """
    path = Path(path)
    temporary = temporary_name(path)
    try:
        with open(temporary, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_output`.

    Raises
    ------
    OSError
        If the write fails; ``path`` is then left as it was.
    """
    with atomic_output(path) as handle:
        handle.write(data)
