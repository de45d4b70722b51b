"""Crash safety: a killed run leaves no half-written shard under a final name, and rerunning the
same command resumes it to the same bytes as an uninterrupted run; damaged shards are found by
their hash and regenerated (docs/format.md#guarantees)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest
from cli_support import (
    CLI,
    TINY,
    assert_ok,
    assert_same_dataset_files,
    dataset_bytes,
    describe,
    run_cli,
    run_many,
    shard_paths,
)

SHARD = 16
COUNT = 640
#: Big enough to take a few seconds with one worker, so that it can be interrupted mid-run.
BIG = [
    "--mode", "random", "--count", str(COUNT), "--image-size", "64", "--psf-size", "16",
    "--shard-size", str(SHARD), "--workers", "1", "--no-preview",
]  # fmt: skip


def _default_sigint() -> None:
    # A test runner started in the background may ignore SIGINT, and children inherit that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args, log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen(
            [str(CLI), *(str(arg) for arg in args)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            preexec_fn=_default_sigint,
        )


def wait_for_records(out: Path, process: subprocess.Popen, minimum: int) -> None:
    """Wait until the run has recorded `minimum` finished shards in .progress/."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(list((out / ".progress").glob("*.json"))) >= minimum:
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before it was interrupted")
        time.sleep(0.002)
    process.kill()
    pytest.fail("no shard was recorded within 120 s")


