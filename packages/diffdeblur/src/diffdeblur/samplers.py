"""Samplers of the reverse process: ancestral DDPM (Ho et al. 2020), DDIM (Song et al. 2021), and
the blurred-to-sharp bridge's (:mod:`diffdeblur.bridge`).

Every sampler is a plain function with one signature::

    sampler(denoiser, process, shape, *, steps, eta, generator, device=None, dtype=None,
            start=None, clip_x0=True, progress=None) -> x0

of a denoiser callable ``denoiser(x_t, t) -> prediction`` with ``x_t`` of shape (B, ...) and
``t`` a (B,) long tensor of timestep indices of the trained process, and of the process itself
(a :class:`~diffdeblur.diffusion.GaussianDiffusion` or a :class:`~diffdeblur.bridge.BlurBridge`)
for the schedule and for what the prediction means. The samplers never see the network, the
conditioning image or the image size: a caller that restores large images wraps the network in
a denoiser that blends patch predictions, and a conditional model captures its blurred input
inside the callable.

They are registered by name in :data:`SAMPLERS`; callers pick one with a :class:`SamplerSpec`
(name, steps, eta), which is validated here and nowhere else. A new sampler is a function and a
registry entry in this file.

Randomness comes only from the ``generator`` argument. Every draw happens on the generator's
device and is then moved to the sampling device, so a CPU generator gives the same starting
noise (and the same DDPM noise sequence) on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .bridge import BlurBridge
from .diffusion import Denoiser, GaussianDiffusion

#: Lower and upper bounds of x_0: floats, or tensors broadcastable to the samples.
X0Bounds = tuple[torch.Tensor | float, torch.Tensor | float]

__all__ = [
    "SAMPLERS",
    "SamplerInfo",
    "SamplerSpec",
    "bridge_sample",
    "ddim_sample",
    "ddpm_sample",
    "timestep_subsequence",
]


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
    steps: int | None = None,
    eta: float = 1.0,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    start: torch.Tensor | None = None,
    clip_x0: bool | X0Bounds = True,
    progress: Callable[[], object] | None = None,
) -> torch.Tensor:
    """Ancestral sampling over all T steps (Ho et al. 2020, Algorithm 2).

    Starting from x_{T-1} ~ N(0, I) (the last index), each step turns the network's prediction
    into ``x0_hat`` (clamped to [-1, 1] when ``clip_x0``), and draws x_{t-1} from
    ``q(x_{t-1} | x_t, x0_hat)``, whose variance is the posterior's ``bt_t`` (the "fixed small"
    choice). The step at t = 0 adds no noise: its variance is 0 and it returns the mean, which is
    ``x0_hat`` itself.

    Parameters
    ----------
    denoiser : callable
        ``(x_t (B, ...), t (B,) long) -> prediction`` of ``x_t``'s shape. It is called T times,
        with t = T-1, ..., 0 (all samples share one t).
    diffusion : GaussianDiffusion
        The schedule and prediction type the denoiser was trained with.
    shape : sequence of int
        (B, ...) shape of the samples.
    steps : int, optional
        None or T: the sampler always takes all T steps (the argument exists for the common
        signature).
    eta : float
        1: the posterior's own noise (the argument exists for the common signature).
    generator : torch.Generator
        Source of the starting noise (unless ``start`` is given) and of the noise of each step.
    device : torch.device or str, optional
        Device to sample on; by default that of ``start`` if given, else the generator's.
    dtype : torch.dtype, optional
        Dtype of the samples; by default that of ``start`` if given, else float32.
    start : torch.Tensor, optional
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
    if steps not in (None, diffusion.num_timesteps) or eta != 1.0:
        raise ValueError(
            f"ddpm takes all {diffusion.num_timesteps} steps with eta 1, got steps={steps!r}, "
            f"eta={eta!r}; use ddim for fewer steps or another eta"
        )
    x = _starting_point(shape, generator, device, dtype, start)
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
    start: torch.Tensor | None = None,
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
        ``(x_t (B, ...), t (B,) long) -> prediction`` of ``x_t``'s shape; called ``steps``
        times.
    diffusion : GaussianDiffusion
        The schedule and prediction type the denoiser was trained with.
    shape : sequence of int
        (B, ...) shape of the samples.
    steps : int
        Number of network evaluations, 1 <= steps <= T.
    eta : float
        Stochasticity in [0, 1]: the fraction of the DDPM posterior standard deviation added.
    generator : torch.Generator or None
        Source of the starting noise (unless ``start`` is given) and, when ``eta > 0``, of the
        noise of each step. May be None only when nothing is drawn (``start`` given, ``eta = 0``).
    device : torch.device or str, optional
        Device to sample on; by default that of ``start`` if given, else the generator's.
    dtype : torch.dtype, optional
        Dtype of the samples; by default that of ``start`` if given, else float32.
    start : torch.Tensor, optional
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
    _check_eta(eta)
    indices = timestep_subsequence(diffusion.num_timesteps, steps)
    x = _starting_point(shape, generator, device, dtype, start)
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


