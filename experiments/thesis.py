"""The thesis's experiments end to end, scaled to a CPU budget: Table 3, Table 4, Figure 4.

Each experiment generates training shards from the built-in photographs (plus, with
``--extra-photographs``, real photographs from PyPI and Debian packages: see ``photographs.py``)
and test shards from two photographs the training never sees, trains one model per setting for a
fixed wall-clock budget, tunes the Wiener baseline on the training shards (kernel as applied, and
rotated by 180°), runs ``diffdeblur evaluate`` on the test shards, and gathers the tables and
plots into ``--out``:

- ``table3``: ``random`` mode, PSF 16, 32, 64 px (trajectories up to psf/2 long), no noise;
- ``table4``: ``noisy`` mode, PSF 32, (sigma, lambda) = no noise, (1, 768000), (2, 192000),
  (4, 48000);
- ``figure4``: ``tsweep`` with a linear and a shaky trajectory, T = 1 ... 1/32, sigma 0,
  lambda 765000; one model for all T per trajectory; PSNR against T for the model and Wiener.

Every stage is skipped when its output exists (rerun after an interruption to continue); a
``--work`` folder is therefore tied to the photograph selection it was first used with. Every
command that runs is printed and appended to ``<out>/commands.txt``, so the tables can be
reproduced command by command.

    python experiments/thesis.py all --budget-minutes 8 --extra-photographs debian \\
        --work /tmp/thesis-work --out experiments/results/thesis
    python experiments/thesis.py table3 --tiny --work /tmp/t --out /tmp/t/results   # CI size
    python experiments/thesis.py all --preset thesis --work /data/thesis --out results  # GPU
    python experiments/thesis.py all --preset bundled --budget-minutes 8 --spin \
        --extra-photographs debian --work /tmp/bundled-work --out experiments/results/thesis-bundled

``--preset bundled`` trains each setting's model with the bundled model's configuration (the
bridge, Charbonnier loss, learning rate 1e-3, ``--precision auto`` on all cores, restored in one
bridge step), so that the tables separate that configuration from the bundled model's longer
training on every setting at once.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from csb_generator import BUILTIN_PHOTOGRAPHS
from diffdeblur.evaluation import METHOD_LABELS
from photographs import SELECTIONS, extra_photographs
from pipeline import (
    CSB_GENERATE,
    DIFFDEBLUR,
    TEST_PHOTOGRAPHS,
    add_spin_option,
    photo_folders,
    run_logged,
    training_environment,
)

EXPERIMENTS = ("table3", "table4", "figure4")
TABLE4_NOISE = (("none", None, None), ("s1", 1, 768000), ("s2", 2, 192000), ("s4", 4, 48000))


@dataclass
class Setting:
    """One trained model and its test: the csb-generate options of its data, and a label."""

    experiment: str
    name: str
    label: str
    generate: list[str]
    evaluate: list[str] = field(default_factory=list)


def settings_of(experiment: str) -> list[Setting]:
    """The settings of an experiment, in the thesis's order."""
    if experiment == "table3":
        return [
            Setting("table3", f"psf{size}", f"PSF {size} px", ["--mode", "random", "--psf-size",
                    str(size)])
            for size in (16, 32, 64)
        ]  # fmt: skip
    if experiment == "table4":
        settings = []
        for name, sigma, lam in TABLE4_NOISE:
            noise = ["--exposure", "1"]
            if sigma is not None:
                noise += ["--sigma", str(sigma), "--lam", str(lam)]
                label = f"σ = {sigma}, λ = {lam}"
            else:
                noise += ["--sigma", "0", "--lam", "inf"]
                label = "no noise"
            settings.append(
                Setting("table4", name, label, ["--mode", "noisy", "--psf-size", "32", *noise])
            )
        return settings
    if experiment == "figure4":
        return [
            Setting(
                "figure4",
                trajectory,
                f"{trajectory} trajectory",
                ["--mode", "tsweep", "--trajectory", trajectory, "--sigma", "0", "--lam",
                 "765000"],
            )
            for trajectory in ("linear", "random")
        ]  # fmt: skip
    raise ValueError(f"unknown experiment {experiment!r}")


class Runner:
    """Runs commands with a log each, recording them in ``<out>/commands.txt``."""

    def __init__(self, out: Path, work: Path):
        self.commands = out / "commands.txt"
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def __call__(self, command: list[str], log_name: str, env: dict | None = None) -> float:
        return run_logged(command, self.logs / log_name, record=self.commands, env=env)


