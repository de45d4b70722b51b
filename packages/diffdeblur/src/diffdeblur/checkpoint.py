"""Checkpoints: written atomically, read without running pickled code.

A checkpoint is a ``torch.save`` file of plain containers, numbers, strings and tensors only: a
training checkpoint holds a :class:`TrainingState` (the model and EMA weights, the optimiser
state, the step, the random-generator states, and the configurations as JSON-compatible dicts);
an exported model (:func:`export_model`) only what restoring needs. It is therefore loaded with
``weights_only=True``, and a file that carries any other object (a crafted pickle payload, or a
checkpoint of another program) is refused instead of executed.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from .config import RestorerConfig, check_limits
from .pretrained import locate_model
from .restorer import Restorer
from .torch_files import is_torch_archive, load_plain, save_atomic

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "TrainingState",
    "export_model",
    "load_checkpoint",
    "load_restorer",
    "load_training_state",
    "restorer_from_checkpoint",
    "save_checkpoint",
    "save_training_state",
    "training_patch_size",
]

CHECKPOINT_FORMAT = "diffdeblur-checkpoint-1"


class CheckpointError(ValueError):
    """A file is not a readable diffdeblur checkpoint; the message names it and says why."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary name, flush, rename).

    Parameters
    ----------
    path : str or Path
        Final file name; its folder must exist.
    state : dict
        Plain containers, numbers, strings and tensors only (what ``weights_only`` loading
        accepts). ``format`` is added.
    """
    save_atomic(path, {"format": CHECKPOINT_FORMAT, **state})


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Raises
    ------
    CheckpointError
        If the file is missing, damaged, carries objects other than tensors and plain data (it
        is then never executed), or is not a diffdeblur checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not is_torch_archive(path):
        what = "is empty" if path.stat().st_size == 0 else "is not a PyTorch checkpoint"
        raise CheckpointError(f"checkpoint {path} {what} (not a zip archive)")
    state = load_plain(path, map_location, CheckpointError, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} file")
    return state


@dataclass
class TrainingState:
    """What a training checkpoint holds: all a resumed run needs to go on exactly as an
    uninterrupted one would.

    Attributes
    ----------
    model, ema : dict
        State dicts of the restorer being trained and of its exponential moving average.
    optimiser : dict
        The optimiser's state dict.
    step : int
        Optimiser steps done.
    rng : dict
        ``{"noise": [...], "torch": [...]}``: each process's noise generator state and global
        torch generator state, by rank.
    train : dict
        The run's options by their flat names
        (:meth:`diffdeblur.train_config.TrainConfig.options`).
    restorer : dict
        The network's configuration (:meth:`diffdeblur.config.RestorerConfig.to_dict`).
    data_fingerprint : str or None
        The training data's fingerprint (:attr:`diffdeblur.data.ShardCollection.fingerprint`);
        None in checkpoints written before it was stored.
    """

    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimiser: dict[str, Any]
    step: int
    rng: dict[str, list[torch.Tensor]]
    train: dict[str, Any]
    restorer: dict[str, Any]
    data_fingerprint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's entries (the tensors are not copied)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], path: str | Path) -> TrainingState:
        """The training state of a checkpoint read by :func:`load_checkpoint` from ``path``.

        Raises
        ------
        CheckpointError
            If an entry is missing: an exported model, for example, cannot be trained on.
        """
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in state]
        if missing:
            raise CheckpointError(
                f"{path} is not a training checkpoint (it has no {', '.join(missing)}); an "
                "exported model can start a run (`init`) but not be resumed"
            )
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})


def save_training_state(path: str | Path, state: TrainingState) -> None:
    """Write a training checkpoint atomically (:func:`save_checkpoint`)."""
    save_checkpoint(path, state.to_dict())


def load_training_state(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> TrainingState:
    """Read a training checkpoint: :func:`load_checkpoint`, then
    :meth:`TrainingState.from_checkpoint`."""
    return TrainingState.from_checkpoint(load_checkpoint(path, map_location), path)


def load_restorer(
    path: str | Path, map_location: str | torch.device = "cpu", *, ema: bool = True
) -> Restorer:
    """Rebuild the restorer of a checkpoint or of a bundled model, in evaluation mode.

    Parameters
    ----------
    path : str or Path
        A checkpoint, an exported model (:func:`export_model`), or the name of a bundled model
        (``diffdeblur models`` lists them; :mod:`diffdeblur.pretrained`).
    map_location : str or torch.device
        Where to put the weights.
    ema : bool
        Use the EMA weights (default; what the thesis restores with), else the raw weights.
    """
    path = locate_model(path)
    return restorer_from_checkpoint(load_checkpoint(path, map_location), path, ema=ema)


def export_model(checkpoint: str | Path, out: str | Path, card: dict[str, Any]) -> None:
    """Write a checkpoint's EMA weights in float16, with its configuration and a model card.

    The file is a checkpoint without the optimiser, the raw weights and the random states: what
    restoring needs, at a quarter of a training checkpoint's size. :func:`load_restorer` loads it
    (the weights return to float32 in the network); it cannot resume training.

    Parameters
    ----------
    checkpoint : str or Path
        A training checkpoint (``<run>/checkpoint.pt``).
    out : str or Path
        The file to write, atomically; its folder must exist.
    card : dict
        Plain data (strings, numbers, lists, dicts): the facts of its model card, such as the
        command that trained it, its data, steps and wall time. Stored under ``"card"``.

    Raises
    ------
    CheckpointError
        If ``checkpoint`` is not a readable checkpoint, or its EMA weights do not fit its
        configuration.
    """
    state = load_checkpoint(checkpoint)
    restorer_from_checkpoint(state, checkpoint)  # refuses what would not load again
    training = TrainingState.from_checkpoint(state, checkpoint)
    weights = {
        name: tensor.half() if tensor.is_floating_point() else tensor
        for name, tensor in training.ema.items()
    }
    save_checkpoint(
        out,
        {
            "restorer": training.restorer,
            "ema": weights,
            "step": training.step,
            "train": training.train,
            "data_fingerprint": training.data_fingerprint,
            "card": card,
        },
    )


def restorer_from_checkpoint(
    state: dict[str, Any], path: str | Path, *, ema: bool = True
) -> Restorer:
    """The restorer of a checkpoint already read by :func:`load_checkpoint`, in evaluation mode,
    on the device its weights were mapped to.

    Parameters
    ----------
    state : dict
        What :func:`load_checkpoint` returned.
    path : str or Path
        The file it came from, for error messages.
    ema : bool
        Use the EMA weights (default), else the raw weights.
    """
    try:
        config = RestorerConfig.from_dict(state["restorer"])
        check_limits(config)  # before the network is allocated
        if not ema and "model" not in state and "ema" in state:
            raise ValueError("it holds the EMA weights only (an exported model): use the EMA")
        weights = state["ema" if ema else "model"]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} lacks a valid configuration or weights: {error}") from error
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: its weights are not a state dict")
    broken = [
        name
        for name, tensor in weights.items()
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not tensor.isfinite().all()
    ]
    if broken:
        raise CheckpointError(
            f"{path}: {len(broken)} weight tensors hold NaN or inf (first: {broken[0]}); the run "
            "that wrote it diverged. Use an earlier checkpoint, or retrain with a lower `lr`"
        )
    model = Restorer(config)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: the weights do not fit its configuration: {error}"
        ) from None
    device = next(iter(weights.values())).device if weights else torch.device("cpu")
    return model.to(device).eval()


def training_patch_size(state: dict[str, Any], default: int = 64) -> int:
    """The patch side in pixels a checkpoint's model was trained on (``default`` if unknown)."""
    train = state.get("train")
    size = train.get("patch_size") if isinstance(train, dict) else None
    return int(size) if isinstance(size, int) and size > 0 else default
