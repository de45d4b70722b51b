"""Two ``csb-generate`` runs on one folder: an advisory lock on ``--out`` makes sure that at most
one of them writes it, so that there are never two success reports for one folder, while the
``--shard-index`` parts of one dataset may still run side by side."""

from __future__ import annotations

import fcntl
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_support import CLI, TINY, assert_ok, describe, read_json, run_cli
from csb_generator import verify_dataset

pytestmark = pytest.mark.slow

BUSY = "is being written by another csb-generate process"


@contextmanager
def held(folder: Path, mode: int):
    """Hold ``flock(mode)`` on ``folder``, as a running csb-generate does."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, mode | fcntl.LOCK_NB)
        yield
    finally:
        os.close(descriptor)


def _command(out: Path, seed: int, *extra: str) -> list[str]:
    return ["--mode", "random", "--count", "8", "--shard-size", "2", *TINY, "--seed", str(seed),
            "--no-preview", "--out", str(out), *extra]  # fmt: skip


def test_a_folder_being_written_is_refused_with_exit_1_and_left_alone(tmp_path, photos):
    out = tmp_path / "data"
    out.mkdir()
    cases = [
        (fcntl.LOCK_EX, []),  # a lone run is writing; a lone run comes
        (fcntl.LOCK_EX, ["--shard-index", "0", "--num-shards", "2"]),  # ... a part comes
        (fcntl.LOCK_SH, []),  # parts are writing; a lone run comes
    ]
    for mode, extra in cases:
        with held(out, mode):
            result = run_cli([*_command(out, 1, *extra), "--source", photos])
        assert result.returncode == 1, describe(result)
        assert BUSY in result.stderr and str(out) in result.stderr, describe(result)
        assert "Traceback" not in result.stderr and list(out.iterdir()) == []
    assert_ok(run_cli([*_command(out, 1), "--source", photos]))  # once free, it runs


def test_concurrent_runs_with_different_seeds_never_both_succeed(tmp_path, photos):
    """Pairs started together on a fresh folder: exactly one succeeds; the other finds the
    folder busy (exit 1) or, if it came after, holding another dataset (exit 2)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for pair in range(3):
        out = tmp_path / f"pair-{pair}"
        runs = [
            subprocess.Popen(
                [str(CLI), *_command(out, seed), "--source", str(photos)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment,
            )
            for seed in (1, 2)
        ]
        outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
        for run in runs:
            run.stdout.close()
            run.stderr.close()
        codes = sorted(code for code, _ in outcomes)
        assert codes in ([0, 1], [0, 2]), outcomes
        winner = 1 + [code for code, _ in outcomes].index(0)
        loser_message = next(message for code, message in outcomes if code != 0)
        assert BUSY in loser_message or "holds a different dataset" in loser_message
        assert read_json(out / "manifest.json")["seed"] == winner
        assert verify_dataset(out)["samples"] == 8


def test_the_parts_of_one_dataset_run_side_by_side(tmp_path, photos):
    out = tmp_path / "parts"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    parts = [
        subprocess.Popen(
            [str(CLI), *_command(out, 3, "--shard-index", str(k), "--num-shards", "2"),
             "--source", str(photos)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for k in (0, 1)
    ]  # fmt: skip
    for part in parts:
        assert part.wait(timeout=300) == 0, part.stderr.read()
        part.stderr.close()
    joined = assert_ok(run_cli([*_command(out, 3), "--source", photos]))
    assert "0 shard(s) to write, 4 complete kept" in joined.stderr, describe(joined)
    assert verify_dataset(out)["samples"] == 8
