"""Which restorer learns to restore on a CPU? The measured comparison, one budget for every row.

Every row of :data:`ROWS` is trained from scratch by ``diffdeblur train`` for the same wall-clock
budget (``--budget-minutes``, at least 10 for the published table), with the same seed, data,
network size, threads and precision, one after the other with nothing else running, and then
scored by the same code:

- **Data.** Table 3's PSF-32 setting (``csb-generate --mode random --psf-size 32``, 96 px crops,
  no noise) cut from the training photographs; the test crops come from ``chelsea`` and
  ``coffee``, which no training crop comes from (``pipeline.TEST_PHOTOGRAPHS``).
- **Protocols.** ``central`` cuts the central 64 px out of each 96 px test crop and restores that
  alone (the thesis's); ``context`` restores the whole crop and scores the same central 64 px,
  as a user's photograph gives a restorer its surroundings (``docs/evaluation.md``).
- **Steps.** Each diffusion row is sampled with its own sampler (DDIM, or the bridge's; eta 0)
  at each of ``--sampling-steps`` (1, 2, 5, 10, 20, 50); ``regression`` has one pass.
- **Scores.** PSNR / SSIM / LPIPS (AlexNet v0.1, genuine weights) of the EMA model, beside the
  blurred input and Wiener deconvolution with the true kernel (its balance tuned on training
  crops by PSNR).

Outputs in ``--out``: ``results.md`` (the tables), ``results.json`` (every number and the
settings), ``perception_distortion.png`` (LPIPS against PSNR, one curve per row over its step
counts), ``examples.png`` and, per row, the training log and loss curve.

    python experiments/parametrisations.py --budget-minutes 10 --work /tmp/param-work \\
        --out experiments/results/parametrisations --lpips-weights lpips-alex-v0.1.pt

A new row is one entry of :data:`ROWS`: its label and its ``diffdeblur train`` options.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from csb_generator import open_dataset
from diffdeblur import load_checkpoint, load_restorer
from diffdeblur.evaluation import EvaluationSettings, evaluate_samples, summarise
from diffdeblur.lpips_weights import load_lpips
from diffdeblur.metrics import lpips_distance
from diffdeblur.plots import save_restoration_grid
from diffdeblur.samplers import SamplerSpec
from diffdeblur.wiener import tune_wiener_balance
from pipeline import CSB_GENERATE, DIFFDEBLUR, photo_folders, run_logged

#: The rows: name -> the ``diffdeblur train`` options that make it.
ROWS: dict[str, list[str]] = {
    "regression": ["--parametrisation", "regression"],
    "bridge": ["--parametrisation", "bridge"],
    "residual-v": ["--parametrisation", "residual", "--prediction", "v"],
    "refine-v": ["--parametrisation", "refine", "--prediction", "v"],
    "sharp-eps": ["--parametrisation", "sharp", "--prediction", "eps"],
    "sharp-v": ["--parametrisation", "sharp", "--prediction", "v"],
}
PROTOCOLS = ("central", "context")
METRICS = ("psnr", "ssim", "lpips")


def _generate(args: argparse.Namespace) -> tuple[Path, Path]:
    train_photos, test_photos = photo_folders(args.work, args.extra_photographs)
    generate = [CSB_GENERATE, "--mode", "random", "--psf-size", "32", "--image-size", "96"]
    generate += ["--no-preview"]
    train, test = args.work / "train", args.work / "test"
    for folder, photos, count, seed in (
        (train, train_photos, args.train_count, 0),
        (test, test_photos, args.test_count, 1),
    ):
        if not (folder / "manifest.json").is_file():
            command = [*generate, "--source", str(photos), "--count", str(count)]
            command += ["--out", str(folder), "--seed", str(seed)]
            run_logged(command, args.work / f"generate-{folder.name}.log")
    return train, test


def _train(args: argparse.Namespace, name: str, data: Path, run: Path) -> None:
    """Train one row from scratch; its wall time, process start included, goes beside it."""
    shutil.rmtree(run, ignore_errors=True)
    command = [
        DIFFDEBLUR, "train", "--data", str(data), "--out", str(run), *ROWS[name],
        "--variant", args.variant, "--batch-size", str(args.batch_size), "--lr", str(args.lr),
        "--warmup-steps", "100", "--ema-decay", "0.999", "--seed", str(args.seed),
        "--budget-minutes", str(args.budget_minutes), "--checkpoint-every", "1000000",
        "--validate-every", "1000000", "--precision", args.precision, "--device", "cpu",
        "--quiet", *(["--threads", str(args.threads)] if args.threads else []),
    ]  # fmt: skip
    seconds = run_logged(command, args.work / f"train-{name}.log", args.out / "commands.txt")
    (run / "timing.json").write_text(json.dumps({"train_seconds": seconds}) + "\n")


def _scores(rows: list[dict], method: str) -> dict:
    (entry,) = [s for s in summarise(rows) if s["method"] == method]
    return {metric: entry[metric] for metric in (*METRICS, "images")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=10.0, help="per row (10)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="default: all available")
    parser.add_argument("--train-count", type=int, default=4000)
    parser.add_argument("--test-count", type=int, default=48)
    parser.add_argument(
        "--sampling-steps", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50], metavar="N"
    )
    parser.add_argument("--extra-photographs", default="pypi", choices=("none", "pypi", "debian"))
    parser.add_argument("--lpips-weights", type=Path, required=True)
    parser.add_argument(
        "--reuse", action="store_true", help="score the runs already in --work, train the others"
    )
    parser.add_argument("--work", type=Path, required=True, help="datasets and runs (large)")
    parser.add_argument("--out", type=Path, required=True, help="results: tables and pictures")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads or torch.get_num_threads())

    train_data, test_data = _generate(args)
    for name in args.rows:
        run = args.work / "runs" / name
        if not (args.reuse and (run / "checkpoint.pt").is_file()):
            _train(args, name, train_data, run)

    test = open_dataset(test_data)
    tuning = tune_wiener_balance(open_dataset(train_data), limit=64)
    lpips_model = load_lpips(args.lpips_weights)

    def lpips(restored, reference):
        return lpips_distance(restored, reference, lpips_model)

    results: dict = {"settings": {**vars(args), "rows": ROWS}, "wiener_balance": tuning.balance}
    results["baselines"], results["rows"], pictures = {}, {}, {}
    for protocol in PROTOCOLS:
        settings = EvaluationSettings(protocol=protocol, patch_size=64, batch_size=16)
        evaluation = evaluate_samples(
            test, settings, model=None, wiener_balance=tuning.balance, lpips=lpips
        )
        results["baselines"][protocol] = {
            method: _scores(evaluation.rows, method) for method in ("blurred", "wiener")
        }
        if protocol == "context":  # the protocol of the model columns of examples.png
            for method in ("blurred", "wiener", "sharp"):
                pictures[method] = evaluation.examples[method]
    for name in args.rows:
        run = args.work / "runs" / name
        model = load_restorer(run / "checkpoint.pt")
        steps_trained = int(load_checkpoint(run / "checkpoint.pt")["step"])
        entry = {
            "steps_trained": steps_trained,
            "samples_seen": steps_trained * args.batch_size,
            "train_seconds": json.loads((run / "timing.json").read_text())["train_seconds"],
            "scores": {},
        }
        for kept in ("log.jsonl", "loss.png"):
            if (run / kept).is_file():  # a run of fewer steps than --log-every logs nothing
                shutil.copy(run / kept, args.out / f"{name}-{kept}")
        step_counts = args.sampling_steps if model.is_diffusion else [1]
        for protocol in PROTOCOLS:
            for steps in step_counts:
                settings = EvaluationSettings(
                    protocol=protocol,
                    patch_size=64,
                    batch_size=16,
                    sampler=SamplerSpec(steps=steps) if model.is_diffusion else SamplerSpec(),
                )
                evaluation = evaluate_samples(test, settings, model=model, lpips=lpips)
                entry["scores"].setdefault(protocol, {})[steps] = _scores(evaluation.rows, "model")
                if protocol == "context" and steps == max(step_counts):
                    pictures[name] = evaluation.examples["model"]
                print(name, protocol, steps, entry["scores"][protocol][steps], flush=True)
        results["rows"][name] = entry

    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(_markdown(results, args) + "\n")
    _perception_distortion(results, args.out / "perception_distortion.png")
    order = ["blurred", "wiener", *args.rows, "sharp"]
    save_restoration_grid(
        args.out / "examples.png",
        *(pictures[name] * 2 - 1 for name in order),
        labels=tuple(order),
        title=f"context protocol, {max(args.sampling_steps)} steps; held-out photographs",
    )
    print((args.out / "results.md").read_text())


def _cell(scores: dict) -> str:
    return f"{scores['psnr']:.2f} / {scores['ssim']:.3f} / {scores['lpips']:.3f}"


def _markdown(results: dict, args: argparse.Namespace) -> str:
    steps = args.sampling_steps
    lines = []
    for protocol in PROTOCOLS:
        baselines = results["baselines"][protocol]
        lines += [
            f"### Protocol `{protocol}`: PSNR / SSIM / LPIPS by sampling steps",
            "",
            "| row | steps trained | " + " | ".join(f"{n} steps" for n in steps) + " |",
            "|---|---:|" + "---|" * len(steps),
        ]
        for method, label in (("blurred", "Blurred"), ("wiener", "Wiener, true kernel")):
            lines.append(f"| {label} | | {_cell(baselines[method])} |" + " |" * (len(steps) - 1))
        for name, entry in results["rows"].items():
            scores = entry["scores"][protocol]
            cells = [_cell(scores[n]) if n in scores else "" for n in steps]
            if len(scores) == 1:  # one network pass, whatever the step count
                cells = [_cell(next(iter(scores.values())))] * len(steps)
            lines.append(f"| {name} | {entry['steps_trained']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _perception_distortion(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(PROTOCOLS), figsize=(6 * len(PROTOCOLS), 4.5))
    for axis, protocol in zip(axes, PROTOCOLS, strict=True):
        most = 1
        for name, entry in results["rows"].items():
            scores = entry["scores"][protocol]
            counts = sorted(scores, key=int)
            psnrs = [scores[n]["psnr"] for n in counts]
            lpipss = [scores[n]["lpips"] for n in counts]
            axis.plot(psnrs, lpipss, marker="o", label=name)
            axis.annotate(str(counts[-1]), (psnrs[-1], lpipss[-1]), fontsize=7)
            most = max(most, int(counts[-1]))
        for method, marker in (("blurred", "s"), ("wiener", "*")):
            base = results["baselines"][protocol][method]
            axis.scatter([base["psnr"]], [base["lpips"]], marker=marker, s=80, c="k", label=method)
        axis.set_xlabel("PSNR (dB) →")
        axis.set_ylabel("LPIPS ↓")
        axis.set_title(f"{protocol} protocol (each curve: 1 … {most} sampling steps)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


if __name__ == "__main__":
    main()
