"""The options of a training run, in four groups: the restorer it builds, the data it reads, the
optimisation, and the run itself (where it writes, on what, for how long).

:class:`TrainConfig` holds one of each. The command line and the checkpoints address an option
by its flat name (``lr``, ``data``, ``budget_minutes``): every leaf name is unique, and
:meth:`TrainConfig.from_options`, :meth:`TrainConfig.options` and :meth:`TrainConfig.replace`
translate. Errors name the flat option (:class:`~diffdeblur.config.ConfigError`), which the CLI
maps to its flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .compute import PRECISIONS
from .config import KERNEL_SOURCES, PARAMETRISATIONS, PREDICTIONS, ConfigError, UNetConfig
from .losses import LOSSES

__all__ = [
    "RESUMABLE_CHANGES",
    "DataOptions",
    "OptimisationOptions",
    "RestorerOptions",
    "RunOptions",
    "TrainConfig",
    "check_resumable",
]

#: Options that may change when a run is resumed; every other one must match the checkpoint.
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "budget_minutes",
        "max_steps",
        "workers",
        "checkpoint_every",
        "validate_every",
        "device",
        "out",
        "data",
        "log_every",
        "precision",
        "threads",
        "lpips_weights",
    }
)


def _at_least(options: object, names: tuple[str, ...], low: int) -> None:
    for name in names:
        if getattr(options, name) < low:
            raise ConfigError(name, f"must be >= {low}, got {getattr(options, name)}")


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class RestorerOptions:
    """What network the run builds (:func:`diffdeblur.restorer.restorer_config`), or starts from.

    Attributes
    ----------
    parametrisation : {"sharp", "residual", "refine", "regression", "bridge"}
    variant : str
        Network preset (``base``, ``wide``, ``multihead``, ``multires``, ``biggan``,
        ``improved``, ``tiny``, ``nafnet``).
    unet_overrides : dict
        Fields of :class:`~diffdeblur.config.UNetConfig` changed in the preset: any network the
        configuration describes (Python only; the command line offers the presets). The input
        and output channels follow from the parametrisation and cannot be set.
    schedule : {"linear", "cosine"}
    timesteps : int
        Diffusion steps (1000 in the thesis), >= 1.
    prediction : {"eps", "x0", "v"}
        What the diffusion network predicts (the bridge always predicts x0). Default v: in the
        measured comparison (docs/diffdeblur.md) the thesis's eps left ``sharp`` at 16 dB where v
        reached 25-26 dB.
    bridge_noise : float
        Noise scale of the bridge (``bridge`` only), >= 0.
    blurred_skip : bool
        ``sharp`` with x0 or v prediction: the network learns a correction of the blurred image
        (:attr:`diffdeblur.config.RestorerConfig.blurred_skip`).
    deconvolve : {"none", "estimated", "true"}
        A deconvolution front end (:mod:`diffdeblur.restorer`, Deconvolution): none; Wiener with
        a learned kernel estimate (blind); or Wiener with the stored kernel (non-blind, an upper
        bound that needs the kernel at test time). Needs a ``csb-generate`` dataset, whose
        samples store their kernels.
    residual_scale : float
        Scale of the diffused residual (``residual``, ``refine``), > 0.
    init : str or None
        Start from the weights of a trained model instead of random ones: a checkpoint, an
        exported model, or a bundled model's name (:mod:`diffdeblur.pretrained`). Its EMA
        weights, the ones it restores with, start both the network and its EMA; the optimiser
        starts afresh. Its configuration must be the one the other options build (fine-tuning,
        not a change of architecture).
    """

    parametrisation: str = "sharp"
    variant: str = "base"
    unet_overrides: dict[str, Any] = field(default_factory=dict)
    schedule: str = "linear"
    timesteps: int = 1000
    prediction: str = "v"
    bridge_noise: float = 0.1
    blurred_skip: bool = False
    deconvolve: str = "none"
    residual_scale: float = 5.0
    init: str | None = None

    def __post_init__(self) -> None:
        _at_least(self, ("timesteps",), 1)
        if not self.residual_scale > 0:
            raise ConfigError("residual_scale", f"must be > 0, got {self.residual_scale}")
        if not self.bridge_noise >= 0:
            raise ConfigError("bridge_noise", f"must be >= 0, got {self.bridge_noise}")
        _one_of("parametrisation", self.parametrisation, PARAMETRISATIONS)
        _one_of("prediction", self.prediction, PREDICTIONS)
        _one_of("deconvolve", self.deconvolve, ("none", *KERNEL_SOURCES))
        if self.blurred_skip and (self.parametrisation != "sharp" or self.prediction == "eps"):
            raise ConfigError(
                "blurred_skip", "applies to `parametrisation` sharp with `prediction` x0 or v"
            )
        settable = {f.name for f in fields(UNetConfig)} - {"in_channels", "out_channels"}
        unknown = sorted(set(self.unet_overrides) - settable)
        if unknown:
            raise ConfigError(
                "unet_overrides",
                f"{', '.join(unknown)} cannot be set; the fields that can are "
                f"{', '.join(sorted(settable))}",
            )
        # Tuples, as UNetConfig holds them, so that a resumed run compares equal.
        overrides = {
            name: tuple(value) if isinstance(value, list) else value
            for name, value in self.unet_overrides.items()
        }
        object.__setattr__(self, "unet_overrides", overrides)


@dataclass(frozen=True)
class DataOptions:
    """Where the training pairs come from and how they are cut.

    Attributes
    ----------
    folder : str
        A csb-generate dataset folder or a GoPro-style paired folder (the option ``data``).
    patch_size : int
        Side of the random training patches in pixels (thesis: 64), >= 1.
    samples_per_epoch : int
        An epoch is this many patches drawn with replacement (thesis: 1024), >= 1.
    validation_fraction : float
        Share of the dataset held out for the validation images, in (0, 1).
    """

    folder: str
    patch_size: int = 64
    samples_per_epoch: int = 1024
    validation_fraction: float = 0.05

    def __post_init__(self) -> None:
        _at_least(self, ("patch_size", "samples_per_epoch"), 1)
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(
                "validation_fraction", f"must be in (0, 1), got {self.validation_fraction}"
            )


@dataclass(frozen=True)
class OptimisationOptions:
    """The loss, the optimiser (Adam) and its schedule, and the EMA.

    Attributes
    ----------
    loss : {"mse", "l1", "charbonnier"}
        Pixel loss on the network's target.
    lpips_loss_weight : float
        Weight of an LPIPS term added to the pixel loss (:class:`diffdeblur.losses.PerceptualLoss`),
        >= 0; 0 (the default) adds none. Only for ``bridge`` and ``regression``, whose network
        outputs an image. Restorations then keep more texture, at some cost in PSNR.
    lpips_weights : str or None
        The LPIPS weights file for that term (:func:`diffdeblur.lpips_weights.load_lpips`);
        None: ``DIFFDEBLUR_LPIPS_WEIGHTS`` or the per-user cache. Training never downloads.
    batch_size : int
        Patches per optimiser step, over all processes, >= 1.
    epochs : int
        Epochs of ``samples_per_epoch`` patches (thesis: 4000), >= 1.
    lr : float
        Adam learning rate after warm-up, > 0.
    lr_schedule : {"constant", "cosine"}
        After warm-up: constant, or a cosine decay to 0 at the run's horizon (the last step of
        the epochs, or where ``max_steps`` or the budget is expected to stop this run: the
        budget's horizon is set from the rate measured after the first steps).
    warmup_steps : int
        Steps of linear learning-rate warm-up from 0, >= 0.
    ema_decay : float
        EMA decay in [0, 1); the effective decay is ``min(ema_decay, (1 + step) / (10 + step))``,
        so an early checkpoint's EMA already follows the weights.
    grad_clip : float
        Maximum gradient norm (0: no clipping), >= 0.
    """

    loss: str = "mse"
    lpips_loss_weight: float = 0.0
    lpips_weights: str | None = None
    batch_size: int = 16
    epochs: int = 4000
    lr: float = 2e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 500
    ema_decay: float = 0.9999
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        _at_least(self, ("batch_size", "epochs"), 1)
        _at_least(self, ("warmup_steps",), 0)
        if not self.lr > 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError("ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        if not self.grad_clip >= 0:
            raise ConfigError("grad_clip", f"must be >= 0, got {self.grad_clip}")
        if not self.lpips_loss_weight >= 0:
            raise ConfigError("lpips_loss_weight", f"must be >= 0, got {self.lpips_loss_weight}")
        _one_of("loss", self.loss, LOSSES)
        _one_of("lr_schedule", self.lr_schedule, ("constant", "cosine"))


@dataclass(frozen=True)
class RunOptions:
    """Where the run writes, on what it computes, when it reports and when it stops.

    Attributes
    ----------
    out : str
        Run folder.
    seed : int
        Fixes the initial weights, the batch order and patches, and the diffusion draws.
    device : {"auto", "cpu", "cuda"}
        ``auto``: CUDA when available.
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast precision (:func:`diffdeblur.compute.resolve_precision`): ``auto`` is bf16 on a
        CPU with native bfloat16, fp16 with loss scaling on CUDA, fp32 otherwise.
    threads : int or None
        CPU threads, >= 1; None: every CPU of the process's affinity.
    compile : bool
        Compile the training networks with ``torch.compile`` (TorchInductor; on a CPU it needs a
        C++ compiler). The first steps then include the compilation. Measured in
        docs/performance.md.
    workers : int
        DataLoader worker processes per training process, >= 0.
    checkpoint_every, validate_every, log_every : int
        Intervals in optimiser steps, >= 1.
    validation_images : int
        Held-out patches shown in each validation grid, >= 0.
    validation_steps : int
        Sampling steps of the validation restorations (the model's own sampler), >= 1.
    budget_minutes : float or None
        Wall-clock budget of this run: stop cleanly with a checkpoint when exceeded.
    max_steps : int or None
        Optimiser steps of this run at most (then stop with a checkpoint).
    """

    out: str
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    compile: bool = False
    workers: int = 0
    checkpoint_every: int = 500
    validate_every: int = 1000
    log_every: int = 10
    validation_images: int = 4
    validation_steps: int = 20
    budget_minutes: float | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        _at_least(self, ("checkpoint_every", "validate_every", "log_every"), 1)
        _at_least(self, ("validation_steps",), 1)
        _at_least(self, ("workers", "validation_images"), 0)
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise ConfigError("budget_minutes", f"must be > 0, got {self.budget_minutes}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("max_steps", f"must be >= 1, got {self.max_steps}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads", f"must be >= 1, got {self.threads}")
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("device", self.device, ("auto", "cpu", "cuda"))


_GROUPS = {
    "restorer": RestorerOptions,
    "data": DataOptions,
    "optimisation": OptimisationOptions,
    "run": RunOptions,
}
#: Every option's flat name -> (group, field). The names are unique across the groups; only
#: the data folder's differs from its field's, as the command line's ``--data`` names it.
_FLAT_NAMES = {
    ("data" if (group, f.name) == ("data", "folder") else f.name): (group, f.name)
    for group, kind in _GROUPS.items()
    for f in fields(kind)
}


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run (saved in its checkpoints), in four groups.

    Attributes
    ----------
    data : DataOptions
    run : RunOptions
    restorer : RestorerOptions
        Default: the thesis's ``sharp`` model on the ``base`` network.
    optimisation : OptimisationOptions

    Examples
    --------
    In groups, or by the options' flat names (as the command line gives them):

    >>> from diffdeblur.train_config import DataOptions, RestorerOptions, RunOptions
    >>> config = TrainConfig(
    ...     data=DataOptions("shards/"),
    ...     run=RunOptions(out="runs/tiny", budget_minutes=10),
    ...     restorer=RestorerOptions(parametrisation="bridge", variant="tiny"),
    ... )
    >>> config == TrainConfig.from_options(
    ...     data="shards/", out="runs/tiny", parametrisation="bridge", variant="tiny",
    ...     budget_minutes=10,
    ... )
    True
    >>> config.replace(lr=1e-3).optimisation.lr
    0.001
    """

    data: DataOptions
    run: RunOptions
    restorer: RestorerOptions = field(default_factory=RestorerOptions)
    optimisation: OptimisationOptions = field(default_factory=OptimisationOptions)

    def __post_init__(self) -> None:
        if self.optimisation.lpips_loss_weight > 0 and self.restorer.parametrisation not in (
            "bridge",
            "regression",
        ):
            raise ConfigError(
                "lpips_loss_weight",
                "applies to `parametrisation` bridge or regression, whose network outputs the "
                f"sharp image, not to {self.restorer.parametrisation}",
            )

    @classmethod
    def from_options(cls, **options: Any) -> TrainConfig:
        """The configuration of the options given by their flat names (``data`` and ``out``
        are required; the others have their groups' defaults).

        Raises
        ------
        TypeError
            For a name that is not an option.
        ConfigError
            For a value out of its range, named by the option.
        """
        unknown = sorted(set(options) - set(_FLAT_NAMES))
        if unknown:
            raise TypeError(f"not training options: {', '.join(unknown)}")
        grouped: dict[str, dict[str, Any]] = {group: {} for group in _GROUPS}
        for flat, value in options.items():
            group, name = _FLAT_NAMES[flat]
            grouped[group][name] = value
        return cls(**{group: kind(**grouped[group]) for group, kind in _GROUPS.items()})

    def options(self) -> dict[str, Any]:
        """Every option by its flat name: what a checkpoint stores as its ``train`` entry."""
        return {
            flat: getattr(getattr(self, group), name) for flat, (group, name) in _FLAT_NAMES.items()
        }

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with the options given by their flat names changed (checked again)."""
        return TrainConfig.from_options(**(self.options() | changes))


#: The value of an option in runs saved before the option existed.
_OPTIONS_BEFORE_THEY_EXISTED = {
    "prediction": "eps",
    "deconvolve": "none",
    "compile": False,
    "init": None,
    "blurred_skip": False,
    "lpips_loss_weight": 0.0,
    "lpips_weights": None,
    "unet_overrides": {},
}


def check_resumable(saved: dict[str, Any], config: TrainConfig, path: str | Path) -> None:
    """Refuse to resume the run saved in ``path`` with options ``saved`` (a checkpoint's
    ``train`` entry) under ``config`` if an option outside :data:`RESUMABLE_CHANGES` differs.

    Raises
    ------
    ConfigError
        Named ``resume``, listing each changed option with its old and new value.
    """
    # An option added after the run was saved had, in that run, the value it has now.
    saved = _OPTIONS_BEFORE_THEY_EXISTED | saved
    now = config.options()
    changed = [n for n in now if n not in RESUMABLE_CHANGES and saved.get(n) != now[n]]
    if changed:
        details = ", ".join(f"`{n}` {saved.get(n)!r} -> {now[n]!r}" for n in changed)
        raise ConfigError("resume", f"options differ from the run in {path}: {details}")
