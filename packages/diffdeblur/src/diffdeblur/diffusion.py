"""The Gaussian forward process of a DDPM and its closed-form posteriors (Ho et al. 2020).

Notation, with timestep indices ``t = 0 .. T-1`` (index ``t`` is step ``t + 1`` of the paper):

    beta_t                 noise added at step t (the schedule)
    alpha_t   = 1 - beta_t
    ab_t      = prod_{s <= t} alpha_s          ("alpha bar", ``alphas_cumprod``)
    ab_{-1}   = 1                              (``alphas_cumprod_prev[0]``: no noise before step 0)

    q(x_t | x_0)       = N(sqrt(ab_t) x_0, (1 - ab_t) I)
    q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, bt_t I)      (Ho et al., eq. 6-7)
        c0_t = sqrt(ab_{t-1}) beta_t / (1 - ab_t)
        ct_t = sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t)
        bt_t = beta_t (1 - ab_{t-1}) / (1 - ab_t)

What the network predicts (``DiffusionConfig.prediction``), and how each turns into the pair
(x_0, eps) that the samplers need, with ``a = sqrt(ab_t)`` and ``b = sqrt(1 - ab_t)``:

    eps  (Ho et al. 2020, the thesis)   x_0 = (x_t - b eps) / a
    x0                                  eps = (x_t - a x_0) / b
    v    (Salimans & Ho 2022)           v = a eps - b x_0;  x_0 = a x_t - b v,  eps = b x_t + a v

An eps-network's error is multiplied by ``b / a`` in x_0, about 160 at the last step of the
linear schedule, so an undertrained eps-model's first x_0 is noise; x0 and v bound that error.

This module holds the schedule and these formulas only. It knows nothing of networks,
conditioning or samplers: a denoiser is any callable ``(x_t, t) -> prediction``; the samplers
live in :mod:`diffdeblur.samplers`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .config import PREDICTIONS, DiffusionConfig
from .losses import TrainingLoss, compare

__all__ = ["Denoiser", "GaussianDiffusion", "cosine_betas", "linear_betas"]

#: The network as the samplers see it: ``(x_t of shape (B, ...), t of shape (B,) long) ->``
#: its prediction of x_t's shape (the noise, x_0 or v, as the process's ``prediction`` says).
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Nichol & Dhariwal (2021): the offset keeps beta_0 from being vanishingly small, and the cap
# keeps the last steps from being singular (ab_T -> 0 makes beta_T -> 1).
COSINE_OFFSET = 0.008
MAX_BETA = 0.999


def linear_betas(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Linear schedule of Ho et al. (2020).

    Parameters
    ----------
    timesteps : int
        Number of steps T >= 2.
    beta_start, beta_end : float
        First and last beta, with 0 < beta_start <= beta_end < 1.

    Returns
    -------
    torch.Tensor
        Shape (T,), float64, evenly spaced from ``beta_start`` to ``beta_end`` inclusive.
    """
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(
            f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start!r}, "
            f"beta_end={beta_end!r}"
        )
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_betas(
    timesteps: int, offset: float = COSINE_OFFSET, max_beta: float = MAX_BETA
) -> torch.Tensor:
    """Cosine schedule of Nichol & Dhariwal (2021).

    ``ab(u) = f(u) / f(0)`` with ``f(u) = cos((u / T + s) / (1 + s) * pi / 2) ** 2`` for
    ``u = 0 .. T``, and ``beta_t = min(1 - ab(t + 1) / ab(t), max_beta)`` for index ``t``, so that
    ``alphas_cumprod[t] = ab(t + 1)`` wherever no beta was capped.

    Parameters
    ----------
    timesteps : int
        Number of steps T >= 2.
    offset : float
        The offset s (0.008).
    max_beta : float
        Upper bound of every beta (0.999).

    Returns
    -------
    torch.Tensor
        Shape (T,), float64, in (0, max_beta].
    """
    u = torch.arange(timesteps + 1, dtype=torch.float64)
    f = torch.cos((u / timesteps + offset) / (1.0 + offset) * (math.pi / 2.0)) ** 2
    alpha_bar = f / f[0]
    betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


