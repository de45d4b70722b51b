"""Bad and unusual input through the command line: every pixel format a photo folder may hold,
files that are not usable images, folders with nothing usable, and impossible options
(docs/cli.md#sources; exit codes in docs/cli.md#exit-codes)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_support import (
    TINY,
    assert_ok,
    assert_usage_error,
    describe,
    read_arrays,
    read_json,
    run_cli,
    run_many,
    write_png16,
)
from PIL import Image

RUN = ["--mode", "random", "--count", "6", "--shard-size", "6", *TINY, "--no-preview"]
HEIGHT, WIDTH = 80, 96


def _pixels(seed: int, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    """A smooth gradient plus noise, so that JPEG keeps it recognisable."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = (rows * 2 + cols)[..., None] + 40 * np.arange(channels)
    image = base + rng.integers(0, 40, (HEIGHT, WIDTH, channels))
    image = image / image.max() * np.iinfo(dtype).max
    image = image.astype(dtype)
    return image[..., 0] if channels == 1 else image


def _save(path: Path, array: np.ndarray, mode: str | None = None, **options) -> None:
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode, **({"colors": 16} if mode == "P" else {}))
    image.save(path, **options)


def _decoded_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# --- usable pixel formats: name -> builder(folder) -> {key: expected RGB array} ---------------


def _rgb8(folder: Path) -> dict[str, np.ndarray]:
    array = _pixels(1)
    _save(folder / "rgb.png", array)
    return {"rgb.png": array}


def _png16_rgb(folder: Path) -> dict[str, np.ndarray]:
    array = _pixels(2, dtype=np.uint16)
    write_png16(folder / "deep.png", array)
    return {"deep.png": array}


def _png16_grey(folder: Path) -> dict[str, np.ndarray]:
    array = _pixels(3, channels=1, dtype=np.uint16)
    write_png16(folder / "deep-grey.png", array)
    return {"deep-grey.png": np.repeat(array[..., None], 3, axis=2)}


def _tiff16_rgb(folder: Path) -> dict[str, np.ndarray]:
    array = _pixels(4, dtype=np.uint16)
    tifffile.imwrite(folder / "deep.tif", array, photometric="rgb")
    return {"deep.tif": array}


def _grey(folder: Path) -> dict[str, np.ndarray]:
    array = _pixels(5, channels=1)
    _save(folder / "grey.png", array)
    return {"grey.png": np.repeat(array[..., None], 3, axis=2)}


def _rgba(folder: Path) -> dict[str, np.ndarray]:
    array = _pixels(6, channels=4)
    array[::2, ::3, 3] = 0  # some fully transparent pixels: their colour is kept as stored
    _save(folder / "alpha.png", array)
    return {"alpha.png": array[..., :3]}


def _palette(folder: Path) -> dict[str, np.ndarray]:
    _save(folder / "palette.png", _pixels(7), mode="P")
    with Image.open(folder / "palette.png") as image:
        assert image.mode == "P"
    return {"palette.png": _decoded_rgb(folder / "palette.png")}


def _cmyk(folder: Path) -> dict[str, np.ndarray]:
    _save(folder / "print.jpg", _pixels(8), mode="CMYK", quality=95)
    with Image.open(folder / "print.jpg") as image:
        assert image.mode == "CMYK"
    return {"print.jpg": _decoded_rgb(folder / "print.jpg")}


def _mixed_depths(folder: Path) -> dict[str, np.ndarray]:
    eight, sixteen = _pixels(9), _pixels(10, dtype=np.uint16)
    _save(folder / "a-eight.png", eight)
    write_png16(folder / "b-sixteen.png", sixteen)
    # With any 16-bit source, sharp crops are uint16 and 8-bit values are scaled exactly.
    return {"a-eight.png": eight.astype(np.uint16) * 257, "b-sixteen.png": sixteen}


SIXTEEN_BIT_FILES = {"deep.png", "deep-grey.png", "deep.tif", "b-sixteen.png"}

