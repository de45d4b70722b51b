"""csb-generator: camera-shake blur, as modelled by Boracchi & Foi (2012), with sensor noise.

The public API is flat: every function documented here is importable from ``csb_generator``.
"""

from importlib.metadata import PackageNotFoundError, version

from .atomic_files import atomic_output, remove_abandoned_temporaries, write_bytes_atomic
from .blur import blur, blur_crop
from .generate import GenerationReport, generate_dataset
from .image_files import (
    IMAGE_EXTENSIONS,
    WRITABLE_SUFFIXES,
    UnreadableImage,
    read_image,
    write_image,
)
from .modes import DatasetOptions, OptionError, resolve_options
from .noise import add_noise, degrade
from .psf import (
    RandomPSF,
    TrajectoryOutsideGrid,
    disk_kernel,
    embed_kernel,
    exposure_weights,
    load_kernel,
    psf_from_trajectory,
    random_psf,
)
from .rng import dataset_rng, sample_rng
from .shards import (
    MANIFEST_NAME,
    DatasetFormatError,
    ShardDataset,
    TSweepDataset,
    open_dataset,
    verify_dataset,
)
from .sources import (
    BUILTIN_PHOTOGRAPHS,
    CropPolicy,
    SourceError,
    SourceImage,
    builtin_folder,
    choose_crop,
    load_image,
    scan_sources,
)
from .trajectory import Trajectory, linear_trajectory, random_trajectory, trajectory_from_draws

try:
    __version__ = version("csb-generator")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "BUILTIN_PHOTOGRAPHS",
    "IMAGE_EXTENSIONS",
    "MANIFEST_NAME",
    "WRITABLE_SUFFIXES",
    "CropPolicy",
    "DatasetFormatError",
    "DatasetOptions",
    "GenerationReport",
    "OptionError",
    "RandomPSF",
    "ShardDataset",
    "SourceError",
    "SourceImage",
    "TSweepDataset",
    "Trajectory",
    "TrajectoryOutsideGrid",
    "UnreadableImage",
    "__version__",
    "add_noise",
    "atomic_output",
    "blur",
    "blur_crop",
    "builtin_folder",
    "choose_crop",
    "dataset_rng",
    "degrade",
    "disk_kernel",
    "embed_kernel",
    "exposure_weights",
    "generate_dataset",
    "linear_trajectory",
    "load_image",
    "load_kernel",
    "open_dataset",
    "psf_from_trajectory",
    "random_psf",
    "random_trajectory",
    "read_image",
    "remove_abandoned_temporaries",
    "resolve_options",
    "sample_rng",
    "scan_sources",
    "trajectory_from_draws",
    "verify_dataset",
    "write_bytes_atomic",
    "write_image",
]
