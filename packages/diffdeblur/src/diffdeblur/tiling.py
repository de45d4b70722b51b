"""The patches that cover an image of any size, blended at every sampling step.

:meth:`Restorer.restore <diffdeblur.restorer.Restorer.restore>` restores through them (the whole
image is one patch); :class:`~diffdeblur.restoration.ImageRestorer` sets them for a model.

The network is trained on square patches. An image of another size is covered with overlapping
patches, and at every sampling step the noise predictions of all patches (run in batches) are
averaged with Hann-window weights into one full-size prediction, from which the sampler takes one
global step on one full-size ``x_t``. Blending finished patches instead (the thesis) joins
separate random samples, which leaves seams; blending each step's prediction does not, because
every pixel belongs to one sample.

The weights of a patch are a Hann window over each axis, ``sin^2(pi (i + 1/2) / n)`` for
``i = 0 .. n-1``, whose half towards an image border is replaced by ones: patches are aligned to
the image borders, so the window never vanishes there (nor anywhere else), and every pixel's
total weight is positive. An image side shorter than the patch is covered by one patch of that
side's length (the U-Net pads internally to a multiple of its downsampling factor).

Examples
--------
>>> grid = PatchGrid(100, 70, patch_size=64, overlap=16)
>>> grid.tops, grid.lefts
((0, 36), (0, 6))
>>> float(grid.weight_sum().min()) > 0
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .diffusion import Denoiser

__all__ = [
    "PatchGrid",
    "default_overlap",
    "hann_weights",
    "in_batches",
    "patch_starts",
    "tiled_denoiser",
]


def default_overlap(patch_size: int) -> int:
    """The overlap used when none is given: a quarter of the patch side, in pixels.

    Enough for the Hann window to blend away patch seams; more costs time.

    Examples
    --------
    >>> default_overlap(64)
    16
    """
    return patch_size // 4


def patch_starts(length: int, patch: int, overlap: int) -> tuple[int, ...]:
    """First indices of the patches that cover ``length`` pixels with at least ``overlap`` shared.

    The first patch starts at 0 and the last ends at ``length``; the ones between are evenly
    spaced, so neighbours share ``overlap`` pixels or slightly more.

    Parameters
    ----------
    length : int
        Image side in pixels, >= 1.
    patch : int
        Patch side in pixels, >= 1; a side shorter than ``patch`` gets one patch of its length.
    overlap : int
        Pixels shared by neighbouring patches, 0 <= overlap < patch.

    Returns
    -------
    tuple of int

    Examples
    --------
    >>> patch_starts(100, 64, 16)
    (0, 36)
    >>> patch_starts(40, 64, 16)
    (0,)
    """
    if length < 1 or patch < 1:
        raise ValueError(f"length and patch must be >= 1, got {length} and {patch}")
    if not 0 <= overlap < patch:
        raise ValueError(f"overlap must be in [0, {patch - 1}] for patch {patch}, got {overlap}")
    if length <= patch:
        return (0,)
    stride = patch - overlap
    count = math.ceil((length - patch) / stride) + 1
    span = length - patch
    # round(i * span / (count - 1)) in integers, halves up: even spacing, exact end points.
    return tuple((2 * i * span + count - 1) // (2 * (count - 1)) for i in range(count))


def hann_weights(size: int, *, flat_start: bool, flat_end: bool) -> Tensor:
    """One axis of a patch's blending weights: a Hann window, flat (1) on border sides.

    Parameters
    ----------
    size : int
        Patch side in pixels, >= 1.
    flat_start, flat_end : bool
        The patch touches the image border at its first / last pixel.

    Returns
    -------
    Tensor, shape (size,), float64
        Weights in (0, 1]: ``sin^2(pi (i + 1/2) / size)``, set to 1 from the centre to a flat
        side.

    Examples
    --------
    >>> [round(w, 4) for w in hann_weights(4, flat_start=False, flat_end=True).tolist()]
    [0.1464, 0.8536, 1.0, 1.0]
    """
    index = torch.arange(size, dtype=torch.float64)
    window = torch.sin(math.pi * (index + 0.5) / size) ** 2
    if flat_start:
        window[: (size + 1) // 2] = 1.0
    if flat_end:
        window[size // 2 :] = 1.0
    return window


@dataclass(frozen=True)
class PatchGrid:
    """The patches that cover an image, and their blending weights.

    Parameters
    ----------
    height, width : int
        Image size in pixels, >= 1.
    patch_size : int
        Patch side in pixels (the training patch size); clipped to the image's sides.
    overlap : int
        Pixels shared by neighbouring patches, 0 <= overlap < patch_size.
    """

    height: int
    width: int
    patch_size: int
    overlap: int

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be >= 1, got {self.height}x{self.width}")
        if self.patch_size < 1:
            raise ValueError(f"patch size must be >= 1, got {self.patch_size}")
        if not 0 <= self.overlap < self.patch_size:
            raise ValueError(
                f"overlap must be in [0, {self.patch_size - 1}] for patch size "
                f"{self.patch_size}, got {self.overlap}"
            )

    @property
    def patch_height(self) -> int:
        return min(self.patch_size, self.height)

    @property
    def patch_width(self) -> int:
        return min(self.patch_size, self.width)

    @cached_property
    def tops(self) -> tuple[int, ...]:
        return patch_starts(self.height, self.patch_size, self.overlap)

    @cached_property
    def lefts(self) -> tuple[int, ...]:
        return patch_starts(self.width, self.patch_size, self.overlap)

    @property
    def positions(self) -> list[tuple[int, int]]:
        """(top, left) of every patch, row by row."""
        return [(top, left) for top in self.tops for left in self.lefts]

    def __len__(self) -> int:
        return len(self.tops) * len(self.lefts)

    def patch_weights(self, top: int, left: int) -> Tensor:
        """Weights of the patch at (top, left), shape (patch_height, patch_width), float64."""
        rows = hann_weights(
            self.patch_height, flat_start=top == 0, flat_end=top + self.patch_height == self.height
        )
        columns = hann_weights(
            self.patch_width, flat_start=left == 0, flat_end=left + self.patch_width == self.width
        )
        return rows[:, None] * columns[None, :]

    def weight_sum(self) -> Tensor:
        """Total weight of every pixel, shape (height, width), float64; positive everywhere."""
        total = torch.zeros(self.height, self.width, dtype=torch.float64)
        for top, left in self.positions:
            window = total[top : top + self.patch_height, left : left + self.patch_width]
            window += self.patch_weights(top, left)
        return total

    def split(self, images: Tensor) -> Tensor:
        """Cut (B, C, height, width) images into (B * len(self), C, ph, pw) patches, image by
        image, patches in :attr:`positions` order."""
        self._check(images)
        ph, pw = self.patch_height, self.patch_width
        patches = [images[:, :, t : t + ph, s : s + pw] for t, s in self.positions]
        return torch.stack(patches, dim=1).flatten(0, 1)

    def merge(self, patches: Tensor) -> Tensor:
        """Blend :meth:`split`-ordered patches (B * len(self), C, ph, pw) into (B, C, height,
        width) images: the weighted mean of the patches over each pixel."""
        count = len(self)
        if patches.shape[0] % count or patches.shape[-2:] != (self.patch_height, self.patch_width):
            raise ValueError(
                f"expected (B * {count}, C, {self.patch_height}, {self.patch_width}) patches, "
                f"got {tuple(patches.shape)}"
            )
        batch, channels = patches.shape[0] // count, patches.shape[1]
        patches = patches.unflatten(0, (batch, count))
        ph, pw = self.patch_height, self.patch_width
        total = patches.new_zeros(batch, channels, self.height, self.width)
        for number, (top, left) in enumerate(self.positions):
            weights = self._weights[number].to(patches)
            total[:, :, top : top + ph, left : left + pw] += weights * patches[:, number]
        return total * self._inverse_weight_sum.to(patches)

    @cached_property
    def _weights(self) -> list[Tensor]:
        return [self.patch_weights(top, left) for top, left in self.positions]

    @cached_property
    def _inverse_weight_sum(self) -> Tensor:
        return 1.0 / self.weight_sum()

    def _check(self, images: Tensor) -> None:
        if images.ndim != 4 or tuple(images.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"expected (B, C, {self.height}, {self.width}) images, got {tuple(images.shape)}"
            )


def in_batches(function: Callable[..., Tensor], inputs: list[Tensor], batch_size: int) -> Tensor:
    """``function(*chunks)`` over chunks of at most ``batch_size`` rows, concatenated."""
    rows = inputs[0].shape[0]
    outputs = [
        function(*(tensor[start : start + batch_size] for tensor in inputs))
        for start in range(0, rows, batch_size)
    ]
    return torch.cat(outputs)


def tiled_denoiser(
    denoiser_for: Callable[[Tensor], Denoiser],
    conditioning: Tensor,
    grid: PatchGrid,
    batch_size: int,
) -> Denoiser:
    """A denoiser over the full image: per-patch predictions, blended with the grid's weights.

    Parameters
    ----------
    denoiser_for : callable
        ``denoiser_for(conditioning_patches)`` is the network's denoiser for those patches
        (:meth:`Restorer.denoiser <diffdeblur.restorer.Restorer.denoiser>`).
    conditioning : Tensor, shape (B, Cc, H, W)
        The full-size conditioning images; they are cut once.
    grid : PatchGrid
    batch_size : int
        Patches per network call.
    """
    condition_patches = grid.split(conditioning)
    per_image = len(grid)

    def predict_patches(x_patches: Tensor, condition: Tensor, t_patches: Tensor) -> Tensor:
        return denoiser_for(condition)(x_patches, t_patches)

    def predict(x_t: Tensor, t: Tensor) -> Tensor:
        x_patches = grid.split(x_t)
        t_patches = t.repeat_interleave(per_image)
        prediction = in_batches(
            predict_patches, [x_patches, condition_patches, t_patches], batch_size
        )
        return grid.merge(prediction)

    return predict
