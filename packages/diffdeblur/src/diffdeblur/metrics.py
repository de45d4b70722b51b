"""Image-quality metrics of restorations against their sharp references.

All three take batches of images ``(B, C, H, W)`` and return one value per image, shape ``(B,)``:

* :func:`psnr`, in dB;
* :func:`ssim`, Wang et al. (2004) with an 11×11 Gaussian window (σ = 1.5), per RGB channel and
  averaged, identical to ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False)``;
* :func:`lpips_distance`, LPIPS (AlexNet, v0.1) with a model from
  :func:`diffdeblur.lpips_weights.load_lpips`, which reads the genuine weights without internet.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SSIM_WINDOW", "lpips_distance", "psnr", "psnr_from_mse", "ssim"]

#: Side of the SSIM window, px: a Gaussian of σ = 1.5 truncated at 3.5 σ (scikit-image's choice).
SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03

#: The smallest side, px, that the AlexNet trunk of LPIPS accepts (its pooling needs 31 px).
_LPIPS_MIN_SIDE = 31


def _check_pair(restored: Tensor, reference: Tensor, min_side: int, metric: str) -> None:
    if restored.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(restored.shape)} and {tuple(reference.shape)}")
    if restored.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(restored.shape)}")
    if min(restored.shape[-2:]) < min_side:
        raise ValueError(
            f"{metric} needs images of at least {min_side}×{min_side} px, got "
            f"{restored.shape[-2]}×{restored.shape[-1]}"
        )


def psnr_from_mse(mse: float | Tensor, data_range: float = 1.0) -> float | Tensor:
    """``10 log10(data_range**2 / mse)`` in dB, for a float or a tensor of mean squared errors.

    The one PSNR formula of the package: :func:`psnr` and the Wiener baseline's tuning use it.
    A float gives a float (inf for 0), in double precision.

    Examples
    --------
    >>> psnr_from_mse(0.01)
    20.0
    """
    if isinstance(mse, Tensor):
        return 10 * torch.log10(data_range**2 / mse)
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def psnr(restored: Tensor, reference: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB, per image.

    Parameters
    ----------
    restored, reference : Tensor, shape (B, C, H, W)
        Images on the same scale, e.g. [0, 1] with ``data_range=1``.
    data_range : float
        Peak-to-peak range of that scale.

    Returns
    -------
    Tensor, shape (B,)
        ``10 log10(data_range**2 / MSE)``; inf for identical images.

    Examples
    --------
    >>> import torch
    >>> a = torch.zeros(1, 3, 4, 4)
    >>> float(psnr(a + 0.1, a))
    20.0
    """
    if restored.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(restored.shape)} and {tuple(reference.shape)}")
    error = torch.mean((restored.double() - reference.double()) ** 2, dim=(1, 2, 3))
    return psnr_from_mse(error, data_range).float()


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> Tensor:
    offsets = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - (SSIM_WINDOW - 1) / 2
    weights = torch.exp(-0.5 * (offsets / _SSIM_SIGMA) ** 2)
    return weights / weights.sum()


def ssim(restored: Tensor, reference: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity (Wang et al. 2004), per image, averaged over channels.

    Local means, variances and the covariance are Gaussian-weighted averages over an 11×11 window
    (σ = 1.5 px) at every position where the window fits inside the image ('valid' filtering, no
    padding); the SSIM map is averaged over those positions and then over the channels. The
    constants are ``C1 = (0.01 data_range)**2`` and ``C2 = (0.03 data_range)**2``, and the
    variances are population ones (no ``N / (N - 1)`` correction). This is
    ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=-1)`` (to about 1e-7),
    computed in float64 on the inputs' device (float32 on Apple's MPS, which has no float64).

    Parameters
    ----------
    restored, reference : Tensor, shape (B, C, H, W)
        Images on the same scale [0, data_range], e.g. RGB in [0, 1]; H and W at least 11 px.
    data_range : float
        Peak-to-peak range of that scale (1 for [0, 1], 255 for 8-bit values).

    Returns
    -------
    Tensor, shape (B,), float32
        SSIM in [-1, 1]; 1 for identical images.

    Raises
    ------
    ValueError
        If the shapes differ, are not (B, C, H, W), or a side is shorter than 11 px.

    Examples
    --------
    >>> import torch
    >>> a = torch.linspace(0, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)
    >>> float(ssim(a, a))
    1.0
    """
    _check_pair(restored, reference, SSIM_WINDOW, "SSIM")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    device = restored.device
    dtype = torch.float32 if device.type == "mps" else torch.float64
    x = restored.to(dtype)
    y = reference.to(device=device, dtype=dtype)
    batch, channels = x.shape[:2]
    # One depthwise pass filters the five statistics of every channel at once.
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    groups = stats.shape[1]
    window = _gaussian_window(dtype, device)
    stats = F.conv2d(stats, window.view(1, 1, -1, 1).repeat(groups, 1, 1, 1), groups=groups)
    stats = F.conv2d(stats, window.view(1, 1, 1, -1).repeat(groups, 1, 1, 1), groups=groups)
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = stats.unflatten(1, (5, channels)).unbind(1)
    var_x = mean_xx - mean_x * mean_x
    var_y = mean_yy - mean_y * mean_y
    cov_xy = mean_xy - mean_x * mean_y
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    numerator = (2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)
    denominator = (mean_x * mean_x + mean_y * mean_y + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean(dim=(1, 2, 3)).float().reshape(batch)


def lpips_distance(restored: Tensor, reference: Tensor, model: nn.Module) -> Tensor:
    """LPIPS distance (Zhang et al. 2018), per image.

    The images are mapped from [0, 1] to [-1, 1], the range LPIPS was calibrated on, and compared
    at full resolution (no resizing): unit-normalised AlexNet features at five depths, their
    squared differences weighted by the learned linear layers and averaged over space, summed
    over the depths. The model runs in evaluation mode (its mode is restored afterwards) and
    without gradients.

    Parameters
    ----------
    restored, reference : Tensor, shape (B, 3, H, W)
        RGB images in [0, 1]; H and W at least 31 px (what the AlexNet trunk accepts).
    model : torch.nn.Module
        ``lpips.LPIPS(net='alex')`` with the genuine v0.1 weights, from
        :func:`diffdeblur.lpips_weights.load_lpips`. The images are moved to its device.

    Returns
    -------
    Tensor, shape (B,), float32, on the device of ``restored``
        Distances, 0 for identical images, larger for less similar ones (typically below 1).

    Raises
    ------
    ValueError
        If the shapes differ, are not (B, 3, H, W), or a side is shorter than 31 px.
    """
    _check_pair(restored, reference, _LPIPS_MIN_SIDE, "LPIPS")
    if restored.shape[1] != 3:
        raise ValueError(f"LPIPS compares RGB images, got {restored.shape[1]} channels")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            distance = model(
                2 * restored.to(device, torch.float32) - 1,
                2 * reference.to(device, torch.float32) - 1,
            )
    finally:
        model.train(was_training)
    return distance.reshape(restored.shape[0]).to(restored.device)
