"""Atomic writes: a file is complete under its final name or absent, and the temporaries of
killed writers are cleaned up while a live writer's are left alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from csb_generator import atomic_output, remove_abandoned_temporaries, write_bytes_atomic
from csb_generator.atomic_files import temporary_name


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "manifest.json"
    write_bytes_atomic(path, b"old")
    with pytest.raises(RuntimeError, match="the writer failed"), atomic_output(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("the writer failed")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_the_temporary_is_hidden_beside_the_file_and_names_its_writer(tmp_path):
    path = tmp_path / "shard-00000.h5"
    temporary = temporary_name(path)
    assert temporary.parent == tmp_path and temporary.name.startswith(".shard-00000.h5.tmp-")
    assert temporary.name.endswith(f"-{os.getpid()}")
    temporary.write_bytes(b"partial")
    assert list(tmp_path.glob("shard-*.h5")) == []  # a reader's glob never sees it


def test_abandoned_temporaries_are_removed_and_live_ones_kept(tmp_path):
    path = tmp_path / "checkpoint.pt"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    dead = tmp_path / f".checkpoint.pt.tmp-{int(finished.stdout)}"
    live = tmp_path / f".checkpoint.pt.tmp-{os.getppid()}"  # the test runner's parent: alive
    own = temporary_name(path)
    other = tmp_path / f".other.pt.tmp-{int(finished.stdout)}"
    for file in (dead, live, own, other):
        file.write_bytes(b"partial")
    assert remove_abandoned_temporaries(path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, own, other))
