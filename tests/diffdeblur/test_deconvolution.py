"""The differentiable Wiener filter against the NumPy baseline, its gradients, the learned weight.

The baseline :func:`diffdeblur.wiener.wiener_deconvolve` is scikit-image's filter on an image
extended by NumPy; the torch version must give the same restoration (float64, 1e-5) for odd and
even kernels, every border, and image sizes whose padded FFT length is stretched unevenly.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.fft
import torch
from csb_generator import add_noise, blur_crop, random_psf
from diffdeblur.deconvolution import (
    WienerDeconvolution,
    laplacian_power,
    transfer_function,
    wiener_deconvolve_torch,
)
from diffdeblur.wiener import BORDER_MODES, wiener_deconvolve
from skimage import data
from skimage.restoration import uft

pytestmark = pytest.mark.usefixtures("single_thread")

KERNEL_SIZES = (5, 6, 16)
#: (H, W): square, non-square, and sizes whose padded length next_fast_len stretches unevenly
#: (10 + 2 * 16 = 42 -> 45, 21 + 2 * 6 = 33 -> 36) or not at all (64 + 2 * 16 = 96).
IMAGE_SIZES = ((33, 40), (64, 64), (21, 50), (10, 13))


def as_torch(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) NumPy -> (1, C, H, W) float64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]


def as_numpy(image: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) tensor -> (H, W, C) NumPy."""
    return image[0].detach().numpy().transpose(1, 2, 0)


