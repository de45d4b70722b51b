"""What the experiment scripts share: the training and held-out photographs, and running the
command-line tools with a log per command.

The scripts import it from beside themselves (``python experiments/<script>.py`` puts this
folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from csb_generator import BUILTIN_PHOTOGRAPHS, degrade, random_psf, read_image
from photographs import copy_for_training, extra_photographs

# The tests' helper finds the installed commands; one copy serves tests, benchmarks and these.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from console_scripts import console_script

#: Built-in photographs held out of every training set; all test crops come from them.
TEST_PHOTOGRAPHS = ("chelsea", "coffee")

#: The command-line tools the scripts run (strings: they are joined into the logged commands).
CSB_GENERATE = str(console_script("csb-generate"))
DIFFDEBLUR = str(console_script("diffdeblur"))


def add_spin_option(parser: argparse.ArgumentParser) -> None:
    """The scripts' ``--spin``: their training processes spin-wait between parallel regions."""
    parser.add_argument(
        "--spin",
        action="store_true",
        help="training processes spin-wait (OMP_WAIT_POLICY=ACTIVE): faster on an idle machine",
    )


def training_environment(spin: bool) -> dict[str, str]:
    """The environment of a training process: spinning when ``spin``.

    Only training spins: spinning changes how much a time budget trains, while scoring is not
    timed, and a scoring process left spinning would take a core from the next training run.
    """
    return {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"} if spin else dict(os.environ)


def run_logged(
    command: list[str], log: Path, record: Path | None = None, env: dict[str, str] | None = None
) -> float:
    """Run ``command`` with its output in ``log``; returns its wall time in seconds.

    The command is printed, and appended to ``record`` when given; ``env`` replaces the
    environment. A failure stops the script with the command and the end of its log.
    """
    line = " ".join(command)
    print("$", line, flush=True)
    if record is not None:
        with open(record, "a") as handle:
            handle.write(line + "\n")
    started = time.perf_counter()
    with open(log, "w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"command failed ({result.returncode}): {line}\n{tail}")
    return time.perf_counter() - started


def photo_folders(work: Path, extra: str = "none") -> tuple[Path, Path]:
    """Training and held-out photographs in ``work``; returns the two folders.

    The training folder holds the built-in photographs but the held-out ones, plus the packaged
    photographs of ``extra`` (see `photographs.extra_photographs`); its name says which, so that
    runs with different selections never share a folder. The held-out folder is the same for
    every selection.
    """
    train = work / ("photos-train" if extra == "none" else f"photos-train-{extra}")
    test = work / "photos-test"
    packaged = extra_photographs(extra)
    for folder in (train, test):
        folder.mkdir(parents=True, exist_ok=True)
    for photograph in BUILTIN_PHOTOGRAPHS.values():
        folder = test if photograph.name in TEST_PHOTOGRAPHS else train
        target = folder / photograph.filename
        if not target.exists():
            shutil.copy(photograph.path, target)
    for photograph in packaged:
        copy_for_training(photograph, train)
    return train, test


def blurred_photograph(work: Path, seed: int) -> tuple[Path, Path, np.ndarray]:
    """``chelsea`` blurred by a camera-shake kernel: the blurred file, the sharp one, the kernel."""
    from csb_generator import write_image

    sharp = read_image(BUILTIN_PHOTOGRAPHS["chelsea"].path)
    kernel = random_psf(np.random.default_rng(seed), 32).kernel
    blurred = degrade(sharp, kernel)
    blurred_path, sharp_path = work / "chelsea-blurred.png", work / "chelsea-sharp.png"
    write_image(blurred_path, np.rint(blurred * 255).astype(np.uint8))
    write_image(sharp_path, sharp)
    return blurred_path, sharp_path, kernel


def picture(out: Path, rows: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> None:
    """A grid of labelled images, one row per ``(name, [(label, image), ...])``, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(images) for _, images in rows)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(3.2 * columns, 2.6 * len(rows)), dpi=110, squeeze=False
    )
    for axis in axes.ravel():
        axis.axis("off")
    for row, (name, images) in enumerate(rows):
        for column, (label, image) in enumerate(images):
            shown = image[..., 0] if image.shape[-1] == 1 else image
            # As the file is: a grey image is drawn on its dtype's full scale, not stretched to
            # its own darkest and brightest pixels (imshow's default).
            top = np.iinfo(shown.dtype).max if np.issubdtype(shown.dtype, np.integer) else 1.0
            axes[row, column].imshow(
                shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=top
            )
            axes[row, column].set_title(f"{name}: {label}" if column == 0 else label, fontsize=8)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
