"""``--scheduler``: shards written by the workers of a dask.distributed cluster are the same bytes
as a local run (docs/cli.md, "Several processes, several machines")."""

from __future__ import annotations

import os

import pytest
from cli_support import (
    TINY,
    assert_ok,
    assert_same_dataset_files,
    dataset_bytes,
    describe,
    run_cli,
    run_many,
)

pytest.importorskip("distributed")

COMMAND = ["--mode", "noisy", "--count", "12", "--shard-size", "4", *TINY, "--no-preview"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from dask.distributed import LocalCluster

    # The workers start in their own folder, as on other machines: nothing may depend on the
    # client's working directory.
    workers_home = tmp_path_factory.mktemp("dask-workers-home")
    previous = os.getcwd()
    os.chdir(workers_home)
    try:
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    finally:
        os.chdir(previous)
    with cluster:
        yield cluster, workers_home


@pytest.mark.slow
def test_cluster_run_equals_local_run(cluster, photos, tmp_path):
    cluster, _ = cluster
    local, remote = tmp_path / "local", tmp_path / "dask"
    results = run_many(
        [
            [*COMMAND, "--source", photos, "--out", local],
            [
                *COMMAND,
                "--source",
                photos,
                "--out",
                remote,
                "--scheduler",
                cluster.scheduler_address,
            ],
        ]
    )
    for result in results:
        assert_ok(result)
    assert sorted(dataset_bytes(local)) == [
        "manifest.json",
        "shard-00000.h5",
        "shard-00001.h5",
        "shard-00002.h5",
    ]
    assert_same_dataset_files(local, remote)


@pytest.mark.slow
def test_cluster_run_with_a_relative_output_folder(cluster, photos, tmp_path):
    """`--out data` means data/ in the folder the command runs in, not in the workers' folder."""
    cluster, workers_home = cluster
    result = run_cli(
        [*COMMAND, "--source", photos, "--out", "data", "--scheduler", cluster.scheduler_address],
        cwd=tmp_path,
    )
    assert_ok(result)
    assert (tmp_path / "data" / "manifest.json").is_file(), describe(result)
    assert len(list((tmp_path / "data").glob("shard-*.h5"))) == 3
    assert not (workers_home / "data").exists()
