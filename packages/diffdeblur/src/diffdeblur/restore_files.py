"""Restoring image files: what ``diffdeblur restore`` does, callable from Python.

Each restored image keeps its input's size, channels and bit depth, and is written atomically
into the output folder: an interrupted run leaves complete images only, and no input is ever
written over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from csb_generator import WRITABLE_SUFFIXES, UnreadableImage, read_image, write_image

from .restoration import ImageRestorer

__all__ = ["OUTPUT_FORMATS", "OutputExists", "RestoreReport", "restore_files", "restore_targets"]

#: The ``output_format`` choices: ``same`` keeps each input's file type.
OUTPUT_FORMATS = {"same": None, "png": ".png", "tiff": ".tif"}


class OutputExists(ValueError):
    """An output file exists, and replacing it was not asked for; ``path`` is that file."""

    def __init__(self, path: Path):
        super().__init__(f"{path} exists; pass overwrite=True to replace it")
        self.path = path


def _expand(inputs: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in WRITABLE_SUFFIXES)
            if not found:
                raise ValueError(f"input folder {path} holds no image files")
            files.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in WRITABLE_SUFFIXES:
                raise ValueError(f"input {path} is not a PNG, JPEG, TIFF, BMP or WebP file")
            files.append(path)
        else:
            raise ValueError(f"input {path} does not exist")
    return files


def restore_targets(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    output_format: str = "same",
    overwrite: bool = False,
) -> list[tuple[Path, Path]]:
    """The (input, output) file pairs of a restoration, checked before any work starts.

    Parameters
    ----------
    inputs : sequence of str or Path
        Image files, or folders whose image files (sorted by name) are all restored.
    out : str or Path
        The output folder; each output keeps its input's name.
    output_format : {"same", "png", "tiff"}
        ``same`` keeps each input's file type; the others change the suffix.
    overwrite : bool
        Replace outputs that exist already.

    Returns
    -------
    list of (Path, Path)

    Raises
    ------
    ValueError
        Naming the file: an input that does not exist or is not an image, a folder without
        images, two inputs with one output name, an output that would replace its own input,
        or one that exists without ``overwrite`` (:class:`OutputExists`).
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}")
    suffix = OUTPUT_FORMATS[output_format]
    pairs, seen = [], {}
    for source in _expand(inputs):
        target = Path(out) / (source.stem + suffix if suffix else source.name)
        if target in seen:
            raise ValueError(f"{seen[target]} and {source} would both be written to {target}")
        seen[target] = source
        if source.resolve() == target.resolve():
            raise ValueError(f"{target} would overwrite its own input; choose another folder")
        if target.exists() and not overwrite:
            raise OutputExists(target)
        pairs.append((source, target))
    return pairs


@dataclass
class RestoreReport:
    """What :func:`restore_files` did.

    Attributes
    ----------
    written : list of Path
        The outputs written, in order.
    failed : list of (Path, str)
        Each input that could not be read or restored, with the reason; the others went on.
    """

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def restore_files(
    restorer: ImageRestorer,
    pairs: Sequence[tuple[Path, Path]],
    *,
    seed: int = 0,
    progress: Callable[[int, Path, int], AbstractContextManager[Any]] | None = None,
    written: Callable[[Path], object] | None = None,
    failed: Callable[[Path, str], object] | None = None,
) -> RestoreReport:
    """Restore each input of :func:`restore_targets` into its output file.

    Parameters
    ----------
    restorer : ImageRestorer
        A trained model with its patch and sampler settings. A model that deconvolves with the
        true kernel is refused: a photograph's kernel is unknown.
    pairs : sequence of (Path, Path)
        From :func:`restore_targets`; the output folder is created.
    seed : int
        Seed of every image's sampling noise: an image restores the same alone or in a batch.
    progress : callable, optional
        ``progress(number, input, steps)`` (``number`` from 1 in ``pairs``) returns a context
        manager for one image whose value has an ``update()`` method, called once per sampling
        step (a ``tqdm`` bar fits).
    written, failed : callable, optional
        Called with each output file once it is complete, and with each input that could not
        be read or restored and the reason, as they happen.

    Returns
    -------
    RestoreReport

    Raises
    ------
    ValueError
        For a true-kernel restorer, before any file is read.
    """
    model = restorer.model
    front = model.config.deconvolution
    if front is not None and front.kernel == "true":
        raise ValueError(
            "the model deconvolves with the true kernel (trained with --deconvolve true, a "
            "non-blind upper bound): it cannot restore a photograph whose kernel is unknown; "
            "score it with diffdeblur evaluate on a csb-generate dataset"
        )
    steps = restorer.steps
    report = RestoreReport()
    for folder in {target.parent for _, target in pairs}:
        folder.mkdir(parents=True, exist_ok=True)

    def fail(source: Path, reason: str) -> None:
        report.failed.append((source, reason))
        if failed is not None:
            failed(source, reason)

    for number, (source, target) in enumerate(pairs, 1):
        try:
            image = read_image(source)
        except UnreadableImage as error:
            fail(source, str(error))
            continue
        with progress(number, source, steps) if progress else nullcontext() as bar:
            try:
                restored = restorer.restore_image(
                    image,
                    generator=torch.Generator().manual_seed(seed),
                    progress=None if bar is None else bar.update,
                )
            except ValueError as error:  # e.g. an image of less than 2 x 2 px
                fail(source, f"{source}: {error}")
                continue
            if bar is not None and not model.is_diffusion:
                bar.update()
        write_image(target, restored)
        report.written.append(target)
        if written is not None:
            written(target)
    return report
