"""Restoration of any image size: the patch grid, the Hann weights, and per-step blending.

The blend is checked with stand-in networks whose output at a pixel depends on that pixel only:
every patch then predicts the same value there, so a correct blend (a weighted mean with weights
that sum to one) reproduces the whole-image result exactly, and any seam, gap or misplaced patch
shows up as a difference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffdeblur.config import ConfigError, DiffusionConfig
from diffdeblur.restoration import ImageRestorer
from diffdeblur.restorer import Restorer, restorer_config
from diffdeblur.samplers import SamplerSpec
from diffdeblur.tiling import PatchGrid, hann_weights, patch_starts
from torch import nn

SIZES = [(1, 1), (7, 9), (16, 16), (17, 16), (37, 53), (64, 23), (100, 70)]


class Identity(nn.Module):
    """A stand-in network that returns its input (the regressor of ``regression``)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x


class Pointwise(nn.Module):
    """A stand-in noise predictor: a fixed per-pixel function of (x_t, conditioning, t)."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        noisy, condition = x[:, : self.channels], x[:, self.channels : 2 * self.channels]
        level = (t.to(x.dtype) + 1)[:, None, None, None] / 20
        return 0.8 * noisy - 0.3 * torch.tanh(condition) * level + 0.05 * noisy**2


def _model(parametrisation: str, timesteps: int = 12, channels: int = 3) -> Restorer:
    config = restorer_config(
        parametrisation,
        "tiny",
        diffusion=DiffusionConfig(timesteps=timesteps),
        image_channels=channels,
    )
    model = Restorer(config).eval()
    if model.denoiser_net is not None:
        model.denoiser_net = Pointwise()
    if model.regressor is not None:
        model.regressor = Identity()
    return model


# --- the grid ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 5, 16, 17, 31, 48, 49, 100, 1280])
@pytest.mark.parametrize(("patch", "overlap"), [(16, 0), (16, 4), (16, 15), (64, 16)])
def test_patches_cover_the_side_with_the_overlap_asked_for(length, patch, overlap):
    starts = patch_starts(length, patch, overlap)
    side = min(patch, length)
    assert starts[0] == 0
    assert starts[-1] + side == length
    gaps = np.diff(starts)
    assert np.all(gaps >= 1)
    assert np.all(side - gaps >= overlap)  # neighbours share at least `overlap` pixels
    assert np.all(gaps <= patch - overlap)
    if gaps.size:
        assert gaps.max() - gaps.min() <= 1  # evenly spaced


def test_bad_grid_arguments_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        patch_starts(100, 16, 16)
    with pytest.raises(ValueError, match="overlap"):
        PatchGrid(10, 10, 8, -1)
    with pytest.raises(ValueError, match="image size"):
        PatchGrid(0, 10, 8, 2)


def test_hann_weights_are_positive_and_flat_towards_a_border():
    for size in (1, 2, 5, 16, 64):
        for flat_start in (False, True):
            for flat_end in (False, True):
                weights = hann_weights(size, flat_start=flat_start, flat_end=flat_end)
                assert torch.all(weights > 0)
                assert torch.all(weights <= 1)
    interior = hann_weights(16, flat_start=False, flat_end=False)
    assert torch.allclose(interior, interior.flip(0))  # symmetric
    assert float(interior[0]) < 0.01  # tapers towards neighbours
    assert torch.all(hann_weights(16, flat_start=True, flat_end=False)[:8] == 1)
    assert torch.all(hann_weights(16, flat_start=False, flat_end=True)[8:] == 1)


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_every_pixel_has_positive_total_weight(height, width):
    grid = PatchGrid(height, width, 16, 5)
    total = grid.weight_sum()
    assert total.shape == (height, width)
    assert float(total.min()) > 0.1  # border pixels included: the windows never vanish there


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_split_then_merge_is_exact(height, width):
    grid = PatchGrid(height, width, 16, 5)
    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    patches = grid.split(images)
    assert patches.shape == (2 * len(grid), 3, grid.patch_height, grid.patch_width)
    torch.testing.assert_close(grid.merge(patches), images, rtol=0, atol=2e-6)


def test_merge_weights_a_patch_by_its_window():
    # Two patches over 24 px with an 8 px overlap: in the overlap, the result moves from the
    # first patch's value to the second's as their windows say.
    grid = PatchGrid(1, 24, 16, 8)
    assert grid.lefts == (0, 8)
    patches = torch.stack([torch.zeros(1, 1, 16), torch.ones(1, 1, 16)])
    blended = grid.merge(patches)[0, 0, 0]
    assert torch.all(blended[:8] == 0) and torch.all(blended[16:] == 1)
    first = hann_weights(16, flat_start=True, flat_end=False)[8:]
    second = hann_weights(16, flat_start=False, flat_end=True)[:8]
    expected = (second / (first + second)).float()
    torch.testing.assert_close(blended[8:16], expected)
    assert torch.all(torch.diff(blended) >= 0)


# --- restoration ----------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_identity_network_reproduces_the_input_exactly(height, width, channels):
    model = _model("regression")
    rng = np.random.default_rng(height * 1000 + width)
    shape = (height, width) if channels == 1 else (height, width, 3)
    for dtype in (np.uint8, np.uint16):
        image = rng.integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)
        restored = ImageRestorer(model, patch_size=16, overlap=5).restore_image(
            image, generator=torch.Generator().manual_seed(0)
        )
        assert restored.dtype == dtype and restored.shape == image.shape
        np.testing.assert_array_equal(restored, image)


@pytest.mark.parametrize(
    ("parametrisation", "sampler"),
    [
        *((p, s) for p in ("sharp", "residual", "refine") for s in ("ddim", "ddpm")),
        ("bridge", "bridge"),
    ],
)
def test_per_step_blending_equals_whole_image_sampling(parametrisation, sampler):
    # A per-pixel network makes the whole-image result the exact target: any seam or mis-blend
    # of the per-step predictions would show, because sampling amplifies nothing away.
    model = _model(parametrisation)
    blurred = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(2)) * 2 - 1
    steps, eta = (None, None) if sampler == "ddpm" else (5, 0.5)
    options = {"sampler": SamplerSpec(sampler, steps, eta)}
    whole = model.restore(blurred, generator=torch.Generator().manual_seed(3), **options)
    tiled = model.restore(
        blurred,
        patch_size=16,
        overlap=5,
        batch_size=7,
        generator=torch.Generator().manual_seed(3),
        **options,
    )
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    assert not torch.allclose(tiled, blurred, atol=1e-3)  # the sampler did change the image


def test_one_patch_over_the_whole_image_is_exactly_restore_without_patches(single_thread):
    from restorer_support import seeded_restorer

    model = seeded_restorer(
        restorer_config("refine", "tiny", diffusion=DiffusionConfig(timesteps=10)), seed=4
    ).eval()
    blurred = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(5)) * 2 - 1
    whole = model.restore(
        blurred, sampler=SamplerSpec(steps=3), generator=torch.Generator().manual_seed(6)
    )
    tiled = model.restore(
        blurred,
        patch_size=32,
        overlap=8,
        sampler=SamplerSpec(steps=3),
        generator=torch.Generator().manual_seed(6),
    )
    assert torch.equal(tiled, whole)


def test_real_network_result_does_not_depend_on_the_batch_size(single_thread):
    from restorer_support import seeded_restorer

    model = seeded_restorer(
        restorer_config("residual", "tiny", diffusion=DiffusionConfig(timesteps=10)), seed=7
    ).eval()
    blurred = torch.rand(1, 3, 40, 29, generator=torch.Generator().manual_seed(8)) * 2 - 1
    results = [
        model.restore(
            blurred,
            patch_size=16,
            overlap=4,
            batch_size=batch_size,
            sampler=SamplerSpec(steps=2),
            generator=torch.Generator().manual_seed(9),
        )
        for batch_size in (1, 5, 64)
    ]
    for result in results[1:]:
        torch.testing.assert_close(result, results[0], rtol=0, atol=1e-5)
    assert results[0].shape == blurred.shape


def test_restore_image_keeps_float_images_and_refuses_bad_arrays():
    model = _model("regression")
    image = np.random.default_rng(10).random((9, 11, 3), dtype=np.float32)
    restorer = ImageRestorer(model, patch_size=8, overlap=2)
    restored = restorer.restore_image(image, generator=torch.Generator())
    assert restored.dtype == np.float32
    np.testing.assert_allclose(restored, image, atol=1e-6)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        restorer.restore_image(np.zeros((4, 4), np.int32), generator=torch.Generator())
    with pytest.raises(ValueError, match="image"):
        restorer.restore_image(np.zeros((4, 4, 4), np.uint8), generator=torch.Generator())


@pytest.mark.parametrize(
    ("settings", "option"),
    [({"overlap": 16}, "patch_size/overlap"), ({"batch_size": 0}, "batch_size")],
)
def test_image_restorer_refuses_patch_settings_that_do_not_fit(settings, option):
    with pytest.raises(ConfigError) as raised:
        ImageRestorer(_model("regression"), **{"patch_size": 16, **settings})
    assert raised.value.option == option


def test_grey_and_colour_images_restore_through_a_model_of_the_other_kind():
    """A colour model restores a grey image as three equal channels, averaged back; a grey
    model restores a colour image channel by channel: with the identity network, both give
    the input back."""
    rng = np.random.default_rng(11)
    for model_channels, image in (
        (3, rng.integers(0, 256, (13, 17), dtype=np.uint8)),
        (1, rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)),
    ):
        model = _model("regression", channels=model_channels)
        restorer = ImageRestorer(model, patch_size=8, overlap=2)
        np.testing.assert_array_equal(restorer.restore_image(image, generator=None), image)
