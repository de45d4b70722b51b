"""A bridge from the blurred image to the sharp one: the process of the ``bridge`` parametrisation.

Instead of starting from pure noise, the process starts at the blurred image ``y`` and ends at
the sharp image ``x`` (InDI, Delbracio & Milanfar, TMLR 2023; a Brownian bridge between the pair
as in I²SB, Liu et al., ICML 2023). For a time ``t`` in [0, 1]:

    x_t = (1 - t) x + t y + sigma(t) eps,    sigma(t) = s sqrt(t (1 - t)),    eps ~ N(0, I)

so ``x_1 = y`` exactly and ``x_0 = x``; ``s`` (``DiffusionConfig.bridge_noise``) is small, and
the noise vanishes at both ends. The network ``f(x_t, y, t)`` predicts the sharp image ``x``.
The sampler (:func:`diffdeblur.samplers.bridge_sample`) walks from t = 1 down to 0: from t to
s < t,

    x_hat = f(x_t, y, t)
    e_hat = (x_t - (1 - t) x_hat - t y) / sigma(t)           (0 where sigma(t) = 0, at t = 1)
    x_s   = (1 - s) x_hat + s y + sigma(s) (sqrt(1 - eta^2) e_hat + eta z),    z ~ N(0, I)

which is DDIM's step on this path: with ``eta = 0`` it keeps the noise it inferred, with
``eta = 1`` it draws fresh noise. One step (t = 1 to 0) returns ``f(y, y, 1)``: a regression
estimate. An undertrained bridge therefore degrades towards regression, never towards noise;
more steps let it sharpen detail that one regression pass averages away.

Time is discrete, as for the Gaussian diffusion, so that the samplers share the timestep
indices: index ``k = 0 .. T-1`` stands for ``t = (k + 1) / T``, and the network's time
embedding sees ``k``.
"""

from __future__ import annotations

import torch

from .config import DiffusionConfig
from .diffusion import Denoiser
from .losses import TrainingLoss, compare

__all__ = ["BlurBridge"]


class BlurBridge:
    """The blurred-to-sharp bridge with T time levels (module docstring).

    Parameters
    ----------
    config : DiffusionConfig
        ``timesteps`` (T >= 1) and ``bridge_noise`` (s >= 0) are used.

    Attributes
    ----------
    num_timesteps : int
        T.
    noise_scale : float
        s.
    prediction : str
        ``"x0"``: the network predicts the sharp image.

    Examples
    --------
    >>> bridge = BlurBridge(DiffusionConfig(timesteps=4, bridge_noise=0.0))
    >>> sharp, blurred = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    >>> noise = torch.zeros(1, 1, 2, 2)
    >>> bridge.q_sample(sharp, blurred, torch.tensor([1]), noise)[0, 0, 0, 0].item()
    0.5
    """

    prediction = "x0"

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        config = DiffusionConfig() if config is None else config
        if config.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {config.timesteps!r}")
        if not config.bridge_noise >= 0:
            raise ValueError(f"bridge_noise must be >= 0, got {config.bridge_noise!r}")
        self.config = config
        self.num_timesteps = config.timesteps
        self.noise_scale = float(config.bridge_noise)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    def time(self, index: int) -> float:
        """The time t in (0, 1] of a timestep index in [0, T)."""
        return (index + 1) / self.num_timesteps

    def sigma(self, time: float | torch.Tensor) -> float | torch.Tensor:
        """``s sqrt(t (1 - t))``: the noise level at time t (0 at both ends)."""
        return self.noise_scale * (time * (1 - time)) ** 0.5

    def _times(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if t.ndim != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(f"t must have shape (B,) = ({like.shape[0]},), got {tuple(t.shape)}")
        times = (t.detach().to(torch.float64) + 1) / self.num_timesteps
        return times.to(like.dtype).to(like.device).reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(
        self, x0: torch.Tensor, blurred: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """``x_t = (1 - t) x0 + t y + sigma(t) noise`` for timestep indices ``t``.

        Parameters
        ----------
        x0, blurred, noise : torch.Tensor
            (B, ...) sharp images, blurred images (both nominally in [-1, 1]) and standard
            normal noise, of one shape.
        t : torch.Tensor
            (B,) long timestep indices in [0, T).

        Returns
        -------
        torch.Tensor
            x_t, of ``x0``'s shape and dtype.
        """
        for name, tensor in (("blurred", blurred), ("noise", noise)):
            if tensor.shape != x0.shape:
                raise ValueError(
                    f"{name} has shape {tuple(tensor.shape)} but x0 has {tuple(x0.shape)}"
                )
        times = self._times(t, x0)
        return (1 - times) * x0 + times * blurred + self.sigma(times) * noise

    def training_loss(
        self,
        denoiser: Denoiser,
        x0: torch.Tensor,
        blurred: torch.Tensor,
        generator: torch.Generator,
        loss: TrainingLoss = "mse",
    ) -> torch.Tensor:
        """The loss of the sharp-image prediction at a random time level of each sample.

        Draws the index uniform on {0, ..., T-1} and the noise from ``generator`` (on its
        device), forms x_t with :meth:`q_sample` and compares ``denoiser(x_t, t)`` with ``x0``.

        Parameters
        ----------
        denoiser : callable
            ``(x_t (B, ...), t (B,) long) -> x0 prediction``; the blurred image, as the
            condition, is captured inside it.
        x0, blurred : torch.Tensor
            (B, ...) sharp targets and blurred inputs in [-1, 1].
        generator : torch.Generator
            The only source of randomness.
        loss : {"mse", "l1", "charbonnier"} or PerceptualLoss
            The loss (:func:`diffdeblur.losses.compare`).

        Returns
        -------
        torch.Tensor
            Scalar, in at least float32.
        """
        t = torch.randint(
            0, self.num_timesteps, (x0.shape[0],), generator=generator, device=generator.device
        ).to(x0.device)
        noise = torch.randn(
            x0.shape, generator=generator, device=generator.device, dtype=x0.dtype
        ).to(x0.device)
        predicted = denoiser(self.q_sample(x0, blurred, t, noise), t)
        return compare(predicted, x0, loss)
