"""The noise-predicting U-Net of Ho et al. (2020), with the thesis's variants (Table 1).

One network, configured by :class:`~diffdeblur.config.UNetConfig`:

* an input convolution, then per resolution level ``num_res_blocks`` residual blocks (with
  self-attention after each where the level's downsampling factor is in ``attention_factors``)
  and a downsampling by 2 between levels;
* a middle of residual block, self-attention, residual block at the lowest resolution;
* a mirrored decoder of ``num_res_blocks + 1`` residual blocks per level, each fed the matching
  encoder activation by channel concatenation, with an upsampling by 2 between levels;
* an output GroupNorm, SiLU and a zero-initialised convolution.

The timestep enters through a sinusoidal embedding and a two-layer MLP of width
``4 * base_channels``; every residual block adds a projection of it to its activations, or uses
it as a scale and shift of the normalised activations (``scale_shift_norm``, AdaGN).

Attention is placed by downsampling *factor* (1 = input resolution), never by pixel size, so a
network trained on 64 px patches applies the same layers to an image of any size. Inputs of any
height and width are padded internally to a multiple of :attr:`UNetConfig.downsampling` and the
output is cropped back.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .config import UNetConfig

__all__ = [
    "AttentionBlock",
    "Downsample",
    "ResBlock",
    "UNet",
    "Upsample",
    "count_parameters",
    "embed_time",
    "group_count",
    "timestep_embedding",
]

# Upper bound of GroupNorm groups (Ho et al. use 32 everywhere).
MAX_GROUPS = 32
# Fewest channels in one GroupNorm group: with 1 channel per group the statistics of a small
# feature map (a few pixels at the lowest level of a small input) are those of a handful of
# values, so narrow networks get fewer, wider groups instead.
MIN_GROUP_CHANNELS = 4


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module``.

    Parameters
    ----------
    module : torch.nn.Module
    trainable_only : bool
        Count only parameters with ``requires_grad``.

    Returns
    -------
    int
        Total element count of the parameters (a parameter shared by two layers counts once).
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def group_count(channels: int) -> int:
    """Number of GroupNorm groups for ``channels`` channels.

    The largest divisor of ``channels`` that is at most 32 and leaves at least 4 channels per
    group (1 when ``channels`` < 8): 32 groups for the 128 channels and more of the thesis's
    networks, as Ho et al., and fewer for narrow networks.

    Parameters
    ----------
    channels : int
        Channels to normalise, >= 1.

    Returns
    -------
    int
        A divisor of ``channels`` in [1, 32].
    """
    limit = max(1, min(MAX_GROUPS, channels // MIN_GROUP_CHANNELS))
    return max(d for d in range(1, limit + 1) if channels % d == 0)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(group_count(channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    """Zero the parameters of ``module`` and mark it so that :meth:`UNet.init_parameters` keeps it.

    The last layer of every residual branch starts at zero so that each block is the identity at
    initialisation (Ho et al.; Goyal et al. 2017), which keeps deep networks trainable.
    """
    for p in module.parameters():
        nn.init.zeros_(p)
    module.zero_init = True
    return module


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as the Transformer's positions.

    Parameters
    ----------
    t : Tensor, shape (B,)
        Timesteps, integer or float (diffusion steps, 0 .. T-1).
    dim : int
        Embedding width.
    max_period : float
        Longest wavelength, in timesteps; the frequencies are geometric from 1 to 1/max_period.

    Returns
    -------
    Tensor, shape (B, dim), float32
        ``[cos(t * f_0), ..., cos(t * f_{h-1}), sin(t * f_0), ..., sin(t * f_{h-1})]`` with
        ``h = dim // 2`` (a zero column appended when ``dim`` is odd).
    """
    half = dim // 2
    # float32 even under autocast or with float16 inputs: t * f reaches ~1000 rad, where half
    # precision would lose the phase.
    exponents = torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1)
    freqs = torch.exp(-math.log(max_period) * exponents)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


