"""One worker setup for every runner: a ``ShardWriter`` travels to a worker without its sample
maker, builds one per process and thread, and writes the bytes the planning process would."""

from __future__ import annotations

import json
import pickle
import threading

from csb_generator import resolve_options
from csb_generator.dataset_writer import ShardWriter
from csb_generator.generate import plan_generation, run_generation


def test_a_shard_writer_travels_without_its_maker_and_writes_the_same_shard(tmp_path):
    options = resolve_options(
        "random", count=4, shard_size=2, image_size=32, psf_size=9, num_samples=50, seed=3
    )
    plan = plan_generation(options, tmp_path / "out")
    writer = ShardWriter(plan.options, plan.sources, plan.fingerprint, plan.maker)
    travelled = pickle.loads(pickle.dumps(writer))  # as a pool or a Dask worker receives it
    assert travelled.maker is not plan.maker  # built where it runs, not shipped
    # A second writer of the same plan in the same thread reuses that maker (a Dask worker gets
    # a new writer with every task); another thread builds its own (Dask runs tasks on threads).
    assert pickle.loads(pickle.dumps(writer)).maker is travelled.maker
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(pickle.loads(pickle.dumps(writer))))
    thread.start()
    thread.join()
    other_thread = []
    thread = threading.Thread(target=lambda: other_thread.append(elsewhere[0].maker))
    thread.start()
    thread.join()
    assert other_thread[0] is not travelled.maker

    first = travelled(plan.tasks[0])
    run_generation(plan, preview=False)  # writes every shard in this process, then the manifest
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert first["sha256"] == manifest["shards"][0]["sha256"]
    assert first["file"] == manifest["shards"][0]["file"]
