"""A write that fails (a full disk, simulated by a file-size limit: writes fail with EFBIG):
exit code 1 with a clear message, no incomplete file under a final shard name, and a rerun
without the limit completes the same dataset (docs/cli.md, exit codes)."""

from __future__ import annotations

import resource
import signal

import h5py
import pytest
from cli_support import (
    TINY,
    assert_ok,
    assert_same_dataset_files,
    describe,
    read_json,
    run_cli,
    shard_paths,
)

#: Larger than the small JSON files (plan, progress records), smaller than one shard of 8.
LIMIT_BYTES = 100_000
COMMAND = ["--mode", "random", "--count", "9", "--shard-size", "8", *TINY, "--no-preview"]


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_write_exits_1_and_rerun_completes(photos, tmp_path, workers):
    # An unlimited run first: the reference, and any compilation cache is written here.
    reference = tmp_path / "reference"
    assert_ok(run_cli([*COMMAND, "--source", photos, "--out", reference]))
    assert max(path.stat().st_size for path in shard_paths(reference)) > LIMIT_BYTES

    out = tmp_path / "full-disk"
    command = [*COMMAND, "--source", photos, "--out", out, "--workers", workers]
    failed = run_cli(command, preexec_fn=_limit_file_size)
    assert failed.returncode != 0, describe(failed)
    assert not (out / "manifest.json").exists()
    for path in shard_paths(out):  # whatever carries a final name is complete
        with h5py.File(path, "r") as shard:
            assert shard["index"].shape[0] == shard.attrs["count"]

    rerun = assert_ok(run_cli(command))
    assert read_json(out / "manifest.json")["count"] == 9
    assert sorted(path.name for path in out.rglob(".*.tmp-*")) == []
    assert "Wrote" in rerun.stdout
    assert_same_dataset_files(reference, out)

    # The failed run itself: exit code 1 (writing failed) and a clear message.
    signal_name = (
        f" (killed by {signal.Signals(-failed.returncode).name})" if failed.returncode < 0 else ""
    )
    assert failed.returncode == 1, (
        f"expected exit code 1 (writing failed), got {failed.returncode}{signal_name}"
        + describe(failed)
    )
    assert "writing the dataset failed" in failed.stderr, describe(failed)
    assert "File too large" in failed.stderr or "Errno 27" in failed.stderr, describe(failed)
    assert "rerun" in failed.stderr
