r"""Blind estimation of a camera-shake kernel from a whole blurred image.

:class:`KernelEstimator` reads a few correlation maps pooled over every pixel of the image and
turns them into a kernel with a small network; :func:`kernel_loss` and :func:`reblur_loss` train
it. Its estimate is meant for a non-blind restorer such as
:func:`diffdeblur.deconvolution.wiener_deconvolve_torch`.

The evidence
------------
A blurred image is ``y = k * x`` and so are its derivatives: ``y' = k * x'``. Natural-image
derivatives are sparse and roughly white, and two statistics of the blurred derivatives, averaged
over the whole image, carry the kernel:

* Second order: the autocorrelation of the blurred derivatives is ``(k \star k) * r``, with ``r``
  the autocorrelation of the sharp derivatives, a peak at lag 0 (plus lines along long straight
  edges). It is the inverse transform of the power spectrum ``|H|^2 |X'|^2``, so it holds the
  kernel's magnitude spectrum, zeros included: the cue of Goldstein and Fattal ("Blur-kernel
  estimation from spectral irregularities", ECCV 2012) and of Chakrabarti ("A neural approach to
  blind motion deblurring", ECCV 2016). It is the same for ``k`` and for ``k`` rotated by 180
  degrees, so on its own it cannot tell which way round the camera moved along its path.
* Fourth order: the cross-correlation of the cubed derivatives with the derivatives,
  ``mean_p y'(p)^3 y'(p + s)``. Where the sharp derivatives are isolated impulses of random sign,
  it is a multiple of ``(k \star k)(s)`` plus one of ``sum_u k(u)^3 k(u + s)``, the kernel seen
  from its brightest points (where the camera lingered); for the rotated kernel the second term
  becomes ``sum_u k(u)^3 k(u - s)``. The odd power keeps edges of opposite signs from cancelling.
  This is what breaks the 180-degree ambiguity; natural edges are lines rather than impulses, so
  the cue is weaker than in that ideal case, and the network learns how far to trust it.

Six maps are computed from the horizontal and vertical derivatives of the grey image
(:func:`image_statistics`), averaged over the pixel pairs at each lag and normalised to
correlation coefficients, for lags up to ``K - 1``: ``(2K - 1) x (2K - 1)`` each, whatever the
image size. A larger image averages more pixels into the same maps. Any size from 2 x 2 works:
lags as long as the image or longer have no pixel pairs and read 0, so an image smaller than the
kernel (the thesis's 64 px crops of PSF-64 blur) gives an estimate from the lags it shows.

The network
-----------
The statistics do not change when the kernel moves, so they fix it only up to a shift. A small
fully convolutional network (residual blocks of dilated 3x3 convolutions, no pooling, so it is
equivariant to shifts) maps them to logits on the same lag grid; a softmax over the grid gives a
non-negative unit-sum kernel "up to a shift", which is then moved, by a sub-pixel shift with
bilinear weights, so that its centre of mass lands on pixel ``(K // 2, K // 2)``, the convention
of ``csb-generate`` (whose kernels have their centre of mass exactly there). The ``K x K`` window
about that pixel, renormalised to unit sum, is the estimate.

Losses
------
:func:`kernel_loss` compares unit-sum kernels pixel by pixel. :func:`reblur_loss` blurs the sharp
image by the estimate and compares the result with the blurred image: it needs no stored kernel
and measures what the kernel does to an image, so it punishes an estimate that is the wrong way
round or off by a pixel in proportion to the harm.
"""

from __future__ import annotations

import math

import scipy.fft
import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["KernelEstimator", "blur_valid", "image_statistics", "kernel_loss", "reblur_loss"]


def _check_images(images: Tensor, name: str) -> None:
    if images.ndim != 4 or 0 in images.shape or not torch.is_floating_point(images):
        raise ValueError(f"{name} must be a real (B, C, H, W) tensor, got {tuple(images.shape)}")


def _check_kernels(kernel: Tensor, batch: int, name: str = "kernel") -> None:
    if kernel.ndim != 3 or kernel.shape[0] != batch or kernel.shape[1] != kernel.shape[2]:
        raise ValueError(f"{name} must have shape ({batch}, K, K), got {tuple(kernel.shape)}")


