"""Which parametrisation learns fastest on a CPU? sharp vs residual vs refine vs regression.

The same data, network size, batch and number of optimiser steps for each; the wall time of each
training is measured and reported beside the result, since the steps cost differently (``refine``
runs two U-Nets).

Data: ``csb-generate --mode random --psf-size 32`` (the thesis's Table 3 setting: 64 px crops,
camera-shake kernels up to 16 px long, no noise) from the built-in photographs, with two
photographs held out for testing, so the test crops come from images the training never saw.

Evaluation: PSNR (dB, [0, 1] scale) of the restored 64 px test crops against their sharp crops,
restored with the EMA weights (diffusion: DDIM, ``--ddim-steps`` steps, eta 0), beside the PSNR of
the blurred input.

    python experiments/parametrisations.py --steps 600 --work /tmp/param-work \\
        --out experiments/results/parametrisations
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from csb_generator import open_dataset
from diffdeblur import load_restorer
from diffdeblur.metrics import psnr
from diffdeblur.plots import save_restoration_grid
from pipeline import CSB_GENERATE, DIFFDEBLUR, photo_folders, run_logged

PARAMETRISATIONS = ("sharp", "residual", "refine", "regression")


def _pairs(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = open_dataset(folder)
    samples = [dataset[i] for i in range(len(dataset))]
    blurred = torch.from_numpy(np.stack([s["blurred"] for s in samples])).permute(0, 3, 1, 2)
    sharp = torch.from_numpy(np.stack([s["sharp"] for s in samples])).permute(0, 3, 1, 2)
    return blurred.float(), sharp.float() / 255.0


def _train(args: argparse.Namespace, parametrisation: str, data: Path, run: Path) -> float:
    """Train one model from scratch; returns (and records beside it) its wall time in seconds."""
    shutil.rmtree(run, ignore_errors=True)
    command = [
        DIFFDEBLUR, "train", "--data", str(data), "--out", str(run),
        "--variant", args.variant, "--parametrisation", parametrisation,
        "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--warmup-steps", "100",
        "--ema-decay", "0.999", "--epochs", "1",
        "--samples-per-epoch", str(args.steps * args.batch_size),
        "--checkpoint-every", str(args.steps), "--validate-every", str(args.steps),
        "--quiet", "--device", "cpu",
    ]  # fmt: skip
    seconds = run_logged(command, args.work / f"train-{parametrisation}.log")
    (run / "timing.json").write_text(json.dumps({"train_seconds": seconds}) + "\n")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps per model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--train-count", type=int, default=4000)
    parser.add_argument("--test-count", type=int, default=48)
    parser.add_argument("--ddim-steps", type=int, default=20)
    parser.add_argument("--only", nargs="*", default=PARAMETRISATIONS)
    parser.add_argument(
        "--reuse", action="store_true", help="evaluate existing runs in --work, train the others"
    )
    parser.add_argument("--work", type=Path, required=True, help="datasets and runs (large)")
    parser.add_argument("--out", type=Path, required=True, help="results: tables and pictures")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    train_photos, test_photos = photo_folders(args.work)
    generate = [CSB_GENERATE, "--mode", "random", "--psf-size", "32", "--no-preview"]
    train_data, test_data = args.work / "train", args.work / "test"
    run_logged(
        [
            *generate,
            "--source",
            str(train_photos),
            "--count",
            str(args.train_count),
            "--out",
            str(train_data),
            "--seed",
            "0",
        ],
        args.work / "generate-train.log",
    )
    run_logged(
        [
            *generate,
            "--source",
            str(test_photos),
            "--count",
            str(args.test_count),
            "--out",
            str(test_data),
            "--seed",
            "1",
            "--shard-size",
            str(args.test_count),
        ],
        args.work / "generate-test.log",
    )
    blurred, sharp = _pairs(test_data)
    rows = [{"model": "blurred input", "psnr": float(psnr(blurred, sharp).mean())}]
    pictures = [blurred[:4] * 2 - 1]
    for parametrisation in args.only:
        run = args.work / "runs" / parametrisation
        timing = run / "timing.json"
        if args.reuse and timing.is_file() and (run / "checkpoint.pt").is_file():
            seconds = json.loads(timing.read_text())["train_seconds"]
        else:
            seconds = _train(args, parametrisation, train_data, run)
        model = load_restorer(run / "checkpoint.pt")
        started = time.perf_counter()
        restored = model.restore(
            blurred * 2 - 1,
            sampler="ddim",
            steps=args.ddim_steps,
            generator=torch.Generator().manual_seed(0),
        )
        restore_seconds = time.perf_counter() - started
        scores = psnr((restored + 1) / 2, sharp)
        rows.append(
            {
                "model": parametrisation,
                "psnr": float(scores.mean()),
                "psnr_std": float(scores.std()),
                "train_seconds": seconds,
                "steps": args.steps,
                "samples_per_s": args.steps * args.batch_size / seconds,
                "restore_seconds_per_image": restore_seconds / len(blurred),
            }
        )
        pictures.append(restored[:4])
        print(rows[-1], flush=True)
    pictures.append(sharp[:4] * 2 - 1)
    save_restoration_grid(
        args.out / "examples.png",
        *pictures,
        labels=("blurred", *args.only, "sharp"),
        title=f"{args.variant} U-Net, {args.steps} steps x {args.batch_size}; held-out photos",
    )
    (args.out / "results.json").write_text(
        json.dumps(
            {"settings": vars(args) | {"work": str(args.work), "out": str(args.out)}, "rows": rows},
            indent=2,
            default=str,
        )
        + "\n"
    )
    lines = [
        "| model | PSNR dB (mean ± sd) | train s | samples/s | restore s/image |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if "train_seconds" not in row:
            lines.append(f"| {row['model']} | {row['psnr']:.2f} | | | |")
            continue
        lines.append(
            f"| {row['model']} | {row['psnr']:.2f} ± {row['psnr_std']:.2f} | "
            f"{row['train_seconds']:.0f} | {row['samples_per_s']:.1f} | "
            f"{row['restore_seconds_per_image']:.3f} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
