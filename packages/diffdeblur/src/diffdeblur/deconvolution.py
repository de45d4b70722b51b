r"""Differentiable Wiener deconvolution in PyTorch, with a fixed or a learned regularisation weight.

The filter
----------
For a blurred image ``y = k * x + n`` (``*`` true convolution, kernel origin at its pixel
``(K // 2, K' // 2)``), the Wiener filter (Wiener, *Extrapolation, Interpolation, and Smoothing
of Stationary Time Series*, 1949) in the Wiener-Hunt form with a Laplacian prior restores

.. math::

    \hat X(\omega) = \frac{\overline{H(\omega)}}{|H(\omega)|^2 + \lambda |D(\omega)|^2} Y(\omega),

with ``H`` the transfer function of the unit-sum kernel, ``D`` that of the 5-point Laplacian
``[[0, -1, 0], [-1, 4, -1], [0, -1, 0]]`` (so ``D(u, v) = 4 - 2 cos(2 pi u / M) - 2 cos(2 pi v /
N)`` on an ``M x N`` grid, real, and ``|D|^2`` runs from 0 at zero frequency to 64 at the
highest) and ``lambda`` the dimensionless ``balance``: the noise-to-signal ratio of the Laplacian
of the image. Both transfer functions are those of the impulse responses placed with their origin
at pixel ``(0, 0)`` of the grid, as :func:`skimage.restoration.uft.ir2tf` builds them, so output
pixel ``(i, j)`` estimates sharp pixel ``(i, j)`` for odd and even kernels alike. This is
:func:`skimage.restoration.wiener` exactly, and :func:`wiener_deconvolve_torch` reproduces the
NumPy baseline :func:`diffdeblur.wiener.wiener_deconvolve` (to float rounding), border handling
included, while letting gradients flow to the image, the kernel and the balance.

Scale and borders
-----------------
As in the baseline (:mod:`diffdeblur.wiener`, sections Scale and Borders): the kernel is
normalised to unit sum, so a stored kernel that sums to the exposure T restores a stored image
(which carries the 1/T gain) on the sharp image's scale; and the image is extended by ``pad``
pixels on every side (the far sides a little more, to a fast FFT length) by mirroring, then, for
the ``-taper`` borders, the padded band is blended with a raised-cosine weight into its own
circular blur by the kernel, so the data is circular where the FFT wraps around.

Learned regularisation
----------------------
:class:`WienerDeconvolution` learns the balance, and optionally how it grows with a known noise
level, in the spirit of "Deep Wiener Deconvolution: Wiener Meets Deep Learning for Image
Deblurring" (Dong, Roth and Schiele, NeurIPS 2020), which learns the Wiener filter's
regularisation end to end with the network around it. Here the prior stays the Laplacian and only
its weight is learned: ``balance = exp(log_balance) + exp(log_noise_gain) * noise_std ** 2``. The
second term is the Wiener filter's own rule (the weight is the noise variance over the prior's
variance, here of the image's Laplacian); the first is the floor that noiseless data still needs,
since borders, quantisation and kernel errors act as noise too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import scipy.fft
import torch
from torch import Tensor, nn
from torch.nn import functional

from .wiener import BORDER_MODES, DEFAULT_BORDER

__all__ = [
    "WienerDeconvolution",
    "laplacian_power",
    "odd_kernel",
    "odd_kernel_size",
    "transfer_function",
    "wiener_deconvolve_torch",
]

Border = Literal["none", "reflect", "symmetric", "reflect-taper", "symmetric-taper"]

#: The balance that noiseless ``csb-generate`` datasets tune to with the default border
#: (``docs/baseline.md``: 2.2e-4 for 16 and 32 px kernels).
NOISELESS_BALANCE = 2e-4

#: Initial gain of the noise term of :class:`WienerDeconvolution`, per unit noise variance. The
#: baseline tunes to a balance of 0.046 on the dataset with 1 grey level of read noise and
#: lambda = 768000 at T = 1 (``docs/baseline.md``), whose noise standard deviation is about 0.014
#: on the [0, 1] scale at mid grey: 0.046 / 0.014 ** 2 is about 230.
NOISE_GAIN = 230.0


def odd_kernel_size(psf_size: int) -> int:
    """Side of the odd grid that holds a ``psf_size`` kernel centred on its origin: ``psf_size``
    when odd, ``psf_size + 1`` when even (:func:`odd_kernel`)."""
    return psf_size + 1 - psf_size % 2


def odd_kernel(kernel: np.ndarray) -> np.ndarray:
    """A stored kernel on an odd grid whose centre is its origin, normalised to unit sum.

    ``csb-generate`` puts a kernel's origin at pixel ``(K // 2, K // 2)``, which for an even K
    lies one pixel below and right of the middle, so flipping the array would move the origin.
    A zero row and column after an even kernel give a ``(K + 1) x (K + 1)`` grid centred on the
    origin: there, flipping a patch horizontally (vertically) flips its kernel the same way, and
    the convolution is unchanged. The unit sum drops the exposure T, which the stored blurred
    image's 1/T gain has already divided out.

    Parameters
    ----------
    kernel : ndarray, shape (K, K)
        A stored kernel, >= 0, with a positive sum.

    Returns
    -------
    ndarray of float32, shape (K', K'), K' = :func:`odd_kernel_size` (K)

    Examples
    --------
    >>> import numpy as np
    >>> odd_kernel(np.full((2, 2), 0.25)).tolist()
    [[0.25, 0.25, 0.0], [0.25, 0.25, 0.0], [0.0, 0.0, 0.0]]
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] < 1:
        raise ValueError(f"a kernel must be a square 2-D array, got shape {kernel.shape}")
    total = kernel.sum()
    if not (np.isfinite(total) and total > 0) or (kernel < 0).any():
        raise ValueError("a kernel must be non-negative with a positive, finite sum")
    size = odd_kernel_size(kernel.shape[0])
    grid = np.zeros((size, size), dtype=np.float64)
    grid[: kernel.shape[0], : kernel.shape[1]] = kernel / total
    return grid.astype(np.float32)


