"""The dataset preview: images as stored, grey stays grey, every column labelled."""

from __future__ import annotations

import numpy as np
from csb_generator.preview import (
    COLUMN_LABELS,
    GAP_PIXELS,
    LABEL_PIXELS,
    MIN_TILE_PIXELS,
    contact_sheet,
)


def _sample(rng: np.random.Generator, channels: int) -> dict[str, np.ndarray]:
    # A dim, low-contrast crop (values 99 to 160 of 255), as clock_motion is: a stretch would
    # make it span 0 to 255.
    sharp = rng.integers(99, 161, size=(32, 32, channels), dtype=np.uint8)
    kernel = np.zeros((9, 9), dtype=np.float32)
    kernel[4, 2:7] = 0.2
    return {"sharp": sharp, "blurred": sharp.astype(np.float32) / 255, "kernel": kernel}


def test_a_grey_dataset_gives_a_grey_sheet_of_its_own_values_under_labels():
    rng = np.random.default_rng(0)
    samples = [_sample(rng, 1), _sample(rng, 1)]
    sheet = contact_sheet(samples)
    zoom = MIN_TILE_PIXELS // 32
    tile = 32 * zoom
    assert sheet.shape == (LABEL_PIXELS + 2 * tile + GAP_PIXELS, 3 * tile + 2 * GAP_PIXELS, 3)
    assert np.array_equal(sheet[..., 0], sheet[..., 1])
    assert np.array_equal(sheet[..., 1], sheet[..., 2])
    for row, sample in enumerate(samples):
        top = LABEL_PIXELS + row * (tile + GAP_PIXELS)
        for column in (0, 1):  # blurred, sharp: the stored values, enlarged, not stretched
            left = column * (tile + GAP_PIXELS)
            shown = sheet[top : top + tile : zoom, left : left + tile : zoom, 0]
            np.testing.assert_array_equal(shown, sample["sharp"][..., 0])
    # Each column has its label: dark text on the white band above it.
    band = sheet[:LABEL_PIXELS, :, 0]
    assert len(COLUMN_LABELS) == 3
    for column in range(3):
        left = column * (tile + GAP_PIXELS)
        assert band[:, left : left + tile].min() < 128, COLUMN_LABELS[column]


def test_a_colour_dataset_keeps_its_colours():
    rng = np.random.default_rng(1)
    sample = _sample(rng, 3)
    sheet = contact_sheet([sample])
    zoom = MIN_TILE_PIXELS // 32
    shown = sheet[LABEL_PIXELS : LABEL_PIXELS + 32 * zoom : zoom, : 32 * zoom : zoom]
    np.testing.assert_array_equal(shown, sample["sharp"])