def build_drawn_from(
    network: nn.Module, build: Callable[[], None], generator: torch.Generator | None
) -> None:
    """Create ``network``'s layers with ``build``; with a generator, then draw every parameter
    from it (``network.init_parameters``), leaving torch's global random state as it was (the
    layers' own initialisation draws from it, so it is forked)."""
    if generator is None:
        build()
        return
    with torch.random.fork_rng(devices=[]):
        build()
    network.init_parameters(generator)


def time_mlp(base_channels: int, embedding_channels: int) -> nn.Sequential:
    """The MLP from the sinusoidal embedding of t (``base_channels``) to the time embedding."""
    return nn.Sequential(
        nn.Linear(base_channels, embedding_channels),
        nn.SiLU(),
        nn.Linear(embedding_channels, embedding_channels),
    )


def embed_time(config: UNetConfig, time_mlp: nn.Sequential, x: Tensor, t: Tensor) -> Tensor:
    """Check a network's input ``x`` and timesteps ``t``; the time embedding of ``t``.

    Parameters
    ----------
    config : UNetConfig
        The network's configuration (for its input channels).
    time_mlp : nn.Sequential
        The network's embedding MLP, whose first layer takes the sinusoidal embedding.
    x : Tensor, shape (B, in_channels, H, W)
    t : Tensor of shape (B,) or (), or a number
        A scalar applies to the whole batch.

    Returns
    -------
    Tensor, shape (B, embedding width), in the MLP's dtype
    """
    if x.ndim != 4 or x.shape[1] != config.in_channels:
        raise ValueError(f"x must have shape (B, {config.in_channels}, H, W), not {tuple(x.shape)}")
    batch = x.shape[0]
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must have shape ({batch},) or (), not {tuple(t.shape)}")
    first = time_mlp[0]
    return time_mlp(timestep_embedding(t, first.in_features).to(first.weight.dtype))