@torch.no_grad()
def bridge_sample(
    denoiser: Denoiser,
    bridge: BlurBridge,
    shape: Sequence[int],
    *,
    steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    start: torch.Tensor | None = None,
    clip_x0: bool | X0Bounds = True,
    progress: Callable[[], object] | None = None,
) -> torch.Tensor:
    """Walk the blurred-to-sharp bridge from t = 1 (the blurred image) to t = 0 in ``steps`` steps.

    Visits the indices ``timestep_subsequence(T, steps)`` from T-1 (t = 1) down, then t = 0; the
    step formula is in :mod:`diffdeblur.bridge`. One step returns the network's sharp-image
    prediction at the blurred image.

    Parameters
    ----------
    denoiser : callable
        ``(x_t (B, ...), t (B,) long) -> x0 prediction``; called ``steps`` times.
    bridge : BlurBridge
        The process the denoiser was trained with.
    shape : sequence of int
        (B, ...) shape of the samples.
    steps : int
        Number of network evaluations, 1 <= steps <= T.
    eta : float
        Fresh noise in [0, 1]: 0 keeps the noise each step infers (deterministic), 1 draws new.
    generator : torch.Generator or None
        Source of the fresh noise; may be None when ``eta = 0``.
    device, dtype : optional
        Of the samples; by default those of ``start``.
    start : torch.Tensor
        The blurred image x_1 of ``shape`` (required: the bridge starts there).
    clip_x0 : bool or (low, high)
        As in :func:`ddpm_sample`.
    progress : callable, optional
        Called with no arguments after each step.

    Returns
    -------
    torch.Tensor
        Samples of ``shape``: the last sharp-image prediction, within the bounds of ``clip_x0``.
    """
    _check_eta(eta)
    if start is None:
        raise ValueError("the bridge starts at the blurred image: pass it as start")
    blurred = _starting_point(shape, generator, device, dtype, start)
    indices = timestep_subsequence(bridge.num_timesteps, steps)
    x = blurred
    for position in reversed(range(steps)):
        index = indices[position]
        t_batch = torch.full((x.shape[0],), index, dtype=torch.long, device=x.device)
        x0_hat = _clip(denoiser(x, t_batch), clip_x0)
        if position == 0:
            x = x0_hat
        else:
            t, s = bridge.time(index), bridge.time(indices[position - 1])
            sigma_t, sigma_s = bridge.sigma(t), bridge.sigma(s)
            mean = (1 - s) * x0_hat + s * blurred
            if sigma_s > 0:
                # The noise x_t carries, as the prediction explains it (none at t = 1).
                noise = (
                    torch.zeros_like(x)
                    if sigma_t == 0
                    else (x - (1 - t) * x0_hat - t * blurred) / sigma_t
                )
                if eta > 0:
                    noise = math.sqrt(1 - eta * eta) * noise + eta * _randn(x, generator)
                mean = mean + sigma_s * noise
            x = mean
        if progress is not None:
            progress()
    return x


