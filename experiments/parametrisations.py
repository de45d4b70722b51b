"""Which restorer learns to restore on a CPU? The measured comparison, one budget for every row.

Every row of :data:`ROWS` is trained from scratch by ``diffdeblur train`` for the same wall-clock
budget (``--budget-minutes``, at least 10 for the published table), with the same seed, data,
network size, threads and precision, one after the other with nothing else running, and then
scored by the same code:

- **Data.** Table 3's setting (``csb-generate --mode random --psf-size 32``, 96 px crops, no
  noise; ``--psf-size`` 16 or 64 for its other columns, the latter with ``--patch-size 96``,
  since the kernel estimator trains on patches as large as its 65 px kernel grid) cut from the
  training photographs; the test crops come from ``chelsea`` and ``coffee``, which no training
  crop comes from (``pipeline.TEST_PHOTOGRAPHS``). ``--noise SIGMA LAM`` makes Table 4's noisy
  data instead (``--mode noisy --exposure 1``, one noise level for every crop).
- **Protocols.** ``central`` cuts the central 64 px out of each 96 px test crop and restores that
  alone (the thesis's); ``context`` restores the whole crop and scores the same central 64 px,
  as a user's photograph gives a restorer its surroundings (``docs/evaluation.md``).
- **Steps.** Each diffusion row is sampled with its own sampler (DDIM, or the bridge's; eta 0)
  at each of ``--sampling-steps`` (1, 2, 5, 10, 20, 50); ``regression`` has one pass.
- **Scores.** PSNR / SSIM / LPIPS (AlexNet v0.1, genuine weights) of the EMA model, beside the
  blurred input and Wiener deconvolution with the true kernel (its balance tuned on training
  crops by PSNR).
- **Deconvolution rows** (``--deconvolve``, :mod:`diffdeblur.restorer`): for each, also the
  front end alone (the learned Wiener filter, no refinement) with the estimated kernel and with
  the true one, the kernel error of the estimates, and ``kernels.png``: estimated beside true
  kernels of the first test crops.
- **Held-in crops.** With ``--held-in-count N`` every row is also scored (``central``, at
  ``--curve-steps``) on N new crops of its training photographs: a row that gains there and loses
  on the test photographs has learnt its photographs, not deblurring.
- **Learning curves.** With ``--segments N`` every row is trained in N equal parts of its
  budget (each part resumes the last exactly, ``diffdeblur train --resume``) and scored after
  each at ``--curve-steps`` sampling steps: ``learning_curve.png``, PSNR against samples seen.

Outputs in ``--out``: ``results.md`` (the tables), ``results.json`` (every number and the
settings), ``perception_distortion.png`` (LPIPS against PSNR, one curve per row over its step
counts), ``examples.png``, ``learning_curve.png``, ``kernels.png`` (deconvolution rows) and, per
row, the training log and loss curve.

    python experiments/parametrisations.py --budget-minutes 10 --work /tmp/param-work \\
        --out experiments/results/parametrisations --lpips-weights lpips-alex-v0.1.pt

A new row is one entry of :data:`ROWS`: its label and its ``diffdeblur train`` options.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from csb_generator import open_dataset
from diffdeblur import Restorer, load_checkpoint, load_restorer
from diffdeblur.deconvolution import odd_kernel
from diffdeblur.evaluation import EvaluationSettings, evaluate_samples, summarise
from diffdeblur.kernel_estimation import kernel_loss
from diffdeblur.lpips_weights import load_lpips
from diffdeblur.metrics import lpips_distance
from diffdeblur.plots import save_restoration_grid
from diffdeblur.samplers import SamplerSpec
from diffdeblur.wiener import tune_wiener_balance
from pipeline import (
    CSB_GENERATE,
    DIFFDEBLUR,
    add_spin_option,
    photo_folders,
    run_logged,
    training_environment,
)
from torch import nn

#: The rows: name -> the ``diffdeblur train`` options that make it.
ROWS: dict[str, list[str]] = {
    "regression": ["--parametrisation", "regression"],
    "bridge": ["--parametrisation", "bridge"],
    "residual-v": ["--parametrisation", "residual", "--prediction", "v"],
    "refine-v": ["--parametrisation", "refine", "--prediction", "v"],
    "sharp-eps": ["--parametrisation", "sharp", "--prediction", "eps"],
    "sharp-v": ["--parametrisation", "sharp", "--prediction", "v"],
    "sharp-v-skip": ["--parametrisation", "sharp", "--prediction", "v", "--blurred-skip"],
    # Issue "use what the generator knows": estimated kernel -> learned Wiener -> refinement
    # (blind), and the same with the stored kernel (non-blind: an upper bound).
    "deconvolve-estimated": ["--parametrisation", "regression", "--deconvolve", "estimated"],
    "deconvolve-true": ["--parametrisation", "regression", "--deconvolve", "true"],
    # The blind row with the best plain restorer of the comparison as its refiner.
    "deconvolve-estimated-bridge": [
        "--parametrisation",
        "bridge",
        "--loss",
        "charbonnier",
        "--deconvolve",
        "estimated",
    ],
    # The optimisation options of the issue "restorers that learn", each against its plain row.
    "regression-cosine": ["--parametrisation", "regression", "--lr-schedule", "cosine"],
    "bridge-charbonnier": ["--parametrisation", "bridge", "--loss", "charbonnier"],
    # Why regression falls as it trains: a lower learning rate, and a robust loss.
    "regression-lr2e-4": ["--parametrisation", "regression", "--lr", "2e-4"],
    "regression-charbonnier": ["--parametrisation", "regression", "--loss", "charbonnier"],
}
PROTOCOLS = ("central", "context")
METRICS = ("psnr", "ssim", "lpips")


def _generate(args: argparse.Namespace) -> tuple[Path, Path, Path | None]:
    """The training and test sets, and with ``--held-in-count`` new crops of the training
    photographs (``held-in``): where a row that loses on the test photographs gains, it learned
    its training photographs rather than deblurring."""
    train_photos, test_photos = photo_folders(args.work, args.extra_photographs)
    generate = [CSB_GENERATE, "--psf-size", str(args.psf_size), "--image-size", "96"]
    if args.noise is None:
        generate += ["--mode", "random", "--no-preview"]
    else:  # Table 4: one noise level for the whole dataset, full exposure
        sigma, lam = args.noise
        generate += ["--mode", "noisy", "--exposure", "1", "--sigma", f"{sigma:g}"]
        generate += ["--lam", f"{lam:g}", "--no-preview"]
    train, test, held_in = args.work / "train", args.work / "test", args.work / "held-in"
    sets = [(train, train_photos, args.train_count, 0), (test, test_photos, args.test_count, 1)]
    if args.held_in_count:
        sets.append((held_in, train_photos, args.held_in_count, 2))
    for folder, photos, count, seed in sets:
        if not (folder / "manifest.json").is_file():
            command = [*generate, "--source", str(photos), "--count", str(count)]
            command += ["--out", str(folder), "--seed", str(seed)]
            run_logged(command, args.work / f"generate-{folder.name}.log")
        options = open_dataset(folder).manifest["options"]
        noise = None if options["mode"] == "random" else (options["sigmas"], options["lams"])
        asked = None if args.noise is None else ([args.noise[0]], [args.noise[1]])
        if options["psf_size"] != args.psf_size or noise != asked:
            raise SystemExit(
                f"{folder} holds other data (PSF {options['psf_size']}, noise {noise}) than "
                "--psf-size and --noise ask for: use another --work for each of them"
            )
    return train, test, held_in if args.held_in_count else None


def _train(args: argparse.Namespace, name: str, data: Path, run: Path, score) -> list[dict]:
    """Train one row from scratch in ``--segments`` parts of its budget, each resuming the last
    and scored by ``score(run)`` after it; the wall time, process starts included, goes beside
    it. Returns the learning curve."""
    shutil.rmtree(run, ignore_errors=True)
    command = [
        DIFFDEBLUR, "train", "--data", str(data), "--out", str(run),
        "--variant", args.variant, "--patch-size", str(args.patch_size),
        "--batch-size", str(args.batch_size), "--lr", str(args.lr),
        "--warmup-steps", "100", "--ema-decay", "0.999", "--seed", str(args.seed),
        *(["--max-steps", str(args.max_steps)] if args.max_steps else
          ["--budget-minutes", str(args.budget_minutes / args.segments)]),
        "--checkpoint-every", "1000000", "--validate-every", "1000000",
        "--precision", args.precision, "--device", "cpu",
        "--quiet", *(["--threads", str(args.threads)] if args.threads else []),
        *ROWS[name],  # last, so that a row's own option (its --lr) overrides the script's
    ]  # fmt: skip
    environment = training_environment(args.spin)
    seconds, curve = 0.0, []
    for segment in range(args.segments):
        resume = ["--resume"] if segment else []
        log = args.work / f"train-{name}-{segment}.log"
        seconds += run_logged([*command, *resume], log, args.out / "commands.txt", environment)
        (run / "timing.json").write_text(json.dumps({"train_seconds": seconds}) + "\n")
        if args.segments > 1:
            step = int(load_checkpoint(run / "checkpoint.pt")["step"])
            curve.append({"samples_seen": step * args.batch_size, "seconds": seconds, **score(run)})
            print(name, "curve", curve[-1], flush=True)
    (run / "curve.json").write_text(json.dumps(curve) + "\n")
    return curve


class _PassDeconvolution(nn.Module):
    """Stands in for the refiner: returns the deconvolved half of the observation."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, observed: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return observed[:, self.channels : 2 * self.channels]