class ResBlock(nn.Module):
    """Residual block conditioned on the time embedding, optionally resampling (BigGAN style).

    ``in: GroupNorm, SiLU, [resample], conv3x3``; time embedding added (or AdaGN
    ``norm(h) * (1 + scale) + shift``); ``out: GroupNorm, SiLU, dropout, conv3x3 (zero init)``;
    plus the input (through a 1x1 convolution when the channels change, resampled alike).

    Parameters
    ----------
    in_channels, out_channels : int
    emb_channels : int
        Width of the time embedding.
    dropout : float
        Dropout probability before the last convolution.
    scale_shift_norm : bool
        Condition by AdaGN: the time projection gives ``2 * out_channels`` values, a scale and a
        shift of the normalised activations; otherwise ``out_channels`` values added to them.
    resample : {None, "down", "up"}
        Halve the resolution (2x2 average pooling) or double it (nearest neighbour) inside the
        block, after the first normalisation, as BigGAN's residual up/down blocks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        scale_shift_norm: bool = False,
        resample: str | None = None,
    ) -> None:
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', not {resample!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale_shift_norm = scale_shift_norm
        self.resample = resample
        self.in_norm = _norm(in_channels)
        self.in_conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, out_channels * (2 if scale_shift_norm else 1))
        self.out_norm = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Apply the block.

        Parameters
        ----------
        x : Tensor, shape (B, in_channels, H, W)
        emb : Tensor, shape (B, emb_channels)
            Time embedding (after the MLP).

        Returns
        -------
        Tensor, shape (B, out_channels, H', W')
            ``H' = H // 2`` for ``"down"``, ``2 * H`` for ``"up"``, else ``H`` (same for W).
        """
        h = F.silu(self.in_norm(x))
        # Resample after the normalisation (statistics of the full-resolution input) and before
        # the convolution, so the convolution runs at the output resolution.
        h = self.in_conv(self._resample(h))
        x = self._resample(x)
        cond = self.emb_proj(F.silu(emb))[:, :, None, None].to(h.dtype)
        if self.scale_shift_norm:
            scale, shift = cond.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + cond)
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels of a feature map, as a residual block.

    Parameters
    ----------
    channels : int
    heads : int
        Attention heads; must divide ``channels``.
    factor : int
        Downsampling factor of the level where the block sits (1 = input resolution); recorded
        for inspection only.
    """

    def __init__(self, channels: int, heads: int, factor: int) -> None:
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"{heads} attention heads do not divide {channels} channels")
        self.channels = channels
        self.heads = heads
        self.factor = factor
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Parameters
        ----------
        x : Tensor, shape (B, channels, H, W)

        Returns
        -------
        Tensor, shape (B, channels, H, W)
        """
        height, width = x.shape[-2:]
        qkv = rearrange(
            self.qkv(self.norm(x)),
            "b (three heads c) h w -> three b heads (h w) c",
            three=3,
            heads=self.heads,
        )
        # Scaled by 1/sqrt(head channels) inside; fused kernels where the device has them.
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        out = rearrange(out, "b heads (h w) c -> b (heads c) h w", h=height, w=width)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution (inputs have even sizes)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H / 2, W / 2)."""
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, 2 H, 2 W)."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Stage(nn.ModuleList):
    """Layers applied in turn; residual blocks also receive the time embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNet(nn.Module):
    """The U-Net of Ho et al. (2020) with the thesis's variants, for inputs of any size.

    Parameters
    ----------
    config : UNetConfig
        The architecture; see :mod:`diffdeblur.config` for the presets.
    generator : torch.Generator, optional
        When given, the parameters are initialised from it (:meth:`init_parameters`) instead of
        from torch's global random state, for reproducible networks.

    Attributes
    ----------
    encoder : torch.nn.ModuleList of stages
        The input convolution, then the residual (+ attention) stages and downsamplings.
    middle : stage
        Residual block, attention, residual block at the lowest resolution.
    decoder : torch.nn.ModuleList of stages
        Residual (+ attention) stages fed the encoder activations, with upsamplings.

    Raises
    ------
    ValueError
        If an attention factor is not the downsampling factor of a level, the attention heads do
        not divide a level's channels, or a global skip has fewer input than output channels.

    Examples
    --------
    >>> from diffdeblur.config import unet_variant
    >>> net = UNet(unet_variant("tiny"))
    >>> net(torch.zeros(2, 6, 37, 53), torch.tensor([0, 999])).shape
    torch.Size([2, 3, 37, 53])
    """

    def __init__(self, config: UNetConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self._check(config)
        self.config = config
        build_drawn_from(self, lambda: self._build(config), generator)

    def _build(self, config: UNetConfig) -> None:
        base = config.base_channels
        emb_channels = 4 * base
        self.time_mlp = time_mlp(base, emb_channels)

        def res_block(cin: int, cout: int, resample: str | None = None) -> ResBlock:
            return ResBlock(
                cin, cout, emb_channels, config.dropout, config.scale_shift_norm, resample
            )

        def attention(channels: int, factor: int) -> AttentionBlock:
            if config.head_channels <= 0:
                return AttentionBlock(channels, config.num_heads, factor)
            if channels % config.head_channels:
                raise ValueError(
                    f"attention heads of {config.head_channels} channels do not divide "
                    f"{channels} channels"
                )
            return AttentionBlock(channels, channels // config.head_channels, factor)

        levels = len(config.channel_mult)
        channels = base
        self.encoder = nn.ModuleList([_Stage([nn.Conv2d(config.in_channels, base, 3, padding=1)])])
        # Channels of every encoder output, consumed in reverse by the decoder's concatenations.
        skip_channels = [channels]
        for level, mult in enumerate(config.channel_mult):
            factor = 2**level
            for _ in range(config.num_res_blocks):
                stage = _Stage([res_block(channels, mult * base)])
                channels = mult * base
                if factor in config.attention_factors:
                    stage.append(attention(channels, factor))
                self.encoder.append(stage)
                skip_channels.append(channels)
            if level < levels - 1:
                down = (
                    res_block(channels, channels, "down")
                    if config.resblock_updown
                    else Downsample(channels)
                )
                self.encoder.append(_Stage([down]))
                skip_channels.append(channels)

        self.middle = _Stage(
            [
                res_block(channels, channels),
                attention(channels, config.downsampling),
                res_block(channels, channels),
            ]
        )

        self.decoder = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            factor = 2**level
            for index in range(config.num_res_blocks + 1):
                stage = _Stage([res_block(channels + skip_channels.pop(), mult * base)])
                channels = mult * base
                if factor in config.attention_factors:
                    stage.append(attention(channels, factor))
                if level > 0 and index == config.num_res_blocks:
                    stage.append(
                        res_block(channels, channels, "up")
                        if config.resblock_updown
                        else Upsample(channels)
                    )
                self.decoder.append(stage)

        self.out = nn.Sequential(
            _norm(channels),
            nn.SiLU(),
            _zero(nn.Conv2d(channels, config.out_channels, 3, padding=1)),
        )

    @staticmethod
    def _check(config: UNetConfig) -> None:
        factors = {2**level for level in range(len(config.channel_mult))}
        unused = sorted(set(config.attention_factors) - factors)
        if unused:
            # Silently ignoring them would hide a config written in pixels (e.g. 16 for "16x16").
            raise ValueError(
                f"attention factors {unused} are not downsampling factors of this network "
                f"({sorted(factors)}); give factors (1 = input resolution), not pixel sizes"
            )
        if config.global_skip and config.in_channels < config.out_channels:
            raise ValueError(
                f"a global skip needs in_channels ({config.in_channels}) >= out_channels "
                f"({config.out_channels})"
            )

    @torch.no_grad()
    def init_parameters(self, generator: torch.Generator) -> None:
        """Draw every parameter again from ``generator``, with PyTorch's default distributions.

        Convolutions and linear layers: weights Kaiming-uniform with ``a = sqrt(5)``, biases
        uniform in ``±1/sqrt(fan_in)`` (what ``reset_parameters`` does from the global random
        state); the zero-initialised output layers stay zero; GroupNorm stays (1, 0).

        Parameters
        ----------
        generator : torch.Generator
            On the device of the parameters.
        """
        for module in self.modules():
            if not isinstance(module, nn.Conv2d | nn.Linear) or getattr(module, "zero_init", False):
                continue
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1 / math.sqrt(fan_in)
                module.bias.uniform_(-bound, bound, generator=generator)

    def _pad(self, x: Tensor) -> Tensor:
        """Pad bottom and right to a multiple of the downsampling factor.

        Reflection continues image structure across the border without the edge a constant
        padding makes; it needs the padding to be shorter than the image, so each axis falls back
        to replication when it is not (images smaller than the factor).
        """
        stride = self.config.downsampling
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % stride, -width % stride
        for pads, size in (((0, pad_w, 0, 0), width), ((0, 0, 0, pad_h), height)):
            amount = max(pads)
            if amount:
                x = F.pad(x, pads, mode="reflect" if amount < size else "replicate")
        return x

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Predict the output (the noise, or the regression target) for ``x`` at timesteps ``t``.

        Parameters
        ----------
        x : Tensor, shape (B, in_channels, H, W)
            Network input (the noisy image and the conditioning images on the channel axis);
            any H, W >= 1.
        t : Tensor, shape (B,) or ()
            Timesteps, integer or float; a scalar applies to the whole batch.

        Returns
        -------
        Tensor, shape (B, out_channels, H, W)
            Plus ``x[:, :out_channels]`` when ``config.global_skip``.
        """
        emb = embed_time(self.config, self.time_mlp, x, t)
        height, width = x.shape[-2:]
        h = self._pad(x)
        skips = []
        for stage in self.encoder:
            h = stage(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for stage in self.decoder:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
        out = self.out(h)[:, :, :height, :width]
        if self.config.global_skip:
            out = out + x[:, : self.config.out_channels]
        return out
