"""The quality cost of speed: DDPM over all steps against DDIM with 10 to 100 steps.

Run from the repository root, in the development environment:

    python benchmarks/bench_sampling.py --checkpoint RUN/checkpoint.pt --data TEST \\
        --lpips-weights lpips-alex-v0.1.pt
    python benchmarks/bench_sampling.py --checkpoint RUN/checkpoint.pt --data TEST \\
        --images 16 --ddim-steps 10 50 --no-ddpm --threads 1      # a cheaper run
    python benchmarks/bench_sampling.py --quick      # seconds: a tiny model and dataset are made

``--checkpoint`` is a trained diffusion model (``diffdeblur train``; any parametrisation but
``regression``) and ``--data`` a ``csb-generate`` test dataset whose crops are at least the
model's training patch. The same first ``--images`` test images (default 32) are restored with
each sampler: ancestral DDPM over all the model's diffusion steps (the thesis) and deterministic
DDIM (eta 0) with each of ``--ddim-steps`` (default 10 20 50 100), all seeded alike
(``EvaluationSettings(seed=...)``: the draws of a batch come from a ``torch.Generator`` seeded
with the seed and the batch's number). They are restored and scored exactly as ``diffdeblur
evaluate`` does, by ``diffdeblur.evaluation.evaluate_samples`` with the ``central`` protocol: the
central training-patch-size square of each image (64 px for the thesis's models) is restored,
in batches of ``--batch-size`` images, and scored against the sharp square by PSNR, SSIM and
LPIPS (AlexNet v0.1; only with ``--lpips-weights`` or ``$DIFFDEBLUR_LPIPS_WEIGHTS``). The
blurred input is scored once, as the row to beat.

Time per image: the wall time (``time.perf_counter``) spent in ``Restorer.sample`` (every
network call and sampler step; timed by wrapping the model's ``sample`` method for the run),
divided by the number of images; the whole ``evaluate_samples`` call (with cropping and
scoring) is recorded too. One untimed warm-up batch (2 DDIM steps) comes first, since on a CPU
the first network calls build their kernels. Each sampler runs once: the number of network
calls, not chance, sets its time.

Results, rewritten after every sampler (so a long DDPM run that is stopped keeps the rest), in
``--out`` (default ``benchmarks/results/``): ``sampling.json`` (settings, machine, threads,
every image's scores), ``sampling.md`` (the table) and ``sampling.png`` (quality against time
per image, one labelled point per sampler). ``--quick`` writes ``sampling-quick.*`` instead,
so that a check never replaces real results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from csb_generator import open_dataset
from csb_generator.shards import TSweepDataset
from diffdeblur.checkpoint import load_checkpoint, restorer_from_checkpoint, training_patch_size
from diffdeblur.evaluation import EvaluationSettings, evaluate_samples, summarise
from diffdeblur.restorer import Restorer
from diffdeblur.samplers import SamplerSpec
from machine import describe
from run_options import add_run_options
from tiny_inputs import tiny_checkpoint, tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STEM = "sampling"


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def sampling_clock(model: Restorer, device: torch.device) -> Iterator[list[float]]:
    """Time every call of ``model.sample`` while the block runs.

    ``Restorer.restore`` (and so ``evaluate_samples``) samples through ``Restorer.sample``; the
    method is replaced on this instance by a timed wrapper and put back on exit.

    Parameters
    ----------
    model : Restorer
    device : torch.device
        Where the model runs; CUDA is synchronised around each call.

    Yields
    ------
    list of float
        Seconds of each call, appended as they finish.
    """
    seconds: list[float] = []
    original = model.sample

    def timed(*args, **kwargs):
        _synchronise(device)
        start = time.perf_counter()
        result = original(*args, **kwargs)
        _synchronise(device)
        seconds.append(time.perf_counter() - start)
        return result

    model.sample = timed  # an instance attribute shadows the method
    try:
        yield seconds
    finally:
        del model.sample


def _clean(value):
    """JSON-safe: NaN and infinities become None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def run_sampler(
    model: Restorer,
    samples: Sequence[dict],
    settings: EvaluationSettings,
    *,
    lpips,
    device: torch.device,
) -> dict:
    """Restore and score ``samples`` with one sampler; time the sampling.

    Parameters
    ----------
    model : Restorer
        In evaluation mode, on ``device``.
    samples : sequence of dict
        Test samples as :class:`csb_generator.ShardDataset` returns them.
    settings : EvaluationSettings
        The ``central`` protocol with the sampler to measure.
    lpips : callable or None
        LPIPS distance, or None to leave it out.
    device : torch.device

    Returns
    -------
    dict
        ``sampler``, ``steps`` (network calls per image), ``label``, ``images``,
        ``sampling_s`` (in ``Restorer.sample``), ``total_s`` (the whole ``evaluate_samples``
        call), ``s_per_image``, ``total_s_per_image``, the mean and standard deviation of
        ``psnr``, ``ssim`` and ``lpips`` over the images, and ``per_image`` scores.
    """
    with sampling_clock(model, device) as calls:
        start = time.perf_counter()
        evaluation = evaluate_samples(samples, settings, model=model, lpips=lpips, device=device)
        total = time.perf_counter() - start
    rows = [row for row in evaluation.rows if row["method"] == "model"]
    count = len(rows)
    spec = settings.sampler.resolve(model.diffusion)
    result = {
        "sampler": spec.name,
        "steps": spec.steps,
        "label": f"{spec.name.upper()} {spec.steps}",
        "images": count,
        "sampling_s": sum(calls),
        "total_s": total,
        "s_per_image": sum(calls) / count,
        "total_s_per_image": total / count,
    }
    for metric in ("psnr", "ssim", "lpips"):
        values = [row[metric] for row in rows]
        result[metric] = float(np.mean(values))  # NaN when LPIPS is left out
        result[f"{metric}_std"] = float(np.std(values))
    result["per_image"] = [
        {key: row[key] for key in ("index", "psnr", "ssim", "lpips")} for row in rows
    ]
    return result


