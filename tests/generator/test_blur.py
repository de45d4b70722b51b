"""Blurring: true convolution, alignment, and boundaries.

The model: docs/model.md#3-blur-true-convolution-no-padding-artefacts.

Reference: with the kernel origin at its central pixel (K // 2, K' // 2), the module docstring of
``csb_generator.blur`` defines

    b[i, j] = sum_{u, v} k[u, v] x[i - (u - K // 2), j - (v - K' // 2)],

and scipy's full convolution is F[m, n] = sum_{u, v} k[u, v] x[m - u, n - v]; hence
b[i, j] = F[i + K // 2, j + K' // 2]. Tolerance 1e-12 absolute: values are in [0, 1] and the
kernels sum to 1, so FFT rounding is ~1e-15; 1e-12 still catches any misplaced sample.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from csb_generator import blur, blur_crop

KERNEL_SHAPES = [(1, 1), (3, 3), (4, 4), (5, 2), (2, 7), (6, 3), (9, 9), (16, 16), (17, 12)]


def _kernel(shape, seed=0):
    k = np.random.default_rng(seed).random(shape)
    return k / k.sum()


def _full(image, kernel):
    """scipy full convolution, channel by channel, computed directly (no FFT)."""
    if image.ndim == 2:
        return scipy.signal.convolve(image, kernel, mode="full", method="direct")
    return np.stack(
        [_full(image[..., c], kernel) for c in range(image.shape[2])],
        axis=-1,
    )


def _reflect_padded(image, kernel):
    kh, kw = kernel.shape
    pads = ((kh - 1 - kh // 2, kh // 2), (kw - 1 - kw // 2, kw // 2))
    return np.pad(image, pads + ((0, 0),) * (image.ndim - 2), mode="reflect")


def _interior_boxes(image_shape, kernel_shape, rng, count=4):
    """Random boxes whose kernel footprint stays inside the image."""
    (H, W), (kh, kw) = image_shape[:2], kernel_shape
    boxes = []
    for _ in range(count):
        height = int(rng.integers(1, H - kh + 2))
        width = int(rng.integers(1, W - kw + 2))
        top = int(rng.integers(kh - 1 - kh // 2, H - kh // 2 - height + 1))
        left = int(rng.integers(kw - 1 - kw // 2, W - kw // 2 - width + 1))
        boxes.append((top, left, height, width))
    return boxes


@pytest.mark.parametrize("shape", KERNEL_SHAPES)
@pytest.mark.parametrize("channels", [None, 3])
def test_interior_crop_equals_scipy_full_convolution_slice(shape, channels):
    rng = np.random.default_rng(sum(shape) * 7 + 1 + (channels or 0))
    image_shape = (45, 52) if channels is None else (45, 52, channels)
    image = rng.random(image_shape)
    kernel = _kernel(shape, seed=sum(shape))
    full = _full(image, kernel)
    kh, kw = shape
    for top, left, height, width in _interior_boxes(image.shape, shape, rng):
        out, padded = blur_crop(image, kernel, (top, left, height, width))
        row, col = top + kh // 2, left + kw // 2
        expected = full[row : row + height, col : col + width]
        assert padded is False
        assert out.shape == expected.shape
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_rgb_channels_share_the_kernel():
    rng = np.random.default_rng(5)
    image = rng.random((30, 31, 3))
    kernel = _kernel((5, 6), seed=5)
    out, padded = blur_crop(image, kernel, (6, 7, 15, 14))
    assert not padded
    for c in range(3):
        grey, _ = blur_crop(image[..., c], kernel, (6, 7, 15, 14))
        np.testing.assert_allclose(out[..., c], grey, rtol=0, atol=1e-12)
        expected = scipy.signal.convolve(image[..., c], kernel, mode="full", method="direct")
        np.testing.assert_allclose(out[..., c], expected[8:23, 10:24], rtol=0, atol=1e-12)


def test_convolution_not_correlation_single_offcentre_tap():
    # A single 1 at (row 1, col 4) of a 5 x 5 kernel: offset (-1, +2) from the centre (2, 2).
    # b[i, j] = x[i + 1, j - 2]: the image content moves up one row and right two columns, in
    # the direction of the tap. A correlation would move it the opposite way.
    kernel = np.zeros((5, 5))
    kernel[1, 4] = 1.0
    image = np.zeros((20, 20))
    image[10, 10] = 1.0
    out, padded = blur_crop(image, kernel, (4, 4, 12, 12))
    assert not padded
    peak = np.unravel_index(np.argmax(out), out.shape)
    assert (int(peak[0]) + 4, int(peak[1]) + 4) == (9, 12)
    assert out.max() == pytest.approx(1.0, abs=1e-12)
    assert np.abs(out).sum() == pytest.approx(1.0, abs=1e-10)
    # Whole-image blur agrees, and the sharp image shifted by the offset reproduces it.
    shifted = np.roll(image, (-1, 2), axis=(0, 1))
    np.testing.assert_allclose(blur(image, kernel)[2:18, 2:18], shifted[2:18, 2:18], atol=1e-12)


def test_documented_example():
    image = np.zeros((8, 8))
    image[4, 4] = 1.0
    kernel = np.zeros((3, 3))
    kernel[1, 2] = 1.0
    out, padded = blur_crop(image, kernel, (2, 2, 4, 4))
    assert int(np.argmax(out[2])) == 3 and padded is False


def test_centred_symmetric_kernel_does_not_shift_an_edge():
    # A kernel with its centre of mass on the central pixel blurs a step edge symmetrically:
    # the 0.5 level stays half-way between the two sides of the edge.
    kernel = np.zeros((7, 7))
    kernel[3, 1:6] = 0.2  # horizontal box of 5 taps centred on column 3
    image = np.zeros((16, 32))
    image[:, 16:] = 1.0
    out = blur(image, kernel)
    # out[j] = mean(x[j - 2 .. j + 2]); the edge lies between columns 15 and 16.
    np.testing.assert_allclose(out[8, 13:19], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-12)
    np.testing.assert_allclose(out[8, 16] + out[8, 15], 1.0, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 3), (4, 4), (5, 2), (2, 7), (9, 9), (8, 13)])
def test_whole_image_blur_equals_convolution_of_reflect_padded_image(shape):
    rng = np.random.default_rng(sum(shape))
    kernel = _kernel(shape, seed=sum(shape) + 1)
    for image in (rng.random((23, 27)), rng.random((19, 21, 3))):
        padded_image = _reflect_padded(image, kernel)
        if image.ndim == 2:
            expected = scipy.signal.convolve(padded_image, kernel, mode="valid", method="direct")
        else:
            expected = np.stack(
                [
                    scipy.signal.convolve(padded_image[..., c], kernel, "valid", method="direct")
                    for c in range(3)
                ],
                axis=-1,
            )
        out = blur(image, kernel)
        assert out.shape == image.shape
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 3), (4, 4), (5, 2), (2, 7), (9, 9)])
def test_border_crops_are_padded_and_match_the_whole_image_blur(shape):
    rng = np.random.default_rng(3)
    image = rng.random((25, 30))
    kernel = _kernel(shape, seed=4)
    whole = blur(image, kernel)
    kh, kw = shape
    boxes = [
        (0, 5, 6, 10),  # top edge
        (25 - 6, 5, 6, 10),  # bottom edge
        (5, 0, 10, 6),  # left edge
        (5, 30 - 6, 10, 6),  # right edge
        (0, 0, 25, 30),  # the whole image
        (0, 30 - 4, 4, 4),  # a corner
    ]
    for top, left, height, width in boxes:
        out, padded = blur_crop(image, kernel, (top, left, height, width))
        needs_padding = (
            top < kh - 1 - kh // 2
            or left < kw - 1 - kw // 2
            or top + height + kh // 2 > 25
            or left + width + kw // 2 > 30
        )
        assert padded is needs_padding
        np.testing.assert_allclose(
            out, whole[top : top + height, left : left + width], rtol=0, atol=1e-12
        )
    # A 1 x 1 kernel never needs padding, even at the border; a 3 x 3 one always does there.
    assert blur_crop(image, np.ones((1, 1)), (0, 0, 5, 5))[1] is False
    assert blur_crop(image, np.ones((3, 3)) / 9, (0, 0, 5, 5))[1] is True


def test_crop_just_inside_the_reach_of_the_kernel_is_not_padded():
    image = np.random.default_rng(0).random((20, 20))
    # Origin (2, 2): output (i, j) reads rows i - 2 .. i + 2 and columns j - 1 .. j + 2.
    kernel = _kernel((5, 4))
    assert blur_crop(image, kernel, (2, 1, 16, 17))[1] is False
    assert blur_crop(image, kernel, (1, 1, 16, 17))[1] is True
    assert blur_crop(image, kernel, (2, 0, 16, 17))[1] is True
    assert blur_crop(image, kernel, (2, 1, 17, 17))[1] is True
    assert blur_crop(image, kernel, (2, 1, 16, 18))[1] is True


def test_kernel_larger_than_the_image():
    rng = np.random.default_rng(8)
    image = rng.random((6, 5))
    kernel = _kernel((9, 9), seed=8)
    whole = blur(image, kernel)
    expected = scipy.signal.convolve(
        _reflect_padded(image, kernel), kernel, mode="valid", method="direct"
    )
    np.testing.assert_allclose(whole, expected, rtol=0, atol=1e-12)
    out, padded = blur_crop(image, kernel, (1, 1, 2, 2))
    assert padded
    np.testing.assert_allclose(out, whole[1:3, 1:3], rtol=0, atol=1e-12)


def test_flat_image_stays_flat_with_kernel_sum():
    kernel = _kernel((7, 6), seed=2) * 0.37
    image = np.full((20, 24, 3), 0.6)
    np.testing.assert_allclose(blur(image, kernel), 0.6 * 0.37, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_images_are_scaled_by_their_maximum(dtype):
    rng = np.random.default_rng(1)
    image = rng.integers(0, np.iinfo(dtype).max + 1, size=(12, 13), dtype=dtype)
    kernel = _kernel((3, 4))
    np.testing.assert_allclose(
        blur(image, kernel),
        blur(image.astype(np.float64) / np.iinfo(dtype).max, kernel),
        rtol=0,
        atol=1e-15,
    )


def test_float32_image_gives_float64_output():
    image = np.random.default_rng(0).random((10, 10)).astype(np.float32)
    out = blur(image, _kernel((3, 3)))
    assert out.dtype == np.float64


@pytest.mark.parametrize(
    ("image", "kernel", "box", "match"),
    [
        (np.zeros(10), np.ones((3, 3)), (0, 0, 1, 1), "shape"),
        (np.zeros((10, 10, 3, 1)), np.ones((3, 3)), (0, 0, 1, 1), "shape"),
        (np.zeros((10, 10), dtype=bool), np.ones((3, 3)), (0, 0, 1, 1), "dtype"),
        (np.zeros((10, 10)), np.ones((3, 3, 1)), (0, 0, 1, 1), "2-D"),
        (np.zeros((10, 10)), np.full((3, 3), np.nan), (0, 0, 1, 1), "finite"),
        (np.zeros((10, 10)), np.ones((3, 3)), (0, 0, 11, 5), "exceeds"),
        (np.zeros((10, 10)), np.ones((3, 3)), (-1, 0, 2, 2), "invalid"),
        (np.zeros((10, 10)), np.ones((3, 3)), (0, 0, 0, 2), "invalid"),
    ],
)
def test_invalid_inputs_raise(image, kernel, box, match):
    with pytest.raises(ValueError, match=match):
        blur_crop(image, kernel, box)
