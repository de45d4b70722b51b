"""The Wiener baseline on real photographs blurred by the generator's own code.

Blurred crops are made as ``csb-generate`` makes them: :func:`csb_generator.blur_crop` (true
convolution, valid region of the photograph around the crop) then :func:`csb_generator.add_noise`
(here noiseless: only the 1/T gain), with kernels from :func:`csb_generator.random_psf`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from csb_generator import add_noise, blur_crop, open_dataset, random_psf
from diffdeblur.wiener import (
    DEFAULT_BALANCES,
    WienerTuning,
    tune_wiener_balance,
    wiener_deconvolve,
)
from skimage import data
from skimage.restoration import wiener as skimage_wiener

#: (top, left, height, width) of 64 px crops with texture in both photographs (grey std >= 36).
BOXES = ((100, 100, 64, 64), (160, 160, 64, 64), (220, 280, 64, 64), (340, 220, 64, 64))


def psnr(restored: np.ndarray, sharp: np.ndarray) -> float:
    """PSNR in dB, data range 1, computed here independently of the module under test."""
    return float(10 * np.log10(1 / np.mean((restored.astype(np.float64) - sharp) ** 2)))


def band(image: np.ndarray, width: int = 8) -> np.ndarray:
    """The pixels within ``width`` of the border, flattened over rows and columns."""
    mask = np.ones(image.shape[:2], dtype=bool)
    mask[width:-width, width:-width] = False
    return image[mask]


@pytest.fixture(scope="module")
def photographs() -> dict[str, np.ndarray]:
    return {"astronaut": data.astronaut(), "camera": data.camera()}


@pytest.fixture(scope="module")
def shake() -> np.ndarray:
    """An asymmetric 16 px camera-shake kernel (even size), T = 1, centred by the generator."""
    kernel = random_psf(np.random.default_rng(2), 16, length=6.0).kernel
    odd = np.pad(kernel, ((0, 1), (0, 1)))  # same origin, pixel 8, on a 17 px grid
    assert not np.allclose(odd, odd[::-1, ::-1])  # not point-symmetric about its origin
    return kernel


def degrade(photo: np.ndarray, kernel: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, sharp) crops in [0, 1], exactly as the generator stores a noiseless sample."""
    blurred, padded = blur_crop(photo, kernel, box)
    assert not padded
    top, left, height, width = box
    return add_noise(blurred, kernel.sum()), photo[top : top + height, left : left + width] / 255


# (1) Restoration of a real photograph with the true kernel ------------------------------------


@pytest.mark.parametrize("exposure", [1.0, 0.5])
def test_true_kernel_beats_the_blurred_input(photographs, exposure):
    # Measured (balance 1e-3): mean gains 6.7 dB (astronaut) and 7.6 dB (camera) at T = 1, 6.6 and
    # 6.6 dB at T = 0.5, and no crop gains less than 3.3 dB; asserted: mean >= 4 dB, each >= 2 dB.
    kernel = random_psf(np.random.default_rng(2), 16, exposure, length=6.0).kernel
    assert kernel.sum() == pytest.approx(exposure)
    for name, photo in photographs.items():
        gains = []
        for box in BOXES:
            blurred, sharp = degrade(photo, kernel, box)
            restored = wiener_deconvolve(blurred, kernel, 1e-3)
            assert restored.shape == blurred.shape and restored.dtype == np.float32
            gains.append(psnr(restored, sharp) - psnr(blurred, sharp))
        assert np.mean(gains) >= 4.0, (name, gains)
        assert min(gains) >= 2.0, (name, gains)


def test_stored_kernel_with_exposure_restores_on_the_sharp_scale(photographs, shake):
    # The stored kernel sums to T and the stored image carries the 1/T gain; the kernel is
    # normalised, so any positive multiple of it gives the same restoration, on the sharp scale.
    blurred, sharp = degrade(photographs["camera"], shake * 0.25, BOXES[0])
    restored = wiener_deconvolve(blurred, shake * 0.25, 1e-3)
    np.testing.assert_array_equal(restored, wiener_deconvolve(blurred, shake, 1e-3))
    assert float(restored.mean()) == pytest.approx(float(sharp.mean()), abs=0.01)


def test_the_filter_is_scikit_images_wiener(photographs, shake):
    blurred, _ = degrade(photographs["camera"], shake, BOXES[1])
    expected = np.clip(skimage_wiener(blurred, shake / shake.sum(), 0.01, clip=False), 0, 1)
    restored = wiener_deconvolve(blurred, shake, 0.01, border="none")
    np.testing.assert_allclose(restored, expected, atol=1e-6)