def markdown(payload: dict) -> str:
    """The results as a Markdown document: one table, a row per sampler and the blurred input.

    Parameters
    ----------
    payload : dict
        What :func:`main` writes to the JSON file.

    Returns
    -------
    str
    """
    machine, settings, model = payload["machine"], payload["settings"], payload["model"]
    blurred = payload["blurred"]
    ddpm = next((row for row in payload["results"] if row["sampler"] == "ddpm"), None)

    def number(value, digits: int) -> str:
        return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"

    lines = [
        "# Samplers: the quality cost of speed",
        "",
        "Written by `python benchmarks/bench_sampling.py`; do not edit by hand.",
        "",
        f"Model: `{payload['checkpoint']}` ({model['parametrisation']}, variant "
        f"{model['variant']}, {model['parameters']:,} parameters, {model['timesteps']} diffusion "
        f"steps, {model['schedule']} schedule, trained {model['step']} steps on "
        f"{settings['patch_size']} px patches; {'EMA' if settings['ema'] else 'raw'} weights). "
        f"Test data: `{payload['data']}`, the first {blurred['images']} images, central "
        f"{settings['patch_size']} px square, batches of {settings['batch_size']}, seed "
        f"{settings['seed']}, DDIM eta {settings['eta']:g}. "
        f"Time per image: seconds in `Restorer.sample` / images (the total adds cropping and "
        f"scoring). Device {payload['device']}, {payload['torch_threads']} torch threads. "
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), torch {payload['torch']}, "
        f"Python {machine['python']}, commit {machine['git_commit']}"
        f"{' (modified)' if machine['git_modified'] else ''}, {machine['date']}, load average "
        f"{machine['load_average_at_start'][0]:.2f} at the start. LPIPS: {payload['lpips']}.",
        "",
        "| sampler | network calls per image | s / image | total s / image | speed-up vs DDPM "
        "| PSNR (dB) | SSIM | LPIPS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| blurred input | 0 | | {number(blurred['total_s_per_image'], 3)} | "
        f"| {number(blurred['psnr'], 2)} | {number(blurred['ssim'], 4)} "
        f"| {number(blurred['lpips'], 4)} |",
    ]
    for row in payload["results"]:
        speedup = "" if ddpm is None else f"{ddpm['s_per_image'] / row['s_per_image']:.1f}x"
        lines.append(
            f"| {row['label']} | {row['steps']} | {row['s_per_image']:.3f} "
            f"| {row['total_s_per_image']:.3f} | {speedup} | {number(row['psnr'], 2)} "
            f"| {number(row['ssim'], 4)} | {number(row['lpips'], 4)} |"
        )
    if payload["skipped"]:
        lines += ["", f"Not run: {'; '.join(payload['skipped'])}."]
    return "\n".join(lines) + "\n"


