"""What is learnt: the five parametrisations behind one restorer.

========== ======================================= ============================================
name       diffused image x0                        restoration
========== ======================================= ============================================
sharp      the sharp image (the thesis)             the sample
residual   s * (sharp - blurred)                    blurred + sample / s
refine     s * (sharp - estimate), where estimate   estimate + sample / s
           = regressor(blurred) (Whang et al. 2022)
regression (no diffusion)                           regressor(blurred)
bridge     the sharp image, on a bridge that        the sample (one step: a regression
           starts at the blurred image              estimate; :mod:`diffdeblur.bridge`)
========== ======================================= ============================================

The denoising network sees ``x_t`` concatenated on the channel axis with the conditioning images
(the blurred image; for ``refine`` also the estimate). Images are in [-1, 1]. The bridge's
network has a global skip: it predicts the sharp image as a correction of ``x_t``, which at
t = 1 is the blurred image itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn

from .bridge import BlurBridge
from .config import PARAMETRISATIONS, DiffusionConfig, RestorerConfig, UNetConfig, unet_variant
from .diffusion import Denoiser, GaussianDiffusion
from .losses import Loss, pixel_loss
from .nafnet import NAFNet
from .samplers import SamplerSpec
from .unet import UNet

__all__ = ["Denoiser", "Restorer", "build_network", "restorer_config"]


def build_network(config: UNetConfig) -> nn.Module:
    """The network ``config`` describes: a :class:`~diffdeblur.unet.UNet` or, for
    ``backbone="nafnet"``, a :class:`~diffdeblur.nafnet.NAFNet`; both map ``(x, t)`` to an
    image."""
    if config.backbone == "nafnet":
        return NAFNet(config)
    if config.backbone == "unet":
        return UNet(config)
    raise ValueError(f"unknown backbone {config.backbone!r}; choose unet or nafnet")


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
    parametrisation : {"sharp", "residual", "refine", "regression", "bridge"}
    variant : str
        Network preset (a key of :data:`diffdeblur.config.VARIANTS`), used for the denoiser and,
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
    conditions = {"sharp": 1, "residual": 1, "refine": 2, "regression": 0, "bridge": 1}
    unet = unet_variant(
        variant,
        **{
            **unet_overrides,
            "in_channels": image_channels * (1 + conditions[parametrisation]),
            "out_channels": image_channels,
            # The bridge's network corrects x_t, which starts as the blurred image.
            **({"global_skip": True} if parametrisation == "bridge" else {}),
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
    """The trainable restorer: its networks, its process, and how it restores.

    Parameters
    ----------
    config : RestorerConfig

    Attributes
    ----------
    diffusion : GaussianDiffusion or BlurBridge
        The learnt process: the bridge for ``bridge``, Gaussian diffusion otherwise (unused by
        ``regression``).

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
        self.diffusion = (
            BlurBridge(config.diffusion)
            if config.parametrisation == "bridge"
            else GaussianDiffusion(config.diffusion)
        )
        regression = config.parametrisation == "regression"
        self.denoiser_net = None if regression else build_network(config.unet)
        self.regressor = None if config.regressor is None else build_network(config.regressor)

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
        """The network's prediction at (x_t, t) for fixed conditioning images.

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
        self, blurred: Tensor, sharp: Tensor, generator: torch.Generator, loss: Loss = "mse"
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss of one batch of pairs in [-1, 1], shape (B, C, H, W).

        ``sharp`` and ``residual``: the diffusion loss on the prediction's target (the noise,
        x0 or v). ``regression``: the loss of the estimate. ``refine``: the sum of both; the
        estimate enters the diffusion detached, so the regressor learns from its own loss only
        and the diffusion from a stable target. ``bridge``: the loss of the sharp-image
        prediction at a random point of the bridge.

        Parameters
        ----------
        blurred, sharp : Tensor
        generator : torch.Generator
            Source of the timesteps and noise.
        loss : {"mse", "l1", "charbonnier"}
            The pixel loss (:func:`diffdeblur.losses.pixel_loss`).

        Returns
        -------
        loss : Tensor
            Scalar to minimise.
        parts : dict of str to float
            The terms, for logging.
        """
        estimate = self.estimate(blurred)
        parts: dict[str, float] = {}
        total = sharp.new_zeros(())
        if estimate is not None:
            regression = pixel_loss(estimate, sharp, loss)
            parts["regression"] = float(regression.detach())
            total = total + regression
            estimate = estimate.detach()
        if self.denoiser_net is not None:
            x0 = self.to_diffused(sharp, blurred, estimate)
            denoiser = self.denoiser(self.conditioning(blurred, estimate))
            if isinstance(self.diffusion, BlurBridge):
                diffusion = self.diffusion.training_loss(denoiser, x0, blurred, generator, loss)
            else:
                diffusion = self.diffusion.training_loss(denoiser, x0, generator, loss)
            parts["diffusion"] = float(diffusion.detach())
            total = total + diffusion
        return total, parts

    def forward(
        self, blurred: Tensor, sharp: Tensor, generator: torch.Generator, loss: Loss = "mse"
    ) -> tuple[Tensor, dict[str, float]]:
        """The training loss (see :meth:`training_loss`); a forward pass so that
        DistributedDataParallel synchronises the gradients it produces."""
        return self.training_loss(blurred, sharp, generator, loss)

    @torch.no_grad()
    def restore(
        self,
        blurred: Tensor,
        *,
        sampler: SamplerSpec | None = None,
        generator: torch.Generator | None,
        progress: Callable[[], None] | None = None,
    ) -> Tensor:
        """Restore a batch of blurred images in [-1, 1] whose size the network accepts.

        Parameters
        ----------
        blurred : Tensor, shape (B, C, H, W)
        sampler : SamplerSpec, optional
            Sampler, steps and eta; default: the process's own sampler with its default steps
            (DDIM, 50 steps, eta 0 for Gaussian diffusion; the bridge's, 1 step). Unused by
            ``regression``.
        generator : torch.Generator or None
            Source of the starting noise and of every sampling draw; may be None when nothing is
            drawn (``regression``, or the bridge with eta 0).
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
            blurred, estimate, denoiser, sampler=sampler, generator=generator, progress=progress
        )

    @torch.no_grad()
    def sample(
        self,
        blurred: Tensor,
        estimate: Tensor | None,
        denoiser: Denoiser,
        *,
        sampler: SamplerSpec | None = None,
        generator: torch.Generator | None,
        progress: Callable[[], None] | None = None,
    ) -> Tensor:
        """Run the reverse process with a given network callable and return the restoration.

        The part of :meth:`restore` after the networks are set up: :func:`restore_tiled
        <diffdeblur.tiling.restore_tiled>` calls it with a denoiser that blends patches.

        Parameters
        ----------
        blurred : Tensor, shape (B, C, H, W)
            Blurred images in [-1, 1].
        estimate : Tensor or None
            The regressor's estimate of the same shape (``refine``), else None.
        denoiser : callable
            ``prediction = denoiser(x_t, t)`` over full-size ``x_t`` of ``blurred``'s shape.
        sampler, generator, progress
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
        # The bridge starts at the blurred image; Gaussian diffusion from noise it draws.
        start = blurred if isinstance(self.diffusion, BlurBridge) else None
        x0 = (sampler or SamplerSpec()).sample(
            denoiser,
            self.diffusion,
            tuple(blurred.shape),
            generator=generator,
            device=blurred.device,
            start=start,
            clip_x0=clip_x0,
            progress=progress,
        )
        return self.from_diffused(x0, blurred, estimate)