def transfer_function(kernel: Tensor, shape: tuple[int, int]) -> Tensor:
    """Transfer function of kernels on an FFT grid, origin at the kernel's pixel ``(K//2, K'//2)``.

    The kernel is placed in the grid's top-left corner and rolled so that its origin pixel lands
    on ``(0, 0)``, as :func:`skimage.restoration.uft.ir2tf` does; the real FFT (not unitary) of
    that is the transfer function, so ``irfft2(rfft2(image) * transfer)`` is the circular true
    convolution of the image by the kernel.

    Parameters
    ----------
    kernel : Tensor, shape (..., K, K')
        Impulse responses, real.
    shape : tuple of int
        ``(rows, cols)`` of the grid, each >= the kernel's side.

    Returns
    -------
    Tensor, shape (..., rows, cols // 2 + 1), complex
    """
    rows, cols = shape
    kernel_rows, kernel_cols = kernel.shape[-2:]
    if kernel_rows > rows or kernel_cols > cols:
        raise ValueError(f"kernel {tuple(kernel.shape[-2:])} does not fit the grid {shape}")
    placed = functional.pad(kernel, (0, cols - kernel_cols, 0, rows - kernel_rows))
    placed = torch.roll(placed, shifts=(-(kernel_rows // 2), -(kernel_cols // 2)), dims=(-2, -1))
    return torch.fft.rfft2(placed)


def laplacian_power(
    shape: tuple[int, int], *, dtype: torch.dtype = torch.float64, device=None
) -> Tensor:
    """``|D|^2`` of the 5-point Laplacian on an FFT grid (the Wiener filter's regulariser).

    Parameters
    ----------
    shape : tuple of int
        ``(rows, cols)`` of the grid.
    dtype, device
        Of the result.

    Returns
    -------
    Tensor, shape (rows, cols // 2 + 1), real, in [0, 64]
        ``(4 - 2 cos(2 pi u / rows) - 2 cos(2 pi v / cols)) ** 2`` at frequency ``(u, v)``, the
        squared transfer function of ``[[0, -1, 0], [-1, 4, -1], [0, -1, 0]]`` centred on
        ``(0, 0)`` (:func:`skimage.restoration.uft.laplacian`).
    """
    rows, cols = shape
    u = torch.arange(rows, dtype=dtype, device=device)[:, None]
    v = torch.arange(cols // 2 + 1, dtype=dtype, device=device)[None, :]
    laplacian = 4 - 2 * torch.cos(2 * math.pi * u / rows) - 2 * torch.cos(2 * math.pi * v / cols)
    return laplacian**2


def _raised_cosine(before: int, inside: int, after: int, like: Tensor) -> Tensor:
    """1-D weight: 0 at both ends, rising over the pad to 1 on the crop (as the baseline's)."""
    weight = torch.ones(before + inside + after, dtype=like.dtype, device=like.device)
    rising = (torch.arange(before, dtype=like.dtype, device=like.device) + 0.5) / before
    falling = (torch.arange(after, dtype=like.dtype, device=like.device) + 0.5) / after
    weight[:before] = 0.5 - 0.5 * torch.cos(math.pi * rising)
    weight[before + inside :] = 0.5 + 0.5 * torch.cos(math.pi * falling)
    return weight


def _padding_index(size: int, before: int, after: int, mode: str, device) -> Tensor:
    # numpy.pad of the indices themselves gives exactly numpy's extension, including pads
    # longer than the image (which numpy fills by repeated mirroring).
    index = np.pad(np.arange(size), (before, after), mode=mode)
    return torch.as_tensor(index, device=device)


def _extend(
    image: Tensor, transfer_of: Callable[[tuple[int, int]], Tensor], border: str, pad: int
) -> tuple[Tensor, slice, slice]:
    """Pad (B, C, H, W) images for a circular filter; returns them and the crop's slices."""
    height, width = image.shape[-2:]
    rows = scipy.fft.next_fast_len(height + 2 * pad, real=True)
    cols = scipy.fft.next_fast_len(width + 2 * pad, real=True)
    after_rows, after_cols = rows - height - pad, cols - width - pad
    mode = border.removesuffix("-taper")
    row_index = _padding_index(height, pad, after_rows, mode, image.device)
    col_index = _padding_index(width, pad, after_cols, mode, image.device)
    extended = image.index_select(-2, row_index).index_select(-1, col_index)
    if border.endswith("-taper"):
        weight = torch.outer(
            _raised_cosine(pad, height, after_rows, image),
            _raised_cosine(pad, width, after_cols, image),
        )
        reblurred = torch.fft.irfft2(
            torch.fft.rfft2(extended) * transfer_of((rows, cols)), s=(rows, cols)
        )
        extended = weight * extended + (1 - weight) * reblurred
    return extended, slice(pad, pad + height), slice(pad, pad + width)


def _check_kernel(kernel: Tensor, batch: int, dtype: torch.dtype) -> Tensor:
    """Kernels as (B or 1, 1, K, K') of ``dtype``, normalised to unit sum."""
    if kernel.ndim == 2:
        kernel = kernel[None]
    if kernel.ndim != 3 or 0 in kernel.shape or kernel.shape[0] not in (1, batch):
        raise ValueError(
            f"kernel must have shape (K, K') or ({batch}, K, K'), got {tuple(kernel.shape)}"
        )
    if torch.is_complex(kernel):
        raise ValueError("kernel must be real-valued")
    kernel = kernel.to(dtype)
    if bool((kernel < 0).any()):
        raise ValueError("kernel must be non-negative")
    total = kernel.sum(dim=(-2, -1), keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("a kernel is all zero: there is no blur to invert")
    return (kernel / total)[:, None]


def _check_balance(balance: float | Tensor, batch: int, like: Tensor) -> Tensor:
    """The balance as (B or 1, 1, 1, 1) of the image's dtype."""
    balance = torch.as_tensor(balance, dtype=like.dtype, device=like.device)
    if balance.ndim > 1 or (balance.ndim == 1 and balance.shape[0] not in (1, batch)):
        raise ValueError(f"balance must be a number or have shape ({batch},)")
    if not bool(torch.isfinite(balance).all() and (balance > 0).all()):
        raise ValueError("balance must be finite and > 0")
    return balance.reshape(-1, 1, 1, 1)


def wiener_deconvolve_torch(
    blurred: Tensor,
    kernel: Tensor,
    balance: float | Tensor,
    *,
    border: Border = DEFAULT_BORDER,
    pad: int | None = None,
    clip: bool = False,
) -> Tensor:
    """Wiener deconvolution of a batch of images, differentiable in all three inputs.

    The same filter as :func:`diffdeblur.wiener.wiener_deconvolve` (which clips to [0, 1]; this
    does not unless asked): ``conj(H) / (|H|^2 + balance |D|^2)`` applied to each channel of the
    padded image, which is then cropped back (module documentation).

    Parameters
    ----------
    blurred : Tensor, shape (B, C, H, W)
        Blurred images on the [0, 1] scale, real floating point, as ``csb-generate`` stores them
        (with the 1/T gain). Callers with images in [-1, 1] pass ``(blurred + 1) / 2`` and map the
        result back with ``2 * restored - 1``: the filter is linear and passes a constant
        unchanged, so doing so is the same as filtering in [-1, 1] except for ``clip``.
    kernel : Tensor, shape (B, K, K') or (K, K')
        Point-spread functions, >= 0, origin at pixel ``(K // 2, K' // 2)``; one per image, or one
        for all. Each is normalised to unit sum here (a stored kernel sums to the exposure T).
    balance : float or Tensor of shape () or (B,)
        Regularisation weight, > 0, dimensionless: the noise-to-signal ratio of the image's
        Laplacian. Noiseless datasets tune to about 2e-4.
    border : {"symmetric-taper", "symmetric", "reflect", "reflect-taper", "none"}, optional
        How the image is extended before the circular filter (:mod:`diffdeblur.wiener`,
        Borders). Default ``"symmetric-taper"``.
    pad : int, optional
        Pixels of padding on each side, >= 1. Default: the kernel's larger side. Unused with
        ``border="none"``.
    clip : bool, optional
        Clip the result to [0, 1]. Default False (the gradient of a clipped pixel is zero).

    Returns
    -------
    Tensor, shape (B, C, H, W), the dtype of ``blurred``
        The restored images on the [0, 1] scale; pixel ``(i, j)`` estimates sharp pixel ``(i, j)``.

    Raises
    ------
    ValueError
        If a shape, the border, ``pad`` or a value is invalid: a negative or all-zero kernel, a
        balance that is not finite and > 0, or with ``border="none"`` a kernel larger than the
        image.
    """
    if blurred.ndim != 4 or 0 in blurred.shape or not torch.is_floating_point(blurred):
        raise ValueError(f"blurred must be a real (B, C, H, W) tensor, got {tuple(blurred.shape)}")
    if border not in BORDER_MODES:
        raise ValueError(f"border must be one of {BORDER_MODES}, got {border!r}")
    if pad is not None and (isinstance(pad, bool) or int(pad) != pad or pad < 1):
        raise ValueError(f"pad must be a positive number of pixels or None, got {pad!r}")
    batch, _, height, width = blurred.shape
    unit_kernel = _check_kernel(kernel, batch, blurred.dtype)
    weight = _check_balance(balance, batch, blurred)
    pad = max(unit_kernel.shape[-2:]) if pad is None else int(pad)

    def transfer_of(shape: tuple[int, int]) -> Tensor:
        return transfer_function(unit_kernel, shape)

    if border == "none":
        if unit_kernel.shape[-2] > height or unit_kernel.shape[-1] > width:
            raise ValueError(
                f"kernel {tuple(unit_kernel.shape[-2:])} is larger than the image "
                f"{(height, width)}; border='none' cannot deconvolve it (use a padding border)"
            )
        extended, rows, cols = blurred, slice(None), slice(None)
    else:
        extended, rows, cols = _extend(blurred, transfer_of, border, pad)
    shape = tuple(extended.shape[-2:])
    transfer = transfer_of(shape)
    regulariser = laplacian_power(shape, dtype=blurred.dtype, device=blurred.device)
    wiener_filter = transfer.conj() / (transfer.abs() ** 2 + weight * regulariser)
    restored = torch.fft.irfft2(torch.fft.rfft2(extended) * wiener_filter, s=shape)
    restored = restored[..., rows, cols]
    return restored.clamp(0, 1) if clip else restored


class WienerDeconvolution(nn.Module):
    """Wiener deconvolution with a learned balance that can grow with a known noise level.

    ``balance = exp(log_balance) + exp(log_noise_gain) * noise_std ** 2``: a learned floor for
    noiseless data plus the Wiener rule, noise variance over prior variance, with a learned
    inverse prior variance (module documentation). Both terms are positive, so the balance is.

    Parameters
    ----------
    balance : float, optional
        Initial floor, > 0. Default 2e-4, what noiseless datasets tune to.
    noise_gain : float, optional
        Initial gain of the noise term, per unit noise variance on the [0, 1] scale, > 0.
        Default 230 (:data:`NOISE_GAIN`), which gives the balance the baseline tunes to at
        1 grey level of read noise plus shot noise (about 0.014): 0.046.
    border, pad
        As in :func:`wiener_deconvolve_torch`.

    Examples
    --------
    >>> import torch
    >>> from diffdeblur.deconvolution import WienerDeconvolution
    >>> wiener = WienerDeconvolution()
    >>> kernel = torch.zeros(5, 5); kernel[2, 1:4] = 1 / 3
    >>> blurred = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> restored = wiener(blurred, kernel, noise_std=torch.tensor([0.0, 0.02]))
    >>> restored.shape
    torch.Size([2, 3, 32, 32])
    >>> [f"{b:.2g}" for b in wiener.balance(torch.tensor([0.0, 0.01, 0.05]))]
    ['0.0002', '0.023', '0.58']
    """

    def __init__(
        self,
        balance: float = NOISELESS_BALANCE,
        noise_gain: float = NOISE_GAIN,
        *,
        border: Border = DEFAULT_BORDER,
        pad: int | None = None,
    ):
        super().__init__()
        if not (balance > 0 and noise_gain > 0):
            raise ValueError(f"balance and noise_gain must be > 0, got {balance}, {noise_gain}")
        if border not in BORDER_MODES:
            raise ValueError(f"border must be one of {BORDER_MODES}, got {border!r}")
        self.log_balance = nn.Parameter(torch.tensor(math.log(balance)))
        self.log_noise_gain = nn.Parameter(torch.tensor(math.log(noise_gain)))
        self.border = border
        self.pad = pad

    def balance(self, noise_std: Tensor | None = None) -> Tensor:
        """The balance, shape () without a noise level, else that of ``noise_std`` (B,).

        Parameters
        ----------
        noise_std : Tensor of shape (B,), optional
            Standard deviation of the noise in the blurred image, on its [0, 1] scale (grey
            levels / 255, after the 1/T gain), >= 0.
        """
        floor = self.log_balance.exp()
        if noise_std is None:
            return floor
        return floor + self.log_noise_gain.exp() * noise_std.to(floor.dtype) ** 2

    def forward(self, blurred: Tensor, kernel: Tensor, noise_std: Tensor | None = None) -> Tensor:
        """Restore ``blurred`` (B, C, H, W) on the [0, 1] scale with ``kernel`` (B, K, K).

        Parameters as :func:`wiener_deconvolve_torch` and :meth:`balance`; returns (B, C, H, W),
        unclipped, on the [0, 1] scale.
        """
        balance = self.balance(noise_std).to(blurred.dtype)
        return wiener_deconvolve_torch(blurred, kernel, balance, border=self.border, pad=self.pad)
