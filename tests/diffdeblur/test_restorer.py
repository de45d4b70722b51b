"""The four parametrisations of the restorer (``diffdeblur.restorer``): configuration, training
loss and its gradients, the diffused image and its inverse, and restoration.

Networks are the ``tiny`` preset narrowed to 16 channels, with 20 diffusion steps. Every weight is
drawn from a seeded ``torch.Generator`` (never the global random state), and the layers that start
at zero (each residual branch's last layer and the output convolution) are made non-zero, or the
networks would compute the identity and many of these checks could not fail.
"""

from __future__ import annotations

import json

import pytest
import torch
from diffdeblur.config import PARAMETRISATIONS, DiffusionConfig, RestorerConfig, UNetConfig
from diffdeblur.restorer import Restorer, restorer_config
from diffdeblur.samplers import SamplerSpec, ddim_sample
from restorer_support import seeded_restorer
from torch.nn import functional

pytestmark = pytest.mark.usefixtures("single_thread")

DIFFUSION = DiffusionConfig(timesteps=20)
DIFFUSED = ("sharp", "residual", "refine")


def _config(parametrisation: str, **overrides) -> RestorerConfig:
    return restorer_config(
        parametrisation, "tiny", diffusion=DIFFUSION, base_channels=16, **overrides
    )


def _model(parametrisation: str, seed: int = 0) -> Restorer:
    """A restorer whose every weight comes from ``seed``, zero-initialised layers included."""
    return seeded_restorer(_config(parametrisation), seed)


def _pair(batch: int = 2, height: int = 32, width: int = 32, seed: int = 1):
    """A (blurred, sharp) pair in [-1, 1]: the blurred image is a smoothed noisy sharp one."""
    generator = torch.Generator().manual_seed(seed)
    sharp = torch.rand(batch, 3, height, width, generator=generator) * 2 - 1
    blurred = functional.avg_pool2d(sharp, 3, stride=1, padding=1, count_include_pad=False)
    blurred = (blurred + 0.02 * torch.randn(blurred.shape, generator=generator)).clamp(-1, 1)
    return blurred, sharp


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parametrisation", "unet_in", "regressor"),
    [("sharp", 6, False), ("residual", 6, False), ("refine", 9, True), ("regression", 3, True)],
)
def test_restorer_config_channels(parametrisation, unet_in, regressor):
    config = restorer_config(parametrisation, "tiny")
    assert config.parametrisation == parametrisation
    assert config.unet.in_channels == unet_in
    assert config.unet.out_channels == 3
    if regressor:
        assert config.regressor is not None
        assert config.regressor.in_channels == 3
        assert config.regressor.out_channels == 3
        assert config.regressor.global_skip is True
    else:
        assert config.regressor is None
    assert config.unet.global_skip is False


def test_restorer_config_follows_image_channels_and_overrides():
    config = restorer_config("refine", "tiny", image_channels=1, base_channels=16, dropout=0.2)
    assert (config.unet.in_channels, config.unet.out_channels) == (3, 1)
    assert (config.regressor.in_channels, config.regressor.out_channels) == (1, 1)
    assert config.unet.base_channels == config.regressor.base_channels == 16
    assert config.unet.dropout == 0.2
    # Channel counts follow from the parametrisation even when an override names them.
    assert restorer_config("sharp", "tiny", in_channels=99).unet.in_channels == 6


def test_restorer_config_refuses_bad_arguments():
    with pytest.raises(ValueError, match="parametrisation"):
        restorer_config("noise", "tiny")
    with pytest.raises(ValueError, match="residual_scale"):
        restorer_config("residual", "tiny", residual_scale=0)
    with pytest.raises(ValueError, match="variant"):
        restorer_config("sharp", "huge")


@pytest.mark.parametrize("parametrisation", PARAMETRISATIONS)
def test_restorer_config_round_trips_through_json(parametrisation):
    config = restorer_config(
        parametrisation,
        "improved",
        diffusion=DiffusionConfig(timesteps=50, schedule="cosine"),
        residual_scale=3.5,
        attention_factors=(2, 4),
    )
    document = json.loads(json.dumps(config.to_dict()))
    again = RestorerConfig.from_dict(document)
    assert again == config
    assert isinstance(again.unet, UNetConfig)
    assert again.unet.attention_factors == (2, 4)
    assert isinstance(again.diffusion, DiffusionConfig)


def test_restorer_config_from_dict_refuses_unknown_keys():
    document = restorer_config("refine", "tiny").to_dict()
    with pytest.raises(ValueError, match="surprise"):
        RestorerConfig.from_dict({**document, "surprise": 1})
    document["unet"]["wings"] = 2
    with pytest.raises(ValueError, match="wings"):
        RestorerConfig.from_dict(document)


def test_restorer_builds_the_networks_of_its_parametrisation():
    for parametrisation in PARAMETRISATIONS:
        model = Restorer(_config(parametrisation))
        assert model.is_diffusion == (parametrisation != "regression")
        assert (model.denoiser_net is not None) == (parametrisation != "regression")
        assert (model.regressor is not None) == (parametrisation in ("refine", "regression"))


# --- training loss ---------------------------------------------------------------------------


@pytest.mark.parametrize("parametrisation", PARAMETRISATIONS)
def test_training_loss_is_finite_and_reaches_every_parameter(parametrisation):
    model = _model(parametrisation).train()
    blurred, sharp = _pair()
    loss, parts = model.training_loss(blurred, sharp, _seeded(3))
    assert loss.ndim == 0
    assert torch.isfinite(loss)
    expected_parts = {
        "sharp": {"diffusion"},
        "residual": {"diffusion"},
        "refine": {"diffusion", "regression"},
        "regression": {"regression"},
        "bridge": {"diffusion"},
    }[parametrisation]
    assert set(parts) == expected_parts
    assert loss.item() == pytest.approx(sum(parts.values()), rel=1e-5)
    loss.backward()
    silent = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.any(p.grad != 0))
    ]
    assert not silent, f"parameters without gradient: {silent[:10]}"
    grads = [p.grad for p in model.parameters()]
    assert all(torch.isfinite(g).all() for g in grads)


def test_refine_regressor_learns_from_its_own_loss_only():
    """The estimate enters the diffusion detached: the regressor's gradient is that of the
    regression MSE alone, whatever the diffusion term is."""
    model = _model("refine").train()
    blurred, sharp = _pair()
    loss, _ = model.training_loss(blurred, sharp, _seeded(3))
    loss.backward()
    full = {name: p.grad.clone() for name, p in model.regressor.named_parameters()}
    model.zero_grad(set_to_none=True)
    functional.mse_loss(model.estimate(blurred), sharp).backward()
    for name, p in model.regressor.named_parameters():
        torch.testing.assert_close(full[name], p.grad, rtol=1e-5, atol=1e-8, msg=name)


@pytest.mark.parametrize("parametrisation", PARAMETRISATIONS)
def test_training_loss_is_deterministic_for_a_seeded_generator(parametrisation):
    model = _model(parametrisation).train()
    blurred, sharp = _pair()
    first, _ = model.training_loss(blurred, sharp, _seeded(5))
    second, _ = model.training_loss(blurred, sharp, _seeded(5))
    assert torch.equal(first, second)
    if parametrisation != "regression":
        other, _ = model.training_loss(blurred, sharp, _seeded(6))
        assert not torch.equal(first, other)


# --- what is diffused ------------------------------------------------------------------------


@pytest.mark.parametrize("parametrisation", DIFFUSED)
def test_from_diffused_inverts_to_diffused(parametrisation):
    model = _model(parametrisation).eval()
    blurred, sharp = _pair(seed=4)
    estimate = model.estimate(blurred)
    x0 = model.to_diffused(sharp, blurred, estimate)
    scale = model.config.residual_scale
    expected_x0 = {
        "sharp": sharp,
        "residual": scale * (sharp - blurred),
        "refine": None if estimate is None else scale * (sharp - estimate),
    }[parametrisation]
    torch.testing.assert_close(x0, expected_x0)
    back = model.from_diffused(x0, blurred, estimate)
    torch.testing.assert_close(back, sharp, rtol=0, atol=1e-6)
    # Out of range: the inverse is the clamped image.
    wide = sharp * 1.7
    back = model.from_diffused(model.to_diffused(wide, blurred, estimate), blurred, estimate)
    torch.testing.assert_close(back, wide.clamp(-1, 1), rtol=0, atol=1e-6)
    assert back.min() >= -1 and back.max() <= 1


