"""DDPM and DDIM samplers over a denoiser callable.

Besides shapes, seeds and the timesteps the network is shown, the samplers are checked against
exact denoisers of two data distributions for which the optimal noise prediction is known:

* a point mass at an image c: ``eps_hat = (x_t - sqrt(ab_t) c) / sqrt(1 - ab_t)``. Every x_0
  prediction is then c, and both samplers must end at c. The error is float32 rounding only: the
  last step returns the t = 0 prediction ``x_t / sqrt(ab_0) - sqrt(1 / ab_0 - 1) eps_hat``, whose
  rounding is a few units of u = 6e-8 (``sqrt(1 / ab_0 - 1) = 0.01`` cancels the 1 / 0.01 in
  ``eps_hat``), so the tolerance 1e-5 has a margin of ~100.
* independent Gaussian pixels, x_0 ~ N(mu, s^2): ``E[eps | x_t] = sqrt(1 - ab_t) (x_t -
  sqrt(ab_t) mu) / (ab_t s^2 + 1 - ab_t)``. Every step is then affine in x_t plus Gaussian noise,
  so the exact distribution of a sampler's output is N(m, V) with m and V propagated through the
  steps here, in NumPy, from the papers' formulas (Ho et al. 2020, Algorithm 2 with the posterior
  variance; Song et al. 2021, eq. 12 and 16). DDIM at eta = 0 is a deterministic affine map of
  the starting noise and is compared exactly (float64, 1e-10 relative to the size of the terms).
  For the stochastic samplers the empirical mean and variance of n = 65536 independent pixels are
  compared with 5 standard errors: SE(mean) = sqrt(V / n) = 0.0039 sqrt(V) and SE(variance) =
  V sqrt(2 / (n - 1)) = 0.0055 V. A correct sampler fails such a check for a fresh seed with
  probability ~6e-7; an index or coefficient error shifts V by far more than 3 %.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from diffdeblur.config import DiffusionConfig
from diffdeblur.diffusion import GaussianDiffusion
from diffdeblur.samplers import ddim_sample, ddpm_sample, timestep_subsequence

F64 = torch.float64
SHAPE = (2, 3, 8, 8)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tensors here are small (<= 65536 elements) and a sampler makes hundreds of tiny calls;
    # splitting each over threads costs more than it saves (40x slower on a loaded 2-core
    # machine), so run single-threaded and restore the setting afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small() -> GaussianDiffusion:
    # T = 50 keeps a full ancestral chain fast; the schedule shape does not matter here.
    return GaussianDiffusion(DiffusionConfig(timesteps=50))


@pytest.fixture(scope="module")
def default() -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig())


def _toy_denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth stand-in for a network: depends on both x_t and t."""
    scale = (t.to(x_t.dtype) + 1.0).reshape(-1, *([1] * (x_t.ndim - 1))) / 1000.0
    return torch.tanh(x_t) * (0.5 + scale)


def _run(sampler: str, denoiser, diffusion, shape=SHAPE, **kwargs) -> torch.Tensor:
    if sampler == "ddpm":
        return ddpm_sample(denoiser, diffusion, shape, **kwargs)
    return ddim_sample(denoiser, diffusion, shape, steps=kwargs.pop("steps", 10), **kwargs)


SAMPLERS = ["ddpm", "ddim"]


# --- timestep_subsequence -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timesteps", "steps"), [(1000, 2), (1000, 10), (1000, 50), (1000, 999), (50, 7), (2, 2)]
)
def test_timestep_subsequence_is_even_and_spans_the_range(timesteps, steps):
    indices = timestep_subsequence(timesteps, steps)
    assert len(indices) == steps
    assert indices[0] == 0 and indices[-1] == timesteps - 1
    assert all(b > a for a, b in itertools.pairwise(indices))
    # Evenly spaced: each index is within 1/2 of its ideal real position.
    ideal = np.arange(steps) * (timesteps - 1) / (steps - 1)
    assert np.all(np.abs(np.array(indices) - ideal) <= 0.5)


def test_timestep_subsequence_edge_cases():
    assert timestep_subsequence(10, 10) == list(range(10))
    assert timestep_subsequence(1000, 1) == [999]
    assert timestep_subsequence(1000, 5) == [0, 250, 500, 749, 999]
    for steps in (0, 11, -1):
        with pytest.raises(ValueError, match="steps"):
            timestep_subsequence(10, steps)


