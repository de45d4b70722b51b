"""Small restorers for the tests, with every weight drawn from a seed."""

from __future__ import annotations

import torch
from diffdeblur.config import RestorerConfig
from diffdeblur.restorer import Restorer


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
            for module in network.modules():
                if getattr(module, "zero_init", False):
                    for p in module.parameters():
                        p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    return model