def blur_valid(sharp: Tensor, kernel: Tensor) -> Tensor:
    """Blur images by true convolution with per-image kernels; keep the 'valid' part only.

    ``out[i, j] = sum_{u, v} kernel[u, v] * sharp[i + K - 1 - u, j + K - 1 - v]``: the pixels whose
    whole neighbourhood lies inside the image (``scipy.signal.convolve2d(mode="valid")``). With the
    kernel's origin at ``(K // 2, K // 2)``, output pixel ``(i, j)`` is the blur at image pixel
    ``(i + K - 1 - K // 2, j + K - 1 - K // 2)``.

    Parameters
    ----------
    sharp : Tensor, shape (B, C, H, W)
        Images, any real scale, ``H, W >= K``.
    kernel : Tensor, shape (B, K, K)
        One kernel per image; the same kernel blurs every channel.

    Returns
    -------
    Tensor, shape (B, C, H - K + 1, W - K + 1)
    """
    _check_images(sharp, "sharp")
    batch, _, height, width = sharp.shape
    _check_kernels(kernel, batch)
    size = kernel.shape[-1]
    if height < size or width < size:
        raise ValueError(f"the image ({height}x{width}) is smaller than the kernel ({size})")
    # A circular convolution of the image's own size equals the linear one on the valid part.
    shape = (height, width)
    spectrum = (
        torch.fft.rfft2(sharp, s=shape) * torch.fft.rfft2(kernel.to(sharp.dtype), s=shape)[:, None]
    )
    full = torch.fft.irfft2(spectrum, s=shape)
    return full[..., size - 1 :, size - 1 :]


def kernel_loss(estimate: Tensor, true: Tensor) -> Tensor:
    """Squared error between unit-sum kernels, summed over the kernel, averaged over the batch.

    Parameters
    ----------
    estimate, true : Tensor, shape (B, K, K)
        Non-negative kernels; each is normalised to unit sum here (a stored kernel sums to the
        exposure T).

    Returns
    -------
    Tensor, shape ()
        ``mean_b sum_{u,v} (estimate / sum(estimate) - true / sum(true)) ** 2``, in units of
        (fraction of the exposure per pixel) squared. For reference, the squared norm of a
        unit-sum kernel spread evenly over ``n`` pixels is ``1 / n``.
    """
    _check_kernels(estimate, estimate.shape[0], "estimate")
    if true.shape != estimate.shape:
        raise ValueError(f"true {tuple(true.shape)} and estimate differ in shape")
    estimate = estimate / estimate.sum(dim=(-2, -1), keepdim=True)
    true = true.to(estimate.dtype)
    true = true / true.sum(dim=(-2, -1), keepdim=True)
    return ((estimate - true) ** 2).sum(dim=(-2, -1)).mean()


def reblur_loss(estimate: Tensor, sharp: Tensor, blurred: Tensor) -> Tensor:
    """L1 distance between the blurred image and the sharp one re-blurred by the estimate.

    Only the 'valid' region is compared, where the re-blur sees the whole neighbourhood
    (:func:`blur_valid`). The stored blurred image carries the 1/T gain, ``(k / T) * x``, so a
    unit-sum kernel reproduces it; the estimate is normalised to unit sum here.

    Parameters
    ----------
    estimate : Tensor, shape (B, K, K)
        Non-negative kernels, origin at ``(K // 2, K // 2)``.
    sharp, blurred : Tensor, shape (B, C, H, W)
        Images in [-1, 1] (any affine map of [0, 1] works, since the kernel has unit sum).

    Returns
    -------
    Tensor, shape ()
        Mean absolute difference over the valid pixels, channels and batch, in the images' units
        (a difference of 1 in [-1, 1] is half the grey range). Zero for the true kernel on
        noiseless data.
    """
    _check_images(blurred, "blurred")
    if sharp.shape != blurred.shape:
        raise ValueError(f"sharp {tuple(sharp.shape)} and blurred {tuple(blurred.shape)} differ")
    size = estimate.shape[-1]
    before = size - 1 - size // 2
    unit = estimate / estimate.sum(dim=(-2, -1), keepdim=True)
    reblurred = blur_valid(sharp, unit)
    height, width = reblurred.shape[-2:]
    return (
        (reblurred - blurred[..., before : before + height, before : before + width]).abs().mean()
    )


def _correlation(first: Tensor, second: Tensor, reach: int) -> Tensor:
    """``mean_p first(p) * second(p + s)`` over the pixel pairs inside the maps, |s| <= reach.

    ``first``, ``second``: (B, h, w). Returns (B, 2 reach + 1, 2 reach + 1), lag 0 at the centre.
    """
    height, width = first.shape[-2:]
    # Zero padding by at least `reach` keeps the lags asked for free of wrap-around, and the grid
    # must hold all 2 reach + 1 of them.
    shape = (
        scipy.fft.next_fast_len(max(height + reach, 2 * reach + 1), real=True),
        scipy.fft.next_fast_len(max(width + reach, 2 * reach + 1), real=True),
    )
    spectrum = torch.fft.rfft2(first, s=shape).conj() * torch.fft.rfft2(second, s=shape)
    circular = torch.fft.irfft2(spectrum, s=shape)
    lags = torch.roll(circular, shifts=(reach, reach), dims=(-2, -1))
    lags = lags[..., : 2 * reach + 1, : 2 * reach + 1]
    offsets = torch.arange(-reach, reach + 1, dtype=first.dtype, device=first.device).abs()
    # A lag as long as the map or longer has no pixel pairs: exactly 0 (the circular FFT would
    # leave round-off there), not 0 / 0.
    pairs = (height - offsets).clamp_min(0)[:, None] * (width - offsets).clamp_min(0)[None, :]
    return torch.where(pairs > 0, lags / pairs.clamp_min(1), 0.0)


