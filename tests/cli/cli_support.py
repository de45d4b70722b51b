"""Helpers shared by the command-line tests: running ``csb-generate`` and reading its output.

Everything here reads datasets with plain ``h5py`` and ``json`` (never ``csb_generator``'s
reader), so a format check cannot pass because the writer and the reader share a mistake.
Kept importable by name (``conftest.py`` puts this folder on ``sys.path``) so that functions
defined here can be pickled into ``spawn`` worker processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from console_scripts import console_script

REPO = Path(__file__).resolve().parents[2]

#: Options that keep a run tiny: crops of 32 px, kernels of 16 px, 200-sample trajectories.
TINY = ("--image-size", "32", "--psf-size", "16", "--num-samples", "200")

#: Per-sample datasets of a shard (docs/format.md), without the optional ``trajectory``.
SAMPLE_FIELDS = (
    "sharp",
    "blurred",
    "kernel",
    "exposure",
    "lam",
    "sigma",
    "length",
    "anxiety",
    "centripetal",
    "gaussian",
    "freq_big_shakes",
    "index",
    "source",
    "crop",
    "padded",
)
TRAJECTORY_PARAMETERS = ("length", "anxiety", "centripetal", "gaussian", "freq_big_shakes")

#: A deliberately asymmetric kernel for ``--kernel FILE`` (not normalised: the tool must do it).
KERNEL_FILE_ARRAY = np.array(
    [[0, 1, 0], [1, 2, 0], [0, 3, 1], [0, 1, 0], [2, 0, 0]], dtype=np.float64
)


def trajectory_file_array() -> np.ndarray:
    """A gently curved path of 200 samples (complex: col + 1j*row), for ``--trajectory FILE``."""
    t = np.linspace(0.0, 1.0, 200)
    return (6.0 * t + 1j * 2.0 * np.sin(3.0 * t)).astype(np.complex128)


CLI = console_script("csb-generate")


def run_cli(
    args: Sequence[Any],
    *,
    cwd: str | Path | None = None,
    timeout: float = 300,
    preexec_fn: Callable[[], None] | None = None,
    executable: str | Path | None = None,
) -> subprocess.CompletedProcess:
    """Run ``csb-generate ARGS`` in a subprocess and capture its output as text."""
    command = [str(executable or CLI), *(str(arg) for arg in args)]
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
        check=False,
    )


def run_many(
    commands: Iterable[Sequence[Any]], **options: Any
) -> list[subprocess.CompletedProcess]:
    """Run several independent ``csb-generate`` commands concurrently; results in order."""
    commands = list(commands)
    workers = max(2, min(4, os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda args: run_cli(args, **options), commands))


def describe(result: subprocess.CompletedProcess) -> str:
    """A failed run, for an assertion message: the command, exit code and output tails."""
    command = " ".join(str(part) for part in result.args)
    return (
        f"\n$ {command}\nexit code {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
    )


def assert_ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, describe(result)
    return result


def assert_usage_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2, a message containing every needle, and no Python traceback."""
    assert result.returncode == 2, describe(result)
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in the message" + describe(result)
    assert "Traceback" not in result.stderr, describe(result)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def shard_paths(folder: str | Path) -> list[Path]:
    """The files named like final shards in a folder, sorted."""
    return sorted(Path(folder).glob("shard-*.h5"))


def read_arrays(folder: str | Path) -> dict[str, np.ndarray]:
    """Every per-sample dataset of a dataset folder, concatenated in the manifest's shard order."""
    folder = Path(folder)
    manifest = read_json(folder / "manifest.json")
    parts: dict[str, list[np.ndarray]] = {}
    for entry in manifest["shards"]:
        with h5py.File(folder / entry["file"], "r") as shard:
            for name, dataset in shard.items():
                parts.setdefault(name, []).append(dataset[()])
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def files_bytes(folder: str | Path, patterns: Sequence[str]) -> dict[str, bytes]:
    """Relative path -> content of the files matching any of the glob patterns."""
    folder = Path(folder)
    found = {path for pattern in patterns for path in folder.glob(pattern) if path.is_file()}
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(found)}


DATASET_FILES = ("manifest.json", "trajectory.npy", "shard-*.h5", "T-*/manifest.json", "T-*/*.h5")


def dataset_bytes(folder: str | Path) -> dict[str, bytes]:
    """The files that make a dataset (shards, manifests, shared trajectory), by relative path."""
    return files_bytes(folder, DATASET_FILES)


