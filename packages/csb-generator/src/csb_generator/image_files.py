"""Image files: decoding the photographs a dataset is cut from, and encoding restored images.

One decoder serves every reader (the dataset sources, ``diffdeblur restore`` and ``evaluate``),
and one encoder every writer, so a file means the same pixels wherever it is read.

Decoding rules, the same for every caller:

- Formats: PNG, JPEG, TIFF, BMP and WebP, recognised by content (the extension only selects
  candidates). Multi-frame files (multi-page TIFF, animated WebP) give their first frame.
- Depth: 8-bit sources load as ``uint8``, 16-bit sources as ``uint16``. 16-bit PNG files are
  decoded with pypng (Pillow reduces 16-bit colour PNG to 8 bits); 16-bit colour TIFF files are
  read with ``tifffile`` (Pillow reduces those too). 32-bit integer and floating-point images
  are refused.
- Colour: grey stays grey (1 channel), everything else becomes RGB. Palette images are expanded,
  CMYK and YCbCr are converted by Pillow, and an alpha channel is dropped without compositing: the
  colour stored under a transparent pixel is used as it is. No colour management: embedded ICC
  profiles and gamma chunks are ignored, pixel values are used as stored.
- Orientation: the EXIF orientation tag is applied, so an image loads the way viewers show it.

Writing picks the encoder from the file's suffix (:data:`WRITABLE_SUFFIXES`); every file is
written under a temporary name and renamed, so an interrupted run never leaves a partial image
under a final name.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic_files import write_bytes_atomic

__all__ = [
    "IMAGE_EXTENSIONS",
    "WRITABLE_SUFFIXES",
    "UnreadableImage",
    "decode_image",
    "read_image",
    "write_image",
]

#: File name extensions (lower case) of the files a source folder is searched for.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})

#: Suffixes :func:`write_image` can encode, and the bit depths each keeps.
WRITABLE_SUFFIXES = {
    ".png": (8, 16),
    ".tif": (8, 16),
    ".tiff": (8, 16),
    ".jpg": (8,),
    ".jpeg": (8,),
    ".bmp": (8,),
    ".webp": (8,),
}

_ORIENTATION_TAG = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class UnreadableImage(ValueError):
    """A file that cannot be decoded as an image, or that changed since it was scanned.

    Attributes
    ----------
    path : Path
        The file.
    reason : str
        What is wrong, without the file name (e.g. ``"not an image (format not recognised)"``).
    """

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


class _DecodeError(Exception):
    """Internal: a decoding failure, carrying the reason only (the caller knows the file)."""


def _exif_orientation(data: bytes) -> int:
    """EXIF orientation of an image file, 1 (as stored) when it has none or it is damaged."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a damaged EXIF block should not cost a photograph its pixels
        return 1


def _is_png16(data: bytes) -> bool:
    return len(data) >= 26 and data.startswith(_PNG_SIGNATURE) and data[24] == 16


def _decode_png16(data: bytes) -> tuple[np.ndarray, int]:
    """16-bit PNG of any colour type as (H, W, 1 or 3) uint16, and its EXIF orientation.

    Pillow reduces 16-bit colour PNG to 8 bits, so these files go through pypng, which keeps
    every bit (it checks CRCs and handles interlacing and palettes).
    """
    import png  # pypng

    try:
        width, height, rows, info = png.Reader(bytes=data).asDirect()
        pixels = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    except (png.Error, ValueError, EOFError) as error:
        raise _DecodeError(f"corrupt or truncated (PNG: {error})") from error
    samples = info["planes"]
    image = pixels.reshape(height, width, samples)
    if info.get("alpha"):
        image = image[..., : samples - 1]
    return np.ascontiguousarray(image), _exif_orientation(data)


