"""The Gaussian forward process: schedules, q(x_t | x_0), the posterior, inversions and the loss.

Reference values are computed here independently, in NumPy float64, from the formulas of Ho et
al. (2020) and Nichol & Dhariwal (2021), in the plain way (``ab = cumprod(1 - beta)``,
``1 - ab``), and compared with the float64 implementation to 1e-11 relative. The reference is the
less accurate side: near t = 0 the subtraction ``1 - ab`` ~ beta_0 (1e-4 linear, 4e-5 cosine)
turns one unit roundoff of ab (1.1e-16) into a relative error up to 1.1e-16 / 4e-5 ~ 3e-12,
while a cumulative product of 1000 terms adds at most ~1000 u ~ 1e-13.

Statistical checks use 5 standard errors (SE) of the estimator from n independent draws:
  * sample mean of N(m, v): SE = sqrt(v / n);
  * unbiased sample variance of a Gaussian: SE = v sqrt(2 / (n - 1));
  * sample correlation of independent variables: SE = 1 / sqrt(n).
Seeds are fixed, so every test is deterministic; at 5 SE a correct implementation would fail a
single check for a fresh seed with probability 2 Phi(-5) ~ 5.7e-7 (the largest family here has
384 checks: ~2e-4), while errors of the formulas (a wrong index or a missing square root) move
the estimates by many SE.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffdeblur.config import DiffusionConfig
from diffdeblur.diffusion import GaussianDiffusion, cosine_betas, linear_betas

F64 = torch.float64


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_sum_close(got, terms, rtol: float = 1e-11) -> None:
    """``got`` equals ``sum(terms)`` to ``rtol`` of ``sum(|terms|)``: a sum may cancel, so the
    error is relative to the size of its terms, not of the result."""
    got = np.asarray(got)
    expected = sum(terms)
    scale = sum(np.abs(term) for term in terms)
    assert np.all(np.abs(got - expected) <= rtol * scale), np.max(np.abs(got - expected) / scale)


def _numpy_schedule(diffusion: GaussianDiffusion):
    """(beta, alpha, ab, ab_prev) recomputed in NumPy from the betas alone."""
    beta = diffusion.betas.numpy().copy()
    alpha = 1.0 - beta
    ab = np.cumprod(alpha)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    return beta, alpha, ab, ab_prev


@pytest.fixture(scope="module")
def linear() -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig())


# --- schedules ------------------------------------------------------------------------------


def test_linear_betas_are_the_thesis_schedule(linear):
    expected = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    assert linear.betas.dtype == F64
    assert torch.equal(linear.betas, expected)
    assert torch.equal(linear_betas(1000, 1e-4, 0.02), expected)


@pytest.mark.parametrize("timesteps", [1000, 50])
def test_cosine_alphas_cumprod_match_the_closed_form(timesteps):
    s = 0.008
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=timesteps, schedule="cosine"))

    def f(u):
        return np.cos((u / timesteps + s) / (1 + s) * np.pi / 2) ** 2

    u = np.arange(1, timesteps + 1, dtype=np.float64)
    closed = f(u) / f(0.0)
    ab = diffusion.alphas_cumprod.numpy()
    betas = diffusion.betas.numpy()
    # Index t is step t + 1 of the paper. Only the last beta reaches the 0.999 cap (f(T) = 0
    # would make it 1), so every earlier value is the closed form.
    assert np.all(betas[:-1] < 0.999)
    assert betas[-1] == pytest.approx(0.999, abs=0)
    np.testing.assert_allclose(ab[:-1], closed[:-1], rtol=1e-11, atol=0)
    assert ab[-1] == pytest.approx(ab[-2] * (1 - 0.999), rel=1e-11)
    assert np.all(betas > 0) and np.all(betas <= 0.999)
    assert np.all(np.diff(betas) > 0), "cosine betas increase with t"
    assert np.all(np.diff(ab) < 0), "alphas_cumprod decreases with t"
    assert torch.equal(cosine_betas(timesteps), diffusion.betas)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_derived_schedule_tensors(schedule):
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=200, schedule=schedule))
    _, alpha, ab, ab_prev = _numpy_schedule(diffusion)
    expected = {
        "alphas": alpha,
        "alphas_cumprod": ab,
        "alphas_cumprod_prev": ab_prev,
        "sqrt_alphas_cumprod": np.sqrt(ab),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - ab),
        "sqrt_recip_alphas_cumprod": 1 / np.sqrt(ab),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1 / ab - 1),
    }
    for name, value in expected.items():
        tensor = getattr(diffusion, name)
        assert tensor.dtype == F64 and tensor.shape == (200,), name
        np.testing.assert_allclose(tensor.numpy(), value, rtol=1e-11, atol=0, err_msg=name)
    assert diffusion.alphas_cumprod_prev[0].item() == 1.0
    assert diffusion.posterior_variance[0].item() == 0.0
    log_var = diffusion.posterior_log_variance_clipped.numpy()
    assert np.all(np.isfinite(log_var))
    assert log_var[0] == log_var[1]


def test_invalid_configurations_are_refused():
    with pytest.raises(ValueError, match="timesteps"):
        GaussianDiffusion(DiffusionConfig(timesteps=1))
    with pytest.raises(ValueError, match="schedule"):
        GaussianDiffusion(DiffusionConfig(schedule="quadratic"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta_start"):
        GaussianDiffusion(DiffusionConfig(beta_start=0.02, beta_end=1e-4))
    with pytest.raises(ValueError, match="beta_start"):
        GaussianDiffusion(DiffusionConfig(beta_start=0.0))


# --- q(x_t | x_0) ---------------------------------------------------------------------------


def test_q_sample_matches_the_closed_form(linear):
    gen = _seeded(0)
    x0 = torch.rand(4, 3, 5, 7, generator=gen, dtype=F64) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen, dtype=F64)
    t = torch.tensor([0, 1, 500, 999])
    _, _, ab, _ = _numpy_schedule(linear)
    x_t = linear.q_sample(x0, t, noise).numpy()
    for i, ti in enumerate(t.tolist()):
        terms = [np.sqrt(ab[ti]) * x0[i].numpy(), np.sqrt(1 - ab[ti]) * noise[i].numpy()]
        _assert_sum_close(x_t[i], terms)


@pytest.mark.parametrize("t", [0, 10, 500, 999])
def test_q_sample_moments(linear, t):
    # n = 20000 draws of each of 48 pixels; per pixel, 5 SE on the mean and the variance.
    n = 20000
    x0 = (torch.arange(48, dtype=F64).reshape(1, 3, 4, 4) / 47) * 2 - 1
    x0 = x0.expand(n, -1, -1, -1)
    noise = torch.randn(x0.shape, generator=_seeded(1 + t), dtype=F64)
    x_t = linear.q_sample(x0, torch.full((n,), t), noise)
    ab = linear.alphas_cumprod[t].item()
    var = 1 - ab
    mean_err = (x_t.mean(0) - math.sqrt(ab) * x0[0]).abs().max().item()
    var_err = (x_t.var(0) - var).abs().max().item()
    assert mean_err <= 5 * math.sqrt(var / n)
    assert var_err <= 5 * var * math.sqrt(2 / (n - 1))


# --- q(x_{t-1} | x_t, x_0) ------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_matches_ho_eq_6_7(schedule):
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=1000, schedule=schedule))
    beta, alpha, ab, ab_prev = _numpy_schedule(diffusion)
    gen = _seeded(2)
    t = torch.tensor([0, 1, 2, 250, 998, 999])
    x0 = torch.rand(len(t), 3, 4, 4, generator=gen, dtype=F64) * 2 - 1
    x_t = torch.randn(x0.shape, generator=gen, dtype=F64)
    mean, variance, log_variance = diffusion.q_posterior(x0, x_t, t)
    assert mean.shape == x0.shape
    assert variance.shape == log_variance.shape == (len(t), 1, 1, 1)
    for i, ti in enumerate(t.tolist()):
        coef_x0 = np.sqrt(ab_prev[ti]) * beta[ti] / (1 - ab[ti])
        coef_xt = np.sqrt(alpha[ti]) * (1 - ab_prev[ti]) / (1 - ab[ti])
        beta_tilde = beta[ti] * (1 - ab_prev[ti]) / (1 - ab[ti])
        _assert_sum_close(mean[i].numpy(), [coef_x0 * x0[i].numpy(), coef_xt * x_t[i].numpy()])
        assert variance[i].item() == pytest.approx(beta_tilde, rel=1e-11, abs=0)
        clipped = beta_tilde if ti > 0 else beta[1] * (1 - ab[0]) / (1 - ab[1])
        assert log_variance[i].item() == pytest.approx(np.log(clipped), rel=1e-11)


def test_posterior_is_the_bayes_posterior(linear):
    # Independent derivation by conjugacy: prior x_{t-1} | x_0 ~ N(sqrt(ab_{t-1}) x_0,
    # 1 - ab_{t-1}), likelihood x_t | x_{t-1} ~ N(sqrt(alpha_t) x_{t-1}, beta_t). The posterior
    # precision is the sum of the precisions and the mean the precision-weighted combination; the
    # variance must be beta_t (1 - ab_{t-1}) / (1 - ab_t). Tolerance 1e-10: this route divides by
    # 1 - ab_{t-1} (as small as beta_0 = 1e-4, relative error <= 1.1e-12 in plain NumPy) and adds
    # precisions of very different sizes, so it is a few times less exact than the closed form.
    beta, alpha, ab, ab_prev = _numpy_schedule(linear)
    t = np.array([1, 2, 10, 300, 999])
    x0 = np.linspace(-1, 1, len(t))
    x_t = np.linspace(1.5, -0.5, len(t))
    precision = 1 / (1 - ab_prev[t]) + alpha[t] / beta[t]
    variance = 1 / precision
    terms = [
        variance * np.sqrt(ab_prev[t]) * x0 / (1 - ab_prev[t]),
        variance * np.sqrt(alpha[t]) * x_t / beta[t],
    ]
    np.testing.assert_allclose(variance, beta[t] * (1 - ab_prev[t]) / (1 - ab[t]), rtol=1e-10)

    got_mean, got_var, _ = linear.q_posterior(
        torch.tensor(x0).reshape(-1, 1), torch.tensor(x_t).reshape(-1, 1), torch.tensor(t)
    )
    np.testing.assert_allclose(got_var.flatten().numpy(), variance, rtol=1e-10)
    _assert_sum_close(got_mean.flatten().numpy(), terms, rtol=1e-10)

    # At t = 0 the previous state is x_0 itself: zero variance, mean x_0.
    m0, v0, _ = linear.q_posterior(
        torch.tensor([[0.3]], dtype=F64), torch.tensor([[2.0]], dtype=F64), torch.tensor([0])
    )
    assert v0.item() == 0.0
    # To 2 ulp: the implementation's 1 - ab_0 is computed without cancellation.
    assert m0.item() == pytest.approx(0.3, rel=4e-16)


@pytest.mark.parametrize("t", [1, 100, 999])
def test_posterior_by_simulation(linear, t):
    # Draw (x_{t-1}, x_t) from the forward process with x_0 fixed (using NumPy's schedule, not
    # q_sample), then the residual x_{t-1} - mean(x_0, x_t) must be N(0, variance) and
    # uncorrelated with x_t. n = 200000; 5 SE on mean, variance and correlation.
    n = 200000
    _, alpha, _, ab_prev = _numpy_schedule(linear)
    gen = _seeded(10 + t)
    z1, z2 = torch.randn(2, n, 1, generator=gen, dtype=F64)
    x0 = torch.full((n, 1), 0.4, dtype=F64)
    x_prev = math.sqrt(ab_prev[t]) * x0 + math.sqrt(1 - ab_prev[t]) * z1
    x_t = math.sqrt(alpha[t]) * x_prev + math.sqrt(1 - alpha[t]) * z2
    mean, variance, _ = linear.q_posterior(x0, x_t, torch.full((n,), t))
    residual = (x_prev - mean).flatten()
    v = variance[0].item()
    assert abs(residual.mean().item()) <= 5 * math.sqrt(v / n)
    assert abs(residual.var().item() - v) <= 5 * v * math.sqrt(2 / (n - 1))
    corr = torch.corrcoef(torch.stack([residual, x_t.flatten()]))[0, 1].item()
    assert abs(corr) <= 5 / math.sqrt(n)


# --- inversions -----------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_predict_x0_and_eps_invert_q_sample(schedule):
    diffusion = GaussianDiffusion(DiffusionConfig(schedule=schedule))
    gen = _seeded(3)
    t = torch.tensor([0, 1, 37, 500, 998, 999])
    x0 = torch.rand(len(t), 3, 8, 8, generator=gen, dtype=F64) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen, dtype=F64)
    x_t = diffusion.q_sample(x0, t, eps)
    # 1e-10 absolute: the inversion multiplies the float64 rounding of x_t by at most
    # sqrt(1 / ab) (cosine: ab_{T-1} ~ 2.4e-9, so ~2e4) -> errors ~1e-11.
    torch.testing.assert_close(diffusion.predict_x0(x_t, t, eps), x0, rtol=0, atol=1e-10)
    # eps is recovered with the rounding divided by sqrt(1 - ab) >= sqrt(beta_0) ~ 6e-3.
    torch.testing.assert_close(diffusion.predict_eps(x_t, t, x0), eps, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_coefficients_follow_the_input_dtype(linear, dtype):
    x0 = torch.zeros(2, 3, 4, 4, dtype=dtype)
    noise = torch.ones_like(x0)
    t = torch.tensor([5, 900])
    assert linear.q_sample(x0, t, noise).dtype == dtype
    assert linear.predict_x0(x0, t, noise).dtype == dtype
    assert linear.predict_eps(noise, t, x0).dtype == dtype
    mean, var, log_var = linear.q_posterior(x0, noise, t)
    assert mean.dtype == var.dtype == log_var.dtype == dtype


def test_bad_timesteps_and_shapes_are_refused(linear):
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="shape"):
        linear.q_sample(x, torch.tensor([1, 2, 3]), x)
    with pytest.raises(ValueError, match="shape"):
        linear.q_sample(x, torch.tensor([[1, 2]]), x)
    with pytest.raises(TypeError, match="integer"):
        linear.q_sample(x, torch.tensor([1.0, 2.0]), x)
    with pytest.raises(ValueError, match="shape"):
        linear.q_sample(x, torch.tensor([1, 2]), x[:, :1])
    with pytest.raises(IndexError):
        linear.q_sample(x, torch.tensor([0, 1000]), x)


# --- training -------------------------------------------------------------------------------


def test_sample_timesteps_are_uniform(linear):
    # T = 10, n = 100000: each count is Binomial(n, 0.1), SE = sqrt(n 0.1 0.9) ~ 95.
    small = GaussianDiffusion(DiffusionConfig(timesteps=10))
    n = 100000
    t = small.sample_timesteps(n, _seeded(4))
    assert t.dtype == torch.long and t.shape == (n,)
    counts = torch.bincount(t, minlength=10).to(F64)
    assert counts.numel() == 10
    assert (counts - n / 10).abs().max().item() <= 5 * math.sqrt(n * 0.1 * 0.9)
    # Every one of 1000 indices appears in 100000 draws (each is missed with p ~ e^-100).
    full = linear.sample_timesteps(n, _seeded(5))
    assert torch.equal(full.unique(), torch.arange(1000))


def _oracle_for(diffusion: GaussianDiffusion, x0: torch.Tensor):
    """A denoiser that knows x_0, so it returns exactly the noise that made x_t."""

    def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return diffusion.predict_eps(x_t, t, x0)

    return denoiser


@pytest.mark.parametrize(("dtype", "bound"), [(F64, 1e-20), (torch.float32, 1e-8)])
def test_training_loss_of_an_oracle_is_zero(linear, dtype, bound):
    # The oracle's error is rounding only: x_t's rounding (unit roundoff u) divided by
    # sqrt(1 - ab_t) >= sqrt(beta_0) = 0.01, so |error| <~ 100 u, squared ~ 1e4 u^2:
    # ~1e-28 in float64, ~1e-10 in float32.
    x0 = torch.rand(16, 3, 8, 8, generator=_seeded(6), dtype=dtype) * 2 - 1
    loss = linear.training_loss(_oracle_for(linear, x0), x0, _seeded(7))
    assert loss.ndim == 0
    assert loss.item() < bound


def test_training_loss_of_a_zero_denoiser_is_the_noise_power(linear):
    # loss = mean(noise^2) over n = 49152 elements: E = 1, SE = sqrt(2 / n) ~ 0.0064.
    x0 = torch.rand(64, 3, 16, 16, generator=_seeded(8)) * 2 - 1
    loss = linear.training_loss(lambda x_t, t: torch.zeros_like(x_t), x0, _seeded(9))
    assert loss.dtype == torch.float32
    assert abs(loss.item() - 1.0) <= 5 * math.sqrt(2 / x0.numel())


def test_training_loss_is_deterministic_for_a_seed(linear):
    x0 = torch.rand(8, 3, 8, 8, generator=_seeded(10)) * 2 - 1
    seen: list[torch.Tensor] = []

    def denoiser(x_t, t):
        seen.append(t.clone())
        assert t.dtype == torch.long and t.shape == (8,)
        return 0.5 * x_t

    a = linear.training_loss(denoiser, x0, _seeded(11))
    b = linear.training_loss(denoiser, x0, _seeded(11))
    c = linear.training_loss(denoiser, x0, _seeded(12))
    assert a.item() == b.item()
    assert a.item() != c.item()
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[0], seen[2])
    assert all(((s >= 0) & (s < 1000)).all() for s in seen)


def test_training_loss_refuses_a_wrongly_shaped_prediction(linear):
    x0 = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="shape"):
        linear.training_loss(lambda x_t, t: x_t[:, :1], x0, _seeded(0))


def test_training_loss_backpropagates(linear):
    weight = torch.tensor(0.5, requires_grad=True)
    x0 = torch.rand(4, 3, 4, 4, generator=_seeded(13)) * 2 - 1
    loss = linear.training_loss(lambda x_t, t: weight * x_t, x0, _seeded(14))
    loss.backward()
    assert weight.grad is not None and torch.isfinite(weight.grad)
