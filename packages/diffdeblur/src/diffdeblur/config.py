"""Configuration of a restorer: the network, the diffusion, and what is diffused.

One :class:`RestorerConfig` describes a trained model completely. It is saved in every checkpoint
as plain JSON-compatible values (no pickled classes), so a checkpoint can be loaded with
``torch.load(weights_only=True)`` and rebuilt from its configuration alone.

The U-Net variants are named as the thesis's Table 1 and are presets of :class:`UNetConfig`; any
field can be overridden, so variants combine (``improved`` is all of them at once).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

__all__ = [
    "KERNEL_SOURCES",
    "PARAMETRISATIONS",
    "PREDICTIONS",
    "VARIANTS",
    "ConfigError",
    "DeconvolutionConfig",
    "DiffusionConfig",
    "RestorerConfig",
    "UNetConfig",
    "check_limits",
    "unet_variant",
]

Parametrisation = Literal["sharp", "residual", "refine", "regression", "bridge"]
PARAMETRISATIONS: tuple[str, ...] = ("sharp", "residual", "refine", "regression", "bridge")
Prediction = Literal["eps", "x0", "v"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v")
KernelSource = Literal["estimated", "true"]
KERNEL_SOURCES: tuple[str, ...] = ("estimated", "true")


class ConfigError(ValueError):
    """A setting is invalid, or does not fit the others or the run it continues.

    ``option`` names the setting (a field of the configuration or an argument of the function
    that raised it; two joined by ``/`` when their values conflict) and ``reason`` says what is
    wrong; the message is both, ``"{option}: {reason}"``. A reason names other settings in
    backquotes (```patch_size```), so that a command line can show its own flags in their place.
    """

    def __init__(self, option: str, reason: str):
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the noise-predicting U-Net (Ho et al. 2020, with the thesis's variants).

    Attributes
    ----------
    in_channels : int
        Channels of the network input: the noisy image plus the conditioning images stacked on
        the channel axis (6 for an RGB ``x_t`` concatenated with an RGB blurred image).
    out_channels : int
        Channels of the output (the predicted noise, or the regression output).
    base_channels : int
        Channels at the first level; 128 in ``base``, 192 in ``wide``.
    channel_mult : tuple of int
        Channel multiplier per resolution level; one downsampling by 2 between levels.
    num_res_blocks : int
        Residual blocks per level.
    attention_factors : tuple of int
        Downsampling factors (1 = input resolution, 2, 4, ...) at which self-attention is applied.
        Factors, not pixel sizes, so a model behaves the same on any input size: for 64 px
        patches, factor 4 is the thesis's "attention at 16x16".
    num_heads : int
        Attention heads, used when ``head_channels`` is 0.
    head_channels : int
        Channels per attention head; when > 0 it overrides ``num_heads`` (``multihead``: 64).
    dropout : float
        Dropout probability in the residual blocks, in [0, 1).
    resblock_updown : bool
        BigGAN-style residual blocks for down- and upsampling (``biggan``).
    scale_shift_norm : bool
        Time conditioning by scale and shift of the normalised activations (AdaGN, ``biggan``)
        instead of adding the time embedding.
    global_skip : bool
        Add the input's first ``out_channels`` channels to the output (a regression network that
        predicts a correction of its input).
    backbone : {"unet", "nafnet"}
        ``unet``: the U-Net of Ho et al. with the fields above. ``nafnet``: the NAFNet-style
        network of :mod:`diffdeblur.nafnet` (Chen et al. 2022), which reads ``in_channels``,
        ``out_channels``, ``base_channels``, ``channel_mult``, ``num_res_blocks``, ``dropout``
        and ``global_skip`` and has no self-attention.
    """

    in_channels: int = 6
    out_channels: int = 3
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_factors: tuple[int, ...] = (4,)
    num_heads: int = 1
    head_channels: int = 0
    dropout: float = 0.1
    resblock_updown: bool = False
    scale_shift_norm: bool = False
    global_skip: bool = False
    backbone: Literal["unet", "nafnet"] = "unet"

    @property
    def downsampling(self) -> int:
        """Total downsampling factor; inputs are padded internally to a multiple of it."""
        return 2 ** (len(self.channel_mult) - 1)


