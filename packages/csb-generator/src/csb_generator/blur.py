"""Blurring by true convolution, without padding artefacts.

The model: docs/model.md#3-blur-true-convolution-no-padding-artefacts.

The output pixel ``(i, j)`` is aligned with input pixel ``(i, j)`` when the kernel's origin is its
central pixel ``(K // 2, K // 2)``:

    b[i, j] = sum_{u, v} k[u, v] * x[i - (u - K // 2), j - (v - K // 2)]

A crop is blurred from the region around it that the kernel reaches ("blur the full image, then
crop"), so its borders carry real image content. Only where the source image ends is the region
completed by reflection, and the caller is told.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

__all__ = ["blur", "blur_crop"]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3) or 0 in image.shape:
        raise ValueError(f"an image must have shape (H, W) or (H, W, C), got {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"unsupported image dtype {image.dtype}")
    return image


def _as_float(image: np.ndarray) -> np.ndarray:
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float64) / np.iinfo(image.dtype).max
    return image.astype(np.float64, copy=False)


def _as_kernel(kernel: np.ndarray) -> np.ndarray:
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or 0 in kernel.shape:
        raise ValueError(f"a kernel must be a non-empty 2-D array, got shape {kernel.shape}")
    if not np.all(np.isfinite(kernel)):
        raise ValueError("kernel values must be finite")
    return kernel


def _convolve_valid(region: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'valid' convolution over the first two axes via one real FFT per axis pair.

    A circular convolution of the region's own (fast) size equals the linear one on the valid
    part, so no FFT length is spent on the full-convolution tail.
    """
    height, width = region.shape[:2]
    kh, kw = kernel.shape
    shape = (scipy.fft.next_fast_len(height, real=True), scipy.fft.next_fast_len(width, real=True))
    kernel_spectrum = scipy.fft.rfft2(kernel, s=shape)
    if region.ndim == 3:
        kernel_spectrum = kernel_spectrum[:, :, None]
    spectrum = scipy.fft.rfft2(region, s=shape, axes=(0, 1))
    spectrum *= kernel_spectrum
    full = scipy.fft.irfft2(spectrum, s=shape, axes=(0, 1))
    return full[kh - 1 : height, kw - 1 : width]


def blur_crop(
    image: np.ndarray, kernel: np.ndarray, box: tuple[int, int, int, int]
) -> tuple[np.ndarray, bool]:
    """Blur one crop of an image by true convolution, using the image around the crop.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Sharp image; float in [0, 1], or integers scaled by their dtype's maximum.
    kernel : ndarray, shape (K, K')
        Blur kernel, origin at its central pixel ``(K // 2, K' // 2)``. The same kernel blurs
        every channel.
    box : tuple of int
        ``(top, left, height, width)`` of the crop in pixels, inside the image.

    Returns
    -------
    blurred : ndarray of float64, shape (height, width[, C])
        The blurred crop.
    padded : bool
        True when the crop lies too close to the image border for the kernel and the missing
        margin was filled by reflecting the image.

    Examples
    --------
    >>> import numpy as np
    >>> from csb_generator import blur_crop
    >>> image = np.zeros((8, 8)); image[4, 4] = 1.0
    >>> kernel = np.zeros((3, 3)); kernel[1, 2] = 1.0   # shifts right by one pixel
    >>> out, padded = blur_crop(image, kernel, (2, 2, 4, 4))
    >>> int(np.argmax(out[2])), padded
    (3, False)
    """
    image = _check_image(image)
    kernel = _as_kernel(kernel)
    top, left, height, width = (int(v) for v in box)
    if height < 1 or width < 1 or top < 0 or left < 0:
        raise ValueError(f"invalid crop box {box}")
    if top + height > image.shape[0] or left + width > image.shape[1]:
        raise ValueError(f"crop box {box} exceeds the image of size {image.shape[:2]}")
    kh, kw = kernel.shape
    # Rows that output row i needs: i - (kh - 1 - kh // 2) .. i + kh // 2.
    before_r, after_r = kh - 1 - kh // 2, kh // 2
    before_c, after_c = kw - 1 - kw // 2, kw // 2
    r0, r1 = top - before_r, top + height + after_r
    c0, c1 = left - before_c, left + width + after_c
    pads = (
        (max(0, -r0), max(0, r1 - image.shape[0])),
        (max(0, -c0), max(0, c1 - image.shape[1])),
    )
    # Only the region the kernel reaches is converted: sources can be far larger than a crop.
    region = _as_float(
        image[max(r0, 0) : min(r1, image.shape[0]), max(c0, 0) : min(c1, image.shape[1])]
    )
    padded = any(p > 0 for pair in pads for p in pair)
    if padded:
        region = np.pad(region, pads + ((0, 0),) * (image.ndim - 2), mode="reflect")
    return _convolve_valid(region, kernel), padded


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Blur a whole image by true convolution; the borders are completed by reflection.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Sharp image; float in [0, 1], or integers scaled by their dtype's maximum.
    kernel : ndarray, shape (K, K')
        Blur kernel, origin at its central pixel.

    Returns
    -------
    ndarray of float64, same height, width and channels as ``image``.

    See Also
    --------
    blur_crop : blur one crop using the real image around it.
    """
    image = _check_image(image)
    return blur_crop(image, kernel, (0, 0, image.shape[0], image.shape[1]))[0]
