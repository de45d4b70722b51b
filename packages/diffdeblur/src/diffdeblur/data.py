"""Training data: random patches from ``csb-generate`` shards and from GoPro-style image folders.

Both datasets return the same sample, a dict with

- ``"blurred"``: float32 tensor ``(C, P, P)`` in [-1, 1], the degraded patch (the condition);
- ``"sharp"``: the same patch of the ground truth, same shape and range;
- ``"index"``: int, the sample's index in the whole dataset (not in the selected subset);
- ``"kernel"`` (``csb-generate`` datasets only): float32 tensor ``(K', K')``, the sample's stored
  kernel on the odd grid centred on its origin, with unit sum
  (:func:`diffdeblur.deconvolution.odd_kernel`), flipped with the patch so that it still
  blurs the patch's sharp image into its blurred one. A GoPro-style folder has no kernels.

Randomness is a pure function of ``(seed, epoch, index)``: each sample draws its patch position
and flips from ``numpy.random.default_rng(numpy.random.SeedSequence(seed, spawn_key=(epoch,
index)))`` and from nothing else, in this order: the top row, the left column (see
:func:`csb_generator.choose_crop`), then ``rng.random(2) < 0.5`` for the horizontal and the
vertical flip (drawn even when flips are off, so turning them off does not move the patches). A
sample is therefore the same whatever the number of ``DataLoader`` workers, their start method or
the order in which the samples are requested, and a run that resumes at epoch ``e`` sees the
patches an uninterrupted run would have seen. It also means that an index requested twice in one
epoch gives the same patch twice: draw the indices of an epoch without replacement (``shuffle=True``
or a ``DistributedSampler``), and call :meth:`~ShardPatches.set_epoch` every epoch.

Examples
--------
>>> from torch.utils.data import DataLoader
>>> data = open_training_data("data/t3-psf32", 64, seed=0)  # doctest: +SKIP
>>> loader = DataLoader(data, batch_size=16, shuffle=True, num_workers=2)  # doctest: +SKIP
>>> for epoch in range(3):  # doctest: +SKIP
...     data.set_epoch(epoch)
...     for batch in loader:
...         batch["blurred"].shape  # (16, 3, 64, 64)
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from csb_generator import (
    IMAGE_EXTENSIONS,
    MANIFEST_NAME,
    CropPolicy,
    SourceImage,
    choose_crop,
    load_image,
    open_dataset,
    scan_sources,
)
from torch.utils.data import Dataset

from .deconvolution import odd_kernel, odd_kernel_size
from .pixels import to_signed, unit_range

__all__ = [
    "PairedFolder",
    "ShardCollection",
    "ShardPatches",
    "open_training_data",
    "split_indices",
]

Sample = dict[str, Any]

# How many offending files an error message lists before it summarises the rest.
_LISTED = 5


def _check_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    more = len(items) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")


class _Patches(Dataset):
    """What both datasets share: the subset, the epoch, and the seeded patch and flip draws."""

    def __init__(
        self,
        size: int,
        patch_size: int,
        *,
        flips: bool,
        seed: int,
        indices: Sequence[int] | np.ndarray | None,
        crop: CropPolicy,
    ):
        self.patch_size = _check_count(patch_size, "patch_size", 1)
        self.seed = _check_count(seed, "seed", 0)
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        self.crop = crop
        self.flips = bool(flips)
        self.epoch = 0
        self._size = size
        self.indices = self._check_indices(indices, size)

    def subset(
        self,
        indices: Sequence[int] | np.ndarray,
        *,
        flips: bool | None = None,
        crop: CropPolicy | None = None,
    ) -> Self:
        """The same data, opened once, restricted to ``indices`` (e.g. one side of
        :func:`split_indices`), with other flips or crops if given.

        The shards or decoded images are shared, not read again; a sample's patch is the one
        the whole dataset gives it (patches are keyed by dataset index, not by position).

        Parameters
        ----------
        indices : sequence of int
            Dataset indices, each in [0, the number of samples of the whole dataset).
        flips : bool, optional
            Random flips [default: this dataset's].
        crop : {"random", "center"}, optional
            Patch placement [default: this dataset's].
        """
        view = copy.copy(self)
        view.indices = self._check_indices(indices, self._size)
        view.flips = self.flips if flips is None else bool(flips)
        if crop is not None:
            if crop not in ("random", "center"):
                raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
            view.crop = crop
        return view

    @staticmethod
    def _check_indices(indices: Sequence[int] | np.ndarray | None, size: int) -> np.ndarray:
        if indices is None:
            return np.arange(size, dtype=np.int64)
        array = np.asarray(indices)
        if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
            raise ValueError("indices must be a one-dimensional sequence of integers")
        # Negative indices are refused rather than wrapped: in a train/validation split they
        # would silently alias samples from the other end.
        outside = array[(array < 0) | (array >= size)]
        if outside.size:
            raise ValueError(
                f"indices must lie in [0, {size}) for a dataset of {size} samples, "
                f"got {_listing([str(int(i)) for i in outside])}"
            )
        return array.astype(np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose patches and flips the following samples use.

        Call it before iterating a ``DataLoader`` over this dataset: workers receive a copy of
        the dataset when an iteration starts, so with ``persistent_workers=True`` they keep the
        epoch they were started with.

        Parameters
        ----------
        epoch : int
            Epoch number, >= 0.
        """
        self.epoch = _check_count(epoch, "epoch", 0)

    def __len__(self) -> int:
        return len(self.indices)

    def _index(self, position: int) -> int:
        if isinstance(position, bool) or not isinstance(position, int | np.integer):
            raise TypeError(f"sample position must be an integer, got {type(position).__name__}")
        size = len(self)
        if not -size <= position < size:
            raise IndexError(f"sample {position} out of range for a dataset of {size}")
        return int(self.indices[position])

    def _sample(
        self, blurred: np.ndarray, sharp: np.ndarray, index: int, kernel: np.ndarray | None = None
    ) -> Sample:
        """Cut the seeded patch of sample ``index`` from (H, W, C) images and flip it (and the
        odd-grid ``kernel``, when there is one, with it)."""
        # Keyed by the dataset index, not the position in the subset, so a sample's patch does
        # not depend on the split it was selected through.
        rng = np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(self.epoch, index))
        )
        top, left, height, width = choose_crop(
            rng if self.crop == "random" else None, blurred.shape, self.patch_size, self.crop
        )
        window = np.s_[top : top + height, left : left + width]
        blurred, sharp = blurred[window], sharp[window]
        horizontal, vertical = rng.random(2) < 0.5
        if self.flips and horizontal:
            blurred, sharp = blurred[:, ::-1], sharp[:, ::-1]
            kernel = None if kernel is None else kernel[:, ::-1]
        if self.flips and vertical:
            blurred, sharp = blurred[::-1], sharp[::-1]
            kernel = None if kernel is None else kernel[::-1]
        sample = {"blurred": _to_tensor(blurred), "sharp": _to_tensor(sharp), "index": index}
        if kernel is not None:
            sample["kernel"] = torch.from_numpy(np.ascontiguousarray(kernel))
        return sample


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    values = to_signed(unit_range(image)).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(values))


