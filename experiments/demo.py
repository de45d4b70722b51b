"""The five-minute demo: the bundled restorer at work, and the pipeline that makes one.

1. ``csb-generate`` writes training crops from eight built-in photographs and test crops from two
   others (``chelsea``, ``coffee``) that no training set contains;
2. ``diffdeblur evaluate`` scores the bundled model ``csb-universal`` against the blurred input
   and the Wiener baseline (given the true kernel, tuned on the training crops) on the test
   crops;
3. ``diffdeblur train --init csb-universal`` fine-tunes it on the new crops for a number of
   optimiser steps (steps, not minutes, so that a busy machine cannot shrink the run to nothing),
   and ``evaluate`` scores the result the same way;
4. ``diffdeblur restore`` restores, at full size, the held-out photograph ``chelsea`` blurred
   with a camera-shake kernel, and ``clock_motion``, a real motion-blurred photograph that
   scikit-image ships (no kernel is known for it, so it has no Wiener column), with the bundled
   model;
5. everything lands in ``--out``: ``README.md`` (the table and the pictures), ``demo.png``,
   the evaluation reports, the fine-tuning's loss curve, and the restored images.

    nox -s demo                                   # what the README shows (installs everything)
    python experiments/demo.py --out demo-report  # the same, in an environment that has it all
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from csb_generator import builtin_folder, read_image
from pipeline import (
    CSB_GENERATE,
    DIFFDEBLUR,
    blurred_photograph,
    photo_folders,
    picture,
    run_logged,
)
from pretrained import LPIPS_LOSS_WEIGHT

#: The bundled model's training options (experiments/pretrained.py), which a fine-tuning run
#: must repeat to build the same network; the learning rate is lower, for fine-tuning. With
#: LPIPS weights the run also adds, as the bundled model's second part did, the LPIPS term.
FINE_TUNE = [
    "--variant", "tiny", "--parametrisation", "bridge", "--loss", "charbonnier",
    "--batch-size", "8", "--lr", "2e-4", "--warmup-steps", "20", "--ema-decay", "0.99",
    "--epochs", "100000", "--samples-per-epoch", "1024", "--validate-every", "100000",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-report"), help="report folder")
    parser.add_argument("--work", type=Path, default=None, help="data and run [OUT/work]")
    parser.add_argument("--train-steps", type=int, default=200, help="fine-tuning steps")
    parser.add_argument("--model", default="csb-universal", help="the bundled model to show")
    parser.add_argument("--lpips-weights", default=None, help="LPIPS weights [--no-lpips]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="CI size: a few crops, 2 steps")
    args = parser.parse_args()
    if args.train_steps < 1:
        parser.error("--train-steps must be >= 1")
    train_count, test_count = (64, 4) if args.quick else (2000, 16)
    steps = 2 if args.quick else args.train_steps
    out, work = args.out, args.work or args.out / "work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    started = time.perf_counter()
    train_photos, test_photos = photo_folders(work)
    train_data, test_data, run = work / "train", work / "test", work / "run"
    for folder in (train_data, test_data, run):
        shutil.rmtree(folder, ignore_errors=True)
    generate = [CSB_GENERATE, "--mode", "random", "--psf-size", "32", "--no-preview"]
    seconds = {}
    seconds["generate"] = run_logged(
        [*generate, "--source", str(train_photos), "--count", str(train_count),
         "--out", str(train_data)],
        logs / "generate-train.log",
    )  # fmt: skip
    seconds["generate"] += run_logged(
        [*generate, "--source", str(test_photos), "--count", str(test_count), "--image-size", "96",
         "--out", str(test_data), "--seed", "1"],
        logs / "generate-test.log",
    )  # fmt: skip
    lpips = ["--lpips-weights", args.lpips_weights] if args.lpips_weights else ["--no-lpips"]
    perceptual = []
    if args.lpips_weights:
        perceptual = ["--lpips-loss-weight", str(LPIPS_LOSS_WEIGHT), *lpips]

    def evaluate(model: str, report: Path, title: str, wiener: list[str]) -> float:
        return run_logged(
            [DIFFDEBLUR, "evaluate", "--checkpoint", model, "--data", str(test_data), *wiener,
             "--device", "cpu", "--quiet", "--overwrite", "--title", title, "--out", str(report),
             *lpips],
            logs / f"evaluate-{report.name}.log",
        )  # fmt: skip

    bundled = out / "evaluation"
    seconds["evaluate"] = evaluate(
        args.model, bundled, f"Demo: {args.model} on held-out test crops",
        ["--wiener-tune", str(train_data), "--tune-limit", "64"],
    )  # fmt: skip
    tuning = json.loads((bundled / "metrics.json").read_text())["wiener_tuning"]
    balance = next(iter(tuning.values()))["balance"]
    seconds["fine-tune"] = run_logged(
        [DIFFDEBLUR, "train", "--data", str(train_data), "--out", str(run), "--init", args.model,
         *FINE_TUNE, *perceptual, "--max-steps", str(steps), "--seed", str(args.seed),
         "--device", "cpu", "--quiet"],
        logs / "train.log",
    )  # fmt: skip
    checkpoint = str(run / "checkpoint.pt")
    fine_tuned = out / "evaluation-fine-tuned"
    seconds["evaluate"] += evaluate(
        checkpoint, fine_tuned, f"Demo: {args.model} fine-tuned for {steps} steps",
        ["--wiener-balance", f"{balance!r}"],
    )  # fmt: skip
    blurred_path, sharp_path, kernel = blurred_photograph(work, args.seed)
    # scikit-image's real motion-blurred photograph, kept out of every training set.
    clock = builtin_folder() / "clock_motion.png"
    restored = out / "restored"
    seconds["restore"] = run_logged(
        [DIFFDEBLUR, "restore", "--model", args.model, str(blurred_path), str(clock),
         "--out", str(restored), "--device", "cpu", "--quiet", "--overwrite"],
        logs / "restore.log",
    )  # fmt: skip
    if (run / "loss.png").exists():  # written once the log has a record (not after 2 steps)
        shutil.copy(run / "loss.png", out / "loss.png")

    from diffdeblur.metrics import psnr
    from diffdeblur.wiener import wiener_deconvolve

    blurred = read_image(blurred_path)
    sharp = read_image(sharp_path)
    wiener = np.rint(wiener_deconvolve(blurred / 255.0, kernel, balance) * 255).astype(np.uint8)
    model = read_image(restored / blurred_path.name)

    def score(image: np.ndarray) -> str:
        import torch

        pair = [torch.from_numpy(a / 255.0).permute(2, 0, 1)[None] for a in (image, sharp)]
        return f"{float(psnr(*pair)):.2f} dB"

    picture(
        out / "demo.png",
        [
            (
                "held-out photo",
                [(f"blurred {score(blurred)}", blurred), (f"Wiener {score(wiener)}", wiener),
                 (f"{args.model} {score(model)}", model), ("sharp", sharp)],
            ),
            (
                "real motion blur",
                [("blurred (clock_motion)", read_image(clock)),
                 (args.model, read_image(restored / clock.name))],
            ),
        ],
    )  # fmt: skip
    seconds["total"] = time.perf_counter() - started
    rows = summary_rows(bundled, {"model": f"{args.model} (bundled)"})
    rows += summary_rows(fine_tuned, {"model": f"{args.model}, fine-tuned {steps} steps"})[2:]
    lines = [
        "# Demo report",
        "",
        f"The bundled model `{args.model}` (docs/models.md) on {test_count} test crops of "
        f"photographs that no training set contains, PSF 32; then the same model fine-tuned "
        f"for {steps} optimiser steps ({steps * 8} samples seen) on {train_count} crops made "
        f"here ({'Charbonnier and LPIPS' if perceptual else 'Charbonnier'} loss). Wiener is "
        "given each crop's true kernel. Wall time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        + ".",
        "",
        "| Method | PSNR ↑ (dB) | SSIM ↑ | LPIPS ↓ |",
        "|---|---|---|---|",
        *rows,
        "",
        "![demo](demo.png)",
        "",
        "![fine-tuning loss](loss.png)",
        "",
        "Details: [evaluation/report.md](evaluation/report.md), "
        "[evaluation-fine-tuned/report.md](evaluation-fine-tuned/report.md); restored images in "
        "`restored/`.",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    (out / "timing.json").write_text(json.dumps(seconds, indent=2) + "\n")
    print(f"wrote {out / 'README.md'} in {seconds['total']:.0f} s", flush=True)


def summary_rows(report: Path, labels: dict[str, str]) -> list[str]:
    """The rows of a report's summary (Blurred, Wiener, the model), the model relabelled."""
    names = {"blurred": "Blurred", "wiener": "Wiener, true kernel", **labels}
    rows = []
    for entry in json.loads((report / "metrics.json").read_text())["summary"]:
        lpips = "n/a" if entry["lpips"] != entry["lpips"] else f"{entry['lpips']:.4f}"
        rows.append(
            f"| {names.get(entry['method'], entry['method'])} | {entry['psnr']:.2f} | "
            f"{entry['ssim']:.4f} | {lpips} |"
        )
    return rows


if __name__ == "__main__":
    main()
