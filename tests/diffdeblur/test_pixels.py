"""Pixel scales: integer images to [0, 1] and back, and the networks' [-1, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffdeblur.pixels import from_unit_range, to_signed, to_unit, unit_range


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_every_integer_level_survives_the_round_trip(dtype):
    levels = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
    unit = unit_range(levels)
    assert unit.dtype == np.float32 and unit[0] == 0 and unit[-1] == 1
    np.testing.assert_array_equal(from_unit_range(unit, dtype), levels)


def test_floats_are_kept_and_the_division_happens_in_the_asked_type():
    image = np.array([0.0, 0.25, 1.0], dtype=np.float64)
    assert unit_range(image).dtype == np.float32
    np.testing.assert_array_equal(unit_range(image, np.float64), image)
    assert unit_range(np.array([255], dtype=np.uint8), np.float64)[0] == 1.0


def test_the_signed_scale_maps_zero_to_minus_one_and_back_for_arrays_and_tensors():
    unit = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(to_signed(unit), [-1.0, 0.0, 1.0])
    assert to_signed(unit).dtype == np.float32
    tensor = torch.tensor([-1.0, 0.0, 1.0])
    assert torch.equal(to_unit(tensor), torch.tensor([0.0, 0.5, 1.0]))


def test_pixels_that_are_not_numbers_are_refused():
    with pytest.raises(ValueError, match="bool"):
        unit_range(np.zeros(3, dtype=bool))
