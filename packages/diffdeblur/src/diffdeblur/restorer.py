"""What the diffusion models: the four parametrisations behind one restorer.

========== ======================================= ============================================
name       diffused image x0                        restoration
========== ======================================= ============================================
sharp      the sharp image (the thesis)             the sample
residual   s * (sharp - blurred)                    blurred + sample / s
refine     s * (sharp - estimate), where estimate   estimate + sample / s
           = regressor(blurred) (Whang et al. 2022)
regression (no diffusion)                           regressor(blurred)
========== ======================================= ============================================

The denoising U-Net sees the noisy ``x_t`` concatenated on the channel axis with the conditioning
images (the blurred image; for ``refine`` also the estimate). Images are in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.nn import functional

from .config import PARAMETRISATIONS, DiffusionConfig, RestorerConfig, unet_variant
from .diffusion import GaussianDiffusion
from .samplers import ddim_sample, ddpm_sample
from .unet import UNet

__all__ = ["Denoiser", "Restorer", "restorer_config"]

#: A noise predictor over the current noisy image: eps = denoiser(x_t, t).
Denoiser = Callable[[Tensor, Tensor], Tensor]


def restorer_config(
    parametrisation: str = "sharp",
    variant: str = "base",
    *,
    diffusion: DiffusionConfig | None = None,
    residual_scale: float = 5.0,
    image_channels: int = 3,
    **unet_overrides,
) -> RestorerConfig:
    """A consistent :class:`RestorerConfig`: channel counts follow from the parametrisation.

    Parameters
    ----------
    parametrisation : {"sharp", "residual", "refine", "regression"}
    variant : str
        U-Net preset (a key of :data:`diffdeblur.config.VARIANTS`), used for the denoiser and,
        where there is one, the regressor.
    diffusion : DiffusionConfig, optional
        Default: 1000 steps, linear schedule (the thesis).
    residual_scale : float
        Scale of the diffused residual (``residual``, ``refine``), > 0.
    image_channels : int
        3 for RGB.
    **unet_overrides
        Fields of :class:`~diffdeblur.config.UNetConfig` to override in the preset.

    Examples
    --------
    >>> restorer_config("refine", "tiny").unet.in_channels
    9
    """
    if parametrisation not in PARAMETRISATIONS:
        choices = ", ".join(PARAMETRISATIONS)
        raise ValueError(f"unknown parametrisation {parametrisation!r}; choose from {choices}")
    if not residual_scale > 0:
        raise ValueError(f"residual_scale must be > 0, got {residual_scale}")
    conditions = {"sharp": 1, "residual": 1, "refine": 2, "regression": 0}[parametrisation]
    unet = unet_variant(
        variant,
        **{
            **unet_overrides,
            "in_channels": image_channels * (1 + conditions),
            "out_channels": image_channels,
        },
    )
    regressor = None
    if parametrisation in ("refine", "regression"):
        regressor = replace(unet, in_channels=image_channels, global_skip=True)
    return RestorerConfig(
        parametrisation=parametrisation,
        unet=unet,
        regressor=regressor,
        diffusion=diffusion or DiffusionConfig(),
        residual_scale=float(residual_scale),
        image_channels=image_channels,
    )


class Restorer(nn.Module):
    """The trainable restorer: its networks, its diffusion, and how it restores.

    Parameters
    ----------
    config : RestorerConfig

    Examples
    --------
    >>> import torch
    >>> model = Restorer(restorer_config("regression", "tiny"))
    >>> blurred = torch.zeros(1, 3, 24, 24)
    >>> model.restore(blurred, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([1, 3, 24, 24])
    """

    def __init__(self, config: RestorerConfig):
        super().__init__()
        self.config = config
        self.diffusion = GaussianDiffusion(config.diffusion)
        self.denoiser_net = None if config.parametrisation == "regression" else UNet(config.unet)
        self.regressor = None if config.regressor is None else UNet(config.regressor)

    @property
    def is_diffusion(self) -> bool:
        """False for the regression baseline, which has no diffusion."""
        return self.denoiser_net is not None

    def estimate(self, blurred: Tensor) -> Tensor | None:
        """The regressor's estimate of the sharp image (``refine``, ``regression``), else None."""
        if self.regressor is None:
            return None
        # The regressor sees no noise level; t = 0 is only the embedding's fixed input.
        zeros = torch.zeros(blurred.shape[0], dtype=torch.long, device=blurred.device)
        return self.regressor(blurred, zeros)

    def conditioning(self, blurred: Tensor, estimate: Tensor | None) -> Tensor:
        """The images concatenated to x_t at the denoiser's input."""
        return blurred if estimate is None else torch.cat([blurred, estimate], dim=1)

    def _base(self, blurred: Tensor, estimate: Tensor | None) -> Tensor | None:
        parametrisation = self.config.parametrisation
        if parametrisation == "residual":
            return blurred
        if parametrisation == "refine":
            return estimate
        return None

    def to_diffused(self, sharp: Tensor, blurred: Tensor, estimate: Tensor | None) -> Tensor:
        """The image x0 that the diffusion models, for a training pair."""
        base = self._base(blurred, estimate)
        return sharp if base is None else self.config.residual_scale * (sharp - base)

    def from_diffused(self, x0: Tensor, blurred: Tensor, estimate: Tensor | None) -> Tensor:
        """The restored image for a diffused sample x0, clamped to [-1, 1]."""
        base = self._base(blurred, estimate)
        restored = x0 if base is None else base + x0 / self.config.residual_scale
        return restored.clamp(-1.0, 1.0)

    def denoiser(self, conditioning: Tensor) -> Denoiser:
        """The noise predictor eps(x_t, t) for fixed conditioning images.

        ``conditioning`` is broadcast over the batch of x_t when it has batch size 1.
        """
        network = self.denoiser_net
        if network is None:
            raise RuntimeError("the regression parametrisation has no denoiser")

        def predict(x_t: Tensor, t: Tensor) -> Tensor:
            condition = conditioning.expand(x_t.shape[0], *conditioning.shape[1:])
            return network(torch.cat([x_t, condition], dim=1), t)

        return predict

    def training_loss(
        self, blurred: Tensor, sharp: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss of one batch of pairs in [-1, 1], shape (B, C, H, W).

        ``sharp`` and ``residual``: the epsilon MSE. ``regression``: the MSE of the estimate.
        ``refine``: the sum of both; the estimate enters the diffusion detached, so the regressor
        learns from its own loss only and the diffusion from a stable target.

        Returns
        -------
        loss : Tensor
            Scalar to minimise.
        parts : dict of str to float
            The terms, for logging.
        """
        estimate = self.estimate(blurred)
        parts: dict[str, float] = {}
        loss = sharp.new_zeros(())
        if estimate is not None:
            regression = functional.mse_loss(estimate, sharp)
            parts["regression"] = float(regression.detach())
            loss = loss + regression
            estimate = estimate.detach()
        if self.denoiser_net is not None:
            x0 = self.to_diffused(sharp, blurred, estimate)
            denoiser = self.denoiser(self.conditioning(blurred, estimate))
            diffusion = self.diffusion.training_loss(denoiser, x0, generator)
            parts["diffusion"] = float(diffusion.detach())
            loss = loss + diffusion
        return loss, parts

    def forward(
        self, blurred: Tensor, sharp: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        """The training loss (see :meth:`training_loss`); a forward pass so that
        DistributedDataParallel synchronises the gradients it produces."""
        return self.training_loss(blurred, sharp, generator)

    @torch.no_grad()
    def restore(
        self,
        blurred: Tensor,
        *,
        sampler: str = "ddim",
        steps: int = 50,
        eta: float = 0.0,
        generator: torch.Generator,
        progress: Callable[[], None] | None = None,
    ) -> Tensor:
        """Restore a batch of blurred images in [-1, 1] whose size the network accepts.

        Parameters
        ----------
        blurred : Tensor, shape (B, C, H, W)
        sampler : {"ddim", "ddpm"}
            ``ddpm``: ancestral sampling over all diffusion steps (the thesis). ``ddim``: ``steps``
            steps with stochasticity ``eta`` (0: deterministic given the starting noise).
        steps : int
            DDIM steps, 1 to the number of diffusion steps.
        eta : float
            DDIM stochasticity, in [0, 1].
        generator : torch.Generator
            Source of the starting noise and of every sampling draw.
        progress : callable, optional
            Called once per sampling step.

        Returns
        -------
        Tensor, shape (B, C, H, W), in [-1, 1]
        """
        estimate = self.estimate(blurred)
        if self.denoiser_net is None:
            return estimate.clamp(-1.0, 1.0)
        denoiser = self.denoiser(self.conditioning(blurred, estimate))
        return self.sample(
            blurred,
            estimate,
            denoiser,
            sampler=sampler,
            steps=steps,
            eta=eta,
            generator=generator,
            progress=progress,
        )

    @torch.no_grad()
    def sample(
        self,
        blurred: Tensor,
        estimate: Tensor | None,
        denoiser: Denoiser,
        *,
        sampler: str,
        steps: int,
        eta: float,
        generator: torch.Generator,
        progress: Callable[[], None] | None = None,
    ) -> Tensor:
        """Run the reverse process with a given noise predictor and return the restoration.

        The part of :meth:`restore` after the networks are set up: :func:`restore_tiled
        <diffdeblur.tiling.restore_tiled>` calls it with a denoiser that blends patches.

        Parameters
        ----------
        blurred : Tensor, shape (B, C, H, W)
            Blurred images in [-1, 1].
        estimate : Tensor or None
            The regressor's estimate of the same shape (``refine``), else None.
        denoiser : callable
            ``eps = denoiser(x_t, t)`` over full-size ``x_t`` of ``blurred``'s shape.
        sampler, steps, eta, generator, progress
            As :meth:`restore`.

        Returns
        -------
        Tensor, shape (B, C, H, W), in [-1, 1]
        """
        # Each x0 prediction is clamped so that the image it stands for lies in [-1, 1]: the
        # sharp image itself, or base + x0 / s for a residual (without it, the early, noisy
        # predictions of a residual model leave the image range and the sampler diverges).
        base = self._base(blurred, estimate)
        scale = self.config.residual_scale
        clip_x0 = True if base is None else (scale * (-1.0 - base), scale * (1.0 - base))
        common = {
            "generator": generator,
            "device": blurred.device,
            "clip_x0": clip_x0,
            "progress": progress,
        }
        if sampler == "ddpm":
            x0 = ddpm_sample(denoiser, self.diffusion, tuple(blurred.shape), **common)
        elif sampler == "ddim":
            x0 = ddim_sample(
                denoiser, self.diffusion, tuple(blurred.shape), steps=steps, eta=eta, **common
            )
        else:
            raise ValueError(f"unknown sampler {sampler!r}; choose ddim or ddpm")
        return self.from_diffused(x0, blurred, estimate)
