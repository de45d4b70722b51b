"""Shards are untrusted input: what a crafted or damaged dataset can do to ``open_dataset``.

Each case starts from a real dataset written by ``csb-generate``, changes one thing as an
adversary (or a broken disk) would, and, where the adversary would, rewrites the manifest's
SHA-256 so that only the rule under test can refuse it. Every refusal is a
``DatasetFormatError`` naming the file and the rule, raised when the dataset is opened, before
any value is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_support import assert_ok, describe, run_cli
from csb_generator import DatasetFormatError, open_dataset
from csb_generator.shard_checks import sha256_file, shard_sha256s

SECRET = b"root:x:0:0:root:/root:/bin/bash\n" * 4096


@pytest.fixture(scope="module")
def dataset(mode_runs) -> Path:
    run = mode_runs["random"]
    assert_ok(run.result)
    return run.out


@pytest.fixture
def copy(dataset, tmp_path) -> Path:
    folder = tmp_path / "dataset"
    shutil.copytree(dataset, folder)
    return folder


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside the dataset that no reader may open."""
    path = tmp_path / "secret.bin"
    path.write_bytes(SECRET)
    return path


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _reseal(folder: Path) -> None:
    """Rewrite the manifest's SHA-256 of every shard, as an adversary would."""
    manifest = _manifest(folder)
    for shard in manifest["shards"]:
        shard["sha256"] = sha256_file(folder / shard["file"])
    _write_manifest(folder, manifest)


def _replace_dataset(folder: Path, name: str, make: Callable[[h5py.File, str], None]) -> None:
    """Shard 0 with ``name`` made anew by ``make(file, name)``; the manifest resealed."""
    with h5py.File(folder / "shard-00000.h5", "a") as shard:
        del shard[name]
        make(shard, name)
    _reseal(folder)


def _refused(folder: Path, *needles: str) -> str:
    with pytest.raises(DatasetFormatError) as error:
        open_dataset(folder)
    message = str(error.value)
    for needle in needles:
        assert needle in message, message
    return message


def test_the_untouched_dataset_opens_and_reads(dataset):
    opened = open_dataset(dataset)
    assert len(opened) == 12 and opened[11]["blurred"].dtype == np.float32
    assert len(open_dataset(dataset, verify=False)) == 12


def test_external_raw_storage_is_refused(copy, secret):
    def external(shard, name):
        shard.create_dataset(name, shape=(5, 4, 4, 3), dtype="float32", external=[(secret, 0, 960)])

    _replace_dataset(copy, "blurred", external)
    _refused(copy, "shard-00000.h5", "'blurred'", "external files")


def test_external_soft_and_group_links_are_refused(copy, secret):
    with h5py.File(secret.with_suffix(".h5"), "w") as other:
        other["data"] = np.zeros((5, 4), dtype=np.float32)
    cases = {
        "external link": lambda shard, name: shard.__setitem__(
            name, h5py.ExternalLink(str(secret.with_suffix(".h5")), "/data")
        ),
        "soft link": lambda shard, name: shard.__setitem__(name, h5py.SoftLink("/sharp")),
        "group": lambda shard, name: shard.create_group(name),
    }
    pristine = copy.with_name("pristine")
    shutil.copytree(copy, pristine)
    for needle, make in cases.items():
        shutil.rmtree(copy)
        shutil.copytree(pristine, copy)
        _replace_dataset(copy, "blurred", make)
        _refused(copy, "shard-00000.h5", "'blurred'", needle)


def test_virtual_datasets_are_refused(copy, secret):
    source = secret.with_suffix(".h5")
    with h5py.File(source, "w") as other:
        other["data"] = np.zeros(5, dtype=np.float32)

    def virtual(shard, name):
        layout = h5py.VirtualLayout(shape=(5,), dtype="float32")
        layout[:] = h5py.VirtualSource(str(source), "data", shape=(5,))
        shard.create_virtual_dataset(name, layout)

    _replace_dataset(copy, "exposure", virtual)
    _refused(copy, "shard-00000.h5", "'exposure'", "virtual dataset")


def _mark_unread(path: Path) -> int:
    """Put ``path``'s access time before its modification time, where Linux's relatime (and
    strictatime) mounts move it on the next read; returns it, in ns."""
    modified = path.stat().st_mtime_ns
    os.utime(path, ns=(modified - 100 * 10**9, modified))
    return path.stat().st_atime_ns


@pytest.fixture
def reads_are_seen(tmp_path) -> None:
    """Skips where the filesystem does not record reads (noatime), so that the access-time
    checks below can never pass vacuously."""
    control = tmp_path / "control.bin"
    control.write_bytes(b"control")
    before = _mark_unread(control)
    control.read_bytes()
    if control.stat().st_atime_ns == before:
        pytest.skip(f"{tmp_path} does not record reads (noatime): access times cannot tell")