class ShardPatches(_Patches):
    """Random patches of the samples of a ``csb-generate`` dataset.

    Parameters
    ----------
    path : str or Path
        A dataset folder written by ``csb-generate`` (its ``--out``): a plain dataset, a T-sweep
        (every part, in the manifest's order, as :class:`csb_generator.TSweepDataset` indexes
        them) or one ``T-*`` part of a T-sweep.
    patch_size : int, optional
        Side P of the square patches, at most the stored crop size (default 64, the thesis's).
        Equal to the crop size, the patch is the whole crop.
    flips : bool, optional
        Flip each patch horizontally and vertically, each with probability 1/2, the same way for
        the blurred and the sharp image (default True).
    seed : int, optional
        Seed (>= 0) of the patch positions and flips (default 0).
    indices : sequence of int, optional
        The dataset indices to use, e.g. one side of :func:`split_indices`. Default: all.
    crop : {"random", "center"}, optional
        ``"random"`` (default) or the central patch of each crop (for a fixed validation set).

    Attributes
    ----------
    dataset : ShardDataset or TSweepDataset
        The underlying reader; its files are opened lazily in each process, so this dataset can
        be handed to a ``DataLoader`` with workers started by ``fork`` or ``spawn``.
    crop_size : int
        Side of the stored crops.
    channels : int
        Channels C of the samples (1 or 3, as generated).
    kernel_size : int
        Side K' of the samples' ``"kernel"``: the PSF size, made odd.

    Raises
    ------
    csb_generator.DatasetFormatError
        If ``path`` is not a complete dataset (a ``ValueError``; the message says why).
    ValueError
        If ``patch_size`` exceeds the stored crop size, or on invalid arguments.

    Notes
    -----
    The stored ``sharp`` images (uint8 or uint16) and integer ``blurred`` images are scaled by
    their dtype's maximum; floating-point ``blurred`` images are in [0, 1] already. Both are then
    mapped to [-1, 1].
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        patch_size: int = 64,
        *,
        flips: bool = True,
        seed: int = 0,
        indices: Sequence[int] | np.ndarray | None = None,
        crop: CropPolicy = "random",
    ):
        self.path = Path(path)
        self.dataset = open_dataset(self.path)
        options = self.dataset.manifest["options"]
        self.crop_size = int(options["image_size"])
        self.channels = int(options["channels"])
        self.kernel_size = odd_kernel_size(int(options["psf_size"]))
        super().__init__(
            len(self.dataset), patch_size, flips=flips, seed=seed, indices=indices, crop=crop
        )
        if self.patch_size > self.crop_size:
            raise ValueError(
                f"patch_size {self.patch_size} is larger than the {self.crop_size}x"
                f"{self.crop_size} crops stored in {self.path}; use a patch size of at most "
                f"{self.crop_size}, or generate the dataset with --image-size {self.patch_size}"
            )

    def __getitem__(self, position: int) -> Sample:
        """The sample at ``position`` of the selected indices, for the current epoch."""
        index = self._index(position)
        stored = self.dataset[index]
        kernel = odd_kernel(stored["kernel"])
        return self._sample(stored["blurred"], stored["sharp"], index, kernel)

    @property
    def fingerprint(self) -> str:
        """What the data is, not where it lies: the generator's fingerprint (its options and
        sources, which fix every byte) and, for one part of a T-sweep, that part's T."""
        manifest = self.dataset.manifest
        exposure = manifest.get("exposure")
        return manifest["fingerprint"] + ("" if exposure is None else f"/T={exposure!r}")

    def __repr__(self) -> str:
        return (
            f"ShardPatches({str(self.path)!r}, patch_size={self.patch_size}, n={len(self)}, "
            f"epoch={self.epoch})"
        )


