"""Fixtures of the command-line tests: a small folder of real photographs, and one dataset per
mode written by ``csb-generate`` in subprocesses (run concurrently, once per session)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_support import KERNEL_FILE_ARRAY, TINY, run_many, trajectory_file_array

#: Crops (top, left, height, width) of real photographs shipped with scikit-image, saved as PNG:
#: small enough for fast runs, larger than a 64 px crop plus a 16 px kernel's reach.
PHOTO_CROPS = {
    "astronaut.png": ("astronaut.png", (100, 150, 96, 120)),
    "cats/chelsea.png": ("chelsea.png", (100, 200, 110, 100)),
    "coffee.png": ("coffee.png", (150, 200, 100, 140)),
}


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A source folder (with a sub-folder) of three real photographs, about 100 x 120 px."""
    from csb_generator import builtin_folder

    folder = tmp_path_factory.mktemp("photos")
    for key, (name, (top, left, height, width)) in PHOTO_CROPS.items():
        with Image.open(builtin_folder() / name) as image:
            array = np.asarray(image.convert("RGB"))[top : top + height, left : left + width]
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    return folder


@dataclass
class ModeRun:
    """One ``csb-generate`` run of the session's mode datasets."""

    name: str
    args: list[str]
    out: Path
    result: CompletedProcess | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
def mode_runs(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModeRun]:
    """Every mode (and every kernel and trajectory kind) generated once, concurrently."""
    root = tmp_path_factory.mktemp("modes")
    kernel_file = root / "kernel.npy"
    np.save(kernel_file, KERNEL_FILE_ARRAY)
    trajectory_file = root / "trajectory-in.npy"
    np.save(trajectory_file, trajectory_file_array())
    specs: dict[str, tuple[list[str], bool]] = {
        # name: (mode-specific arguments, use the built-in photographs instead of `photos`)
        "fixed-random": (
            "--mode fixed --kernel random --store-trajectories --count 10 --shard-size 4".split(),
            False,
        ),
        "fixed-disk": (
            "--mode fixed --kernel disk:3 --store-trajectories --count 8 --shard-size 4".split(),
            False,
        ),
        "fixed-linear": (
            "--mode fixed --kernel linear:6:30 --count 8 --shard-size 8".split(),
            False,
        ),
        "fixed-file": (
            [*"--mode fixed --count 8 --shard-size 3 --kernel".split(), str(kernel_file)],
            False,
        ),
        "random": (
            "--mode random --store-trajectories --compression lzf --preview --count 12 "
            "--shard-size 5".split(),
            False,
        ),
        "random-uint8": (
            "--mode random --dtype uint8 --count 12 --shard-size 5".split(),
            False,
        ),
        "random-builtin": ("--mode random --count 8 --shard-size 4".split(), True),
        "noisy": (
            "--mode noisy --exposure 1,1/2,1/4 --lam 20000,inf --sigma 0,2 --count 16 "
            "--shard-size 6".split(),
            False,
        ),
        "tsweep-random": (
            "--mode tsweep --trajectory random --exposure 1,1/2,1/4 --preview --count 6 "
            "--shard-size 4".split(),
            False,
        ),
        "tsweep-linear": (
            "--mode tsweep --trajectory linear --lam inf --sigma 8 --exposure 1,1/2,1/4 "
            "--count 6 --shard-size 4".split(),
            False,
        ),
        "tsweep-linear-seed1": (
            "--mode tsweep --trajectory linear --lam inf --sigma 8 --exposure 1,1/2,1/4 "
            "--count 6 --shard-size 4 --seed 1".split(),
            False,
        ),
        "tsweep-file": (
            [*"--mode tsweep --count 4 --shard-size 4 --trajectory".split(), str(trajectory_file)],
            False,
        ),
    }
    runs = {}
    for name, (arguments, builtin) in specs.items():
        out = root / name
        source = [] if builtin else ["--source", str(photos)]
        preview = [] if "--preview" in arguments else ["--no-preview"]
        args = [*arguments, *TINY, *source, *preview, "--out", str(out)]
        runs[name] = ModeRun(name, args, out)
    runs["fixed-file"].extra["kernel_file"] = kernel_file
    runs["tsweep-file"].extra["trajectory_file"] = trajectory_file
    results = run_many(run.args for run in runs.values())
    for run, result in zip(runs.values(), results, strict=True):
        run.result = result
    return runs
