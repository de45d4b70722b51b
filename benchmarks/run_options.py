"""The command-line options the model benchmarks share: where they run and where they write.

``bench_training.py``, ``bench_sampling.py`` and ``bench_restore.py`` import it from beside
themselves (``python benchmarks/<script>.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_run_options(
    parser: argparse.ArgumentParser, results: Path, threads_help: str, quick_help: str
) -> None:
    """Add ``--device``, ``--threads``, ``--out`` and ``--quick`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The benchmark's parser.
    results : Path
        Default of ``--out``, the folder the results files go to.
    threads_help, quick_help : str
        What ``--threads`` and ``--quick`` mean for this benchmark.
    """
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default cpu")
    parser.add_argument("--threads", type=int, default=None, help=threads_help)
    parser.add_argument("--out", type=Path, default=results, help="results folder")
    parser.add_argument("--quick", action="store_true", help=quick_help)