def _decode_tifffile(data: bytes) -> tuple[np.ndarray, int]:
    """TIFF that Pillow cannot read at full depth (16-bit colour, separate planes)."""
    import tifffile  # imported here: it takes ~0.15 s and only rare files need it

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            page = tiff.pages[0]
            array = page.asarray()
            axes, photometric = page.axes, int(page.photometric)
            tag = page.tags.get(274)
            orientation = int(tag.value) if tag is not None else 1
    except Exception as error:  # tifffile raises many types on damaged files
        raise _DecodeError(
            f"corrupt or unsupported TIFF ({type(error).__name__}: {error})"
        ) from error
    if array.dtype not in (np.uint8, np.uint16):
        raise _DecodeError(f"unsupported pixel type {array.dtype} (only 8- and 16-bit images)")
    if axes == "SYX":
        array = np.moveaxis(array, 0, -1)
    elif axes == "YX":
        array = array[..., np.newaxis]
    elif axes != "YXS":
        raise _DecodeError(f"unsupported TIFF layout (axes {axes})")
    if photometric == 0:  # min-is-white
        array = np.iinfo(array.dtype).max - array[..., :1]
    elif photometric == 1:  # min-is-black
        array = array[..., :1]
    elif photometric == 2 and array.shape[-1] >= 3:  # RGB, possibly with extra samples
        array = array[..., :3]
    else:
        raise _DecodeError(
            f"unsupported TIFF colour (photometric {photometric}, {array.dtype.itemsize * 8}-bit)"
        )
    return np.ascontiguousarray(array), orientation


