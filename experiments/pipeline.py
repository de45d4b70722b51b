"""What the experiment scripts share: the training and held-out photographs, and running the
command-line tools with a log per command.

The scripts import it from beside themselves (``python experiments/<script>.py`` puts this
folder on ``sys.path``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from csb_generator.images import BUILTIN_PHOTOGRAPHS
from photographs import copy_for_training, extra_photographs

#: Built-in photographs held out of every training set; all test crops come from them.
TEST_PHOTOGRAPHS = ("chelsea", "coffee")


def console_script(name: str) -> str:
    """The console script ``name`` beside this interpreter, else ``name`` (found on PATH)."""
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else name


#: The command-line tools the scripts run.
CSB_GENERATE = console_script("csb-generate")
DIFFDEBLUR = console_script("diffdeblur")


def run_logged(command: list[str], log: Path, record: Path | None = None) -> float:
    """Run ``command`` with its output in ``log``; returns its wall time in seconds.

    The command is printed, and appended to ``record`` when given. A failure stops the script
    with the command and the end of its log.
    """
    line = " ".join(command)
    print("$", line, flush=True)
    if record is not None:
        with open(record, "a") as handle:
            handle.write(line + "\n")
    started = time.perf_counter()
    with open(log, "w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
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
