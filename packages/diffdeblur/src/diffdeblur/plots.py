"""Pictures of a training run: the loss curve and restoration grids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

__all__ = ["save_loss_curve", "save_restoration_grid"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: training machines have no display
    import matplotlib.pyplot as plt

    return plt


def save_loss_curve(log_path: str | Path, png_path: str | Path) -> None:
    """Plot the ``loss`` of every record of a ``log.jsonl`` against its step (log scale)."""
    log_path, png_path = Path(log_path), Path(png_path)
    if not log_path.is_file():
        return
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not records:
        return
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [record["step"] for record in records]
    for key in ("loss", "diffusion", "regression"):
        values = [record.get(key) for record in records]
        if key == "loss" or any(value is not None for value in values):
            points = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None]
            if points:
                axes.plot(*zip(*points, strict=True), label=key, linewidth=1)
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("training loss (MSE)")
    axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    temporary = png_path.with_name(f".{png_path.name}.tmp.png")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(png_path)


def _to_image(tensor: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] to (H, W, 3) in [0, 1]."""
    image = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
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
    figure.savefig(path)
    plt.close(figure)
