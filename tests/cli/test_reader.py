"""``csb_generator.open_dataset`` on datasets written by the command line: random access, the
manifest, helpful errors, and safety under multi-process loaders (fork and spawn)."""

from __future__ import annotations

import functools
import multiprocessing
import operator
import shutil

import cli_support
import numpy as np
import pytest
from cli_support import assert_ok, read_arrays, read_json
from csb_generator import DatasetFormatError, ShardDataset, TSweepDataset, open_dataset


def assert_sample_equal(sample: dict, arrays: dict, index: int) -> None:
    assert sorted(sample) == sorted(arrays)
    for name, value in sample.items():
        expected = arrays[name][index]
        assert np.asarray(value).dtype == expected.dtype, name
        assert np.array_equal(value, expected, equal_nan=expected.dtype.kind in "fc"), name


@pytest.fixture(scope="module")
def random_dataset(mode_runs):
    run = mode_runs["random"]
    assert_ok(run.result)
    return run.out


@pytest.fixture(scope="module")
def tsweep_dataset(mode_runs):
    run = mode_runs["tsweep-random"]
    assert_ok(run.result)
    return run.out


def test_random_access(random_dataset):
    dataset = open_dataset(random_dataset)
    assert isinstance(dataset, ShardDataset)
    arrays = read_arrays(random_dataset)
    assert len(dataset) == 12
    assert dataset.manifest == read_json(random_dataset / "manifest.json")
    assert dataset.manifest["mode"] == "random"
    for index in (0, 4, 5, 11, 7):  # across shard boundaries (shards of 5), in any order
        assert_sample_equal(dataset[index], arrays, index)
    assert_sample_equal(dataset[-1], arrays, 11)
    assert_sample_equal(dataset[-12], arrays, 0)
    assert_sample_equal(dataset[np.int64(3)], arrays, 3)
    for index in (12, 100, -13):
        with pytest.raises(IndexError):
            dataset[index]
    assert "trajectory" in dataset[0]  # stored with --store-trajectories
    assert len(list(dataset)) == 12
    dataset.close()


def test_folder_without_manifest(random_dataset, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(random_dataset, unfinished)
    (unfinished / "manifest.json").unlink()
    with pytest.raises(DatasetFormatError, match=r"manifest\.json") as error:
        open_dataset(unfinished)
    assert "rerun" in str(error.value) and str(unfinished) in str(error.value)
    with pytest.raises(DatasetFormatError, match="not a folder"):
        open_dataset(tmp_path / "nowhere")


def test_missing_shard_is_reported(random_dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(random_dataset, broken)
    (broken / "shard-00001.h5").unlink()
    with pytest.raises(DatasetFormatError, match=r"shard-00001\.h5"):
        open_dataset(broken)


def _read_in_pool(context_name: str, dataset, indices, inherit: bool):
    context = multiprocessing.get_context(context_name)
    with context.Pool(2) as pool:
        if inherit:
            return pool.map(cli_support.read_inherited, indices)
        return pool.map(functools.partial(operator.getitem, dataset), indices)


@pytest.mark.parametrize(
    ("context_name", "inherit"),
    [("fork", True), ("fork", False), ("spawn", False)],
    ids=["fork-inherited", "fork-pickled", "spawn-pickled"],
)
def test_reading_in_worker_processes(random_dataset, tsweep_dataset, context_name, inherit):
    for folder in (random_dataset, tsweep_dataset):
        dataset = open_dataset(folder)
        serial = [dataset[index] for index in range(len(dataset))]  # the parent has files open
        indices = list(range(len(dataset))) * 2
        cli_support.INHERITED = dataset
        try:
            samples = _read_in_pool(context_name, dataset, indices, inherit)
        finally:
            cli_support.INHERITED = None
        assert len(samples) == len(indices)
        for index, sample in zip(indices, samples, strict=True):
            for name, value in sample.items():
                expected = serial[index][name]
                assert np.array_equal(value, expected, equal_nan=expected.dtype.kind in "fc")
        # The parent's own handles still work after the workers are gone.
        assert np.array_equal(dataset[0]["sharp"], serial[0]["sharp"])
        dataset.close()


def test_tsweep_dataset(tsweep_dataset):
    dataset = open_dataset(tsweep_dataset)
    assert isinstance(dataset, TSweepDataset)
    top = read_json(tsweep_dataset / "manifest.json")
    assert dataset.manifest == top
    assert dataset.exposures == [1.0, 0.5, 0.25]
    assert list(dataset.parts) == [1.0, 0.5, 0.25]
    np.testing.assert_array_equal(dataset.trajectory, np.load(tsweep_dataset / "trajectory.npy"))
    assert len(dataset) == 3 * 6
    for position, (exposure, part) in enumerate(dataset.parts.items()):
        assert isinstance(part, ShardDataset) and len(part) == 6
        assert part.exposure == exposure
        arrays = read_arrays(tsweep_dataset / f"T-{exposure:.6g}")
        for index in range(6):
            assert_sample_equal(dataset[position * 6 + index], arrays, index)
            assert_sample_equal(part[index], arrays, index)
    assert float(dataset[-1]["exposure"]) == 0.25
    with pytest.raises(IndexError):
        dataset[18]
    # One part alone opens as a plain dataset.
    alone = open_dataset(tsweep_dataset / "T-0.5")
    assert isinstance(alone, ShardDataset) and alone.exposure == 0.5 and len(alone) == 6
    dataset.close()
