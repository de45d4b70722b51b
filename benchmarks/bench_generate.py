"""Shard-writing throughput of ``csb-generate``: samples/s per mode, 1 and 2 workers.

Each configuration runs the real command line in a fresh process under ``/usr/bin/time -v`` (so
start-up, numba cache loading and the worker pool are counted, as a user sees them) into a fresh
temporary folder, and is repeated; the best wall time is reported with the output size per
sample. Sizes are the thesis's: 64 px crops, 32 px kernels, float32 blurred images, lzf.

    python benchmarks/bench_generate.py                  # 2000 samples per run (tsweep: x6)
    python benchmarks/bench_generate.py --count 500 --repeat 1 --json results/generate.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = ("fixed", "random", "noisy", "tsweep")


def _command() -> list[str]:
    script = Path(sys.executable).with_name("csb-generate")
    found = str(script) if script.exists() else shutil.which("csb-generate")
    if found is None:
        sys.exit("csb-generate is not installed in this environment")
    return [found]


def _run(mode: str, workers: int, count: int, out: Path) -> dict[str, float]:
    command = [
        "/usr/bin/time",
        "-v",
        *_command(),
        "--mode",
        mode,
        "--out",
        str(out),
        "--count",
        str(count),
        "--workers",
        str(workers),
        "--no-preview",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    hours, minutes, seconds = (float(group or 0) for group in wall.groups())
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)[1])
    samples = count * (6 if mode == "tsweep" else 1)
    size = sum(path.stat().st_size for path in out.rglob("shard-*.h5"))
    return {
        "seconds": hours * 3600 + minutes * 60 + seconds,
        "samples": samples,
        "bytes_per_sample": size / samples,
        "peak_rss_mib": peak_kib / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="samples per run (tsweep: per T)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per configuration; best kept")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    rows = []
    for mode in MODES:
        count = max(1, args.count // 6) if mode == "tsweep" else args.count
        for workers in (1, 2):
            best = None
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as folder:
                    run = _run(mode, workers, count, Path(folder) / "out")
                if best is None or run["seconds"] < best["seconds"]:
                    best = run
            rows.append({"mode": mode, "workers": workers, **best})
            print(
                f"{mode:7s} workers={workers}: {best['samples'] / best['seconds']:7.0f} samples/s",
                file=sys.stderr,
            )
    print("| mode | workers | samples | wall s | samples/s | KiB/sample | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['mode']} | {row['workers']} | {row['samples']} | {row['seconds']:.2f} | "
            f"{row['samples'] / row['seconds']:.0f} | {row['bytes_per_sample'] / 1024:.1f} | "
            f"{row['peak_rss_mib']:.0f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        machine = {"python": platform.python_version(), "machine": platform.machine()}
        args.json.write_text(json.dumps({"machine": machine, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