def _front_end(model: Restorer, kernel: str) -> Restorer:
    """The deconvolution front end of ``model`` alone, as a restorer: its learned Wiener filter
    with the estimated (``kernel="estimated"``) or the stored kernel, without refinement."""
    front = replace(model.config.deconvolution, kernel=kernel)
    config = replace(
        model.config, parametrisation="regression", regressor=model.config.unet,
        deconvolution=front,
    )  # fmt: skip
    alone = Restorer(config).eval()
    alone.wiener.load_state_dict(model.wiener.state_dict())
    if alone.kernel_estimator is not None:
        alone.kernel_estimator.load_state_dict(model.kernel_estimator.state_dict())
    alone.regressor = _PassDeconvolution(config.image_channels)
    return alone


@torch.no_grad()
def _kernel_errors(model: Restorer, test, out: Path, name: str, shown: int = 8) -> dict:
    """Kernel error of the estimates from whole test crops, and the picture of the first ones."""
    estimates, truths = [], []
    for index in range(len(test)):
        sample = test[index]
        blurred = torch.from_numpy(sample["blurred"]).permute(2, 0, 1)[None] * 2 - 1
        estimates.append(model.kernel(blurred)[0])
        truths.append(torch.from_numpy(odd_kernel(sample["kernel"])))
    estimate, true = torch.stack(estimates), torch.stack(truths)
    errors = [float(kernel_loss(e[None], t[None])) for e, t in zip(estimate, true, strict=True)]
    rotated = [float(kernel_loss(t.flip(-1, -2)[None], t[None])) for t in true]
    _kernel_picture(estimate[:shown].numpy(), true[:shown].numpy(), out / f"{name}-kernels.png")
    return {
        "kernel_error": float(np.mean(errors)),
        "kernel_error_of_rotated_true_kernel": float(np.mean(rotated)),
        "estimate_closer_than_rotation": float(np.mean(np.less(errors, rotated))),
    }