def _pillow_array(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image as (H, W, 1 or 3), uint8 or uint16."""
    mode = image.mode
    if mode.startswith("I;16") and not mode.endswith("S"):
        array = np.asarray(image).astype(np.uint16)  # I;16B arrives big-endian
    elif mode in ("I", "F") or mode.startswith(("I;", "F;")):
        raise _DecodeError(f"unsupported pixel format (Pillow mode {mode}; only 8- and 16-bit)")
    elif mode == "L":
        array = np.asarray(image)
    elif mode == "1":
        array = np.asarray(image.convert("L"))
    elif mode == "LA":
        array = np.asarray(image)[..., 0]
    elif mode == "RGB":
        array = np.asarray(image)
    elif mode in ("RGBA", "RGBX"):
        array = np.asarray(image)[..., :3]
    elif mode in ("P", "PA"):
        # Through RGBA, so that a palette with a transparent entry converts without a warning.
        array = np.asarray(image.convert("RGBA"))[..., :3]
    else:  # CMYK, YCbCr, LAB, HSV, premultiplied modes: Pillow's own conversion
        array = np.asarray(image.convert("RGB"))
    if array.ndim == 2:
        array = array[..., np.newaxis]
    return np.ascontiguousarray(array)


def _deep_colour_tiff(image: Image.Image) -> bool:
    bits = image.tag_v2.get(258, (1,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    return len(bits) > 1 and max(bits) > 8


def _pillow_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a damaged EXIF block should not cost a photograph its pixels
        return 1


def _decode_pillow(data: bytes) -> tuple[np.ndarray, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "TIFF" and _deep_colour_tiff(image):
                return _decode_tifffile(data)
            image.load()
            return _pillow_array(image), _pillow_orientation(image)
    except UnidentifiedImageError as error:
        if data.startswith(_TIFF_MAGICS):
            return _decode_tifffile(data)
        raise _DecodeError("not an image (format not recognised)") from error


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, C) array, as viewers display it."""
    if orientation in (2, 4, 5, 7):  # mirrored orientations
        array = array[:, ::-1]
        orientation = {2: 1, 4: 3, 5: 8, 7: 6}[orientation]
    turns = {3: 2, 6: -1, 8: 1}.get(orientation, 0)  # counter-clockwise quarter turns
    return np.ascontiguousarray(np.rot90(array, turns))


def _decode(data: bytes) -> np.ndarray:
    """Decode file bytes to (H, W, 1 or 3) uint8/uint16, oriented. Raises _DecodeError."""
    if not data:
        raise _DecodeError("empty file")
    try:
        array, orientation = _decode_png16(data) if _is_png16(data) else _decode_pillow(data)
    except _DecodeError:
        raise
    except Image.DecompressionBombError as error:
        raise _DecodeError(f"too large ({error})") from error
    # Decoders raise OSError, SyntaxError, struct.error, IndexError... on damaged input.
    except Exception as error:
        raise _DecodeError(f"corrupt or truncated ({type(error).__name__}: {error})") from error
    return _orient(array, orientation if orientation in range(1, 9) else 1)


def decode_image(data: bytes, path: str | Path) -> np.ndarray:
    """Decode the bytes of an image file, as :func:`read_image` does.

    Parameters
    ----------
    data : bytes
        The file's contents (the caller read them, e.g. to hash them too).
    path : str or Path
        The file, named by the error.

    Returns
    -------
    ndarray
        As :func:`read_image` returns it; an undecodable file raises its ``UnreadableImage``,
        whose ``reason`` says why.
    """
    try:
        return _decode(data)
    except _DecodeError as error:
        raise UnreadableImage(Path(path), str(error)) from error


def read_image(path: str | Path) -> np.ndarray:
    """Decode one image file as stored: grey or colour, 8 or 16 bits, EXIF-oriented.

    The same decoder as the dataset sources (16-bit PNG through pypng, deep TIFF through
    tifffile); an alpha channel is dropped.

    Parameters
    ----------
    path : str or Path
        A PNG, JPEG, TIFF, BMP or WebP file.

    Returns
    -------
    ndarray, shape (H, W, 1) or (H, W, 3)
        ``uint8`` or ``uint16``, as the file stores it.

    Raises
    ------
    UnreadableImage
        If the file cannot be read or decoded; the message names it.

    Examples
    --------
    >>> from csb_generator import BUILTIN_PHOTOGRAPHS, read_image
    >>> image = read_image(BUILTIN_PHOTOGRAPHS["camera"].path)
    >>> image.shape, image.dtype
    ((512, 512, 1), dtype('uint8'))
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UnreadableImage(path, f"cannot read file ({error.strerror or error})") from error
    return decode_image(data, path)


def _encode(image: np.ndarray, suffix: str) -> bytes:
    buffer = io.BytesIO()
    if suffix in (".tif", ".tiff"):
        import tifffile

        photometric = "minisblack" if image.shape[2] == 1 else "rgb"
        tifffile.imwrite(
            buffer, image if image.shape[2] == 3 else image[..., 0], photometric=photometric
        )
    elif suffix == ".png" and image.dtype == np.uint16:
        import png  # pypng: Pillow cannot write 16-bit colour PNG

        height, width, channels = image.shape
        writer = png.Writer(width, height, greyscale=channels == 1, bitdepth=16)
        writer.write(buffer, image.reshape(height, width * channels).tolist())
    else:
        from PIL import Image

        pillow = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
        options = {"quality": 95} if suffix in (".jpg", ".jpeg", ".webp") else {}
        pillow.save(buffer, format=Image.registered_extensions()[suffix], **options)
    return buffer.getvalue()


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an image file atomically, in the format its suffix names.

    Parameters
    ----------
    path : str or Path
        Destination; its folder must exist. Suffix one of :data:`WRITABLE_SUFFIXES`.
    image : ndarray, shape (H, W), (H, W, 1) or (H, W, 3)
        ``uint8``, or ``uint16`` for PNG and TIFF.

    Raises
    ------
    ValueError
        For an unknown suffix, or a bit depth the format cannot store.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE_SUFFIXES:
        raise ValueError(
            f"cannot write {path}: unknown image suffix (use one of "
            f"{', '.join(sorted(WRITABLE_SUFFIXES))})"
        )
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., np.newaxis]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"cannot write {path}: expected (H, W[, 1 or 3]), got {image.shape}")
    bits = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(image.dtype)
    if bits not in WRITABLE_SUFFIXES[suffix]:
        raise ValueError(f"cannot write {image.dtype} pixels to {path} ({suffix} files)")
    write_bytes_atomic(path, _encode(np.ascontiguousarray(image), suffix))
