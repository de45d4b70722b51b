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

Deconvolution
-------------
With a :class:`~diffdeblur.config.DeconvolutionConfig`, any parametrisation gains a front end
that uses what the generator knows (the stored kernels):

1. a :class:`~diffdeblur.kernel_estimation.KernelEstimator` predicts the kernel from the whole
   blurred image (``kernel="estimated"``, blind), or the stored kernel is given
   (``kernel="true"``, non-blind: an upper bound for experiments);
2. :class:`~diffdeblur.deconvolution.WienerDeconvolution` deconvolves the blurred image with it,
   with a learned balance, and the result is clipped to the image range;
3. the networks see the deconvolved image after the blurred one on the channel axis (the
   *observation*), and refine it: they remove the ringing and noise of a right kernel and learn
   to ignore the deconvolution where the kernel is wrong. The regressor's global skip still adds
   the blurred image, so an untrained refiner returns its input, not the deconvolution.

The kernel is estimated and the image deconvolved once, on the whole image (a larger image gives
the estimator more evidence); the networks then run on the observation, in patches for large
images. Training adds the estimator's kernel loss (weight ``kernel_weight``) and re-blur loss
(:mod:`diffdeblur.kernel_estimation`) to the restoration loss, and the restoration loss reaches
the estimator and the balance through the differentiable Wiener filter (end to end).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn

from .bridge import BlurBridge
from .config import (
    PARAMETRISATIONS,
    DeconvolutionConfig,
    DiffusionConfig,
    RestorerConfig,
    UNetConfig,
    unet_variant,
)
from .deconvolution import WienerDeconvolution
from .diffusion import Denoiser, GaussianDiffusion
from .kernel_estimation import KernelEstimator, kernel_loss, reblur_loss
from .losses import TrainingLoss, compare
from .nafnet import NAFNet
from .pixels import to_signed, to_unit
from .samplers import SamplerSpec
from .tiling import PatchGrid, default_overlap, in_batches, tiled_denoiser
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
    deconvolution: DeconvolutionConfig | None = None,
    blurred_skip: bool = False,
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
    deconvolution : DeconvolutionConfig, optional
        A deconvolution front end (module documentation, Deconvolution); its deconvolved image
        is one more conditioning image for every network.
    blurred_skip : bool
        A skip from the blurred image for ``sharp`` with x0 or v prediction
        (:attr:`RestorerConfig.blurred_skip`).
    **unet_overrides
        Fields of :class:`~diffdeblur.config.UNetConfig` to override in the preset.

    Examples
    --------
    >>> restorer_config("refine", "tiny").unet.in_channels
    9
    >>> from diffdeblur.config import DeconvolutionConfig
    >>> front = DeconvolutionConfig(kernel_size=33)
    >>> restorer_config("regression", "tiny", deconvolution=front).regressor.in_channels
    6
    """
    if parametrisation not in PARAMETRISATIONS:
        choices = ", ".join(PARAMETRISATIONS)
        raise ValueError(f"unknown parametrisation {parametrisation!r}; choose from {choices}")
    if not residual_scale > 0:
        raise ValueError(f"residual_scale must be > 0, got {residual_scale}")
    conditions = {"sharp": 1, "residual": 1, "refine": 2, "regression": 0, "bridge": 1}
    deconvolved = 0 if deconvolution is None else 1
    unet = unet_variant(
        variant,
        **{
            **unet_overrides,
            "in_channels": image_channels * (1 + conditions[parametrisation] + deconvolved),
            "out_channels": image_channels,
            # The bridge's network corrects x_t, which starts as the blurred image.
            **({"global_skip": True} if parametrisation == "bridge" else {}),
        },
    )
    regressor = None
    if parametrisation in ("refine", "regression"):
        regressor = replace(unet, in_channels=image_channels * (1 + deconvolved), global_skip=True)
    return RestorerConfig(
        parametrisation=parametrisation,
        unet=unet,
        regressor=regressor,
        diffusion=diffusion or DiffusionConfig(),
        residual_scale=float(residual_scale),
        image_channels=image_channels,
        deconvolution=deconvolution,
        blurred_skip=blurred_skip,
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
    kernel_estimator : KernelEstimator or None
        With a deconvolution front end that estimates its kernel.
    wiener : WienerDeconvolution or None
        With a deconvolution front end.

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
        if config.blurred_skip and (
            config.parametrisation != "sharp" or config.diffusion.prediction == "eps"
        ):
            raise ValueError(
                "blurred_skip applies to the sharp parametrisation with x0 or v prediction, not "
                f"to {config.parametrisation} with {config.diffusion.prediction}"
            )
        self.config = config
        self.diffusion = (
            BlurBridge(config.diffusion)
            if config.parametrisation == "bridge"
            else GaussianDiffusion(config.diffusion)
        )
        regression = config.parametrisation == "regression"
        self.denoiser_net = None if regression else build_network(config.unet)
        self.regressor = None if config.regressor is None else build_network(config.regressor)
        front = config.deconvolution
        self.kernel_estimator = None
        if front is not None and front.kernel == "estimated":
            self.kernel_estimator = KernelEstimator(
                front.kernel_size, front.estimator_channels, front.estimator_dilations
            )
        self.wiener = None if front is None else WienerDeconvolution(front.balance)

    @property
    def is_diffusion(self) -> bool:
        """False for the regression baseline, which has no diffusion."""
        return self.denoiser_net is not None

    def kernel(self, blurred: Tensor, kernel: Tensor | None = None) -> Tensor:
        """The kernels the front end deconvolves ``blurred`` (B, C, H, W) with, (B, K', K').

        ``kernel`` when given (it must be given to a ``kernel="true"`` restorer), else the
        estimator's estimate from the whole images, computed in float32 whatever the autocast
        precision.
        """
        front = self.config.deconvolution
        if front is None:
            raise RuntimeError("this restorer has no deconvolution front end")
        if kernel is None:
            if self.kernel_estimator is None:
                raise ValueError(
                    "this restorer deconvolves with the true kernel (non-blind): pass the kernel; "
                    "it cannot restore an image whose kernel is unknown"
                )
            # Under bf16 autocast the estimator collapsed to the identity kernel within a few
            # hundred steps (docs/diffdeblur.md); its float32 runs did not.
            with torch.autocast(blurred.device.type, enabled=False):
                return self.kernel_estimator(blurred.float())
        size = front.kernel_size
        if kernel.ndim != 3 or kernel.shape[0] not in (1, blurred.shape[0]):
            raise ValueError(f"kernel must be (B, {size}, {size}), got {tuple(kernel.shape)}")
        if tuple(kernel.shape[1:]) != (size, size):
            raise ValueError(
                f"this restorer deconvolves with {size}x{size} kernels (the odd grid of its "
                f"training data), got {tuple(kernel.shape[1:])}"
            )
        return kernel.expand(blurred.shape[0], size, size)

    def deconvolve(self, blurred: Tensor, kernel: Tensor) -> Tensor:
        """Wiener deconvolution of images in [-1, 1] with the learned balance, clipped to [-1, 1].

        Computed in float32 (the FFTs), whatever the autocast precision.
        """
        if self.wiener is None:
            raise RuntimeError("this restorer has no deconvolution front end")
        with torch.autocast(blurred.device.type, enabled=False):
            restored = self.wiener(to_unit(blurred.float()), kernel.float())
        return to_signed(restored.clamp(0, 1)).to(blurred.dtype)

    def observe(self, blurred: Tensor, kernel: Tensor | None = None) -> Tensor:
        """What the networks see of blurred images in [-1, 1]: the images themselves or, with a
        deconvolution front end, the images and their deconvolution on the channel axis.

        Parameters
        ----------
        blurred : Tensor, shape (B, C, H, W)
        kernel : Tensor, shape (B or 1, K', K'), optional
            The kernels to deconvolve with (required by a ``kernel="true"`` restorer; otherwise
            they replace the estimate). Refused by a restorer without the front end.

        Returns
        -------
        Tensor, shape (B, C, H, W) or (B, 2C, H, W)
        """
        if self.wiener is None:
            if kernel is not None:
                raise ValueError("this restorer has no deconvolution front end to take a kernel")
            return blurred
        return torch.cat([blurred, self.deconvolve(blurred, self.kernel(blurred, kernel))], dim=1)

    def _blurred(self, observed: Tensor) -> Tensor:
        return observed[:, : self.config.image_channels]

    def estimate(self, observed: Tensor) -> Tensor | None:
        """The regressor's estimate of the sharp image (``refine``, ``regression``), else None.

        ``observed``: :meth:`observe`'s output (the blurred images, without a front end).
        """
        if self.regressor is None:
            return None
        # The regressor sees no noise level; t = 0 is only the embedding's fixed input.
        zeros = torch.zeros(observed.shape[0], dtype=torch.long, device=observed.device)
        return self.regressor(observed, zeros)

    def conditioning(self, observed: Tensor, estimate: Tensor | None) -> Tensor:
        """The images concatenated to x_t at the denoiser's input."""
        return observed if estimate is None else torch.cat([observed, estimate], dim=1)

    def _base(self, observed: Tensor, estimate: Tensor | None) -> Tensor | None:
        parametrisation = self.config.parametrisation
        if parametrisation == "residual":
            return self._blurred(observed)
        if parametrisation == "refine":
            return estimate
        return None

    def to_diffused(self, sharp: Tensor, observed: Tensor, estimate: Tensor | None) -> Tensor:
        """The image x0 that the diffusion models, for a training pair."""
        base = self._base(observed, estimate)
        return sharp if base is None else self.config.residual_scale * (sharp - base)

    def from_diffused(self, x0: Tensor, observed: Tensor, estimate: Tensor | None) -> Tensor:
        """The restored image for a diffused sample x0, clamped to [-1, 1]."""
        base = self._base(observed, estimate)
        restored = x0 if base is None else base + x0 / self.config.residual_scale
        return restored.clamp(-1.0, 1.0)

    def denoiser(self, conditioning: Tensor) -> Denoiser:
        """The network's prediction at (x_t, t) for fixed conditioning images.

        ``conditioning`` is broadcast over the batch of x_t when it has batch size 1. With
        ``blurred_skip``, the prediction is the network's output plus the target that the blurred
        image ``y`` would have as a noiseless x0, ``target(y, 0, t)``: ``y`` for x0 prediction,
        ``-sqrt(1 - ab_t) y`` for v. The x0 it stands for at pure noise is then ``y`` minus the
        network's output, so an untrained network starts from the blurred image, not from a
        grey one, and the network learns a correction, as the regressor does with its global
        skip. Training and sampling both go through here, so they agree.
        """
        network = self.denoiser_net
        if network is None:
            raise RuntimeError("the regression parametrisation has no denoiser")
        skip = self.config.blurred_skip

        def predict(x_t: Tensor, t: Tensor) -> Tensor:
            condition = conditioning.expand(x_t.shape[0], *conditioning.shape[1:])
            output = network(torch.cat([x_t, condition], dim=1), t)
            if skip:
                # In the blurred image's precision: under bf16 autocast the sum is float32.
                blurred = self._blurred(condition)
                output = output + self.diffusion.target(blurred, torch.zeros_like(blurred), t)
            return output

        return predict

    def training_loss(
        self,
        blurred: Tensor,
        sharp: Tensor,
        generator: torch.Generator,
        loss: TrainingLoss = "mse",
        kernel: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss of one batch of pairs in [-1, 1], shape (B, C, H, W).

        ``sharp`` and ``residual``: the diffusion loss on the prediction's target (the noise,
        x0 or v). ``regression``: the loss of the estimate. ``refine``: the sum of both; the
        estimate enters the diffusion detached, so the regressor learns from its own loss only
        and the diffusion from a stable target. ``bridge``: the loss of the sharp-image
        prediction at a random point of the bridge. With a deconvolution front end that
        estimates its kernel, also ``kernel_weight`` times the kernel loss and the re-blur loss
        of the estimate (module documentation, Deconvolution).

        Parameters
        ----------
        blurred, sharp : Tensor
        generator : torch.Generator
            Source of the timesteps and noise.
        loss : {"mse", "l1", "charbonnier"} or PerceptualLoss
            The loss of the network's target (:func:`diffdeblur.losses.compare`).
        kernel : Tensor, shape (B, K', K'), optional
            The stored kernels of the pairs (the ``"kernel"`` of :mod:`diffdeblur.data`), which
            a deconvolution front end needs: the estimator's target, or the kernel itself.

        Returns
        -------
        loss : Tensor
            Scalar to minimise.
        parts : dict of str to float
            The terms, for logging.
        """
        parts: dict[str, float] = {}
        total = sharp.new_zeros(())
        observed = blurred
        front = self.config.deconvolution
        if front is not None:
            if kernel is None:
                raise ValueError(
                    "a restorer with a deconvolution front end trains on stored kernels: "
                    "csb-generate datasets have them, GoPro-style folders do not"
                )
            used = kernel
            if self.kernel_estimator is not None:
                used = self.kernel(blurred)
                kernel_term = kernel_loss(used.float(), kernel)
                reblur_term = reblur_loss(used.float(), sharp.float(), blurred.float())
                parts["kernel"] = float(kernel_term.detach())
                parts["reblur"] = float(reblur_term.detach())
                total = total + front.kernel_weight * kernel_term + reblur_term
            observed = self.observe(blurred, used)
        estimate = self.estimate(observed)
        if estimate is not None:
            regression = compare(estimate, sharp, loss)
            parts["regression"] = float(regression.detach())
            total = total + regression
            estimate = estimate.detach()
        if self.denoiser_net is not None:
            x0 = self.to_diffused(sharp, observed, estimate)
            denoiser = self.denoiser(self.conditioning(observed, estimate))
            if isinstance(self.diffusion, BlurBridge):
                diffusion = self.diffusion.training_loss(denoiser, x0, blurred, generator, loss)
            else:
                diffusion = self.diffusion.training_loss(denoiser, x0, generator, loss)
            parts["diffusion"] = float(diffusion.detach())
            total = total + diffusion
        return total, parts

    def forward(
        self,
        blurred: Tensor,
        sharp: Tensor,
        generator: torch.Generator,
        loss: TrainingLoss = "mse",
        kernel: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """The training loss (see :meth:`training_loss`); a forward pass so that
        DistributedDataParallel synchronises the gradients it produces."""
        return self.training_loss(blurred, sharp, generator, loss, kernel)

    @torch.no_grad()
    def restore(
        self,
        blurred: Tensor,
        *,
        sampler: SamplerSpec | None = None,
        generator: torch.Generator | None,
        progress: Callable[[], None] | None = None,
        kernel: Tensor | None = None,
        patch_size: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
    ) -> Tensor:
        """Restore a batch of blurred images in [-1, 1], whole or in overlapping patches.

        With ``patch_size``, the networks run on overlapping patches whose predictions are
        blended at every sampling step (:mod:`diffdeblur.tiling`); without, on the whole image,
        which is the same path with a single patch. A deconvolution front end runs once on the
        whole images, before they are cut: the kernel is estimated from all their pixels.

        Parameters
        ----------
        blurred : Tensor, shape (B, C, H, W)
            Any H, W >= 1 (the networks pad internally).
        sampler : SamplerSpec, optional
            Sampler, steps and eta; default: the process's own sampler with its default steps
            (DDIM, 50 steps, eta 0 for Gaussian diffusion; the bridge's, 1 step). Unused by
            ``regression``.
        generator : torch.Generator or None
            Source of the starting noise and of every sampling draw; may be None when nothing is
            drawn (``regression``, or the bridge with eta 0).
        progress : callable, optional
            Called once per sampling step.
        kernel : Tensor, shape (B or 1, K', K'), optional
            For a deconvolution front end: the kernels (:meth:`observe`).
        patch_size : int, optional
            Patch side in pixels (the training patch size is the natural one); default: the
            whole image, one patch.
        overlap : int, optional
            Pixels shared by neighbouring patches, 0 <= overlap < patch_size [default:
            :func:`~diffdeblur.tiling.default_overlap`].
        batch_size : int, optional
            Patches per network call, >= 1 (memory against speed; the result does not depend on
            it) [default: every patch at once].

        Returns
        -------
        Tensor, shape (B, C, H, W), in [-1, 1]
            With one patch covering the whole image, the same as without ``patch_size``.
        """
        if blurred.ndim != 4:
            raise ValueError(f"blurred must have shape (B, C, H, W), got {tuple(blurred.shape)}")
        height, width = blurred.shape[-2:]
        if patch_size is None:
            grid = PatchGrid(height, width, max(height, width), 0)
        else:
            overlap = default_overlap(patch_size) if overlap is None else overlap
            grid = PatchGrid(height, width, patch_size, overlap)
        batch_size = blurred.shape[0] * len(grid) if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        observed = self.observe(blurred, kernel)
        estimate = None
        if self.regressor is not None:
            estimate = grid.merge(in_batches(self.estimate, [grid.split(observed)], batch_size))
        if self.denoiser_net is None:
            return estimate.clamp(-1.0, 1.0)
        conditioning = self.conditioning(observed, estimate)
        denoiser = tiled_denoiser(self.denoiser, conditioning, grid, batch_size)
        return self.sample(
            observed, estimate, denoiser, sampler=sampler, generator=generator, progress=progress
        )

    @torch.no_grad()
    def sample(
        self,
        observed: Tensor,
        estimate: Tensor | None,
        denoiser: Denoiser,
        *,
        sampler: SamplerSpec | None = None,
        generator: torch.Generator | None,
        progress: Callable[[], None] | None = None,
    ) -> Tensor:
        """Run the reverse process with a given network callable and return the restoration.

        The part of :meth:`restore` after the networks are set up, over a denoiser that blends
        patches (:func:`~diffdeblur.tiling.tiled_denoiser`).

        Parameters
        ----------
        observed : Tensor, shape (B, C, H, W) or (B, 2C, H, W)
            :meth:`observe`'s output: the blurred images in [-1, 1] (and their deconvolution).
        estimate : Tensor or None
            The regressor's estimate, (B, C, H, W) (``refine``), else None.
        denoiser : callable
            ``prediction = denoiser(x_t, t)`` over full-size ``x_t`` of shape (B, C, H, W).
        sampler, generator, progress
            As :meth:`restore`.

        Returns
        -------
        Tensor, shape (B, C, H, W), in [-1, 1]
        """
        # Each x0 prediction is clamped so that the image it stands for lies in [-1, 1]: the
        # sharp image itself, or base + x0 / s for a residual (without it, the early, noisy
        # predictions of a residual model leave the image range and the sampler diverges).
        blurred = self._blurred(observed)
        base = self._base(observed, estimate)
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
        return self.from_diffused(x0, observed, estimate)