def _kernel_picture(estimates: np.ndarray, truths: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    count = len(truths)
    figure, axes = pyplot.subplots(2, count, figsize=(1.6 * count, 3.6), squeeze=False)
    for column in range(count):
        for row, (kernels, label) in enumerate(((truths, "true"), (estimates, "estimated"))):
            axis = axes[row][column]
            axis.imshow(kernels[column], cmap="gray", vmin=0, vmax=truths[column].max())
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(label)
    figure.suptitle("test crops (96 px): true kernels above, estimates below (same grey scale)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def _scores(rows: list[dict], method: str) -> dict:
    (entry,) = [s for s in summarise(rows) if s["method"] == method]
    return {metric: entry[metric] for metric in (*METRICS, "images")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=10.0, help="per row (10)")
    parser.add_argument("--psf-size", type=int, default=32, help="Table 3: 16, 32 or 64")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="train each row for this many steps instead of a budget (to compare settings that "
        "run at different speeds, such as --precision fp32 and bf16, at equal training)",
    )
    parser.add_argument("--segments", type=int, default=1, help="learning-curve points per row")
    parser.add_argument("--curve-steps", type=int, default=1, help="sampling steps of the curve")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--variant", default="tiny")
    parser.add_argument(
        "--patch-size",
        type=int,
        default=64,
        help="training patch side, px (64; at PSF 64, 96: the estimator needs the kernel's 65)",
    )
    parser.add_argument(
        "--noise",
        type=float,
        nargs=2,
        default=None,
        metavar=("SIGMA", "LAM"),
        help="Table 4: read noise (grey levels) and photon scale lambda of every crop, at T = 1 "
        "(default: none, Table 3's data)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="default: all available")
    add_spin_option(parser)
    parser.add_argument("--train-count", type=int, default=4000)
    parser.add_argument("--test-count", type=int, default=48)
    parser.add_argument(
        "--held-in-count",
        type=int,
        default=0,
        help="also score every row, `central`, on this many new crops of the training "
        "photographs (seed 2), beside the blurred input and Wiener (default 0: not scored)",
    )
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
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "ACTIVE":
        parser.error(
            "OMP_WAIT_POLICY=ACTIVE makes this script's own scoring threads spin while each row "
            "trains, taking a core from it: unset it, and pass --spin to make the training "
            "processes spin"
        )
    if args.max_steps is not None and (args.max_steps < 1 or args.segments != 1):
        parser.error("--max-steps takes a positive number of steps, and one segment")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads or torch.get_num_threads())

    train_data, test_data, held_in_data = _generate(args)
    test = open_dataset(test_data)
    tuning = tune_wiener_balance(open_dataset(train_data), limit=64)
    lpips_model = load_lpips(args.lpips_weights)

    def lpips(restored, reference):
        return lpips_distance(restored, reference, lpips_model)

    def score(model: Restorer, protocol: str, steps: int | None = None, crops=test):
        """PSNR/SSIM/LPIPS of ``model`` on ``crops`` (the test crops), and the evaluation."""
        sampler = SamplerSpec(steps=steps) if model.is_diffusion else SamplerSpec()
        settings = EvaluationSettings(
            protocol=protocol, patch_size=64, batch_size=16, sampler=sampler
        )
        evaluation = evaluate_samples(crops, settings, model=model, lpips=lpips)
        return _scores(evaluation.rows, "model"), evaluation

    def curve_point(run: Path) -> dict:
        model = load_restorer(run / "checkpoint.pt")
        return {p: score(model, p, args.curve_steps)[0] for p in PROTOCOLS}

    curves = {}
    for name in args.rows:
        run = args.work / "runs" / name
        if args.reuse and (run / "checkpoint.pt").is_file():
            kept = run / "curve.json"
            curves[name] = json.loads(kept.read_text()) if kept.is_file() else []
        else:
            curves[name] = _train(args, name, train_data, run, curve_point)

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
    results["front_ends"] = {}
    for name in args.rows:
        run = args.work / "runs" / name
        model = load_restorer(run / "checkpoint.pt")
        steps_trained = int(load_checkpoint(run / "checkpoint.pt")["step"])
        entry = {
            "steps_trained": steps_trained,
            "samples_seen": steps_trained * args.batch_size,
            "train_seconds": json.loads((run / "timing.json").read_text())["train_seconds"],
            "curve": curves[name],
            "scores": {},
        }
        for kept in ("log.jsonl", "loss.png"):
            if (run / kept).is_file():  # a run of fewer steps than --log-every logs nothing
                shutil.copy(run / kept, args.out / f"{name}-{kept}")
        step_counts = args.sampling_steps if model.is_diffusion else [1]
        for protocol in PROTOCOLS:
            for steps in step_counts:
                scores, evaluation = score(model, protocol, steps)
                entry["scores"].setdefault(protocol, {})[steps] = scores
                if protocol == "context" and steps == max(step_counts):
                    pictures[name] = evaluation.examples["model"]
                print(name, protocol, steps, scores, flush=True)
        results["rows"][name] = entry
        front = model.config.deconvolution
        if front is not None and front.kernel == "estimated":
            alone = {"learned_balance": float(model.wiener.balance())}
            alone.update(_kernel_errors(model, test, args.out, name))
            for kernel in ("estimated", "true"):
                deconvolution = _front_end(model, kernel)
                alone[kernel] = {p: score(deconvolution, p)[0] for p in PROTOCOLS}
            results["front_ends"][name] = alone
            print(name, "front end", alone, flush=True)

    if held_in_data is not None:
        held_in = open_dataset(held_in_data)
        settings = EvaluationSettings(protocol="central", patch_size=64, batch_size=16)
        evaluation = evaluate_samples(
            held_in, settings, model=None, wiener_balance=tuning.balance, lpips=lpips
        )
        results["held_in"] = {m: _scores(evaluation.rows, m) for m in ("blurred", "wiener")}
        for name in args.rows:
            model = load_restorer(args.work / "runs" / name / "checkpoint.pt")
            results["held_in"][name] = score(model, "central", args.curve_steps, held_in)[0]
            print(name, "held-in", results["held_in"][name], flush=True)

    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(_markdown(results, args) + "\n")
    _perception_distortion(results, args.out / "perception_distortion.png")
    if any(entry["curve"] for entry in results["rows"].values()):
        _learning_curves(results, args.out / "learning_curve.png")
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
    noise = "no noise" if args.noise is None else f"σ = {args.noise[0]:g}, λ = {args.noise[1]:g}"
    lines = [
        f"PSF {args.psf_size} px, {noise}; "
        + (f"{args.max_steps} steps" if args.max_steps else f"{args.budget_minutes:g} minutes")
        + f" per row, precision {args.precision}; "
        f"`{args.variant}`, {args.patch_size} px patches, batch {args.batch_size}, "
        f"lr {args.lr:g}, seed {args.seed}.",
        "",
    ]
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
            alone = results["front_ends"].get(name)
            for kernel in ("estimated", "true") if alone else ():
                cell = _cell(alone[kernel][protocol])
                label = f"{name}: its Wiener front end alone, {kernel} kernel"
                lines.append(f"| {label} | | {cell} |" + " |" * (len(steps) - 1))
        lines.append("")
    if "held_in" in results:
        held_in, test = results["held_in"], results["baselines"]["central"]["blurred"]["psnr"]
        lines += [
            f"### Held-in photographs: {args.held_in_count} new crops of the training "
            f"photographs (seed 2), `central`, {args.curve_steps} sampling step(s)",
            "",
            "| row | PSNR / SSIM / LPIPS | PSNR gain over blurred | the same on the test crops |",
            "|---|---|---:|---:|",
        ]
        for name, scores in held_in.items():
            label = {"blurred": "Blurred", "wiener": "Wiener, true kernel"}.get(name, name)
            gain = scores["psnr"] - held_in["blurred"]["psnr"]
            if name in results["rows"]:
                tested = results["rows"][name]["scores"]["central"]
                tested = tested.get(args.curve_steps, next(iter(tested.values())))
            else:
                tested = results["baselines"]["central"][name]
            lines.append(
                f"| {label} | {_cell(scores)} | {gain:+.2f} | {tested['psnr'] - test:+.2f} |"
            )
        lines.append("")
    for name, alone in results["front_ends"].items():
        lines.append(
            f"{name}: learned balance {alone['learned_balance']:.3g}; kernel error (squared, "
            f"unit-sum kernels) {alone['kernel_error']:.4f}, against "
            f"{alone['kernel_error_of_rotated_true_kernel']:.4f} for the true kernel rotated "
            f"180°; the estimate is the closer one on {alone['estimate_closer_than_rotation']:.0%}"
            " of the test crops."
        )
    return "\n".join(lines)


def _plot_per_protocol(path: Path, draw) -> None:
    """One panel per protocol, each drawn by ``draw(axis, protocol)``, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(PROTOCOLS), figsize=(6 * len(PROTOCOLS), 4.5))
    for axis, protocol in zip(axes, PROTOCOLS, strict=True):
        draw(axis, protocol)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def _learning_curves(results: dict, path: Path) -> None:
    def draw(axis, protocol: str) -> None:
        for name, entry in results["rows"].items():
            if entry["curve"]:
                seen = [point["samples_seen"] for point in entry["curve"]]
                psnrs = [point[protocol]["psnr"] for point in entry["curve"]]
                axis.plot(seen, psnrs, marker="o", label=name)
        for method, style in (("blurred", ":"), ("wiener", "--")):
            base = results["baselines"][protocol][method]["psnr"]
            axis.axhline(base, color="k", linestyle=style, linewidth=1, label=method)
        axis.set_xlabel("training samples seen")
        axis.set_ylabel("PSNR (dB)")
        axis.set_title(f"{protocol} protocol")

    _plot_per_protocol(path, draw)


def _perception_distortion(results: dict, path: Path) -> None:
    def draw(axis, protocol: str) -> None:
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

    _plot_per_protocol(path, draw)


if __name__ == "__main__":
    main()