PIXEL_FORMATS: dict[str, tuple[Callable[[Path], dict[str, np.ndarray]], str]] = {
    # name: (builder, expected dtype of the sharp crops)
    "rgb-8bit-png": (_rgb8, "uint8"),
    "rgb-16bit-png": (_png16_rgb, "uint16"),
    "grey-16bit-png": (_png16_grey, "uint16"),
    "rgb-16bit-tiff": (_tiff16_rgb, "uint16"),
    "grey-png": (_grey, "uint8"),
    "rgba-png": (_rgba, "uint8"),
    "palette-png": (_palette, "uint8"),
    "cmyk-jpeg": (_cmyk, "uint8"),
    "8-and-16-bit-mixed": (_mixed_depths, "uint16"),
}


@pytest.fixture(scope="module")
def pixel_format_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixel-formats")
    cases, commands = {}, []
    for name, (builder, _) in PIXEL_FORMATS.items():
        source = root / name / "photos"
        source.mkdir(parents=True)
        expected = builder(source)
        out = root / name / "out"
        cases[name] = (out, expected)
        count = ["--count", "12", "--shard-size", "12"] if len(expected) > 1 else []
        commands.append([*RUN, *count, "--source", source, "--out", out])
    results = run_many(commands)
    return {name: (*cases[name], result) for name, result in zip(cases, results, strict=True)}


@pytest.mark.parametrize("kind", list(PIXEL_FORMATS))
def test_pixel_format_gives_rgb_crops(pixel_format_runs, kind):
    out, expected, result = pixel_format_runs[kind]
    assert_ok(result)
    dtype = PIXEL_FORMATS[kind][1]
    manifest = read_json(out / "manifest.json")
    keys = [source["key"] for source in manifest["sources"]]
    assert keys == sorted(expected)
    assert manifest["skipped"]["count"] == 0
    assert manifest["options"]["sharp_dtype"] == dtype
    for source in manifest["sources"]:
        assert source["bit_depth"] == (16 if source["key"] in SIXTEEN_BIT_FILES else 8)
        assert (source["height"], source["width"]) == (HEIGHT, WIDTH)
    arrays = read_arrays(out)
    assert arrays["sharp"].dtype == dtype and arrays["sharp"].shape[1:] == (32, 32, 3)
    assert arrays["blurred"].dtype == np.float32
    assert 0 <= arrays["blurred"].min() and arrays["blurred"].max() <= 1
    used = set()
    for i, (source, (top, left, height, width)) in enumerate(
        zip(arrays["source"], arrays["crop"], strict=True)
    ):
        key = keys[source]
        used.add(key)
        crop = expected[key][top : top + height, left : left + width]
        np.testing.assert_array_equal(arrays["sharp"][i], crop, err_msg=f"sample {i} ({key})")
    assert used == set(expected), "every source should have been drawn at least once"


# --- files that are skipped (with a usable photograph next to them) --------------------------


def _valid_png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_pixels(11)).save(buffer, format="PNG")
    return buffer.getvalue()


def _valid_jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_pixels(12)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