# --- basic contract -------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_output_shape_dtype_and_range(small, sampler, dtype):
    out = _run(sampler, _toy_denoiser, small, generator=_seeded(0), dtype=dtype)
    assert out.shape == SHAPE and out.dtype == dtype and out.device.type == "cpu"
    assert torch.isfinite(out).all()
    # With clip_x0 the result is the last (clamped) x_0 prediction.
    assert out.abs().max().item() <= 1.0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_per_pixel_x0_bounds_hold_and_differ_from_the_unit_clamp(small, sampler):
    # Bounds as the residual parametrisations use them: one interval per pixel.
    low = torch.linspace(-3.0, 0.5, math.prod(SHAPE)).reshape(SHAPE)
    high = low + 0.25
    out = _run(sampler, _toy_denoiser, small, generator=_seeded(0), clip_x0=(low, high))
    assert torch.all(out >= low) and torch.all(out <= high)
    unit = _run(sampler, _toy_denoiser, small, generator=_seeded(0))
    assert (out - unit).abs().max().item() > 0.1
    floats = _run(sampler, _toy_denoiser, small, generator=_seeded(0), clip_x0=(-0.25, 0.125))
    assert floats.min().item() >= -0.25 and floats.max().item() <= 0.125


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_same_seed_same_samples_other_seed_other_samples(small, sampler):
    kwargs = {"steps": 10, "eta": 0.5} if sampler == "ddim" else {}
    a = _run(sampler, _toy_denoiser, small, generator=_seeded(1), **dict(kwargs))
    b = _run(sampler, _toy_denoiser, small, generator=_seeded(1), **dict(kwargs))
    c = _run(sampler, _toy_denoiser, small, generator=_seeded(2), **dict(kwargs))
    assert torch.equal(a, b)
    assert (a - c).abs().max().item() > 0.1


def test_ddim_eta0_depends_only_on_the_starting_noise(small):
    x_T = torch.randn(SHAPE, generator=_seeded(3))
    outs = [
        ddim_sample(_toy_denoiser, small, SHAPE, steps=8, generator=gen, start=x_T)
        for gen in (_seeded(4), _seeded(5), None)
    ]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    # ... and the starting noise matters.
    other = ddim_sample(_toy_denoiser, small, SHAPE, steps=8, generator=None, start=-x_T)
    assert not torch.allclose(outs[0], other)


def test_given_noise_is_the_starting_point(small):
    # With a fresh generator of the same seed, drawing x_T inside or passing it is the same
    # thing for DDIM at eta = 0 (the only draw is x_T).
    x_T = torch.randn(SHAPE, generator=_seeded(6))
    a = ddim_sample(_toy_denoiser, small, SHAPE, steps=5, generator=_seeded(6))
    b = ddim_sample(_toy_denoiser, small, SHAPE, steps=5, generator=None, start=x_T)
    assert torch.equal(a, b)
    # noise decides device and dtype unless told otherwise.
    c = ddim_sample(_toy_denoiser, small, SHAPE, steps=5, generator=None, start=x_T.double())
    assert c.dtype == F64


# --- what the network is shown --------------------------------------------------------------


def _recording(log: list[int], batch: int):
    def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.long and t.shape == (batch,) and t.device == x_t.device
        assert bool((t == t[0]).all()), "all samples share the step"
        log.append(int(t[0]))
        return _toy_denoiser(x_t, t)

    return denoiser


@pytest.mark.parametrize("steps", [1, 10, 37, 1000])
def test_ddim_feeds_the_original_timestep_indices(default, steps):
    seen: list[int] = []
    ddim_sample(_recording(seen, 1), default, (1, 3, 4, 4), steps=steps, generator=_seeded(7))
    assert len(seen) == steps
    assert all(b < a for a, b in itertools.pairwise(seen)), "strictly descending"
    assert set(seen) <= set(range(1000))
    assert seen[0] == 999 and (steps == 1 or seen[-1] == 0)
    assert seen == timestep_subsequence(1000, steps)[::-1]


