"""A contact sheet of a few samples (blurred | sharp | kernel), for a look before a read.

Images are shown as stored, on their dtype's full scale (no contrast stretch); a grey dataset
gives a grey sheet. Each column is labelled; the kernel column says that it is square-root scaled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .atomic_files import write_bytes_atomic

__all__ = ["contact_sheet", "write_preview"]

GAP_PIXELS = 4
#: Small crops are enlarged (nearest neighbour) to at least this many pixels on screen.
MIN_TILE_PIXELS = 128
#: Column headings of the sheet, and the height of the band that holds them, in pixels.
COLUMN_LABELS = ("blurred", "sharp", "kernel (sqrt scale)")
LABEL_PIXELS = 16


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        image = image / np.iinfo(image.dtype).max
    image = np.clip(np.asarray(image, dtype=np.float64), 0, 1)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.rint(image * 255).astype(np.uint8)


def _zoom(image: np.ndarray, factor: int) -> np.ndarray:
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def _kernel_tile(kernel: np.ndarray, size: int) -> np.ndarray:
    # Square root of the normalised kernel so that faint parts of a long path stay visible.
    kernel = np.asarray(kernel, dtype=np.float64)
    peak = kernel.max()
    shown = np.sqrt(kernel / peak) if peak > 0 else kernel
    repeat = max(1, size // kernel.shape[0])
    tile = np.kron(shown, np.ones((repeat, repeat)))
    canvas = np.zeros((size, size))
    height, width = min(size, tile.shape[0]), min(size, tile.shape[1])
    top, left = (size - height) // 2, (size - width) // 2
    canvas[top : top + height, left : left + width] = tile[:height, :width]
    return _to_rgb8(canvas)


def _heading(width: int, tile: int) -> np.ndarray:
    """A white band with each column's label centred over its tile."""
    band = Image.new("RGB", (width, LABEL_PIXELS), "white")
    draw = ImageDraw.Draw(band)
    font = ImageFont.load_default()
    for column, label in enumerate(COLUMN_LABELS):
        left, _, right, _ = draw.textbbox((0, 0), label, font=font)
        centre = column * (tile + GAP_PIXELS) + tile // 2
        draw.text((centre - (right - left) // 2, 2), label, fill="black", font=font)
    return np.asarray(band, dtype=np.uint8)


def contact_sheet(samples: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
    """One row per sample: blurred crop, sharp crop, kernel (square-root scaled), as RGB uint8,
    under a band of column labels (:data:`COLUMN_LABELS`)."""
    if not samples:
        raise ValueError("a contact sheet needs at least one sample")
    zoom = max(1, MIN_TILE_PIXELS // samples[0]["sharp"].shape[0])
    size = samples[0]["sharp"].shape[0] * zoom
    rows = []
    for sample in samples:
        tiles = [
            _zoom(_to_rgb8(sample["blurred"]), zoom),
            _zoom(_to_rgb8(sample["sharp"]), zoom),
            _kernel_tile(sample["kernel"], size),
        ]
        gap = np.full((size, GAP_PIXELS, 3), 255, dtype=np.uint8)
        rows.append(np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1))
    spacer = np.full((GAP_PIXELS, rows[0].shape[1], 3), 255, dtype=np.uint8)
    stacked = [part for row in rows for part in (row, spacer)][:-1]
    return np.concatenate([_heading(rows[0].shape[1], size), *stacked], axis=0)


def write_preview(path: str | Path, samples: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Write :func:`contact_sheet` of ``samples`` as a PNG, atomically."""
    write_bytes_atomic(path, iio.imwrite("<bytes>", contact_sheet(samples), extension=".png"))