SKIPPED: dict[str, tuple[str, Callable[[], bytes], tuple[str, ...]]] = {
    # name: (file name, content, words expected in the reason)
    "random-bytes-png": (
        "corrupt.png",
        lambda: np.random.default_rng(13).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        ("not an image",),
    ),
    "truncated-png": ("cut.png", lambda: _valid_png_bytes()[:3000], ("truncated",)),
    "truncated-jpeg": (
        "cut.jpg",
        lambda: _valid_jpeg_bytes()[: len(_valid_jpeg_bytes()) // 2],
        ("truncated",),
    ),
    "text-named-jpg": ("fake.jpg", lambda: b"this is a text file, not a JPEG\n" * 20, ("image",)),
    "empty-png": ("empty.png", lambda: b"", ("empty",)),
    "smaller-than-crop": (
        "tiny.png",
        lambda: _png_of(np.zeros((20, 40, 3), dtype=np.uint8)),
        ("smaller than the crop",),
    ),
}


def _png_of(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def skipped_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("skipped")
    outs, commands = {}, []
    for name, (filename, content, _) in [*SKIPPED.items(), ("text-file", ("notes.txt", None, ()))]:
        source = root / name / "photos"
        source.mkdir(parents=True)
        (source / "good.png").write_bytes(_png_of(_pixels(14)))
        if content is None:
            (source / filename).write_text("camera: GoPro HERO4\n")
        else:
            (source / filename).write_bytes(content())
        outs[name] = root / name / "out"
        commands.append([*RUN, "--source", source, "--out", outs[name]])
    return {
        name: (outs[name], result) for name, result in zip(outs, run_many(commands), strict=True)
    }


@pytest.mark.parametrize("kind", list(SKIPPED))
def test_unusable_file_is_skipped_named_and_counted(skipped_runs, kind):
    out, result = skipped_runs[kind]
    filename, _, reason_words = SKIPPED[kind]
    assert_ok(result)
    assert f"skipped {filename}" in result.stderr, describe(result)  # warning naming it
    assert "Sources: 1 used, 1 skipped" in result.stdout, describe(result)  # the summary
    manifest = read_json(out / "manifest.json")
    assert [source["key"] for source in manifest["sources"]] == ["good.png"]
    assert manifest["skipped"]["count"] == 1
    (entry,) = manifest["skipped"]["inputs"]
    assert entry["key"] == filename
    for word in reason_words:
        assert word in entry["reason"], entry
    assert np.all(read_arrays(out)["source"] == 0)


def test_non_image_file_is_left_alone(skipped_runs):
    out, result = skipped_runs["text-file"]
    assert_ok(result)
    manifest = read_json(out / "manifest.json")
    assert [source["key"] for source in manifest["sources"]] == ["good.png"]
    assert "Sources: 1 used" in result.stdout


# --- source folders with nothing usable ------------------------------------------------------


def test_empty_source_folder(tmp_path):
    source = tmp_path / "empty"
    source.mkdir()
    result = run_cli([*RUN, "--source", source, "--out", tmp_path / "out"])
    assert_usage_error(result, str(source), "no usable image")
    assert not (tmp_path / "out").exists()


def test_missing_source_folder(tmp_path):
    source = tmp_path / "nowhere"
    result = run_cli([*RUN, "--source", source, "--out", tmp_path / "out"])
    assert_usage_error(result, str(source), "does not exist")
    assert not (tmp_path / "out").exists()


def test_source_that_is_a_file(tmp_path):
    source = tmp_path / "photo.png"
    source.write_bytes(_png_of(_pixels(15)))
    result = run_cli([*RUN, "--source", source, "--out", tmp_path / "out"])
    assert_usage_error(result, str(source), "not a folder")


def test_folder_where_nothing_usable_remains(tmp_path):
    source = tmp_path / "bad"
    source.mkdir()
    (source / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    (source / "tiny.png").write_bytes(_png_of(np.zeros((10, 10, 3), dtype=np.uint8)))
    (source / "notes.txt").write_text("nothing to see")
    result = run_cli([*RUN, "--source", source, "--out", tmp_path / "out"])
    assert_usage_error(result, str(source), "no usable image", "corrupt.png", "tiny.png")
    assert not (tmp_path / "out").exists()


# --- impossible options ----------------------------------------------------------------------

BAD_OPTIONS = {
    # name: (arguments, words the message must contain)
    "length-beyond-the-kernel": (
        ["--mode", "random", "--length", "20"],
        ["--length", "raise --psf-size or lower --length"],  # the library's field names, as flags
    ),
    "noise-in-random-mode": (["--mode", "random", "--lam", "1000"], ["--lam/--sigma"]),
    "exposure-zero": (["--mode", "noisy", "--exposure", "0"], ["--exposure"]),
    "exposure-above-one": (["--mode", "noisy", "--exposure", "1.5"], ["--exposure"]),
    "exposure-not-a-number": (["--mode", "noisy", "--exposure", "half"], ["--exposure"]),
    "exposure-in-random-mode": (["--mode", "random", "--exposure", "1/2"], ["--exposure"]),
    "sigma-negative": (["--mode", "noisy", "--sigma", "-1"], ["--sigma"]),
    "lam-zero": (["--mode", "noisy", "--lam", "0"], ["--lam"]),
    "lam-negative": (["--mode", "noisy", "--lam", "-5"], ["--lam"]),
    "kernel-unknown": (["--mode", "fixed", "--kernel", "blob:3"], ["--kernel"]),
    "kernel-bad-number": (["--mode", "fixed", "--kernel", "disk:wide"], ["--kernel"]),
    "min-length-above-length": (
        ["--mode", "random", "--min-length", "6", "--length", "4"],
        ["--min-length", "is larger than --length 4"],
    ),
    "shard-index-without-num-shards": (
        ["--mode", "random", "--shard-index", "0"],
        ["--shard-index", "--num-shards"],
    ),
    "num-shards-without-shard-index": (
        ["--mode", "random", "--num-shards", "2"],
        ["--shard-index", "--num-shards"],
    ),
    "shard-index-out-of-range": (
        ["--mode", "random", "--shard-index", "2", "--num-shards", "2"],
        ["--shard-index"],
    ),
    "workers-zero": (["--mode", "random", "--workers", "0"], ["--workers"]),
    "trajectory-file-missing": (
        ["--mode", "tsweep", "--trajectory", "no-such-file.npy"],
        ["--trajectory"],
    ),
    "unknown-mode": (["--mode", "blurry"], ["--mode"]),
}


@pytest.fixture(scope="module")
def bad_option_runs(photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-options")
    commands = [
        [*RUN, *arguments, "--source", photos, "--out", root / name]
        for name, (arguments, _) in BAD_OPTIONS.items()
    ]
    results = run_many(commands, cwd=root)
    return root, dict(zip(BAD_OPTIONS, results, strict=True))


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_impossible_option_is_a_usage_error(bad_option_runs, name):
    root, results = bad_option_runs
    assert_usage_error(results[name], *BAD_OPTIONS[name][1])
    assert not (root / name).exists(), "a refused command must leave no output folder behind"


def _late_files(folder: Path) -> dict[str, list[str]]:
    """Option values that only the shared-kernel step can find wrong, per test case."""
    big = folder / "big-kernel.npy"
    np.save(big, np.ones((20, 20)))
    real = folder / "real-trajectory.npy"
    np.save(real, np.linspace(0, 5, 200))
    far = folder / "long-trajectory.npy"
    np.save(far, np.linspace(0, 40, 200) + 0j)
    return {
        "disk-larger-than-kernel": ["--mode", "fixed", "--kernel", "disk:20"],
        "linear-longer-than-kernel": ["--mode", "fixed", "--kernel", "linear:30"],
        "kernel-file-larger-than-psf": ["--mode", "fixed", "--kernel", str(big)],
        "trajectory-file-not-complex": ["--mode", "tsweep", "--trajectory", str(real)],
        "trajectory-file-too-long": ["--mode", "tsweep", "--trajectory", str(far)],
    }


LATE = [
    "disk-larger-than-kernel",
    "linear-longer-than-kernel",
    "kernel-file-larger-than-psf",
    "trajectory-file-not-complex",
    "trajectory-file-too-long",
]


@pytest.mark.parametrize("name", LATE)
def test_kernel_that_cannot_be_made_is_a_usage_error(photos, tmp_path, name):
    """A --kernel or --trajectory that cannot give a kernel of --psf-size is bad usage (exit 2,
    a message naming the option, no traceback), and the refused command must not leave a
    folder that then blocks the corrected command."""
    arguments = _late_files(tmp_path)[name]
    option = arguments[2]
    out = tmp_path / "out"
    result = run_cli([*RUN, *arguments, "--source", photos, "--out", out])
    assert_usage_error(result, option)
    fixed = ["--mode", arguments[1], "--count", "4", "--shard-size", "4", *TINY, "--no-preview"]
    corrected = run_cli([*fixed, "--source", photos, "--out", out])
    assert_ok(corrected)
