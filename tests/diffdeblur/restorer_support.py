"""Small restorers and networks for the tests, with every weight drawn from a seed."""

from __future__ import annotations

import torch
from diffdeblur.config import RestorerConfig
from diffdeblur.restorer import Restorer
from torch import nn


def perturb_zero_layers(network: nn.Module, generator: torch.Generator, scale: float) -> None:
    """Give the zero-initialised layers (``zero_init``) random weights of std ``scale``.

    At initialisation they make a network's output exactly 0 (or its input, with a global skip)
    whatever x and t are; tests of what a network computes need them non-zero.
    """
    with torch.no_grad():
        for module in network.modules():
            if getattr(module, "zero_init", False):
                for p in module.parameters():
                    p.copy_(scale * torch.randn(p.shape, generator=generator))


def network_inputs(batch: int, channels: int, height: int, width: int, seed: int = 1):
    """A seeded batch ``x`` (standard normal) and timesteps ``t`` in [0, 1000)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    return x, t


def seeded_restorer(config: RestorerConfig, seed: int = 0) -> Restorer:
    """A restorer whose every weight comes from ``seed``, zero-initialised layers included
    (made small and non-zero, so that the outputs depend on every layer)."""
    model = Restorer(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for network in (model.denoiser_net, model.regressor):
            if network is None:
                continue
            network.init_parameters(generator)
            perturb_zero_layers(network, generator, 0.05)
    return model
