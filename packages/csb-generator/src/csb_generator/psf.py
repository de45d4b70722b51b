"""Point-spread functions: camera-shake kernels for an exposure fraction, disks, and files.

Kernels are ``psf_size x psf_size`` float64 arrays indexed ``[row, column]``. The central pixel
``(psf_size // 2, psf_size // 2)`` is the origin of the convolution (see :mod:`csb_generator.blur`),
so a kernel whose centre of mass sits there blurs without shifting the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numba
import numpy as np

from .trajectory import DEFAULT_NUM_SAMPLES, Trajectory, random_trajectory

__all__ = [
    "Alignment",
    "RandomPSF",
    "TrajectoryOutsideGrid",
    "disk_kernel",
    "embed_kernel",
    "exposure_weights",
    "load_kernel",
    "psf_from_trajectory",
    "random_psf",
]

Alignment = Literal["centre-of-mass", "common-origin"]

#: How many times :func:`random_psf` redraws a trajectory that leaves the grid before giving up.
MAX_REDRAWS = 1000


class TrajectoryOutsideGrid(ValueError):
    """The exposed part of a trajectory does not fit on the kernel grid."""


@dataclass(frozen=True)
class RandomPSF:
    """A random camera-shake kernel with the trajectory it came from.

    Attributes
    ----------
    kernel : ndarray of float64
        Shape (psf_size, psf_size) for one exposure, (len(exposures), psf_size, psf_size) for a
        sequence; each kernel sums to its exposure.
    trajectory : Trajectory
        The trajectory that was splatted, with all the parameters used.
    redraws : int
        How many trajectories were drawn and rejected because they left the grid.
    """

    kernel: np.ndarray
    trajectory: Trajectory
    redraws: int


def _check_exposure(exposure: float) -> float:
    exposure = float(exposure)
    if not (0 < exposure <= 1):
        raise ValueError(f"exposure T must be in (0, 1], got {exposure!r}")
    return exposure


def _check_psf_size(psf_size: int) -> int:
    if int(psf_size) != psf_size or psf_size < 1:
        raise ValueError(f"psf_size must be a positive integer (pixels), got {psf_size!r}")
    return int(psf_size)


def exposure_weights(num_samples: int, exposure: float) -> np.ndarray:
    """Weight of each trajectory sample for an exposure fraction T.

    Sample ``t`` gets ``clip(T * N - t, 0, 1)``: the first ``floor(T * N)`` samples count fully,
    the next one by the fractional remainder, the rest not at all. The weights sum to ``T * N``.

    Parameters
    ----------
    num_samples : int
        Number of trajectory samples N, >= 1.
    exposure : float
        Exposure fraction T, in (0, 1].

    Returns
    -------
    ndarray of float64, shape (num_samples,)

    Examples
    --------
    >>> from csb_generator import exposure_weights
    >>> exposure_weights(4, 0.625)
    array([1. , 1. , 0.5, 0. ])
    """
    exposure = _check_exposure(exposure)
    return np.clip(exposure * num_samples - np.arange(num_samples, dtype=np.float64), 0.0, 1.0)


@numba.njit(cache=True)
def _splat_exposed(cols, rows, exposure, psf_size, centre_whole_path):
    """Weights, centring and bilinear splatting in two passes over the samples.

    Returns the kernel divided by N and True, or an unfinished kernel and False when an exposed
    sample falls off the grid (the caller raises: numba cannot build our exception).
    """
    n = cols.shape[0]
    exposed_samples = exposure * n
    total = 0.0
    sum_cols = 0.0
    sum_rows = 0.0
    for t in range(n):
        w = 1.0 if centre_whole_path else min(max(exposed_samples - t, 0.0), 1.0)
        total += w
        sum_cols += w * cols[t]
        sum_rows += w * rows[t]
    centre = psf_size // 2
    shift_cols = centre - sum_cols / total
    shift_rows = centre - sum_rows / total
    kernel = np.zeros((psf_size, psf_size), dtype=np.float64)
    last = psf_size - 1
    for t in range(n):
        w = min(max(exposed_samples - t, 0.0), 1.0)
        if w == 0.0:
            break  # weights never increase: every later sample is unexposed too
        col = cols[t] + shift_cols
        row = rows[t] + shift_rows
        if col < 0.0 or row < 0.0 or col > last or row > last:
            return kernel, False
        j = math.floor(col)
        i = math.floor(row)
        fc = col - j
        fr = row - i
        # A sample exactly on the last row/column has zero weight on the pixel beyond it.
        kernel[i, j] += w * (1.0 - fc) * (1.0 - fr)
        if fc > 0.0:
            kernel[i, j + 1] += w * fc * (1.0 - fr)
        if fr > 0.0:
            kernel[i + 1, j] += w * (1.0 - fc) * fr
            if fc > 0.0:
                kernel[i + 1, j + 1] += w * fc * fr
    return kernel / n, True


def _positions_of(trajectory: Trajectory | np.ndarray) -> np.ndarray:
    positions = trajectory.positions if isinstance(trajectory, Trajectory) else trajectory
    positions = np.asarray(positions)
    if positions.ndim != 1 or positions.shape[0] < 1 or not np.iscomplexobj(positions):
        raise ValueError("a trajectory must be a 1-D complex array of positions (col + 1j*row)")
    if not np.all(np.isfinite(positions)):
        raise ValueError("trajectory positions must be finite")
    return positions.astype(np.complex128, copy=False)


def psf_from_trajectory(
    trajectory: Trajectory | np.ndarray,
    psf_size: int,
    exposure: float = 1.0,
    *,
    alignment: Alignment = "centre-of-mass",
) -> np.ndarray:
    """Splat a trajectory into a kernel for an exposure fraction T.

    The model: docs/model.md#2-kernel-psf-for-an-exposure-fraction-t.

    Each exposed sample is splatted bilinearly with its weight from :func:`exposure_weights`, and
    the kernel is divided by the number of samples N, so it sums to T exactly (to floating-point
    precision).

    Parameters
    ----------
    trajectory : Trajectory or ndarray of complex
        The path; positions in pixels (real = column, imaginary = row).
    psf_size : int
        Side of the square kernel grid in pixels, >= 1.
    exposure : float, optional
        Exposure fraction T in (0, 1]. Default 1.
    alignment : {"centre-of-mass", "common-origin"}, optional
        ``"centre-of-mass"`` (default) shifts the exposed part of the path (sub-pixel, before
        splatting) so that the kernel's centre of mass is exactly the central pixel
        ``(psf_size // 2, psf_size // 2)``; a blurred image is then aligned with its sharp image.
        ``"common-origin"`` applies the shift that centres the *whole* trajectory (T = 1) to every
        T, so the kernels of one trajectory nest: the kernel for T1 <= T2 is element-wise <= the
        kernel for T2 (Boracchi & Foi's cumulative PSFs).

    Returns
    -------
    ndarray of float64, shape (psf_size, psf_size)
        Non-negative, summing to T.

    Raises
    ------
    TrajectoryOutsideGrid
        If an exposed sample falls outside the grid: mass is never dropped silently.

    Examples
    --------
    >>> from csb_generator import linear_trajectory, psf_from_trajectory
    >>> k = psf_from_trajectory(linear_trajectory(8.0), psf_size=16, exposure=0.5)
    >>> float(round(k.sum(), 12))
    0.5
    """
    positions = _positions_of(trajectory)
    psf_size = _check_psf_size(psf_size)
    exposure = _check_exposure(exposure)
    if alignment not in ("centre-of-mass", "common-origin"):
        raise ValueError(
            f"alignment must be 'centre-of-mass' or 'common-origin', got {alignment!r}"
        )
    cols = np.ascontiguousarray(positions.real)
    rows = np.ascontiguousarray(positions.imag)
    kernel, fits = _splat_exposed(cols, rows, exposure, psf_size, alignment == "common-origin")
    if not fits:
        exposed = exposure_weights(positions.shape[0], exposure) > 0
        centre = psf_size // 2
        raise TrajectoryOutsideGrid(
            f"the trajectory (extent {np.ptp(cols[exposed]):.2f} x {np.ptp(rows[exposed]):.2f} px "
            f"for T={exposure:g}) does not fit a {psf_size}x{psf_size} kernel centred on pixel "
            f"({centre}, {centre}); use a larger psf_size or a shorter trajectory"
        )
    return kernel


def random_psf(
    rng: np.random.Generator,
    psf_size: int,
    exposure: float | Sequence[float] = 1.0,
    *,
    length: float | None = None,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    anxiety: float | None = None,
    centripetal: float | None = None,
    gaussian: float | None = None,
    freq_big_shakes: float | None = None,
    angle: float | None = None,
    alignment: Alignment = "centre-of-mass",
) -> RandomPSF:
    """Draw a camera-shake kernel, redrawing trajectories that would leave the grid.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw.
    psf_size : int
        Side of the kernel grid in pixels, >= 1.
    exposure : float or sequence of float, optional
        Exposure fraction(s) T in (0, 1]. With a sequence, one trajectory is drawn that fits the
        grid at every T and one kernel per T is returned. Default 1.
    length : float, optional
        Path length in pixels, > 0. Default ``psf_size / 2``.
    num_samples, anxiety, centripetal, gaussian, freq_big_shakes, angle
        As in :func:`~csb_generator.random_trajectory`; the ones left unset are drawn anew with
        every redraw.
    alignment : {"centre-of-mass", "common-origin"}, optional
        See :func:`psf_from_trajectory`.

    Returns
    -------
    RandomPSF
        The kernel(s), the trajectory and the number of redraws.

    Raises
    ------
    TrajectoryOutsideGrid
        If no trajectory out of 1000 draws fits (the length is too large for the grid).

    Examples
    --------
    >>> import numpy as np
    >>> from csb_generator import random_psf
    >>> psf = random_psf(np.random.default_rng(1), psf_size=32)
    >>> psf.kernel.shape, float(round(psf.kernel.sum(), 12))
    ((32, 32), 1.0)
    """
    psf_size = _check_psf_size(psf_size)
    exposures = np.atleast_1d(np.asarray(exposure, dtype=np.float64))
    for value in exposures:
        _check_exposure(value)
    length = psf_size / 2 if length is None else length
    last_error: TrajectoryOutsideGrid | None = None
    for redraws in range(MAX_REDRAWS):
        trajectory = random_trajectory(
            rng,
            length,
            num_samples=num_samples,
            anxiety=anxiety,
            centripetal=centripetal,
            gaussian=gaussian,
            freq_big_shakes=freq_big_shakes,
            angle=angle,
        )
        try:
            kernels = np.stack(
                [
                    psf_from_trajectory(trajectory, psf_size, t, alignment=alignment)
                    for t in exposures
                ]
            )
        except TrajectoryOutsideGrid as error:
            last_error = error
            continue
        kernel = kernels if np.ndim(exposure) else kernels[0]
        return RandomPSF(kernel=kernel, trajectory=trajectory, redraws=redraws)
    raise TrajectoryOutsideGrid(
        f"no trajectory of length {length:g} px fitted a {psf_size}x{psf_size} kernel in "
        f"{MAX_REDRAWS} draws (last: {last_error}); use a larger psf_size or a shorter length"
    )


def disk_kernel(radius: float, psf_size: int, *, supersample: int = 16) -> np.ndarray:
    """An out-of-focus (uniform disk) kernel, anti-aliased and normalised to sum 1.

    Parameters
    ----------
    radius : float
        Disk radius in pixels, >= 0 (0 gives the identity kernel).
    psf_size : int
        Side of the kernel grid in pixels; the disk is centred on pixel
        ``(psf_size // 2, psf_size // 2)`` and must fit inside the grid.
    supersample : int, optional
        Sub-samples per pixel side used to estimate each pixel's covered area. Default 16.

    Returns
    -------
    ndarray of float64, shape (psf_size, psf_size)

    Examples
    --------
    >>> from csb_generator import disk_kernel
    >>> k = disk_kernel(3.0, psf_size=9)
    >>> float(round(k.sum(), 12)), bool(k[4, 4] == k.max())
    (1.0, True)
    """
    psf_size = _check_psf_size(psf_size)
    radius = float(radius)
    centre = psf_size // 2
    room = min(centre, psf_size - 1 - centre) + 0.5
    if not (0 <= radius <= room):
        raise ValueError(
            f"disk radius must be in [0, {room:g}] px for a {psf_size}x{psf_size} kernel, "
            f"got {radius!r}"
        )
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    coords = (np.arange(psf_size)[:, None] + offsets[None, :]).ravel() - centre
    inside = (coords[:, None] ** 2 + coords[None, :] ** 2) <= radius**2
    coverage = inside.reshape(psf_size, supersample, psf_size, supersample).mean(axis=(1, 3))
    if coverage.sum() == 0:  # radius below the sub-sample spacing: a point
        coverage[centre, centre] = 1.0
    return coverage / coverage.sum()


def embed_kernel(kernel: np.ndarray, psf_size: int) -> np.ndarray:
    """Place a smaller kernel on a ``psf_size`` grid, its centre pixel on the grid's centre pixel.

    The centre pixel of an ``h x w`` kernel is ``(h // 2, w // 2)``; it lands on
    ``(psf_size // 2, psf_size // 2)``, the origin used by :func:`~csb_generator.blur`.

    Parameters
    ----------
    kernel : ndarray, shape (h, w)
        The kernel; h and w must not exceed ``psf_size``.
    psf_size : int
        Side of the target grid in pixels.

    Returns
    -------
    ndarray of float64, shape (psf_size, psf_size)
    """
    psf_size = _check_psf_size(psf_size)
    kernel = np.asarray(kernel, dtype=np.float64)
    height, width = kernel.shape
    if height > psf_size or width > psf_size:
        raise ValueError(f"a {height}x{width} kernel does not fit a {psf_size}x{psf_size} grid")
    top = psf_size // 2 - height // 2
    left = psf_size // 2 - width // 2
    if top + height > psf_size or left + width > psf_size:
        raise ValueError(
            f"a {height}x{width} kernel cannot be centred on a {psf_size}x{psf_size} grid"
        )
    grid = np.zeros((psf_size, psf_size), dtype=np.float64)
    grid[top : top + height, left : left + width] = kernel
    return grid


def load_kernel(path: str | Path, psf_size: int | None = None) -> np.ndarray:
    """Load a blur kernel from a ``.npy`` file or an image, normalised to sum 1.

    Colour images are averaged over their colour channels (an alpha channel is dropped).

    Parameters
    ----------
    path : str or Path
        A ``.npy`` file holding a 2-D array, or an image file readable by imageio.
    psf_size : int, optional
        If given, the kernel is placed on a ``psf_size x psf_size`` grid with
        :func:`embed_kernel`.

    Returns
    -------
    ndarray of float64
        Non-negative, summing to 1.

    Raises
    ------
    ValueError
        If the file cannot be read, is not 2-D, has negative or non-finite values, sums to 0, or
        is larger than ``psf_size``. The message names the file.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            import imageio.v3 as iio

            array = iio.imread(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read kernel file {path}: {error}") from error
    array = np.asarray(array)
    if array.ndim == 3 and path.suffix.lower() != ".npy":
        channels = array.shape[2]
        array = array[..., : 3 if channels >= 3 else 1].mean(axis=2)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(
            f"kernel file {path} must hold a non-empty 2-D array, got shape {array.shape}"
        )
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)) or array.min() < 0:
        raise ValueError(f"kernel file {path} has negative or non-finite values")
    total = array.sum()
    if total <= 0:
        raise ValueError(f"kernel file {path} sums to 0")
    array = array / total
    if psf_size is not None:
        try:
            array = embed_kernel(array, psf_size)
        except ValueError as error:
            raise ValueError(f"kernel file {path}: {error}") from error
    return array