def explain_shard_difference(first: Path, second: Path) -> str:
    """What differs between two shard files: attributes, and datasets sample by sample."""
    lines = []
    with h5py.File(first, "r") as a, h5py.File(second, "r") as b:
        attrs_a, attrs_b = dict(a.attrs), dict(b.attrs)
        for key in sorted(set(attrs_a) | set(attrs_b)):
            if str(attrs_a.get(key)) != str(attrs_b.get(key)):
                lines.append(f"attribute {key}: {attrs_a.get(key)!r} != {attrs_b.get(key)!r}")
        for name in sorted(set(a) | set(b)):
            if name not in a or name not in b:
                lines.append(f"dataset {name} is in one file only")
                continue
            x, y = a[name][()], b[name][()]
            if x.shape != y.shape or x.dtype != y.dtype:
                lines.append(f"dataset {name}: {x.dtype}{x.shape} != {y.dtype}{y.shape}")
                continue
            same = (x == y) | ((x != x) & (y != y)) if x.dtype.kind in "fc" else x == y
            rows = np.nonzero(~same.reshape(len(x), -1).all(axis=1))[0]
            if len(rows):
                diff = np.abs(x.astype(np.complex128) - y.astype(np.complex128))
                lines.append(
                    f"dataset {name}: samples {rows[:10].tolist()} differ "
                    f"(max |difference| {np.nanmax(diff):.3g})"
                )
    return "; ".join(lines) or "same attributes and data, different bytes: " + _where(first, second)


def _where(first: Path, second: Path) -> str:
    """Where in the file two shards with equal contents differ (which stored chunk, if any)."""
    a, b = first.read_bytes(), second.read_bytes()
    offsets = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y]
    if len(a) != len(b) or not offsets:
        return f"file sizes {len(a)} and {len(b)}"
    with h5py.File(first, "r") as shard:
        for name, dataset in shard.items():
            for number in range(dataset.id.get_num_chunks()):
                chunk = dataset.id.get_chunk_info(number)
                if chunk.byte_offset <= offsets[0] < chunk.byte_offset + chunk.size:
                    return (
                        f"{len(offsets)} bytes from offset {offsets[0]}, inside stored chunk "
                        f"{number} of {name!r} (filter {dataset.compression}): the compressed "
                        "bytes differ although the decompressed data are equal"
                    )
    return f"{len(offsets)} bytes from offset {offsets[0]}, outside the stored chunks"


def explain_manifest_difference(first: bytes, second: bytes) -> str:
    a, b = json.loads(first), json.loads(second)
    keys = sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))
    lines = [f"fields {keys} differ"]
    if "shards" in keys:
        shards = [x["file"] for x, y in zip(a["shards"], b["shards"], strict=False) if x != y]
        lines.append(f"shard entries {shards} differ")
    return "; ".join(lines)


def assert_same_dataset_files(expected: str | Path, actual: str | Path) -> None:
    """The dataset files of two folders are byte-identical; on failure, say what differs."""
    first, second = dataset_bytes(expected), dataset_bytes(actual)
    assert sorted(second) == sorted(first)
    # Shards first: a manifest differs because a shard's hash does.
    for name, content in sorted(first.items(), key=lambda item: not item[0].endswith(".h5")):
        if second[name] == content:
            continue
        if name.endswith(".h5"):
            detail = explain_shard_difference(Path(expected) / name, Path(actual) / name)
        elif name.endswith(".json"):
            detail = explain_manifest_difference(content, second[name])
        else:
            detail = "different bytes"
        raise AssertionError(f"{name} differs between {expected} and {actual}: {detail}")


def assert_same_samples(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> None:
    """Field by field, sample by sample equality (NaN equal to NaN)."""
    assert sorted(first) == sorted(second)
    for name in first:
        a, b = first[name], second[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        same = np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        assert same, f"field {name!r} differs"


def write_png16(path: str | Path, image: np.ndarray) -> Path:
    """A 16-bit grey or RGB PNG (Pillow cannot write 16-bit colour PNG)."""
    image = np.asarray(image, dtype=np.uint16)
    if image.ndim == 2:
        image = image[:, :, None]
    height, width, channels = image.shape
    colour = {1: 0, 3: 2}[channels]
    rows = image.astype(">u2").reshape(height, width * channels).view(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    path = Path(path)
    path.write_bytes(data)
    return path


# Reading samples in worker processes (tests/cli/test_reader.py). Module-level, so that ``spawn``
# workers can unpickle them by name; INHERITED is set by the parent before it forks.
INHERITED: Any = None


def read_inherited(index: int) -> dict[str, np.ndarray]:
    """Sample ``index`` of the dataset object the forked worker inherited from its parent."""
    return INHERITED[index]


def read_with_pid(dataset: Any, index: int) -> tuple[int, dict[str, np.ndarray]]:
    return os.getpid(), dataset[index]
