"""Every mode, through the ``csb-generate`` subprocess, read back with plain h5py and json and
checked against the format (docs/format.md) and the model."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import csb_generator
import h5py
import numpy as np
import pytest
import scipy.signal
from cli_support import (
    KERNEL_FILE_ARRAY,
    SAMPLE_FIELDS,
    TRAJECTORY_PARAMETERS,
    describe,
    read_arrays,
    read_json,
    sha256_of,
    shard_paths,
    trajectory_file_array,
)
from csb_generator import psf_from_trajectory
from csb_generator.sources import BUILTIN_PHOTOGRAPHS, builtin_folder, load_image, scan_sources
from PIL import Image

IMAGE_SIZE, PSF_SIZE, NUM_SAMPLES = 32, 16, 200
HEX64 = re.compile(r"[0-9a-f]{64}")
#: Every generation option the manifest must record, resolved (docs/format.md, `options`).
OPTION_KEYS = {
    "mode",
    "count",
    "image_size",
    "psf_size",
    "channels",
    "seed",
    "crop",
    "downscale",
    "num_samples",
    "length",
    "min_length",
    "anxiety",
    "centripetal",
    "gaussian",
    "freq_big_shakes",
    "exposures",
    "lams",
    "sigmas",
    "kernel",
    "trajectory",
    "angle",
    "alignment",
    "blurred_dtype",
    "sharp_dtype",
    "store_trajectories",
    "shard_size",
    "compression",
}
DTYPES = {
    "kernel": np.float32,
    "exposure": np.float32,
    "lam": np.float32,
    "sigma": np.float32,
    **dict.fromkeys(TRAJECTORY_PARAMETERS, np.float32),
    "index": np.int64,
    "source": np.int32,
    "crop": np.int32,
    "padded": np.bool_,
    "trajectory": np.complex64,
}


def run_of(mode_runs, name):
    run = mode_runs[name]
    assert run.result.returncode == 0, describe(run.result)
    return run


def check_part(
    folder: Path,
    *,
    mode: str,
    count: int,
    shard_size: int,
    channels: int = 3,
    sharp_dtype: str = "uint8",
    blurred_dtype: str = "float32",
    compression: str = "gzip",
    trajectories: bool = False,
    exposure: float | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Check one dataset folder (a whole dataset, or one T part) against the format; return its
    manifest and its samples concatenated over the shards."""
    manifest = read_json(folder / "manifest.json")
    assert manifest["format"] == "csb-shards"
    assert manifest["format_version"] == 1
    assert manifest["mode"] == mode
    options = manifest["options"]
    assert OPTION_KEYS <= set(options), OPTION_KEYS - set(options)
    assert options["mode"] == mode
    assert options["count"] == count and options["shard_size"] == shard_size
    assert (options["image_size"], options["psf_size"]) == (IMAGE_SIZE, PSF_SIZE)
    assert options["num_samples"] == NUM_SAMPLES
    assert options["length"] is not None, "the default length must be resolved in the manifest"
    assert options["blurred_dtype"] == blurred_dtype and options["sharp_dtype"] == sharp_dtype
    assert options["compression"] == compression
    assert options["store_trajectories"] is trajectories
    assert manifest["seed"] == options["seed"]
    assert HEX64.fullmatch(manifest["fingerprint"])
    assert (
        isinstance(manifest["noise_convention"], str) and "Poisson" in manifest["noise_convention"]
    )
    versions = manifest["versions"]
    assert versions["csb-generator"] == csb_generator.__version__
    assert versions["numpy"] == np.__version__ and versions["h5py"] == h5py.__version__
    assert manifest["count"] == count
    assert isinstance(manifest["redraws"], int) and manifest["redraws"] >= 0
    assert manifest["skipped"]["count"] == len(manifest["skipped"]["inputs"])
    for source in manifest["sources"]:
        assert {"key", "height", "width", "bit_depth", "sha256"} <= set(source)
        assert HEX64.fullmatch(source["sha256"]) and source["bit_depth"] in (8, 16)
    if exposure is not None:
        assert manifest["exposure"] == exposure

    # The shard table: contiguous index ranges, counts, and hashes of the files themselves.
    entries = manifest["shards"]
    expected_counts = [min(shard_size, count - first) for first in range(0, count, shard_size)]
    assert [entry["count"] for entry in entries] == expected_counts
    assert [entry["file"] for entry in entries] == [
        f"shard-{k:05d}.h5" for k in range(len(entries))
    ]
    assert [path.name for path in shard_paths(folder)] == [entry["file"] for entry in entries]
    first = 0
    for entry in entries:
        assert entry["first_index"] == first
        assert entry["last_index"] == first + entry["count"] - 1
        assert entry["sha256"] == sha256_of(folder / entry["file"]), entry["file"]
        first += entry["count"]
    assert first == count

    names = set(SAMPLE_FIELDS) | ({"trajectory"} if trajectories else set())
    for number, entry in enumerate(entries):
        n = entry["count"]
        with h5py.File(folder / entry["file"], "r") as shard:
            attrs = dict(shard.attrs)
            assert attrs["format"] == "csb-shards" and attrs["format_version"] == 1
            assert attrs["mode"] == mode
            assert (attrs["image_size"], attrs["psf_size"]) == (IMAGE_SIZE, PSF_SIZE)
            assert attrs["channels"] == channels
            assert attrs["noise_convention"] == manifest["noise_convention"]
            assert attrs["generator_version"] == csb_generator.__version__
            assert attrs["seed"] == manifest["seed"]
            assert attrs["fingerprint"] == manifest["fingerprint"]
            assert attrs["shard"] == number
            assert (attrs["first_index"], attrs["count"]) == (entry["first_index"], n)
            assert json.loads(attrs["options"]) == options
            if exposure is not None:
                assert attrs["exposure"] == exposure
            assert set(shard) == names
            shapes = {
                "sharp": (n, IMAGE_SIZE, IMAGE_SIZE, channels),
                "blurred": (n, IMAGE_SIZE, IMAGE_SIZE, channels),
                "kernel": (n, PSF_SIZE, PSF_SIZE),
                "crop": (n, 4),
                "trajectory": (n, NUM_SAMPLES),
            }
            dtypes = {**DTYPES, "sharp": np.dtype(sharp_dtype), "blurred": np.dtype(blurred_dtype)}
            for name in names:
                dataset = shard[name]
                assert dataset.dtype == dtypes[name], (name, dataset.dtype)
                assert dataset.shape == shapes.get(name, (n,)), (name, dataset.shape)
                assert dataset.chunks == (1, *dataset.shape[1:]), (name, dataset.chunks)
                # Self-describing: the layout has one axis per dimension, the units are said.
                assert set(dataset.attrs) == {"description", "layout", "units"}, name
                layout = dataset.attrs["layout"]
                assert layout.startswith("(N") and layout.count(",") == max(dataset.ndim - 1, 1)
                assert dataset.attrs["description"] and dataset.attrs["units"], name
            sharp_type = np.dtype(sharp_dtype)
            full_scale = f"0-{np.iinfo(sharp_type).max} ({sharp_type.name}, full scale)"
            assert shard["sharp"].attrs["units"] == full_scale
            assert (
                shard["blurred"]
                .attrs["units"]
                .startswith("[0, 1]" if np.dtype(blurred_dtype).kind == "f" else "0-")
            )
            for name in ("sharp", "blurred"):
                assert shard[name].compression == compression, name

    arrays = read_arrays(folder)
    np.testing.assert_array_equal(arrays["index"], np.arange(count))
    sources = manifest["sources"]
    assert np.all((arrays["source"] >= 0) & (arrays["source"] < len(sources)))
    heights = np.array([sources[s]["height"] for s in arrays["source"]])
    widths = np.array([sources[s]["width"] for s in arrays["source"]])
    top, left, height, width = arrays["crop"].T
    assert np.all((height == IMAGE_SIZE) & (width == IMAGE_SIZE))
    assert np.all((top >= 0) & (left >= 0) & (top + height <= heights) & (left + width <= widths))
    assert manifest["padded"] == int(arrays["padded"].sum())
    kernel_sums = arrays["kernel"].sum(axis=(1, 2), dtype=np.float64)
    np.testing.assert_allclose(kernel_sums, arrays["exposure"], rtol=1e-5)
    assert arrays["kernel"].min() >= 0
    if blurred_dtype.startswith("float"):
        assert arrays["blurred"].min() >= 0 and arrays["blurred"].max() <= 1
    return manifest, arrays


