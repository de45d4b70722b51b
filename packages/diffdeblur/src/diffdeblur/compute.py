"""How the arithmetic runs: the device, CPU threads and floating-point precision.

On a CPU with native bfloat16 (AVX-512 BF16 or AMX), bfloat16 autocast runs the convolutions
about twice as fast as float32 with the same quality (``docs/performance.md``), and a process
should use every core it is given: ``auto`` picks both. On CUDA, ``auto`` is float16 autocast
with loss scaling; elsewhere float32.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from .config import ConfigError

__all__ = [
    "PRECISIONS",
    "autocast",
    "available_cpus",
    "cpu_has_native_bf16",
    "resolve_device",
    "resolve_precision",
    "set_threads",
]

#: The ``--precision`` choices; ``auto`` resolves to one of the others.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# /proc/cpuinfo flags of the instructions that run bfloat16 arithmetic natively.
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def resolve_device(option: str) -> str:
    """The device a ``device`` option names: ``auto`` is CUDA when there is one, else the CPU.

    Parameters
    ----------
    option : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or any other name ``torch.device`` takes.

    Raises
    ------
    ValueError
        For ``"cuda"`` on a machine without a CUDA device.

    Examples
    --------
    >>> resolve_device("cpu")
    'cpu'
    """
    if option == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if option == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda: no CUDA device is available")
    return option


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), not the machine's count: under a job
    scheduler or ``taskset`` the two differ, and more threads than CPUs only spin."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to ``threads`` (default: :func:`available_cpus`); returns it.

    Raises
    ------
    ValueError
        If ``threads`` < 1.
    """
    count = available_cpus() if threads is None else int(threads)
    if count < 1:
        raise ConfigError("threads", f"must be >= 1, got {threads}")
    torch.set_num_threads(count)
    return count


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU runs bfloat16 natively (AVX-512 BF16 or AMX), from its flags.

    Parameters
    ----------
    cpuinfo : str or Path
        The file of CPU flags (Linux); elsewhere (no such file) the answer is False, and ``auto``
        stays in float32.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_BF16_FLAGS & set(line.partition(":")[2].split()))
    return False


def resolve_precision(option: str, device: torch.device | str) -> str:
    """The precision ``option`` stands for on ``device``: ``fp32``, ``bf16`` or ``fp16``.

    ``auto``: ``fp16`` on CUDA, ``bf16`` on a CPU with native bfloat16, else ``fp32``.

    Examples
    --------
    >>> resolve_precision("fp32", "cpu")
    'fp32'
    >>> resolve_precision("auto", "cuda")
    'fp16'
    """
    if option not in PRECISIONS:
        raise ConfigError("precision", f"must be one of {', '.join(PRECISIONS)}, got {option!r}")
    if option != "auto":
        return option
    kind = torch.device(device).type
    if kind == "cuda":
        return "fp16"
    if kind == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """Autocast to ``precision`` (``bf16`` or ``fp16``) on ``device``; nothing for ``fp32``."""
    dtype = _AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield
