"""What the network predicts (eps, x0, v), the blurred-to-sharp bridge, and the sampler registry.

The learning tests train a per-timestep affine "network" (two numbers per timestep and channel)
on a problem whose answer is known, with the real training losses and the real samplers: the
sample must come out at the answer, which it does only if the targets, the conversions back to
(x0, eps) and the sampler steps agree with each other.
"""

from __future__ import annotations

import pytest
import torch
from diffdeblur.bridge import BlurBridge
from diffdeblur.config import PREDICTIONS, DiffusionConfig
from diffdeblur.diffusion import GaussianDiffusion
from diffdeblur.losses import pixel_loss
from diffdeblur.restorer import Restorer, restorer_config
from diffdeblur.samplers import SAMPLERS, SamplerSpec, bridge_sample, ddim_sample, ddpm_sample
from torch import nn

F64 = torch.float64


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class PerStepAffine(nn.Module):
    """``out = w[t] * x_t + u[t] * condition + b[t]`` per channel: the exact optimum of every
    prediction type on the problems below is of this form."""

    def __init__(self, timesteps: int, channels: int) -> None:
        super().__init__()
        shape = (timesteps, channels, 1, 1)
        self.w = nn.Parameter(torch.zeros(shape, dtype=F64))
        self.u = nn.Parameter(torch.zeros(shape, dtype=F64))
        self.b = nn.Parameter(torch.zeros(shape, dtype=F64))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.w[t] * x_t + self.u[t] * condition + self.b[t]


# --- the conversions --------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_each_prediction_converts_back_to_the_x0_and_noise_that_made_it(prediction):
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=100, prediction=prediction))
    generator = _seeded(0)
    x0 = torch.rand(4, 3, 5, 5, generator=generator, dtype=F64) * 2 - 1
    noise = torch.randn(4, 3, 5, 5, generator=generator, dtype=F64)
    t = torch.tensor([0, 1, 50, 99])
    x_t = diffusion.q_sample(x0, t, noise)
    back_x0, back_eps = diffusion.split_prediction(x_t, t, diffusion.target(x0, noise, t))
    torch.testing.assert_close(back_x0, x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(back_eps, noise, rtol=0, atol=1e-9)


def test_v_is_the_velocity_of_salimans_and_ho():
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=10, prediction="v"))
    x0, noise, t = torch.full((1, 1, 1, 1), 0.5, dtype=F64), torch.ones(1, 1, 1, 1, dtype=F64), 7
    a = diffusion.sqrt_alphas_cumprod[t]
    b = diffusion.sqrt_one_minus_alphas_cumprod[t]
    v = diffusion.target(x0, noise, torch.tensor([t]))
    assert float(v) == pytest.approx(float(a * 1.0 - b * 0.5), abs=1e-15)


def test_an_unknown_prediction_is_refused():
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        GaussianDiffusion(DiffusionConfig(prediction="score"))


# --- learning a known answer -------------------------------------------------------------------


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_each_prediction_type_learns_and_samples_a_known_image(prediction, sampler):
    """All the data is one image c: trained with the real loss, every sampler must return c."""
    timesteps = 10
    # Strong noise at every step: eps-prediction's optimum at a small beta is a gain of
    # 1 / sqrt(beta), which a few hundred optimiser steps do not reach.
    config = DiffusionConfig(timesteps, beta_start=0.1, beta_end=0.6, prediction=prediction)
    diffusion = GaussianDiffusion(config)
    answer = torch.tensor([-0.6, 0.1, 0.7], dtype=F64).reshape(1, 3, 1, 1).expand(16, 3, 4, 4)
    network = PerStepAffine(timesteps, 3)
    optimiser = torch.optim.Adam(network.parameters(), lr=0.05)
    generator = _seeded(1)
    for step in range(800):
        if step == 500:  # settle: the noise of the stochastic gradient shrinks with the rate
            optimiser.param_groups[0]["lr"] = 0.005
        loss = diffusion.training_loss(
            lambda x, t: network(x, t, torch.zeros_like(x)), answer, generator
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    function = {"ddim": ddim_sample, "ddpm": ddpm_sample}[sampler]
    options = {"steps": 5, "eta": 0.0} if sampler == "ddim" else {}
    with torch.no_grad():
        sample = function(
            lambda x, t: network(x, t, torch.zeros_like(x)),
            diffusion,
            (8, 3, 4, 4),
            generator=_seeded(2),
            dtype=F64,
            clip_x0=False,
            **options,
        )
    torch.testing.assert_close(sample, answer[:8], rtol=0, atol=0.02)


def test_the_bridge_learns_a_known_restoration_and_samples_it_at_every_step_count():
    """sharp = 0.5 * blurred - 0.2: the bridge must learn it and every sampler run return it."""
    timesteps = 8
    bridge = BlurBridge(DiffusionConfig(timesteps=timesteps, bridge_noise=0.2))
    generator = _seeded(3)
    network = PerStepAffine(timesteps, 2)
    optimiser = torch.optim.Adam(network.parameters(), lr=0.05)
    for step in range(800):
        if step == 500:
            optimiser.param_groups[0]["lr"] = 0.005
        blurred = torch.rand(16, 2, 4, 4, generator=generator, dtype=F64) * 2 - 1
        sharp = 0.5 * blurred - 0.2
        loss = bridge.training_loss(
            lambda x, t, y=blurred: network(x, t, y), sharp, blurred, generator
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    blurred = torch.rand(4, 2, 4, 4, generator=_seeded(4), dtype=F64) * 2 - 1
    for steps in (1, 3, timesteps):
        for eta in (0.0, 1.0):
            with torch.no_grad():
                sample = bridge_sample(
                    lambda x, t: network(x, t, blurred),
                    bridge,
                    tuple(blurred.shape),
                    steps=steps,
                    eta=eta,
                    generator=_seeded(5),
                    start=blurred,
                    clip_x0=False,
                )
            torch.testing.assert_close(sample, 0.5 * blurred - 0.2, rtol=0, atol=0.03)


# --- the bridge's equations --------------------------------------------------------------------


def test_the_bridge_starts_at_the_blurred_image_and_ends_at_the_sharp_one():
    bridge = BlurBridge(DiffusionConfig(timesteps=4, bridge_noise=0.5))
    sharp, blurred = torch.zeros(2, 1, 3, 3, dtype=F64), torch.ones(2, 1, 3, 3, dtype=F64)
    noise = torch.randn(2, 1, 3, 3, generator=_seeded(6), dtype=F64)
    at_one = bridge.q_sample(sharp, blurred, torch.tensor([3, 3]), noise)
    assert torch.equal(at_one, blurred)  # t = 1: no noise, exactly the blurred image
    middle = bridge.q_sample(sharp, blurred, torch.tensor([1, 1]), noise)  # t = 1/2
    torch.testing.assert_close(middle, 0.5 + 0.5 * 0.5 * noise, rtol=0, atol=1e-12)
    assert [bridge.time(k) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_the_bridge_sampler_walks_the_straight_path_of_an_exact_prediction():
    """With the true sharp image as every prediction and eta 0, each x_t the network is asked
    at is (1 - t) sharp + t blurred, and the result is the sharp image."""
    bridge = BlurBridge(DiffusionConfig(timesteps=10, bridge_noise=0.3))
    sharp = torch.rand(1, 3, 4, 4, generator=_seeded(7), dtype=F64) * 2 - 1
    blurred = torch.rand(1, 3, 4, 4, generator=_seeded(8), dtype=F64) * 2 - 1
    seen = []

    def oracle(x_t, t):
        seen.append((int(t[0]), x_t.clone()))
        return sharp

    result = bridge_sample(
        oracle, bridge, tuple(sharp.shape), steps=4, generator=None, start=blurred
    )
    assert torch.equal(result, sharp)
    assert [index for index, _ in seen] == [9, 6, 3, 0]
    for index, x_t in seen:
        t = bridge.time(index)
        torch.testing.assert_close(x_t, (1 - t) * sharp + t * blurred, rtol=0, atol=1e-12)


def test_the_bridge_restores_in_one_step_to_the_network_prediction_at_the_blurred_image():
    torch.manual_seed(0)  # the network's layers draw their weights from the global state
    with torch.random.fork_rng(devices=[]):
        model = Restorer(
            restorer_config("bridge", "tiny", diffusion=DiffusionConfig(timesteps=20))
        ).eval()
        for parameter in model.parameters():  # the output layer starts at zero: move it
            parameter.data += 0.01 * torch.randn_like(parameter)
    blurred = torch.rand(2, 3, 24, 24, generator=_seeded(9)) * 2 - 1
    restored = model.restore(blurred, sampler=SamplerSpec("bridge", steps=1), generator=None)
    t = torch.full((2,), 19, dtype=torch.long)
    with torch.no_grad():
        direct = model.denoiser_net(torch.cat([blurred, blurred], dim=1), t)
    assert torch.equal(restored, direct.clamp(-1, 1))
    assert not torch.equal(restored, blurred)


def test_the_bridge_network_is_a_correction_of_its_input():
    """Untrained (zero output layer) the bridge returns the blurred image: it degrades towards
    the input, never towards noise."""
    model = Restorer(restorer_config("bridge", "tiny", diffusion=DiffusionConfig(timesteps=20)))
    blurred = torch.rand(1, 3, 16, 16, generator=_seeded(10)) * 2 - 1
    for steps in (1, 5):
        restored = model.eval().restore(blurred, sampler=SamplerSpec(steps=steps), generator=None)
        torch.testing.assert_close(restored, blurred, rtol=0, atol=1e-6)


# --- the skip from the blurred image (sharp, x0 or v) -----------------------------------------


class _AffineDenoiser(nn.Module):
    """:class:`PerStepAffine` behind the restorer's network interface: it reads x_t and the
    blurred image from the concatenated input."""

    def __init__(self, timesteps: int, channels: int) -> None:
        super().__init__()
        self.affine = PerStepAffine(timesteps, channels)
        self.channels = channels

    def forward(self, inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x_t, blurred = inputs[:, : self.channels], inputs[:, self.channels :]
        return self.affine(x_t.double(), t, blurred.double())


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_with_the_blurred_skip_sharp_learns_a_known_restoration(prediction):
    """sharp = 0.5 * blurred - 0.2, through the restorer (where the skip is added): trained with
    its loss and sampled with DDIM, the answer comes out only if both add the same skip."""
    config = DiffusionConfig(10, beta_start=0.1, beta_end=0.6, prediction=prediction)
    model = Restorer(
        restorer_config("sharp", "tiny", diffusion=config, image_channels=2, blurred_skip=True)
    )
    model.denoiser_net = _AffineDenoiser(10, 2)
    optimiser = torch.optim.Adam(model.denoiser_net.parameters(), lr=0.05)
    generator = _seeded(11)
    for step in range(800):
        if step == 500:
            optimiser.param_groups[0]["lr"] = 0.005
        blurred = torch.rand(16, 2, 4, 4, generator=generator, dtype=F64) * 2 - 1
        loss, _ = model.training_loss(blurred, 0.5 * blurred - 0.2, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    blurred = torch.rand(4, 2, 4, 4, generator=_seeded(12), dtype=F64) * 2 - 1
    restored = model.restore(blurred, sampler=SamplerSpec("ddim", steps=5), generator=_seeded(13))
    torch.testing.assert_close(restored.double(), 0.5 * blurred - 0.2, rtol=0, atol=0.03)


def test_the_blurred_skip_starts_an_untrained_sharp_model_at_the_blurred_image():
    """Untrained (zero output layer), ``sharp`` returns a grey image; with the skip, one DDIM
    step from pure noise returns the blurred image: exactly for x0 prediction, and for v up to
    the sqrt(ab_T) x_T that pure noise still carries (0.006 of it with the linear schedule)."""
    blurred = torch.rand(2, 3, 16, 16, generator=_seeded(14)) * 2 - 1
    for prediction, tolerance in (("x0", 1e-6), ("v", 0.04)):
        config = DiffusionConfig(prediction=prediction)
        for skip in (False, True):
            model = Restorer(
                restorer_config("sharp", "tiny", diffusion=config, blurred_skip=skip)
            ).eval()
            restored = model.restore(blurred, sampler=SamplerSpec(steps=1), generator=_seeded(15))
            error = float((restored - blurred).abs().max())
            assert (error <= tolerance) if skip else (error > 0.5), (prediction, skip, error)
    with pytest.raises(ValueError, match="x0 or v prediction"):
        Restorer(
            restorer_config(
                "sharp", "tiny", diffusion=DiffusionConfig(prediction="eps"), blurred_skip=True
            )
        )
    with pytest.raises(ValueError, match="sharp parametrisation"):
        Restorer(restorer_config("residual", "tiny", blurred_skip=True))


# --- the registry --------------------------------------------------------------------------------


def test_the_registry_names_every_sampler_and_refuses_unknown_ones():
    assert set(SAMPLERS) == {"ddpm", "ddim", "bridge"}
    with pytest.raises(ValueError, match="unknown sampler 'euler'; choose from ddpm, ddim, bridge"):
        SamplerSpec("euler")
    for bad in ({"steps": 0}, {"eta": -0.1}, {"eta": 1.5}):
        with pytest.raises(ValueError, match=r"steps|eta"):
            SamplerSpec("ddim", **bad)
    with pytest.raises(ValueError, match="eta 1"):
        SamplerSpec("ddpm", eta=0.0)


def test_a_specification_resolves_its_defaults_for_the_process():
    gaussian = GaussianDiffusion(DiffusionConfig(timesteps=30))
    bridge = BlurBridge(DiffusionConfig(timesteps=30))
    assert SamplerSpec().resolve(gaussian) == SamplerSpec("ddim", 30, 0.0)  # 50, capped at T
    assert SamplerSpec().resolve(bridge) == SamplerSpec("bridge", 1, 0.0)
    assert SamplerSpec("ddpm").resolve(gaussian) == SamplerSpec("ddpm", 30, 1.0)
    with pytest.raises(ValueError, match="cannot sample"):
        SamplerSpec("ddim").resolve(bridge)
    with pytest.raises(ValueError, match="cannot sample"):
        SamplerSpec("bridge").resolve(gaussian)
    with pytest.raises(ValueError, match="steps must be <= 30"):
        SamplerSpec("ddim", steps=31).resolve(gaussian)
    with pytest.raises(ValueError, match="takes all 30 steps"):
        SamplerSpec("ddpm", steps=5).resolve(gaussian)


# --- losses --------------------------------------------------------------------------------------


def test_pixel_losses_have_their_definitions():
    prediction = torch.tensor([0.0, 1.0, -2.0])
    target = torch.zeros(3)
    assert float(pixel_loss(prediction, target, "mse")) == pytest.approx(5 / 3)
    assert float(pixel_loss(prediction, target, "l1")) == pytest.approx(1.0)
    c = 1e-3
    expected = ((1 + c * c) ** 0.5 - c + (4 + c * c) ** 0.5 - c) / 3
    assert float(pixel_loss(prediction, target, "charbonnier")) == pytest.approx(expected)
    assert float(pixel_loss(target, target, "charbonnier")) == 0.0
    with pytest.raises(ValueError, match="unknown loss"):
        pixel_loss(prediction, target, "huber")
    with pytest.raises(ValueError, match="shape"):
        pixel_loss(prediction, torch.zeros(4), "l1")
