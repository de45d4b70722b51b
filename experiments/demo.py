"""The five-minute demo: data, training, restoration and a report, from the built-in photographs.

1. ``csb-generate`` writes training crops from eight built-in photographs and test crops from two
   others (``chelsea``, ``coffee``) that the training never sees;
2. ``diffdeblur train`` trains the tiny network for a wall-clock budget;
3. ``diffdeblur evaluate`` scores it against the blurred input and the Wiener baseline (tuned on
   the training crops) on the test crops;
4. ``diffdeblur restore`` restores, at full size, the held-out photograph ``chelsea`` blurred
   with a camera-shake kernel, and ``clock_motion``, a real motion-blurred photograph that
   scikit-image ships (no kernel is known for it, so it has no Wiener column);
5. everything lands in ``--out``: ``README.md`` (the table and the pictures), ``demo.png``,
   the evaluation report, the loss curve, and the restored images.

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
from csb_generator import degrade, random_psf
from csb_generator.images import BUILTIN_PHOTOGRAPHS, builtin_folder, read_image
from pipeline import CSB_GENERATE, DIFFDEBLUR, photo_folders, run_logged


def _blurred_photograph(work: Path, seed: int) -> tuple[Path, Path, np.ndarray]:
    """``chelsea`` blurred by a camera-shake kernel: the blurred file, the sharp one, the kernel."""
    from diffdeblur.image_files import write_image

    sharp = read_image(BUILTIN_PHOTOGRAPHS["chelsea"].path)
    kernel = random_psf(np.random.default_rng(seed), 32).kernel
    blurred = degrade(sharp, kernel)
    blurred_path, sharp_path = work / "chelsea-blurred.png", work / "chelsea-sharp.png"
    write_image(blurred_path, np.rint(blurred * 255).astype(np.uint8))
    write_image(sharp_path, sharp)
    return blurred_path, sharp_path, kernel


def _picture(out: Path, rows: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(images) for _, images in rows)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(3.2 * columns, 2.6 * len(rows)), dpi=110, squeeze=False
    )
    for axis in axes.ravel():
        axis.axis("off")
    for row, (name, images) in enumerate(rows):
        for column, (label, image) in enumerate(images):
            shown = image[..., 0] if image.shape[-1] == 1 else image
            # As the file is: a grey image is drawn on its dtype's full scale, not stretched to
            # its own darkest and brightest pixels (imshow's default).
            top = np.iinfo(shown.dtype).max if np.issubdtype(shown.dtype, np.integer) else 1.0
            axes[row, column].imshow(
                shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=top
            )
            axes[row, column].set_title(f"{name}: {label}" if column == 0 else label, fontsize=8)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-report"), help="report folder")
    parser.add_argument("--work", type=Path, default=None, help="data and run [OUT/work]")
    parser.add_argument("--train-minutes", type=float, default=2.5, help="training budget")
    parser.add_argument("--parametrisation", default="regression")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps (diffusion models)")
    parser.add_argument("--lpips-weights", default=None, help="LPIPS weights [--no-lpips]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="CI size: a few crops, 2 steps")
    args = parser.parse_args()
    train_count, test_count = (64, 4) if args.quick else (2000, 16)
    limit = ["--max-steps", "2"] if args.quick else []
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
        [
            *generate,
            "--source",
            str(train_photos),
            "--count",
            str(train_count),
            "--out",
            str(train_data),
        ],
        logs / "generate-train.log",
    )
    seconds["generate"] += run_logged(
        [*generate, "--source", str(test_photos), "--count", str(test_count), "--image-size", "96",
         "--out", str(test_data), "--seed", "1"],
        logs / "generate-test.log",
    )  # fmt: skip
    seconds["train"] = run_logged(
        [DIFFDEBLUR, "train", "--data", str(train_data), "--out", str(run),
         "--variant", "tiny", "--parametrisation", args.parametrisation, "--batch-size", "8",
         "--lr", "2e-4", "--warmup-steps", "100", "--ema-decay", "0.999", "--epochs", "1000",
         "--samples-per-epoch", "1024", "--budget-minutes", str(args.train_minutes),
         "--validate-every", "100000", "--seed", str(args.seed), "--device", "cpu", "--quiet",
         *limit],
        logs / "train.log",
    )  # fmt: skip
    checkpoint = str(run / "checkpoint.pt")
    lpips = ["--lpips-weights", args.lpips_weights] if args.lpips_weights else ["--no-lpips"]
    evaluation = out / "evaluation"
    seconds["evaluate"] = run_logged(
        [DIFFDEBLUR, "evaluate", "--checkpoint", checkpoint, "--data", str(test_data),
         "--wiener-tune", str(train_data), "--tune-limit", "64", "--steps", str(args.steps),
         "--device", "cpu", "--quiet", "--overwrite", "--title", "Demo: held-out test crops",
         "--out", str(evaluation), *lpips],
        logs / "evaluate.log",
    )  # fmt: skip
    blurred_path, sharp_path, kernel = _blurred_photograph(work, args.seed)
    # scikit-image's real motion-blurred photograph, kept out of every training set.
    clock = builtin_folder() / "clock_motion.png"
    restored = out / "restored"
    seconds["restore"] = run_logged(
        [DIFFDEBLUR, "restore", "--checkpoint", checkpoint, str(blurred_path),
         str(clock), "--out", str(restored), "--steps", str(args.steps), "--device", "cpu",
         "--quiet", "--overwrite"],
        logs / "restore.log",
    )  # fmt: skip
    if (run / "loss.png").exists():  # written once the log has a record (not after 2 steps)
        shutil.copy(run / "loss.png", out / "loss.png")

    from diffdeblur.metrics import psnr
    from diffdeblur.wiener import wiener_deconvolve

    tuning = json.loads((evaluation / "metrics.json").read_text())["wiener_tuning"]
    balance = next(iter(tuning.values()))["balance"]
    blurred = read_image(blurred_path)
    sharp = read_image(sharp_path)
    wiener = np.rint(wiener_deconvolve(blurred / 255.0, kernel, balance) * 255).astype(np.uint8)
    model = read_image(restored / blurred_path.name)

    def score(image: np.ndarray) -> str:
        import torch

        pair = [torch.from_numpy(a / 255.0).permute(2, 0, 1)[None] for a in (image, sharp)]
        return f"{float(psnr(*pair)):.2f} dB"

    _picture(
        out / "demo.png",
        [
            (
                "held-out photo",
                [(f"blurred {score(blurred)}", blurred), (f"Wiener {score(wiener)}", wiener),
                 (f"model {score(model)}", model), ("sharp", sharp)],
            ),
            (
                "real motion blur",
                [("blurred (clock_motion)", read_image(clock)),
                 ("model", read_image(restored / clock.name))],
            ),
        ],
    )  # fmt: skip
    seconds["total"] = time.perf_counter() - started
    table = (evaluation / "report.md").read_text().split("\n\n")
    summary = next(block for block in table if block.startswith("| Method"))
    lines = [
        "# Demo report",
        "",
        f"Tiny U-Net, parametrisation `{args.parametrisation}`, trained {args.train_minutes} min "
        f"on CPU; test crops from photographs the training never saw. Wall time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        + ".",
        "",
        summary,
        "",
        "![demo](demo.png)",
        "",
        "![loss](loss.png)",
        "",
        "Details: [evaluation/report.md](evaluation/report.md); restored images in `restored/`.",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    (out / "timing.json").write_text(json.dumps(seconds, indent=2) + "\n")
    print(f"wrote {out / 'README.md'} in {seconds['total']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