def random_case(seed: int, size: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A random image in [0, 1] and a random non-negative kernel summing to 0.6 (an exposure)."""
    rng = np.random.default_rng(seed)
    kernel = rng.random((size, size)) ** 4
    return rng.random((*shape, 3)), 0.6 * kernel / kernel.sum()


def test_the_unevenly_padded_sizes_really_are_uneven():
    stretched = [
        scipy.fft.next_fast_len(n + 2 * k, real=True) - (n + 2 * k)
        for n in (10, 13, 21, 33, 40, 50)
        for k in KERNEL_SIZES
    ]
    assert max(stretched) >= 3 and 0 in stretched


@pytest.mark.parametrize("border", BORDER_MODES)
@pytest.mark.parametrize("size", KERNEL_SIZES)
def test_matches_the_numpy_baseline(border, size):
    for number, shape in enumerate(IMAGE_SIZES):
        if border == "none" and size > min(shape):
            continue
        image, kernel = random_case(100 * size + number, size, shape)
        expected = wiener_deconvolve(image, kernel, 1e-3, border=border)
        restored = wiener_deconvolve_torch(
            as_torch(image), torch.from_numpy(kernel), 1e-3, border=border, clip=True
        )
        assert restored.dtype == torch.float64 and restored.shape == (1, 3, *shape)
        np.testing.assert_allclose(as_numpy(restored), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("pad", [1, 3, 40])
def test_matches_the_baseline_with_an_explicit_pad(pad):
    image, kernel = random_case(7, 6, (21, 50))
    expected = wiener_deconvolve(image, kernel, 3e-4, pad=pad)
    restored = wiener_deconvolve_torch(
        as_torch(image), torch.from_numpy(kernel), 3e-4, pad=pad, clip=True
    )
    np.testing.assert_allclose(as_numpy(restored), expected, rtol=0, atol=1e-5)


def test_restores_a_generated_sample_as_the_baseline_does():
    # A real photograph blurred by the generator itself (true convolution, exposure 1/2 and its
    # 1/T gain): the unclipped result is the baseline's before its clipping.
    kernel = random_psf(np.random.default_rng(2), 16, 0.5, length=6.0).kernel
    blurred = add_noise(blur_crop(data.astronaut(), kernel, (100, 120, 48, 64))[0], 0.5)
    restored = wiener_deconvolve_torch(as_torch(blurred), torch.from_numpy(kernel), 2e-4)
    expected = wiener_deconvolve(blurred, kernel, 2e-4)
    np.testing.assert_allclose(np.clip(as_numpy(restored), 0, 1), expected, rtol=0, atol=1e-5)
    assert as_numpy(restored).min() < 0 or as_numpy(restored).max() > 1  # clip=False: unclipped


def test_a_batch_with_one_kernel_and_balance_per_image():
    cases = [random_case(seed, size, (24, 30)) for seed, size in ((1, 5), (2, 5), (3, 5))]
    images = torch.cat([as_torch(image) for image, _ in cases])
    kernels = torch.stack([torch.from_numpy(kernel) for _, kernel in cases])
    balances = torch.tensor([1e-4, 1e-3, 1e-2], dtype=torch.float64)
    restored = wiener_deconvolve_torch(images, kernels, balances, clip=True)
    for number, (image, kernel) in enumerate(cases):
        expected = wiener_deconvolve(image, kernel, float(balances[number]))
        np.testing.assert_allclose(as_numpy(restored[number : number + 1]), expected, atol=1e-5)
    # One (K, K) kernel and one number serve the whole batch.
    shared = wiener_deconvolve_torch(images, kernels[0], 1e-3)
    for number in range(3):
        alone = wiener_deconvolve_torch(images[number : number + 1], kernels[0][None], 1e-3)
        torch.testing.assert_close(shared[number : number + 1], alone, rtol=0, atol=1e-12)


def test_the_transfer_functions_are_scikit_images():
    rng = np.random.default_rng(5)
    for size, shape in itertools.product((3, 4, 7), ((12, 12), (13, 18))):
        kernel = rng.random((size, size))
        transfer = transfer_function(torch.from_numpy(kernel), shape).numpy()
        np.testing.assert_allclose(transfer, uft.ir2tf(kernel, shape), atol=1e-12)
        expected, _ = uft.laplacian(2, shape)
        np.testing.assert_allclose(
            laplacian_power(shape).numpy(), np.abs(expected) ** 2, atol=1e-12
        )


def test_images_in_minus_one_to_one_restore_by_the_affine_map():
    # The filter is linear and passes a constant unchanged (H(0) = 1, D(0) = 0, and a constant's
    # circular blur is itself), so restoring 2y - 1 is restoring y, mapped the same way.
    image, kernel = random_case(9, 6, (30, 26))
    unit = wiener_deconvolve_torch(as_torch(image), torch.from_numpy(kernel), 1e-3)
    signed = wiener_deconvolve_torch(as_torch(2 * image - 1), torch.from_numpy(kernel), 1e-3)
    torch.testing.assert_close(signed, 2 * unit - 1, rtol=0, atol=1e-12)


def test_float32_is_close_to_float64():
    image, kernel = random_case(11, 16, (40, 40))
    exact = wiener_deconvolve_torch(as_torch(image), torch.from_numpy(kernel), 2e-4)
    single = wiener_deconvolve_torch(
        as_torch(image).float(), torch.from_numpy(kernel).float(), 2e-4
    )
    assert single.dtype == torch.float32
    assert float((single.double() - exact).abs().max()) < 1e-3


@pytest.mark.parametrize("border", ["symmetric-taper", "reflect", "none"])
def test_gradients_flow_to_the_image_the_kernel_and_the_balance(border):
    generator = torch.Generator().manual_seed(0)
    blurred = torch.rand(2, 1, 6, 7, generator=generator, dtype=torch.float64)
    # Away from zero, so the finite differences never leave the non-negative kernels.
    kernel = 0.2 + torch.rand(2, 3, 3, generator=generator, dtype=torch.float64)
    balance = torch.tensor([0.05, 0.2], dtype=torch.float64)
    inputs = tuple(t.clone().requires_grad_(True) for t in (blurred, kernel, balance))
    assert torch.autograd.gradcheck(
        lambda b, k, w: wiener_deconvolve_torch(b, k, w, border=border), inputs
    )


def test_the_learned_module_without_a_noise_level_is_the_function_at_its_balance():
    image, kernel = random_case(13, 6, (20, 24))
    wiener = WienerDeconvolution(balance=3e-4).double()
    restored = wiener(as_torch(image), torch.from_numpy(kernel))
    balance = wiener.balance().detach()
    assert float(balance) == pytest.approx(3e-4)
    expected = wiener_deconvolve_torch(as_torch(image), torch.from_numpy(kernel), balance)
    torch.testing.assert_close(restored, expected, rtol=0, atol=1e-12)


def test_the_balance_grows_with_the_noise_level_and_learns():
    wiener = WienerDeconvolution()
    noise = torch.tensor([0.0, 0.001, 0.005, 0.014, 0.05])
    balance = wiener.balance(noise).detach()
    assert balance.shape == noise.shape
    assert torch.all(balance[1:] > balance[:-1])
    assert float(balance[0]) == pytest.approx(2e-4)
    # The default gain gives the baseline's tuned weight at the noise of its 1-grey-level set.
    assert float(balance[3]) == pytest.approx(0.046, rel=0.05)
    image, kernel = random_case(17, 5, (16, 16))
    restored = wiener(as_torch(image).float(), torch.from_numpy(kernel).float(), noise[2:3])
    restored.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad) for p in wiener.parameters())
    assert math.isfinite(float(wiener.log_noise_gain.grad)) and wiener.log_noise_gain.grad != 0


def test_invalid_arguments_are_refused():
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    kernel = torch.ones(3, 3)
    with pytest.raises(ValueError, match="border"):
        wiener_deconvolve_torch(image, kernel, 1e-3, border="wrap")
    with pytest.raises(ValueError, match="pad"):
        wiener_deconvolve_torch(image, kernel, 1e-3, pad=0)
    with pytest.raises(ValueError, match="non-negative"):
        wiener_deconvolve_torch(image, -kernel, 1e-3)
    with pytest.raises(ValueError, match="all zero"):
        wiener_deconvolve_torch(image, 0 * kernel, 1e-3)
    with pytest.raises(ValueError, match="balance"):
        wiener_deconvolve_torch(image, kernel, 0.0)
    with pytest.raises(ValueError, match="balance"):
        wiener_deconvolve_torch(image, kernel, torch.ones(2))
    with pytest.raises(ValueError, match="kernel"):
        wiener_deconvolve_torch(image, torch.ones(2, 3, 3), 1e-3)
    with pytest.raises(ValueError, match="larger than the image"):
        wiener_deconvolve_torch(image, torch.ones(9, 9), 1e-3, border="none")
    with pytest.raises(ValueError, match="blurred"):
        wiener_deconvolve_torch(image[0], kernel, 1e-3)
    with pytest.raises(ValueError, match="> 0"):
        WienerDeconvolution(balance=0.0)