def test_regression_has_no_denoiser():
    model = _model("regression")
    with pytest.raises(RuntimeError, match="regression"):
        model.denoiser(torch.zeros(1, 3, 8, 8))


# --- restoration -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 64), (37, 53)], ids=["64x64", "37x53"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("parametrisation", PARAMETRISATIONS)
def test_restore_shape_range_and_determinism(parametrisation, sampler, size):
    model = _model(parametrisation).eval()
    blurred, _ = _pair(batch=2, height=size[0], width=size[1], seed=7)
    spec = SamplerSpec(sampler, steps=None if sampler == "ddpm" else 5)
    if parametrisation == "bridge":  # its own sampler, stochastic in place of ddpm
        spec = SamplerSpec("bridge", steps=5, eta=1.0 if sampler == "ddpm" else 0.0)
    options = {"sampler": spec}
    first = model.restore(blurred, generator=_seeded(11), **options)
    assert first.shape == blurred.shape
    assert first.dtype == blurred.dtype
    assert torch.isfinite(first).all()
    assert first.min() >= -1 and first.max() <= 1
    again = model.restore(blurred, generator=_seeded(11), **options)
    assert torch.equal(first, again)
    other = model.restore(blurred, generator=_seeded(12), **options)
    deterministic = parametrisation == "regression" or spec.eta == 0.0
    if deterministic:
        assert torch.equal(first, other)
    if parametrisation == "regression":
        assert torch.equal(first, model.estimate(blurred).clamp(-1, 1))
    else:
        assert deterministic or not torch.equal(first, other)
        # Not a copy of the condition, and not constant.
        assert not torch.equal(first, blurred)
        assert first.std() > 0


def test_restore_counts_sampling_steps_and_refuses_unknown_samplers():
    model = _model("residual").eval()
    blurred, _ = _pair(batch=1, height=16, width=16)
    calls = []
    model.restore(
        blurred,
        sampler=SamplerSpec("ddim", steps=4),
        generator=_seeded(0),
        progress=lambda: calls.append(1),
    )
    assert len(calls) == 4
    calls.clear()
    model.restore(
        blurred, sampler=SamplerSpec("ddpm"), generator=_seeded(0), progress=lambda: calls.append(1)
    )
    assert len(calls) == DIFFUSION.timesteps
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        model.restore(blurred, sampler=SamplerSpec("euler"), generator=_seeded(0))
    with pytest.raises(ValueError, match="cannot sample"):
        model.restore(blurred, sampler=SamplerSpec("bridge"), generator=_seeded(0))


def test_restore_of_an_untrained_residual_model_is_blurred_plus_the_bounded_residual():
    """With zero-initialised output layers (an untrained network predicts eps = 0) the
    restoration must be the blurred image plus the sampler's residual over the scale, where the
    sampler clamps each x0 prediction per pixel so that blurred + x0 / s stays in [-1, 1]. A
    check of the ``residual`` bookkeeping that trained weights cannot give exactly."""
    # A small scale, so that the bounds s * (+-1 - blurred) are narrower than the residual the
    # untrained sampler produces from its start noise and the clamp has to act.
    model = Restorer(_config("residual", residual_scale=0.25)).eval()  # zero output: eps = 0
    blurred, _ = _pair(batch=1, height=16, width=16)
    restored = model.restore(blurred, sampler=SamplerSpec("ddim", steps=3), generator=_seeded(2))
    scale = model.config.residual_scale
    bounds = (scale * (-1.0 - blurred), scale * (1.0 - blurred))
    residual = ddim_sample(
        lambda x, t: torch.zeros_like(x),
        model.diffusion,
        tuple(blurred.shape),
        steps=3,
        generator=_seeded(2),
        clip_x0=bounds,
    )
    torch.testing.assert_close(restored, blurred + residual / scale, rtol=1e-5, atol=1e-6)
    # The bounds bind: without them the untrained sampler's residual leaves the image range.
    unbounded = ddim_sample(
        lambda x, t: torch.zeros_like(x),
        model.diffusion,
        tuple(blurred.shape),
        steps=3,
        generator=_seeded(2),
        clip_x0=False,
    )
    assert ((blurred + unbounded / scale).abs() > 1).any()