def test_shapes_dtypes_and_range(photographs, shake):
    blurred, _ = degrade(photographs["astronaut"], shake, BOXES[2])
    for image in (blurred, blurred[:, :, :1], blurred[:, :, 0], (blurred * 255).astype(np.uint8)):
        restored = wiener_deconvolve(image, shake, 1e-4)
        assert restored.shape == image.shape
        assert restored.dtype == np.float32
        assert restored.min() >= 0 and restored.max() <= 1
    # An 8-bit image is read on [0, 1]: it restores like its float version.
    as_uint8 = (blurred * 255).round().astype(np.uint8)
    np.testing.assert_allclose(
        wiener_deconvolve(as_uint8, shake, 1e-2),
        wiener_deconvolve(as_uint8 / 255.0, shake, 1e-2),
        atol=1e-6,
    )


# (2) Orientation: the rotated kernel ---------------------------------------------------------


def test_rotated_kernel_does_worse_for_an_asymmetric_kernel(photographs, shake):
    # Measured (balance 1e-3): the rotated kernel loses 3.7 to 11.0 dB on these crops, 6.0 dB
    # (astronaut) and 7.4 dB (camera) on average; asserted: each >= 2 dB, mean >= 4 dB.
    for name, photo in photographs.items():
        losses = []
        for box in BOXES:
            blurred, sharp = degrade(photo, shake, box)
            true = psnr(wiener_deconvolve(blurred, shake, 1e-3), sharp)
            rotated = psnr(wiener_deconvolve(blurred, shake, 1e-3, rotate_kernel=True), sharp)
            losses.append(true - rotated)
        assert min(losses) >= 2.0, (name, losses)
        assert np.mean(losses) >= 4.0, (name, losses)


def test_rotation_is_about_the_origin_pixel(photographs, shake):
    blurred, _ = degrade(photographs["camera"], shake, BOXES[0])
    # Odd sizes: a plain 180-degree flip.
    odd = shake[1:, 1:]
    np.testing.assert_array_equal(
        wiener_deconvolve(blurred, odd, 1e-3, rotate_kernel=True),
        wiener_deconvolve(blurred, odd[::-1, ::-1], 1e-3),
    )
    # Even sizes: the same kernel on a 17 px grid (a zero row and column appended keep its
    # origin at pixel 8) is odd, and its flip is the rotation about the origin.
    embedded = np.pad(shake, ((0, 1), (0, 1)))
    np.testing.assert_allclose(
        wiener_deconvolve(blurred, shake, 1e-3, rotate_kernel=True, pad=17),
        wiener_deconvolve(blurred, embedded[::-1, ::-1], 1e-3, pad=17),
        atol=1e-6,
    )


def test_rotated_even_delta_shifts_the_other_way(photographs):
    # Blurred by a delta one row below the origin (b[i] = x[i - 1]); read as a correlation, the
    # same kernel means b[i] = x[i + 1], so the "restoration" moves the image up by two rows.
    photo = photographs["camera"]
    kernel = np.zeros((4, 4))
    kernel[3, 2] = 1.0
    box = (100, 100, 40, 40)
    blurred, _ = degrade(photo, kernel, box)
    restored = wiener_deconvolve(blurred, kernel, 1e-9, rotate_kernel=True)
    expected = photo[100 - 2 : 140 - 2, 100:140] / 255
    np.testing.assert_allclose(restored[4:-4, 4:-4], expected[4:-4, 4:-4], atol=1e-5)


# (3) Border handling -------------------------------------------------------------------------


def test_padding_beats_no_padding_near_the_borders(photographs, shake):
    # Each border at its own best balance of the grid, scored on the outer 8 px band of both
    # photographs' crops. Measured: symmetric-taper 33.9 dB, symmetric 33.0, reflect 31.7, none
    # 24.3 (the blurred band: 28.4); asserted: 5 dB better than none, and the best of the four.
    grid = (1e-3, 1e-2, 1e-1, 1.0)
    scores = {}
    for border in ("none", "reflect", "symmetric", "symmetric-taper"):
        per_balance = []
        for balance in grid:
            values = []
            for photo in photographs.values():
                for box in BOXES:
                    blurred, sharp = degrade(photo, shake, box)
                    restored = wiener_deconvolve(blurred, shake, balance, border=border)
                    values.append(psnr(band(restored), band(sharp)))
            per_balance.append(np.mean(values))
        scores[border] = max(per_balance)
    assert scores["symmetric-taper"] >= scores["none"] + 5.0, scores
    assert scores["symmetric-taper"] >= max(scores["reflect"], scores["symmetric"]), scores


