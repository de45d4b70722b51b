"""PSF model: weights, splatting, centring, nesting, redraws, other kernels.

The model: docs/model.md#2-kernel-psf-for-an-exposure-fraction-t.
"""

from __future__ import annotations

import itertools
import math
import re

import imageio.v3 as iio
import numpy as np
import pytest
from csb_generator import (
    RandomPSF,
    TrajectoryOutsideGrid,
    blur_crop,
    disk_kernel,
    embed_kernel,
    exposure_weights,
    linear_trajectory,
    load_kernel,
    psf_from_trajectory,
    random_psf,
    random_trajectory,
)

# Exposures whose T * N (N = 2000) is integer (1, 1/2, 1/8, 0.999) and fractional (1/3 -> 666.67,
# 0.123456 -> 246.912, 0.9999 -> 1999.8, 0.0007 -> 1.4).
EXPOSURES = [1.0, 0.5, 1 / 8, 0.999, 1 / 3, 0.123456, 0.9999, 0.0007]


def _shaky(seed: int, length: float = 8.0, num_samples: int = 2000):
    """A visibly curved trajectory (anxiety well above the default range)."""
    return random_trajectory(
        np.random.default_rng(seed), length, num_samples=num_samples, anxiety=0.05, gaussian=8.0
    )


def _centre_of_mass(kernel: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(kernel.shape)
    total = kernel.sum()
    return float((kernel * rows).sum() / total), float((kernel * cols).sum() / total)


# --- exposure weights -------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [1, 2, 7, 2000])
@pytest.mark.parametrize("exposure", EXPOSURES)
def test_exposure_weights_structure(num_samples, exposure):
    w = exposure_weights(num_samples, exposure)
    tn = exposure * num_samples
    full = math.floor(tn)
    assert w.shape == (num_samples,)
    assert np.all(w[:full] == 1.0)
    if full < num_samples:
        assert w[full] == tn - full  # the fractional remainder, computed the same way
        assert np.all(w[full + 1 :] == 0.0)
    # The weights sum to T * N (a sum of ones plus one fraction: exact to rounding of tn).
    assert w.sum() == pytest.approx(tn, rel=1e-12)


def test_exposure_weights_documented_example():
    np.testing.assert_array_equal(exposure_weights(4, 0.625), [1.0, 1.0, 0.5, 0.0])
    np.testing.assert_array_equal(exposure_weights(5, 0.3), [1.0, 0.5, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("exposure", [0.0, -0.5, 1.0000001, math.nan])
def test_exposure_out_of_range_raises(exposure):
    with pytest.raises(ValueError, match="exposure"):
        exposure_weights(10, exposure)
    with pytest.raises(ValueError, match="exposure"):
        psf_from_trajectory(linear_trajectory(2.0), 8, exposure)


# --- mass, sign and centring ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("exposure", EXPOSURES)
def test_kernel_is_nonnegative_and_sums_to_exposure(seed, exposure):
    kernel = psf_from_trajectory(_shaky(seed), 17, exposure)
    assert kernel.shape == (17, 17)
    assert kernel.dtype == np.float64
    assert kernel.min() >= 0.0
    assert kernel.sum() == pytest.approx(exposure, rel=1e-12)


@pytest.mark.parametrize("psf_size", [12, 13, 16, 31, 32])
@pytest.mark.parametrize("exposure", EXPOSURES)
@pytest.mark.parametrize("seed", range(2))
def test_centre_of_mass_on_the_central_pixel(psf_size, exposure, seed):
    kernel = psf_from_trajectory(_shaky(seed, length=5.0), psf_size, exposure)
    centre = psf_size // 2
    row, col = _centre_of_mass(kernel)
    # Splatting preserves the first moment exactly; 1e-9 px leaves room only for rounding.
    assert abs(row - centre) <= 1e-9
    assert abs(col - centre) <= 1e-9


def test_centre_of_mass_for_a_straight_segment_with_fractional_exposure():
    # A straight segment at an angle: the exposed part is not symmetric about any pixel, so a
    # kernel centred by integer rounding would miss the centre by a fraction of a pixel.
    traj = linear_trajectory(7.3, angle=0.4)
    for exposure in (1.0, 0.37, 1 / 3):
        kernel = psf_from_trajectory(traj, 16, exposure)
        row, col = _centre_of_mass(kernel)
        assert abs(row - 8) <= 1e-9 and abs(col - 8) <= 1e-9


# --- splatting of known samples ---------------------------------------------------------------


def test_single_sample_lands_on_the_central_pixel():
    # Binary-fraction position, so the shift p + (c - p) is exact (the library computes the
    # shift as p + (centre - com); with e.g. 7.3 - 2.9j it rounds to c + 4e-16 and leaks 4e-16
    # into the next pixel).
    for psf_size in (1, 4, 5):
        for alignment in ("centre-of-mass", "common-origin"):
            kernel = psf_from_trajectory(
                np.array([7.25 - 2.75j]), psf_size, 1.0, alignment=alignment
            )
            expected = np.zeros((psf_size, psf_size))
            expected[psf_size // 2, psf_size // 2] = 1.0
            np.testing.assert_array_equal(kernel, expected)


def test_two_samples_bilinear_weights_by_hand():
    # positions 0 and 1.25 + 0.5j; centre of mass 0.625 + 0.25j; centre pixel (2, 2).
    # Sample 0 -> (col, row) = (1.375, 1.75): fc = 0.375, fr = 0.75 around pixel (1, 1).
    # Sample 1 -> (2.625, 2.25): fc = 0.625, fr = 0.25 around pixel (2, 2). Each weight / N = 2.
    # All values are binary fractions, so the result is exact.
    kernel = psf_from_trajectory(np.array([0j, 1.25 + 0.5j]), 5, 1.0)
    expected = np.zeros((5, 5))
    expected[1, 1] = 0.625 * 0.25 / 2
    expected[1, 2] = 0.375 * 0.25 / 2
    expected[2, 1] = 0.625 * 0.75 / 2
    expected[2, 2] = (0.375 * 0.75 + 0.375 * 0.75) / 2
    expected[2, 3] = 0.625 * 0.75 / 2
    expected[3, 2] = 0.375 * 0.25 / 2
    expected[3, 3] = 0.625 * 0.25 / 2
    np.testing.assert_array_equal(kernel, expected)
    # Common origin at T = 1 is the same shift.
    np.testing.assert_array_equal(
        psf_from_trajectory(np.array([0j, 1.25 + 0.5j]), 5, 1.0, alignment="common-origin"),
        expected,
    )


def test_half_exposure_common_origin_keeps_the_full_path_shift():
    # T = 0.5, N = 2: weights (1, 0). Common origin uses the T = 1 shift, so sample 0 stays at
    # (1.375, 1.75) and splats its four weights / 2; sample 1 is not exposed.
    positions = np.array([0j, 1.25 + 0.5j])
    kernel = psf_from_trajectory(positions, 5, 0.5, alignment="common-origin")
    expected = np.zeros((5, 5))
    expected[1, 1] = 0.625 * 0.25 / 2
    expected[1, 2] = 0.375 * 0.25 / 2
    expected[2, 1] = 0.625 * 0.75 / 2
    expected[2, 2] = 0.375 * 0.75 / 2
    np.testing.assert_array_equal(kernel, expected)
    # Centre of mass: the only exposed sample is moved onto the centre pixel.
    expected = np.zeros((5, 5))
    expected[2, 2] = 0.5
    np.testing.assert_array_equal(psf_from_trajectory(positions, 5, 0.5), expected)


def test_fractional_weight_and_sample_on_an_integer_column():
    # T = 0.75, N = 2: weights (1, 0.5). Weighted centre = 0.5 (1.5 + 0.75j) / 1.5 = 0.5 + 0.25j.
    # Sample 0 -> (1.5, 1.75): fc = 0.5, fr = 0.75 around (1, 1), weight 1.
    # Sample 1 -> (3.0, 2.5): on column 3 exactly, fr = 0.5 around (2, 3), weight 0.5.
    kernel = psf_from_trajectory(np.array([0j, 1.5 + 0.75j]), 5, 0.75)
    expected = np.zeros((5, 5))
    expected[1, 1] = 0.5 * 0.25 / 2
    expected[1, 2] = 0.5 * 0.25 / 2
    expected[2, 1] = 0.5 * 0.75 / 2
    expected[2, 2] = 0.5 * 0.75 / 2
    expected[2, 3] = 0.5 * 0.5 / 2
    expected[3, 3] = 0.5 * 0.5 / 2
    np.testing.assert_array_equal(kernel, expected)


@pytest.mark.parametrize("psf_size", [3, 4])
def test_samples_on_integer_positions_put_all_weight_on_one_pixel(psf_size):
    # Centre of mass 1 + 1j, so the samples land on (c - 1, c - 1) and (c + 1, c + 1); for
    # psf_size 3 the second one is the last row and column of the grid (no spill beyond it).
    c = psf_size // 2
    kernel = psf_from_trajectory(np.array([0j, 2 + 2j]), psf_size, 1.0)
    expected = np.zeros((psf_size, psf_size))
    expected[c - 1, c - 1] = 0.5
    expected[c + 1, c + 1] = 0.5
    np.testing.assert_array_equal(kernel, expected)


def test_psf_matches_a_brute_force_splat():
    # Independent vectorised splat of a random trajectory of 50 samples, exposure 0.61.
    traj = _shaky(4, length=6.0, num_samples=50)
    exposure, size = 0.61, 11
    w = np.clip(exposure * 50 - np.arange(50), 0, 1)
    pos = traj.positions - (w @ traj.positions) / w.sum() + complex(size // 2, size // 2)
    expected = np.zeros((size, size))
    grid = np.arange(size)
    for weight, p in zip(w, pos, strict=True):
        wc = np.clip(1 - np.abs(p.real - grid), 0, None)
        wr = np.clip(1 - np.abs(p.imag - grid), 0, None)
        expected += weight * np.outer(wr, wc)
    np.testing.assert_allclose(
        psf_from_trajectory(traj, size, exposure), expected / 50, rtol=0, atol=1e-15
    )


# --- nesting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_common_origin_kernels_nest(seed):
    traj = _shaky(seed, length=10.0)
    exposures = [1 / 64, 1 / 8, 0.2, 1 / 3, 0.5, 0.77, 0.9999, 1.0]
    kernels = [psf_from_trajectory(traj, 24, t, alignment="common-origin") for t in exposures]
    for small, large in itertools.pairwise(kernels):
        # Weights are monotone in T and the shift is the same: each pixel only gains mass.
        assert np.all(small <= large + 1e-15)
        assert large.sum() > small.sum()
    # At T = 1 both alignments coincide.
    np.testing.assert_array_equal(kernels[-1], psf_from_trajectory(traj, 24, 1.0))


def test_centre_of_mass_kernels_do_not_nest_but_common_origin_ones_do():
    # An L-shaped path: 5 px to the right, then 5 px down. Re-centring the first half moves it
    # off the full kernel's support, so centre-of-mass prefix kernels are not sub-kernels of the
    # full one; the common-origin option exists for that reason.
    leg = np.arange(1000) * (5.0 / 1000)
    positions = np.concatenate([leg + 0j, 5.0 + 1j * leg]).astype(np.complex128)
    full = psf_from_trajectory(positions, 16, 1.0)
    half_com = psf_from_trajectory(positions, 16, 0.5)
    half_origin = psf_from_trajectory(positions, 16, 0.5, alignment="common-origin")
    assert not np.all(half_com <= full + 1e-15)
    assert np.all(half_origin <= full + 1e-15)
    # The common-origin half kernel keeps the first leg where the full kernel has it: its
    # centre of mass is that of the first leg under the T = 1 shift.
    com_full = positions.mean()
    com_leg = positions[:1000].mean()
    row, col = _centre_of_mass(half_origin)
    assert abs(row - (8 + (com_leg - com_full).imag)) <= 1e-9
    assert abs(col - (8 + (com_leg - com_full).real)) <= 1e-9


def test_invalid_alignment_and_positions_raise():
    with pytest.raises(ValueError, match="alignment"):
        psf_from_trajectory(linear_trajectory(2.0), 8, alignment="centred")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="complex"):
        psf_from_trajectory(np.zeros(5), 8)
    with pytest.raises(ValueError, match="finite"):
        psf_from_trajectory(np.array([0j, complex(math.nan, 0)]), 8)
    with pytest.raises(ValueError, match="psf_size"):
        psf_from_trajectory(linear_trajectory(2.0), 0)


# --- never losing mass ------------------------------------------------------------------------


def test_given_trajectory_outside_the_grid_raises_with_sizes():
    # Centre of mass 1.00000005 + 1j: the second sample lands at column 2.00000005 > 2.
    with pytest.raises(TrajectoryOutsideGrid, match="3x3"):
        psf_from_trajectory(np.array([0j, 2.0000001 + 2j]), 3, 1.0)
    with pytest.raises(TrajectoryOutsideGrid, match="16x16") as info:
        psf_from_trajectory(linear_trajectory(40.0, angle=0.3), 16, 1.0)
    assert "(8, 8)" in str(info.value)
    # It is a ValueError, as documented for a given trajectory that does not fit.
    assert isinstance(info.value, ValueError)
    # Even grid: 4 px wide, centre 2: a segment of 3 px (samples at 0.5 .. 3.5) does not fit.
    with pytest.raises(TrajectoryOutsideGrid, match="4x4"):
        psf_from_trajectory(np.array([0j, 3 + 0j]), 4, 1.0)


def test_only_the_exposed_part_must_fit():
    # 40 px long in a 16 px grid: T = 1 does not fit, T = 0.25 (10 px) does, and sums to T.
    traj = linear_trajectory(40.0, angle=1.0)
    with pytest.raises(TrajectoryOutsideGrid):
        psf_from_trajectory(traj, 16, 1.0)
    kernel = psf_from_trajectory(traj, 16, 0.25)
    assert kernel.sum() == pytest.approx(0.25, rel=1e-12)


def test_random_psf_counts_redraws_and_returns_the_accepted_trajectory():
    seed, psf_size, length = 0, 8, 10.0
    psf = random_psf(np.random.default_rng(seed), psf_size, length=length)
    assert isinstance(psf, RandomPSF)
    assert psf.redraws == 1
    assert psf.kernel.sum() == pytest.approx(1.0, rel=1e-12)
    assert psf.kernel.min() >= 0
    # Replay the stream: the first trajectory leaves the grid, the second one is returned.
    rng = np.random.default_rng(seed)
    first = random_trajectory(rng, length)
    with pytest.raises(TrajectoryOutsideGrid):
        psf_from_trajectory(first, psf_size)
    second = random_trajectory(rng, length)
    np.testing.assert_array_equal(psf.trajectory.positions, second.positions)
    np.testing.assert_array_equal(psf.kernel, psf_from_trajectory(second, psf_size))
    # Redrawn parameters are those of the accepted draw.
    assert psf.trajectory.anxiety == second.anxiety != first.anxiety


def test_random_psf_with_redraws_sums_to_exposure():
    # Seed 6 needs three redraws for a 20 px path whose first half must fit 8 x 8.
    psf = random_psf(np.random.default_rng(6), 8, 0.5, length=20.0)
    assert psf.redraws == 3
    assert psf.kernel.sum() == pytest.approx(0.5, rel=1e-12)
    row, col = _centre_of_mass(psf.kernel)
    assert abs(row - 4) <= 1e-9 and abs(col - 4) <= 1e-9


def test_random_psf_sequence_of_exposures():
    exposures = [1.0, 0.5, 1 / 3, 0.125]
    psf = random_psf(np.random.default_rng(3), 16, exposures, alignment="common-origin")
    assert psf.kernel.shape == (4, 16, 16)
    for kernel, exposure in zip(psf.kernel, exposures, strict=True):
        assert kernel.sum() == pytest.approx(exposure, rel=1e-12)
        np.testing.assert_array_equal(
            kernel, psf_from_trajectory(psf.trajectory, 16, exposure, alignment="common-origin")
        )


def test_random_psf_defaults_and_given_parameters():
    psf = random_psf(np.random.default_rng(5), 32)
    assert psf.trajectory.length == 16.0  # psf_size / 2
    assert psf.kernel.shape == (32, 32)
    given = random_psf(
        np.random.default_rng(5), 32, anxiety=0.004, centripetal=0.1, gaussian=2.0,
        freq_big_shakes=0.05, angle=0.5, length=9.0, num_samples=700,
    )  # fmt: skip
    t = given.trajectory
    assert (t.anxiety, t.centripetal, t.gaussian, t.freq_big_shakes, t.angle) == (
        0.004,
        0.1,
        2.0,
        0.05,
        0.5,
    )
    assert (t.length, t.num_samples) == (9.0, 700)


def test_random_psf_impossible_length_raises():
    # A straight 100 px segment cannot fit an 8 x 8 grid (diagonal 7 sqrt 2 < 10 px).
    with pytest.raises(TrajectoryOutsideGrid, match="8x8") as info:
        random_psf(np.random.default_rng(0), 8, length=100.0, anxiety=0.0)
    assert "100" in str(info.value)


# --- disk kernels -----------------------------------------------------------------------------


@pytest.mark.parametrize(("radius", "psf_size"), [(0.7, 5), (2.0, 7), (3.3, 9), (4.5, 9)])
def test_disk_kernel_sums_to_one_and_is_symmetric(radius, psf_size):
    k = disk_kernel(radius, psf_size)
    assert k.sum() == pytest.approx(1.0, rel=1e-12)
    assert k.min() >= 0
    np.testing.assert_array_equal(k, k.T)
    np.testing.assert_array_equal(k, k[::-1, :])
    np.testing.assert_array_equal(k, k[:, ::-1])
    c = psf_size // 2
    assert k[c, c] == k.max()
    # Anti-aliasing: pixels fully inside are equal to the maximum, fully outside are 0, and
    # the boundary pixels are in between. A pixel (half-diagonal sqrt(2)/2) is fully inside
    # when its centre is closer than radius - sqrt(2)/2, fully outside beyond radius + sqrt(2)/2.
    rows, cols = np.indices(k.shape)
    dist = np.hypot(rows - c, cols - c)
    assert np.all(k[dist < radius - math.sqrt(2) / 2] == k.max())
    assert np.all(k[dist > radius + math.sqrt(2) / 2] == 0)
    # The total covered area estimate approximates pi r^2 (super-sampling 16 x 16 per pixel:
    # boundary error at most the perimeter times one sub-sample width, 2 pi r / 16).
    area = k.sum() / k.max()
    assert abs(area - math.pi * radius**2) <= 2 * math.pi * radius / 16


def test_disk_kernel_even_grid_is_centred_on_the_centre_pixel():
    k = disk_kernel(1.5, 4)  # centre pixel (2, 2); room 1.5 px on the short side
    assert np.all(k[0, :] == 0) and np.all(k[:, 0] == 0)
    inner = k[1:, 1:]
    np.testing.assert_array_equal(inner, inner[::-1, ::-1])
    np.testing.assert_array_equal(inner, inner.T)


def test_disk_kernel_radius_zero_is_identity():
    k = disk_kernel(0.0, 5)
    expected = np.zeros((5, 5))
    expected[2, 2] = 1.0
    np.testing.assert_array_equal(k, expected)


@pytest.mark.parametrize(("radius", "psf_size"), [(4.6, 9), (2.0, 4), (-0.1, 9), (math.nan, 9)])
def test_disk_kernel_radius_out_of_range_raises(radius, psf_size):
    with pytest.raises(ValueError, match="radius"):
        disk_kernel(radius, psf_size)


# --- kernels from files -----------------------------------------------------------------------


def test_load_kernel_npy_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.random((5, 7))
    path = tmp_path / "k.npy"
    np.save(path, array)
    loaded = load_kernel(path)
    np.testing.assert_allclose(loaded, array / array.sum(), rtol=1e-15, atol=0)
    assert loaded.sum() == pytest.approx(1.0, rel=1e-12)
    embedded = load_kernel(str(path), psf_size=9)
    assert embedded.shape == (9, 9)
    np.testing.assert_array_equal(embedded[2:7, 1:8], loaded)
    assert embedded.sum() == pytest.approx(1.0, rel=1e-12)


def test_load_kernel_png_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, size=(6, 5), dtype=np.uint8)
    grey[0, 0] = 255
    iio.imwrite(tmp_path / "grey.png", grey)
    np.testing.assert_allclose(
        load_kernel(tmp_path / "grey.png"), grey / grey.sum(), rtol=1e-14, atol=0
    )
    # 16-bit PNG keeps its precision.
    deep = rng.integers(0, 65536, size=(4, 4), dtype=np.uint16)
    iio.imwrite(tmp_path / "deep.png", deep)
    np.testing.assert_allclose(
        load_kernel(tmp_path / "deep.png"), deep / deep.sum(), rtol=1e-14, atol=0
    )
    # RGB(A): the colour channels are averaged, alpha dropped.
    rgba = rng.integers(0, 256, size=(3, 3, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "rgba.png", rgba)
    mean = rgba[..., :3].astype(np.float64).mean(axis=2)
    np.testing.assert_allclose(
        load_kernel(tmp_path / "rgba.png"), mean / mean.sum(), rtol=1e-14, atol=0
    )


def test_load_kernel_errors_name_the_file(tmp_path):
    negative = tmp_path / "negative.npy"
    np.save(negative, np.array([[0.5, -0.1], [0.2, 0.3]]))
    cube = tmp_path / "cube.npy"
    np.save(cube, np.ones((3, 3, 3)))
    zero = tmp_path / "zero.npy"
    np.save(zero, np.zeros((3, 3)))
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not an array")
    big = tmp_path / "big.npy"
    np.save(big, np.ones((9, 9)))
    missing = tmp_path / "missing.png"
    for path in (negative, cube, zero, garbage, missing):
        with pytest.raises(ValueError, match=re.escape(path.name)):
            load_kernel(path)
    with pytest.raises(ValueError, match=r"big\.npy"):
        load_kernel(big, psf_size=5)


# --- embedding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "psf_size"), [((3, 3), 7), ((4, 4), 7), ((4, 4), 8), ((3, 5), 8), ((6, 6), 6)]
)
def test_embed_kernel_puts_centre_pixel_on_grid_centre(shape, psf_size):
    kernel = np.random.default_rng(2).random(shape)
    grid = embed_kernel(kernel, psf_size)
    h, w = shape
    top, left = psf_size // 2 - h // 2, psf_size // 2 - w // 2
    assert grid[psf_size // 2, psf_size // 2] == kernel[h // 2, w // 2]
    np.testing.assert_array_equal(grid[top : top + h, left : left + w], kernel)
    assert grid.sum() == pytest.approx(kernel.sum(), rel=1e-15)
    # The origin is preserved, so blurring with either kernel gives the same interior crop.
    image = np.random.default_rng(3).random((30, 30))
    box = (10, 10, 8, 9)
    a, _ = blur_crop(image, kernel, box)
    b, _ = blur_crop(image, grid, box)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_embed_kernel_too_large_raises():
    with pytest.raises(ValueError, match="does not fit"):
        embed_kernel(np.ones((5, 3)), 4)
