"""Where the installed command lines are: for the tests, and the benchmarks that import this."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def console_script(name: str) -> Path:
    """The console script ``name`` (``csb-generate``, ``diffdeblur``, ``torchrun``).

    The one beside the running interpreter comes first, so that a virtual environment's command
    is used even when the environment is not activated; else the one on ``PATH``.

    Raises
    ------
    FileNotFoundError
        If neither exists.
    """
    beside = Path(sys.executable).with_name(name)
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed beside {sys.executable} or on PATH")
    return Path(found)
