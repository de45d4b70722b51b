"""Image-quality metrics of restorations against their sharp references."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["psnr"]


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
    return (10 * torch.log10(data_range**2 / error)).float()
