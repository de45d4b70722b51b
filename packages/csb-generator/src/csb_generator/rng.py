"""Per-sample random generators (docs/model.md#5-reproducibility)."""

from __future__ import annotations

import numpy as np

__all__ = ["dataset_rng", "sample_rng"]


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of sample ``index`` of a dataset with seed ``seed``.

    The stream depends only on (seed, index), so a sample is the same whatever the order,
    worker or machine that produces it.

    Parameters
    ----------
    seed : int
        Dataset seed, >= 0.
    index : int
        Sample index in the whole dataset, >= 0.

    Returns
    -------
    numpy.random.Generator
        A PCG64 generator seeded by ``SeedSequence(seed, spawn_key=(index,))``.

    Examples
    --------
    >>> from csb_generator import sample_rng
    >>> bool(sample_rng(7, 3).random() == sample_rng(7, 3).random())
    True
    """
    if int(seed) != seed or seed < 0 or int(index) != index or index < 0:
        raise ValueError(f"seed and index must be integers >= 0, got {seed!r}, {index!r}")
    sequence = np.random.SeedSequence(int(seed), spawn_key=(int(index),))
    return np.random.Generator(np.random.PCG64(sequence))


def dataset_rng(seed: int) -> np.random.Generator:
    """The generator of draws made once per dataset (a fixed kernel, a T-sweep trajectory).

    Its stream, ``SeedSequence(seed)`` without a spawn key, is distinct from every
    :func:`sample_rng` stream of the same seed.

    Parameters
    ----------
    seed : int
        Dataset seed, >= 0.
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed))))