def source_array(root: Path, key: str) -> np.ndarray:
    """A source photograph decoded independently (Pillow), as RGB."""
    with Image.open(root / key) as image:
        return np.asarray(image.convert("RGB"))


def assert_sharp_is_the_crop(root: Path, manifest: dict, arrays: dict) -> None:
    for i, (source, (top, left, height, width)) in enumerate(
        zip(arrays["source"], arrays["crop"], strict=True)
    ):
        image = source_array(root, manifest["sources"][source]["key"])
        expected = image[top : top + height, left : left + width]
        np.testing.assert_array_equal(arrays["sharp"][i], expected, err_msg=f"sample {i}")


def clean_blur(root: Path, manifest: dict, arrays: dict, i: int) -> np.ndarray:
    """b = k * x for sample i, by a true 'valid' convolution of the real pixels around the crop
    (scipy.signal, independent of the library's FFT code)."""
    assert not arrays["padded"][i], "these checks assume crops away from the border"
    kernel = arrays["kernel"][i].astype(np.float64)
    size = kernel.shape[0]
    before, after = size - 1 - size // 2, size // 2
    top, left, height, width = arrays["crop"][i]
    image = source_array(root, manifest["sources"][arrays["source"][i]]["key"]) / 255.0
    region = image[top - before : top + height + after, left - before : left + width + after]
    return np.stack(
        [scipy.signal.convolve2d(region[..., c], kernel, mode="valid") for c in range(3)], -1
    )


