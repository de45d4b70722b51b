"""A NAFNet-style backbone: a U-shaped network of nonlinear-activation-free blocks.

After Chen, Chu, Zhang and Sun, "Simple Baselines for Image Restoration", ECCV 2022 (NAFNet),
with the time conditioning of the diffusion U-Net added. One network, configured by the same
:class:`~diffdeblur.config.UNetConfig` as :class:`~diffdeblur.unet.UNet` (``backbone="nafnet"``):

* a 3x3 input convolution, then per resolution level ``num_res_blocks`` NAF blocks and a
  stride-2 2x2 convolution between levels (halving the resolution, changing the channels);
* a middle of ``num_res_blocks`` NAF blocks at the lowest resolution;
* a mirrored decoder of ``num_res_blocks`` NAF blocks per level, each level fed the matching
  encoder activation by *addition* (not concatenation), with a 1x1 convolution and a
  ``PixelShuffle(2)`` between levels;
* a zero-initialised 3x3 output convolution.

A NAF block has no nonlinear activation: a channel LayerNorm, 1x1 convolution to twice the
channels, 3x3 depthwise convolution, SimpleGate (the product of the two channel halves),
simplified channel attention and a 1x1 convolution; then a feed-forward branch (LayerNorm, 1x1
to twice the channels, SimpleGate, 1x1). Each branch is added to its input with a learnable
per-channel scale that starts at zero, so every block is the identity at initialisation.

The timestep enters through the U-Net's sinusoidal embedding and two-layer MLP; every block
projects it to a per-channel scale and shift of its first normalised activations. The attention
fields of the configuration are ignored.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import UNetConfig
from .unet import UNet, _zero, build_drawn_from, embed_time, time_mlp

__all__ = ["ChannelScale", "LayerNorm2d", "NAFBlock", "NAFNet", "simple_gate"]

# Variance floor of the channel LayerNorm (NAFNet's value).
NORM_EPS = 1e-6


def simple_gate(x: Tensor) -> Tensor:
    """SimpleGate: (B, 2C, H, W) -> (B, C, H, W), the product of the two channel halves."""
    first, second = x.chunk(2, dim=1)
    return first * second


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel of an NCHW tensor, with per-channel affine.

    Written with plain reductions rather than ``F.layer_norm`` on a permuted tensor so it runs
    under any autocast; the statistics are computed in float32 since a mean and variance over
    a few dozen bfloat16 values lose most of their digits. The output has the input's dtype.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        h = x.float()
        mean = h.mean(dim=1, keepdim=True)
        var = (h - mean).square().mean(dim=1, keepdim=True)
        h = (h - mean) * torch.rsqrt(var + NORM_EPS)
        h = h * self.weight[:, None, None] + self.bias[:, None, None]
        return h.to(x.dtype)


class ChannelScale(nn.Module):
    """Multiply an NCHW tensor by a learnable per-channel factor (NAFNet's beta and gamma)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return x * self.weight.to(x.dtype)


class NAFBlock(nn.Module):
    """NAF block conditioned on the time embedding.

    Parameters
    ----------
    channels : int
    emb_channels : int
        Width of the time embedding.
    dropout : float
        Dropout probability at the end of each branch, before its residual scale.
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.channels = channels
        wide = 2 * channels
        self.norm1 = LayerNorm2d(channels)
        # Zero: the block ignores t at first and learns how much to use it.
        self.emb_proj = _zero(nn.Linear(emb_channels, 2 * channels))
        self.conv1 = nn.Conv2d(channels, wide, 1)
        self.conv2 = nn.Conv2d(wide, wide, 3, padding=1, groups=wide)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1))
        self.conv3 = nn.Conv2d(channels, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.conv4 = nn.Conv2d(channels, wide, 1)
        self.conv5 = nn.Conv2d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.beta = _zero(ChannelScale(channels))
        self.gamma = _zero(ChannelScale(channels))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Apply the block.

        Parameters
        ----------
        x : Tensor, shape (B, channels, H, W)
        emb : Tensor, shape (B, emb_channels)
            Time embedding (after the MLP).

        Returns
        -------
        Tensor, shape (B, channels, H, W)
        """
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm1(x)
        h = h * (1 + scale.to(h.dtype)) + shift.to(h.dtype)
        h = simple_gate(self.conv2(self.conv1(h)))
        h = self.conv3(h * self.sca(h))
        x = x + self.beta(self.dropout(h))
        h = self.conv5(simple_gate(self.conv4(self.norm2(x))))
        return x + self.gamma(self.dropout(h))


class _Blocks(nn.ModuleList):
    """NAF blocks applied in turn, each receiving the time embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for block in self:
            x = block(x, emb)
        return x


class NAFNet(nn.Module):
    """NAFNet-style restoration network with time conditioning, for inputs of any size.

    Same contract as :class:`~diffdeblur.unet.UNet`: ``forward(x, t)`` with ``x`` of shape
    (B, in_channels, H, W) returns (B, out_channels, H, W). Reads ``in_channels``,
    ``out_channels``, ``base_channels``, ``channel_mult``, ``num_res_blocks``, ``dropout`` and
    ``global_skip`` of the configuration; ignores the attention, ``resblock_updown``,
    ``scale_shift_norm`` and ``backbone`` fields.

    Parameters
    ----------
    config : UNetConfig
    generator : torch.Generator, optional
        When given, the parameters are initialised from it (:meth:`init_parameters`) instead of
        from torch's global random state, which is left untouched.

    Attributes
    ----------
    encoders, decoders : torch.nn.ModuleList
        NAF blocks per level, index 0 at the input resolution.
    downs, ups : torch.nn.ModuleList
        Resampling between level ``i`` and ``i + 1``.
    middle : torch.nn.ModuleList
        NAF blocks at the lowest resolution.

    Raises
    ------
    ValueError
        If a global skip has fewer input than output channels.

    Examples
    --------
    >>> from diffdeblur.config import UNetConfig
    >>> net = NAFNet(UNetConfig(backbone="nafnet", base_channels=16, channel_mult=(1, 2)))
    >>> net(torch.zeros(2, 6, 37, 53), torch.tensor([0, 999])).shape
    torch.Size([2, 3, 37, 53])
    """

    def __init__(self, config: UNetConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if config.global_skip and config.in_channels < config.out_channels:
            raise ValueError(
                f"a global skip needs in_channels ({config.in_channels}) >= out_channels "
                f"({config.out_channels})"
            )
        self.config = config
        build_drawn_from(self, lambda: self._build(config), generator)

    def _build(self, config: UNetConfig) -> None:
        base = config.base_channels
        emb_channels = 4 * base
        self.time_mlp = time_mlp(base, emb_channels)
        widths = [mult * base for mult in config.channel_mult]

        def blocks(channels: int) -> _Blocks:
            return _Blocks(
                NAFBlock(channels, emb_channels, config.dropout)
                for _ in range(config.num_res_blocks)
            )

        self.intro = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        self.encoders = nn.ModuleList(blocks(c) for c in widths)
        self.downs = nn.ModuleList(
            nn.Conv2d(c, c_next, 2, stride=2) for c, c_next in pairwise(widths)
        )
        self.middle = blocks(widths[-1])
        # 4x the channels before the shuffle: it trades each group of 4 for a 2x2 pixel block.
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_next, 4 * c, 1, bias=False), nn.PixelShuffle(2))
            for c, c_next in pairwise(widths)
        )
        self.decoders = nn.ModuleList(blocks(c) for c in widths)
        self.ending = _zero(nn.Conv2d(widths[0], config.out_channels, 3, padding=1))

    def init_parameters(self, generator: torch.Generator) -> None:
        """Draw every parameter again from ``generator``, with PyTorch's default distributions.

        As :meth:`UNet.init_parameters <diffdeblur.unet.UNet.init_parameters>`: convolutions
        and linear layers Kaiming-uniform (biases uniform in ``±1/sqrt(fan_in)``); the
        zero-initialised layers (output convolution, time projections, residual scales) stay
        zero and the LayerNorms stay (1, 0).

        Parameters
        ----------
        generator : torch.Generator
            On the device of the parameters.
        """
        UNet.init_parameters(self, generator)

    # Same padding as the U-Net (reflection, replication where the image is too small).
    _pad = UNet._pad

    def forward(self, x: Tensor, t: Tensor | int | float) -> Tensor:
        """Predict the output (the noise, or the regression target) for ``x`` at timesteps ``t``.

        Parameters
        ----------
        x : Tensor, shape (B, in_channels, H, W)
            Network input (the noisy image and the conditioning images on the channel axis);
            any H, W >= 1.
        t : Tensor of shape (B,) or (), or int or float
            Timesteps, integer or float (diffusion steps; 0 for the regression network); a
            scalar applies to the whole batch.

        Returns
        -------
        Tensor, shape (B, out_channels, H, W)
            Plus ``x[:, :out_channels]`` when ``config.global_skip``.
        """
        emb = embed_time(self.config, self.time_mlp, x, t)
        height, width = x.shape[-2:]
        h = self.intro(self._pad(x))
        skips = []
        for level, encoder in enumerate(self.encoders):
            h = encoder(h, emb)
            skips.append(h)
            if level < len(self.downs):
                h = self.downs[level](h)
        h = self.middle(h, emb)
        for level in reversed(range(len(self.decoders))):
            if level < len(self.ups):
                h = self.ups[level](h)
            h = self.decoders[level](h + skips.pop(), emb)
        out = self.ending(h)[:, :, :height, :width]
        if self.config.global_skip:
            out = out + x[:, : self.config.out_channels]
        return out