def _clip(x0_hat: torch.Tensor, clip_x0: bool | X0Bounds) -> torch.Tensor:
    if clip_x0 is False:
        return x0_hat
    low, high = (-1.0, 1.0) if clip_x0 is True else clip_x0
    low = torch.as_tensor(low, dtype=x0_hat.dtype, device=x0_hat.device)
    high = torch.as_tensor(high, dtype=x0_hat.dtype, device=x0_hat.device)
    return torch.clamp(x0_hat, low, high)


def _predict(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    x: torch.Tensor,
    t: torch.Tensor,
    clip_x0: bool | X0Bounds,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Network call: (x0_hat, eps_hat) at x_t, both consistent with x_t after any clamping."""
    x0_hat, eps_hat = diffusion.split_prediction(x, t, denoiser(x, t))
    if clip_x0 is not False:
        x0_hat = _clip(x0_hat, clip_x0)
        eps_hat = diffusion.predict_eps(x, t, x0_hat)
    return x0_hat, eps_hat


def _check_eta(eta: float) -> None:
    if not 0.0 <= eta <= 1.0:
        # Beyond 1 the variance can exceed 1 - ab_p and the deterministic part is undefined.
        raise ValueError(f"eta must be in [0, 1], got {eta!r}")


def _starting_point(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    start: torch.Tensor | None,
) -> torch.Tensor:
    """x_{T-1}: the given ``start`` (checked and moved) or a fresh standard normal draw."""
    shape = tuple(int(n) for n in shape)
    if start is not None:
        if tuple(start.shape) != shape:
            raise ValueError(f"start has shape {tuple(start.shape)} but shape is {shape}")
        return start.to(
            device=start.device if device is None else device,
            dtype=start.dtype if dtype is None else dtype,
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


#: A sampler: ``(denoiser, process, shape, *, steps, eta, generator, device, dtype, start,
#: clip_x0, progress) -> samples`` (module docstring).
Sampler = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class SamplerInfo:
    """A registered sampler.

    Attributes
    ----------
    function : callable
        The sampler, with the common signature.
    process : type
        The process it walks (:class:`GaussianDiffusion` or :class:`BlurBridge`).
    default_steps : int or None
        Network evaluations when none are asked for; None: all the process's steps, always.
    default_eta : float
        Stochasticity when none is asked for.
    title : str
        Its name in reports.
    summary : str
        One line for ``--help`` and the docs.
    """

    function: Sampler
    process: type
    default_steps: int | None
    default_eta: float
    title: str
    summary: str


#: The samplers by name. Adding one is a function above and an entry here.
SAMPLERS: dict[str, SamplerInfo] = {
    "ddpm": SamplerInfo(
        ddpm_sample, GaussianDiffusion, None, 1.0, "DDPM", "ancestral, all T steps (the thesis)"
    ),
    "ddim": SamplerInfo(
        ddim_sample, GaussianDiffusion, 50, 0.0, "DDIM", "DDIM, --steps steps, --eta"
    ),
    # One step: at the CPU budgets measured, more steps of a bridge lowered its PSNR and LPIPS
    # alike (docs/diffdeblur.md, "Measured comparison").
    "bridge": SamplerInfo(
        bridge_sample,
        BlurBridge,
        1,
        0.0,
        "Bridge",
        "the bridge from the blurred image, --steps steps",
    ),
}


@dataclass(frozen=True)
class SamplerSpec:
    """Which sampler, with how many steps and how much noise: the one place these are checked.

    Parameters
    ----------
    name : str
        A key of :data:`SAMPLERS`. Default None: the natural sampler of the model's process
        (``ddim`` for Gaussian diffusion, ``bridge`` for the bridge), chosen by :meth:`resolve`.
    steps : int, optional
        Network evaluations, >= 1 (and at most the process's T, checked by :meth:`resolve`);
        None: the sampler's default, at most T. ``ddpm`` always takes all T steps.
    eta : float, optional
        Stochasticity in [0, 1]; None: the sampler's default (``ddpm``: 1, the others 0).

    Raises
    ------
    ValueError
        For an unknown name, steps < 1, or eta outside [0, 1]; the message names the option.

    Examples
    --------
    >>> SamplerSpec("ddim", steps=20, eta=0.0).label
    'DDIM, 20 steps, eta 0'
    >>> SamplerSpec("euler")
    Traceback (most recent call last):
        ...
    ValueError: unknown sampler 'euler'; choose from ddpm, ddim, bridge
    """

    name: str | None = None
    steps: int | None = None
    eta: float | None = None

    def __post_init__(self) -> None:
        if self.name is not None and self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}; choose from {', '.join(SAMPLERS)}")
        if self.steps is not None and (isinstance(self.steps, bool) or self.steps < 1):
            raise ValueError(f"steps must be >= 1, got {self.steps!r}")
        if self.eta is not None:
            _check_eta(self.eta)
        if self.name == "ddpm" and self.eta not in (None, 1.0):
            raise ValueError(f"ddpm's noise is the posterior's (eta 1), got eta={self.eta!r}")

    def resolve(self, process: GaussianDiffusion | BlurBridge) -> SamplerSpec:
        """This specification with every default filled in for ``process``; checks that the
        sampler walks that kind of process and that the steps fit in its T."""
        name = self.name
        if name is None:
            name = "bridge" if isinstance(process, BlurBridge) else "ddim"
        info = SAMPLERS[name]
        if not isinstance(process, info.process):
            fitting = [n for n, i in SAMPLERS.items() if isinstance(process, i.process)]
            raise ValueError(
                f"sampler {name!r} cannot sample this model's process "
                f"({type(process).__name__}); choose from {', '.join(fitting)}"
            )
        # A default never asks for more steps than the process has.
        steps = self.steps if self.steps is not None else info.default_steps
        if self.steps is None and info.default_steps is not None:
            steps = min(info.default_steps, process.num_timesteps)
        if info.default_steps is None:
            if self.steps not in (None, process.num_timesteps):
                raise ValueError(
                    f"{name} takes all {process.num_timesteps} steps; use ddim for fewer"
                )
            steps = process.num_timesteps
        if steps > process.num_timesteps:
            raise ValueError(
                f"steps must be <= {process.num_timesteps}, the model's diffusion steps, "
                f"got {steps}"
            )
        eta = self.eta if self.eta is not None else info.default_eta
        return SamplerSpec(name, steps, eta)

    @property
    def label(self) -> str:
        """``"DDIM, 20 steps, eta 0"``: for reports (what :meth:`resolve` would fill in shows
        as ``default``)."""
        title = SAMPLERS[self.name].title if self.name else "the model's sampler"
        steps = "default" if self.steps is None else self.steps
        eta = "default" if self.eta is None else f"{self.eta:g}"
        return f"{title}, {steps} steps, eta {eta}"

    def sample(
        self,
        denoiser: Denoiser,
        process: GaussianDiffusion | BlurBridge,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        start: torch.Tensor | None = None,
        clip_x0: bool | X0Bounds = True,
        progress: Callable[[], object] | None = None,
    ) -> torch.Tensor:
        """Run the sampler on ``process`` (the arguments are the common signature's)."""
        spec = self.resolve(process)
        return SAMPLERS[spec.name].function(
            denoiser,
            process,
            shape,
            steps=spec.steps,
            eta=spec.eta,
            generator=generator,
            device=device,
            dtype=dtype,
            start=start,
            clip_x0=clip_x0,
            progress=progress,
        )