class ShardCollection(_Patches):
    """Random patches of several ``csb-generate`` datasets, as one training set.

    The datasets are the sub-folders of one folder that hold a ``manifest.json``, taken in name
    order and concatenated: sample ``i`` of the collection is sample ``i - n_0 - ... - n_{j-1}``
    of dataset ``j``. They may differ in mode, PSF size, noise and exposure (a T-sweep counts as
    one dataset), which is how one model learns every degradation ``csb-generate`` makes. They
    must agree in their number of channels, and every crop must be at least ``patch_size``.

    Each sample's ``"kernel"`` is placed at the centre of the largest odd grid of the collection
    (zeros around it; the origin stays at the centre), so a batch may mix PSF sizes.

    Parameters
    ----------
    path : str or Path
        The folder holding the datasets. Sub-folders without ``manifest.json`` are ignored; at
        least one must hold one.
    patch_size, flips, seed, indices, crop
        As :class:`ShardPatches`; ``indices`` index the whole collection.

    Attributes
    ----------
    parts : list of ShardPatches
        The datasets, in name order.
    channels : int
        Their common number of channels.
    kernel_size : int
        Side of the samples' ``"kernel"``: the largest PSF size of the collection, made odd.

    Raises
    ------
    ValueError
        If no sub-folder is a dataset, if the datasets differ in channels, or as
        :class:`ShardPatches` raises for a dataset (the message names it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        patch_size: int = 64,
        *,
        flips: bool = True,
        seed: int = 0,
        indices: Sequence[int] | np.ndarray | None = None,
        crop: CropPolicy = "random",
    ):
        self.path = Path(path)
        folders = sorted(p for p in self.path.iterdir() if (p / MANIFEST_NAME).is_file())
        if not folders:
            raise ValueError(f"{self.path} holds no csb-generate dataset (no */{MANIFEST_NAME})")
        # Each part draws nothing itself: the collection draws every patch position and flip.
        self.parts = [ShardPatches(f, patch_size, flips=False, crop=crop) for f in folders]
        channels = {part.channels for part in self.parts}
        if len(channels) > 1:
            listed = ", ".join(f"{part.path.name}: {part.channels}" for part in self.parts)
            raise ValueError(f"the datasets of {self.path} differ in channels ({listed})")
        self.channels = channels.pop()
        self.kernel_size = max(part.kernel_size for part in self.parts)
        self._starts = np.cumsum([0] + [len(part.dataset) for part in self.parts])
        super().__init__(
            int(self._starts[-1]), patch_size, flips=flips, seed=seed, indices=indices, crop=crop
        )

    def __getitem__(self, position: int) -> Sample:
        """The sample at ``position`` of the selected indices, for the current epoch."""
        index = self._index(position)
        part = int(np.searchsorted(self._starts, index, side="right")) - 1
        stored = self.parts[part].dataset[index - int(self._starts[part])]
        kernel = odd_kernel(stored["kernel"])
        margin = (self.kernel_size - kernel.shape[0]) // 2
        kernel = np.pad(kernel, margin)
        return self._sample(stored["blurred"], stored["sharp"], index, kernel)

    @property
    def fingerprint(self) -> str:
        """What the data is: a digest of the datasets' names and fingerprints, in order."""
        listed = "\n".join(f"{part.path.name}={part.fingerprint}" for part in self.parts)
        return hashlib.sha256(listed.encode()).hexdigest()

    def __repr__(self) -> str:
        names = ", ".join(part.path.name for part in self.parts)
        return (
            f"ShardCollection({str(self.path)!r}, [{names}], patch_size={self.patch_size}, "
            f"n={len(self)}, epoch={self.epoch})"
        )


