"""What the benchmarks record about the machine they ran on."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or "unknown" where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def ram_gib() -> float | None:
    """Total memory in GiB from /proc/meminfo (one decimal), or None where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def describe(root: Path | None = None) -> dict:
    """The machine, the software and the moment of a benchmark run, for its results file.

    Parameters
    ----------
    root : Path, optional
        The git checkout whose commit is recorded (default: the repository holding this file).

    Returns
    -------
    dict
        ``date`` (UTC, ISO), ``cpus``, ``cpu_model``, ``ram_gib``, ``platform``, ``python``, the
        versions of ``torch``, ``numpy``, ``diffdeblur`` and ``csb-generator`` (None where not
        installed), ``git_commit``, ``git_modified`` (whether tracked files differ from it),
        ``omp_num_threads`` (the environment variable, or None) and ``load_average_at_start``.
        torch is not imported here: the caller records the threads it used.
    """
    root = root or Path(__file__).resolve().parents[1]

    def git(*arguments: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *arguments], cwd=root, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    def version(distribution: str) -> str | None:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return None

    ram = ram_gib()
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "ram_gib": ram,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "numpy": version("numpy"),
        "diffdeblur": version("diffdeblur"),
        "csb_generator": version("csb-generator"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_modified": None if changes is None else bool(changes),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": list(os.getloadavg()),
    }