def test_a_refused_shard_reads_nothing_outside_its_folder(copy, secret, reads_are_seen):
    """For each way a shard can point outside its folder, the file it points at keeps its
    access time through ``open_dataset`` and ``csb-generate --verify`` (both refuse), and the
    control, reading the crafted dataset with h5py alone, does move it: the attack is real and
    the reader does not follow it."""
    target = secret.with_suffix(".h5")
    with h5py.File(target, "w") as other:
        other["data"] = np.zeros((5, 4, 4, 3), dtype=np.float32)

    def external_files(shard, name):
        shard.create_dataset(name, shape=(5, 4, 4, 3), dtype="float32", external=[(secret, 0, 960)])

    def external_link(shard, name):
        shard[name] = h5py.ExternalLink(str(target), "/data")

    def virtual(shard, name):
        layout = h5py.VirtualLayout(shape=(5, 4, 4, 3), dtype="float32")
        layout[:] = h5py.VirtualSource(str(target), "data", shape=(5, 4, 4, 3))
        shard.create_virtual_dataset(name, layout)

    cases = {
        "external files": (secret, external_files),
        "external link": (target, external_link),
        "virtual dataset": (target, virtual),
    }
    pristine = copy.with_name("pristine")
    shutil.copytree(copy, pristine)
    for needle, (outside, make) in cases.items():
        shutil.rmtree(copy)
        shutil.copytree(pristine, copy)
        _replace_dataset(copy, "blurred", make)
        unread = _mark_unread(outside)
        _refused(copy, "'blurred'", needle)
        verify = run_cli(["--verify", copy])
        assert verify.returncode == 2 and needle in verify.stderr, describe(verify)
        assert outside.stat().st_atime_ns == unread, f"{needle}: {outside.name} was read"
        with h5py.File(copy / "shard-00000.h5", "r") as shard:
            shard["blurred"][...]
        assert outside.stat().st_atime_ns != unread, f"{needle}: the control read nothing"


def test_datasets_of_another_dtype_rank_or_name_are_refused(dataset, copy, tmp_path):
    def wrong_scale(shard, name):  # float64, grey levels instead of [0, 1]
        shard.create_dataset(name, data=np.full((5, 8, 8, 3), 200.0))

    _replace_dataset(copy, "blurred", wrong_scale)
    _refused(copy, "'blurred' is float64 of rank 4", "docs/format.md")
    other = tmp_path / "other"
    shutil.copytree(dataset, other)
    with h5py.File(other / "shard-00001.h5", "a") as shard:
        shard["extra"] = np.zeros(5)
    _reseal(other)
    _refused(other, "shard-00001.h5", "'extra' is not a dataset of this format")


def test_values_out_of_range_are_refused_when_read(copy):
    with h5py.File(copy / "shard-00001.h5", "a") as shard:
        blurred = shard["blurred"][...]
        blurred[2] *= 3  # same dtype and shape, values above 1
        shard["blurred"][...] = blurred
    _reseal(copy)
    opened = open_dataset(copy)
    opened[6]  # its neighbours still read
    with pytest.raises(DatasetFormatError, match=r"shard-00001\.h5: sample 7: 'blurred'"):
        opened[7]


def test_manifest_paths_outside_the_folder_are_refused(copy, tmp_path):
    outside = tmp_path / "outside.h5"
    shutil.copy(copy / "shard-00000.h5", outside)
    for name in ("../outside.h5", str(outside)):
        manifest = _manifest(copy)
        manifest["shards"][0]["file"] = name
        _write_manifest(copy, manifest)
        _refused(copy, repr(name), "leaves the dataset folder")
    (copy / "link.h5").symlink_to(outside)
    manifest = _manifest(copy)
    manifest["shards"][0]["file"] = "link.h5"
    _write_manifest(copy, manifest)
    _refused(copy, "'link.h5'", "symbolic link out of the dataset folder")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda m: m.update(count="12"), "'count', an integer"),
        (lambda m: m.pop("shards"), "needs 'shards'"),
        (lambda m: m["shards"][1].update(first_index=3), "contiguous"),
        (lambda m: m["shards"][0].update(sha256="0" * 64), "SHA-256 is not the manifest's"),
    ],
    ids=["count-string", "no-shards", "gap", "wrong-sha256"],
)
def test_malformed_manifests_are_refused_with_the_manifest_named(copy, change, needle):
    manifest = _manifest(copy)
    change(manifest)
    _write_manifest(copy, manifest)
    _refused(copy, needle, str(copy))


def test_a_changed_shard_fails_its_checksum_and_verify_false_skips_the_hash(copy):
    with h5py.File(copy / "shard-00002.h5", "a") as shard:
        shard["sigma"][0] = 3.0  # a valid value: only the checksum can tell
    _refused(copy, "shard-00002.h5", "SHA-256 is not the manifest's", "rerun")
    assert float(open_dataset(copy, verify=False)[10]["sigma"]) == 3.0


def test_shards_hashed_side_by_side_give_each_file_its_own_digest(dataset):
    paths = sorted(dataset.glob("shard-*.h5"))
    assert len(paths) == 3  # more files than one thread takes, on any machine with 2 cores
    expected = [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]
    assert shard_sha256s(paths) == expected
    assert shard_sha256s(paths[::-1]) == expected[::-1]
    assert shard_sha256s([]) == []


def test_a_truncated_shard_is_named(copy):
    path = copy / "shard-00001.h5"
    path.write_bytes(path.read_bytes()[:2000])
    _refused(copy, "shard-00001.h5", "SHA-256")
    with pytest.raises(DatasetFormatError, match=r"cannot read .*shard-00001\.h5"):
        open_dataset(copy, verify=False)


def test_verify_reports_a_sound_dataset_and_refuses_a_crafted_one(dataset, copy, secret):
    sound = run_cli(["--verify", dataset])  # needs neither --mode nor --out
    assert sound.returncode == 0, describe(sound)
    assert "OK, 12 samples in 3 shards of 1 dataset(s)" in sound.stdout
    with h5py.File(copy / "shard-00001.h5", "a") as shard:
        kernel = shard["kernel"][...]
        kernel[4] *= -1  # sample 9: a negative kernel, which only reading the sample shows
        shard["kernel"][...] = kernel
    _reseal(copy)
    refused = run_cli(["--verify", copy])
    assert refused.returncode == 2, describe(refused)
    assert "shard-00001.h5: sample 9: 'kernel' is negative" in refused.stderr
    assert "Traceback" not in refused.stderr