class PairedFolder(_Patches):
    """Random patches of paired blurred and sharp photographs in the GoPro layout.

    The layout is ``root/<scene>/blur/<name>.<ext>`` beside ``root/<scene>/sharp/<name>.<ext>``
    (GoPro_Large's ``train`` and ``test`` folders), with ``<ext>`` any of PNG, JPEG, TIFF, BMP or
    WebP; a frame's two images are matched by scene and file stem, so their formats may differ.
    Only files directly inside ``blur/`` and ``sharp/`` count; other folders of a scene (GoPro's
    ``blur_gamma``), hidden files and files with other extensions are ignored.

    Every image is decoded once when the dataset is built, to find damaged files and mismatched
    sizes before training starts rather than hours into it: about 20 ms per 1280x720 PNG on one
    core, so a minute or two for GoPro's 2103 training pairs. Decoding follows
    :mod:`csb_generator.image_files`: 8- and 16-bit images (scaled to [-1, 1] by their depth), EXIF
    orientation applied, grey replicated to RGB.

    Parameters
    ----------
    root : str or Path
        The folder holding the scene folders.
    patch_size : int, optional
        Side P of the square patches (default 128, the thesis's GoPro comparison).
    halve : bool, optional
        Downscale both images of every pair by 2 before cutting patches, as the thesis did with
        GoPro frames, with the area-averaging (box) filter that ``csb-generate --downscale``
        uses: 2x2 binning, then rounding to the images' integer depth. Default False.
    flips : bool, optional
        Random horizontal and vertical flips, the same for both images (default True).
    seed : int, optional
        Seed (>= 0) of the patch positions and flips (default 0).
    indices : sequence of int, optional
        Pair indices to use (pairs are ordered by scene, then file stem). Default: all.
    crop : {"random", "center"}, optional
        ``"random"`` (default) or the central patch of each image.
    channels : {3, 1}, optional
        3 (default, grey replicated) or 1 (Rec. 709 luma), as :func:`csb_generator.
        load_image`.

    Attributes
    ----------
    pairs : list of (SourceImage, SourceImage)
        The (blurred, sharp) images, ordered by scene then stem; ``pairs[i][0].key`` is
        ``"<scene>/blur/<name>.<ext>"``.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist.
    NotADirectoryError
        If ``root`` is not a folder.
    ValueError
        If no pair is found; if a blurred image has no sharp partner or the reverse (the first
        ones are listed: training on part of a dataset by accident is worse than stopping); if a
        stem appears twice in one folder; if an image cannot be decoded, or is smaller than the
        patch (after halving); or if the two images of a pair differ in size.

    Notes
    -----
    Images are decoded again for every sample, in the ``DataLoader`` workers; files that change
    after the dataset was built are refused (their SHA-256 is checked).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        patch_size: int = 128,
        *,
        halve: bool = False,
        flips: bool = True,
        seed: int = 0,
        indices: Sequence[int] | np.ndarray | None = None,
        crop: CropPolicy = "random",
        channels: int = 3,
    ):
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a folder")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        patch_size = _check_count(patch_size, "patch_size", 1)
        self.halve = bool(halve)
        self.channels = channels
        names = _pair_names(self.root)
        self.pairs = _decode_pairs(self.root, names, patch_size, self.halve)
        super().__init__(
            len(self.pairs), patch_size, flips=flips, seed=seed, indices=indices, crop=crop
        )

    def __getitem__(self, position: int) -> Sample:
        """The sample at ``position`` of the selected indices, for the current epoch."""
        index = self._index(position)
        downscale = 2.0 if self.halve else 1.0
        blurred, sharp = (
            load_image(image, channels=self.channels, downscale=downscale)
            for image in self.pairs[index]
        )
        return self._sample(blurred, sharp, index)

    @property
    def fingerprint(self) -> str:
        """What the data is, not where it lies: a SHA-256 over every pair's file names relative
        to the root and the files' own SHA-256, and whether the images are halved."""
        digest = hashlib.sha256(f"halve={self.halve}".encode())
        for blurred, sharp in self.pairs:
            digest.update(f"\n{blurred.key} {blurred.sha256} {sharp.key} {sharp.sha256}".encode())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return (
            f"PairedFolder({str(self.root)!r}, patch_size={self.patch_size}, "
            f"halve={self.halve}, n={len(self)}, epoch={self.epoch})"
        )


