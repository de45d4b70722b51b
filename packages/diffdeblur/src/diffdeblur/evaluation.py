"""Evaluation of a restorer against the blurred input and the Wiener baseline.

Three protocols (``docs/evaluation.md``):

- ``central``: the central ``patch_size`` square of each test image (the thesis's "central
  64x64 patch") is all that any method sees and all that is scored;
- ``context``: each method restores the whole stored image and the same central square is
  scored, so the methods see the surroundings that a real photograph gives them (near a crop's
  border the blur mixes in content the crop lacks, which no method can undo);
- ``full``: each method restores the whole stored image (the model through the any-size path of
  :class:`~diffdeblur.restoration.ImageRestorer`) and the whole image is scored.

Scores are computed on images in [0, 1] against the sharp crop: PSNR (data range 1), SSIM
(Gaussian window 11 x 11, sigma 1.5) and LPIPS (AlexNet, v0.1), see :mod:`diffdeblur.metrics`.
The Wiener baseline deconvolves each blurred image with its stored kernel and a regularisation
weight chosen beforehand on training data (:func:`diffdeblur.wiener.tune_wiener_balance`).

Restorations are seeded: a batch's sampling draws come from a generator seeded with ``seed``
and the batch's number, so a result depends on the seed and the batch size, not on anything
else that ran before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .deconvolution import odd_kernel
from .metrics import psnr, ssim
from .pixels import to_signed, to_unit, unit_range
from .restoration import ImageRestorer
from .restorer import Restorer
from .samplers import SamplerSpec
from .tiling import default_overlap
from .wiener import wiener_deconvolve

__all__ = [
    "METHOD_LABELS",
    "PROTOCOLS",
    "Evaluation",
    "EvaluationSettings",
    "evaluate_samples",
    "summarise",
]

#: The evaluation protocols (module docstring).
PROTOCOLS: tuple[str, ...] = ("central", "context", "full")

#: Row labels of the methods, in report order.
METHOD_LABELS = {
    "blurred": "Blurred",
    "wiener": "Wiener",
    "wiener_rotated": "Wiener (kernel rotated 180°)",
    "model": "Model",
}

#: A perceptual distance over (B, C, H, W) images in [0, 1]: one value per image.
Distance = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class EvaluationSettings:
    """How test images are restored and scored.

    Attributes
    ----------
    protocol : {"central", "context", "full"}
        ``central`` (the thesis): cut the central ``patch_size`` square out of each test image
        and restore and score that alone, so no method sees beyond its borders. ``context``:
        restore the whole test image and score the same central square, so every method has the
        surroundings a user's photograph gives it. ``full``: restore and score whole images.
    patch_size : int
        Side in pixels of the central square and of the model's patches (the training size).
    overlap : int or None
        Overlap of the model's patches in pixels (``full``), 0 <= overlap < patch_size;
        default a quarter of the patch.
    batch_size : int
        Patches per network call (and images per batch with ``central``).
    sampler : SamplerSpec
        Sampler, steps and eta of diffusion models (default: the model's own sampler).
    seed : int
        Seed of the sampling draws.
    limit : int or None
        Score the first ``limit`` images only.
    examples : int
        Images kept for the example figure.
    """

    protocol: str = "central"
    patch_size: int = 64
    overlap: int | None = None
    batch_size: int = 16
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    seed: int = 0
    limit: int | None = None
    examples: int = 4

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            choices = ", ".join(PROTOCOLS)
            raise ValueError(f"protocol must be one of {choices}, got {self.protocol!r}")
        if self.patch_size < 11:
            raise ValueError(f"patch_size must be >= 11 (the SSIM window), got {self.patch_size}")
        if self.overlap is None:
            object.__setattr__(self, "overlap", default_overlap(self.patch_size))
        if not 0 <= self.overlap < self.patch_size:
            raise ValueError(f"overlap must be in [0, {self.patch_size - 1}], got {self.overlap}")
        if self.batch_size < 1 or self.examples < 0:
            raise ValueError("batch_size must be >= 1, examples >= 0")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    def sampler_label(self) -> str:
        """The sampler as a report states it, e.g. ``ddim, 50 steps, eta 0``."""
        return self.sampler.label


@dataclass
class Evaluation:
    """Scores of every method on every image, and a few images to show.

    Attributes
    ----------
    rows : list of dict
        One per (image, method): ``index``, ``exposure``, ``method``, ``psnr``, ``ssim``,
        ``lpips`` (NaN when LPIPS was not computed).
    examples : dict of str to Tensor
        ``"blurred"``, the methods' restorations and ``"sharp"`` of the first images, each
        (N, C, H, W) in [0, 1].
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    examples: dict[str, Tensor] = field(default_factory=dict)


def _central(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(
            f"test images of {height}x{width} px are smaller than the {size} px central patch"
        )
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


def _central_batch(images: Tensor, size: int) -> Tensor:
    height, width = images.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top : top + size, left : left + size]


def _batches(
    samples: Sequence[dict], settings: EvaluationSettings, first: int = 0
) -> Iterator[tuple[int, list[dict]]]:
    """``(number, samples)`` of every batch from batch ``first`` on; a batch's samples are read
    when it is reached."""
    count = len(samples) if settings.limit is None else min(settings.limit, len(samples))
    # Whole images may differ in size; the crops of one dataset do not, so context batches them.
    per_batch = 1 if settings.protocol == "full" else settings.batch_size
    for number, start in enumerate(range(0, count, per_batch)):
        if number >= first:
            yield number, [samples[i] for i in range(start, min(start + per_batch, count))]


def _to_batch(images: list[np.ndarray], device: torch.device | str) -> Tensor:
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return stacked.to(device)


def _scores(restored: Tensor, sharp: Tensor, distance: Distance | None) -> dict[str, Tensor]:
    scores = {"psnr": psnr(restored, sharp), "ssim": ssim(restored, sharp)}
    if distance is None:
        scores["lpips"] = torch.full_like(scores["psnr"], math.nan)
    else:
        colour = restored.shape[1] == 3
        scores["lpips"] = distance(
            restored if colour else restored.expand(-1, 3, -1, -1),
            sharp if colour else sharp.expand(-1, 3, -1, -1),
        )
    return scores


def _true_kernels(model: Restorer, batch: list[dict], device) -> Tensor | None:
    """The stored kernels, for a restorer that deconvolves with the true kernel (non-blind)."""
    front = model.config.deconvolution
    if front is None or front.kernel != "true":
        return None
    kernels = np.stack([odd_kernel(sample["kernel"]) for sample in batch])
    return torch.from_numpy(kernels).to(device)


def _restore_with_model(
    restorer: ImageRestorer,
    blurred: Tensor,
    settings: EvaluationSettings,
    batch_number: int,
    kernel: Tensor | None,
) -> Tensor:
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + batch_number)
    restored = restorer.restore(to_signed(blurred), generator=generator, kernel=kernel)
    return to_unit(restored.float()).clamp(0, 1)


