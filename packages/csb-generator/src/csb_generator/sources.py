"""Source photographs: finding, downscaling and cropping them (docs/cli.md#sources).

A *source* is either a folder of photographs (any depth) or the built-in set of real photographs
that ship inside the scikit-image wheel, so that the generator runs with no data at hand. Files
are decoded by :mod:`csb_generator.image_files`, with the rules stated there.

Built-in photographs
--------------------
Only genuine photographs of scenes and objects with a licence or credit documented in
scikit-image are used (keys ``"skimage:NAME"``, see :data:`BUILTIN_PHOTOGRAPHS`):

- ``astronaut`` (512x512, RGB): Eileen Collins, NASA Great Images database; public domain.
- ``brick`` (512x512, grey): CC0Textures "Bricks25", warped and cropped by scikit-image; CC0.
- ``camera`` (512x512, grey): Lav Varshney; CC0.
- ``chelsea`` (300x451, RGB): Stefan van der Walt; CC0.
- ``coffee`` (400x600, RGB): Rachel Michetti, courtesy of Pikolo Espresso Bar; CC0.
- ``coins`` (303x384, grey): Brooklyn Museum Collection; no known copyright restrictions.
- ``grass`` (512x512, grey): linolafett on DeviantArt, "Grass 01", cropped; CC0.
- ``gravel`` (512x512, grey): CC0Textures "Gravel04", rescaled and cropped; CC0.
- ``hubble_deep_field`` (872x1000, RGB): NASA, Hubble eXtreme Deep Field; public domain.
- ``rocket`` (427x640, RGB): SpaceX, launch of DSCOVR on a Falcon 9; public domain.

Left out on purpose: ``clock_motion`` (a real motion-blurred photograph, reserved for
evaluation); ``moon`` and ``motorcycle_left``/``motorcycle_right`` (no licence stated by
scikit-image; the latter are Middlebury 2014 stereo frames); ``retina``, ``microaneurysms``,
``ihc`` and ``cell`` (medical and microscopy images, not scenes); and the drawings, documents and
synthetic images (``logo``, ``color``, ``chessboard_*``, ``horse``, ``phantom``, ``text``,
``page``).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
from PIL import Image

from .image_files import IMAGE_EXTENSIONS, UnreadableImage, decode_image

__all__ = [
    "BUILTIN_PHOTOGRAPHS",
    "BuiltinPhotograph",
    "CropPolicy",
    "ImageCache",
    "SourceError",
    "SourceImage",
    "SourceScan",
    "builtin_folder",
    "choose_crop",
    "load_image",
    "scaled_size",
    "scan_sources",
]

#: Prefix of the keys of the built-in photographs.
BUILTIN_PREFIX = "skimage:"

CropPolicy = Literal["random", "center"]

# Rec. 709 luma weights: sRGB shares the BT.709 primaries (scikit-image's rgb2gray uses them too).
_LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])


class SourceError(ValueError):
    """A source folder that cannot be used at all (missing, not a folder, unreadable)."""


@dataclass(frozen=True)
class BuiltinPhotograph:
    """A photograph shipped inside the scikit-image wheel.

    Attributes
    ----------
    name : str
        The scikit-image name (``skimage.data.<name>`` loads it).
    filename : str
        File name inside :func:`builtin_folder`.
    credit : str
        Photographer or origin, as documented by scikit-image.
    licence : str
        Licence as documented by scikit-image.
    """

    name: str
    filename: str
    credit: str
    licence: str

    @property
    def key(self) -> str:
        """The source key, ``"skimage:" + name``."""
        return BUILTIN_PREFIX + self.name

    @property
    def path(self) -> Path:
        """Absolute path of the file in the installed scikit-image."""
        return builtin_folder() / self.filename

    def __str__(self) -> str:
        return f"{self.credit}; {self.licence}"


_BUILTIN_LIST = (
    BuiltinPhotograph(
        "astronaut",
        "astronaut.png",
        "Eileen Collins, NASA (NASA Great Images database)",
        "public domain (no known copyright restrictions)",
    ),
    BuiltinPhotograph(
        "brick",
        "brick.png",
        'CC0Textures "Bricks25", perspective-corrected, cropped and scaled by scikit-image',
        "CC0 1.0",
    ),
    BuiltinPhotograph("camera", "camera.png", "Lav Varshney", "CC0"),
    BuiltinPhotograph("chelsea", "chelsea.png", "Stefan van der Walt", "CC0"),
    BuiltinPhotograph(
        "coffee", "coffee.png", "Rachel Michetti, courtesy of Pikolo Espresso Bar", "CC0"
    ),
    BuiltinPhotograph(
        "coins",
        "coins.png",
        "Greek coins from Pompeii, Brooklyn Museum Collection",
        "no known copyright restrictions",
    ),
    BuiltinPhotograph(
        "grass",
        "grass.png",
        'linolafett on DeviantArt, "Grass 01", cropped and made grey by scikit-image',
        "CC0",
    ),
    BuiltinPhotograph(
        "gravel",
        "gravel.png",
        'CC0Textures "Gravel04", rescaled, cropped and made grey by scikit-image',
        "CC0 1.0",
    ),
    BuiltinPhotograph(
        "hubble_deep_field",
        "hubble_deep_field.jpg",
        "NASA, Hubble eXtreme Deep Field (HubbleSite release 2012-37)",
        "public domain (NASA media guidelines)",
    ),
    BuiltinPhotograph(
        "rocket",
        "rocket.jpg",
        "SpaceX, launch of DSCOVR on a Falcon 9",
        "public domain (released by SpaceX)",
    ),
)

#: The built-in photographs by name, sorted (see the module documentation for the choice). A
#: read-only mapping; ``str(photo)`` is its credit and licence.
BUILTIN_PHOTOGRAPHS: Mapping[str, BuiltinPhotograph] = MappingProxyType(
    {photo.name: photo for photo in _BUILTIN_LIST}
)


def builtin_folder() -> Path:
    """The folder of the installed scikit-image that holds the built-in photographs.

    Returns
    -------
    Path
        ``<site-packages>/skimage/data``; the files are read directly, never downloaded.
    """
    import skimage

    return Path(skimage.__file__).resolve().parent / "data"


@dataclass(frozen=True)
class SourceImage:
    """One usable source photograph, as found by :func:`scan_sources`.

    Attributes
    ----------
    key : str
        Stable name: the path relative to the source folder with ``/`` separators, or
        ``"skimage:NAME"`` for a built-in photograph.
    path : Path
        Absolute path of the file.
    height, width : int
        Size in pixels of the image as loaded (EXIF orientation applied), before any downscale.
    bit_depth : int
        8 (loads as ``uint8``) or 16 (loads as ``uint16``).
    sha256 : str
        Hex SHA-256 of the file's bytes; :func:`load_image` refuses a file that no longer matches.
    """

    key: str
    path: Path
    height: int
    width: int
    bit_depth: int
    sha256: str


@dataclass(frozen=True)
class SourceScan:
    """The outcome of :func:`scan_sources`.

    Attributes
    ----------
    root : Path or None
        The folder scanned (absolute), or None for the built-in set.
    usable : list of SourceImage
        Images large enough for the crop, sorted by key.
    skipped : list of (str, str)
        ``(key, reason)`` for every candidate image that cannot be used (unreadable, corrupt,
        not an image, too small, folder not listable), sorted by key. The caller warns about
        each one.
    ignored : list of str
        Keys of the files left out because their extension is not an image extension (e.g.
        ``README.txt``, ``.json`` annotations, raw camera files), sorted. Hidden files and
        folders (names starting with ``.``) are not listed at all.
    """

    root: Path | None
    usable: list[SourceImage]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line with the counts, e.g. ``"12 usable, 1 skipped, 2 other files ignored"``."""
        return (
            f"{len(self.usable)} usable, {len(self.skipped)} skipped, "
            f"{len(self.ignored)} other files ignored"
        )