def plot(payload: dict, path: Path) -> None:
    """Quality against time per image, one labelled point per sampler, one panel per metric.

    The blurred input's score is a dashed line. LPIPS gets a panel only when it was computed.

    Parameters
    ----------
    payload : dict
        What :func:`main` writes to the JSON file.
    path : Path
        The PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows, blurred = payload["results"], payload["blurred"]
    metrics = [("psnr", "PSNR (dB), higher is better"), ("ssim", "SSIM, higher is better")]
    if blurred["lpips"] is not None and math.isfinite(blurred["lpips"]):
        metrics.append(("lpips", "LPIPS, lower is better"))
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 4.0))
    for axis, (metric, title) in zip(axes, metrics, strict=True):
        times = [row["s_per_image"] for row in rows]
        values = [row[metric] for row in rows]
        axis.plot(times, values, "o", color="tab:blue")
        for row in rows:
            axis.annotate(
                row["label"],
                (row["s_per_image"], row[metric]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
        axis.axhline(blurred[metric], color="grey", linestyle="--", label="blurred input")
        if times and max(times) > 3 * min(times):
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        axis.set_xlabel("seconds per image (sampling)")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    figure.suptitle(
        f"The quality cost of speed: {payload['model']['parametrisation']} "
        f"{payload['model']['variant']}, {payload['blurred']['images']} images, "
        f"{payload['settings']['patch_size']} px, {payload['device']}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write(payload: dict, out: Path, stem: str) -> None:
    """Write ``stem``.json, ``stem``.md and ``stem``.png to ``out`` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(_clean(payload), indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(payload))
    if payload["results"]:
        plot(payload, out / f"{stem}.png")


