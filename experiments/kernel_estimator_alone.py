"""Does the blind kernel estimator get better with more training samples? Train it alone.

The blind deconvolution row (``parametrisations.py --rows deconvolve-estimated``) trains the
kernel estimator together with the refiner, at the refiner's pace: about 3,000 samples in 10
minutes. This script trains the same estimator (``KernelEstimator`` of
:mod:`diffdeblur.kernel_estimation`, default size, seed 0) with nothing else: Adam at 1e-3,
gradient norm clipped at 1, the kernel loss plus the re-blur loss as in the restorer, on random
patches of a ``csb-generate`` training set. At fixed wall-clock marks it scores the kernel
error (squared error of unit-sum kernels, :func:`diffdeblur.kernel_estimation.kernel_loss`) of
its estimates on the test crops, from the whole crops and from their central 64 px. If the
error keeps falling, more samples (a warm-up of the estimator alone) would help the blind row;
if it levels off, the estimator's design is the limit.

    python experiments/kernel_estimator_alone.py --data /tmp/param-work/train \\
        --test /tmp/param-work/test --minutes 4 --out experiments/results/kernel-estimator-alone

Writes ``results.json`` (every mark) and ``results.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from csb_generator import open_dataset
from diffdeblur.data import open_training_data
from diffdeblur.deconvolution import odd_kernel
from diffdeblur.kernel_estimation import KernelEstimator, kernel_loss, reblur_loss

#: Wall-clock marks, minutes, at which the estimates are scored.
MARKS = (0.5, 1, 2, 4, 8, 16, 32)


def _test_crops(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Blurred test crops in [-1, 1], (N, C, H, W), and their kernels on the odd grid."""
    test = open_dataset(folder)
    samples = [test[index] for index in range(len(test))]
    blurred = torch.stack([torch.from_numpy(s["blurred"]).permute(2, 0, 1) for s in samples])
    kernels = torch.stack([torch.from_numpy(odd_kernel(s["kernel"])) for s in samples])
    return blurred.float() * 2 - 1, kernels


@torch.no_grad()
def _errors(estimator: KernelEstimator, blurred: torch.Tensor, true: torch.Tensor) -> dict:
    """Kernel error from the whole crops and from their central 64 px (or all of a smaller
    crop)."""
    height, width = blurred.shape[-2:]
    top, left = max((height - 64) // 2, 0), max((width - 64) // 2, 0)
    central = blurred[..., top : top + 64, left : left + 64]
    return {
        "kernel_error_whole": float(kernel_loss(estimator(blurred), true)),
        "kernel_error_central": float(kernel_loss(estimator(central), true)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="csb-generate training set")
    parser.add_argument("--test", type=Path, required=True, help="csb-generate test crops")
    parser.add_argument("--minutes", type=float, default=4.0, help="wall-clock budget")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="default: all available")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    data = open_training_data(args.data, args.patch_size, seed=0)
    blurred_test, true_test = _test_crops(args.test)
    estimator = KernelEstimator(data.kernel_size, generator=torch.Generator().manual_seed(0))
    optimiser = torch.optim.Adam(estimator.parameters(), lr=1e-3)
    order = np.random.default_rng(0)
    rotated = float(kernel_loss(true_test.flip(-1, -2), true_test))
    marks = [m for m in MARKS if m < args.minutes] + [args.minutes]
    steps, points = 0, []

    def score() -> None:
        minutes = round((time.monotonic() - started) / 60, 2) if steps else 0.0
        point = {"minutes": minutes, "steps": steps, "samples": steps * args.batch_size}
        points.append({**point, **_errors(estimator, blurred_test, true_test)})
        print(json.dumps(points[-1]), flush=True)

    score()
    started = time.monotonic()
    while marks:
        items = [data[int(i)] for i in order.integers(0, len(data), args.batch_size)]
        blurred, sharp, kernel = (
            torch.stack([item[key] for item in items]) for key in ("blurred", "sharp", "kernel")
        )
        estimate = estimator(blurred)
        loss = kernel_loss(estimate, kernel) + reblur_loss(estimate, sharp, blurred)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(estimator.parameters(), 1.0)
        optimiser.step()
        steps += 1
        if (time.monotonic() - started) / 60 >= marks[0]:
            marks.pop(0)
            score()

    results = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "kernel_size": data.kernel_size,
        "kernel_error_of_rotated_true_kernel": rotated,
        "points": points,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"Kernel estimator alone, {data.kernel_size} px kernels, batch {args.batch_size} of "
        f"{args.patch_size} px patches; kernel error of the test crops' estimates (the true "
        f"kernel rotated 180° has {rotated:.4f}).",
        "",
        "| minutes | steps | samples | whole crops | central 64 px |",
        "|---:|---:|---:|---:|---:|",
    ]
    for point in points:
        lines.append(
            f"| {point['minutes']:g} | {point['steps']} | {point['samples']} | "
            f"{point['kernel_error_whole']:.4f} | {point['kernel_error_central']:.4f} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
