"""diffdeblur: conditional diffusion models that remove camera-shake blur.

Train on ``csb-generate`` shards (or GoPro-style folders) with ``diffdeblur train``; in Python,
build a :class:`Restorer` from a :func:`restorer_config`, train it with :func:`train`, and load a
trained one with :func:`load_restorer`, or as an :class:`ImageRestorer` that restores images of
any size.
"""

import os
from importlib.metadata import PackageNotFoundError, version

# OpenMP threads that spin while they wait starve any other busy process on the machine, and
# themselves with it: beside one busy process, training on 2 spinning threads fell below one
# thread's speed (docs/performance.md, "Threads, precision and load"). Sleeping costs about a
# third of the speed on an idle machine, where OMP_WAIT_POLICY=ACTIVE is the faster choice.
# OpenMP reads the variable when torch loads it, so it is set before torch is first imported;
# a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .checkpoint import (
    CheckpointError,
    TrainingState,
    export_model,
    load_checkpoint,
    load_restorer,
    load_training_state,
    save_checkpoint,
    save_training_state,
)
from .config import (
    VARIANTS,
    ConfigError,
    DeconvolutionConfig,
    DiffusionConfig,
    RestorerConfig,
    UNetConfig,
    unet_variant,
)
from .diffusion import GaussianDiffusion
from .restoration import ImageRestorer
from .restorer import Restorer, restorer_config
from .samplers import ddim_sample, ddpm_sample
from .unet import UNet

try:
    __version__ = version("diffdeblur")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "VARIANTS",
    "CheckpointError",
    "ConfigError",
    "DeconvolutionConfig",
    "DiffusionConfig",
    "GaussianDiffusion",
    "ImageRestorer",
    "Restorer",
    "RestorerConfig",
    "TrainingState",
    "UNet",
    "UNetConfig",
    "__version__",
    "ddim_sample",
    "ddpm_sample",
    "export_model",
    "load_checkpoint",
    "load_restorer",
    "load_training_state",
    "restorer_config",
    "save_checkpoint",
    "save_training_state",
    "unet_variant",
]
