"""pytest-benchmark versions of the generator hot paths (see benchmarks/README.md).

Run explicitly (the repository's pytest configuration only collects tests/):

    pytest benchmarks/ --benchmark-only

Every benchmark uses seeded ``numpy.random.Generator`` objects; nothing here asserts on time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import csb_generator as csb
import numpy as np
import pytest
import scipy.signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import plain_model

PSF_SIZE = 64
LENGTH = 32.0


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """256x256 RGB float64 crop of a real photograph bundled with scikit-image."""
    import skimage.data

    return skimage.data.astronaut()[128:384, 160:416].astype(np.float64) / 255.0


@pytest.fixture(scope="module")
def kernel() -> np.ndarray:
    return csb.random_psf(csb.sample_rng(0, 0), PSF_SIZE, length=LENGTH).kernel


@pytest.mark.benchmark(group="kernel psf64 length32")
def test_random_psf(benchmark):
    csb.random_psf(csb.sample_rng(0, 0), PSF_SIZE, length=LENGTH)  # compile / load cache
    counter = iter(range(10**9))

    def one_kernel():
        return csb.random_psf(csb.sample_rng(0, next(counter)), PSF_SIZE, length=LENGTH)

    result = benchmark(one_kernel)
    assert result.kernel.shape == (PSF_SIZE, PSF_SIZE)


@pytest.mark.benchmark(group="kernel psf64 length32")
def test_plain_reference_kernel(benchmark):
    def one_kernel():
        positions, _ = plain_model.plain_random_trajectory(0, LENGTH)
        return plain_model.plain_psf(positions, PSF_SIZE, 1.0)

    result = benchmark.pedantic(one_kernel, rounds=10, iterations=1, warmup_rounds=1)
    assert result is not None


@pytest.mark.benchmark(group="degrade 256x256 RGB, psf 64")
def test_fftconvolve_floor(benchmark, image, kernel):
    result = benchmark(
        scipy.signal.fftconvolve, image, kernel[:, :, None], mode="same", axes=(0, 1)
    )
    assert result.shape == image.shape


@pytest.mark.benchmark(group="degrade 256x256 RGB, psf 64")
def test_degrade(benchmark, image, kernel):
    rng = csb.sample_rng(1, 0)
    result = benchmark(csb.degrade, image, kernel, 1.0, 768000.0, 1.0, rng)
    assert result.shape == image.shape


@pytest.mark.benchmark(group="degrade 256x256 RGB, psf 64")
def test_blur(benchmark, image, kernel):
    result = benchmark(csb.blur, image, kernel)
    assert result.shape == image.shape


@pytest.mark.benchmark(group="degrade 256x256 RGB, psf 64")
def test_add_noise(benchmark, image, kernel):
    blurred = csb.blur(image, kernel)
    rng = csb.sample_rng(1, 0)
    result = benchmark(csb.add_noise, blurred, 1.0, 768000.0, 1.0, rng)
    assert result.shape == image.shape
