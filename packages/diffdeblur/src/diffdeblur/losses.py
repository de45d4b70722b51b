"""Pixel losses between a network's output and its target.

``mse`` is what the thesis trains with (the simple DDPM loss on the noise). For targets that are
images (x0 prediction, the bridge, regression), ``l1`` and ``charbonnier`` are the usual
restoration losses: they penalise large errors less than the square does, so a few hard pixels
(edges, saturated highlights) do not dominate the gradient. Charbonnier, ``sqrt(d^2 + c^2) - c``,
is L1 made smooth at 0 (Charbonnier et al. 1994; Lai et al., LapSRN, 2017).

A pixel loss pulls what the network cannot know, such as the fine texture under sensor noise,
to its mean, which is smooth; a smooth restoration of a noisy photograph can look further from
the sharp one than the noisy input does. :class:`PerceptualLoss` adds the LPIPS distance (Zhang
et al. 2018), which penalises that loss of texture, to a pixel loss: a perceptual loss in the
sense of Johnson et al. (2016), with LPIPS's calibrated AlexNet features.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "CHARBONNIER_EPSILON",
    "LOSSES",
    "PerceptualLoss",
    "TrainingLoss",
    "compare",
    "pixel_loss",
]

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


class PerceptualLoss:
    """A pixel loss plus ``weight`` times the mean LPIPS distance of the two images.

    Parameters
    ----------
    kind : {"mse", "l1", "charbonnier"}
        The pixel loss (:func:`pixel_loss`).
    lpips : torch.nn.Module
        ``lpips.LPIPS(net='alex')`` with its genuine weights
        (:func:`diffdeblur.lpips_weights.load_lpips`): frozen, in evaluation mode, on the
        images' device. It is not trained and not saved with the restorer.
    weight : float
        Weight of the LPIPS term, > 0 (LPIPS distances are typically 0.05 to 0.4).

    Attributes
    ----------
    terms : dict of str to float
        The unweighted terms of the last call, ``"pixel"`` and ``"lpips"``, for logging.

    Notes
    -----
    The images are in [-1, 1], the range LPIPS takes; a grey image (one channel) is compared
    as the RGB image of three equal channels. Both need sides of at least 31 px.
    """

    def __init__(self, kind: Loss, lpips: nn.Module, weight: float):
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; choose from {', '.join(LOSSES)}")
        if not weight > 0:
            raise ValueError(f"the LPIPS weight must be > 0, got {weight}")
        self.kind, self.lpips, self.weight = kind, lpips, weight
        self.terms: dict[str, float] = {}

    def __call__(self, prediction: Tensor, target: Tensor) -> Tensor:
        pixel = pixel_loss(prediction, target, self.kind)
        if prediction.shape[1] == 1:
            prediction, target = prediction.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1)
        distance = self.lpips(prediction, target).float().mean()
        self.terms = {"pixel": float(pixel.detach()), "lpips": float(distance.detach())}
        return pixel + self.weight * distance


#: What a training loss may be: a pixel loss by name, or a pixel loss with a perceptual term.
TrainingLoss = Loss | PerceptualLoss


def compare(prediction: Tensor, target: Tensor, loss: TrainingLoss) -> Tensor:
    """The training loss ``loss`` of ``prediction`` against ``target``: :func:`pixel_loss` for a
    loss named by a string, the call of a :class:`PerceptualLoss` otherwise."""
    if isinstance(loss, PerceptualLoss):
        return loss(prediction, target)
    return pixel_loss(prediction, target, loss)
