"""Sample i is a pure function of (seed, i, options, sources): the same bytes whatever the number
of workers, the shard size, or the split of the work into parts
(docs/model.md#5-reproducibility)."""

from __future__ import annotations

import pytest
from cli_support import (
    TINY,
    assert_ok,
    assert_same_dataset_files,
    assert_same_samples,
    dataset_bytes,
    describe,
    read_arrays,
    read_json,
    run_cli,
    run_many,
)

NOISY = ["--mode", "noisy", "--count", "16", *TINY, "--no-preview"]


@pytest.fixture(scope="module")
def noisy_runs(photos, tmp_path_factory):
    """The same noisy dataset with 1 and 2 workers and three shard sizes."""
    root = tmp_path_factory.mktemp("determinism")
    variants = {
        "w1-s4": ["--workers", "1", "--shard-size", "4"],
        "w2-s4": ["--workers", "2", "--shard-size", "4"],
        "w1-s5": ["--workers", "1", "--shard-size", "5"],
        "w2-s16": ["--workers", "2", "--shard-size", "16"],
    }
    commands = [
        [*NOISY, "--source", photos, *extra, "--out", root / name]
        for name, extra in variants.items()
    ]
    results = run_many(commands)
    for result in results:
        assert_ok(result)
    return {name: root / name for name in variants}


def test_workers_give_identical_files(noisy_runs):
    one = dataset_bytes(noisy_runs["w1-s4"])
    assert sorted(one) == ["manifest.json", *(f"shard-{k:05d}.h5" for k in range(4))]
    assert_same_dataset_files(noisy_runs["w1-s4"], noisy_runs["w2-s4"])


@pytest.mark.parametrize("other", ["w1-s5", "w2-s16"])
def test_shard_size_gives_identical_samples(noisy_runs, other):
    reference = read_arrays(noisy_runs["w1-s4"])
    arrays = read_arrays(noisy_runs[other])
    assert_same_samples(reference, arrays)
    # The manifests differ only where the shard layout shows.
    first, second = (
        read_json(noisy_runs["w1-s4"] / "manifest.json"),
        read_json(noisy_runs[other] / "manifest.json"),
    )
    differing = {key for key in first if first[key] != second[key]}
    assert differing <= {"options", "shards", "fingerprint"}, differing
    options = {k for k in first["options"] if first["options"][k] != second["options"][k]}
    assert options == {"shard_size"}


def test_negative_control_other_seed_gives_other_samples(noisy_runs, photos, tmp_path):
    """The comparisons above can fail: a different seed changes the samples."""
    out = tmp_path / "seed1"
    seed = ["--shard-size", "4", "--seed", "1"]
    assert_ok(run_cli([*NOISY, "--source", photos, *seed, "--out", out]))
    reference, other = read_arrays(noisy_runs["w1-s4"]), read_arrays(out)
    with pytest.raises(AssertionError):
        assert_same_samples(reference, other)
    shard = "shard-00000.h5"
    assert dataset_bytes(out)[shard] != dataset_bytes(noisy_runs["w1-s4"])[shard]


def test_parts_then_join_equal_a_single_run(photos, tmp_path):
    """A T-sweep of 2 exposures x 2 shards, split into 3 parts run at the same time (as a job
    array would), then joined: the same bytes as one run. Shards are numbered over all parts."""
    base = [
        "--mode", "tsweep", "--exposure", "1,1/2", "--count", "6", "--shard-size", "4",
        *TINY, "--no-preview", "--source", photos,
    ]  # fmt: skip
    single, split = tmp_path / "single", tmp_path / "split"
    parts = [[*base, "--out", split, "--shard-index", i, "--num-shards", 3] for i in range(3)]
    results = run_many([[*base, "--out", single], *parts])
    for result in results:
        assert_ok(result)
    for result in results[1:]:
        assert "without --shard-index/--num-shards" in result.stdout, describe(result)
    # Parts write shards only: no manifest until the join run.
    assert not (split / "manifest.json").exists()
    assert not any(split.glob("T-*/manifest.json"))
    written = sorted(path.relative_to(split).as_posix() for path in split.glob("T-*/shard-*.h5"))
    assert written == [
        "T-0.5/shard-00000.h5",
        "T-0.5/shard-00001.h5",
        "T-1/shard-00000.h5",
        "T-1/shard-00001.h5",
    ]
    joined = assert_ok(run_cli([*base, "--out", split]))
    assert "kept 4 complete shard(s)" in joined.stdout, describe(joined)
    assert "Wrote 0 shard(s)" in joined.stdout, describe(joined)
    assert len(dataset_bytes(single)) == 4 + 3 + 1  # shards, 3 manifests, the trajectory
    assert_same_dataset_files(single, split)


def test_one_part_writes_only_its_shards(photos, tmp_path):
    """--shard-index 1 --num-shards 2 of 4 shards writes shards 1 and 3, nothing else."""
    out = tmp_path / "part"
    part = ["--shard-index", "1", "--num-shards", "2"]
    result = assert_ok(
        run_cli([*NOISY, "--source", photos, "--shard-size", "4", *part, "--out", out])
    )
    assert sorted(path.name for path in out.glob("shard-*.h5")) == [
        "shard-00001.h5",
        "shard-00003.h5",
    ], describe(result)
    assert not (out / "manifest.json").exists()