def _lpips(weights: str | None, device: torch.device):
    """The LPIPS distance and its description, or (None, why not)."""
    weights = weights or os.environ.get("DIFFDEBLUR_LPIPS_WEIGHTS") or None
    if weights is None:
        return None, "not computed (no --lpips-weights, DIFFDEBLUR_LPIPS_WEIGHTS unset)"
    from diffdeblur.lpips_weights import load_lpips
    from diffdeblur.metrics import lpips_distance

    network = load_lpips(weights, device=device)

    def distance(restored: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return lpips_distance(restored, reference, network)

    return distance, f"AlexNet v0.1, weights {weights}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring (top of this file) for what is measured and how.",
    )
    parser.add_argument("--checkpoint", type=Path, help="trained diffusion model (checkpoint.pt)")
    parser.add_argument("--data", type=Path, help="csb-generate test dataset")
    parser.add_argument(
        "--lpips-weights",
        default=None,
        help="LPIPS weights file (diffdeblur lpips-weights) [default: $DIFFDEBLUR_LPIPS_WEIGHTS; "
        "without either LPIPS is left out]",
    )
    parser.add_argument("--images", type=int, default=32, help="test images (default 32)")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="images per network call (default 16)"
    )
    parser.add_argument(
        "--ddim-steps",
        type=int,
        nargs="+",
        default=[10, 20, 50, 100],
        help="DDIM step counts (default 10 20 50 100; counts above the model's T are skipped)",
    )
    parser.add_argument("--no-ddpm", action="store_true", help="leave out DDPM over all steps")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling draws")
    parser.add_argument(
        "--patch-size", type=int, default=None, help="central square, px [default: training patch]"
    )
    parser.add_argument("--no-ema", action="store_true", help="raw weights instead of the EMA")
    add_run_options(
        parser,
        RESULTS,
        threads_help="torch.set_num_threads [default: torch's]",
        quick_help="a seconds-long check: 4 images, DDIM 2 and 5, DDPM (models of <= 50 steps); "
        "a tiny dataset and model are made in a temporary folder unless --data/--checkpoint are "
        "given; writes sampling-quick.*",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (see the module docstring)."""
    args = _parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.images = min(args.images, 4)
        args.batch_size = min(args.batch_size, 4)
        args.ddim_steps = [2, 5]
    elif args.checkpoint is None or args.data is None:
        sys.exit("--checkpoint and --data are required (or --quick for a check)")
    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as scratch:
        if args.data is None:
            args.data = tiny_dataset(Path(scratch) / "data", seed=1)
        if args.checkpoint is None:
            args.checkpoint = tiny_checkpoint(
                tiny_dataset(Path(scratch) / "train"), Path(scratch) / "run"
            )
        run(args, stem=f"{STEM}-quick" if args.quick else STEM)


def run(args: argparse.Namespace, stem: str) -> None:
    """Measure every sampler and write the results after each (see :func:`main`)."""
    device = torch.device(args.device)
    state = load_checkpoint(args.checkpoint, map_location=device)
    model = restorer_from_checkpoint(state, args.checkpoint, ema=not args.no_ema)
    if not model.is_diffusion:
        sys.exit(f"{args.checkpoint} is a regression model: it has no sampler to compare")
    timesteps = model.diffusion.num_timesteps
    patch = args.patch_size or training_patch_size(state)
    dataset = open_dataset(args.data)
    if isinstance(dataset, TSweepDataset):
        sys.exit(f"{args.data} is a T-sweep: pass one of its T-* folders")
    if len(dataset) < args.images:
        print(f"{args.data} holds {len(dataset)} images; using all of them", file=sys.stderr)
    # Read once: every sampler restores the same arrays, and no file reading is timed.
    samples = [dataset[index] for index in range(min(args.images, len(dataset)))]
    lpips, lpips_note = _lpips(args.lpips_weights, device)

    def settings(sampler: str, steps: int) -> EvaluationSettings:
        return EvaluationSettings(
            protocol="central",
            patch_size=patch,
            batch_size=args.batch_size,
            sampler=SamplerSpec("ddpm")
            if sampler == "ddpm"
            else SamplerSpec(sampler, steps, args.eta),
            seed=args.seed,
            examples=0,
        )

    plan = [("ddim", steps) for steps in sorted(set(args.ddim_steps)) if steps <= timesteps]
    skipped = [
        f"DDIM {s} (the model has {timesteps} steps)" for s in args.ddim_steps if s > timesteps
    ]
    if args.quick and timesteps > 50 and not args.no_ddpm:
        skipped.append(f"DDPM {timesteps} (--quick runs DDPM only for models of <= 50 steps)")
    elif not args.no_ddpm:
        plan.append(("ddpm", timesteps))
    train = state.get("train") if isinstance(state.get("train"), dict) else {}
    payload = {
        "benchmark": "sampling",
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "model": {
            "parametrisation": model.config.parametrisation,
            "variant": train.get("variant", "unknown"),
            "parameters": sum(p.numel() for p in model.parameters()),
            "timesteps": timesteps,
            "schedule": model.config.diffusion.schedule,
            "step": int(state.get("step", 0)),
        },
        "settings": {
            "images": len(samples),
            "patch_size": patch,
            "batch_size": args.batch_size,
            "eta": args.eta,
            "seed": args.seed,
            "ema": not args.no_ema,
            "protocol": "central",
            "quick": args.quick,
        },
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "lpips": lpips_note,
        "machine": describe(),
        "skipped": skipped,
        "results": [],
    }
    # Warm-up (untimed): the first network calls build their kernels and allocate.
    evaluate_samples(
        samples[: args.batch_size], settings("ddim", min(2, timesteps)), model=model, device=device
    )
    start = time.perf_counter()
    baseline = evaluate_samples(
        samples, settings("ddim", 1), model=None, lpips=lpips, device=device
    )
    baseline_s = time.perf_counter() - start
    payload["blurred"] = {
        **{k: v for k, v in summarise(baseline.rows)[0].items() if k != "method"},
        "total_s_per_image": baseline_s / len(samples),
    }
    print(
        f"blurred input: PSNR {payload['blurred']['psnr']:.2f} dB, SSIM "
        f"{payload['blurred']['ssim']:.4f}, LPIPS {payload['blurred']['lpips']:.4f}",
        flush=True,
    )
    for sampler, steps in plan:
        result = run_sampler(model, samples, settings(sampler, steps), lpips=lpips, device=device)
        payload["results"].append(result)
        print(
            f"{result['label']:>10}: {result['s_per_image']:.3f} s/image, PSNR "
            f"{result['psnr']:.2f} dB, SSIM {result['ssim']:.4f}, LPIPS {result['lpips']:.4f}",
            flush=True,
        )
        write(payload, args.out, stem)
    write(payload, args.out, stem)
    print()
    print(markdown(payload))
    print(f"wrote {args.out / stem}.json, .md and .png")


if __name__ == "__main__":
    main()
