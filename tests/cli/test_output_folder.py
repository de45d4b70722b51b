"""An output folder that holds a different dataset is never overwritten without --overwrite;
an output path that is a file is refused (exit code 2, docs/cli.md); a folder the machine will
not create is a failure (exit code 1)."""

from __future__ import annotations

import numpy as np
import pytest
from cli_support import (
    TINY,
    assert_ok,
    assert_usage_error,
    dataset_bytes,
    describe,
    read_arrays,
    read_json,
    run_cli,
)

BASE = ["--mode", "random", "--shard-size", "4", *TINY, "--no-preview"]


@pytest.fixture
def existing(photos, tmp_path):
    """A complete dataset of 12 samples (3 shards), with a file of the user's next to it."""
    out = tmp_path / "data"
    assert_ok(run_cli([*BASE, "--count", "12", "--source", photos, "--out", out]))
    (out / "notes.txt").write_text("the user's own file")
    return out


@pytest.mark.parametrize(
    "change",
    [["--seed", "1"], ["--count", "8"], ["--psf-size", "18"]],
    ids=["seed", "count", "psf-size"],
)
def test_different_options_are_refused(existing, photos, change):
    before = dataset_bytes(existing)
    result = run_cli([*BASE, "--count", "12", "--source", photos, "--out", existing, *change])
    assert_usage_error(result, "different dataset", "--overwrite", str(existing))
    assert dataset_bytes(existing) == before


def test_other_sources_are_refused(existing, photos, tmp_path):
    other = tmp_path / "other-photos"
    other.mkdir()
    (other / "one.png").write_bytes((photos / "astronaut.png").read_bytes())
    before = dataset_bytes(existing)
    result = run_cli([*BASE, "--count", "12", "--source", other, "--out", existing])
    assert_usage_error(result, "different dataset")
    assert dataset_bytes(existing) == before


def test_overwrite_replaces_the_dataset_and_only_it(existing, photos):
    result = run_cli(
        [*BASE, "--count", "6", "--seed", "1", "--source", photos, "--out", existing, "--overwrite"]
    )
    assert_ok(result)
    manifest = read_json(existing / "manifest.json")
    assert manifest["seed"] == 1 and manifest["count"] == 6
    # Stale shards of the old dataset are gone; the user's file is not ours to delete.
    assert sorted(path.name for path in existing.glob("shard-*.h5")) == [
        "shard-00000.h5",
        "shard-00001.h5",
    ]
    assert sorted(path.name for path in (existing / ".progress").iterdir()) == [
        "shard-00000.h5.json",
        "shard-00001.h5.json",
    ]
    assert (existing / "notes.txt").read_text() == "the user's own file"
    np.testing.assert_array_equal(read_arrays(existing)["index"], np.arange(6))


def test_unknown_shard_files_are_refused(photos, tmp_path):
    out = tmp_path / "foreign"
    out.mkdir()
    (out / "shard-00000.h5").write_bytes(b"somebody else's data")
    result = run_cli([*BASE, "--count", "8", "--source", photos, "--out", out])
    assert_usage_error(result, "unknown origin", "--overwrite")
    assert (out / "shard-00000.h5").read_bytes() == b"somebody else's data"
    assert sorted(path.name for path in out.iterdir()) == ["shard-00000.h5"]


def test_a_folder_of_unrelated_files_is_used(photos, tmp_path):
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "README.md").write_text("hello")
    assert_ok(run_cli([*BASE, "--count", "4", "--source", photos, "--out", out]))
    assert (out / "README.md").read_text() == "hello"
    assert (out / "manifest.json").is_file()


def test_output_path_that_is_a_file(photos, tmp_path):
    out = tmp_path / "a-file"
    out.write_text("not a folder")
    result = run_cli([*BASE, "--count", "4", "--source", photos, "--out", out])
    assert_usage_error(result, "is a file", str(out))
    assert out.read_text() == "not a folder"


def test_an_output_folder_the_machine_refuses_is_exit_1(photos):
    # sysfs refuses new folders even to root (EPERM, or EROFS where it is mounted read-only):
    # the machine's failure, not bad input (docs/cli.md, Exit codes).
    out = "/sys/csb-generate-test/data"
    result = run_cli([*BASE, "--count", "4", "--source", photos, "--out", out])
    assert result.returncode == 1, describe(result)
    assert f"error: cannot prepare {out}" in result.stderr, describe(result)
    assert "Traceback" not in result.stderr, describe(result)


@pytest.mark.parametrize("kind", ["kernel", "trajectory"])
def test_changed_kernel_or_trajectory_file_is_not_taken_for_the_same_dataset(
    photos, tmp_path, kind
):
    """The dataset depends on the content of --kernel FILE / --trajectory FILE, not only on its
    name: after the file changes, rerunning the same command must not keep shards made with the
    old content (either refuse, exit 2, or regenerate them with the new one)."""
    path = tmp_path / f"{kind}.npy"
    if kind == "kernel":
        old, new = np.zeros((5, 5)), np.zeros((5, 5))
        old[2, :], new[:, 2] = 1, 1  # a horizontal, then a vertical line
        mode = ["--mode", "fixed", "--kernel", str(path)]
    else:
        t = np.linspace(0, 6, 200)
        old, new = t + 0j, 1j * t  # a horizontal, then a vertical path
        mode = ["--mode", "tsweep", "--trajectory", str(path), "--exposure", "1,1/2"]
    out = tmp_path / "data"
    command = [*mode, "--count", "4", "--shard-size", "2", *TINY, "--no-preview"]
    command += ["--source", photos, "--out", out]
    np.save(path, old)
    assert_ok(run_cli(command))
    np.save(path, new)
    result = run_cli(command)
    if result.returncode == 2:
        assert "different dataset" in result.stderr, describe(result)
        return
    assert_ok(result)
    folder = out if kind == "kernel" else out / "T-1"
    kernel = read_arrays(folder)["kernel"][0]
    rows, cols = np.nonzero(kernel > 1e-6)
    assert np.ptp(rows) > np.ptp(cols), (
        f"the rerun kept shards made with the old {kind} file (a horizontal kernel) although "
        f"the file now holds a vertical one; exit {result.returncode}" + describe(result)
    )