def generate_setting_data(
    args: argparse.Namespace, setting: Setting, train_data: Path, test_data: Path, run
) -> None:
    """The training and held-out test sets of one setting (each skipped when it exists).

    ``args`` gives ``work``, ``extra_photographs``, ``train_count``, ``test_count``,
    ``patch_size`` (the training crops' side) and ``test_size``; ``run(command, log_name)`` runs
    a command. Training seed 0, test seed 1, as every script of this folder uses them.
    """
    train_photos, test_photos = photo_folders(args.work, args.extra_photographs)
    name = f"{setting.experiment}-{setting.name}"
    generate = [CSB_GENERATE, *setting.generate, "--no-preview"]
    sweep = "tsweep" in setting.generate
    # A T-sweep counts per T: the same number of training images in all, spread over the 6 T.
    train_count = max(args.train_count // 6, 2) if sweep else args.train_count
    if not (train_data / "manifest.json").exists():
        run(
            [*generate, "--source", str(train_photos), "--count", str(train_count),
             "--image-size", str(args.patch_size), "--out", str(train_data), "--seed", "0"],
            f"{name}-generate-train.log",
        )  # fmt: skip
    if sweep:
        # The test images are blurred by the training trajectory (the thesis's Figure 4 follows
        # one trajectory through T); only the photographs are new.
        manifest = json.loads((train_data / "manifest.json").read_text())
        position = generate.index("--trajectory") + 1
        generate[position] = str(train_data / manifest["trajectory_file"])
    if not (test_data / "manifest.json").exists():
        run(
            [*generate, "--source", str(test_photos), "--count", str(args.test_count),
             "--image-size", str(args.test_size), "--out", str(test_data), "--seed", "1"],
            f"{name}-generate-test.log",
        )  # fmt: skip


def run_setting(args: argparse.Namespace, setting: Setting, run: Runner) -> Path:
    """Generate, train, evaluate one setting; returns its report folder."""
    base = args.work / setting.experiment / setting.name
    train_data, test_data = base / "train", base / "test"
    report = args.out / setting.experiment / setting.name
    generate_setting_data(args, setting, train_data, test_data, run)
    model_dir = base / "run"
    if not (model_dir / "checkpoint.pt").exists():
        run(
            [DIFFDEBLUR, "train", "--data", str(train_data), "--out", str(model_dir),
             "--variant", args.variant, "--parametrisation", args.parametrisation,
             "--patch-size", str(args.patch_size), "--batch-size", str(args.batch_size),
             "--lr", str(args.lr), *args.train_extra, "--samples-per-epoch", "1024",
             "--checkpoint-every", "200", "--validate-every", "100000",
             "--device", args.device, "--quiet",
             *(["--budget-minutes", str(args.budget_minutes)] if args.budget_minutes else []),
             *(["--max-steps", str(args.max_steps)] if args.max_steps else [])],
            f"{setting.experiment}-{setting.name}-train.log",
            training_environment(args.spin),
        )  # fmt: skip
    loss_curve = model_dir / "loss.png"
    if loss_curve.exists():
        shutil.copy(loss_curve, args.out / setting.experiment / f"{setting.name}-loss.png")
    if not (report / "report.md").exists():
        lpips = ["--lpips-weights", args.lpips_weights] if args.lpips_weights else ["--no-lpips"]
        run(
            [DIFFDEBLUR, "evaluate", "--checkpoint", str(model_dir / "checkpoint.pt"),
             "--data", str(test_data), "--wiener-tune", str(train_data), "--wiener-rotated",
             "--tune-limit", str(args.tune_count), "--patch-size", str(args.patch_size),
             "--sampler", args.sampler, "--steps", str(args.ddim_steps),
             "--device", args.device, "--quiet", "--overwrite",
             "--title", f"{setting.experiment}: {setting.label}", "--out", str(report), *lpips],
            f"{setting.experiment}-{setting.name}-evaluate.log",
        )  # fmt: skip
    return report


def _summary(report: Path) -> dict:
    return json.loads((report / "metrics.json").read_text())


def _cell(entry: dict) -> str:
    lpips = "n/a" if entry["lpips"] != entry["lpips"] else f"{entry['lpips']:.3f}"
    return f"{entry['psnr']:.2f} / {entry['ssim']:.3f} / {lpips}"


def write_tables(args: argparse.Namespace, experiment: str, reports: dict[str, Path]) -> Path:
    """``<out>/<experiment>/results.md``: one row per method, one column per setting (or per T
    for Figure 4, with the plots)."""
    folder = args.out / experiment
    lines = [f"# {experiment}", ""]
    labels = {s.name: s.label for s in settings_of(experiment)}
    if experiment in ("table3", "table4"):
        documents = {name: _summary(path) for name, path in reports.items()}
        lines += [
            "PSNR (dB) / SSIM / LPIPS of the central patch of held-out test images.",
            "",
            "| method | " + " | ".join(labels[n] for n in documents) + " |",
            "|---" * (len(documents) + 1) + "|",
        ]
        methods = [e["method"] for e in next(iter(documents.values()))["summary"]]
        for method in methods:
            cells = []
            for document in documents.values():
                entry = next(e for e in document["summary"] if e["method"] == method)
                cells.append(_cell(entry))
            lines.append(f"| {METHOD_LABELS[method]} | " + " | ".join(cells) + " |")
    else:
        for name, path in reports.items():
            document = _summary(path)
            lines += [f"## {labels[name]}", "", "| T | method | PSNR | SSIM | LPIPS |",
                      "|---|---|---|---|---|"]  # fmt: skip
            for entry in document["by_exposure"]:
                lines.append(
                    f"| {entry['exposure']:g} | {METHOD_LABELS[entry['method']]} | "
                    + " | ".join(_cell(entry).split(" / "))
                    + " |"
                )
            shutil.copy(path / "exposure.png", folder / f"{name}-exposure.png")
            lines += ["", f"![PSNR against T, {labels[name]}]({name}-exposure.png)", ""]
    lines += ["", "Reports with examples: " + ", ".join(f"`{n}/report.md`" for n in reports)]
    path = folder / "results.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _model_cells(out: Path, experiment: str, setting: str) -> dict[str, dict]:
    """The model's scores of one setting of a results folder, per column (per T for Figure 4)."""
    document = _summary(out / experiment / setting)
    if experiment == "figure4":
        entries = [e for e in document["by_exposure"] if e["method"] == "model"]
        return {f"{setting}, T = {e['exposure']:g}": e for e in entries}
    return {setting: next(e for e in document["summary"] if e["method"] == "model")}


def _change(difference: float, places: int) -> str:
    return "n/a" if math.isnan(difference) else f"{difference:+.{places}f}"


def write_comparison(out: Path, previous: Path) -> Path:
    """``<out>/comparison.md``: the model rows of ``out`` against those of an earlier run's
    results folder, cell by cell, with the change (on the same test crops)."""
    lines = [
        f"# The model rows of `{out.name}` against `{previous.name}`",
        "",
        "PSNR (dB) / SSIM / LPIPS of the model on the same held-out test crops; change = this "
        "run minus the earlier one.",
        "",
        "| experiment | setting | earlier | this run | change (PSNR / SSIM / LPIPS) |",
        "|---|---|---|---|---|",
    ]
    for experiment in EXPERIMENTS:
        for setting in settings_of(experiment):
            if not (out / experiment / setting.name / "metrics.json").exists():
                continue
            earlier = _model_cells(previous, experiment, setting.name)
            now = _model_cells(out, experiment, setting.name)
            for column, entry in now.items():
                before = earlier[column]
                change = " / ".join(
                    _change(entry[key] - before[key], places)
                    for key, places in (("psnr", 2), ("ssim", 3), ("lpips", 3))
                )
                lines.append(
                    f"| {experiment} | {column} | {_cell(before)} | {_cell(entry)} | {change} |"
                )
    path = out / "comparison.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def training_photographs(args: argparse.Namespace) -> list[dict]:
    """What the training crops were cut from: each photograph with its source and licence."""
    builtin = [
        {"name": p.name, "package": "scikit-image (PyPI)", "author": p.credit, "licence": p.licence}
        for p in BUILTIN_PHOTOGRAPHS.values()
        if p.name not in TEST_PHOTOGRAPHS
    ]
    packaged = [
        {"name": p.name, "package": p.package, "author": p.author, "licence": p.licence}
        for p in extra_photographs(args.extra_photographs)
    ]
    return builtin + packaged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--work", type=Path, required=True, help="datasets and runs (large)")
    parser.add_argument("--out", type=Path, required=True, help="results: tables and plots")
    parser.add_argument("--budget-minutes", type=float, default=5.0, help="training per model")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on optimiser steps")
    parser.add_argument("--parametrisation", default="regression")
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--test-size", type=int, default=96, help="side of the test crops, px")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--train-count", type=int, default=4000, help="per setting (per T)")
    parser.add_argument("--test-count", type=int, default=48, help="per setting (per T)")
    parser.add_argument("--tune-count", type=int, default=64, help="Wiener tuning images")
    parser.add_argument(
        "--ddim-steps", type=int, default=20, help="sampling steps (DDIM, or the bridge's)"
    )
    parser.add_argument("--lpips-weights", default=None, help="LPIPS weights file")
    parser.add_argument("--sampler", choices=["ddim", "ddpm", "bridge"], default="ddim")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument(
        "--preset",
        choices=["cpu", "thesis", "bundled"],
        default="cpu",
        help="cpu: the options above; thesis: the thesis's recipe for a GPU (base U-Net, sharp "
        "image diffused, 4000 epochs of 1024 patches, batch 16, DDPM over 1000 steps; no budget); "
        "bundled: the bundled model's configuration (bridge, Charbonnier loss, lr 1e-3, "
        "--precision auto on all cores, one bridge step) within --budget-minutes",
    )
    add_spin_option(parser)
    parser.add_argument(
        "--extra-photographs",
        choices=SELECTIONS,
        default="pypi",
        help="training photographs besides the built-in ones: none; pypi (matplotlib's); debian "
        "(also 8 KDE wallpaper photographs: apt-get install plasma-workspace-wallpapers)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="CI size: a few samples, 2 training steps"
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        metavar="RESULTS",
        help="an earlier run's --out on the same test crops: write comparison.md, the model "
        "rows cell by cell against it",
    )
    args = parser.parse_args()
    try:
        extra_photographs(args.extra_photographs)
    except FileNotFoundError as error:
        parser.error(f"--extra-photographs {args.extra_photographs}: {error}")
    if args.compare_with is not None and not (args.compare_with / "settings.json").is_file():
        parser.error(f"--compare-with {args.compare_with} is not a results folder of this script")
    selection_record = args.work / "extra-photographs.txt"
    if selection_record.exists() and selection_record.read_text().strip() != args.extra_photographs:
        parser.error(
            f"--work {args.work} holds data made with --extra-photographs "
            f"{selection_record.read_text().strip()}; use another --work folder"
        )
    # CPU budget runs: short warm-up and EMA so that a few hundred steps count; epochs are
    # unlimited and the budget stops the run.
    args.train_extra = ["--warmup-steps", "100", "--ema-decay", "0.999", "--epochs", "100000"]
    if args.preset == "thesis":
        args.variant, args.parametrisation, args.batch_size = "base", "sharp", 16
        args.sampler, args.device, args.budget_minutes = "ddpm", "auto", None
        args.train_extra = ["--warmup-steps", "500", "--ema-decay", "0.9999", "--epochs", "4000"]
        args.train_extra += ["--prediction", "eps"]  # the thesis's; the tool's default is v
    if args.preset == "bundled":
        args.parametrisation, args.lr, args.sampler, args.ddim_steps = "bridge", 1e-3, "bridge", 1
        args.train_extra += ["--loss", "charbonnier", "--precision", "auto"]
    if args.tiny:
        args.train_count, args.test_count, args.tune_count = 16, 4, 4
        args.patch_size, args.test_size, args.max_steps, args.ddim_steps = 32, 48, 2, 2
    chosen = EXPERIMENTS if "all" in args.experiments else tuple(dict.fromkeys(args.experiments))
    args.work.mkdir(parents=True, exist_ok=True)
    selection_record.write_text(args.extra_photographs + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    run = Runner(args.out, args.work)
    for experiment in chosen:
        (args.out / experiment).mkdir(parents=True, exist_ok=True)
        reports = {s.name: run_setting(args, s, run) for s in settings_of(experiment)}
        print("wrote", write_tables(args, experiment, reports), flush=True)
    if args.compare_with is not None:
        print("wrote", write_comparison(args.out, args.compare_with), flush=True)
    (args.out / "photographs.json").write_text(json.dumps(training_photographs(args), indent=2))
    (args.out / "settings.json").write_text(
        json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
