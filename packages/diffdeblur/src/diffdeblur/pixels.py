"""Pixel scales: stored images in [0, 1], the networks' images in [-1, 1].

Integer images are scaled by their dtype's maximum (``uint8``: 255, ``uint16``: 65535); float
images are taken to be in [0, 1] already, as the shard format stores them. Every reader of
images (training data, evaluation, the Wiener baseline, restoring files) converts through here,
so the scales cannot drift apart.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = ["from_unit_range", "to_signed", "to_unit", "unit_range"]

_Array = TypeVar("_Array", np.ndarray, torch.Tensor)


def unit_range(image: np.ndarray, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """An image as floats in [0, 1]: integers divided by their dtype's maximum.

    Parameters
    ----------
    image : ndarray
        Integer (full scale = the dtype's maximum) or float (already in [0, 1]) pixels.
    dtype : numpy float type
        The result's type; the division happens in it.

    Returns
    -------
    ndarray
        Same shape, ``dtype``.

    Raises
    ------
    ValueError
        If the pixels are neither integers nor real floats (booleans, complex numbers).

    Examples
    --------
    >>> unit_range(np.array([0, 51, 255], dtype=np.uint8))
    array([0. , 0.2, 1. ], dtype=float32)
    """
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(dtype) / dtype(np.iinfo(image.dtype).max)
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(dtype)
    raise ValueError(f"pixels must be integers or real floats, got dtype {image.dtype}")


def from_unit_range(unit: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """The inverse of :func:`unit_range`: integers rounded to the nearest level of ``dtype``.

    ``unit`` should already be clipped to [0, 1].

    Examples
    --------
    >>> from_unit_range(np.array([0.0, 0.2, 1.0]), np.uint8)
    array([  0,  51, 255], dtype=uint8)
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        peak = np.iinfo(dtype).max
        return np.rint(np.asarray(unit, dtype=np.float64) * peak).astype(dtype)
    return np.asarray(unit).astype(dtype)


def to_signed(unit: _Array) -> _Array:
    """[0, 1] to the networks' [-1, 1]: ``2 x - 1`` (NumPy arrays keep their float type)."""
    return unit * 2 - 1


def to_unit(signed: _Array) -> _Array:
    """The networks' [-1, 1] back to [0, 1]: ``(x + 1) / 2``, not clipped."""
    return (signed + 1) / 2
