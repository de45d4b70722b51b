"""Noise model: moments, clipping, exact formula, and argument checks.

The model: docs/model.md#4-noise-thesis-convention.

Model, with s = sigma / 255, p = lam / 255 and b = T * x0 on a flat image:

    y = clip((Poisson(p b) / p + N(0, s^2)) / T, 0, 1)

Before clipping E[y] = b / T = x0 and Var[y] = (b / p + s^2) / T^2. The fourth cumulant of y is
that of the scaled Poisson term only, kappa4 = (p b) / p^4 / T^4 = b / (p^3 T^4) (a Poisson
variable's cumulants all equal its mean; a Gaussian has kappa4 = 0).

Tolerances are 5 standard errors of the estimator on n = 512 * 512 pixels:
  * sample mean: SE = sqrt(Var / n);
  * sample variance: SE = sqrt((mu4 - Var^2) / n) = sqrt((kappa4 + 2 Var^2) / n).
The seeds are fixed, so each test is deterministic; 5 SE means a correct implementation would
fail for a fresh seed with probability ~6e-7 per check, while a model error of a few percent in
the variance (SE ~ 0.3 %) is caught.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from csb_generator import add_noise, blur, degrade, linear_trajectory, psf_from_trajectory
from scipy.stats import norm

N_SIDE = 512
N_PIX = N_SIDE * N_SIDE


def _model_moments(x0: float, lam: float, sigma: float, exposure: float):
    b = exposure * x0
    s2 = (sigma / 255.0) ** 2
    shot = 0.0 if math.isinf(lam) else b / (lam / 255.0)
    var = (shot + s2) / exposure**2
    kappa4 = 0.0 if math.isinf(lam) else b / ((lam / 255.0) ** 3 * exposure**4)
    return x0, var, kappa4


# (lam, sigma, T, x0): the thesis pairs at full and short exposures, the T-sweep's sigma = 0 with
# lam = 765000, and read noise only.
CASES = [
    (768000, 1.0, 1.0, 0.3),
    (192000, 2.0, 1.0, 0.3),
    (48000, 4.0, 1.0, 0.5),
    (768000, 1.0, 1 / 8, 0.5),
    (192000, 2.0, 1 / 4, 0.5),
    (192000, 2.0, 1 / 8, 0.5),
    (48000, 4.0, 1 / 2, 0.5),
    (765000, 0.0, 1 / 8, 0.5),
    (765000, 0.0, 1 / 32, 0.5),
    (math.inf, 3.0, 1 / 2, 0.4),
]


def _check_moments(y: np.ndarray, x0: float, lam: float, sigma: float, exposure: float):
    mean, var, kappa4 = _model_moments(x0, lam, sigma, exposure)
    # Clipping is negligible: the nearest bound is >= 5 model standard deviations away, so (in
    # the Gaussian approximation, excellent at >= 45 photons) at most 2 Phi(-5) ~ 6e-7 of the
    # pixels are clipped, each by a fraction of a standard deviation: a bias far below one SE.
    z = min(x0, 1 - x0) / math.sqrt(var)
    assert z >= 5, "test case chosen badly: clipping would not be negligible"
    assert norm.sf(z) * N_PIX < 0.2
    n = y.size
    se_mean = math.sqrt(var / n)
    se_var = math.sqrt((kappa4 + 2 * var**2) / n)
    assert abs(y.mean() - mean) <= 5 * se_mean
    assert abs(y.var(ddof=1) - var) <= 5 * se_var


@pytest.mark.parametrize(("lam", "sigma", "exposure", "x0"), CASES)
def test_degrade_moments_on_a_flat_image(lam, sigma, exposure, x0):
    kernel = psf_from_trajectory(linear_trajectory(6.0, angle=0.7), 9, exposure)
    image = np.full((N_SIDE, N_SIDE), x0)
    seed = int(1000 * exposure) + int(sigma) * 7 + int(min(lam, 1e6) // 1000)
    y = degrade(image, kernel, exposure, lam, sigma, rng=np.random.default_rng(seed))
    assert y.shape == image.shape
    _check_moments(y, x0, lam, sigma, exposure)


@pytest.mark.parametrize(("lam", "sigma", "exposure", "x0"), CASES[::3])
def test_add_noise_moments(lam, sigma, exposure, x0):
    blurred = np.full((N_SIDE, N_SIDE), exposure * x0)
    y = add_noise(blurred, exposure, lam, sigma, rng=np.random.default_rng(17))
    _check_moments(y, x0, lam, sigma, exposure)


def test_variance_checks_have_power():
    # The same checks reject a model whose variance misses the 1/T gain on the read noise
    # (Var = b / (p T^2) + s^2): at (192000, 2, T = 1/4) that is 2.8e-3 instead of 3.6e-3.
    lam, sigma, exposure, x0 = 192000, 2.0, 0.25, 0.5
    y = add_noise(np.full((N_SIDE, N_SIDE), exposure * x0), exposure, lam, sigma,
                  rng=np.random.default_rng(3))  # fmt: skip
    wrong_var = exposure * x0 / (lam / 255) / exposure**2 + (sigma / 255) ** 2
    _, var, kappa4 = _model_moments(x0, lam, sigma, exposure)
    se_var = math.sqrt((kappa4 + 2 * var**2) / N_PIX)
    assert abs(y.var(ddof=1) - wrong_var) > 5 * se_var
    assert abs(y.var(ddof=1) - var) <= 5 * se_var


def test_add_noise_is_exactly_the_formula():
    # Poisson draw first, then the Gaussian one, from the given generator.
    rng = np.random.default_rng(123)
    exposure, lam, sigma = 0.25, 48000.0, 4.0
    blurred = rng.random((40, 30, 3)) * exposure
    y = add_noise(blurred, exposure, lam, sigma, rng=np.random.default_rng(9))
    replay = np.random.default_rng(9)
    p = lam / 255
    u = replay.poisson(p * np.clip(blurred, 0, 1)) / p
    n = replay.normal(0.0, sigma / 255, size=blurred.shape)
    np.testing.assert_array_equal(y, np.clip((u + n) / exposure, 0, 1))
    assert y.dtype == np.float64


@pytest.mark.parametrize(("lam", "sigma"), [(math.inf, 4.0), (48000.0, 4.0), (math.inf, 1.0)])
def test_zero_image_half_zeros_and_half_normal_mean(lam, sigma):
    # x0 = 0: the shot noise is Poisson(0) = 0, so y = clip(n / T, 0, 1) with n / T ~ N(0, s^2),
    # s = sigma / 255 / T. Exactly half of the pixels are 0 in expectation: the count of zeros is
    # Binomial(n, 1/2), SE = sqrt(n / 4). The mean is E[max(0, s Z)] = s / sqrt(2 pi), with
    # variance s^2 (1/2 - 1/(2 pi)); the upper clip at 1 is >= 16 s away (s <= 0.063), so its
    # effect is nil. Tolerances: 5 SE.
    exposure = 0.25
    s = sigma / 255 / exposure
    image = np.zeros((N_SIDE, N_SIDE))
    kernel = psf_from_trajectory(linear_trajectory(4.0), 7, exposure)
    y = degrade(image, kernel, exposure, lam, sigma, rng=np.random.default_rng(int(sigma)))
    assert y.min() == 0.0 and y.max() <= 1.0
    zeros = int(np.count_nonzero(y == 0.0))
    assert abs(zeros - N_PIX / 2) <= 5 * math.sqrt(N_PIX / 4)
    se_mean = s * math.sqrt((0.5 - 1 / (2 * math.pi)) / N_PIX)
    assert abs(y.mean() - s / math.sqrt(2 * math.pi)) <= 5 * se_mean


def test_output_is_always_clipped_to_unit_range():
    rng = np.random.default_rng(4)
    image = rng.random((64, 64, 3))
    exposure = 1 / 8
    kernel = psf_from_trajectory(linear_trajectory(5.0, angle=2.0), 9, exposure)
    y = degrade(image, kernel, exposure, lam=200.0, sigma=40.0, rng=rng)
    assert y.min() == 0.0 and y.max() == 1.0  # both bounds are reached ...
    assert np.all((y >= 0) & (y <= 1))  # ... and never crossed
    assert 0 < np.mean((y > 0) & (y < 1))  # and not everything is saturated


def test_noiseless_is_gain_and_clip_exactly():
    rng = np.random.default_rng(5)
    exposure = 0.3
    blurred = rng.random((20, 21)) * exposure * 1.2  # some values above T, to be clipped at 1
    expected = np.clip(blurred / exposure, 0, 1)
    np.testing.assert_array_equal(add_noise(blurred, exposure), expected)
    np.testing.assert_array_equal(add_noise(blurred, exposure, rng=rng), expected)
    assert np.any(expected == 1.0)
    image = rng.random((30, 30, 3))
    kernel = psf_from_trajectory(linear_trajectory(3.0, angle=1.0), 7, exposure)
    np.testing.assert_array_equal(
        degrade(image, kernel, exposure), np.clip(blur(image, kernel) / exposure, 0, 1)
    )


def test_noise_is_reproducible_and_depends_on_the_generator():
    blurred = np.full((32, 32), 0.25)
    a = add_noise(blurred, 0.5, 48000, 4, rng=np.random.default_rng(1))
    b = add_noise(blurred, 0.5, 48000, 4, rng=np.random.default_rng(1))
    c = add_noise(blurred, 0.5, 48000, 4, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("exposure", [0.0, -0.1, 1.01, math.nan, math.inf])
def test_exposure_outside_unit_interval_raises(exposure):
    with pytest.raises(ValueError, match="exposure"):
        add_noise(np.zeros((4, 4)), exposure)
    with pytest.raises(ValueError, match="exposure"):
        degrade(np.zeros((4, 4)), np.ones((1, 1)), exposure)


@pytest.mark.parametrize(("lam", "sigma", "match"), [
    (0.0, 1.0, "lam"), (-5.0, 1.0, "lam"), (math.nan, 1.0, "lam"),
    (100.0, -1.0, "sigma"), (100.0, math.nan, "sigma"), (100.0, math.inf, "sigma"),
])  # fmt: skip
def test_invalid_noise_parameters_raise(lam, sigma, match):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=match):
        add_noise(np.zeros((4, 4)), 1.0, lam, sigma, rng=rng)
    with pytest.raises(ValueError, match=match):
        degrade(np.zeros((4, 4)), np.ones((1, 1)), 1.0, lam, sigma, rng=rng)


def test_kernel_must_sum_to_exposure():
    image = np.full((16, 16), 0.5)
    kernel = psf_from_trajectory(linear_trajectory(3.0), 7, 1.0)  # sums to 1
    with pytest.raises(ValueError, match="sums to"):
        degrade(image, kernel, exposure=0.5)
    with pytest.raises(ValueError, match="sums to"):
        degrade(image, kernel * (1 + 1e-5), exposure=1.0)
    # Within the documented 1e-6 relative slack it is accepted.
    degrade(image, kernel * (1 + 1e-7), exposure=1.0)


@pytest.mark.parametrize(("lam", "sigma"), [(1000.0, 0.0), (math.inf, 2.0), (1000.0, 2.0)])
def test_noise_without_generator_raises(lam, sigma):
    with pytest.raises(ValueError, match="Generator"):
        add_noise(np.full((4, 4), 0.5), 1.0, lam, sigma)
    with pytest.raises(ValueError, match="Generator"):
        degrade(np.full((4, 4), 0.5), np.ones((1, 1)), 1.0, lam, sigma)