class GaussianDiffusion:
    """Schedule and closed-form formulas of a Gaussian diffusion process with T steps.

    All schedule tensors are float64 of shape (T,) on the CPU; they are tiny, and float64 (with
    ``1 - ab_t`` computed without cancellation) keeps the small coefficients near t = 0 accurate.
    Each method gathers the coefficients of the timesteps it is given and casts them to the dtype
    and device of its image argument (so it works unchanged for float32/bfloat16 images and for
    devices without float64, such as MPS).

    Parameters
    ----------
    config : DiffusionConfig, optional
        Number of steps and schedule; the default is the thesis's (T = 1000, linear 1e-4..0.02).

    Attributes
    ----------
    config : DiffusionConfig
    num_timesteps : int
        T.
    betas, alphas, alphas_cumprod, alphas_cumprod_prev : torch.Tensor
        (T,) float64. ``alphas_cumprod_prev[t] = alphas_cumprod[t - 1]``, and 1 at t = 0.
    one_minus_alphas_cumprod : torch.Tensor
        (T,) float64; ``1 - ab_t``, computed without cancellation.
    sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod : torch.Tensor
        (T,) float64; the scale of x_0 and of the noise in x_t.
    sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod : torch.Tensor
        (T,) float64; ``sqrt(1 / ab_t)`` and ``sqrt(1 / ab_t - 1)``, for recovering x_0.
    posterior_variance : torch.Tensor
        (T,) float64; ``bt_t``, exactly 0 at t = 0 (x_0 is then known).
    posterior_log_variance_clipped : torch.Tensor
        (T,) float64; ``log(bt_t)`` with ``bt_0`` replaced by ``bt_1`` so the log is finite.
    posterior_mean_coef1, posterior_mean_coef2 : torch.Tensor
        (T,) float64; ``c0_t`` (of x_0) and ``ct_t`` (of x_t) in the posterior mean.

    Examples
    --------
    >>> diffusion = GaussianDiffusion(DiffusionConfig(timesteps=10))
    >>> x0 = torch.zeros(2, 3, 4, 4)
    >>> t = torch.tensor([0, 9])
    >>> diffusion.q_sample(x0, t, torch.ones_like(x0)).shape
    torch.Size([2, 3, 4, 4])
    """

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        config = DiffusionConfig() if config is None else config
        if config.timesteps < 2:
            # The clipped log-variance borrows the value at t = 1, and one step is no process.
            raise ValueError(f"timesteps must be >= 2, got {config.timesteps!r}")
        if config.schedule == "linear":
            betas = linear_betas(config.timesteps, config.beta_start, config.beta_end)
        elif config.schedule == "cosine":
            betas = cosine_betas(config.timesteps)
        else:
            raise ValueError(f"unknown schedule {config.schedule!r}; choose linear or cosine")
        if config.prediction not in PREDICTIONS:
            choices = ", ".join(PREDICTIONS)
            raise ValueError(f"unknown prediction {config.prediction!r}; choose from {choices}")

        self.config = config
        self.prediction = config.prediction
        self.num_timesteps = config.timesteps
        self.betas = betas
        self.alphas = 1.0 - betas
        # ab_t through log1p/expm1: near t = 0, 1 - ab_t ~ beta_0 ~ 1e-4, and the subtraction
        # 1 - cumprod(alphas) would lose four of float64's sixteen digits. This way the t = 0
        # posterior is exactly "x_{-1} = x_0" to a few ulp.
        log_alphas_cumprod = torch.cumsum(torch.log1p(-betas), dim=0)
        self.alphas_cumprod = torch.exp(log_alphas_cumprod)
        self.one_minus_alphas_cumprod = -torch.expm1(log_alphas_cumprod)
        zero = torch.zeros(1, dtype=torch.float64)
        self.alphas_cumprod_prev = torch.cat([zero + 1.0, self.alphas_cumprod[:-1]])

        one_minus_ab = self.one_minus_alphas_cumprod
        one_minus_ab_prev = torch.cat([zero, one_minus_ab[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = one_minus_ab.sqrt()
        self.sqrt_recip_alphas_cumprod = self.alphas_cumprod.rsqrt()
        self.sqrt_recipm1_alphas_cumprod = (one_minus_ab / self.alphas_cumprod).sqrt()

        self.posterior_variance = betas * one_minus_ab_prev / one_minus_ab
        # bt_0 = 0 exactly; log(0) would poison anything that uses the log-variance (a learned
        # variance interpolates in log space), so t = 0 borrows t = 1's value.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = self.alphas_cumprod_prev.sqrt() * betas / one_minus_ab
        self.posterior_mean_coef2 = self.alphas.sqrt() * one_minus_ab_prev / one_minus_ab

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    def _gather(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``table[t]`` as shape (B, 1, ..., 1) in ``like``'s dtype and device.

        Parameters
        ----------
        table : torch.Tensor
            (T,) float64 schedule tensor.
        t : torch.Tensor
            (B,) integer timestep indices in [0, T), with B = ``like.shape[0]``.
        like : torch.Tensor
            (B, ...) the image the coefficients will multiply.
        """
        if t.ndim != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(
                f"t must have shape (B,) = ({like.shape[0]},) to match the batch, "
                f"got {tuple(t.shape)}"
            )
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"t must hold integer timestep indices, got {t.dtype}")
        # Gather on the CPU, where the float64 table lives, and cast before moving: the device
        # may not support float64, and B values are cheap to transfer.
        values = table[t.detach().cpu()].to(like.dtype).to(like.device)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t from q(x_t | x_0) with the given noise.

        Parameters
        ----------
        x0 : torch.Tensor
            (B, ...) clean images, nominally in [-1, 1].
        t : torch.Tensor
            (B,) long timestep indices in [0, T).
        noise : torch.Tensor
            Standard normal noise of ``x0``'s shape.

        Returns
        -------
        torch.Tensor
            ``sqrt(ab_t) x0 + sqrt(1 - ab_t) noise``, of ``x0``'s shape and dtype.
        """
        _check_same_shape(noise, x0, "noise", "x0")
        return (
            self._gather(self.sqrt_alphas_cumprod, t, x0) * x0
            + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al., eq. 6-7).

        Parameters
        ----------
        x0 : torch.Tensor
            (B, ...) clean images (or a prediction of them).
        x_t : torch.Tensor
            (B, ...) noisy images at step t.
        t : torch.Tensor
            (B,) long timestep indices in [0, T).

        Returns
        -------
        mean : torch.Tensor
            Of ``x_t``'s shape: ``c0_t x0 + ct_t x_t``.
        variance : torch.Tensor
            (B, 1, ..., 1), broadcastable: ``bt_t``, which is 0 at t = 0.
        log_variance : torch.Tensor
            (B, 1, ..., 1): ``log(bt_t)``, clipped at t = 0 to ``log(bt_1)``.
        """
        _check_same_shape(x0, x_t, "x0", "x_t")
        mean = (
            self._gather(self.posterior_mean_coef1, t, x_t) * x0
            + self._gather(self.posterior_mean_coef2, t, x_t) * x_t
        )
        variance = self._gather(self.posterior_variance, t, x_t)
        log_variance = self._gather(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert :meth:`q_sample` for x_0 given the noise.

        Parameters
        ----------
        x_t : torch.Tensor
            (B, ...) noisy images at step t.
        t : torch.Tensor
            (B,) long timestep indices in [0, T).
        eps : torch.Tensor
            Noise (or predicted noise) of ``x_t``'s shape.

        Returns
        -------
        torch.Tensor
            ``sqrt(1 / ab_t) x_t - sqrt(1 / ab_t - 1) eps``; not clipped.
        """
        _check_same_shape(eps, x_t, "eps", "x_t")
        return (
            self._gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - self._gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Invert :meth:`q_sample` for the noise given x_0.

        Parameters
        ----------
        x_t : torch.Tensor
            (B, ...) noisy images at step t.
        t : torch.Tensor
            (B,) long timestep indices in [0, T).
        x0 : torch.Tensor
            Clean images (or a prediction of them) of ``x_t``'s shape.

        Returns
        -------
        torch.Tensor
            ``(sqrt(1 / ab_t) x_t - x0) / sqrt(1 / ab_t - 1)``.
        """
        _check_same_shape(x0, x_t, "x0", "x_t")
        return (self._gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / self._gather(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    def sample_timesteps(
        self,
        batch: int,
        generator: torch.Generator,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Timestep indices uniform on {0, ..., T-1}.

        Parameters
        ----------
        batch : int
            Number of indices B.
        generator : torch.Generator
            Source of randomness; the draw happens on its device, so a CPU generator gives the
            same indices whatever ``device`` is.
        device : torch.device or str, optional
            Where the result goes; the generator's device by default.

        Returns
        -------
        torch.Tensor
            (B,) long.
        """
        t = torch.randint(
            0, self.num_timesteps, (batch,), generator=generator, device=generator.device
        )
        return t.to(generator.device if device is None else device)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output for x_t = ``q_sample(x0, t, noise)``.

        Parameters
        ----------
        x0, noise : torch.Tensor
            (B, ...) clean images and the standard normal noise that made x_t.
        t : torch.Tensor
            (B,) long timestep indices in [0, T).

        Returns
        -------
        torch.Tensor
            ``noise`` (eps), ``x0`` (x0), or ``sqrt(ab_t) noise - sqrt(1 - ab_t) x0`` (v).
        """
        _check_same_shape(noise, x0, "noise", "x0")
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        return (
            self._gather(self.sqrt_alphas_cumprod, t, x0) * noise
            - self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0
        )

    def split_prediction(
        self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (x_0, eps) pair that a network output at x_t stands for (module docstring).

        Parameters
        ----------
        x_t : torch.Tensor
            (B, ...) noisy images at step t.
        t : torch.Tensor
            (B,) long timestep indices in [0, T).
        prediction : torch.Tensor
            The network output of ``x_t``'s shape, of the kind ``self.prediction``.

        Returns
        -------
        x0, eps : torch.Tensor
            Consistent with x_t: ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps``. Not clipped.
        """
        _check_same_shape(prediction, x_t, "prediction", "x_t")
        if self.prediction == "eps":
            return self.predict_x0(x_t, t, prediction), prediction
        if self.prediction == "x0":
            return prediction, self.predict_eps(x_t, t, prediction)
        a = self._gather(self.sqrt_alphas_cumprod, t, x_t)
        b = self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_t)
        return a * x_t - b * prediction, b * x_t + a * prediction

    def training_loss(
        self,
        denoiser: Denoiser,
        x0: torch.Tensor,
        generator: torch.Generator,
        loss: TrainingLoss = "mse",
    ) -> torch.Tensor:
        """The simple DDPM loss (Ho et al., eq. 14), on the target of ``self.prediction``.

        Draws t uniform on {0, ..., T-1} per sample and noise ~ N(0, I), both from ``generator``
        (on the generator's device, then moved to ``x0``'s), forms x_t with :meth:`q_sample`, and
        compares ``denoiser(x_t, t)`` with :meth:`target`.

        Parameters
        ----------
        denoiser : callable
            ``(x_t (B, ...), t (B,) long) -> prediction`` of ``x_t``'s shape. Conditioning (the
            blurred image) is the caller's business: it is captured inside the callable.
        x0 : torch.Tensor
            (B, ...) clean targets, nominally in [-1, 1].
        generator : torch.Generator
            The only source of randomness.
        loss : {"mse", "l1", "charbonnier"} or PerceptualLoss
            The loss (:func:`diffdeblur.losses.compare`); ``mse`` is the thesis's. A
            perceptual term is meaningful only where the target is an image (x0 prediction).

        Returns
        -------
        torch.Tensor
            Scalar: the loss averaged over every element, in at least float32.
        """
        t = self.sample_timesteps(x0.shape[0], generator, device=x0.device)
        noise = torch.randn(
            x0.shape, generator=generator, device=generator.device, dtype=x0.dtype
        ).to(x0.device)
        x_t = self.q_sample(x0, t, noise)
        predicted = denoiser(x_t, t)
        _check_same_shape(predicted, noise, "denoiser output", "x_t")
        return compare(predicted, self.target(x0, noise, t), loss)


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    # Broadcasting would silently turn a shape bug into a wrong result, so refuse it.
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}"
        )
