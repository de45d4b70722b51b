"""Pairs of ``csb-generate`` runs started together on one folder, with different seeds.

The acceptance of the issue "untrusted data and damaged files": over many pairs, never two
exit-0 runs for one folder, and the folder always holds exactly one complete, valid dataset,
that of the run which reported success. Each pair starts two real ``csb-generate`` processes at
once on a fresh folder (seeds 1 and 2, small datasets from the built-in photographs, one thread
each); the script records both exit codes and the loser's message, then checks the folder with
``verify_dataset`` (every shard's SHA-256 and every sample) and that its manifest's seed is the
winner's. Not a timing benchmark: it counts outcomes.

    python benchmarks/concurrent_generate.py                     # 20 pairs
    python benchmarks/concurrent_generate.py --pairs 50 --json benchmarks/results/concurrent.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from csb_generator import verify_dataset

#: One dataset of 8 samples in 4 shards: small enough for many pairs, several shards to race on.
GENERATE = ["--mode", "random", "--count", "8", "--shard-size", "2", "--image-size", "32",
            "--psf-size", "16", "--num-samples", "200", "--no-preview"]  # fmt: skip


def _csb_generate() -> str:
    script = Path(sys.executable).with_name("csb-generate")
    found = str(script) if script.exists() else shutil.which("csb-generate")
    if found is None:
        sys.exit("csb-generate is not installed in this environment")
    return found


def run_pair(out: Path) -> dict:
    """Start seeds 1 and 2 together on ``out``; their codes, the loser's message and the
    folder's state afterwards."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            [_csb_generate(), *GENERATE, "--seed", str(seed), "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for seed in (1, 2)
    ]
    outcomes = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    for run in runs:
        run.stderr.close()
    codes = [code for code, _ in outcomes]
    last_lines = [message.strip().splitlines()[-1:] for _, message in outcomes]
    record = {"codes": codes, "messages": last_lines}
    try:
        record["samples"] = verify_dataset(out)["samples"]
        record["seed"] = json.loads((out / "manifest.json").read_text())["seed"]
    except Exception as error:  # any failure to verify is the outcome being counted
        record["samples"], record["seed"], record["error"] = 0, None, str(error)
    winners = [seed for seed, code in zip((1, 2), codes, strict=True) if code == 0]
    record["sound"] = len(winners) == 1 and record["seed"] == winners[0] and record["samples"] == 8
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20, help="pairs to run (20)")
    parser.add_argument("--json", type=Path, help="also write every record and the tally here")
    args = parser.parse_args()
    records = []
    with tempfile.TemporaryDirectory(prefix="csb-pairs-") as root:
        for pair in range(args.pairs):
            records.append(run_pair(Path(root) / f"pair-{pair:03d}"))
            print(f"pair {pair + 1}/{args.pairs}: {records[-1]}", flush=True)
    tally = Counter(tuple(sorted(record["codes"])) for record in records)
    summary = {
        "pairs": args.pairs,
        "exit_codes": {f"{a}+{b}": count for (a, b), count in sorted(tally.items())},
        "two_successes": sum(record["codes"] == [0, 0] for record in records),
        "sound_folders": sum(record["sound"] for record in records),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "records": records}, indent=2) + "\n")
    if summary["sound_folders"] != args.pairs:
        sys.exit(1)


if __name__ == "__main__":
    main()
