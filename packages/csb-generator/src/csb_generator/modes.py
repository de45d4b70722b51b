"""The four dataset modes: their options, the thesis defaults, and sample ``i`` (docs/cli.md#modes).

=========  ==========================================  ========================  ===============
mode       kernel                                      noise                     exposure T
=========  ==========================================  ========================  ===============
fixed      one kernel for all images (random from the  none unless asked         1
           seed, ``disk:R``, ``linear:L[:deg]``, file)
random     a new trajectory per image, L ~ U[min, max] none                      1
noisy      a new trajectory per image, L fixed         lam, sigma drawn per      drawn per image
                                                       image from lists
tsweep     ONE trajectory for every image              one lam, one sigma        one part per T
=========  ==========================================  ========================  ===============

Each mode is one :class:`Mode` of ``MODES_TABLE``: the table above as values, read wherever the
modes differ (``options.mode_rules``), so no code compares mode names.

A sample is a pure function of (options, source list, index): every draw comes from
``sample_rng(seed, index)`` in this order: source image, crop, mode parameters (length; or T,
lam, sigma), trajectory, noise. In a T-sweep the same index uses the same generator in every part,
so only T differs between parts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .blur import blur_crop
from .noise import add_noise
from .psf import (
    disk_kernel,
    load_kernel,
    psf_from_trajectory,
    random_psf,
)
from .rng import dataset_rng, sample_rng
from .sources import ImageCache, SourceImage, choose_crop
from .trajectory import DEFAULT_NUM_SAMPLES, Trajectory, linear_trajectory

__all__ = [
    "MODES",
    "MODES_TABLE",
    "MODE_BY_NAME",
    "DatasetOptions",
    "Mode",
    "OptionError",
    "SampleMaker",
    "resolve_options",
]


@dataclass(frozen=True)
class Mode:
    """What a dataset mode is: the thesis's settings and how a sample's kernel, T and noise come.

    Attributes
    ----------
    name : str
    exposures, lams, sigmas : tuple of float
        The thesis's settings, the defaults of :class:`DatasetOptions`'s fields of the same
        names (docs/cli.md#modes, docs/model.md#4-noise-thesis-convention).
    kernel_option : str or None
        The :class:`DatasetOptions` field from which ONE kernel (one per T) is made for the whole
        dataset: ``"kernel"`` or ``"trajectory"``; None draws a new trajectory per image.
    part_per_exposure : bool
        One part (sub-folder) per exposure T, each with every sample; the exposures are distinct.
    unit_exposure : bool
        T is 1.
    noiseless : bool
        No noise: lam = inf and sigma = 0.
    one_noise_level : bool
        One lam and one sigma for every image.
    drawn_length : bool
        Each image's trajectory length is drawn uniformly in [``min_length``, ``length``].

    T is drawn per image from ``exposures`` unless ``unit_exposure`` or ``part_per_exposure``, and
    lam, sigma from ``lams``, ``sigmas`` unless ``noiseless`` or ``one_noise_level``.
    """

    name: str
    exposures: tuple[float, ...]
    lams: tuple[float, ...]
    sigmas: tuple[float, ...]
    kernel_option: str | None = None
    part_per_exposure: bool = False
    unit_exposure: bool = False
    noiseless: bool = False
    one_noise_level: bool = False
    drawn_length: bool = False

    @property
    def shares_kernel(self) -> bool:
        """Whether one kernel (one per T) serves the whole dataset."""
        return self.kernel_option is not None

    @property
    def draws_exposure(self) -> bool:
        """Whether each image draws its T from ``exposures``."""
        return not (self.unit_exposure or self.part_per_exposure)

    @property
    def draws_noise(self) -> bool:
        """Whether each image draws its lam and sigma from ``lams`` and ``sigmas``."""
        return not (self.noiseless or self.one_noise_level)


#: The four modes, in the order of ``--mode``'s choices (the docstring's table, as values).
MODES_TABLE = (
    Mode(
        "fixed",
        exposures=(1.0,),
        lams=(math.inf,),
        sigmas=(0.0,),
        kernel_option="kernel",
        unit_exposure=True,
        one_noise_level=True,
    ),
    Mode(
        "random",
        exposures=(1.0,),
        lams=(math.inf,),
        sigmas=(0.0,),
        unit_exposure=True,
        noiseless=True,
        drawn_length=True,
    ),
    Mode(
        "noisy",
        exposures=tuple(k / 8 for k in range(8, 1, -1)),
        lams=tuple(48000.0 * 4**k for k in range(5)),
        sigmas=(0.0, 1.0, 2.0, 4.0),
    ),
    Mode(
        "tsweep",
        exposures=(1.0, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32),
        lams=(765000.0,),
        sigmas=(0.0,),
        kernel_option="trajectory",
        part_per_exposure=True,
        one_noise_level=True,
    ),
)
MODE_BY_NAME = {mode.name: mode for mode in MODES_TABLE}
MODES = tuple(MODE_BY_NAME)

BLURRED_DTYPES = ("float32", "float16", "uint8", "uint16")


class OptionError(ValueError):
    """An option value is invalid or does not fit the mode.

    ``option`` names the :class:`DatasetOptions` field (two joined by ``/`` when their values
    conflict) and ``reason`` says what is wrong with its value; the message is both,
    ``"{option}: {reason}"``. A reason names other fields in backquotes (```psf_size```), so
    that a command line can show its own flags in their place.
    """

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option
        self.reason = message


@dataclass(frozen=True)
class DatasetOptions:
    """Every option that determines a dataset's content, resolved (no value left to default).

    Two runs with equal options and equal source lists write identical datasets. Options that only
    change how the work is done (workers, the part to generate, progress display) are not here.

    Attributes
    ----------
    mode : {"fixed", "random", "noisy", "tsweep"}
    count : int
        Number of samples (per exposure part for tsweep), >= 1.
    image_size : int
        Side of the square crops in pixels. Thesis: 64.
    psf_size : int
        Side of the square kernels in pixels. Thesis: 32 (Table 4), 16/32/64 (Table 3).
    channels : int
        3 (RGB) or 1 (grey).
    seed : int
        Dataset seed, >= 0.
    crop : {"random", "center"}
        Crop position policy.
    downscale : float
        Factor >= 1 by which sources are shrunk before cropping (the thesis halved GoPro frames).
    num_samples : int
        Trajectory samples N.
    length : float
        Trajectory length in pixels; in ``random`` mode the maximum of the per-image draw.
    min_length : float
        ``random`` mode: the minimum of the per-image length draw, in pixels.
    anxiety, centripetal, gaussian, freq_big_shakes : float or None
        Trajectory parameters; None draws them per trajectory (docs/model.md#1-trajectory).
    exposures : tuple of float
        Exposures T in (0, 1]: drawn from per image (noisy) or one part each (tsweep).
    lams, sigmas : tuple of float
        Photon scale lambda (inf = no shot noise) and read noise sigma in grey levels.
    kernel : str
        ``fixed`` mode: ``random``, ``disk:R``, ``linear:L[:degrees]`` or a kernel file path.
    trajectory : str
        ``tsweep`` mode: ``random``, ``linear`` or a ``.npy`` file of complex positions.
    angle : float or None
        Initial trajectory direction in degrees; None draws it.
    alignment : {"centre-of-mass", "common-origin"}
        Kernel centring (see :func:`~csb_generator.psf_from_trajectory`).
    blurred_dtype : {"float32", "float16", "uint8", "uint16"}
        Stored dtype of the blurred images; integer types are rounded.
    sharp_dtype : {"uint8", "uint16"}
        Stored dtype of the sharp crops: uint16 when any source is 16-bit.
    store_trajectories : bool
        Also store each sample's trajectory (complex64).
    shard_size : int
        Samples per shard file.
    compression : {"gzip", "lzf", "none"}
        HDF5 filter of the image datasets (gzip level 1 by default: deterministic bytes).
    """

    mode: str
    count: int = 1000
    image_size: int = 64
    psf_size: int = 32
    channels: int = 3
    seed: int = 0
    crop: str = "random"
    downscale: float = 1.0
    num_samples: int = DEFAULT_NUM_SAMPLES
    length: float | None = None
    min_length: float = 1.0
    anxiety: float | None = None
    centripetal: float | None = None
    gaussian: float | None = None
    freq_big_shakes: float | None = None
    exposures: tuple[float, ...] = ()
    lams: tuple[float, ...] = ()
    sigmas: tuple[float, ...] = ()
    kernel: str = "random"
    trajectory: str = "random"
    angle: float | None = None
    alignment: str = "centre-of-mass"
    blurred_dtype: str = "float32"
    sharp_dtype: str = "uint8"
    store_trajectories: bool = False
    shard_size: int = 256
    compression: str = "gzip"

    def to_json(self) -> dict[str, Any]:
        """The options as JSON-ready values (inf kept as the float inf)."""
        document = asdict(self)
        for key in ("exposures", "lams", "sigmas"):
            document[key] = list(document[key])
        return document

    @property
    def mode_rules(self) -> Mode:
        """The :class:`Mode` that ``mode`` names (what the mode is, from ``MODES_TABLE``)."""
        return MODE_BY_NAME[self.mode]


def _positive_int(option: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise OptionError(option, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive_float(option: str, value: Any, *, allow_inf: bool = False) -> float:
    value = float(value)
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        raise OptionError(
            option, f"must be a {'' if allow_inf else 'finite '}number > 0, got {value}"
        )
    return value


def max_length(psf_size: int) -> float:
    """Longest trajectory (pixels) whose straight segment fits the kernel centred, any angle."""
    return float(2 * (psf_size - 1 - psf_size // 2))


def _check_lengths(options: DatasetOptions, psf_size: int) -> tuple[float, float]:
    """The trajectory's (length, min_length), checked against the kernel and each other."""
    limit = max_length(psf_size)
    length = psf_size / 2 if options.length is None else options.length
    length = _positive_float("length", length)
    if length > limit:
        raise OptionError(
            "length",
            f"a {length:g} px trajectory does not fit a {psf_size} px kernel "
            f"(at most {limit:g} px); raise `psf_size` or lower `length`",
        )
    min_length = _positive_float("min_length", options.min_length)
    if options.mode_rules.drawn_length and min_length > length:
        raise OptionError("min_length", f"{min_length:g} is larger than `length` {length:g}")
    return length, min_length


def _check_shake(options: DatasetOptions) -> None:
    for option in ("anxiety", "centripetal", "gaussian", "freq_big_shakes"):
        value = getattr(options, option)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise OptionError(option, f"must be a finite number >= 0, got {value}")
    if options.freq_big_shakes is not None and options.freq_big_shakes > 1:
        raise OptionError("freq_big_shakes", f"must be in [0, 1], got {options.freq_big_shakes}")


def _check_exposure_and_noise(
    options: DatasetOptions,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """The (exposures, lams, sigmas) of the options, the mode's defaults where unset."""
    mode = options.mode_rules
    exposures = tuple(float(t) for t in options.exposures) or mode.exposures
    for value in exposures:
        if not 0 < value <= 1:
            raise OptionError("exposures", f"T must be in (0, 1], got {value}")
    lams = tuple(float(v) for v in options.lams) or mode.lams
    for value in lams:
        _positive_float("lams", value, allow_inf=True)
    sigmas = tuple(float(v) for v in options.sigmas) or mode.sigmas
    for value in sigmas:
        if not (math.isfinite(value) and value >= 0):
            raise OptionError("sigmas", f"must be a finite number >= 0, got {value}")
    if mode.unit_exposure and exposures != (1.0,):
        raise OptionError(
            "exposures", f"{mode.name} mode uses T = 1; use noisy or tsweep for T < 1"
        )
    if mode.noiseless and (lams != (math.inf,) or sigmas != (0.0,)):
        raise OptionError("lams/sigmas", f"{mode.name} mode is noiseless; use noisy mode for noise")
    if mode.one_noise_level and (len(lams) != 1 or len(sigmas) != 1):
        raise OptionError("lams/sigmas", f"{mode.name} mode takes one value of each")
    if mode.part_per_exposure and len(set(exposures)) != len(exposures):
        raise OptionError("exposures", "T-sweep exposures must be distinct")
    return exposures, lams, sigmas


def _check_kernel_source(options: DatasetOptions) -> tuple[str, str]:
    """The (kernel, trajectory) options, files made absolute (workers elsewhere resolve
    relative paths wrongly)."""
    kernel, trajectory = options.kernel, options.trajectory
    made_from = options.mode_rules.kernel_option
    if made_from == "kernel" and parse_kernel_spec(kernel).kind == "file":
        kernel = str(Path(kernel).absolute())
    if made_from == "trajectory" and trajectory not in ("random", "linear"):
        if not Path(trajectory).is_file():
            raise OptionError(
                "trajectory",
                f"must be 'random', 'linear' or an existing .npy file, got {trajectory!r}",
            )
        trajectory = str(Path(trajectory).absolute())
    return kernel, trajectory


def _check_storage(options: DatasetOptions) -> None:
    if options.alignment not in ("centre-of-mass", "common-origin"):
        raise OptionError("alignment", f"unknown alignment {options.alignment!r}")
    if options.blurred_dtype not in BLURRED_DTYPES:
        raise OptionError("blurred_dtype", f"must be one of {', '.join(BLURRED_DTYPES)}")
    if options.sharp_dtype not in ("uint8", "uint16"):
        raise OptionError("sharp_dtype", "must be uint8 or uint16")
    if options.compression not in ("gzip", "lzf", "none"):
        raise OptionError("compression", f"must be gzip, lzf or none, got {options.compression!r}")


def resolve_options(mode: str, **given: Any) -> DatasetOptions:
    """Fill unset options with the thesis's defaults for ``mode`` and check every value.

    Parameters
    ----------
    mode : {"fixed", "random", "noisy", "tsweep"}
    **given
        Any :class:`DatasetOptions` field; None (or an empty sequence) means "the default".

    Returns
    -------
    DatasetOptions

    Raises
    ------
    OptionError
        Naming the :class:`DatasetOptions` field, for a value out of range or an option that
        the mode does not take.
    """
    if mode not in MODES:
        raise OptionError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    values = {key: value for key, value in given.items() if value is not None and value != ()}
    unknown = set(values) - set(DatasetOptions.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}")
    options = DatasetOptions(mode=mode, **values)

    count = _positive_int("count", options.count)
    image_size = _positive_int("image_size", options.image_size, 2)
    psf_size = _positive_int("psf_size", options.psf_size)
    if options.channels not in (1, 3):
        raise OptionError("channels", f"must be 1 or 3, got {options.channels!r}")
    seed = _positive_int("seed", options.seed, 0)
    if options.crop not in ("random", "center"):
        raise OptionError("crop", f"must be 'random' or 'center', got {options.crop!r}")
    downscale = float(options.downscale)
    if not (math.isfinite(downscale) and downscale >= 1):
        raise OptionError("downscale", f"must be a number >= 1, got {downscale}")
    num_samples = _positive_int("num_samples", options.num_samples, 2)
    length, min_length = _check_lengths(options, psf_size)
    _check_shake(options)
    exposures, lams, sigmas = _check_exposure_and_noise(options)
    kernel, trajectory = _check_kernel_source(options)
    _check_storage(options)
    return replace(
        options,
        count=count,
        image_size=image_size,
        psf_size=psf_size,
        seed=seed,
        downscale=downscale,
        num_samples=num_samples,
        length=length,
        min_length=min_length,
        exposures=exposures,
        lams=lams,
        sigmas=sigmas,
        shard_size=_positive_int("shard_size", options.shard_size),
        kernel=kernel,
        trajectory=trajectory,
    )


@dataclass(frozen=True)
class KernelSpec:
    """A parsed ``--kernel`` value of fixed mode."""

    kind: str  # "random", "disk", "linear" or "file"
    radius: float = math.nan
    length: float = math.nan
    angle_degrees: float | None = None
    path: str = ""


def parse_kernel_spec(spec: str) -> KernelSpec:
    """Parse ``random``, ``disk:R``, ``linear:L[:degrees]`` or a file path.

    Raises
    ------
    OptionError
        For a malformed value, or a path that does not exist.
    """
    if spec == "random":
        return KernelSpec("random")
    head, _, rest = spec.partition(":")
    try:
        if head == "disk":
            return KernelSpec("disk", radius=_positive_float("kernel", float(rest)))
        if head == "linear":
            length, _, angle = rest.partition(":")
            return KernelSpec(
                "linear",
                length=_positive_float("kernel", float(length)),
                angle_degrees=float(angle) if angle else None,
            )
    except ValueError as error:
        raise OptionError("kernel", f"cannot parse {spec!r}: {error}") from None
    if not Path(spec).is_file():
        raise OptionError(
            "kernel",
            f"{spec!r} is neither random, disk:R, linear:L[:degrees] nor an existing kernel file",
        )
    return KernelSpec("file", path=spec)


def _angle_radians(degrees: float | None, rng: np.random.Generator) -> float:
    return 2 * math.pi * rng.random() if degrees is None else math.radians(degrees)


_NAN_PARAMETERS = dict.fromkeys(
    ("length", "anxiety", "centripetal", "gaussian", "freq_big_shakes"), math.nan
)


class SampleMaker:
    """Makes sample ``i`` of a dataset: the function that every worker and every shard shares.

    Parameters
    ----------
    options : DatasetOptions
        Resolved options (see :func:`resolve_options`).
    sources : sequence of SourceImage
        The usable source images, in the manifest's order.

    Attributes
    ----------
    mode : Mode
        What the options' mode is (``options.mode_rules``).
    trajectory : Trajectory or None
        The dataset-wide trajectory (fixed mode with a random or linear kernel, and tsweep).
    kernels : dict of float to ndarray
        The dataset-wide kernel of each exposure (fixed and tsweep modes).
    redraws : int
        Trajectory redraws spent on the dataset-wide kernel.
    """

    def __init__(self, options: DatasetOptions, sources: Sequence[SourceImage]):
        if not sources:
            raise ValueError("no usable source images")
        self.options = options
        self.sources = list(sources)
        self.trajectory: Trajectory | None = None
        self.kernels: dict[float, np.ndarray] = {}
        self.redraws = 0
        self._kernel_parameters = dict(_NAN_PARAMETERS)
        self.mode = options.mode_rules
        if self.mode.shares_kernel:
            try:
                self._prepare_shared_kernel()
            except OptionError:
                raise
            except (ValueError, OSError) as error:  # a kernel that cannot be made is bad usage
                raise OptionError(self.mode.kernel_option, str(error)) from error
        self._images = ImageCache()

    def input_files(self) -> dict[str, str]:
        """Files the dataset depends on besides its sources: option name to file path."""
        options = self.options
        made_from = self.mode.kernel_option
        files = {}
        if made_from == "kernel" and parse_kernel_spec(options.kernel).kind == "file":
            files["kernel"] = options.kernel
        if made_from == "trajectory" and options.trajectory not in ("random", "linear"):
            files["trajectory"] = options.trajectory
        return files

    def _trajectory_overrides(self) -> dict[str, Any]:
        return {
            "num_samples": self.options.num_samples,
            "anxiety": self.options.anxiety,
            "centripetal": self.options.centripetal,
            "gaussian": self.options.gaussian,
            "freq_big_shakes": self.options.freq_big_shakes,
            "alignment": self.options.alignment,
        }

    def _prepare_shared_kernel(self) -> None:
        options = self.options
        rng = dataset_rng(options.seed)
        exposures = options.exposures
        if self.mode.kernel_option == "kernel":
            spec = parse_kernel_spec(options.kernel)
            if spec.kind == "disk":
                self.kernels = {1.0: disk_kernel(spec.radius, options.psf_size)}
                return
            if spec.kind == "file":
                self.kernels = {1.0: load_kernel(spec.path, options.psf_size)}
                return
            source = "linear" if spec.kind == "linear" else "random"
            length = spec.length if spec.kind == "linear" else options.length
            angle_degrees = spec.angle_degrees
        else:  # made from the trajectory option
            source = options.trajectory
            length = options.length
            angle_degrees = options.angle
        if source == "random":
            angle = None if options.angle is None else math.radians(options.angle)
            overrides = self._trajectory_overrides()
            drawn = random_psf(
                rng, options.psf_size, list(exposures), length=length, angle=angle, **overrides
            )
            self.trajectory, self.redraws = drawn.trajectory, drawn.redraws
        elif source == "linear":
            angle = _angle_radians(angle_degrees, rng)
            self.trajectory = linear_trajectory(length, angle, num_samples=options.num_samples)
        else:
            positions = np.load(source, allow_pickle=False)
            if positions.ndim != 1 or not np.iscomplexobj(positions):
                raise OptionError("trajectory", f"{source} must hold a 1-D complex array")
            self.trajectory = Trajectory(
                positions=positions.astype(np.complex128),
                length=float(np.abs(np.diff(positions)).sum()),
                anxiety=math.nan,
                centripetal=math.nan,
                gaussian=math.nan,
                freq_big_shakes=math.nan,
                angle=math.nan,
                num_shakes=0,
            )
        self.kernels = {
            t: psf_from_trajectory(
                self.trajectory, options.psf_size, t, alignment=options.alignment
            )
            for t in exposures
        }
        self._kernel_parameters = self.trajectory.parameters()

    def _load(self, source_index: int) -> np.ndarray:
        image = self._images.get(
            self.sources[source_index],
            channels=self.options.channels,
            downscale=self.options.downscale,
        )
        if self.options.sharp_dtype == "uint16" and image.dtype == np.uint8:
            image = image.astype(np.uint16) * 257  # 8-bit to 16-bit, exact: 255 -> 65535
        return image

    def _choose_crop(
        self, rng: np.random.Generator, shape: tuple[int, int]
    ) -> tuple[int, int, int, int]:
        # Keep the kernel's reach inside the image where it is large enough, so that the blur
        # sees real pixels and reflection padding is the exception:
        # docs/model.md#3-blur-true-convolution-no-padding-artefacts.
        size, kernel = self.options.image_size, self.options.psf_size
        before, after = kernel - 1 - kernel // 2, kernel // 2
        inner = (shape[0] - before - after, shape[1] - before - after)
        if min(inner) < size:
            return choose_crop(rng, shape, size, self.options.crop)
        top, left, height, width = choose_crop(rng, inner, size, self.options.crop)
        return top + before, left + before, height, width

    def __call__(self, index: int, exposure: float | None = None) -> dict[str, Any]:
        """Sample ``index``: a dict of the per-sample fields of the shard format, plus
        ``redraws`` (trajectory redraws spent on it).

        Parameters
        ----------
        index : int
            Sample index in the whole dataset, >= 0.
        exposure : float, optional
            tsweep mode: the part's exposure T (one of ``options.exposures``).
        """
        options = self.options
        rng = sample_rng(options.seed, index)
        source_index = int(rng.integers(len(self.sources)))
        image = self._load(source_index)
        box = self._choose_crop(rng, image.shape[:2])
        mode = self.mode
        # T = 1 or the part's T, and the one noise level (none when noiseless); then the mode's
        # draws in this order: T, lam, sigma; or the length (below).
        t, redraws = 1.0, 0
        lam, sigma = (math.inf, 0.0) if mode.noiseless else (options.lams[0], options.sigmas[0])
        if mode.part_per_exposure:
            if exposure not in self.kernels:
                raise ValueError(f"exposure {exposure!r} is not one of {list(self.kernels)}")
            t = exposure
        if mode.draws_exposure:
            t = float(options.exposures[rng.integers(len(options.exposures))])
        if mode.draws_noise:
            lam = float(options.lams[rng.integers(len(options.lams))])
            sigma = float(options.sigmas[rng.integers(len(options.sigmas))])
        trajectory = self.trajectory
        parameters = self._kernel_parameters
        if mode.shares_kernel:
            kernel = self.kernels[t]
        else:
            length = (
                rng.uniform(options.min_length, options.length)
                if mode.drawn_length
                else options.length
            )
            angle = None if options.angle is None else math.radians(options.angle)
            drawn = random_psf(
                rng, options.psf_size, t, length=length, angle=angle, **self._trajectory_overrides()
            )
            kernel, trajectory, redraws = drawn.kernel, drawn.trajectory, drawn.redraws
            parameters = trajectory.parameters()
        blurred, padded = blur_crop(image, kernel, box)
        degraded = add_noise(blurred, t, lam, sigma, rng)
        top, left, height, width = box
        sample = {
            "sharp": image[top : top + height, left : left + width],
            "blurred": _quantise(degraded, options.blurred_dtype),
            "kernel": kernel.astype(np.float32),
            "exposure": np.float32(t),
            "lam": np.float32(lam),
            "sigma": np.float32(sigma),
            **{name: np.float32(value) for name, value in parameters.items()},
            "index": np.int64(index),
            "source": np.int32(source_index),
            "crop": np.array(box, dtype=np.int32),
            "padded": np.bool_(padded),
            "redraws": redraws,
        }
        if options.store_trajectories:
            positions = (
                trajectory.positions
                if trajectory is not None
                else np.full(options.num_samples, complex(math.nan, math.nan))
            )
            sample["trajectory"] = positions.astype(np.complex64)
        return sample


def _quantise(image: np.ndarray, dtype: str) -> np.ndarray:
    if dtype.startswith("float"):
        return image.astype(dtype)
    scale = np.iinfo(dtype).max
    return np.rint(image * scale).astype(dtype)
