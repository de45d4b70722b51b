"""Tiny inputs for the ``--quick`` checks of the diffdeblur benchmarks (seconds, not results).

``bench_sampling.py``, ``bench_restore.py`` and ``bench_training.py`` need a ``csb-generate``
dataset and, the first two, a trained checkpoint. With ``--quick`` and none given they make them
here, in a temporary folder, with the real command lines:

    csb-generate --mode random --count 16 --image-size 32 --psf-size 16 --no-preview --out DATA
    diffdeblur train --data DATA --out RUN --variant tiny --parametrisation residual \\
        --timesteps 50 --patch-size 32 --batch-size 4 --max-steps 2 --epochs 1 \\
        --samples-per-epoch 8 --device cpu --quiet

The checkpoint has seen two optimiser steps: it restores badly, and is only there so that every
code path of a benchmark runs. Numbers measured with it mean nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# The tests' helper finds the installed commands; one copy serves both.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from console_scripts import console_script

__all__ = ["TINY_SIZE", "console_script", "tiny_checkpoint", "tiny_dataset"]

#: Side of the tiny dataset's crops and of the tiny checkpoint's training patches, px.
TINY_SIZE = 32


def tiny_dataset(out: Path, *, count: int = 16, image_size: int = TINY_SIZE, seed: int = 0) -> Path:
    """Generate a tiny ``random``-mode dataset (16 px kernels) with ``csb-generate``.

    Parameters
    ----------
    out : Path
        Dataset folder to write (must not hold another dataset).
    count : int
        Samples.
    image_size : int
        Crop side, px.
    seed : int
        Dataset seed.

    Returns
    -------
    Path
        ``out``.
    """
    command = [
        console_script("csb-generate"),
        *("--mode", "random", "--count", str(count), "--image-size", str(image_size)),
        *("--psf-size", "16", "--seed", str(seed), "--no-preview", "--out", str(out)),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return out


def tiny_checkpoint(data: Path, run: Path) -> Path:
    """Train a ``tiny`` residual model for two steps on ``data`` (32 px patches, 50 timesteps).

    Parameters
    ----------
    data : Path
        A dataset of crops of at least 32 px (:func:`tiny_dataset`).
    run : Path
        Run folder to write.

    Returns
    -------
    Path
        The checkpoint file, ``run / "checkpoint.pt"``.
    """
    command = [
        console_script("diffdeblur"),
        "train",
        *("--data", str(data), "--out", str(run), "--variant", "tiny"),
        *("--parametrisation", "residual", "--timesteps", "50", "--patch-size", str(TINY_SIZE)),
        *("--batch-size", "4", "--max-steps", "2", "--epochs", "1", "--samples-per-epoch", "8"),
        *("--device", "cpu", "--quiet"),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return run / "checkpoint.pt"
