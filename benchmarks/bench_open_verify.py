"""What verifying a dataset on open costs, against reading it once.

``open_dataset(path)`` checks each shard's SHA-256 against the manifest (once per process) and
every dataset's layout before any read; ``verify=False`` skips the hash. This script writes a
``csb-generate`` dataset (``--count``, default 100,000 samples of the default 64 px random mode)
or takes ``--data``, and times, each in a fresh process so that no hash is cached:

- ``open, verify``: ``open_dataset(path)``;
- ``open, verify=False``: ``open_dataset(path, verify=False)``;
- ``read, bulk``: every shard's datasets read whole with h5py (the fastest full read);
- ``read, per sample``: ``dataset[i]`` for every sample (what a training epoch does).

The files are in the page cache for every measurement (the dataset was just written or read;
the machine has the memory to hold it), so these are the costs of the CPU work, not of a disk.
Each measurement is the best of ``--repeat`` runs (the per-sample read: one run); wall time by
``time.perf_counter``.

    python benchmarks/bench_open_verify.py --json benchmarks/results/open_verify.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

MEASUREMENTS = ("open, verify", "open, verify=False", "read, bulk", "read, per sample")


def measure(name: str, path: Path) -> float:
    """Seconds that ``name`` takes on the dataset at ``path``, in this process."""
    import h5py
    from csb_generator import open_dataset

    started = time.perf_counter()
    if name == "open, verify":
        open_dataset(path)
    elif name == "open, verify=False":
        open_dataset(path, verify=False)
    elif name == "read, bulk":
        for shard in sorted(path.glob("shard-*.h5")):
            with h5py.File(shard, "r") as file:
                for dataset in file.values():
                    if isinstance(dataset, h5py.Dataset):
                        dataset[...]
    else:
        dataset = open_dataset(path, verify=False)
        for index in range(len(dataset)):
            dataset[index]
    return time.perf_counter() - started


def _in_fresh_process(name: str, path: Path) -> float:
    command = [sys.executable, __file__, "--measure", name, "--data", str(path)]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="samples to generate")
    parser.add_argument("--data", type=Path, help="an existing dataset instead")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--measure", choices=MEASUREMENTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(measure(args.measure, args.data))
        return
    with tempfile.TemporaryDirectory(prefix="csb-verify-") as scratch:
        path = args.data
        if path is None:
            path = Path(scratch) / "data"
            script = Path(sys.executable).with_name("csb-generate")
            found = str(script) if script.exists() else shutil.which("csb-generate")
            command = [found, "--mode", "random", "--count", str(args.count), "--workers", "2",
                       "--no-preview", "--out", str(path)]  # fmt: skip
            subprocess.run(command, check=True, capture_output=True)
        size = sum(shard.stat().st_size for shard in path.glob("shard-*.h5"))
        _in_fresh_process("read, bulk", path)  # into the page cache
        # Reading sample by sample takes minutes at this size: once is enough to compare.
        seconds = {
            name: min(
                _in_fresh_process(name, path)
                for _ in range(1 if name == "read, per sample" else args.repeat)
            )
            for name in MEASUREMENTS
        }
    results = {
        "machine": describe(),
        "count": args.count if args.data is None else None,
        "bytes": size,
        "seconds": seconds,
        "verify_over_bulk_read": seconds["open, verify"] / seconds["read, bulk"],
        "verify_over_sample_read": seconds["open, verify"] / seconds["read, per sample"],
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
