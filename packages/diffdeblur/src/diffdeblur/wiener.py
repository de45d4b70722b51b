"""Non-blind Wiener deconvolution: the thesis's baseline, with the stored kernel.

The baseline restores a stored ``blurred`` crop with the ``kernel`` stored beside it, its
regularisation weight (``balance``) tuned on training samples by mean PSNR against ``sharp``.
NumPy in, NumPy out; the filter itself is :func:`skimage.restoration.wiener`.

Alignment
---------
``csb-generate`` blurs by true convolution with the kernel's origin at its pixel
``(K // 2, K' // 2)`` (:mod:`csb_generator.blur`), so blurred pixel ``(i, j)`` of a crop is made
from sharp rows ``i - (K - 1 - K // 2) .. i + K // 2`` (and the same for columns): for odd ``K``
symmetric about ``i``, for even ``K`` one row more below (one column more to the right). Near the
crop's borders these reach beyond the stored ``sharp`` crop, into the source photograph (or, for
samples stored with ``padded=True``, into its mirror image about the photograph's edge), which is
not stored: every border handling below extrapolates it, and ``padded`` needs no special case.
:func:`skimage.restoration.wiener` puts the kernel's origin at the same pixel ``(K // 2,
K' // 2)`` (``uft.ir2tf`` rolls it by ``floor(K / 2)``), so pixel ``(i, j)`` of the output
estimates sharp pixel ``(i, j)`` for odd and even kernels alike.

Scale
-----
The stored kernel sums to the exposure T and the stored image carries the 1/T gain:
``blurred = clip((k * x + noise) / T, 0, 1)`` (docs/model.md#4-noise-thesis-convention). It is
therefore ``(k / T) * x`` plus amplified noise, so the kernel is normalised to unit sum before
deconvolving and the result comes out on the sharp image's [0, 1] scale. Deconvolving with the
kernel as stored would multiply the image by 1/T. The noise gain 1/T is left to the balance: a
lower exposure needs a larger one, so tune it per dataset (per T part of a T-sweep).

Borders
-------
A Fourier-domain Wiener filter assumes a circular blur, but a stored crop is the valid part of a
blur that saw content beyond the crop, so the unpadded filter rings at the borders, and on 64 px
crops with 32 px kernels the ringing reaches the centre. The default ``border="symmetric-taper"``
mirrors the crop by the kernel's size on every side (half-sample symmetric, ``numpy.pad`` mode
``"symmetric"``), then blends the padded band, with a raised-cosine weight from 1 at the crop to 0
at the outer edge, into its own circular blur by the kernel (the idea of MATLAB's ``edgetaper``):
at the seam where the FFT wraps around, the data then is a circular blur, as the filter assumes.
It was chosen by ``benchmarks/wiener_borders.py`` on ``csb-generate`` datasets of the built-in
photographs; the numbers are in ``docs/baseline.md``.

``boundary_iterations > 0`` goes further, at one more filter per pass: each pass replaces the
padded band by the circular blur of the previous restoration and keeps the observed crop. The
fixed point ``x`` solves ``(K^T M K + balance D^T D) x = K^T M y`` with ``M`` the mask of the
crop: the Wiener-Hunt estimate for data observed on the crop only, its surroundings unknown
(Reeves, "Fast image restoration without boundary artifacts", IEEE TIP 14(10), 2005). It is
an option, not the baseline: the result is no longer one linear shift-invariant filter.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.fft
from skimage.restoration import uft
from skimage.restoration import wiener as _skimage_wiener

from .metrics import psnr_from_mse
from .pixels import unit_range

__all__ = [
    "BORDER_MODES",
    "DEFAULT_BALANCES",
    "DEFAULT_BORDER",
    "WienerTuning",
    "tune_wiener_balance",
    "wiener_deconvolve",
]

Border = Literal["none", "reflect", "symmetric", "reflect-taper", "symmetric-taper"]

#: Border handlings :func:`wiener_deconvolve` offers (see the module documentation).
BORDER_MODES: tuple[str, ...] = ("none", "reflect", "symmetric", "reflect-taper", "symmetric-taper")

#: The border handling measured best (``docs/baseline.md``).
DEFAULT_BORDER: Border = "symmetric-taper"

#: Default tuning grid: 19 values log-spaced from 1e-6 to 1, three per decade. Noiseless datasets
#: tune to about 2e-4 (``docs/baseline.md``), so the grid reaches two decades below that.
DEFAULT_BALANCES: tuple[float, ...] = tuple(float(b) for b in np.logspace(-6.0, 0.0, 19))


def _as_unit_float(image: Any, name: str) -> np.ndarray:
    """An image as float64 on [0, 1]: integers are divided by their dtype's maximum."""
    try:
        return unit_range(image, np.float64)
    except ValueError:
        raise ValueError(
            f"{name} must be a real-valued image, got dtype {np.asarray(image).dtype}"
        ) from None