def test_ddpm_feeds_every_timestep_in_order(small):
    seen: list[int] = []
    ddpm_sample(_recording(seen, 2), small, SHAPE, generator=_seeded(8))
    assert seen == list(range(49, -1, -1))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_progress_is_called_once_per_step(small, sampler):
    calls: list[None] = []
    kwargs = {"steps": 13} if sampler == "ddim" else {}
    _run(
        sampler,
        _toy_denoiser,
        small,
        generator=_seeded(9),
        progress=lambda: calls.append(None),
        **kwargs,
    )
    assert len(calls) == (50 if sampler == "ddpm" else 13)


def test_bad_arguments_are_refused(small):
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(_toy_denoiser, small, SHAPE, generator=_seeded(0), start=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="generator"):
        ddim_sample(_toy_denoiser, small, SHAPE, steps=4, generator=None)
    with pytest.raises(ValueError, match="generator"):
        ddim_sample(
            _toy_denoiser, small, SHAPE, steps=4, eta=0.5, generator=None, start=torch.zeros(SHAPE)
        )
    for eta in (-0.1, 1.5):
        with pytest.raises(ValueError, match="eta"):
            ddim_sample(_toy_denoiser, small, SHAPE, steps=4, eta=eta, generator=_seeded(0))
    with pytest.raises(ValueError, match="steps"):
        ddim_sample(_toy_denoiser, small, SHAPE, steps=51, generator=_seeded(0))
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(lambda x, t: x[:, :1], small, SHAPE, generator=_seeded(0))


# --- exact denoisers ------------------------------------------------------------------------


def _point_mass_oracle(diffusion: GaussianDiffusion, c: torch.Tensor):
    ab = diffusion.alphas_cumprod

    def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ab[t].to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        return (x_t - a.sqrt() * c) / (1 - a).sqrt()

    return denoiser


@pytest.mark.parametrize("clip_x0", [True, False])
@pytest.mark.parametrize(
    ("sampler", "timesteps", "kwargs"),
    [
        ("ddpm", 50, {}),
        ("ddim", 50, {"steps": 10}),
        ("ddim", 1000, {"steps": 10}),
        ("ddim", 1000, {"steps": 10, "eta": 1.0}),
    ],
)
def test_exact_denoiser_of_a_point_mass_returns_it(sampler, timesteps, kwargs, clip_x0):
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=timesteps))
    c = torch.rand(SHAPE, generator=_seeded(10)) * 1.9 - 0.95
    out = _run(
        sampler,
        _point_mass_oracle(diffusion, c),
        diffusion,
        generator=_seeded(11),
        clip_x0=clip_x0,
        **dict(kwargs),
    )
    torch.testing.assert_close(out, c, rtol=0, atol=1e-5)


def test_ddim_at_eta1_over_all_steps_is_ddpm(small):
    # Song et al.: eta = 1 gives sigma^2 = the DDPM posterior variance, and with every step the
    # DDIM update is then the posterior mean; both draw x_T and then one z per step except the
    # last, so the same seed gives the same samples (clamping included).
    a = ddpm_sample(_toy_denoiser, small, SHAPE, generator=_seeded(12), dtype=F64)
    b = ddim_sample(
        _toy_denoiser, small, SHAPE, steps=50, eta=1.0, generator=_seeded(12), dtype=F64
    )
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


MU, S2 = 0.3, 0.25  # the Gaussian data distribution N(MU, S2) per pixel
GAUSS_SHAPE = (4096, 1, 4, 4)  # n = 65536 independent pixels


def _numpy_ab(diffusion: GaussianDiffusion) -> np.ndarray:
    return np.cumprod(1.0 - diffusion.betas.numpy())


def _gaussian_oracle(diffusion: GaussianDiffusion):
    ab_np = _numpy_ab(diffusion)

    def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = float(ab_np[int(t[0])])
        return math.sqrt(1 - ab) * (x_t - math.sqrt(ab) * MU) / (ab * S2 + 1 - ab)

    return denoiser


def _affine_x0_eps(ab: float) -> tuple[float, float, float, float]:
    """(a0, b0, ae, be): x0_hat = a0 x + b0 and eps_hat = ae x + be for the Gaussian oracle."""
    ae = math.sqrt(1 - ab) / (ab * S2 + 1 - ab)
    be = -ae * math.sqrt(ab) * MU
    a0 = (1 - math.sqrt(1 - ab) * ae) / math.sqrt(ab)
    b0 = -math.sqrt(1 - ab) * be / math.sqrt(ab)
    return a0, b0, ae, be


