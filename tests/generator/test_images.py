"""Source photographs: scanning, decoding every pixel format, downscaling, crops.

The rules: docs/cli.md#sources.

Every file here is a real file written to a temporary folder by Pillow, tifffile, or a small PNG
writer below (Pillow cannot write 16-bit colour PNG).
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from csb_generator import UnreadableImage
from csb_generator.sources import (
    BUILTIN_PHOTOGRAPHS,
    ImageCache,
    SourceError,
    SourceImage,
    builtin_folder,
    choose_crop,
    load_image,
    scaled_size,
    scan_sources,
)
from PIL import Image, ImageOps


def _write(path: Path, array: np.ndarray, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def _noise(shape: tuple[int, ...], dtype=np.uint8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def _scan_one(path: Path, image_size: int = 1, downscale: float = 1.0) -> SourceImage:
    scan = scan_sources(path.parent, image_size=image_size, downscale=downscale)
    assert scan.skipped == [], scan.skipped
    (source,) = [s for s in scan.usable if s.path == path]
    return source


def _load(path: Path, **options) -> np.ndarray:
    return load_image(_scan_one(path), **options)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filtered(rows: np.ndarray, bpp: int, kinds: tuple[int, ...]) -> bytes:
    """PNG scanlines with the filter types cycling through ``kinds`` (forward filtering)."""
    out, prior = [], np.zeros(rows.shape[1], dtype=np.int64)
    for y, row in enumerate(rows.astype(np.int64)):
        kind = kinds[y % len(kinds)]
        left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int64), prior[:-bpp]])
        predictors = [0, left, prior, (left + prior) // 2, _paeth(left, prior, up_left)]
        predictor = predictors[kind] if kind < len(predictors) else 0  # invalid types on request
        out.append(bytes([kind]) + ((row - predictor) % 256).astype(np.uint8).tobytes())
        prior = row
    return b"".join(out)


ADAM7 = (
    (0, 0, 8, 8),
    (0, 4, 8, 8),
    (4, 0, 8, 4),
    (0, 2, 4, 4),
    (2, 0, 4, 2),
    (0, 1, 2, 2),
    (1, 0, 2, 1),
)


def _write_png16(
    path: Path,
    image: np.ndarray,
    *,
    interlace: bool = False,
    kinds: tuple[int, ...] = (0, 1, 2, 3, 4),
    orientation: int | None = None,
) -> Path:
    """Write a 16-bit PNG: image (H, W, C) uint16 with C = 1, 2, 3, 4 (grey, LA, RGB, RGBA)."""
    height, width, channels = image.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    big_endian = image.astype(">u2")
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    scanlines = b""
    for y0, x0, dy, dx in passes:
        sub = big_endian[y0::dy, x0::dx]
        if sub.size:
            rows = np.frombuffer(sub.tobytes(), np.uint8).reshape(sub.shape[0], -1)
            scanlines += _filtered(rows, 2 * channels, kinds)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, int(interlace))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        data += chunk(b"eXIf", exif.tobytes().removeprefix(b"Exif\x00\x00"))
    data += chunk(b"IDAT", zlib.compress(scanlines)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


BUILTIN_NAMES = {
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "rocket",
}


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_builtin_set_is_documented_real_photographs():
    names = list(BUILTIN_PHOTOGRAPHS)
    assert names == sorted(names)
    assert set(names) == BUILTIN_NAMES
    assert "clock_motion" not in {Path(p.filename).stem for p in BUILTIN_PHOTOGRAPHS.values()}
    for name, photo in BUILTIN_PHOTOGRAPHS.items():
        assert photo.name == name and photo.key == f"skimage:{name}"
        assert str(photo) == f"{photo.credit}; {photo.licence}"
        assert photo.path.is_file() and photo.path.parent == builtin_folder()
        assert photo.credit and photo.licence


def test_builtin_set_loads_offline_and_matches_skimage(no_network):
    import skimage.data

    scan = scan_sources(None, image_size=256)
    assert scan.root is None and scan.skipped == [] and scan.ignored == []
    assert [s.key for s in scan.usable] == sorted(f"skimage:{name}" for name in BUILTIN_NAMES)
    for source in scan.usable:
        image = load_image(source)
        name = source.key.removeprefix("skimage:")
        assert image.dtype == np.uint8 and source.bit_depth == 8
        assert image.shape == (source.height, source.width, 3)
        assert min(image.shape[:2]) >= 256 and max(image.shape[:2]) <= 1000
        assert image.std() > 10, f"{name} looks flat"
        reference = getattr(skimage.data, name)()
        if reference.ndim == 2:
            np.testing.assert_array_equal(image, np.repeat(reference[..., None], 3, axis=2))
            np.testing.assert_array_equal(load_image(source, channels=1)[..., 0], reference)
        else:
            np.testing.assert_array_equal(image, reference)
        assert source.sha256 == hashlib.sha256(source.path.read_bytes()).hexdigest()


def test_builtin_too_small_after_downscale_are_counted():
    scan = scan_sources(None, image_size=257, downscale=2)
    assert {s.key for s in scan.usable} == {"skimage:hubble_deep_field"}
    reasons = dict(scan.skipped)
    assert len(reasons) == 9
    assert reasons["skimage:chelsea"] == (
        "smaller than the crop (150x226 < 257) after downscaling by 2"
    )
    assert scan.summary() == "1 usable, 9 skipped, 0 other files ignored"


def test_scan_walks_nested_folders_sorted_and_leaves_out_hidden_and_other_files(tmp_path):
    image = _noise((40, 50, 3))
    _write(tmp_path / "b.png", image)
    _write(tmp_path / "a" / "c.jpg", image)
    _write(tmp_path / "a" / "deep" / "er" / "d.TIFF", image)
    _write(tmp_path / "Z.JPEG", image)
    _write(tmp_path / "x.bmp", image)
    _write(tmp_path / "y.webp", image, lossless=True)
    _write(tmp_path / "a" / "e.Jpeg", image[..., 0])
    _write(tmp_path / ".hidden.png", image)
    _write(tmp_path / "._b.png", image)  # macOS resource fork next to b.png
    _write(tmp_path / ".cache" / "f.png", image)
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "a" / "deep" / "meta.json").write_text("{}")

    scan = scan_sources(tmp_path, image_size=32)
    keys = [s.key for s in scan.usable]
    assert keys == ["Z.JPEG", "a/c.jpg", "a/deep/er/d.TIFF", "a/e.Jpeg", "b.png", "x.bmp", "y.webp"]
    assert scan.skipped == []
    assert scan.ignored == ["a/deep/meta.json", "notes.txt"]
    assert scan.root == tmp_path
    for source in scan.usable:
        assert source.path == tmp_path / source.key and source.path.is_absolute()
        assert (source.height, source.width, source.bit_depth) == (40, 50, 8)
        assert source.sha256 == hashlib.sha256(source.path.read_bytes()).hexdigest()
    assert scan_sources(str(tmp_path), image_size=32) == scan  # deterministic, str accepted


def test_broken_files_are_skipped_with_a_reason_never_raised(tmp_path):
    rng = np.random.default_rng(1)
    image = _noise((64, 80, 3))
    good = _write(tmp_path / "good.png", image)
    (tmp_path / "random.png").write_bytes(rng.bytes(5000))
    (tmp_path / "text.png").write_text("hello, I am text\n" * 20)
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name, options in (("cut.png", {}), ("cut.jpg", {"quality": 95})):
        full = _write(tmp_path / "full" / name, image, **options).read_bytes()
        (tmp_path / name).write_bytes(full[: len(full) // 2])
    png16 = _write_png16(tmp_path / "full" / "16.png", _noise((30, 20, 3), np.uint16)).read_bytes()
    (tmp_path / "cut16.png").write_bytes(png16[: len(png16) // 2])
    broken_crc = bytearray(png16)
    broken_crc[50] ^= 0xFF  # inside the IDAT chunk's data
    (tmp_path / "crc16.png").write_bytes(bytes(broken_crc))
    _write_png16(tmp_path / "filter16.png", _noise((5, 4, 1), np.uint16), kinds=(0, 5))
    tifffile.imwrite(tmp_path / "float.tif", np.ones((40, 40), np.float32))
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")

    scan = scan_sources(tmp_path, image_size=16)
    assert [s.key for s in scan.usable] == [
        "full/16.png",
        "full/cut.jpg",
        "full/cut.png",
        "good.png",
    ]
    reasons = dict(scan.skipped)
    assert sorted(reasons) == [
        "crc16.png",
        "cut.jpg",
        "cut.png",
        "cut16.png",
        "dangling.png",
        "empty.jpg",
        "filter16.png",
        "float.tif",
        "random.png",
        "text.png",
    ]
    assert reasons["random.png"].startswith("not an image")
    assert reasons["text.png"].startswith("not an image")
    assert reasons["empty.jpg"] == "empty file"
    assert "truncated" in reasons["cut.jpg"] and "truncated" in reasons["cut.png"]
    assert "truncated" in reasons["cut16.png"] or "incomplete" in reasons["cut16.png"]
    assert "checksum" in reasons["crc16.png"].lower()
    assert "filter type" in reasons["filter16.png"].lower()
    assert "unsupported" in reasons["float.tif"]
    assert reasons["dangling.png"].startswith("cannot read file")
    assert load_image(scan.usable[-1]).shape == (64, 80, 3)
    assert scan.usable[-1].path == good


def test_too_small_images_are_skipped_and_counted(tmp_path):
    _write(tmp_path / "wide.png", _noise((31, 200)))
    _write(tmp_path / "tall.png", _noise((200, 31)))
    _write(tmp_path / "fits.png", _noise((32, 32)))
    scan = scan_sources(tmp_path, image_size=32)
    assert [s.key for s in scan.usable] == ["fits.png"]
    assert scan.skipped == [
        ("tall.png", "smaller than the crop (200x31 < 32)"),
        ("wide.png", "smaller than the crop (31x200 < 32)"),
    ]
    halved = scan_sources(tmp_path, image_size=16, downscale=2)
    assert [s.key for s in halved.usable] == ["fits.png", "tall.png", "wide.png"]
    assert halved.usable[0].height == 32  # sizes are before the downscale


def test_empty_folder_gives_nothing_usable(tmp_path):
    scan = scan_sources(tmp_path, image_size=8)
    assert (scan.usable, scan.skipped, scan.ignored) == ([], [], [])
    assert scan.summary() == "0 usable, 0 skipped, 0 other files ignored"


def test_missing_or_non_folder_root_raises_source_error(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(SourceError, match="does not exist") as raised:
        scan_sources(missing, image_size=8)
    assert str(missing) in str(raised.value)
    a_file = _write(tmp_path / "photo.png", _noise((8, 8)))
    with pytest.raises(SourceError, match="not a folder") as raised:
        scan_sources(a_file, image_size=8)
    assert str(a_file) in str(raised.value)
    assert isinstance(raised.value, ValueError)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unreadable_root_raises_and_unreadable_subfolder_is_skipped(tmp_path):
    _write(tmp_path / "locked" / "a.png", _noise((8, 8)))
    (tmp_path / "locked").chmod(0)
    try:
        with pytest.raises(SourceError, match="cannot read source folder"):
            scan_sources(tmp_path / "locked", image_size=8)
        scan = scan_sources(tmp_path, image_size=8)
        assert [key for key, _ in scan.skipped] == ["locked/"]
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_permission_denied_as_reported_by_the_os(tmp_path, monkeypatch):
    # Root reads everything, so the test above is skipped there; the OS error is simulated here.
    _write(tmp_path / "locked" / "a.png", _noise((8, 8)))
    _write(tmp_path / "open" / "b.png", _noise((8, 8)))
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == tmp_path / "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SourceError, match=r"cannot read source folder .*Permission denied"):
        scan_sources(tmp_path / "locked", image_size=8)
    scan = scan_sources(tmp_path, image_size=8)
    assert [s.key for s in scan.usable] == ["open/b.png"]
    assert scan.skipped == [("locked/", "cannot list folder (Permission denied)")]


def test_invalid_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        scan_sources(tmp_path, image_size=0)
    with pytest.raises(ValueError, match="downscale"):
        scan_sources(tmp_path, image_size=8, downscale=0.5)
    source = _scan_one(_write(tmp_path / "a.png", _noise((8, 8))))
    with pytest.raises(ValueError, match="channels"):
        load_image(source, channels=2)
    with pytest.raises(ValueError, match="downscale"):
        load_image(source, downscale=float("nan"))


def test_grey_8bit_is_replicated_or_kept(tmp_path):
    grey = _noise((20, 30))
    path = _write(tmp_path / "grey.png", grey)
    rgb = _load(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (20, 30, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], grey)
    np.testing.assert_array_equal(_load(path, channels=1)[..., 0], grey)


def test_bilevel_image_becomes_0_and_255(tmp_path):
    bits = _noise((12, 16)) > 127
    path = tmp_path / "bits.png"
    Image.fromarray(bits).save(path)
    np.testing.assert_array_equal(_load(path, channels=1)[..., 0], np.where(bits, 255, 0))


def test_alpha_is_dropped_without_compositing(tmp_path):
    rgba = _noise((10, 12, 4))
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent: its stored colour is kept
    np.testing.assert_array_equal(_load(_write(tmp_path / "rgba.png", rgba)), rgba[..., :3])
    la = Image.fromarray(rgba[..., :2], mode="LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(_load(tmp_path / "la.png", channels=1)[..., 0], rgba[..., 0])
    np.testing.assert_array_equal(_load(tmp_path / "la.png"), np.repeat(rgba[..., :1], 3, axis=2))


def test_palette_image_is_expanded_to_its_colours(tmp_path):
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [12, 34, 56]], dtype=np.uint8)
    indices = np.random.default_rng(2).integers(0, 4, (9, 11)).astype(np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(colours.ravel().tolist())
    image.save(tmp_path / "palette.png", transparency=3)  # index 3 is transparent
    image.save(tmp_path / "palette.bmp")
    for name in ("palette.png", "palette.bmp"):
        np.testing.assert_array_equal(_load(tmp_path / name), colours[indices])


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(tmp_path, fmt):
    # 4 flat blocks: cyan ink, magenta + yellow ink (red), black ink, no ink (white).
    inks = np.array([[255, 0, 0, 0], [0, 255, 255, 0], [0, 0, 0, 255], [0, 0, 0, 0]], np.uint8)
    expected = np.array([[0, 255, 255], [255, 0, 0], [0, 0, 0], [255, 255, 255]])
    cmyk = np.repeat(np.repeat(inks.reshape(2, 2, 4), 16, axis=0), 16, axis=1)
    path = tmp_path / f"cmyk.{fmt.lower()}"
    Image.fromarray(cmyk, mode="CMYK").save(path, fmt, quality=100)
    with Image.open(path) as image:
        assert image.mode == "CMYK"
    rgb = _load(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    centres = rgb[8::16, 8::16].reshape(4, 3).astype(int)
    np.testing.assert_allclose(centres, expected, atol=3 if fmt == "JPEG" else 0)


def test_luma_for_one_channel(tmp_path):
    colours = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    grey = _load(_write(tmp_path / "rgb.png", colours), channels=1)
    assert grey.shape == (1, 4, 1) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[0, :, 0], [54, 182, 18, 255])  # Rec. 709, rounded
    deep = _write_png16(tmp_path / "rgb16.png", colours.astype(np.uint16) * 257)
    np.testing.assert_array_equal(_load(deep, channels=1)[0, :, 0], [13933, 46871, 4732, 65535])


def test_16bit_grey_png_and_tiff_are_uint16(tmp_path):
    grey = _noise((17, 23), np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")  # Pillow writes mode I;16
    tifffile.imwrite(tmp_path / "grey16.tif", grey)
    tifffile.imwrite(tmp_path / "grey16be.tif", grey, byteorder=">")
    Image.fromarray(grey).save(tmp_path / "pillow16.tif")
    for name in ("grey16.png", "grey16.tif", "grey16be.tif", "pillow16.tif"):
        path = tmp_path / name
        source = _scan_one(path)
        assert source.bit_depth == 16
        image = load_image(source, channels=1)
        assert image.dtype == np.uint16, name
        np.testing.assert_array_equal(image[..., 0], grey, err_msg=name)
        np.testing.assert_array_equal(load_image(source), np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("interlace", [False, True], ids=["sequential", "adam7"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4], ids=["grey", "grey-alpha", "rgb", "rgba"])
def test_16bit_png_every_colour_type_and_filter(tmp_path, channels, interlace):
    image = _noise((37, 29, channels), np.uint16, seed=channels)
    path = _write_png16(tmp_path / "deep.png", image, interlace=interlace)
    source = _scan_one(path)
    assert (source.height, source.width, source.bit_depth) == (37, 29, 16)
    colour = image[..., : 3 if channels >= 3 else 1]
    loaded = load_image(source, channels=3 if channels >= 3 else 1)
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, colour)


def test_16bit_png_agrees_with_pillow_on_the_high_byte():
    # A 16-bit RGB PNG written by another encoder: Pillow reads it reduced to its high bytes.
    path = builtin_folder() / "chessboard_RGB.png"
    with Image.open(path) as image:
        reduced = np.asarray(image)
    source = SourceImage(
        "chessboard", path, 200, 200, 16, hashlib.sha256(path.read_bytes()).hexdigest()
    )
    deep = load_image(source)
    assert deep.dtype == np.uint16
    np.testing.assert_array_equal(deep >> 8, reduced)


@pytest.mark.parametrize("planar", ["contig", "separate"])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_16bit_rgb_tiff_is_uint16(tmp_path, planar, compression):
    rgb = _noise((19, 21, 3), np.uint16, seed=5)
    data = rgb if planar == "contig" else np.moveaxis(rgb, -1, 0)
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, data, photometric="rgb", planarconfig=planar, compression=compression)
    source = _scan_one(path)
    assert (source.height, source.width, source.bit_depth) == (19, 21, 16)
    np.testing.assert_array_equal(load_image(source), rgb)


def test_16bit_rgba_tiff_drops_alpha(tmp_path):
    rgba = _noise((9, 10, 4), np.uint16, seed=6)
    tifffile.imwrite(tmp_path / "rgba16.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(_load(tmp_path / "rgba16.tif"), rgba[..., :3])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_viewers(tmp_path, orientation):
    pixels = _noise((6, 10, 3), seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _write(tmp_path / "oriented.png", pixels, exif=exif)
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image))
    source = _scan_one(path)
    assert (source.height, source.width) == expected.shape[:2]
    np.testing.assert_array_equal(load_image(source), expected)
    deep = _write_png16(
        tmp_path / "deep.png", pixels.astype(np.uint16) * 257, orientation=orientation
    )
    np.testing.assert_array_equal(_load(deep), expected.astype(np.uint16) * 257)


def test_a_file_changed_after_the_scan_is_refused(tmp_path):
    path = _write(tmp_path / "a.png", _noise((8, 8)))
    source = _scan_one(path)
    _write(path, _noise((8, 8), seed=9))
    with pytest.raises(UnreadableImage, match="changed") as raised:
        load_image(source)
    assert raised.value.path == path and str(path) in str(raised.value)


def test_a_corrupt_file_raises_unreadable_image_naming_it(tmp_path):
    path = tmp_path / "fake.png"
    path.write_text("not a PNG")
    source = SourceImage("fake.png", path, 1, 1, 8, hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(UnreadableImage, match="not an image") as raised:
        load_image(source)
    assert str(path) in str(raised.value) and isinstance(raised.value, ValueError)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_downscale_by_2_is_2x2_binning_and_keeps_dtype(tmp_path, dtype):
    image = _noise((24, 30, 3), dtype, seed=3)
    path = (
        _write(tmp_path / "a.png", image)
        if dtype == np.uint8
        else _write_png16(tmp_path / "a.png", image)
    )
    halved = _load(path, downscale=2)
    assert halved.dtype == dtype and halved.shape == (12, 15, 3)
    binned = image.reshape(12, 2, 15, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(halved, np.rint(binned).astype(dtype))
    grey = _load(path, downscale=2, channels=1)
    assert grey.shape == (12, 15, 1) and grey.dtype == dtype


def test_fractional_downscale_follows_scaled_size(tmp_path):
    image = _noise((31, 45))
    halved = _load(_write(tmp_path / "a.png", image), downscale=1.5)
    assert halved.shape == (*scaled_size(31, 45, 1.5), 3) == (21, 30, 3)
    assert image.min() <= halved.min() and halved.max() <= image.max()
    flat = _load(_write(tmp_path / "flat.png", np.full((31, 45), 77, np.uint8)), downscale=2.5)
    assert np.all(flat == 77)
    assert scaled_size(5, 7, 1) == (5, 7)
    assert scaled_size(1, 1, 16) == (1, 1)


def test_random_crop_is_deterministic_and_inside_the_image():
    first = choose_crop(np.random.default_rng(42), (300, 451), 256)
    assert first == choose_crop(np.random.default_rng(42), (300, 451), 256)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(2000):
        top, left, height, width = choose_crop(rng, (10, 12, 3), 8)
        assert (height, width) == (8, 8)
        assert 0 <= top <= 2 and 0 <= left <= 4
        seen.add((top, left))
    assert len(seen) == 3 * 5  # every valid position is reachable
    assert choose_crop(np.random.default_rng(1), (8, 8), 8) == (0, 0, 8, 8)


def test_center_crop_is_centred_and_draws_nothing():
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    assert choose_crop(rng, (300, 451), 256, "center") == (22, 97, 256, 256)
    assert choose_crop(rng, (9, 9), 3, "center") == (3, 3, 3, 3)
    assert rng.bit_generator.state == state


def test_crop_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="smaller than the crop"):
        choose_crop(rng, (255, 400), 256)
    with pytest.raises(ValueError, match="policy"):
        choose_crop(rng, (300, 300), 256, "corner")
    with pytest.raises(ValueError, match="Generator"):
        choose_crop(None, (300, 300), 256)
    with pytest.raises(ValueError, match="crop size"):
        choose_crop(rng, (300, 300), 0)


def test_image_cache_shares_read_only_arrays_within_its_budget(tmp_path):
    for name in "abc":
        _write(tmp_path / f"{name}.png", _noise((16, 16, 3), seed=ord(name)))
    a, b, c = scan_sources(tmp_path, image_size=8).usable
    cache = ImageCache(max_bytes=2 * 16 * 16 * 3)
    first = cache.get(a)
    assert cache.get(a) is first and not first.flags.writeable
    np.testing.assert_array_equal(first, load_image(a))
    assert cache.get(a, channels=1).shape == (16, 16, 1)  # a different entry
    cache.get(b)
    cache.get(c)
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    assert cache.get(a) is not first  # evicted, decoded again
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