def scaled_size(height: int, width: int, downscale: float = 1.0) -> tuple[int, int]:
    """Size of an image after :func:`load_image` downscales it.

    Parameters
    ----------
    height, width : int
        Size in pixels before downscaling.
    downscale : float, optional
        Factor >= 1 (2 halves each side). Default 1.

    Returns
    -------
    (int, int)
        ``floor(height / downscale + 0.5)`` and the same for the width, at least 1.

    Examples
    --------
    >>> from csb_generator.sources import scaled_size
    >>> scaled_size(1080, 1921, 2)
    (540, 961)
    """
    downscale = _check_downscale(downscale)
    return (
        max(1, math.floor(height / downscale + 0.5)),
        max(1, math.floor(width / downscale + 0.5)),
    )


def _check_downscale(downscale: float) -> float:
    downscale = float(downscale)
    if not (math.isfinite(downscale) and downscale >= 1):
        raise ValueError(f"downscale must be a finite factor >= 1, got {downscale!r}")
    return downscale


def _check_size(size: int, name: str) -> int:
    if int(size) != size or size < 1:
        raise ValueError(f"{name} must be a positive integer (pixels), got {size!r}")
    return int(size)


def _candidates(root: Path) -> tuple[list[tuple[str, Path]], list[str], list[tuple[str, str]]]:
    """Image files, ignored files and unlistable folders under root, hidden names left out."""
    images: list[tuple[str, Path]] = []
    ignored: list[str] = []
    errors: list[tuple[str, str]] = []

    def unlistable(error: OSError) -> None:
        folder = Path(error.filename)
        key = folder.relative_to(root).as_posix() + "/"
        errors.append((key, f"cannot list folder ({error.strerror or error})"))

    # Symbolic links to folders are not followed, so a link loop cannot make the walk endless.
    for folder, subfolders, files in os.walk(root, onerror=unlistable):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder, name)
            key = path.relative_to(root).as_posix()
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append((key, path))
            else:
                ignored.append(key)
    return images, ignored, errors


