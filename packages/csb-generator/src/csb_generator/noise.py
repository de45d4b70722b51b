"""Poisson-Gaussian sensor noise with the 1/T gain, and the whole degradation.

The model: docs/model.md#4-noise-thesis-convention.

With intensities in [0, 1] and a kernel summing to the exposure T:

    p = lam / 255                          photons per unit intensity
    u = Poisson(p * clip(b, 0, 1)) / p     shot noise, in intensity units
    n ~ Normal(0, (sigma / 255) ** 2)      read noise, sigma in 8-bit grey levels
    y = clip((u + n) / T, 0, 1)            the gain 1/T restores the dynamic range

A shorter exposure means less blur but more noise.
"""

from __future__ import annotations

import math

import numpy as np

from .blur import blur

__all__ = ["add_noise", "degrade"]


def _check_noise(exposure: float, lam: float, sigma: float) -> tuple[float, float, float]:
    exposure, lam, sigma = float(exposure), float(lam), float(sigma)
    if not (0 < exposure <= 1):
        raise ValueError(f"exposure T must be in (0, 1], got {exposure!r}")
    if math.isnan(lam) or lam <= 0:
        raise ValueError(
            f"lam (photons per 8-bit grey level scale) must be > 0 or inf, got {lam!r}"
        )
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma (grey levels) must be a finite number >= 0, got {sigma!r}")
    return exposure, lam, sigma


def add_noise(
    blurred: np.ndarray,
    exposure: float,
    lam: float = math.inf,
    sigma: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Apply shot and read noise and the 1/T gain to a blurred image.

    Parameters
    ----------
    blurred : ndarray of float
        Blurred image ``b = k * x`` with intensities in [0, 1] and ``sum(k) == exposure``.
    exposure : float
        Exposure fraction T, in (0, 1].
    lam : float, optional
        Photon-count scale lambda, > 0: a unit intensity collects ``lam / 255`` photons on
        average. ``inf`` (default) means no shot noise.
    sigma : float, optional
        Read-noise standard deviation in 8-bit grey levels, >= 0. Default 0.
    rng : numpy.random.Generator, optional
        Source of the noise; required unless the image is noiseless. The Poisson draw comes
        first, then the Gaussian one.

    Returns
    -------
    ndarray of float64, same shape
        ``clip((u + n) / T, 0, 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> from csb_generator import add_noise
    >>> b = np.full((2, 2), 0.25)                      # a flat image blurred with sum(k) = 0.5
    >>> add_noise(b, exposure=0.5)                     # noiseless: only the gain
    array([[0.5, 0.5],
           [0.5, 0.5]])
    """
    exposure, lam, sigma = _check_noise(exposure, lam, sigma)
    signal = np.asarray(blurred, dtype=np.float64)
    noisy = signal
    if math.isfinite(lam) or sigma > 0:
        if rng is None:
            raise ValueError("a numpy.random.Generator is required to add noise")
    if math.isfinite(lam):
        photons_per_unit = lam / 255.0
        noisy = rng.poisson(photons_per_unit * np.clip(signal, 0.0, 1.0)) / photons_per_unit
    if sigma > 0:
        noisy = noisy + rng.normal(0.0, sigma / 255.0, size=signal.shape)
    return np.clip(noisy / exposure, 0.0, 1.0)


def degrade(
    image: np.ndarray,
    kernel: np.ndarray,
    exposure: float = 1.0,
    lam: float = math.inf,
    sigma: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Blur a sharp image with a kernel, then add noise and the 1/T gain.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Sharp image; float in [0, 1], or integers scaled by their dtype's maximum.
    kernel : ndarray, shape (K, K)
        Blur kernel with origin at its central pixel, summing to ``exposure`` (as returned by
        :func:`~csb_generator.psf_from_trajectory`).
    exposure : float, optional
        Exposure fraction T in (0, 1]. Default 1.
    lam : float, optional
        Photon-count scale, > 0; ``inf`` (default) for no shot noise.
    sigma : float, optional
        Read noise in 8-bit grey levels, >= 0. Default 0.
    rng : numpy.random.Generator, optional
        Noise source; required when there is noise.

    Returns
    -------
    ndarray of float64, same shape as ``image``, in [0, 1]

    Raises
    ------
    ValueError
        If the kernel does not sum to the exposure (to 1e-6 relative), or on invalid parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from csb_generator import degrade, linear_trajectory, psf_from_trajectory
    >>> image = np.full((32, 32, 3), 0.5)
    >>> kernel = psf_from_trajectory(linear_trajectory(6.0), psf_size=9, exposure=0.5)
    >>> y = degrade(image, kernel, exposure=0.5, lam=48000, sigma=4, rng=np.random.default_rng(0))
    >>> y.shape, bool(abs(y.mean() - 0.5) < 0.01)
    ((32, 32, 3), True)
    """
    exposure, lam, sigma = _check_noise(exposure, lam, sigma)
    total = float(np.sum(kernel))
    if abs(total - exposure) > 1e-6 * exposure:
        raise ValueError(
            f"the kernel sums to {total:.6g} but the exposure is {exposure:g}; "
            "a kernel for exposure T must sum to T"
        )
    return add_noise(blur(image, kernel), exposure, lam, sigma, rng)
