"""Pictures of training and evaluation: the loss curve, restoration grids, metrics against T."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .pixels import to_unit

__all__ = [
    "loss_curves",
    "save_loss_curve",
    "save_metric_against_exposure",
    "save_restoration_grid",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: training machines have no display
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    """Save a figure under a temporary name and rename it: never a half-written PNG."""
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary)
    _pyplot().close(figure)
    temporary.replace(path)


#: The terms a training log may record beside the total ``loss``, in the order they are drawn.
LOSS_TERMS = ("diffusion", "regression", "kernel", "reblur")


def loss_curves(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, list, list]]:
    """The curves :func:`save_loss_curve` draws: ``(label, steps, values)``, one per term.

    The total ``loss`` is a curve of its own only when the records hold several terms; a loss
    of one term is that term, drawn once under its name.
    """
    terms = [key for key in LOSS_TERMS if any(record.get(key) is not None for record in records)]
    if len(terms) > 1:
        keys = {"total": "loss", **{term: term for term in terms}}
    else:
        keys = {terms[0] if terms else "loss": "loss"}
    curves = []
    for label, key in keys.items():
        points = [
            (record["step"], record[key]) for record in records if record.get(key) is not None
        ]
        if points:
            steps, values = zip(*points, strict=True)
            curves.append((label, list(steps), list(values)))
    return curves


def save_loss_curve(log_path: str | Path, png_path: str | Path) -> None:
    """Plot the training loss of every record of a ``log.jsonl`` against its step (log scale).

    One curve per term of the loss (:func:`loss_curves`). Records are marked with dots when
    there are few of them, so that a short run still shows its points.
    """
    log_path, png_path = Path(log_path), Path(png_path)
    if not log_path.is_file():
        return
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not records:
        return
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    marker = "." if len(records) < 50 else None
    for label, steps, values in loss_curves(records):
        axes.plot(steps, values, label=label, linewidth=1, marker=marker)
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("training loss")
    axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    _save(figure, png_path)


def _to_image(tensor: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] to (H, W, 3) in [0, 1]."""
    image = to_unit(tensor.detach().float().cpu().clamp(-1, 1)).permute(1, 2, 0).numpy()
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def save_restoration_grid(
    path: str | Path,
    *columns: torch.Tensor,
    labels: tuple[str, ...] = ("blurred", "restored", "sharp"),
    title: str = "",
) -> None:
    """One row per image, one column per tensor (each (B, C, H, W) in [-1, 1]), with PSNR of
    every column but the last against the last (the reference)."""
    plt = _pyplot()
    rows, count = columns[0].shape[0], len(columns)
    figure, axes = plt.subplots(
        rows, count, figsize=(2.2 * count, 2.2 * rows + 0.4), dpi=100, squeeze=False
    )
    reference = columns[-1]
    for row in range(rows):
        for column, (tensor, label) in enumerate(zip(columns, labels, strict=False)):
            axis = axes[row, column]
            axis.imshow(_to_image(tensor[row]), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            heading = label if row == 0 else ""
            if column < count - 1:
                error = torch.mean(((tensor[row] - reference[row]) / 2) ** 2).item()
                psnr = 10 * np.log10(1 / error) if error > 0 else float("inf")
                heading = f"{heading}\n{psnr:.1f} dB".strip()
            axis.set_title(heading, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    _save(figure, Path(path))


def save_metric_against_exposure(
    path: str | Path,
    by_exposure: Sequence[Mapping[str, Any]],
    labels: Mapping[str, str],
) -> None:
    """PSNR, SSIM and LPIPS against the exposure fraction T, one line per method (as the
    thesis's Figure 4).

    Parameters
    ----------
    path : str or Path
        PNG file to write.
    by_exposure : sequence of mapping
        Entries with ``exposure``, ``method``, ``psnr``, ``ssim`` and ``lpips``.
    labels : mapping of str to str
        Legend label of each method.
    """
    plt = _pyplot()
    metrics = [("psnr", "PSNR (dB) ↑"), ("ssim", "SSIM ↑"), ("lpips", "LPIPS ↓")]
    metrics = [(k, t) for k, t in metrics if any(np.isfinite(e[k]) for e in by_exposure)]
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), dpi=100)
    axes = np.atleast_1d(axes)
    methods = list(dict.fromkeys(entry["method"] for entry in by_exposure))
    for axis, (key, title) in zip(axes, metrics, strict=True):
        for method in methods:
            points = sorted((e["exposure"], e[key]) for e in by_exposure if e["method"] == method)
            axis.plot(*zip(*points, strict=True), marker="o", label=labels.get(method, method))
        axis.set_xscale("log", base=2)
        axis.set_xlabel("exposure fraction T")
        axis.set_title(title, fontsize=10)
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    _save(figure, Path(path))