def _image_files(folder: Path) -> dict[str, str]:
    """Stem -> file name of the image files directly inside ``folder`` (hidden ones left out)."""
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if not path.is_file():
            continue
        if path.stem in found:
            raise ValueError(
                f"{folder} holds two images named {path.stem!r} ({found[path.stem]} and "
                f"{path.name}): cannot tell which one is the frame"
            )
        found[path.stem] = path.name
    return found


def _pair_names(root: Path) -> list[tuple[str, str, str]]:
    """(scene, blurred file name, sharp file name) of every frame, from the names alone.

    Checked before any decoding, so a wrong layout is reported at once.
    """
    scenes = sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and not entry.name.startswith(".") and (entry / "blur").is_dir()
    )
    names: list[tuple[str, str, str]] = []
    unmatched: list[str] = []
    for scene in scenes:
        blurred = _image_files(root / scene / "blur")
        sharp = _image_files(root / scene / "sharp")
        for stem in sorted(blurred.keys() | sharp.keys()):
            if stem not in sharp:
                unmatched.append(f"{scene}/blur/{blurred[stem]} (no {scene}/sharp/{stem}.*)")
            elif stem not in blurred:
                unmatched.append(f"{scene}/sharp/{sharp[stem]} (no {scene}/blur/{stem}.*)")
            else:
                names.append((scene, blurred[stem], sharp[stem]))
    if unmatched:
        raise ValueError(
            f"{root}: {len(unmatched)} image(s) without a partner: {_listing(unmatched)}. Every "
            "<scene>/blur/<name>.<ext> needs a <scene>/sharp/<name>.<ext> and the reverse"
        )
    if not names:
        raise ValueError(
            f"no blurred/sharp image pairs found in {root}: expected the GoPro layout "
            "<root>/<scene>/blur/<name>.png beside <root>/<scene>/sharp/<name>.png "
            f"(extensions {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return names


def _decode_pairs(
    root: Path, names: list[tuple[str, str, str]], patch_size: int, halve: bool
) -> list[tuple[SourceImage, SourceImage]]:
    """Decode every image once (through csb_generator's scanner) and check each pair."""
    downscale = 2.0 if halve else 1.0
    images: dict[str, SourceImage] = {}
    skipped: list[tuple[str, str]] = []
    for scene in sorted({scene for scene, _, _ in names}):
        for side in ("blur", "sharp"):
            # scan_sources decodes with the generator's rules, measures the oriented size and
            # records the SHA-256 that load_image checks later; it reports problems, not raises.
            scan = scan_sources(root / scene / side, image_size=patch_size, downscale=downscale)
            prefix = f"{scene}/{side}/"
            # Keys relative to root, so that a pair names its scene in messages and listings.
            images.update(
                {
                    prefix + image.key: replace(image, key=prefix + image.key)
                    for image in scan.usable
                }
            )
            skipped += [(prefix + key, reason) for key, reason in scan.skipped]
    wanted = {f"{scene}/blur/{blurred}" for scene, blurred, _ in names}
    wanted |= {f"{scene}/sharp/{sharp}" for scene, _, sharp in names}
    # The scanner also looks into sub-folders, which the layout does not use: ignore those.
    problems = [f"{key}: {reason}" for key, reason in skipped if key in wanted]
    if problems:
        halved = " after halving" if halve else ""
        raise ValueError(
            f"{root}: {len(problems)} image(s) cannot be used with patch_size {patch_size}"
            f"{halved}: {_listing(problems)}"
        )
    pairs = []
    mismatched = []
    for scene, blurred_name, sharp_name in names:
        blurred = images[f"{scene}/blur/{blurred_name}"]
        sharp = images[f"{scene}/sharp/{sharp_name}"]
        if (blurred.height, blurred.width) != (sharp.height, sharp.width):
            mismatched.append(
                f"{scene}/blur/{blurred_name} is {blurred.height}x{blurred.width} but "
                f"{scene}/sharp/{sharp_name} is {sharp.height}x{sharp.width}"
            )
        pairs.append((blurred, sharp))
    if mismatched:
        raise ValueError(
            f"{root}: the blurred and sharp images of {len(mismatched)} pair(s) differ in size: "
            f"{_listing(mismatched)}"
        )
    return pairs


def split_indices(
    n: int, validation_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` at random into training and validation indices.

    The validation set is the first ``k`` entries of a permutation of ``range(n)`` drawn from
    ``numpy.random.default_rng(seed)``, with ``k = round(n * validation_fraction)`` (at least 1
    when the fraction is positive); the training set is the rest. The split is a function of
    ``(n, validation_fraction, seed)`` only, but a different ``n`` gives a different split, so
    keep ``n`` fixed for the life of an experiment.

    Parameters
    ----------
    n : int
        Number of samples, >= 1.
    validation_fraction : float
        Share of the samples held out, in [0, 1); 0 gives an empty validation set.
    seed : int, optional
        Seed (>= 0) of the permutation (default 0).

    Returns
    -------
    train, validation : ndarray of int64
        Disjoint, each sorted (so reads run through the shards in order), together ``range(n)``.

    Raises
    ------
    ValueError
        If the fraction is outside [0, 1) or would leave no training sample.

    Examples
    --------
    >>> train, validation = split_indices(10, 0.2, seed=0)
    >>> len(train), len(validation), sorted([*train, *validation]) == list(range(10))
    (8, 2, True)
    """
    n = _check_count(n, "n", 1)
    seed = _check_count(seed, "seed", 0)
    fraction = float(validation_fraction)
    if not 0 <= fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    held_out = round(n * fraction)
    if fraction > 0:
        held_out = max(held_out, 1)
    if held_out >= n:
        raise ValueError(
            f"validation_fraction {fraction:g} of {n} samples leaves no training sample"
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def open_training_data(
    path: str | os.PathLike[str],
    patch_size: int,
    *,
    seed: int = 0,
    flips: bool = True,
    halve: bool = False,
    indices: Sequence[int] | np.ndarray | None = None,
    crop: CropPolicy = "random",
) -> ShardPatches | ShardCollection | PairedFolder:
    """Open a training data folder of any of the three kinds, recognised by its content.

    Parameters
    ----------
    path : str or Path
        A ``csb-generate`` dataset (a folder with ``manifest.json``), a folder of such datasets
        (``*/manifest.json``, read as one :class:`ShardCollection`) or a GoPro-style folder
        (``*/blur/*`` beside ``*/sharp/*``).
    patch_size : int
        Side of the square patches.
    seed, flips, indices, crop
        As :class:`ShardPatches` and :class:`PairedFolder`.
    halve : bool, optional
        Halve GoPro-style images (see :class:`PairedFolder`). Refused for ``csb-generate``
        datasets, which are downscaled when generated (``csb-generate --downscale 2``).

    Returns
    -------
    ShardPatches, ShardCollection or PairedFolder

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is none of the three kinds of folder, or as the datasets raise.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training data {path} does not exist")
    common: dict[str, Any] = {"seed": seed, "flips": flips, "indices": indices, "crop": crop}
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        if halve:
            raise ValueError(
                f"halve applies to image folders; {path} is a csb-generate dataset, whose "
                "sources are downscaled when it is generated (csb-generate --downscale 2)"
            )
        return ShardPatches(path, patch_size, **common)
    if path.is_dir() and any(path.glob(f"*/{MANIFEST_NAME}")):
        if halve:
            raise ValueError(f"halve applies to image folders; {path} holds csb-generate datasets")
        return ShardCollection(path, patch_size, **common)
    if path.is_dir() and any(path.glob("*/blur/")):
        return PairedFolder(path, patch_size, halve=halve, **common)
    hint = ""
    if path.is_dir():
        # A common slip: pointing at GoPro_Large rather than at its train or test folder.
        nested = sorted({scene.parent.parent.name for scene in path.glob("*/*/blur/")})
        if nested:
            hint = f"; its sub-folders {', '.join(nested)} are GoPro-style: pass one of those"
    raise ValueError(
        f"{path} is neither a csb-generate dataset (no {MANIFEST_NAME}), nor a folder of them "
        f"(no */{MANIFEST_NAME}), nor a GoPro-style folder (*/blur/*, */sharp/*){hint}"
    )
