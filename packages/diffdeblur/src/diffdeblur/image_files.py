"""Image files in and out of ``diffdeblur restore``, at the bit depth they are stored in.

Reading goes through :func:`csb_generator.images.read_image` (the decoder of the dataset
generator: 16-bit PNG and TIFF keep every bit, EXIF orientation is applied, alpha is dropped).
Writing picks the encoder from the file's suffix; every file is written under a temporary name
and renamed, so an interrupted run never leaves a partial image under a final name.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from csb_generator import read_image, write_bytes_atomic

__all__ = ["WRITABLE_SUFFIXES", "read_image", "write_image"]

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
