"""Samplers of the reverse process: ancestral DDPM (Ho et al. 2020) and DDIM (Song et al. 2021).

Each sampler is a plain function of a denoiser callable ``denoiser(x_t, t) -> eps`` with
``x_t`` of shape (B, ...) and ``t`` a (B,) long tensor of timestep indices of the trained
process, and of a :class:`~diffdeblur.diffusion.GaussianDiffusion` for the schedule. The
samplers never see the network, the conditioning image or the image size: a caller that restores
large images wraps the network in a denoiser that blends patch predictions, and a conditional
model captures its blurred input inside the callable.

Randomness comes only from the ``generator`` argument. Every draw happens on the generator's
device and is then moved to the sampling device, so a CPU generator gives the same starting
noise (and the same DDPM noise sequence) on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .diffusion import Denoiser, GaussianDiffusion

#: Lower and upper bounds of x_0: floats, or tensors broadcastable to the samples.
X0Bounds = tuple[torch.Tensor | float, torch.Tensor | float]

__all__ = ["ddim_sample", "ddpm_sample", "timestep_subsequence"]


def timestep_subsequence(timesteps: int, steps: int) -> list[int]:
    """The timesteps a reduced-step sampler visits: ``steps`` indices evenly spaced in [0, T-1].

    The first index is always T-1 and the last (for ``steps >= 2``) always 0. T-1 because the
    sampler starts from pure noise x_T ~ N(0, I), which is the distribution of the last step, so
    the network must first be asked at the noise level it was trained with for that input (a
    spacing that starts at 0 with a fixed stride ends below T-1 and feeds noise mislabelled as
    less noisy). 0 because the final x_0 prediction is then made at the lowest noise level, where
    the network is most accurate. Index ``i`` is ``round(i (T-1) / (steps-1))`` with halves
    rounded up; the spacing is at least 1 when ``steps <= T``, so the indices are distinct.

    Parameters
    ----------
    timesteps : int
        T, the number of steps of the trained process.
    steps : int
        Number of indices, 1 <= steps <= T; ``steps == 1`` gives ``[T - 1]``.

    Returns
    -------
    list of int
        Strictly increasing indices in [0, T-1], of length ``steps``. Samplers walk it backwards.

    Examples
    --------
    >>> timestep_subsequence(1000, 5)
    [0, 250, 500, 749, 999]
    >>> timestep_subsequence(10, 10)
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps!r}")
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be in [1, {timesteps}], got {steps!r}")
    if steps == 1:
        return [timesteps - 1]
    span, gaps = timesteps - 1, steps - 1
    # floor(i * span / gaps + 1/2) in integer arithmetic: exact, and no banker's rounding.
    return [(2 * i * span + gaps) // (2 * gaps) for i in range(steps)]


@torch.no_grad()
def ddpm_sample(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    noise: torch.Tensor | None = None,
    clip_x0: bool | X0Bounds = True,
    progress: Callable[[], object] | None = None,
) -> torch.Tensor:
    """Ancestral sampling over all T steps (Ho et al. 2020, Algorithm 2).

    Starting from x_{T-1} ~ N(0, I) (the last index), each step predicts the noise, recovers
    ``x0_hat`` (clamped to [-1, 1] when ``clip_x0``), and draws x_{t-1} from
    ``q(x_{t-1} | x_t, x0_hat)``, whose variance is the posterior's ``bt_t`` (the "fixed small"
    choice). The step at t = 0 adds no noise: its variance is 0 and it returns the mean, which is
    ``x0_hat`` itself.

    Parameters
    ----------
    denoiser : callable
        ``(x_t (B, ...), t (B,) long) -> eps`` of ``x_t``'s shape. It is called T times, with
        t = T-1, ..., 0 (all samples share one t).
    diffusion : GaussianDiffusion
        The schedule the denoiser was trained with.
    shape : sequence of int
        (B, ...) shape of the samples.
    generator : torch.Generator
        Source of the starting noise (unless ``noise`` is given) and of the noise of each step.
    device : torch.device or str, optional
        Device to sample on; by default that of ``noise`` if given, else the generator's.
    dtype : torch.dtype, optional
        Dtype of the samples; by default that of ``noise`` if given, else float32.
    noise : torch.Tensor, optional
        The starting x_{T-1} of ``shape`` (for a fixed starting point); drawn if omitted.
    clip_x0 : bool or (low, high)
        Clamp each x_0 prediction to [-1, 1], the range of the data (True), to the given bounds
        (tensors broadcastable to ``shape``, or floats: the range of a scaled residual, say), or
        not at all (False).
    progress : callable, optional
        Called with no arguments after each of the T steps (``tqdm(...).update`` fits).

    Returns
    -------
    torch.Tensor
        Samples of ``shape``, within the bounds of ``clip_x0``.
    """
    x = _starting_point(shape, generator, device, dtype, noise)
    for t in reversed(range(diffusion.num_timesteps)):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        x0_hat, _ = _predict(denoiser, diffusion, x, t_batch, clip_x0)
        mean, variance, _ = diffusion.q_posterior(x0_hat, x, t_batch)
        if t > 0:
            x = mean + variance.sqrt() * _randn(x, generator)
        else:
            x = mean
        if progress is not None:
            progress()
    return x


@torch.no_grad()
def ddim_sample(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    *,
    steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    noise: torch.Tensor | None = None,
    clip_x0: bool | X0Bounds = True,
    progress: Callable[[], object] | None = None,
) -> torch.Tensor:
    """DDIM sampling over a subsequence of the timesteps (Song et al. 2021, eq. 12).

    Visits ``timestep_subsequence(T, steps)`` from T-1 down, and feeds the network those original
    indices. From index t to the next lower index p (with ``ab_p = 1`` after the last one):

        x_p = sqrt(ab_p) x0_hat + sqrt(1 - ab_p - sigma^2) eps_hat + sigma z
        sigma = eta sqrt((1 - ab_p) / (1 - ab_t)) sqrt(1 - ab_t / ab_p)

    ``eta = 0`` is deterministic given the starting noise; ``eta = 1`` with ``steps = T`` is the
    ancestral DDPM sampler. When ``clip_x0`` clamps ``x0_hat``, ``eps_hat`` is recomputed from
    the clamped value so that the step stays on the line through x_t that the two define.

    Parameters
    ----------
    denoiser : callable
        ``(x_t (B, ...), t (B,) long) -> eps`` of ``x_t``'s shape; called ``steps`` times.
    diffusion : GaussianDiffusion
        The schedule the denoiser was trained with.
    shape : sequence of int
        (B, ...) shape of the samples.
    steps : int
        Number of network evaluations, 1 <= steps <= T.
    eta : float
        Stochasticity in [0, 1]: the fraction of the DDPM posterior standard deviation added.
    generator : torch.Generator or None
        Source of the starting noise (unless ``noise`` is given) and, when ``eta > 0``, of the
        noise of each step. May be None only when nothing is drawn (``noise`` given, ``eta = 0``).
    device : torch.device or str, optional
        Device to sample on; by default that of ``noise`` if given, else the generator's.
    dtype : torch.dtype, optional
        Dtype of the samples; by default that of ``noise`` if given, else float32.
    noise : torch.Tensor, optional
        The starting x_{T-1} of ``shape``; drawn if omitted.
    clip_x0 : bool or (low, high)
        As in :func:`ddpm_sample`: clamp each x_0 prediction to [-1, 1] (True), to the given
        bounds, or not at all (False).
    progress : callable, optional
        Called with no arguments after each of the ``steps`` steps.

    Returns
    -------
    torch.Tensor
        Samples of ``shape``: the last ``x0_hat``, within the bounds of ``clip_x0``.
    """
    if not 0.0 <= eta <= 1.0:
        # Beyond 1 the variance can exceed 1 - ab_p and the deterministic part is undefined.
        raise ValueError(f"eta must be in [0, 1], got {eta!r}")
    indices = timestep_subsequence(diffusion.num_timesteps, steps)
    x = _starting_point(shape, generator, device, dtype, noise)
    alphas_cumprod = diffusion.alphas_cumprod
    for position in reversed(range(steps)):
        t = indices[position]
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        x0_hat, eps_hat = _predict(denoiser, diffusion, x, t_batch, clip_x0)
        # The step's scalars in float64 Python floats: all samples share t, and 1 - ab near
        # t = 0 is too small for a float32 subtraction.
        ab_t = float(alphas_cumprod[t])
        ab_p = float(alphas_cumprod[indices[position - 1]]) if position > 0 else 1.0
        sigma = eta * math.sqrt((1.0 - ab_p) / (1.0 - ab_t) * (1.0 - ab_t / ab_p))
        direction = math.sqrt(max(1.0 - ab_p - sigma * sigma, 0.0))
        x = math.sqrt(ab_p) * x0_hat + direction * eps_hat
        # sigma is exactly 0 at the last step (ab_p = 1); skipping the draw there also keeps the
        # noise sequence aligned with ddpm_sample's for the same generator.
        if eta > 0.0 and position > 0:
            x = x + sigma * _randn(x, generator)
        if progress is not None:
            progress()
    return x


def _predict(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    x: torch.Tensor,
    t: torch.Tensor,
    clip_x0: bool | X0Bounds,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Network call: (x0_hat, eps_hat) at x_t, both consistent with x_t after any clamping."""
    eps_hat = denoiser(x, t)
    x0_hat = diffusion.predict_x0(x, t, eps_hat)
    if clip_x0 is not False:
        low, high = (-1.0, 1.0) if clip_x0 is True else clip_x0
        low = torch.as_tensor(low, dtype=x0_hat.dtype, device=x0_hat.device)
        high = torch.as_tensor(high, dtype=x0_hat.dtype, device=x0_hat.device)
        x0_hat = torch.clamp(x0_hat, low, high)
        eps_hat = diffusion.predict_eps(x, t, x0_hat)
    return x0_hat, eps_hat


def _starting_point(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """x_{T-1}: the given ``noise`` (checked and moved) or a fresh standard normal draw."""
    shape = tuple(int(n) for n in shape)
    if noise is not None:
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)} but shape is {shape}")
        return noise.to(
            device=noise.device if device is None else device,
            dtype=noise.dtype if dtype is None else dtype,
        )
    if generator is None:
        raise ValueError("a generator is required to draw the starting noise")
    dtype = torch.float32 if dtype is None else dtype
    x = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return x.to(generator.device if device is None else device)


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of ``like``'s shape, dtype and device, drawn from ``generator``."""
    if generator is None:
        raise ValueError("a generator is required for a stochastic sampler (eta > 0)")
    z = torch.randn(like.shape, generator=generator, device=generator.device, dtype=like.dtype)
    return z.to(like.device)