def test_boundary_iterations_improve_the_restoration(photographs, shake):
    # Measured on the camera crops (balance 1e-3): 10 passes gain 0.3 to 1.4 dB over one pass,
    # 0.8 dB on average; asserted: every crop gains, the mean by >= 0.4 dB.
    gains = []
    for box in BOXES:
        blurred, sharp = degrade(photographs["camera"], shake, box)
        once = psnr(wiener_deconvolve(blurred, shake, 1e-3), sharp)
        iterated = psnr(wiener_deconvolve(blurred, shake, 1e-3, boundary_iterations=10), sharp)
        gains.append(iterated - once)
    assert min(gains) > 0, gains
    assert np.mean(gains) >= 0.4, gains


# (4) Tuning ------------------------------------------------------------------------------------


def test_tuned_balance_is_the_best_of_the_grid(csb_dataset):
    dataset = open_dataset(csb_dataset)
    tuning = tune_wiener_balance(dataset, limit=12)
    assert isinstance(tuning, WienerTuning)
    assert tuning.count == 12
    assert tuning.balances == DEFAULT_BALANCES
    assert len(tuning.balances) == 19
    assert tuning.balances[0] == pytest.approx(1e-6) and tuning.balances[-1] == pytest.approx(1.0)
    assert tuning.best_psnr == max(tuning.mean_psnr)
    assert not tuning.at_edge
    assert tuning.best_psnr > tuning.blurred_psnr

    # Recompute the chosen balance and its neighbours independently.
    index = tuning.balances.index(tuning.balance)
    samples = [dataset[i] for i in range(12)]
    for neighbour in (index - 1, index, index + 1):
        balance = tuning.balances[neighbour]
        scores = [
            psnr(wiener_deconvolve(s["blurred"], s["kernel"], balance), s["sharp"] / 255)
            for s in samples
        ]
        assert np.mean(scores) == pytest.approx(tuning.mean_psnr[neighbour], abs=1e-9)
        assert np.mean(scores) <= tuning.best_psnr
    blurred = [psnr(s["blurred"], s["sharp"] / 255) for s in samples]
    assert tuning.blurred_psnr == pytest.approx(np.mean(blurred), abs=1e-9)
    dataset.close()


def test_tuning_scores_like_the_metrics_module(photographs, shake):
    import torch
    from diffdeblur.metrics import psnr as torch_psnr

    blurred, sharp = degrade(photographs["astronaut"], shake, BOXES[0])
    stored = (sharp * 255).round().astype(np.uint8)
    with pytest.warns(UserWarning, match="edge"):  # one weight is at its own grid's edge
        tuning = tune_wiener_balance(
            [{"blurred": blurred, "sharp": stored, "kernel": shake}], [1e-2]
        )
    restored = wiener_deconvolve(blurred, shake, 1e-2)

    def as_batch(image):
        return torch.from_numpy(np.asarray(image, dtype=np.float64)).permute(2, 0, 1)[None]

    expected = torch_psnr(as_batch(restored), as_batch(stored / 255.0))
    assert tuning.mean_psnr[0] == pytest.approx(float(expected[0]), abs=1e-4)


def test_tuning_warns_at_the_edge_of_the_grid(csb_dataset):
    dataset = open_dataset(csb_dataset)
    with pytest.warns(UserWarning, match="edge of the grid"):
        tuning = tune_wiener_balance(dataset, balances=[100.0, 10.0, 10.0], limit=4)
    assert tuning.balances == (10.0, 100.0)  # sorted, deduplicated
    assert tuning.balance == 10.0 and tuning.at_edge
    dataset.close()


