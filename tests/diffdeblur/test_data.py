"""Training data: patches from real ``csb-generate`` shards and from a GoPro-style folder."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from console_scripts import console_script
from csb_generator import DatasetFormatError, open_dataset
from diffdeblur.data import (
    PairedFolder,
    ShardCollection,
    ShardPatches,
    open_training_data,
    split_indices,
)
from diffdeblur.deconvolution import odd_kernel
from diffdeblur.kernel_estimation import reblur_loss
from torch.utils.data import DataLoader

CROP = 32  # --image-size of the generated datasets
COUNT = 16
FRAME = (40, 56)  # height, width of the GoPro-style test frames


def _generate(out: Path, *args: str) -> Path:
    command = [
        str(console_script("csb-generate")),
        "--out",
        str(out),
        "--image-size",
        str(CROP),
        "--psf-size",
        "16",
    ]
    command += [*args, "--no-preview"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "random"
    return _generate(out, "--mode", "random", "--count", str(COUNT), "--shard-size", "8")


@pytest.fixture(scope="session")
def tsweep(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("tsweep") / "ts", "--mode", "tsweep", "--count", "2")


def _stored(folder: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, sharp) of sample ``index``, read with plain h5py as docs/format.md shows."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for shard in manifest["shards"]:
        if shard["first_index"] <= index <= shard["last_index"]:
            with h5py.File(folder / shard["file"], "r") as handle:
                offset = index - shard["first_index"]
                return handle["blurred"][offset], handle["sharp"][offset]
    raise IndexError(index)


def _signed(image: np.ndarray) -> np.ndarray:
    """(H, W, C) image to float32 (C, H, W) in [-1, 1], as the datasets promise."""
    values = image.astype(np.float32)
    if np.issubdtype(image.dtype, np.integer):
        values /= np.float32(np.iinfo(image.dtype).max)
    return (values * np.float32(2) - np.float32(1)).transpose(2, 0, 1)


def _placements(patch: torch.Tensor, image: np.ndarray) -> set[tuple[int, int, bool, bool]]:
    """Every (top, left, horizontal flip, vertical flip) that cuts ``patch`` out of ``image``."""
    full = _signed(image)
    size = patch.shape[-1]
    found = set()
    for horizontal in (False, True):
        for vertical in (False, True):
            flipped = patch.numpy()
            # Undo the flips on the patch, then look for it in the unflipped image.
            if horizontal:
                flipped = flipped[:, :, ::-1]
            if vertical:
                flipped = flipped[:, ::-1, :]
            for top in range(full.shape[1] - size + 1):
                for left in range(full.shape[2] - size + 1):
                    region = full[:, top : top + size, left : left + size]
                    if np.array_equal(region, flipped):
                        found.add((top, left, horizontal, vertical))
    return found


def _placement(sample: dict, blurred: np.ndarray, sharp: np.ndarray) -> tuple[int, int, bool, bool]:
    """The one placement of a sample's sharp patch, checked to be the blurred patch's too."""
    placements = _placements(sample["sharp"], sharp)
    assert len(placements) == 1, placements
    assert _placements(sample["blurred"], blurred) >= placements
    return placements.pop()


def _same(first: dict, second: dict) -> bool:
    return (
        first["index"] == second["index"]
        and torch.equal(first["blurred"], second["blurred"])
        and torch.equal(first["sharp"], second["sharp"])
    )


# --- ShardPatches --------------------------------------------------------------------------------


def test_shard_sample_shapes_dtypes_and_range(shards):
    data = ShardPatches(shards, 16)
    assert len(data) == COUNT
    assert data.crop_size == CROP and data.channels == 3
    for position in (0, 9, -1):
        sample = data[position]
        assert set(sample) == {"blurred", "sharp", "index", "kernel"}
        kernel = sample["kernel"]
        assert kernel.shape == (data.kernel_size,) * 2 and kernel.dtype == torch.float32
        assert data.kernel_size % 2 == 1 and float(kernel.sum()) == pytest.approx(1, abs=1e-6)
        assert sample["index"] == position % COUNT and type(sample["index"]) is int
        for key in ("blurred", "sharp"):
            tensor = sample[key]
            assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32
            assert tensor.is_contiguous()
            assert -1 <= tensor.min() and tensor.max() <= 1
        assert not torch.equal(sample["blurred"], sample["sharp"])


def test_shard_patches_are_regions_of_the_stored_crops_flipped_alike(shards):
    data = ShardPatches(shards, 16, seed=3)
    flips = set()
    for epoch in range(3):
        data.set_epoch(epoch)
        for index in range(COUNT):
            blurred, sharp = _stored(shards, index)
            assert sharp.dtype == np.uint8 and blurred.dtype == np.float32
            _, _, horizontal, vertical = _placement(data[index], blurred, sharp)
            flips.add((horizontal, vertical))
    assert flips == {(False, False), (False, True), (True, False), (True, True)}


def test_flips_off_keeps_the_patch_positions(shards):
    flipping = ShardPatches(shards, 16, seed=5)
    plain = ShardPatches(shards, 16, seed=5, flips=False)
    for index in range(COUNT):
        blurred, sharp = _stored(shards, index)
        top, left, _, _ = _placement(flipping[index], blurred, sharp)
        assert _placement(plain[index], blurred, sharp) == (top, left, False, False)


def test_patch_of_the_crop_size_is_the_whole_crop(shards):
    blurred, sharp = _stored(shards, 4)
    whole = ShardPatches(shards, CROP, flips=False)[4]
    np.testing.assert_array_equal(whole["sharp"].numpy(), _signed(sharp))
    np.testing.assert_array_equal(whole["blurred"].numpy(), _signed(blurred))
    flipped = ShardPatches(shards, CROP)[4]
    assert _placement(flipped, blurred, sharp)[:2] == (0, 0)


def test_center_crop_is_central_and_fixed(shards):
    data = ShardPatches(shards, 16, crop="center", flips=False)
    blurred, sharp = _stored(shards, 2)
    assert _placement(data[2], blurred, sharp) == (8, 8, False, False)
    data.set_epoch(7)
    assert _placement(data[2], blurred, sharp) == (8, 8, False, False)


def test_patch_larger_than_the_crops_is_refused(shards):
    with pytest.raises(ValueError, match=r"patch_size 33 .* 32x32 crops"):
        ShardPatches(shards, CROP + 1)


def test_samples_depend_on_seed_epoch_and_index_only(shards):
    data = ShardPatches(shards, 8)
    first = [data[index] for index in range(COUNT)]
    # Another instance, asked in reverse order, gives the same samples.
    again = ShardPatches(shards, 8)
    assert all(_same(again[index], first[index]) for index in reversed(range(COUNT)))
    data.set_epoch(1)
    second = [data[index] for index in range(COUNT)]
    assert sum(not _same(a, b) for a, b in zip(first, second, strict=True)) >= COUNT - 2
    data.set_epoch(0)
    assert all(_same(data[index], first[index]) for index in range(COUNT))
    other_seed = ShardPatches(shards, 8, seed=1)
    assert sum(not _same(other_seed[i], first[i]) for i in range(COUNT)) >= COUNT - 2


def test_indices_select_a_subset_with_the_same_samples(shards):
    full = ShardPatches(shards, 16)
    subset = ShardPatches(shards, 16, indices=np.array([11, 3]))
    assert len(subset) == 2
    assert subset[0]["index"] == 11 and subset[1]["index"] == 3
    assert _same(subset[0], full[11]) and _same(subset[1], full[3])
    with pytest.raises(IndexError):
        subset[2]
    for bad in ([0, 16], [-1], [[1, 2]], [0.5]):
        with pytest.raises(ValueError, match="indices"):
            ShardPatches(shards, 16, indices=bad)


@pytest.mark.parametrize("kind", ["shards", "collection", "gopro"])
def test_a_subset_of_the_opened_data_gives_what_opening_it_with_those_indices_gives(request, kind):
    fixture = request.getfixturevalue(kind)
    root = fixture[0] if kind == "gopro" else fixture
    whole = open_training_data(root, 16, seed=4)
    last = len(whole) - 1
    train = whole.subset([last, 0, 2])
    validation = whole.subset([1], flips=False, crop="center")
    opened_train = open_training_data(root, 16, seed=4, indices=[last, 0, 2])
    opened_validation = open_training_data(
        root, 16, seed=4, indices=[1], flips=False, crop="center"
    )
    for view, opened in ((train, opened_train), (validation, opened_validation)):
        view.set_epoch(3)
        opened.set_epoch(3)
        assert len(view) == len(opened)
        assert all(_same(view[i], opened[i]) for i in range(len(view)))
    assert whole.epoch == 0 and len(whole) == last + 1  # views: the whole is unchanged
    with pytest.raises(ValueError, match="indices"):
        whole.subset([last + 1])
    with pytest.raises(ValueError, match="crop"):
        whole.subset([0], crop="corner")


def test_invalid_arguments(shards):
    with pytest.raises(ValueError, match="patch_size"):
        ShardPatches(shards, 0)
    with pytest.raises(ValueError, match="seed"):
        ShardPatches(shards, 16, seed=-1)
    with pytest.raises(ValueError, match="crop"):
        ShardPatches(shards, 16, crop="corner")
    with pytest.raises(ValueError, match="epoch"):
        ShardPatches(shards, 16).set_epoch(-1)
    with pytest.raises(DatasetFormatError, match=r"no manifest\.json"):
        ShardPatches(shards.parent, 16)


def test_tsweep_indexes_every_part(tsweep):
    data = ShardPatches(tsweep, CROP, flips=False)
    parts = json.loads((tsweep / "manifest.json").read_text())["parts"]
    assert len(data) == 2 * len(parts)
    for index in (0, 3, len(data) - 1):
        part = tsweep / parts[index // 2]["folder"]
        blurred, sharp = _stored(part, index % 2)
        np.testing.assert_array_equal(data[index]["blurred"].numpy(), _signed(blurred))
        np.testing.assert_array_equal(data[index]["sharp"].numpy(), _signed(sharp))
    one_part = ShardPatches(tsweep / parts[1]["folder"], 16)
    assert len(one_part) == 2


def _loader_samples(data, workers: int, context: str | None = None) -> dict[int, dict]:
    loader = DataLoader(
        data, batch_size=3, shuffle=False, num_workers=workers, multiprocessing_context=context
    )
    samples = {}
    for batch in loader:
        for row, index in enumerate(batch["index"].tolist()):
            samples[index] = {
                "index": index,
                "blurred": batch["blurred"][row],
                "sharp": batch["sharp"][row],
            }
    return samples


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_give_the_samples_of_one_process(shards, context):
    data = ShardPatches(shards, 16, seed=11)
    data.set_epoch(3)
    # The single-process pass first, so the parent holds open files when the workers start.
    alone = _loader_samples(data, 0)
    workers = _loader_samples(data, 2, context)
    assert sorted(alone) == sorted(workers) == list(range(COUNT))
    assert all(_same(alone[index], workers[index]) for index in alone)
    data.set_epoch(4)
    assert not all(_same(alone[i], s) for i, s in _loader_samples(data, 2, context).items())


# --- split_indices -------------------------------------------------------------------------------


def test_split_indices_is_a_deterministic_partition():
    train, validation = split_indices(100, 0.1, seed=4)
    assert len(validation) == 10 and len(train) == 90
    assert train.dtype == validation.dtype == np.int64
    assert not set(train) & set(validation)
    assert sorted([*train, *validation]) == list(range(100))
    assert list(train) == sorted(train) and list(validation) == sorted(validation)
    again = split_indices(100, 0.1, seed=4)
    np.testing.assert_array_equal(again[1], validation)
    assert not np.array_equal(split_indices(100, 0.1, seed=5)[1], validation)
    # Not simply the last samples.
    assert not np.array_equal(validation, np.arange(90, 100))


def test_split_indices_edge_cases():
    train, validation = split_indices(5, 0.0)
    assert list(train) == list(range(5)) and len(validation) == 0
    assert len(split_indices(5, 0.01)[1]) == 1  # a positive fraction holds out at least one
    for n, fraction in ((1, 0.5), (10, 1.0), (10, -0.1), (0, 0.1)):
        with pytest.raises(ValueError):
            split_indices(n, fraction)


# --- PairedFolder --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gopro(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """2 scenes x 2 frames; scene B is 16-bit (grey PNG blurred, RGB TIFF sharp).

    Returns the root and every written image as the dataset should load it ((H, W, 3)).
    """
    root = tmp_path_factory.mktemp("gopro") / "train"
    rng = np.random.default_rng(2024)
    images = {}
    for scene, depth in (("GOPR0001_11_00", np.uint8), ("GOPR0002_00_01", np.uint16)):
        for frame in ("000001", "000002"):
            high = np.iinfo(depth).max + 1
            sharp = rng.integers(0, high, (*FRAME, 3), dtype=depth)
            blurred = rng.integers(0, high, FRAME, dtype=depth)
            if depth == np.uint8:
                blurred = np.repeat(blurred[..., None], 3, axis=2) // 2 + sharp // 2
                files = {"blur": (f"{frame}.png", blurred), "sharp": (f"{frame}.png", sharp)}
            else:  # Pillow cannot write 16-bit RGB PNG: grey PNG and RGB TIFF instead
                files = {"blur": (f"{frame}.png", blurred), "sharp": (f"{frame}.tif", sharp)}
            for side, (name, image) in files.items():
                (root / scene / side).mkdir(parents=True, exist_ok=True)
                iio.imwrite(root / scene / side / name, image)
                loaded = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
                images[f"{scene}/{side}/{name}"] = loaded
        # Things the layout ignores: GoPro's gamma-corrected blur, notes.
        (root / scene / "blur_gamma").mkdir()
        iio.imwrite(root / scene / "blur_gamma" / "000001.png", np.zeros((4, 4), np.uint8))
        (root / scene / "blur" / "notes.txt").write_text("not an image")
    (root / "README.txt").write_text("GoPro-style test folder")
    return root, images


def test_paired_folder_pairs_and_samples(gopro):
    root, images = gopro
    data = PairedFolder(root, 16, seed=1)
    assert len(data) == 4
    keys = [(blurred.key, sharp.key) for blurred, sharp in data.pairs]
    assert [Path(key).parts[0] for key, _ in keys] == ["GOPR0001_11_00"] * 2 + [
        "GOPR0002_00_01"
    ] * 2
    assert keys[3] == ("GOPR0002_00_01/blur/000002.png", "GOPR0002_00_01/sharp/000002.tif")
    flips = set()
    for epoch in range(4):
        data.set_epoch(epoch)
        for index, (blurred_key, sharp_key) in enumerate(keys):
            sample = data[index]
            assert sample["index"] == index
            assert sample["sharp"].shape == sample["blurred"].shape == (3, 16, 16)
            assert sample["sharp"].dtype == torch.float32
            assert -1 <= sample["sharp"].min() and sample["sharp"].max() <= 1
            blurred, sharp = images[blurred_key], images[sharp_key]
            # 16-bit frames are found only if scaled by 65535 (not 255).
            flips.add(_placement(sample, blurred, sharp)[2:])
    assert flips == {(False, False), (False, True), (True, False), (True, True)}


def test_paired_folder_is_deterministic_and_indices_select(gopro):
    root, _ = gopro
    first = PairedFolder(root, 16, seed=9)
    second = PairedFolder(root, 16, seed=9, indices=[2])
    assert len(second) == 1 and _same(second[0], first[2])
    first.set_epoch(1)
    assert not _same(second[0], first[2])


def test_halve_bins_both_images_2x2(gopro):
    root, images = gopro
    height, width = FRAME[0] // 2, FRAME[1] // 2
    data = PairedFolder(root, height, halve=True, flips=False, crop="center")
    for index, (blurred_key, sharp_key) in enumerate([(b.key, s.key) for b, s in data.pairs]):
        sample = data[index]
        assert sample["sharp"].shape == (3, height, height)
        for key, patch in ((blurred_key, sample["blurred"]), (sharp_key, sample["sharp"])):
            image = images[key]
            binned = image.reshape(height, 2, width, 2, 3).astype(np.float64).mean(axis=(1, 3))
            halved = np.rint(binned).astype(image.dtype)
            left = (width - height) // 2
            expected = _signed(halved)[:, :, left : left + height]
            np.testing.assert_array_equal(patch.numpy(), expected)
    with pytest.raises(ValueError, match=r"patch_size 21 after halving.*smaller than the crop"):
        PairedFolder(root, height + 1, halve=True)
    assert len(PairedFolder(root, height + 1)) == 4  # fits without halving


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_paired_folder_with_dataloader_workers(gopro, context):
    data = PairedFolder(gopro[0], 16, seed=2)
    data.set_epoch(5)
    alone = _loader_samples(data, 0)
    workers = _loader_samples(data, 2, context)
    assert sorted(workers) == list(range(4))
    assert all(_same(alone[index], workers[index]) for index in alone)


def _frame(path: Path, size: tuple[int, int] = (24, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.full((*size, 3), 100, np.uint8))


def test_paired_folder_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        PairedFolder(missing)
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"file\.png"):
        PairedFolder(tmp_path / "file.png")


def test_paired_folder_without_pairs(tmp_path):
    (tmp_path / "scene" / "blur").mkdir(parents=True)
    (tmp_path / "scene" / "sharp").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no blurred/sharp image pairs found in .*<scene>/blur"):
        PairedFolder(tmp_path, 8)


def test_paired_folder_unmatched_files(tmp_path):
    _frame(tmp_path / "a" / "blur" / "1.png")
    _frame(tmp_path / "a" / "sharp" / "1.jpg")  # extensions may differ
    _frame(tmp_path / "a" / "blur" / "2.png")
    _frame(tmp_path / "b" / "sharp" / "3.png")
    _frame(tmp_path / "b" / "blur" / "4.png")
    with pytest.raises(ValueError, match="without a partner") as raised:
        PairedFolder(tmp_path, 8)
    message = str(raised.value)
    assert "a/blur/2.png" in message and "b/sharp/3.png" in message and "b/blur/4.png" in message
    assert "1.png" not in message


def test_paired_folder_size_mismatch(tmp_path):
    _frame(tmp_path / "a" / "blur" / "1.png", (24, 24))
    _frame(tmp_path / "a" / "sharp" / "1.png", (24, 25))
    with pytest.raises(ValueError, match=r"a/blur/1\.png is 24x24 but a/sharp/1\.png is 24x25"):
        PairedFolder(tmp_path, 8)


def test_paired_folder_unreadable_and_ambiguous_files(tmp_path):
    _frame(tmp_path / "a" / "blur" / "1.png")
    (tmp_path / "a" / "sharp").mkdir()
    (tmp_path / "a" / "sharp" / "1.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"a/sharp/1\.png: not an image"):
        PairedFolder(tmp_path, 8)
    _frame(tmp_path / "a" / "sharp" / "1.png")
    _frame(tmp_path / "a" / "sharp" / "1.bmp")
    with pytest.raises(ValueError, match="two images named '1'"):
        PairedFolder(tmp_path, 8)


def test_paired_folder_patch_too_large(gopro):
    with pytest.raises(ValueError, match=r"patch_size 41: .*\(40x56 < 41\)"):
        PairedFolder(gopro[0], 41)


# --- open_training_data --------------------------------------------------------------------------


def test_open_training_data_dispatches(shards, gopro):
    shard_data = open_training_data(shards, 16, seed=1, indices=[0, 1])
    assert isinstance(shard_data, ShardPatches) and len(shard_data) == 2
    assert _same(shard_data[1], ShardPatches(shards, 16, seed=1)[1])
    folder_data = open_training_data(gopro[0], 16, seed=0, halve=True)
    assert isinstance(folder_data, PairedFolder) and folder_data.halve
    with pytest.raises(ValueError, match="halve applies to image folders"):
        open_training_data(shards, 16, seed=0, halve=True)


@pytest.fixture(scope="session")
def collection(tmp_path_factory, shards, tsweep) -> Path:
    """A folder of three datasets: PSF 16 (random), PSF 8 (random, 4 crops) and a T-sweep."""
    root = tmp_path_factory.mktemp("collection")
    shutil.copytree(shards, root / "a-random-psf16")
    _generate(root / "b-random-psf8", "--mode", "random", "--count", "4", "--psf-size", "8")
    shutil.copytree(tsweep, root / "c-tsweep")
    (root / "notes").mkdir()  # a folder without a manifest is not a dataset
    return root


def _stored_kernel(folder: Path, index: int) -> np.ndarray:
    return open_dataset(folder)[index]["kernel"]


def test_a_collection_concatenates_its_datasets_in_name_order(collection):
    data = ShardCollection(collection, CROP, flips=False)
    parts = json.loads((collection / "c-tsweep" / "manifest.json").read_text())["parts"]
    names = [part.path.name for part in data.parts]
    assert names == ["a-random-psf16", "b-random-psf8", "c-tsweep"]
    assert len(data) == COUNT + 4 + 2 * len(parts)
    first_part, second_part = collection / "a-random-psf16", collection / "b-random-psf8"
    for position, folder, index in ((0, first_part, 0), (COUNT + 3, second_part, 3)):
        blurred, sharp = _stored(folder, index)
        np.testing.assert_array_equal(data[position]["blurred"].numpy(), _signed(blurred))
        np.testing.assert_array_equal(data[position]["sharp"].numpy(), _signed(sharp))
    sweep_part = collection / "c-tsweep" / parts[1]["folder"]
    blurred, _ = _stored(sweep_part, 1)
    np.testing.assert_array_equal(data[COUNT + 4 + 3]["blurred"].numpy(), _signed(blurred))


def test_a_collection_pads_every_kernel_to_its_largest_grid_about_the_origin(collection):
    data = ShardCollection(collection, CROP, flips=False)
    assert data.kernel_size == 17  # PSF 16 on the odd grid
    small = data[COUNT + 1]["kernel"].numpy()
    assert small.shape == (17, 17) and small.sum() == pytest.approx(1, abs=1e-6)
    expected = odd_kernel(_stored_kernel(collection / "b-random-psf8", 1))  # 9 x 9
    np.testing.assert_array_equal(small[4:13, 4:13], expected)
    assert small[:4].sum() == small[13:].sum() == small[:, :4].sum() == small[:, 13:].sum() == 0
    # A batch may mix PSF sizes.
    batch = next(iter(DataLoader(data, batch_size=len(data))))
    assert batch["kernel"].shape == (len(data), 17, 17)


def test_a_collection_flips_the_padded_kernel_with_the_patch(collection):
    """A padded kernel re-blurs its (flipped) sharp patch into the blurred one; for a flipped
    patch the unflipped kernel does not (the check bites)."""
    data = ShardCollection(collection, CROP, seed=3)
    flipped = 0
    for epoch in range(3):
        data.set_epoch(epoch)
        for position in range(COUNT, COUNT + 4):  # the PSF-8 crops, on the 17 px grid
            sample = data[position]
            blurred, sharp = sample["blurred"][None].double(), sample["sharp"][None].double()
            kernel = sample["kernel"][None].double()
            error = reblur_loss(kernel, sharp, blurred)
            assert error < 2e-3, (epoch, position, float(error))
            stored = _stored_kernel(collection / "b-random-psf8", position - COUNT)
            unflipped = torch.from_numpy(np.pad(odd_kernel(stored), 4))[None].double()
            if not torch.equal(unflipped, kernel):
                assert reblur_loss(unflipped, sharp, blurred) > 3 * error
                flipped += 1
    assert flipped >= 2


def test_a_collection_has_a_fingerprint_of_its_parts(collection, tmp_path):
    data = ShardCollection(collection, CROP)
    assert data.fingerprint == ShardCollection(collection, 16, seed=5).fingerprint
    other = tmp_path / "other"
    shutil.copytree(collection / "a-random-psf16", other / "a-random-psf16")
    assert ShardCollection(other, CROP).fingerprint != data.fingerprint
    moved = tmp_path / "moved"
    shutil.copytree(collection, moved)
    assert ShardCollection(moved, CROP).fingerprint == data.fingerprint


def test_open_training_data_reads_a_folder_of_datasets_as_a_collection(collection, tmp_path):
    data = open_training_data(collection, 16, seed=0, indices=[0, COUNT])
    assert isinstance(data, ShardCollection) and len(data) == 2
    with pytest.raises(ValueError, match="halve applies to image folders"):
        open_training_data(collection, 16, seed=0, halve=True)
    mixed = tmp_path / "mixed"
    shutil.copytree(collection / "b-random-psf8", mixed / "colour")
    _generate(mixed / "grey", "--mode", "random", "--count", "2", "--channels", "1")
    with pytest.raises(ValueError, match=r"differ in channels \(colour: 3, grey: 1\)"):
        open_training_data(mixed, 16, seed=0)


def test_open_training_data_refuses_other_paths(gopro, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        open_training_data(tmp_path / "missing", 16, seed=0)
    neither = r"is neither a csb-generate dataset \(no manifest\.json\), nor a folder of them"
    (tmp_path / "photos").mkdir()
    _frame(tmp_path / "photos" / "x.png")
    for path in (tmp_path / "photos", tmp_path / "photos" / "x.png"):
        with pytest.raises(ValueError, match=neither):
            open_training_data(path, 16, seed=0)
    # Pointing at the folder above the GoPro-style one names the right one.
    with pytest.raises(ValueError, match="sub-folders train are GoPro-style"):
        open_training_data(gopro[0].parent, 16, seed=0)