def wait_for_a_shard_being_written(out: Path, process: subprocess.Popen) -> bool:
    """Wait (briefly) until a shard is being written: its hidden temporary exists."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and process.poll() is None:
        if any(out.glob(".shard-*.tmp-*")):
            return True
        time.sleep(0.0002)
    return False


def assert_no_incomplete_final_shard(out: Path) -> list[Path]:
    """Every file under a final shard name is a complete shard; temporaries are hidden."""
    finals = shard_paths(out)
    for path in finals:
        with h5py.File(path, "r") as shard:  # a half-written file would not open
            number = int(path.stem.split("-")[1])
            assert shard.attrs["count"] == SHARD and shard.attrs["first_index"] == number * SHARD
            assert list(shard["index"][()]) == list(range(number * SHARD, (number + 1) * SHARD))
            assert shard["blurred"].shape[0] == SHARD
    allowed = re.compile(
        r"shard-\d{5}\.h5|\.shard-\d{5}\.h5\.tmp-\d+|\.csb-generate\.json|\.progress"
    )
    others = [path.name for path in out.iterdir() if not allowed.fullmatch(path.name)]
    assert others == [], f"unexpected files after the interruption: {others}"
    return finals


def hidden_temporaries(out: Path) -> list[str]:
    return sorted(path.name for path in out.rglob(".*.tmp-*"))


@pytest.fixture(scope="module")
def references(photos, tmp_path_factory):
    """The uninterrupted run with a given codec, made once per codec."""
    made: dict[str, Path] = {}

    def reference(codec: str) -> Path:
        if codec not in made:
            out = tmp_path_factory.mktemp("resume") / f"reference-{codec}"
            assert_ok(run_cli([*BIG, "--compression", codec, "--source", photos, "--out", out]))
            assert len(dataset_bytes(out)) == COUNT // SHARD + 1
            made[codec] = out
        return made[codec]

    return reference


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["gzip", "none"])
def test_sigkill_then_rerun_is_byte_identical(photos, tmp_path, references, codec):
    """gzip is the default codec; none shows the resume logic without any codec. (lzf is not
    byte-deterministic in h5py's build, so it is not promised here: see docs/format.md.)"""
    reference = references(codec)
    out = tmp_path / "killed"
    command = [*BIG, "--compression", codec, "--source", photos, "--out", out]
    process = start(command, tmp_path / "killed.log")
    wait_for_records(out, process, minimum=2)
    # Best effort: kill while a shard is being written (its hidden temporary exists).
    wait_for_a_shard_being_written(out, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    assert not (out / "manifest.json").exists(), "the run was not interrupted"
    finals = assert_no_incomplete_final_shard(out)
    recorded = sorted((out / ".progress").glob("*.json"))
    assert 2 <= len(recorded) and len(finals) < COUNT // SHARD

    resumed = assert_ok(run_cli(command))
    kept = int(re.search(r"kept (\d+) complete shard", resumed.stdout).group(1))
    assert kept == len(recorded), describe(resumed)
    assert hidden_temporaries(out) == []
    assert_same_dataset_files(reference, out)


@pytest.mark.slow
def test_ctrl_c_exits_130_and_rerun_completes(photos, tmp_path, references):
    reference = references("gzip")
    out = tmp_path / "interrupted"
    command = [*BIG, "--compression", "gzip", "--source", photos, "--out", out]
    log = tmp_path / "interrupted.log"
    process = start(command, log)
    wait_for_records(out, process, minimum=1)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    output = log.read_text()
    assert process.returncode == 130, output[-3000:]
    assert "interrupted" in output and "rerun" in output
    assert not (out / "manifest.json").exists()
    assert_no_incomplete_final_shard(out)
    assert hidden_temporaries(out) == [], "a clean interruption leaves no temporary behind"

    assert_ok(run_cli(command))
    assert_same_dataset_files(reference, out)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(byte ^ 0xFF for byte in data[middle : middle + 16])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _stale_temporary(path: Path) -> None:
    path.unlink()
    (path.parent / f".{path.name}.tmp-99999").write_bytes(b"half a shard")


DAMAGE = {
    # name: (what is done to shard-00001.h5, shards the rerun must write)
    "flipped-bytes": (_flip, 1),
    "truncated": (_truncate, 1),
    "deleted": (lambda path: path.unlink(), 1),
    "record-missing": (lambda path: (path.parent / ".progress" / f"{path.name}.json").unlink(), 1),
    "stale-temporary": (_stale_temporary, 1),
    "manifest-deleted": (lambda path: (path.parent / "manifest.json").unlink(), 0),
}


@pytest.fixture(scope="module")
def repaired(photos, tmp_path_factory):
    """A complete dataset, copied and damaged in several ways, each copy rerun."""
    root = tmp_path_factory.mktemp("damage")
    base = ["--mode", "random", "--count", "12", "--shard-size", "4", *TINY, "--no-preview"]
    pristine = root / "pristine"
    assert_ok(run_cli([*base, "--source", photos, "--out", pristine]))
    commands = []
    for name, (damage, _) in DAMAGE.items():
        copy = root / name
        shutil.copytree(pristine, copy)
        damage(copy / "shard-00001.h5")
        commands.append([*base, "--source", photos, "--out", copy])
    results = dict(zip(DAMAGE, run_many(commands), strict=True))
    return pristine, root, results


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_dataset_is_repaired_on_rerun(repaired, damage):
    pristine, root, results = repaired
    result = assert_ok(results[damage])
    rewritten = DAMAGE[damage][1]
    assert f"Wrote {rewritten} shard(s)" in result.stdout, describe(result)
    assert f"kept {3 - rewritten} complete shard(s)" in result.stdout, describe(result)
    assert_same_dataset_files(pristine, root / damage)
    assert hidden_temporaries(root / damage) == []


def test_rerun_of_a_complete_dataset_keeps_everything(repaired, photos):
    _, root, _ = repaired
    out = root / "pristine"
    pristine = dataset_bytes(out)
    before = {path: path.stat().st_mtime_ns for path in shard_paths(out)}
    base = ["--mode", "random", "--count", "12", "--shard-size", "4", *TINY, "--no-preview"]
    result = assert_ok(run_cli([*base, "--source", photos, "--out", out]))
    assert "Wrote 0 shard(s)" in result.stdout and "kept 3 complete" in result.stdout
    assert {path: path.stat().st_mtime_ns for path in shard_paths(out)} == before
    assert dataset_bytes(out) == pristine