def test_tuning_takes_plain_dicts_and_the_rotation(photographs, shake):
    # Noisy samples as the generator's noisy mode makes them (T = 1/2, lambda 48000, sigma 2).
    rng = np.random.default_rng(5)
    kernel = shake / 2
    samples = []
    for top, left, height, width in BOXES:
        blurred, _ = blur_crop(photographs["camera"], kernel, (top, left, height, width))
        noisy = add_noise(blurred, 0.5, lam=48000.0, sigma=2.0, rng=rng).astype(np.float32)
        sharp = photographs["camera"][top : top + height, left : left + width]
        samples.append({"blurred": noisy, "sharp": sharp, "kernel": kernel})
    grid = np.logspace(-4, 0, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither optimum may be at the grid's edge
        true = tune_wiener_balance(samples, balances=grid)
        rotated = tune_wiener_balance(iter(samples), balances=grid, rotate_kernel=True)
    assert true.count == rotated.count == len(BOXES)
    assert rotated.rotate_kernel and not true.rotate_kernel
    # Measured: 25.71 dB (true), 25.53 dB (rotated), 22.02 dB blurred, both at balance 0.1.
    assert true.best_psnr > max(rotated.best_psnr, true.blurred_psnr)


# (5) Alignment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 4, 5])
@pytest.mark.parametrize("border", ["symmetric-taper", "none"])
def test_centred_delta_returns_the_image(photographs, size, border):
    kernel = np.zeros((size, size))
    kernel[size // 2, size // 2] = 1.0
    image = photographs["astronaut"][100:140, 200:248] / 255
    restored = wiener_deconvolve(image, kernel, 1e-7, border=border)
    np.testing.assert_allclose(restored, image, atol=1e-5)


def test_shifted_delta_is_undone_at_the_right_position(photographs):
    # Even kernel, delta one row below and one column left of the origin (2, 2): the generator's
    # blur moves the image down and left; the restoration must put it back.
    photo = photographs["camera"]
    kernel = np.zeros((4, 4))
    kernel[3, 1] = 1.0
    blurred, sharp = degrade(photo, kernel, (100, 100, 40, 48))
    np.testing.assert_allclose(blurred[1:, :-1], sharp[:-1, 1:])  # the generator's convention
    restored = wiener_deconvolve(blurred, kernel, 1e-9)
    np.testing.assert_allclose(restored[1:-1, 1:-1], sharp[1:-1, 1:-1], atol=1e-5)


def test_restoration_is_aligned_for_a_real_even_kernel(photographs, shake):
    # Of all one-pixel shifts of the restoration, the unshifted one matches the sharp crop best.
    photo = photographs["astronaut"]
    blurred, sharp = degrade(photo, shake, (150, 150, 96, 96))
    restored = wiener_deconvolve(blurred, shake, 1e-3)
    centre = (slice(16, 80), slice(16, 80))
    scores = {
        (dy, dx): psnr(np.roll(restored, (dy, dx), axis=(0, 1))[centre], sharp[centre])
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    }
    assert max(scores, key=scores.get) == (0, 0), scores


# (6) Validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "message"),
    [
        (np.ones(5), "2-D"),
        (np.ones((3, 3, 3)), "2-D"),
        (np.ones((0, 3)), "2-D"),
        (np.array([[0.5, -0.1], [0.3, 0.3]]), "non-negative"),
        (np.zeros((3, 3)), "all zero"),
        (np.full((3, 3), np.nan), "NaN"),
        (np.full((3, 3), 1j), "real"),
    ],
)
def test_invalid_kernels(kernel, message):
    with pytest.raises(ValueError, match=message):
        wiener_deconvolve(np.zeros((8, 8)), kernel, 0.1)


@pytest.mark.parametrize("balance", [0, -1e-3, math.nan, math.inf, "much", None])
def test_invalid_balance(balance):
    with pytest.raises(ValueError, match="balance"):
        wiener_deconvolve(np.zeros((8, 8)), np.ones((3, 3)), balance)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros(8), r"\(H, W\)"),
        (np.zeros((2, 8, 8, 3)), r"\(H, W\)"),
        (np.zeros((0, 8)), r"\(H, W\)"),
        (np.full((8, 8), np.nan), "NaN"),
        (np.full((8, 8), "a"), "real-valued"),
    ],
)
def test_invalid_images(image, message):
    with pytest.raises(ValueError, match=message):
        wiener_deconvolve(image, np.ones((3, 3)), 0.1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"border": "wrap"}, "border must be one of"),
        ({"pad": 0}, "pad"),
        ({"pad": 2.5}, "pad"),
        ({"boundary_iterations": -1}, "boundary_iterations"),
        ({"border": "none", "boundary_iterations": 2}, "border='none'"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        wiener_deconvolve(np.zeros((8, 8)), np.ones((3, 3)), 0.1, **options)


def test_kernel_larger_than_the_image_needs_padding():
    with pytest.raises(ValueError, match="larger than the image"):
        wiener_deconvolve(np.zeros((8, 8)), np.ones((9, 9)), 0.1, border="none")
    assert wiener_deconvolve(np.zeros((8, 8)), np.ones((9, 9)), 0.1).shape == (8, 8)


def test_invalid_tuning_inputs():
    good = {"blurred": np.zeros((8, 8, 3)), "sharp": np.zeros((8, 8, 3), np.uint8)}
    good["kernel"] = np.ones((3, 3))
    with pytest.raises(ValueError, match="differ in shape"):
        tune_wiener_balance([{**good, "sharp": np.zeros((8, 9, 3), np.uint8)}])
    with pytest.raises(ValueError, match="no samples"):
        tune_wiener_balance([])
    with pytest.raises(ValueError, match="'kernel'"):
        tune_wiener_balance([{"blurred": good["blurred"], "sharp": good["sharp"]}])
    with pytest.raises(ValueError, match="non-empty"):
        tune_wiener_balance([good], balances=[])
    with pytest.raises(ValueError, match="> 0"):
        tune_wiener_balance([good], balances=[1e-3, 0.0])
    with pytest.raises(ValueError, match="limit"):
        tune_wiener_balance([good], limit=0)
    with pytest.raises(ValueError, match="non-negative"):
        tune_wiener_balance([{**good, "kernel": -np.ones((3, 3))}])
