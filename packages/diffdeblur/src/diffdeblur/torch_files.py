"""Files written by ``torch.save`` that hold plain data only: atomic writes, reads that cannot
run code.

Checkpoints and LPIPS weights are both such files: containers, numbers, strings and tensors,
read with ``torch.load(weights_only=True)`` so that a file carrying any other pickled object is
refused instead of executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from csb_generator import atomic_output, remove_abandoned_temporaries

__all__ = ["is_torch_archive", "load_plain", "save_atomic"]

# torch.save writes a zip archive.
_ZIP_MAGIC = b"PK\x03\x04"


def is_torch_archive(path: str | Path) -> bool:
    """Whether ``path`` starts like a ``torch.save`` file (a zip archive)."""
    with open(path, "rb") as handle:
        return handle.read(4) == _ZIP_MAGIC


def save_atomic(path: str | Path, obj: Any) -> None:
    """``torch.save`` to a temporary name in the same folder, flush, then rename to ``path``.

    The temporaries that killed writers left beside ``path`` are removed first.

    Raises
    ------
    OSError
        If the write fails (a full disk, say); ``path`` is then left as it was.
    """
    path = Path(path)
    remove_abandoned_temporaries(path)
    with atomic_output(path) as handle:
        try:
            torch.save(obj, handle)
        except RuntimeError as error:  # torch's zip writer reports a failed write this way
            raise OSError(f"writing {path} failed (is the disk full?): {error}") from error


def load_plain(
    path: str | Path,
    map_location: str | torch.device,
    error: type[Exception],
    what: str,
) -> Any:
    """``torch.load(weights_only=True)``, with every failure raised as ``error`` naming the file.

    Parameters
    ----------
    path : str or Path
    map_location : str or torch.device
    error : exception class
        Raised (with a message naming ``path``) for a refused or damaged file.
    what : str
        What the file is, for the messages (e.g. ``"checkpoint"``).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as failure:
        raise error(
            f"refused to load {path}: it holds objects other than tensors and plain data, which "
            f"could run code ({failure.__class__.__name__}: {str(failure).splitlines()[0]})"
        ) from None
    except Exception as failure:  # a damaged archive fails in many ways inside torch
        reason = str(failure) or failure.__class__.__name__
        raise error(f"cannot read {what} {path}: {reason}") from failure