def _ddpm_law(diffusion: GaussianDiffusion) -> tuple[float, float]:
    """Exact (mean, variance) of ddpm_sample's output under the Gaussian oracle."""
    beta = diffusion.betas.numpy()
    ab = _numpy_ab(diffusion)
    m, v = 0.0, 1.0
    for t in reversed(range(len(beta))):
        ab_prev = ab[t - 1] if t > 0 else 1.0
        a0, b0, _, _ = _affine_x0_eps(ab[t])
        c0 = math.sqrt(ab_prev) * beta[t] / (1 - ab[t])
        ct = math.sqrt(1 - beta[t]) * (1 - ab_prev) / (1 - ab[t])
        var = beta[t] * (1 - ab_prev) / (1 - ab[t])
        gain, offset = c0 * a0 + ct, c0 * b0
        m, v = gain * m + offset, gain * gain * v + var
    return m, v


def _ddim_affine(diffusion: GaussianDiffusion, visited: list[int], eta: float):
    """(gain, offset, added variance) of DDIM's whole chain: out = gain x_T + offset + noise."""
    ab = _numpy_ab(diffusion)
    gain, offset, var = 1.0, 0.0, 0.0
    for i, t in enumerate(visited):
        ab_p = ab[visited[i + 1]] if i + 1 < len(visited) else 1.0
        a0, b0, ae, be = _affine_x0_eps(ab[t])
        sigma2 = eta**2 * (1 - ab_p) / (1 - ab[t]) * (1 - ab[t] / ab_p)
        k = math.sqrt(1 - ab_p - sigma2)
        step_gain = math.sqrt(ab_p) * a0 + k * ae
        step_offset = math.sqrt(ab_p) * b0 + k * be
        gain, offset = step_gain * gain, step_gain * offset + step_offset
        var = step_gain**2 * var + sigma2
    return gain, offset, var


def test_ddim_eta0_is_the_exact_affine_map_for_gaussian_data(default):
    seen: list[int] = []
    oracle = _gaussian_oracle(default)

    def denoiser(x_t, t):
        seen.append(int(t[0]))
        return oracle(x_t, t)

    x_T = torch.randn(GAUSS_SHAPE, generator=_seeded(13), dtype=F64)
    out = ddim_sample(
        denoiser, default, GAUSS_SHAPE, steps=20, generator=None, start=x_T, clip_x0=False
    )
    gain, offset, var = _ddim_affine(default, seen, eta=0.0)
    assert var == 0.0
    scale = abs(gain) * x_T.abs() + abs(offset)
    assert ((out - (gain * x_T + offset)).abs() <= 1e-10 * scale).all()


def _check_moments(out: torch.Tensor, m: float, v: float) -> None:
    n = out.numel()
    assert abs(out.mean().item() - m) <= 5 * math.sqrt(v / n)
    assert abs(out.var().item() - v) <= 5 * v * math.sqrt(2 / (n - 1))


def test_ddpm_output_law_for_gaussian_data(default):
    m, v = _ddpm_law(default)
    # The recursion itself lands near the data law: the mean exactly, the variance ~1.6 % low,
    # the known cost of the "fixed small" reverse variance with T = 1000.
    assert m == pytest.approx(MU, abs=1e-4) and v == pytest.approx(S2, rel=0.03)
    out = ddpm_sample(
        _gaussian_oracle(default),
        default,
        GAUSS_SHAPE,
        generator=_seeded(14),
        dtype=F64,
        clip_x0=False,
    )
    _check_moments(out, m, v)


def test_ddim_stochastic_output_law_for_gaussian_data(default):
    seen: list[int] = []
    oracle = _gaussian_oracle(default)

    def denoiser(x_t, t):
        seen.append(int(t[0]))
        return oracle(x_t, t)

    out = ddim_sample(
        denoiser,
        default,
        GAUSS_SHAPE,
        steps=25,
        eta=0.5,
        generator=_seeded(15),
        dtype=F64,
        clip_x0=False,
    )
    gain, offset, var = _ddim_affine(default, seen, eta=0.5)
    # x_T ~ N(0, 1): the output is N(offset, gain^2 + var).
    _check_moments(out, offset, gain**2 + var)
