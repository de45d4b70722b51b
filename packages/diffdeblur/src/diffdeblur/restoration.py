"""Restoring images with a trained model: one object that holds what a checkpoint knows.

An :class:`ImageRestorer` is a trained :class:`~diffdeblur.restorer.Restorer` (its EMA weights
by default) with the patch size it was trained on and its sampler. It restores images of any
size, in overlapping patches blended at every sampling step (:mod:`diffdeblur.tiling`), and of
any channel count. ``diffdeblur restore`` (:func:`~diffdeblur.restore_files.restore_files`)
and ``diffdeblur evaluate`` (:mod:`diffdeblur.evaluation`) restore through it.

Examples
--------
>>> import numpy as np, torch
>>> from diffdeblur import Restorer, restorer_config
>>> restorer = ImageRestorer(Restorer(restorer_config("regression", "tiny")).eval(), 16, 4)
>>> image = np.full((21, 37), 128, dtype=np.uint8)
>>> restored = restorer.restore_image(image, generator=torch.Generator().manual_seed(0))
>>> restored.shape, restored.dtype
((21, 37), dtype('uint8'))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .checkpoint import load_checkpoint, restorer_from_checkpoint, training_patch_size
from .config import ConfigError
from .pixels import from_unit_range, to_signed, to_unit, unit_range
from .pretrained import locate_model
from .restorer import Restorer
from .samplers import SamplerSpec
from .tiling import PatchGrid, default_overlap

__all__ = ["ImageRestorer"]


@dataclass
class ImageRestorer:
    """A trained restorer ready for images of any size: its network, patches and sampler.

    Parameters
    ----------
    model : Restorer
        A trained restorer, in evaluation mode, on the device the images are sent to.
    patch_size : int
        Patch side in pixels, >= 1; the training patch size is the natural one.
    overlap : int, optional
        Pixels shared by neighbouring patches, 0 <= overlap < patch_size [default:
        :func:`~diffdeblur.tiling.default_overlap`].
    batch_size : int
        Patches per network call, >= 1 (memory against speed; the result does not depend on it).
    sampler : SamplerSpec
        Sampler, steps and eta [default: the process's own sampler and steps]; unused by
        ``regression``.

    Raises
    ------
    ConfigError
        For patch settings that do not fit (``option`` ``"patch_size/overlap"``) or a batch size
        below 1.
    """

    model: Restorer
    patch_size: int
    overlap: int | None = None
    batch_size: int = 16
    sampler: SamplerSpec = field(default_factory=SamplerSpec)

    def __post_init__(self) -> None:
        if self.overlap is None:
            self.overlap = default_overlap(self.patch_size)
        try:
            PatchGrid(self.patch_size, self.patch_size, self.patch_size, self.overlap)
        except ValueError as error:
            raise ConfigError("patch_size/overlap", str(error)) from None
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {self.batch_size}")

    @classmethod
    def load(
        cls,
        model: str | Path,
        *,
        device: torch.device | str = "cpu",
        ema: bool = True,
        patch_size: int | None = None,
        overlap: int | None = None,
        batch_size: int = 16,
        sampler: SamplerSpec | None = None,
    ) -> ImageRestorer:
        """Load a checkpoint, an exported model or a bundled model by name.

        Parameters
        ----------
        model : str or Path
            A file, or the name of a bundled model (:mod:`diffdeblur.pretrained`).
        device : torch.device or str
            Where the network runs.
        ema : bool
            The EMA weights (default), or the raw ones of a training checkpoint.
        patch_size : int, optional
            Default: the patch size the model was trained on (64 where the file does not say).
        overlap, batch_size, sampler
            As the class.

        Raises
        ------
        CheckpointError
            For a file that is not a model of this package; the message names it.
        """
        path = locate_model(model)
        state = load_checkpoint(path, map_location=device)
        network = restorer_from_checkpoint(state, path, ema=ema)
        patch_size = patch_size or training_patch_size(state)
        return cls(network, patch_size, overlap, batch_size, sampler or SamplerSpec())

    @property
    def steps(self) -> int:
        """Sampling steps of one restoration (1 for ``regression``)."""
        if not self.model.is_diffusion:
            return 1
        return self.sampler.resolve(self.model.diffusion).steps

    @torch.no_grad()
    def restore(
        self,
        blurred: Tensor,
        *,
        generator: torch.Generator | None,
        progress: Callable[[], object] | None = None,
        kernel: Tensor | None = None,
    ) -> Tensor:
        """Restore blurred images of any size, whatever their channel count and the model's.

        A grey image restored by a colour model is replicated into R, G and B and the restored
        channels are averaged; a colour image restored by a grey model is restored channel by
        channel.

        Parameters
        ----------
        blurred : Tensor, shape (B, C, H, W)
            Blurred images in [-1, 1], C = 1 or 3, any H, W >= 1, on the model's device.
        generator : torch.Generator or None
            Source of every sampling draw; may be None when nothing is drawn.
        progress : callable, optional
            Called once per sampling step.
        kernel : Tensor, optional
            For a front end that deconvolves with the true kernel (:meth:`Restorer.restore
            <diffdeblur.restorer.Restorer.restore>`).

        Returns
        -------
        Tensor, shape (B, C, H, W), in [-1, 1]
        """
        options = {
            "sampler": self.sampler,
            "generator": generator,
            "progress": progress,
            "kernel": kernel,
            "patch_size": self.patch_size,
            "overlap": self.overlap,
            "batch_size": self.batch_size,
        }
        batch, channels, height, width = blurred.shape
        model_channels = self.model.config.image_channels
        if channels == model_channels:
            return self.model.restore(blurred.contiguous(), **options)
        if (channels, model_channels) == (1, 3):
            colour = blurred.expand(-1, 3, -1, -1).contiguous()
            return self.model.restore(colour, **options).mean(dim=1, keepdim=True)
        if (channels, model_channels) == (3, 1):
            planes = blurred.reshape(batch * 3, 1, height, width).contiguous()
            return self.model.restore(planes, **options).reshape(batch, 3, height, width)
        raise ValueError(f"a {model_channels}-channel model cannot restore {channels} channels")

    def restore_image(
        self,
        image: np.ndarray,
        *,
        generator: torch.Generator | None,
        progress: Callable[[], object] | None = None,
    ) -> np.ndarray:
        """Restore one blurred image array of any size, keeping its shape, channels and depth.

        Parameters
        ----------
        image : ndarray, shape (H, W), (H, W, 1) or (H, W, 3)
            ``uint8`` (0-255), ``uint16`` (0-65535), or float in [0, 1].
        generator, progress
            As :meth:`restore`.

        Returns
        -------
        ndarray
            Same shape and dtype as ``image``; integers rounded to the nearest level.
        """
        array = np.asarray(image)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3)):
            raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got {array.shape}")
        if np.issubdtype(array.dtype, np.integer) and array.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"integer images must be uint8 or uint16, got {array.dtype}")
        channels = 1 if array.ndim == 2 else array.shape[2]
        hwc = unit_range(array.reshape(array.shape[0], array.shape[1], channels))
        parameter = next(self.model.parameters(), None)
        device = torch.device("cpu") if parameter is None else parameter.device
        signed = to_signed(torch.from_numpy(hwc).permute(2, 0, 1)).to(device)
        restored = self.restore(signed[None], generator=generator, progress=progress)
        result = to_unit(restored[0].float().cpu()).clamp(0, 1).permute(1, 2, 0).numpy()
        return from_unit_range(result, array.dtype).reshape(array.shape)