def _normalised(first: Tensor, second: Tensor, reach: int) -> Tensor:
    """:func:`_correlation` divided by the root mean squares: a correlation coefficient map."""
    scale = (first.square().mean(dim=(-2, -1)) * second.square().mean(dim=(-2, -1))).sqrt()
    # A flat image has no derivatives: its maps are 0, not 0 / 0.
    scale = scale.clamp_min(torch.finfo(scale.dtype).tiny)
    return _correlation(first, second, reach) / scale[:, None, None]


def image_statistics(blurred: Tensor, kernel_size: int) -> Tensor:
    """The whole-image statistics the estimator reads (module documentation, The evidence).

    Parameters
    ----------
    blurred : Tensor, shape (B, C, H, W)
        Images in [-1, 1] (the statistics are invariant to the scale and offset), H, W >= 2.
    kernel_size : int
        K; the maps cover lags up to ``K - 1``.

    Returns
    -------
    Tensor, shape (B, 6, 2K - 1, 2K - 1)
        Normalised correlation maps, lag 0 at the centre: the autocorrelations of the horizontal
        and vertical derivatives, their cross-correlation, the cross-correlation of the cubed
        horizontal (vertical) derivative with the horizontal (vertical) one, and that of the sum
        of both derivatives' signed squares ``d * |d|`` with the sum of both derivatives. Each is
        the mean product at each lag over the root mean squares of the two maps: dimensionless,
        1 at lag 0 for the autocorrelations and of that order elsewhere. The derivatives are
        forward differences of the channel mean.
    """
    grey = blurred.mean(dim=1)
    dx = grey[:, :-1, 1:] - grey[:, :-1, :-1]
    dy = grey[:, 1:, :-1] - grey[:, :-1, :-1]
    reach = kernel_size - 1
    maps = [
        _normalised(dx, dx, reach),
        _normalised(dy, dy, reach),
        _normalised(dx, dy, reach),
        _normalised(dx**3, dx, reach),
        _normalised(dy**3, dy, reach),
        _normalised(dx * dx.abs() + dy * dy.abs(), dx + dy, reach),
    ]
    return torch.stack(maps, dim=1)


