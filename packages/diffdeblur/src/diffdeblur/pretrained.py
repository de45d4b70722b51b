"""Restorers that ship inside the package, ready to use without training.

A bundled model is a weights file in the package's ``models`` folder, written by
:func:`diffdeblur.checkpoint.export_model` from a training run: the EMA weights in float16, the
configuration, and the facts of its model card (the command that trained it, its data, steps,
samples seen and wall time). It loads like a checkpoint, with ``weights_only=True``. Its model
card, with its scores and limits, is docs/models.md.

Examples
--------
>>> from diffdeblur.pretrained import BUNDLED_MODELS, DEFAULT_MODEL
>>> DEFAULT_MODEL in BUNDLED_MODELS
True
>>> from diffdeblur import load_restorer
>>> model = load_restorer("csb-universal")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["BUNDLED_MODELS", "DEFAULT_MODEL", "BundledModel", "bundled_model_path", "locate_model"]


@dataclass(frozen=True)
class BundledModel:
    """A restorer whose weights ship with the package.

    Attributes
    ----------
    name : str
        What ``--model`` and :func:`~diffdeblur.load_restorer` take.
    filename : str
        Its file in the package's ``models`` folder.
    summary : str
        One line: what it restores and how it was trained.
    """

    name: str
    filename: str
    summary: str


#: The bundled models by name.
BUNDLED_MODELS: dict[str, BundledModel] = {
    model.name: model
    for model in (
        BundledModel(
            "csb-universal",
            "csb-universal.pt",
            "blind; tiny U-Net, bridge from the blurred image, one network pass; trained on "
            "every csb-generate degradation of the thesis's experiments (PSF 16-64 px, Table 4's "
            "noise, T-sweeps), with Charbonnier loss, then with an LPIPS term added",
        ),
    )
}

#: What ``diffdeblur restore`` uses when it is given neither ``--checkpoint`` nor ``--model``.
DEFAULT_MODEL = "csb-universal"


def bundled_model_path(name: str) -> Path:
    """The weights file of the bundled model ``name``.

    Raises
    ------
    KeyError
        If no bundled model has that name (the message lists them).
    FileNotFoundError
        If the installed package lacks the file (a source tree whose weights were not trained,
        or a package built without them).
    """
    if name not in BUNDLED_MODELS:
        raise KeyError(
            f"no bundled model is called {name!r}; the bundled models are "
            + ", ".join(BUNDLED_MODELS)
        )
    path = Path(str(resources.files("diffdeblur") / "models" / BUNDLED_MODELS[name].filename))
    if not path.is_file():
        raise FileNotFoundError(
            f"the bundled model {name} is not installed: {path} is missing (retrain it with "
            "experiments/pretrained.py, or install a diffdeblur release)"
        )
    return path


def locate_model(path_or_name: str | Path) -> Path:
    """A checkpoint's path, or the file of a bundled model named instead.

    A file of that name wins over a bundled model, so a checkpoint called ``csb-universal`` in
    the current folder is still reachable.
    """
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in BUNDLED_MODELS:
        return bundled_model_path(str(path_or_name))
    return path
