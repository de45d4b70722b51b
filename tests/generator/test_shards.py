"""The shard writer gives the same bytes for the same arrays, however long the process keeps
the h5py objects alive (a dask worker's profiler holds frames, and so the objects, longer)."""

from __future__ import annotations

import h5py
import numpy as np
from csb_generator.shards import write_shard


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "sharp": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
        "blurred": rng.random((4, 32, 32, 3), dtype=np.float32),
        "kernel": rng.random((4, 16, 16), dtype=np.float32),
        "exposure": np.ones(4, dtype=np.float32),
    }


def test_bytes_do_not_depend_on_when_datasets_are_freed(tmp_path, monkeypatch):
    freed_at_once = write_shard(tmp_path / "a.h5", _arrays(), {"format": "test", "count": 4})
    kept = []
    create = h5py.Group.create_dataset

    def create_and_keep(self, *args, **kwargs):
        dataset = create(self, *args, **kwargs)
        kept.append(dataset)  # freed only after the file is written
        return dataset

    monkeypatch.setattr(h5py.Group, "create_dataset", create_and_keep)
    kept_alive = write_shard(tmp_path / "b.h5", _arrays(), {"format": "test", "count": 4})
    assert len(kept) == 4
    assert kept_alive == freed_at_once
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
