"""Border handling of the Wiener baseline: which padding restores real photographs best.

Each configuration is a real ``csb-generate`` dataset of the built-in photographs (64 px crops, as
the thesis's Tables 3 and 4), written by the command-line tool into a temporary folder. For every
border handling of :func:`diffdeblur.wiener.wiener_deconvolve`, the balance is tuned on the first
half of the samples (:func:`diffdeblur.wiener.tune_wiener_balance`, default grid) and the
restorations of the second half are scored with that balance: mean PSNR (data range 1) over the
whole crop, over its outer 8 px band and over its central 32 x 32 pixels. The "rotated kernel" row
deconvolves with the 180-degree-rotated kernel (the thesis's correlation question), the last row
adds ten boundary re-estimation passes (an option, not the baseline).

Restorations are deterministic: only library versions (printed) can change the numbers.

    python benchmarks/wiener_borders.py                 # 400 samples per dataset, ~11 min, 1 core
    python benchmarks/wiener_borders.py --count 100     # quicker
    python benchmarks/wiener_borders.py --json results/wiener_borders.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from csb_generator import open_dataset
from diffdeblur.metrics import psnr_from_mse
from diffdeblur.wiener import tune_wiener_balance, wiener_deconvolve

#: name -> csb-generate options (all: 64 px crops from the built-in photographs, RGB).
DATASETS = {
    "random, psf 16": "--mode random --psf-size 16 --seed 11".split(),
    "random, psf 32": "--mode random --psf-size 32 --seed 12".split(),
    "random, psf 64": "--mode random --psf-size 64 --seed 13".split(),
    "noisy, psf 32, sigma 1, lam 768000, T 1": (
        "--mode noisy --psf-size 32 --exposure 1 --sigma 1 --lam 768000 --seed 14".split()
    ),
    "noisy, psf 32, thesis defaults (T 2/8..1)": "--mode noisy --psf-size 32 --seed 15".split(),
}

#: label -> keyword arguments of wiener_deconvolve / tune_wiener_balance.
METHODS = {
    "none": {"border": "none"},
    "reflect": {"border": "reflect"},
    "symmetric": {"border": "symmetric"},
    "reflect-taper": {"border": "reflect-taper"},
    "symmetric-taper (default)": {"border": "symmetric-taper"},
    "symmetric-taper, pad 2K": {"border": "symmetric-taper", "pad": "2K"},
    "symmetric-taper, rotated kernel": {"border": "symmetric-taper", "rotate_kernel": True},
    "symmetric-taper + 10 boundary iterations": {
        "border": "symmetric-taper",
        "boundary_iterations": 10,
    },
}

BAND = 8  # px: the outer band scored separately
CENTRE = 32  # px: side of the central square scored separately


def _generate(options: list[str], count: int, out: Path) -> None:
    script = Path(sys.executable).with_name("csb-generate")
    command = str(script) if script.exists() else shutil.which("csb-generate")
    if command is None:
        sys.exit("csb-generate is not installed in this environment")
    arguments = ["--out", str(out), "--count", str(count), "--image-size", "64", "--no-preview"]
    subprocess.run([command, *options, *arguments], check=True, capture_output=True)


def _psnr(restored: np.ndarray, sharp: np.ndarray) -> float:
    return psnr_from_mse(float(np.mean((restored.astype(np.float64) - sharp) ** 2)))


def _scores(restored: np.ndarray, sharp: np.ndarray) -> tuple[float, float, float]:
    band = np.ones(sharp.shape[:2], dtype=bool)
    band[BAND:-BAND, BAND:-BAND] = False
    lo = (sharp.shape[0] - CENTRE) // 2
    centre = (slice(lo, lo + CENTRE), slice(lo, lo + CENTRE))
    return (
        _psnr(restored, sharp),
        _psnr(restored[band], sharp[band]),
        _psnr(restored[centre], sharp[centre]),
    )


def _evaluate(samples: list[dict], count: int) -> list[dict]:
    tuning_set, test_set = samples[: count // 2], samples[count // 2 :]
    rows = []
    for label, method in METHODS.items():
        kwargs = dict(method)
        if kwargs.get("pad") == "2K":
            kwargs["pad"] = 2 * samples[0]["kernel"].shape[0]
        started = time.perf_counter()
        tuning = tune_wiener_balance(tuning_set, **kwargs)
        scores = []
        for sample in test_set:
            sharp = sample["sharp"] / np.iinfo(sample["sharp"].dtype).max
            restored = wiener_deconvolve(
                sample["blurred"], sample["kernel"], tuning.balance, **kwargs
            )
            scores.append(_scores(restored, sharp))
        rows.append(
            {
                "method": label,
                "balance": tuning.balance,
                "at_edge": tuning.at_edge,
                "tuning_psnr": tuning.best_psnr,
                "tuning_curve": dict(zip(tuning.balances, tuning.mean_psnr, strict=True)),
                "psnr": float(np.mean([s[0] for s in scores])),
                "psnr_band": float(np.mean([s[1] for s in scores])),
                "psnr_centre": float(np.mean([s[2] for s in scores])),
                "seconds": time.perf_counter() - started,
            }
        )
    blurred = [_scores(s["blurred"], s["sharp"] / np.iinfo(s["sharp"].dtype).max) for s in test_set]
    rows.insert(
        0,
        {
            "method": "blurred input",
            "psnr": float(np.mean([s[0] for s in blurred])),
            "psnr_band": float(np.mean([s[1] for s in blurred])),
            "psnr_centre": float(np.mean([s[2] for s in blurred])),
        },
    )
    return rows


def _table(name: str, rows: list[dict], count: int) -> str:
    lines = [
        f"#### {name} ({count // 2} tuning + {count - count // 2} test samples)",
        "",
        "| border | balance | PSNR | outer 8 px | centre 32 px |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        balance = (
            f"{row['balance']:.2g}{' (edge)' if row['at_edge'] else ''}" if "balance" in row else ""
        )
        lines.append(
            f"| {row['method']} | {balance} | {row['psnr']:.2f} | {row['psnr_band']:.2f} "
            f"| {row['psnr_centre']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="samples per dataset (half tune)")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    arguments = parser.parse_args()
    libraries = {
        name: version(name) for name in ("numpy", "scipy", "scikit-image", "csb-generator")
    }
    print("Versions:", ", ".join(f"{name} {value}" for name, value in libraries.items()), "\n")
    results = {}
    with tempfile.TemporaryDirectory(prefix="wiener-borders-") as workdir:
        for index, (name, options) in enumerate(DATASETS.items()):
            folder = Path(workdir) / f"dataset-{index}"
            _generate(options, arguments.count, folder)
            dataset = open_dataset(folder)
            samples = [dataset[i] for i in range(len(dataset))]
            dataset.close()
            rows = _evaluate(samples, arguments.count)
            results[name] = {"options": options, "rows": rows}
            print(_table(name, rows, arguments.count), "\n", flush=True)
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"count": arguments.count, "versions": libraries, "datasets": results}
        arguments.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
