"""Pixel losses between a network's output and its target.

``mse`` is what the thesis trains with (the simple DDPM loss on the noise). For targets that are
images (x0 prediction, the bridge, regression), ``l1`` and ``charbonnier`` are the usual
restoration losses: they penalise large errors less than the square does, so a few hard pixels
(edges, saturated highlights) do not dominate the gradient. Charbonnier, ``sqrt(d^2 + c^2) - c``,
is L1 made smooth at 0 (Charbonnier et al. 1994; Lai et al., LapSRN, 2017).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["CHARBONNIER_EPSILON", "LOSSES", "pixel_loss"]

Loss = Literal["mse", "l1", "charbonnier"]
LOSSES: tuple[str, ...] = ("mse", "l1", "charbonnier")

#: The constant c of the Charbonnier loss, on the [-1, 1] image scale (about 0.13 grey levels).
CHARBONNIER_EPSILON = 1e-3


def pixel_loss(prediction: Tensor, target: Tensor, kind: Loss = "mse") -> Tensor:
    """The mean over every element of a pixel loss, computed in at least float32.

    Parameters
    ----------
    prediction, target : Tensor
        Of one shape; a shape mismatch is an error, never a broadcast.
    kind : {"mse", "l1", "charbonnier"}
        Squared error, absolute error, or ``sqrt(d^2 + c^2) - c`` with c =
        :data:`CHARBONNIER_EPSILON` (0 where the error is 0).

    Returns
    -------
    Tensor
        Scalar, float32 (or float64 for float64 inputs).

    Examples
    --------
    >>> a, b = torch.zeros(2, 2), torch.full((2, 2), 0.5)
    >>> float(pixel_loss(a, b, "mse")), float(pixel_loss(a, b, "l1"))
    (0.25, 0.5)
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction has shape {tuple(prediction.shape)} but the target has "
            f"{tuple(target.shape)}"
        )
    # A half-precision mean over a batch of images loses the small differences a loss is made of.
    dtype = torch.promote_types(torch.promote_types(prediction.dtype, target.dtype), torch.float32)
    difference = prediction.to(dtype) - target.to(dtype)
    if kind == "mse":
        return difference.square().mean()
    if kind == "l1":
        return difference.abs().mean()
    if kind == "charbonnier":
        c = CHARBONNIER_EPSILON
        return ((difference.square() + c * c).sqrt() - c).mean()
    raise ValueError(f"unknown loss {kind!r}; choose from {', '.join(LOSSES)}")