def evaluate_samples(
    samples: Sequence[dict[str, np.ndarray]],
    settings: EvaluationSettings,
    *,
    model: Restorer | None,
    wiener_balance: float | None = None,
    wiener_rotated_balance: float | None = None,
    lpips: Distance | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[int], object] | None = None,
    first_batch: int = 0,
    on_batch: Callable[[int, list[dict[str, Any]]], object] | None = None,
) -> Evaluation:
    """Restore and score test samples with every method that is given.

    Parameters
    ----------
    samples : sequence of dict
        Test samples as :class:`csb_generator.shards.ShardDataset` returns them (``blurred``
        float in [0, 1], ``sharp`` uint8/uint16, ``kernel``, ``exposure``, ``index``).
    settings : EvaluationSettings
    model : Restorer or None
        The restorer (evaluation mode, on ``device``); None scores the baselines only.
    wiener_balance, wiener_rotated_balance : float or None
        Regularisation weights of the Wiener rows (kernel as applied, kernel rotated by 180°);
        None leaves the row out.
    lpips : callable or None
        LPIPS distance over (B, 3, H, W) images in [0, 1]; None leaves LPIPS as NaN.
    device : torch.device or str
    progress : callable, optional
        Called with the number of images finished after each batch.
    first_batch : int
        Start at this batch (of ``settings.batch_size`` images; of one image under ``full``),
        skipping the ones before: how an interrupted evaluation continues. Every batch's
        sampling draws depend on its number only, so the rows are those of a run from the start.
    on_batch : callable, optional
        Called with each batch's number and its rows once they are scored (to keep them).

    Returns
    -------
    Evaluation
        The rows of the batches scored here; the examples are the first images of batch
        ``first_batch`` on.
    """
    evaluation = Evaluation()
    kept: dict[str, list[Tensor]] = {}
    restorer = None
    if model is not None:
        restorer = ImageRestorer(
            model, settings.patch_size, settings.overlap, settings.batch_size, settings.sampler
        )
    for number, batch in _batches(samples, settings, first_batch):
        blurred_np = [unit_range(s["blurred"]) for s in batch]
        sharp_np = [unit_range(s["sharp"]) for s in batch]
        if settings.protocol == "central":
            blurred_np = [_central(b, settings.patch_size) for b in blurred_np]
            sharp_np = [_central(s, settings.patch_size) for s in sharp_np]
        outputs = {"blurred": _to_batch(blurred_np, device)}
        sharp = _to_batch(sharp_np, device)
        for method, balance, rotate in (
            ("wiener", wiener_balance, False),
            ("wiener_rotated", wiener_rotated_balance, True),
        ):
            if balance is not None:
                deconvolved = [
                    wiener_deconvolve(b, s["kernel"], balance, rotate_kernel=rotate)
                    for b, s in zip(blurred_np, batch, strict=True)
                ]
                outputs[method] = _to_batch(deconvolved, device)
        if restorer is not None:
            kernel = _true_kernels(restorer.model, batch, device)
            outputs["model"] = _restore_with_model(
                restorer, outputs["blurred"], settings, number, kernel
            )
        if settings.protocol == "context":
            # Restored with their surroundings; scored on the central square alone.
            outputs = {m: _central_batch(x, settings.patch_size) for m, x in outputs.items()}
            sharp = _central_batch(sharp, settings.patch_size)
        rows = []
        for method, restored in outputs.items():
            scores = _scores(restored, sharp, lpips)
            for position, sample in enumerate(batch):
                rows.append(
                    {
                        "index": int(sample["index"]),
                        "exposure": float(sample["exposure"]),
                        "method": method,
                        **{name: float(values[position]) for name, values in scores.items()},
                    }
                )
        evaluation.rows.extend(rows)
        if on_batch is not None:
            on_batch(number, rows)
        seen = sum(len(images) for images in kept.get("sharp", []))
        if seen < settings.examples:
            take = settings.examples - seen
            for method, images in {**outputs, "sharp": sharp}.items():
                kept.setdefault(method, []).append(images[:take].cpu())
        if progress is not None:
            progress(len(batch))
    evaluation.examples = {method: torch.cat(parts) for method, parts in kept.items()}
    return evaluation


def summarise(rows: Sequence[dict[str, Any]], by: Sequence[str] = ("method",)) -> list[dict]:
    """Mean scores per group of rows (e.g. per method, or per exposure and method).

    Returns
    -------
    list of dict
        The group keys, ``images`` (count), and the mean ``psnr``, ``ssim``, ``lpips``; groups in
        the order they first appear.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in by), []).append(row)
    summary = []
    for key, members in groups.items():
        entry = dict(zip(by, key, strict=True))
        entry["images"] = len(members)
        for metric in ("psnr", "ssim", "lpips"):
            entry[metric] = float(np.mean([m[metric] for m in members]))
        summary.append(entry)
    return summary