VARIANTS: dict[str, UNetConfig] = {
    "base": UNetConfig(),
    "wide": UNetConfig(base_channels=192),
    "multihead": UNetConfig(head_channels=64),
    "multires": UNetConfig(attention_factors=(2, 4, 8)),
    "biggan": UNetConfig(resblock_updown=True, scale_shift_norm=True),
    "improved": UNetConfig(
        base_channels=192,
        head_channels=64,
        attention_factors=(2, 4, 8),
        resblock_updown=True,
        scale_shift_norm=True,
    ),
    # A CPU-sized network for tests, the demo and CPU-budget experiments (about 1.5M parameters).
    "tiny": UNetConfig(
        base_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_factors=(4,),
        head_channels=32,
        dropout=0.0,
        resblock_updown=True,
        scale_shift_norm=True,
    ),
    # Sized like tiny (1.27M parameters), built for restoration on small compute: NAFNet blocks
    # (Chen et al. 2022), no self-attention; about twice tiny's training speed on a CPU.
    "nafnet": UNetConfig(
        backbone="nafnet",
        base_channels=32,
        channel_mult=(1, 2, 4),
        num_res_blocks=2,
        attention_factors=(),
        dropout=0.0,
    ),
}


def unet_variant(name: str, **overrides: Any) -> UNetConfig:
    """The U-Net preset ``name`` (a key of :data:`VARIANTS`) with fields overridden.

    Examples
    --------
    >>> unet_variant("wide").base_channels
    192
    >>> unet_variant("tiny", dropout=0.1).dropout
    0.1
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown U-Net variant {name!r}; choose from {', '.join(VARIANTS)}")
    return replace(VARIANTS[name], **overrides)


@dataclass(frozen=True)
class DiffusionConfig:
    """The process that is learnt: Gaussian diffusion (Ho et al. 2020; cosine schedule of Nichol
    & Dhariwal 2021) or, for the ``bridge`` parametrisation, the blurred-to-sharp bridge of
    :mod:`diffdeblur.bridge`.

    Attributes
    ----------
    timesteps : int
        Number of steps T (1000 in the thesis); for the bridge, its time levels ``t = (k + 1) / T``
        for the indices ``k = 0 .. T-1``.
    schedule : {"linear", "cosine"}
        Noise schedule of beta_t (Gaussian diffusion only).
    beta_start, beta_end : float
        End points of the linear schedule (1e-4 and 0.02).
    prediction : {"eps", "x0", "v"}
        What the network outputs in Gaussian diffusion: the noise (the thesis), the clean image,
        or the velocity ``v = sqrt(ab) eps - sqrt(1 - ab) x0`` (Salimans & Ho 2022). The
        bridge's network always outputs the clean image.
    bridge_noise : float
        Noise scale ``s`` of the bridge, ``sigma(t) = s sqrt(t (1 - t))`` on the [-1, 1] scale,
        >= 0 (0: a deterministic path).
    """

    timesteps: int = 1000
    schedule: Literal["linear", "cosine"] = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: Prediction = "eps"
    bridge_noise: float = 0.1


@dataclass(frozen=True)
class DeconvolutionConfig:
    """The deconvolution front end of a restorer (:mod:`diffdeblur.restorer`, Deconvolution).

    The blurred image is deconvolved by a Wiener filter with a learned balance
    (:class:`~diffdeblur.deconvolution.WienerDeconvolution`), and the networks see the result
    beside the blurred image.

    Attributes
    ----------
    kernel_size : int
        Side of the kernels, odd: the dataset's PSF size, plus one when that is even
        (:func:`diffdeblur.deconvolution.odd_kernel`), >= 3.
    kernel : {"estimated", "true"}
        ``estimated``: a :class:`~diffdeblur.kernel_estimation.KernelEstimator` predicts the
        kernel from the blurred image (blind). ``true``: the restorer is given the stored kernel
        (non-blind; an upper bound for experiments, it cannot restore a photograph alone).
    estimator_channels : int
        Width of the kernel estimator's network.
    estimator_dilations : tuple of int
        Dilations of its residual blocks.
    balance : float
        Initial Wiener balance, > 0 (2e-4 suits noiseless data).
    kernel_weight : float
        Weight of the kernel loss in training, >= 0 (the re-blur loss has weight 1).
    """

    kernel_size: int = 33
    kernel: KernelSource = "estimated"
    estimator_channels: int = 32
    estimator_dilations: tuple[int, ...] = (1, 2, 4, 8)
    balance: float = 2e-4
    kernel_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kernel_size < 3 or self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd and >= 3, got {self.kernel_size}")
        if self.kernel not in KERNEL_SOURCES:
            raise ValueError(f"kernel must be one of {KERNEL_SOURCES}, got {self.kernel!r}")
        if not self.balance > 0 or not self.kernel_weight >= 0:
            raise ValueError("balance must be > 0 and kernel_weight >= 0")


@dataclass(frozen=True)
class RestorerConfig:
    """Everything needed to rebuild a trained restorer from a checkpoint.

    Attributes
    ----------
    parametrisation : {"sharp", "residual", "refine", "regression", "bridge"}
        What the diffusion models. ``sharp`` (the thesis): the sharp image, conditioned on the
        blurred one. ``residual``: ``residual_scale * (sharp - blurred)``; the restoration is
        ``blurred + residual / residual_scale``. ``refine`` (predict-and-refine, Whang et al. 2022):
        a regression U-Net with a global skip estimates the sharp image and the diffusion models
        ``residual_scale * (sharp - estimate)``. ``regression``: the regression U-Net alone.
        ``bridge``: the sharp image on a bridge from the blurred one (:mod:`diffdeblur.bridge`).
    unet : UNetConfig
        The denoising network (unused by ``regression``).
    regressor : UNetConfig or None
        The regression network of ``refine`` and ``regression`` (global skip, 3 input channels).
    diffusion : DiffusionConfig
    residual_scale : float
        Scale of the residual that ``residual`` and ``refine`` diffuse, so that it spans a range
        comparable to the unit-variance noise (residuals of [-1, 1] images are small).
    image_channels : int
        Channels of the images (3 = RGB).
    deconvolution : DeconvolutionConfig or None
        The deconvolution front end, or None (the networks see the blurred image alone).
    blurred_skip : bool
        ``sharp`` with x0 or v prediction only: the denoiser's output is the network's plus
        the target the blurred image would have as a noiseless x0 (the blurred image for x0,
        ``-sqrt(1 - ab_t)`` times it for v), so the network learns the correction of the
        blurred image, as a regressor with a global skip does (:meth:`diffdeblur.restorer.
        Restorer.denoiser`). The process is unchanged: the sharp image is diffused.
    """

    parametrisation: Parametrisation = "sharp"
    unet: UNetConfig = field(default_factory=UNetConfig)
    regressor: UNetConfig | None = None
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    residual_scale: float = 5.0
    image_channels: int = 3
    deconvolution: DeconvolutionConfig | None = None
    blurred_skip: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible nested dict (tuples become lists)."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> RestorerConfig:
        """Rebuild from :meth:`to_dict`; unknown keys are an error (a newer or foreign file)."""
        document = dict(document)
        unet = _dataclass_from(UNetConfig, document.pop("unet"))
        regressor = document.pop("regressor", None)
        regressor = None if regressor is None else _dataclass_from(UNetConfig, regressor)
        diffusion = _dataclass_from(DiffusionConfig, document.pop("diffusion"))
        deconvolution = document.pop("deconvolution", None)
        if deconvolution is not None:
            deconvolution = _dataclass_from(DeconvolutionConfig, deconvolution)
        _check_keys(cls, document, exclude={"unet", "regressor", "diffusion", "deconvolution"})
        return cls(
            unet=unet,
            regressor=regressor,
            diffusion=diffusion,
            deconvolution=deconvolution,
            **document,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _check_keys(cls: type, document: dict[str, Any], exclude: set[str] = frozenset()) -> None:
    known = {f.name for f in fields(cls)} - exclude
    unknown = set(document) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")


#: Integer fields and their sane ranges (inclusive), about 8 times the largest preset: a
#: configuration outside them is refused before a network is built from it, so a crafted
#: checkpoint cannot start a multi-gigabyte allocation.
_INTEGER_LIMITS: dict[str, tuple[int, int]] = {
    "in_channels": (1, 64),
    "out_channels": (1, 64),
    "base_channels": (1, 1536),
    "num_res_blocks": (0, 16),
    "num_heads": (1, 64),
    "head_channels": (0, 1024),
    "timesteps": (1, 100_000),
    "image_channels": (1, 3),
    "kernel_size": (3, 513),
    "estimator_channels": (1, 512),
}
#: Integer tuples: (most entries, (smallest, largest) entry).
_TUPLE_LIMITS: dict[str, tuple[int, tuple[int, int]]] = {
    "channel_mult": (8, (1, 16)),
    "attention_factors": (8, (1, 256)),
    "estimator_dilations": (16, (1, 256)),
}
#: Channels of a network's widest level (``base_channels * max(channel_mult)``), at most: the
#: per-field limits alone would still allow multi-gigabyte layers. The largest preset has 384.
WIDEST_CHANNELS = 2048
#: Real fields and their ranges (inclusive), finite.
_REAL_LIMITS: dict[str, tuple[float, float]] = {
    "dropout": (0.0, 0.99),
    "beta_start": (1e-8, 0.5),
    "beta_end": (1e-8, 0.999),
    "bridge_noise": (0.0, 10.0),
    "residual_scale": (1e-3, 1e3),
    "balance": (1e-12, 1e6),
    "kernel_weight": (0.0, 1e6),
}


def check_limits(config: RestorerConfig) -> None:
    """Check every numeric field of ``config`` against its sane range, before any allocation.

    Integers must be integers (not floats such as ``2e9``, not booleans), reals finite.

    Raises
    ------
    ValueError
        Naming the first field out of range, its value and the range.
    """
    parts = [("", config), ("unet.", config.unet), ("diffusion.", config.diffusion)]
    if config.regressor is not None:
        parts.append(("regressor.", config.regressor))
    if config.deconvolution is not None:
        parts.append(("deconvolution.", config.deconvolution))
    for prefix, part in parts:
        for item in fields(part):
            name, value = item.name, getattr(part, item.name)
            where = f"{prefix}{name} = {value!r}"
            if name in _INTEGER_LIMITS:
                low, high = _INTEGER_LIMITS[name]
                if not _is_int(value) or not low <= value <= high:
                    raise ValueError(f"{where} is not an integer in [{low}, {high}]")
            elif name in _TUPLE_LIMITS:
                most, (low, high) = _TUPLE_LIMITS[name]
                if (
                    not isinstance(value, tuple)
                    or len(value) > most
                    or not all(_is_int(entry) and low <= entry <= high for entry in value)
                ):
                    raise ValueError(f"{where} is not up to {most} integers in [{low}, {high}]")
            elif name in _REAL_LIMITS:
                low, high = _REAL_LIMITS[name]
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not math.isfinite(value)
                    or not low <= value <= high
                ):
                    raise ValueError(f"{where} is not a finite number in [{low:g}, {high:g}]")
    for prefix, network in (("unet", config.unet), ("regressor", config.regressor)):
        if network is not None and network.channel_mult:
            widest = network.base_channels * max(network.channel_mult)
            if widest > WIDEST_CHANNELS:
                raise ValueError(
                    f"{prefix}: base_channels * max(channel_mult) = {widest} channels, more than "
                    f"{WIDEST_CHANNELS}"
                )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dataclass_from(cls: type, document: dict[str, Any]) -> Any:
    _check_keys(cls, document)
    values = {
        key: tuple(value) if isinstance(value, list) else value for key, value in document.items()
    }
    return cls(**values)