def scan_sources(
    root: str | os.PathLike[str] | None, *, image_size: int, downscale: float = 1.0
) -> SourceScan:
    """Find the usable source photographs in a folder, or the built-in set.

    Every candidate is read and decoded once, to validate it and to learn its size and depth;
    files that cannot be used are reported, never raised.

    Parameters
    ----------
    root : str, PathLike or None
        Folder searched at any depth for files with an extension in :data:`IMAGE_EXTENSIONS`
        (case-insensitive); hidden files and folders are left out, links to folders are not
        followed. None selects :data:`BUILTIN_PHOTOGRAPHS`.
    image_size : int
        Crop side S in pixels, >= 1. An image whose downscaled size is below S on either side is
        skipped.
    downscale : float, optional
        Factor >= 1 by which images will be downscaled before cropping. Default 1.

    Returns
    -------
    SourceScan
        Usable images sorted by key, and the skipped and ignored files with reasons. Nothing
        usable is not an error here: the caller decides.

    Raises
    ------
    SourceError
        If ``root`` does not exist, is not a folder, or cannot be listed; the message names it.
    ValueError
        On an invalid ``image_size`` or ``downscale``.

    Examples
    --------
    >>> from csb_generator.sources import scan_sources
    >>> scan = scan_sources(None, image_size=256)
    >>> scan.usable[0].key, scan.usable[0].height, scan.usable[0].bit_depth
    ('skimage:astronaut', 512, 8)
    >>> scan.summary()
    '10 usable, 0 skipped, 0 other files ignored'
    """
    image_size = _check_size(image_size, "image_size")
    downscale = _check_downscale(downscale)
    ignored: list[str] = []
    skipped: list[tuple[str, str]] = []
    if root is None:
        folder = builtin_folder()
        candidates = [
            (photo.key, folder / photo.filename) for photo in BUILTIN_PHOTOGRAPHS.values()
        ]
        scan_root = None
    else:
        scan_root = Path(root).expanduser().absolute()
        if not scan_root.exists():
            raise SourceError(f"source folder {scan_root} does not exist")
        if not scan_root.is_dir():
            raise SourceError(f"source {scan_root} is not a folder")
        try:
            with os.scandir(scan_root):
                pass
        except OSError as error:
            raise SourceError(f"cannot read source folder {scan_root}: {error.strerror}") from error
        candidates, ignored, skipped = _candidates(scan_root)

    usable: list[SourceImage] = []
    for key, path in candidates:
        try:
            data = path.read_bytes()
        except OSError as error:
            skipped.append((key, f"cannot read file ({error.strerror or error})"))
            continue
        try:
            array = decode_image(data, path)
        except UnreadableImage as error:
            skipped.append((key, error.reason))
            continue
        height, width = array.shape[:2]
        scaled = scaled_size(height, width, downscale)
        if min(scaled) < image_size:
            after = f" after downscaling by {downscale:g}" if downscale != 1 else ""
            reason = f"smaller than the crop ({scaled[0]}x{scaled[1]} < {image_size}){after}"
            skipped.append((key, reason))
            continue
        usable.append(
            SourceImage(
                key=key,
                path=path.absolute(),
                height=int(height),
                width=int(width),
                bit_depth=8 * array.dtype.itemsize,
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    return SourceScan(
        root=scan_root,
        usable=sorted(usable, key=lambda source: source.key),
        skipped=sorted(skipped),
        ignored=sorted(ignored),
    )


def _downscale(array: np.ndarray, factor: float) -> np.ndarray:
    height, width = scaled_size(array.shape[0], array.shape[1], factor)
    planes = []
    for channel in range(array.shape[2]):
        plane = Image.fromarray(array[..., channel].astype(np.float32))
        # Box filter: each output pixel is the area-weighted mean of the input pixels it covers,
        # i.e. what a sensor with larger pixels would record. No ringing or overshoot, and a
        # factor of 2 is exactly 2x2 binning.
        planes.append(np.asarray(plane.resize((width, height), Image.Resampling.BOX)))
    return np.stack(planes, axis=-1)


def load_image(source: SourceImage, *, channels: int = 3, downscale: float = 1.0) -> np.ndarray:
    """Decode a source photograph, optionally downscaled, with the requested colour channels.

    Parameters
    ----------
    source : SourceImage
        An image found by :func:`scan_sources`.
    channels : {3, 1}, optional
        3 (default): grey is replicated into R, G and B. 1: colour is reduced to Rec. 709 luma
        ``0.2126 R + 0.7152 G + 0.0722 B``, rounded.
    downscale : float, optional
        Factor >= 1 applied before any crop (2 halves each side, as the thesis did for GoPro
        frames), with an area-averaging (box) filter. The size is given by :func:`scaled_size`.
        Default 1 (no resampling).

    Returns
    -------
    ndarray, shape (H, W, channels)
        ``uint8`` for 8-bit sources, ``uint16`` for 16-bit ones, rounded to the nearest integer
        after any resampling or luma conversion.

    Raises
    ------
    UnreadableImage
        If the file cannot be read or decoded, or its bytes no longer match ``source.sha256``.
    ValueError
        On invalid ``channels`` or ``downscale``.

    Examples
    --------
    >>> from csb_generator.sources import load_image, scan_sources
    >>> sources = {s.key: s for s in scan_sources(None, image_size=64).usable}
    >>> camera = sources["skimage:camera"]
    >>> image = load_image(camera, downscale=2)
    >>> image.shape, image.dtype
    ((256, 256, 3), dtype('uint8'))
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    downscale = _check_downscale(downscale)
    try:
        data = source.path.read_bytes()
    except OSError as error:
        raise UnreadableImage(
            source.path, f"cannot read file ({error.strerror or error})"
        ) from error
    if hashlib.sha256(data).hexdigest() != source.sha256:
        raise UnreadableImage(
            source.path, "the file changed since it was scanned (SHA-256 differs)"
        )
    array = decode_image(data, source.path)
    dtype = array.dtype
    if downscale == 1 and (array.shape[2] == channels or (channels == 3 and array.shape[2] == 1)):
        result = array
    else:
        values = _downscale(array, downscale) if downscale != 1 else array
        if channels == 1 and values.shape[2] == 3:
            values = values @ _LUMA_WEIGHTS
            values = values[..., np.newaxis]
        limit = np.iinfo(dtype).max
        result = np.clip(np.rint(values), 0, limit).astype(dtype)
    if channels == 3 and result.shape[2] == 1:
        result = np.repeat(result, 3, axis=2)
    return result


class ImageCache:
    """A small least-recently-used cache of decoded images, bounded in bytes.

    Generation reads the same photographs many times; one cache per worker process avoids
    decoding them again. Returned arrays are read-only, because they are shared.

    Parameters
    ----------
    max_bytes : int, optional
        Memory budget for the cached arrays, >= 0 (default 512 MiB). An image larger than the
        budget is returned without being kept.

    Examples
    --------
    >>> from csb_generator.sources import ImageCache, scan_sources
    >>> cache = ImageCache()
    >>> source = scan_sources(None, image_size=64).usable[0]
    >>> cache.get(source) is cache.get(source), len(cache)
    (True, 1)
    """

    def __init__(self, max_bytes: int = 512 * 2**20):
        if int(max_bytes) != max_bytes or max_bytes < 0:
            raise ValueError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._entries: OrderedDict[tuple[str, str, int, float], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, source: SourceImage, *, channels: int = 3, downscale: float = 1.0) -> np.ndarray:
        """:func:`load_image` through the cache (same parameters, read-only result)."""
        key = (source.key, source.sha256, int(channels), float(downscale))
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        array = load_image(source, channels=channels, downscale=downscale)
        array.flags.writeable = False
        if array.nbytes <= self.max_bytes:
            self._entries[key] = array
            self.nbytes += array.nbytes
            while self.nbytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.nbytes -= evicted.nbytes
        return array

    def clear(self) -> None:
        """Forget every cached image."""
        self._entries.clear()
        self.nbytes = 0


def choose_crop(
    rng: np.random.Generator | None,
    image_shape: Sequence[int],
    size: int,
    policy: CropPolicy = "random",
) -> tuple[int, int, int, int]:
    """Choose a square crop inside an image.

    Parameters
    ----------
    rng : numpy.random.Generator or None
        Source of the position for ``"random"``: two draws, ``rng.integers(0, H - size + 1)``
        for the top and then the same for the left. Not used (no draw) for ``"center"``.
    image_shape : sequence of int
        ``(H, W)`` or an array shape ``(H, W, C)``; only the first two entries count.
    size : int
        Crop side S in pixels, >= 1.
    policy : {"random", "center"}, optional
        ``"random"`` (default): uniform over all valid positions. ``"center"``: the central crop,
        rounded towards the top-left when the margin is odd.

    Returns
    -------
    (top, left, height, width) : tuple of int
        ``height == width == size``; the crop is ``image[top:top + size, left:left + size]``.

    Raises
    ------
    ValueError
        If the image is smaller than ``size`` on either side, or on an invalid policy.

    Examples
    --------
    >>> import numpy as np
    >>> from csb_generator.sources import choose_crop
    >>> choose_crop(None, (300, 451), 256, "center")
    (22, 97, 256, 256)
    >>> top, left, _, _ = choose_crop(np.random.default_rng(0), (300, 451), 256)
    >>> 0 <= top <= 44 and 0 <= left <= 195
    True
    """
    size = _check_size(size, "crop size")
    if len(image_shape) < 2:
        raise ValueError(f"image_shape must start with (height, width), got {image_shape!r}")
    height, width = int(image_shape[0]), int(image_shape[1])
    if height < size or width < size:
        raise ValueError(f"image of {height}x{width} pixels is smaller than the crop ({size})")
    if policy == "center":
        return (height - size) // 2, (width - size) // 2, size, size
    if policy != "random":
        raise ValueError(f"crop policy must be 'random' or 'center', got {policy!r}")
    if rng is None:
        raise ValueError("a numpy.random.Generator is required for random crops")
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    return top, left, size, size