def _check_blurred(blurred: Any) -> np.ndarray:
    image = _as_unit_float(blurred, "blurred")
    if image.ndim not in (2, 3) or 0 in image.shape:
        raise ValueError(f"blurred must have shape (H, W) or (H, W, C), got {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("blurred contains NaN or infinite values")
    return image


def _check_kernel(kernel: Any) -> np.ndarray:
    """The kernel as float64, normalised to unit sum (see the module's Scale section)."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 2 or 0 in kernel.shape:
        raise ValueError(f"kernel must be a non-empty 2-D array (K, K), got shape {kernel.shape}")
    if not (np.issubdtype(kernel.dtype, np.integer) or np.issubdtype(kernel.dtype, np.floating)):
        raise ValueError(f"kernel must be real-valued, got dtype {kernel.dtype}")
    kernel = kernel.astype(np.float64)
    if not np.all(np.isfinite(kernel)):
        raise ValueError("kernel contains NaN or infinite values")
    if np.any(kernel < 0):
        raise ValueError(f"kernel must be non-negative, its minimum is {kernel.min():g}")
    total = kernel.sum()
    if total <= 0:
        raise ValueError("kernel is all zero: there is no blur to invert")
    return kernel / total


def _check_balance(balance: Any) -> float:
    try:
        value = float(balance)
    except (TypeError, ValueError):
        raise ValueError(f"balance must be a number > 0, got {balance!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"balance must be a finite number > 0, got {balance!r}")
    return value


def _rotate_about_origin(kernel: np.ndarray) -> np.ndarray:
    """The kernel rotated by 180 degrees about its origin pixel ``(K // 2, K' // 2)``.

    For odd sides this is ``kernel[::-1, ::-1]``. For even sides a plain flip would move the
    origin by one pixel (to ``K // 2 - 1``) and shift the restoration with it, so a zero row or
    column goes in front to keep the origin where it was: correlating with a kernel at anchor
    ``K // 2`` (``cv2.filter2D``'s default) is convolving with exactly this rotation.
    """
    rows, cols = kernel.shape
    rotated = np.zeros((rows + 1 - rows % 2, cols + 1 - cols % 2))
    rotated[1 - rows % 2 :, 1 - cols % 2 :] = kernel[::-1, ::-1]
    return rotated


def _raised_cosine(before: int, inside: int, after: int) -> np.ndarray:
    """1-D weight: 0 at both ends of the array, rising over the pad to 1 on the crop."""
    weight = np.ones(before + inside + after)
    weight[:before] = 0.5 - 0.5 * np.cos(np.pi * (np.arange(before) + 0.5) / before)
    weight[before + inside :] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(after) + 0.5) / after)
    return weight


def _extend(
    channel: np.ndarray, kernel: np.ndarray, border: str, pad: int
) -> tuple[np.ndarray, slice, slice]:
    """Pad one channel for a circular filter; returns it and the slices of the crop in it."""
    height, width = channel.shape
    if border == "none":
        return channel, slice(None), slice(None)
    # The far side takes the extra rows that bring the FFT to a fast length.
    rows = scipy.fft.next_fast_len(height + 2 * pad, real=True)
    cols = scipy.fft.next_fast_len(width + 2 * pad, real=True)
    pads = ((pad, rows - height - pad), (pad, cols - width - pad))
    extended = np.pad(channel, pads, mode=border.removesuffix("-taper"))
    if border.endswith("-taper"):
        weight = np.outer(
            _raised_cosine(pad, height, pads[0][1]), _raised_cosine(pad, width, pads[1][1])
        )
        reblurred = _circular_blur(extended, uft.ir2tf(kernel, extended.shape))
        extended = weight * extended + (1.0 - weight) * reblurred
    return extended, slice(pad, pad + height), slice(pad, pad + width)


def _circular_blur(image: np.ndarray, transfer: np.ndarray) -> np.ndarray:
    return scipy.fft.irfft2(scipy.fft.rfft2(image) * transfer, s=image.shape)


def _check_options(border: str, pad: Any, boundary_iterations: Any) -> tuple[str, int | None, int]:
    if border not in BORDER_MODES:
        raise ValueError(f"border must be one of {BORDER_MODES}, got {border!r}")
    if pad is not None and (isinstance(pad, bool) or int(pad) != pad or pad < 1):
        raise ValueError(f"pad must be a positive number of pixels or None, got {pad!r}")
    iterations = boundary_iterations
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
        raise ValueError(f"boundary_iterations must be an integer >= 0, got {iterations!r}")
    if border == "none" and iterations > 0:
        raise ValueError("boundary_iterations need a padded border, not border='none'")
    return border, None if pad is None else int(pad), int(iterations)


def _deconvolve(
    image: np.ndarray,
    kernel: np.ndarray,
    balances: Sequence[float],
    rotate_kernel: bool,
    border: str,
    pad: int | None,
    boundary_iterations: int,
) -> list[np.ndarray]:
    """Checked float64 (H, W, C) image, unit-sum kernel and options in; one float64 result per
    balance, clipped to [0, 1]."""
    if rotate_kernel:
        kernel = _rotate_about_origin(kernel)
    if pad is None:
        pad = max(kernel.shape)
    if border == "none" and (kernel.shape[0] > image.shape[0] or kernel.shape[1] > image.shape[1]):
        raise ValueError(
            f"kernel {kernel.shape} is larger than the image {image.shape[:2]}; "
            "border='none' cannot deconvolve it (use a padding border)"
        )
    results = [np.empty(image.shape) for _ in balances]
    for c in range(image.shape[2]):
        extended, rows, cols = _extend(image[:, :, c], kernel, border, pad)
        transfer = uft.ir2tf(kernel, extended.shape) if boundary_iterations else None
        for result, balance in zip(results, balances, strict=True):
            data = extended
            for iteration in range(boundary_iterations + 1):
                # The kernel goes in as an impulse response: scikit-image <= 0.26 keeps only the
                # real part of a transfer function passed in its place (scikit-image #7363).
                restored = _skimage_wiener(data, kernel, balance, clip=False)
                if iteration < boundary_iterations:
                    # Re-estimate the unobserved band as the blur of the current restoration; the
                    # fixed point is the regularised least-squares solution that fits the crop
                    # only (module documentation, Borders).
                    data = _circular_blur(restored, transfer)
                    data[rows, cols] = image[:, :, c]
            result[:, :, c] = restored[rows, cols]
    return [np.clip(result, 0.0, 1.0) for result in results]


def wiener_deconvolve(
    blurred: Any,
    kernel: Any,
    balance: float,
    *,
    rotate_kernel: bool = False,
    border: Border = DEFAULT_BORDER,
    pad: int | None = None,
    boundary_iterations: int = 0,
) -> np.ndarray:
    """Restore a blurred image by Wiener deconvolution with a known kernel.

    The filter is :func:`skimage.restoration.wiener`, ``conj(H) / (|H|^2 + balance |D|^2)``,
    with ``H`` the transfer function of the unit-sum kernel and ``D`` that of the 5-point
    Laplacian (``|D|^2`` runs from 0 at zero frequency to 64 at the highest), applied to each
    channel of the padded image, which is then cropped back.

    Parameters
    ----------
    blurred : array_like, shape (H, W) or (H, W, C)
        Blurred image, float in [0, 1] (integers are divided by their dtype's maximum), as
        ``csb-generate`` stores it: with the 1/T gain already applied.
    kernel : array_like, shape (K, K')
        Point-spread function, >= 0, origin at pixel ``(K // 2, K' // 2)`` (the true-convolution
        kernel the generator stores). It is normalised to unit sum here, so a stored kernel whose
        sum is the exposure T < 1 restores on the sharp image's scale.
    balance : float
        Regularisation weight, > 0 (dimensionless, independent of the image size); larger values
        smooth more and amplify noise less. Tune it with :func:`tune_wiener_balance`.
    rotate_kernel : bool, optional
        Deconvolve with the kernel rotated by 180 degrees about its origin pixel, i.e. as if the
        image had been blurred by *correlation* with ``kernel`` at anchor ``(K // 2, K' // 2)``,
        as the thesis's generator (``cv2.filter2D``) did. For odd sizes this is
        ``kernel[::-1, ::-1]``. Default False: the generator's true convolution.
    border : {"symmetric-taper", "symmetric", "reflect", "reflect-taper", "none"}, optional
        How the image is extended before the circular filter (module documentation, Borders).
        ``"symmetric"`` and ``"reflect"`` are ``numpy.pad`` modes; ``-taper`` also blends the
        padded band into its circular blur; ``"none"`` filters the crop as it is.
    pad : int, optional
        Pixels of padding on each side, >= 1. Default: the kernel's larger side.
    boundary_iterations : int, optional
        Extra Wiener passes, >= 0, each of which replaces the padded band by the blur of the
        previous restoration and keeps the observed crop. Default 0: one Wiener filter, the
        baseline. More passes approach the regularised least-squares restoration that fits the
        crop only, treating the pixels beyond it as unknown (Reeves 2005); they cost one filter
        each and are no longer a single linear shift-invariant filter (``docs/baseline.md``).

    Returns
    -------
    ndarray of float32, same shape as ``blurred``
        The restored image, clipped to [0, 1]; pixel ``(i, j)`` estimates sharp pixel ``(i, j)``.

    Raises
    ------
    ValueError
        If ``blurred`` is not 2-D or 3-D or not finite, the kernel is not a non-empty 2-D
        array or has negative values or sums to zero, ``balance`` is not a finite number > 0,
        ``border``, ``pad`` or ``boundary_iterations`` is invalid, or with ``border="none"`` the
        kernel is larger than the image.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage import data
    >>> from csb_generator import blur_crop
    >>> from diffdeblur.wiener import wiener_deconvolve
    >>> photo = data.camera()                                 # uint8, 512 x 512
    >>> kernel = np.zeros((5, 5)); kernel[2, 1:4] = 0.25      # horizontal blur, sums to T = 0.75
    >>> box = (200, 200, 64, 64)                              # top, left, height, width
    >>> blurred = blur_crop(photo, kernel, box)[0] / kernel.sum()   # the generator's 1/T gain
    >>> sharp = photo[200:264, 200:264] / 255
    >>> restored = wiener_deconvolve(blurred, kernel, balance=1e-3)
    >>> restored.shape, restored.dtype
    ((64, 64), dtype('float32'))
    >>> def psnr(image): return 10 * np.log10(1 / np.mean((image - sharp) ** 2))
    >>> print(f"{psnr(blurred):.1f} dB blurred, {psnr(restored):.1f} dB restored")
    31.5 dB blurred, 38.4 dB restored
    """
    image = _check_blurred(blurred)
    unit_kernel = _check_kernel(kernel)
    value = _check_balance(balance)
    options = _check_options(border, pad, boundary_iterations)
    planes = image if image.ndim == 3 else image[:, :, None]
    (restored,) = _deconvolve(planes, unit_kernel, [value], bool(rotate_kernel), *options)
    return restored.reshape(image.shape).astype(np.float32)


def _psnr(restored: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of one image pair, data range 1, in double precision (as ``metrics.psnr``)."""
    return psnr_from_mse(float(np.mean((restored - reference) ** 2)))


@dataclass(frozen=True)
class WienerTuning:
    """The outcome of :func:`tune_wiener_balance`.

    Attributes
    ----------
    balance : float
        The balance with the highest mean PSNR.
    balances : tuple of float
        The grid, ascending.
    mean_psnr : tuple of float
        Mean PSNR in dB (data range 1) of the restorations over the samples, per balance.
    blurred_psnr : float
        Mean PSNR in dB of the blurred inputs themselves (the "Blurred" row of a report).
    count : int
        Number of samples used.
    at_edge : bool
        True when the best balance is the smallest or the largest of the grid: the optimum may
        lie outside it, so widen the grid.
    rotate_kernel : bool
        Whether the restorations used the rotated kernel.
    border : str
        The border handling used.
    boundary_iterations : int
        The extra Wiener passes used.
    """

    balance: float
    balances: tuple[float, ...]
    mean_psnr: tuple[float, ...]
    blurred_psnr: float
    count: int
    at_edge: bool
    rotate_kernel: bool
    border: str
    boundary_iterations: int

    @property
    def best_psnr(self) -> float:
        """Mean PSNR in dB at the chosen balance."""
        return self.mean_psnr[self.balances.index(self.balance)]


def _check_balances(balances: Iterable[float] | None) -> tuple[float, ...]:
    if balances is None:
        return DEFAULT_BALANCES
    values = np.asarray(list(balances), dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("balances must be a non-empty sequence of numbers")
    if not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"every balance must be a finite number > 0, got {values.tolist()}")
    return tuple(float(b) for b in np.unique(values))


def tune_wiener_balance(
    samples: Iterable[Mapping[str, Any]],
    balances: Iterable[float] | None = None,
    *,
    limit: int | None = None,
    rotate_kernel: bool = False,
    border: Border = DEFAULT_BORDER,
    pad: int | None = None,
    boundary_iterations: int = 0,
) -> WienerTuning:
    """Choose the Wiener balance that maximises the mean PSNR on training samples.

    Every sample is restored with every balance of the grid by :func:`wiener_deconvolve` and
    compared with its ``sharp`` crop; the balance with the highest mean PSNR (in dB, averaged over
    samples) wins. This is the thesis's protocol: tune on the training set, then apply the chosen
    balance to the test set.

    Parameters
    ----------
    samples : iterable of mapping
        Samples as the ``csb-generate`` datasets return them (a ``ShardDataset``, a
        ``TSweepDataset`` part, or a list of dicts): each needs ``"blurred"`` (H, W[, C]) in
        [0, 1], ``"sharp"`` of the same shape (integers are divided by their dtype's maximum,
        floats used as they are) and ``"kernel"`` (K, K).
    balances : iterable of float, optional
        The grid, every value > 0; sorted and deduplicated. Default :data:`DEFAULT_BALANCES`,
        19 values log-spaced from 1e-6 to 1 (``numpy.logspace(-6, 0, 19)``).
    limit : int, optional
        Use only the first ``limit`` samples (>= 1). Default: all.
    rotate_kernel, border, pad, boundary_iterations
        As in :func:`wiener_deconvolve`.

    Returns
    -------
    WienerTuning
        The chosen balance, the mean PSNR per balance, and whether the choice is at the grid's
        edge (then a ``UserWarning`` is also issued).

    Raises
    ------
    ValueError
        If there are no samples, a sample lacks a field or its ``sharp`` and ``blurred`` shapes
        differ, the grid or ``limit`` is invalid, or a sample is invalid for
        :func:`wiener_deconvolve`.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage import data
    >>> from csb_generator import blur
    >>> from diffdeblur.wiener import tune_wiener_balance
    >>> rng = np.random.default_rng(0)
    >>> photo = data.camera()[:, :, None]                     # (512, 512, 1) uint8
    >>> kernel = np.zeros((5, 5)); kernel[1:4, 2] = 1 / 3     # vertical blur, T = 1
    >>> blurred = blur(photo, kernel)
    >>> samples = []
    >>> for top in (50, 150, 250):
    ...     noisy = blurred[top : top + 32, 200:232] + rng.normal(0, 0.01, (32, 32, 1))
    ...     samples.append({"sharp": photo[top : top + 32, 200:232],
    ...                     "blurred": np.clip(noisy, 0, 1), "kernel": kernel})
    >>> tuning = tune_wiener_balance(samples, balances=[1e-4, 1e-3, 1e-2, 1e-1, 1])
    >>> tuning.balance, tuning.at_edge, tuning.count
    (0.1, False, 3)
    >>> [round(p, 1) for p in tuning.mean_psnr], round(tuning.blurred_psnr, 1)
    ([28.4, 32.6, 36.9, 37.3, 35.5], 35.6)
    """
    grid = _check_balances(balances)
    options = _check_options(border, pad, boundary_iterations)
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 1):
        raise ValueError(f"limit must be a positive number of samples or None, got {limit!r}")
    selected = samples if limit is None else itertools.islice(samples, int(limit))
    totals = np.zeros(len(grid))
    blurred_total = 0.0
    count = 0
    for number, sample in enumerate(selected):
        try:
            blurred, sharp, kernel = sample["blurred"], sample["sharp"], sample["kernel"]
        except KeyError as error:
            raise ValueError(f"sample {number} has no {error.args[0]!r} field") from None
        image = _check_blurred(blurred)
        reference = _as_unit_float(sharp, "sharp")
        if reference.shape != image.shape:
            raise ValueError(
                f"sample {number}: sharp {reference.shape} and blurred {image.shape} "
                "differ in shape"
            )
        planes = image if image.ndim == 3 else image[:, :, None]
        reference = reference.reshape(planes.shape)
        restored = _deconvolve(planes, _check_kernel(kernel), grid, bool(rotate_kernel), *options)
        # Scored in float32, as wiener_deconvolve returns it, so the tuned PSNR is what a caller
        # of wiener_deconvolve measures.
        totals += [_psnr(r.astype(np.float32).astype(np.float64), reference) for r in restored]
        blurred_total += _psnr(planes, reference)
        count += 1
    if count == 0:
        raise ValueError("no samples to tune the balance on")
    mean_psnr = totals / count
    best = int(np.argmax(mean_psnr))
    # A one-value grid is at its own edge: it cannot show where the optimum lies.
    at_edge = best in (0, len(grid) - 1)
    if at_edge:
        warnings.warn(
            f"the best Wiener balance {grid[best]:g} is at the edge of the grid "
            f"[{grid[0]:g}, {grid[-1]:g}]; the optimum may lie outside it: widen the grid",
            UserWarning,
            stacklevel=2,
        )
    return WienerTuning(
        balance=grid[best],
        balances=grid,
        mean_psnr=tuple(float(p) for p in mean_psnr),
        blurred_psnr=blurred_total / count,
        count=count,
        at_edge=at_edge,
        rotate_kernel=bool(rotate_kernel),
        border=options[0],
        boundary_iterations=options[2],
    )