def assert_noiseless_blur(root: Path, manifest: dict, arrays: dict, samples=None) -> None:
    for i in range(len(arrays["index"])) if samples is None else samples:
        t = float(arrays["exposure"][i])
        expected = np.clip(clean_blur(root, manifest, arrays, i) / t, 0, 1)
        np.testing.assert_allclose(arrays["blurred"][i], expected, atol=2e-6, err_msg=f"{i}")


def centre_of_mass(kernel: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(kernel.shape)
    total = kernel.sum(dtype=np.float64)
    return float((rows * kernel).sum() / total), float((cols * kernel).sum() / total)


def assert_centred(kernels: np.ndarray) -> None:
    for kernel in kernels:
        np.testing.assert_allclose(centre_of_mass(kernel), (PSF_SIZE // 2,) * 2, atol=1e-3)


def assert_no_preview(folder: Path) -> None:
    assert not (folder / "preview.png").exists()


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.width >= 3 * IMAGE_SIZE and image.height >= IMAGE_SIZE


# --- fixed -----------------------------------------------------------------------------------


def test_fixed_random_kernel(mode_runs, photos):
    run = run_of(mode_runs, "fixed-random")
    manifest, arrays = check_part(run.out, mode="fixed", count=10, shard_size=4, trajectories=True)
    assert manifest["options"]["kernel"] == "random"
    # One kernel, one trajectory and one set of parameters for every image.
    assert np.all(arrays["kernel"] == arrays["kernel"][0])
    assert np.all(arrays["trajectory"] == arrays["trajectory"][0])
    shared = manifest["shared_kernel"]["trajectory"]
    for name in TRAJECTORY_PARAMETERS:
        assert np.all(arrays[name] == np.float32(shared[name])), name
    assert arrays["length"][0] == np.float32(PSF_SIZE / 2)
    path_length = np.abs(np.diff(arrays["trajectory"][0].astype(np.complex128))).sum()
    assert path_length == pytest.approx(PSF_SIZE / 2, rel=1e-4)
    np.testing.assert_allclose(
        arrays["kernel"][0],
        psf_from_trajectory(arrays["trajectory"][0].astype(np.complex128), PSF_SIZE, 1.0),
        atol=1e-5,
    )
    assert_centred(arrays["kernel"][:1])
    assert np.all(arrays["exposure"] == 1) and np.all(arrays["lam"] == np.inf)
    assert np.all(arrays["sigma"] == 0)
    assert_sharp_is_the_crop(photos, manifest, arrays)
    assert_noiseless_blur(photos, manifest, arrays)
    assert_no_preview(run.out)


def test_fixed_disk_kernel(mode_runs, photos):
    run = run_of(mode_runs, "fixed-disk")
    manifest, arrays = check_part(run.out, mode="fixed", count=8, shard_size=4, trajectories=True)
    kernel = arrays["kernel"][0]
    assert np.all(arrays["kernel"] == kernel)
    assert kernel.sum(dtype=np.float64) == pytest.approx(1.0, rel=1e-5)
    # A disk of radius 3 centred on pixel (8, 8): symmetric, and zero beyond the radius.
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-7)
    inner = kernel[1:, 1:]  # rows and columns 1..15, symmetric about pixel 8
    np.testing.assert_allclose(inner, inner[::-1, ::-1], atol=1e-7)
    rows, cols = np.indices(kernel.shape)
    distance = np.hypot(rows - PSF_SIZE // 2, cols - PSF_SIZE // 2)
    assert np.all(kernel[distance > 3 + math.sqrt(0.5)] == 0)
    assert kernel[PSF_SIZE // 2, PSF_SIZE // 2] == kernel.max()
    for name in TRAJECTORY_PARAMETERS:
        assert np.all(np.isnan(arrays[name])), f"{name} must be NaN for a disk kernel"
    assert np.all(np.isnan(arrays["trajectory"]))
    assert_noiseless_blur(photos, manifest, arrays)


def test_fixed_linear_kernel(mode_runs, photos):
    run = run_of(mode_runs, "fixed-linear")
    manifest, arrays = check_part(run.out, mode="fixed", count=8, shard_size=8)
    kernel = arrays["kernel"][0].astype(np.float64)
    assert np.all(arrays["kernel"] == arrays["kernel"][0])
    assert np.all(arrays["length"] == 6) and np.all(arrays["anxiety"] == 0)
    # The kernel is a 6 px segment at 30 degrees (row down = +imaginary): principal axis.
    rows, cols = np.indices(kernel.shape)
    r0, c0 = centre_of_mass(kernel)
    dr, dc = rows - r0, cols - c0
    cross = (kernel * dc * dr).sum()
    covariance = np.array([[(kernel * dc * dc).sum(), cross], [cross, (kernel * dr * dr).sum()]])
    values, vectors = np.linalg.eigh(covariance)
    angle = math.degrees(math.atan2(vectors[1, -1], vectors[0, -1])) % 180
    assert angle == pytest.approx(30, abs=2)
    assert values[0] < 0.1 * values[1]
    assert_centred(arrays["kernel"][:1])
    assert_noiseless_blur(photos, manifest, arrays)


def test_fixed_kernel_file(mode_runs, photos):
    run = run_of(mode_runs, "fixed-file")
    manifest, arrays = check_part(run.out, mode="fixed", count=8, shard_size=3)
    assert manifest["options"]["kernel"] == str(run.extra["kernel_file"])
    # The file's kernel, normalised to 1, its centre pixel (2, 1) on the grid's centre (8, 8).
    expected = np.zeros((PSF_SIZE, PSF_SIZE))
    expected[8 - 2 : 8 + 3, 8 - 1 : 8 + 2] = KERNEL_FILE_ARRAY / KERNEL_FILE_ARRAY.sum()
    for kernel in arrays["kernel"]:
        np.testing.assert_allclose(kernel, expected, atol=1e-7)
    for name in TRAJECTORY_PARAMETERS:
        assert np.all(np.isnan(arrays[name])), f"{name} must be NaN for a kernel file"
    assert_sharp_is_the_crop(photos, manifest, arrays)
    assert_noiseless_blur(photos, manifest, arrays)


# --- random ----------------------------------------------------------------------------------


def test_random_mode(mode_runs, photos):
    run = run_of(mode_runs, "random")
    manifest, arrays = check_part(
        run.out, mode="random", count=12, shard_size=5, trajectories=True, compression="lzf"
    )
    # Sources: every photograph, in key order, with its size and the hash of its file.
    assert manifest["source_root"] == str(photos)
    keys = [source["key"] for source in manifest["sources"]]
    assert keys == ["astronaut.png", "cats/chelsea.png", "coffee.png"]
    for source in manifest["sources"]:
        with Image.open(photos / source["key"]) as image:
            assert (source["width"], source["height"]) == image.size
        assert source["sha256"] == sha256_of(photos / source["key"])
        assert source["bit_depth"] == 8
    assert manifest["skipped"] == {"count": 0, "inputs": []}
    assert len(set(arrays["source"].tolist())) > 1, "one source for 12 samples: not random"
    # A new trajectory per image, length drawn in [--min-length, --length] = [1, 8].
    assert len({kernel.tobytes() for kernel in arrays["kernel"]}) == 12
    assert np.all((arrays["length"] >= 1) & (arrays["length"] <= PSF_SIZE / 2))
    assert len(set(arrays["length"].tolist())) == 12
    for name in ("anxiety", "centripetal", "gaussian", "freq_big_shakes"):
        assert np.all(np.isfinite(arrays[name])) and np.all(arrays[name] >= 0), name
    for i, trajectory in enumerate(arrays["trajectory"]):
        positions = trajectory.astype(np.complex128)
        path_length = np.abs(np.diff(positions)).sum()
        assert path_length == pytest.approx(arrays["length"][i], rel=1e-4)
        np.testing.assert_allclose(
            arrays["kernel"][i], psf_from_trajectory(positions, PSF_SIZE, 1.0), atol=1e-5
        )
    assert_centred(arrays["kernel"])
    assert np.all(arrays["exposure"] == 1) and np.all(arrays["lam"] == np.inf)
    assert np.all(arrays["sigma"] == 0)
    assert not arrays["padded"].any()
    assert_sharp_is_the_crop(photos, manifest, arrays)
    assert_noiseless_blur(photos, manifest, arrays)
    assert_valid_png(run.out / "preview.png")


def test_random_mode_uint8_is_the_rounded_float(mode_runs):
    floats = read_arrays(run_of(mode_runs, "random").out)
    manifest, arrays = check_part(
        run_of(mode_runs, "random-uint8").out,
        mode="random",
        count=12,
        shard_size=5,
        blurred_dtype="uint8",
    )
    assert manifest["options"]["blurred_dtype"] == "uint8"
    np.testing.assert_array_equal(arrays["sharp"], floats["sharp"])
    np.testing.assert_array_equal(arrays["kernel"], floats["kernel"])
    scaled = floats["blurred"].astype(np.float64) * 255
    difference = arrays["blurred"].astype(np.int64) - np.rint(scaled).astype(np.int64)
    # Rounded, not truncated: equal to rint of the float image (off by one only where float32
    # storage moved a value across .5), and often above floor.
    assert np.abs(difference).max() <= 1
    assert np.mean(difference == 0) > 0.999
    assert np.any(arrays["blurred"] > np.floor(scaled).astype(np.uint8))


def test_random_mode_builtin_photographs(mode_runs):
    run = run_of(mode_runs, "random-builtin")
    manifest, _ = check_part(run.out, mode="random", count=8, shard_size=4)
    assert manifest["source_root"] == "builtin:scikit-image"
    keys = [source["key"] for source in manifest["sources"]]
    assert keys == sorted(f"skimage:{name}" for name in BUILTIN_PHOTOGRAPHS)
    for source in manifest["sources"]:
        photograph = BUILTIN_PHOTOGRAPHS[source["key"].removeprefix("skimage:")]
        data = (builtin_folder() / photograph.filename).read_bytes()
        assert source["sha256"] == hashlib.sha256(data).hexdigest()
    assert "--source" not in run.args


# --- noisy -----------------------------------------------------------------------------------


def test_noisy_mode(mode_runs, photos):
    run = run_of(mode_runs, "noisy")
    manifest, arrays = check_part(run.out, mode="noisy", count=16, shard_size=6)
    options = manifest["options"]
    assert options["exposures"] == [1.0, 0.5, 0.25]
    assert options["lams"] == [20000.0, math.inf] and options["sigmas"] == [0.0, 2.0]
    # T, lam and sigma are drawn per image from the given lists; the length is fixed (psf/2).
    assert set(arrays["exposure"].tolist()) <= {1.0, 0.5, 0.25}
    assert set(arrays["lam"].tolist()) <= {20000.0, math.inf}
    assert set(arrays["sigma"].tolist()) <= {0.0, 2.0}
    for name in ("exposure", "lam", "sigma"):
        assert len(set(arrays[name].tolist())) > 1, f"{name} is not drawn per image"
    assert np.all(arrays["length"] == PSF_SIZE / 2)
    assert_centred(arrays["kernel"])
    assert_sharp_is_the_crop(photos, manifest, arrays)
    kinds = set()
    for i in range(16):
        t, lam, sigma = (float(arrays[name][i]) for name in ("exposure", "lam", "sigma"))
        y = arrays["blurred"][i].astype(np.float64)
        b = clean_blur(photos, manifest, arrays, i)
        inside = (y > 0) & (y < 1)
        assert inside.sum() > 0.3 * inside.size, f"sample {i} is mostly clipped"
        residual = (t * y - b)[inside]
        if math.isinf(lam) and sigma == 0:
            kinds.add("noiseless")
            np.testing.assert_allclose(y, np.clip(b / t, 0, 1), atol=2e-6)
        elif math.isinf(lam):
            kinds.add("read noise")
            assert residual.std() == pytest.approx(sigma / 255, rel=0.2)
        else:
            kinds.add("shot noise")
            assert residual.std() > 1e-3
            if sigma == 0:
                # Poisson counts, back in intensity units: T * y * lam / 255 is an integer.
                counts = t * y[inside] * lam / 255
                np.testing.assert_allclose(counts, np.rint(counts), atol=1e-3)
    assert kinds == {"noiseless", "read noise", "shot noise"}, kinds


# --- tsweep ----------------------------------------------------------------------------------


def check_tsweep(run, exposures, count, shard_size):
    """The top-level manifest, every T part, and what the parts share; returns (top, parts)."""
    top = read_json(run.out / "manifest.json")
    assert top["format"] == "csb-shards" and top["format_version"] == 1
    assert top["mode"] == "tsweep"
    assert top["count"] == count * len(exposures)
    assert [part["exposure"] for part in top["parts"]] == exposures
    assert all(part["count"] == count for part in top["parts"])
    assert top["trajectory_file"] == "trajectory.npy"
    assert {"options", "seed", "versions", "sources", "skipped", "redraws", "shared_kernel"} <= set(
        top
    )
    trajectory = np.load(run.out / "trajectory.npy", allow_pickle=False)
    assert trajectory.dtype == np.complex128 and trajectory.ndim == 1
    assert not (run.out / "shard-00000.h5").exists()
    parts = {}
    for part in top["parts"]:
        folder = run.out / part["folder"]
        assert folder.name == f"T-{part['exposure']:.6g}"
        manifest, arrays = check_part(
            folder, mode="tsweep", count=count, shard_size=shard_size, exposure=part["exposure"]
        )
        assert manifest["sources"] == top["sources"] and manifest["options"] == top["options"]
        assert np.all(arrays["exposure"] == np.float32(part["exposure"]))
        # Every kernel of part T is the shared trajectory's kernel for T.
        expected = psf_from_trajectory(trajectory, PSF_SIZE, part["exposure"])
        for kernel in arrays["kernel"]:
            np.testing.assert_allclose(kernel, expected, atol=1e-7)
        parts[part["exposure"]] = arrays
    # The same images, crops and parameters in every part: only T (and what follows) differs.
    first = parts[exposures[0]]
    for arrays in parts.values():
        for name in ("index", "source", "crop", "sharp", "padded", "lam", "sigma"):
            np.testing.assert_array_equal(arrays[name], first[name], err_msg=name)
        for name in TRAJECTORY_PARAMETERS:
            np.testing.assert_array_equal(arrays[name], first[name], err_msg=name)
    return top, trajectory, parts


def test_tsweep_random_trajectory(mode_runs, photos):
    run = run_of(mode_runs, "tsweep-random")
    top, trajectory, parts = check_tsweep(run, [1.0, 0.5, 0.25], count=6, shard_size=4)
    assert top["options"]["lams"] == [765000.0] and top["options"]["sigmas"] == [0.0]
    for arrays in parts.values():
        assert np.all(arrays["lam"] == 765000) and np.all(arrays["sigma"] == 0)
        assert_centred(arrays["kernel"])
    shared = top["shared_kernel"]["trajectory"]
    assert np.abs(np.diff(trajectory)).sum() == pytest.approx(shared["length"], rel=1e-9)
    assert np.all(parts[1.0]["anxiety"] == np.float32(shared["anxiety"]))
    # Preview in every part.
    for part in top["parts"]:
        assert_valid_png(run.out / part["folder"] / "preview.png")


def test_tsweep_linear_trajectory(mode_runs):
    run = run_of(mode_runs, "tsweep-linear")
    _, trajectory, parts = check_tsweep(run, [1.0, 0.5, 0.25], count=6, shard_size=4)
    # A straight segment of psf/2 px.
    offsets = trajectory - trajectory[0]
    direction = offsets[-1] / abs(offsets[-1])
    np.testing.assert_allclose(offsets / direction, np.abs(offsets), atol=1e-9)
    assert np.abs(np.diff(trajectory)).sum() == pytest.approx(PSF_SIZE / 2)
    for arrays in parts.values():
        assert np.all(arrays["length"] == PSF_SIZE / 2) and np.all(arrays["anxiety"] == 0)
        assert np.all(arrays["lam"] == np.inf) and np.all(arrays["sigma"] == 8)
        assert_no_preview(run.out / f"T-{arrays['exposure'][0]:.6g}")


def test_tsweep_trajectory_file(mode_runs):
    run = run_of(mode_runs, "tsweep-file")
    exposures = [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125]
    top, trajectory, parts = check_tsweep(run, exposures, count=4, shard_size=4)
    np.testing.assert_array_equal(trajectory, trajectory_file_array())
    assert [p["folder"] for p in top["parts"]] == [
        "T-1",
        "T-0.5",
        "T-0.25",
        "T-0.125",
        "T-0.0625",
        "T-0.03125",
    ]
    for arrays in parts.values():
        for name in ("anxiety", "centripetal", "gaussian", "freq_big_shakes"):
            assert np.all(np.isnan(arrays[name])), name
        assert arrays["length"] == pytest.approx(np.abs(np.diff(trajectory)).sum(), rel=1e-6)


def gaussian_noise(run, photos: Path) -> dict[float, list[np.ndarray]]:
    """n = T * y_T - b_T per sample and part of a tsweep with lam = inf (NaN where y_T is
    clipped); b_T recomputed with csb_generator.blur_crop from the stored kernel."""
    top = read_json(run.out / "manifest.json")
    scan = scan_sources(photos, image_size=IMAGE_SIZE)
    assert [source.key for source in scan.usable] == [s["key"] for s in top["sources"]]
    images = [load_image(source) for source in scan.usable]
    noise = {}
    for part in top["parts"]:
        arrays = read_arrays(run.out / part["folder"])
        t = part["exposure"]
        noise[t] = []
        for i in range(len(arrays["index"])):
            image = images[arrays["source"][i]]
            b, _ = csb_generator.blur_crop(image, arrays["kernel"][i], tuple(arrays["crop"][i]))
            y = arrays["blurred"][i].astype(np.float64)
            n = t * y - b
            n[(y <= 0) | (y >= 1)] = np.nan
            noise[t].append(n)
    return noise


def test_tsweep_parts_share_noise_draws(mode_runs, photos):
    noise = gaussian_noise(run_of(mode_runs, "tsweep-linear"), photos)
    reference = noise[1.0]
    for t in (0.5, 0.25):
        for i, n in enumerate(noise[t]):
            both = ~np.isnan(n) & ~np.isnan(reference[i])
            assert both.sum() > 0.3 * both.size, f"too few unclipped pixels in T={t} sample {i}"
            np.testing.assert_allclose(n[both], reference[i][both], atol=2e-6)
    # The residual really is the read noise (sigma = 8 grey levels), not zero.
    assert np.nanstd(np.stack(reference)) == pytest.approx(8 / 255, rel=0.1)


def test_tsweep_noise_differs_with_the_seed(mode_runs, photos):
    """Negative control of the test above: another seed gives other noise draws."""
    seed0 = gaussian_noise(run_of(mode_runs, "tsweep-linear"), photos)[1.0]
    seed1 = gaussian_noise(run_of(mode_runs, "tsweep-linear-seed1"), photos)[1.0]
    for a, b in zip(seed0, seed1, strict=True):
        both = ~np.isnan(a) & ~np.isnan(b)
        assert np.abs(a[both] - b[both]).max() > 0.05
