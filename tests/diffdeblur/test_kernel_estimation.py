"""The blind kernel estimator: its blur and losses against independent references, its output at
any image size, and that training on a small problem recovers a known, asymmetric kernel.

Blurred images are made by :func:`csb_generator.blur_crop` (the generator's own true
convolution, with the real photograph around the crop) wherever the alignment is what is tested.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
import torch
from csb_generator import add_noise, blur_crop, random_psf
from diffdeblur.kernel_estimation import (
    KernelEstimator,
    blur_valid,
    image_statistics,
    kernel_loss,
    reblur_loss,
)
from skimage import data

pytestmark = pytest.mark.usefixtures("single_thread")


def rotated(kernel: torch.Tensor) -> torch.Tensor:
    """(B, K, K) kernels rotated by 180 degrees about their origin pixel (K // 2, K // 2)."""
    flipped = kernel.flip(-2, -1)
    # For even K a plain flip moves the origin from K // 2 to K // 2 - 1; roll it back.
    return flipped if kernel.shape[-1] % 2 else torch.roll(flipped, (1, 1), (-2, -1))


def centre_of_mass(kernel: torch.Tensor) -> torch.Tensor:
    """(B, 2) row and column of the centre of mass of (B, K, K) unit-sum kernels."""
    positions = torch.arange(kernel.shape[-1], dtype=kernel.dtype)
    rows = (kernel.sum(dim=-1) * positions).sum(dim=-1)
    cols = (kernel.sum(dim=-2) * positions).sum(dim=-1)
    return torch.stack([rows, cols], dim=1)


def generated_pair(kernel: np.ndarray, box, photo=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sharp, blurred) as (1, 3, H, W) in [-1, 1], the blurred one made as csb-generate makes a
    noiseless sample: true convolution with the photograph around the crop, then the 1/T gain."""
    photo = data.astronaut() if photo is None else photo
    blurred, padded = blur_crop(photo, kernel, box)
    assert not padded
    blurred = add_noise(blurred, kernel.sum())
    top, left, height, width = box
    sharp = photo[top : top + height, left : left + width] / 255

    def signed(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(2 * image.transpose(2, 0, 1) - 1)[None]

    return signed(sharp), signed(blurred)


# --- blur and losses ---------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "shape"), [(1, (5, 6)), (4, (9, 13)), (7, (20, 17)), (8, (8, 8))])
def test_blur_valid_is_scipys_valid_convolution(size, shape):
    generator = torch.Generator().manual_seed(size)
    sharp = torch.rand(2, 3, *shape, generator=generator, dtype=torch.float64)
    kernel = torch.rand(2, size, size, generator=generator, dtype=torch.float64)
    blurred = blur_valid(sharp, kernel)
    assert blurred.shape == (2, 3, shape[0] - size + 1, shape[1] - size + 1)
    for b in range(2):
        for c in range(3):
            expected = scipy.signal.convolve2d(sharp[b, c].numpy(), kernel[b].numpy(), "valid")
            np.testing.assert_allclose(blurred[b, c].numpy(), expected, rtol=0, atol=1e-12)


def test_blur_valid_refuses_images_smaller_than_the_kernel():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        blur_valid(torch.zeros(1, 1, 6, 9), torch.ones(1, 7, 7))
    with pytest.raises(ValueError, match="kernel must have shape"):
        blur_valid(torch.zeros(2, 1, 9, 9), torch.ones(1, 7, 7))


def test_kernel_loss_compares_unit_sum_kernels():
    delta = torch.zeros(1, 5, 5, dtype=torch.float64)
    delta[0, 2, 2] = 1
    moved = torch.roll(delta, 1, -1)
    assert float(kernel_loss(delta, 0.25 * delta)) == 0  # a stored kernel sums to T
    assert float(kernel_loss(delta, moved)) == pytest.approx(2.0)  # 1^2 + 1^2, summed
    spread = torch.full((1, 5, 5), 1 / 25, dtype=torch.float64)
    assert float(kernel_loss(spread, torch.zeros_like(spread).add(1))) == pytest.approx(0)
    batch = torch.cat([delta, delta])
    assert float(kernel_loss(batch, torch.cat([delta, moved]))) == pytest.approx(1.0)  # mean


@pytest.mark.parametrize("size", [7, 16])
def test_reblur_loss_is_zero_for_the_true_kernel_and_positive_for_wrong_ones(size):
    # The generator's kernel (T = 0.5) blurs a real photograph; the stored 1/T gain makes the
    # unit-sum kernel match it exactly.
    kernel = random_psf(np.random.default_rng(size), size, 0.5, length=size / 2).kernel
    sharp, blurred = generated_pair(kernel, (150, 200, 40, 48))
    true = torch.from_numpy(kernel)[None]
    assert float(reblur_loss(true, sharp, blurred)) < 1e-6
    assert float(reblur_loss(0.5 * true, sharp, blurred)) < 1e-6  # normalised inside
    assert not torch.allclose(true, rotated(true))
    # Measured: 2e-4 (K = 7) and 8e-4 (K = 16) for the rotated kernel, 0.03 for a one-pixel
    # shift, 0.06 to 0.14 for a box; the true kernel: 3e-16.
    for wrong in (rotated(true), torch.roll(true, 1, -1), torch.ones_like(true)):
        assert float(reblur_loss(wrong, sharp, blurred)) > 1e-4


def test_the_statistics_are_correlation_maps_and_ignore_contrast_and_brightness():
    _, blurred = generated_pair(np.full((3, 3), 1 / 9), (60, 60, 30, 41))
    maps = image_statistics(blurred, 8)
    assert maps.shape == (1, KernelEstimator.statistics, 15, 15)
    # An autocorrelation is 1 at lag 0 and symmetric about it.
    assert torch.allclose(maps[0, :2, 7, 7], torch.ones(2, dtype=maps.dtype))
    torch.testing.assert_close(maps[0, :2], maps[0, :2].flip(-2, -1))
    torch.testing.assert_close(image_statistics(0.3 * blurred - 0.2, 8), maps)


# --- the estimator ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "shape"),
    [(16, (16, 16)), (16, (40, 56)), (16, (97, 64)), (7, (7, 30)), (8, (150, 200))],
)
def test_the_estimate_is_a_centred_unit_sum_kernel_at_any_image_size(size, shape):
    estimator = KernelEstimator(size, channels=8, generator=torch.Generator().manual_seed(0))
    blurred = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        kernel = estimator(blurred)
    assert kernel.shape == (2, size, size)
    assert bool((kernel >= 0).all())
    torch.testing.assert_close(kernel.sum(dim=(1, 2)), torch.ones(2))
    # Centred on pixel (K // 2, K // 2); an untrained network's estimate is spread over the whole
    # lag grid, and the window cuts it (exact centring: the training test below).
    torch.testing.assert_close(
        centre_of_mass(kernel), torch.full((2, 2), float(size // 2)), rtol=0, atol=1.0
    )


def test_an_estimate_with_no_mass_in_its_window_is_the_identity_kernel():
    """Two far-apart peaks about an empty middle (an undertrained network can output them, and
    float32's softmax leaves exact zeros between): the window about their centre of mass holds
    nothing, and the estimate is the identity kernel rather than an all-zero one that the
    Wiener filter refuses. A peak that fits keeps its window."""
    estimator = KernelEstimator(3, channels=4, generator=torch.Generator().manual_seed(0))
    logits = torch.full((2, 5, 5), -1e4)
    logits[0, 0, 0] = logits[0, 4, 4] = 0.0  # centre of mass (2, 2), nothing near it
    logits[1, 1, 2] = logits[1, 1, 3] = 0.0  # centre of mass (1, 2.5)
    estimator.logits = lambda blurred: logits
    kernel = estimator(torch.zeros(2, 3, 8, 8))
    identity = torch.zeros(3, 3)
    identity[1, 1] = 1
    torch.testing.assert_close(kernel[0], identity, rtol=0, atol=0)
    # Moved by 1.5 pixels to the centre: half a pixel with bilinear weights.
    expected = torch.zeros(3, 3)
    expected[1] = torch.tensor([0.25, 0.5, 0.25])
    torch.testing.assert_close(kernel[1], expected, rtol=0, atol=1e-6)


def test_images_smaller_than_the_kernel_give_kernels_and_bad_sizes_are_refused():
    estimator = KernelEstimator(16, channels=4, generator=torch.Generator().manual_seed(0))
    # The thesis's PSF-64 protocol restores 64 px crops: smaller than the kernel, still estimated.
    blurred = torch.rand(1, 3, 9, 40, generator=torch.Generator().manual_seed(1))
    kernel = estimator(blurred).detach()
    assert kernel.shape == (1, 16, 16) and bool(torch.isfinite(kernel).all())
    assert float(kernel.sum()) == pytest.approx(1, abs=1e-5)
    # Its derivative maps have 8 rows: vertical lags of 8 or more (rows 0-7 and 23-30 of the
    # 31-lag grid) have no pixel pairs and read 0, not NaN; the lags it shows carry evidence.
    statistics = image_statistics(blurred, 16)
    assert statistics.shape == (1, 6, 31, 31) and bool(torch.isfinite(statistics).all())
    assert bool((statistics[:, :, :8] == 0).all() and (statistics[:, :, 23:] == 0).all())
    assert bool((statistics[:, :, 8:23].abs().amax(dim=(-2, -1)) > 0).all())
    with pytest.raises(ValueError, match="too small"):
        estimator(torch.zeros(1, 3, 1, 40))
    with pytest.raises(ValueError, match="blurred"):
        estimator(torch.zeros(3, 40, 40))
    with pytest.raises(ValueError, match="kernel_size"):
        KernelEstimator(1)


def test_a_generator_makes_the_network_reproducible_and_leaves_the_global_state_alone():
    state = torch.random.get_rng_state()
    first = KernelEstimator(8, channels=4, generator=torch.Generator().manual_seed(3))
    again = KernelEstimator(8, channels=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


#: An L-shaped stroke, 7 x 7, origin at (3, 3): the camera lingered at the corner (weight 3),
#: so the kernel is far from its own 180-degree rotation.
L_STROKE = np.zeros((7, 7))
L_STROKE[1:5, 2] = 1.0
L_STROKE[4, 2:6] = 1.0
L_STROKE[4, 2] = 3.0


@pytest.fixture(scope="module")
def stroke_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sharp, blurred, true kernel): 8 crops of 48 px of a real photograph, all blurred by the
    L-shaped stroke moved (sub-pixel) so its centre of mass sits on the origin pixel, as the
    generator centres its kernels."""
    rows, cols = np.indices(L_STROKE.shape)
    mass = L_STROKE.sum()
    shift = (3 - (rows * L_STROKE).sum() / mass, 3 - (cols * L_STROKE).sum() / mass)
    stroke = scipy.ndimage.shift(L_STROKE, shift, order=1, mode="constant")
    stroke /= stroke.sum()
    rng = np.random.default_rng(0)
    photo = data.camera()[:, :, None].repeat(3, axis=2)
    pairs = [
        generated_pair(stroke, (top, left, 48, 48), photo)
        for top, left in rng.integers(20, 440, size=(8, 2))
    ]
    sharp = torch.cat([s for s, _ in pairs]).float()
    blurred = torch.cat([b for _, b in pairs]).float()
    return sharp, blurred, torch.from_numpy(stroke).float()[None].expand(8, -1, -1)


def train_on(problem, use_kernel_loss: bool, steps: int) -> tuple[float, float, torch.Tensor]:
    """Train a small estimator on the problem; returns its first and last kernel loss and its
    final estimates."""
    sharp, blurred, target = problem
    estimator = KernelEstimator(7, channels=8, generator=torch.Generator().manual_seed(0))
    optimiser = torch.optim.Adam(estimator.parameters(), lr=3e-3)
    with torch.no_grad():
        start = float(kernel_loss(estimator(blurred), target))
    for _ in range(steps):
        estimate = estimator(blurred)
        loss = reblur_loss(estimate, sharp, blurred)
        if use_kernel_loss:
            loss = loss + kernel_loss(estimate, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        estimate = estimator(blurred)
    return start, float(kernel_loss(estimate, target)), estimate


def test_training_recovers_a_known_asymmetric_kernel(stroke_problem):
    # Measured: kernel loss 0.067 -> 1.7e-4 after 200 steps; the rotated kernel scores 0.10.
    start, error, estimate = train_on(stroke_problem, use_kernel_loss=True, steps=200)
    target = stroke_problem[2]
    error_rotated = float(kernel_loss(estimate, rotated(target)))
    assert error < 0.003 < 0.1 * start
    assert error < 0.05 * error_rotated
    # Centred: a shift by one pixel would move the centre of mass by 1. The residual offset
    # depends on the CPU's rounding (at most 0.0103 px measured, on an Intel Xeon).
    torch.testing.assert_close(centre_of_mass(estimate), torch.full((8, 2), 3.0), rtol=0, atol=0.05)


def test_the_reblur_loss_alone_recovers_the_kernel_the_right_way_round(stroke_problem):
    # With no stored kernel to copy, only a re-blur aligned with the generator's convolution
    # (origin, orientation, unit sum against the 1/T gain) can lead to the true kernel.
    # Measured: kernel loss 0.067 -> 6e-4 after 120 steps; the rotated kernel scores 0.10.
    start, error, estimate = train_on(stroke_problem, use_kernel_loss=False, steps=120)
    error_rotated = float(kernel_loss(estimate, rotated(stroke_problem[2])))
    assert error < 0.01 < 0.2 * start
    assert error < 0.1 * error_rotated