def _centre(kernel: Tensor, size: int) -> Tensor:
    """Cut the ``size x size`` window whose pixel ``(size // 2, size // 2)`` is the centre of mass.

    ``kernel``: (B, L, L), non-negative, unit sum. The window is sampled at sub-pixel positions with
    bilinear weights, so its centre of mass is exactly that pixel when no mass falls outside it;
    it is renormalised to unit sum. Gradients flow to the kernel values and, through the
    interpolation weights, to the centre of mass.
    """
    batch, length = kernel.shape[0], kernel.shape[-1]
    positions = torch.arange(length, dtype=kernel.dtype, device=kernel.device)
    centre_row = (kernel.sum(dim=-1) * positions).sum(dim=-1)
    centre_col = (kernel.sum(dim=-2) * positions).sum(dim=-1)
    # Room on every side, so the window and its one extra pixel for interpolation always fit.
    padded = functional.pad(kernel, (size + 1,) * 4)
    window = torch.arange(size + 1, device=kernel.device)

    def cut(centre: Tensor) -> tuple[Tensor, Tensor]:
        whole = centre.detach().floor()
        start = (whole.long() - size // 2 + size + 1)[:, None] + window  # (B, size + 1)
        return start, (centre - whole)[:, None, None]

    rows, row_fraction = cut(centre_row)
    cols, col_fraction = cut(centre_col)
    batch_index = torch.arange(batch, device=kernel.device)[:, None, None]
    patch = padded[batch_index, rows[:, :, None], cols[:, None, :]]  # (B, size + 1, size + 1)
    # out(i) = p(i + centre - size // 2): linear interpolation between the two pixels around it.
    patch = (1 - row_fraction) * patch[:, :-1] + row_fraction * patch[:, 1:]
    patch = (1 - col_fraction) * patch[:, :, :-1] + col_fraction * patch[:, :, 1:]
    total = patch.sum(dim=(-2, -1), keepdim=True)
    # All the mass can lie outside the window (two far-apart peaks about an empty middle, from
    # an undertrained network): such an estimate stands for no blur, the identity kernel, not
    # for an all-zero kernel that no deconvolution can use.
    identity = torch.zeros_like(patch)
    identity[:, size // 2, size // 2] = 1
    return torch.where(total > 0, patch / total.clamp_min(torch.finfo(total.dtype).tiny), identity)


class _Block(nn.Module):
    """Residual block: two dilated 3x3 convolutions; the dilation widens the view of the lags."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.first = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.second = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.second(functional.relu(self.first(functional.relu(x))))


class KernelEstimator(nn.Module):
    """Estimate the blur kernel of a whole blurred image (module documentation).

    Parameters
    ----------
    kernel_size : int
        K, the side of the estimated kernels (the dataset's PSF size), >= 2.
    channels : int, optional
        Width of the network. Default 32.
    dilations : tuple of int, optional
        Dilation of each residual block; together they set how far across the lag grid the
        network sees. Default (1, 2, 4, 8): a receptive field of 43 lags.
    generator : torch.Generator, optional
        When given, every parameter is drawn from it (PyTorch's default distributions) instead
        of from torch's global random state, which is then left as it was.

    Examples
    --------
    >>> import torch
    >>> from diffdeblur.kernel_estimation import KernelEstimator
    >>> estimator = KernelEstimator(kernel_size=16, generator=torch.Generator().manual_seed(0))
    >>> blurred = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(1)) * 2 - 1
    >>> kernel = estimator(blurred)
    >>> kernel.shape, bool((kernel >= 0).all())
    (torch.Size([2, 16, 16]), True)
    >>> [round(s, 5) for s in kernel.sum(dim=(1, 2)).tolist()]
    [1.0, 1.0]
    """

    #: Number of maps :func:`image_statistics` gives, the network's input channels.
    statistics = 6

    def __init__(
        self,
        kernel_size: int,
        channels: int = 32,
        dilations: tuple[int, ...] = (1, 2, 4, 8),
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if isinstance(kernel_size, bool) or int(kernel_size) != kernel_size or kernel_size < 2:
            raise ValueError(f"kernel_size must be an integer >= 2, got {kernel_size!r}")
        self.kernel_size = int(kernel_size)
        if generator is None:
            self._build(channels, dilations)
        else:
            # The layers' own initialisation draws from the global random state; fork it so that
            # a network drawn from a generator leaves that state as it found it.
            with torch.random.fork_rng(devices=[]):
                self._build(channels, dilations)
            self.init_parameters(generator)

    def _build(self, channels: int, dilations: tuple[int, ...]) -> None:
        self.inlet = nn.Conv2d(self.statistics, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(_Block(channels, d) for d in dilations))
        self.outlet = nn.Conv2d(channels, 1, 3, padding=1)

    @torch.no_grad()
    def init_parameters(self, generator: torch.Generator) -> None:
        """Draw every parameter again from ``generator``: weights Kaiming-uniform with
        ``a = sqrt(5)``, biases uniform in ``±1/sqrt(fan_in)``, as ``Conv2d`` initialises them."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                bound = 1 / math.sqrt(module.weight[0].numel())
                module.bias.uniform_(-bound, bound, generator=generator)

    def logits(self, blurred: Tensor) -> Tensor:
        """Logits of the kernel up to a shift, (B, 2K - 1, 2K - 1), from images (B, C, H, W)."""
        _check_images(blurred, "blurred")
        height, width = blurred.shape[-2:]
        if height < 2 or width < 2:
            raise ValueError(
                f"the image ({height}x{width}) is too small to show a blur: the kernel is "
                "estimated from its derivatives, which need at least 2x2 pixels"
            )
        features = self.inlet(image_statistics(blurred, self.kernel_size))
        return self.outlet(functional.relu(self.blocks(features)))[:, 0]

    def forward(self, blurred: Tensor) -> Tensor:
        """Estimated kernels of images in [-1, 1].

        Parameters
        ----------
        blurred : Tensor, shape (B, C, H, W)
            Blurred images in [-1, 1], any ``H, W >= 2``; the estimate improves with the size
            (module documentation, The evidence).

        Returns
        -------
        Tensor, shape (B, K, K)
            Non-negative kernels with unit sum and their centre of mass on pixel ``(K // 2,
            K // 2)``, like the true-convolution kernels of ``csb-generate`` (their exposure
            aside). That is exact for an estimate that fits in the window; a spread-out one (an
            untrained network's) loses what falls outside, and its centre moves with that. One
            with no mass in the window at all is returned as the identity kernel.

        Raises
        ------
        ValueError
            If ``blurred`` is not a real 4-D tensor or is smaller than 2 x 2 pixels.
        """
        logits = self.logits(blurred)
        shifted = torch.softmax(logits.flatten(1), dim=1).reshape(logits.shape)
        return _centre(shifted, self.kernel_size)
