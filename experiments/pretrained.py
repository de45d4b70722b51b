"""Train, export and score the bundled model ``csb-universal`` (docs/models.md, its model card).

Stages, each skipped when its output exists (rerun the same command to continue after an
interruption):

1. ``data``: one training set per setting of the thesis's experiments (``thesis.py``: Table 3's
   PSF 16, 32 and 64 px; Table 4's four noise levels at PSF 32; Figure 4's T-sweeps with a
   linear and a shaky trajectory), cut from every training photograph and none of the held-out
   ones, with the same commands and seeds as ``thesis.py``; and the matching held-out test sets.
   The training sets lie side by side in ``<work>/train``, which ``diffdeblur train`` reads as
   one mixture. Part 2's mixture, ``<work>/train-part2``, holds the same sets (hard links) and
   more PSF 16 crops of the same photographs, so that PSF 16 has ``--psf16-share`` times the
   crops of every other setting.
2. ``train`` (part 1): one ``tiny`` network on the whole mixture, with the configuration the
   comparison of ``parametrisations.py`` found best (the bridge, Charbonnier loss, lr 1e-3,
   batch 8, bf16 where the CPU has it), for ``--budget-minutes``. ``--more-minutes M`` resumes
   the run for M more minutes: the budget may be spent in parts.
3. ``finetune`` (part 2): part 1's EMA weights, exported in float16 to ``<work>/part1.pt`` with
   their facts, trained on for ``--finetune-minutes`` with an LPIPS term of weight
   ``--lpips-loss-weight`` added to the Charbonnier loss, the learning rate warmed up to
   ``--finetune-lr`` and decayed to 0 (cosine), on part 2's mixture. Part 1 alone smooths away
   the texture under mild noise (docs/models.md); on the uniform mixture the LPIPS term cost
   PSNR at PSF 16, the mildest blur, where the blurred input leaves the least margin
   (``experiments/results/pretrained/part2-pilots.md``).
4. ``export``: the EMA weights of the last part in float16 with the model card's facts
   (commands, data recipe, steps, samples seen, wall time of each part) to ``--model-file`` (by
   default the package's bundled file).
5. ``score``: ``diffdeblur evaluate`` of the exported file on every test set, against the blurred
   input and Wiener given the true kernel (tuned on the setting's training crops), under the
   ``central`` and ``context`` protocols; the tables go to ``<out>/results.md`` and
   ``results.json``; and restorations of the held-out photograph ``chelsea`` (blurred here at
   PSF 32) and of the real motion-blurred ``clock_motion`` as pictures.

    python experiments/pretrained.py --work /tmp/pretrained --out experiments/results/pretrained \\
        --budget-minutes 60 --finetune-minutes 30 --spin --lpips-weights lpips-alex-v0.1.pt
    python experiments/pretrained.py --work /tmp/p --out /tmp/p/out --tiny \\
        --lpips-weights lpips-alex-v0.1.pt  # CI size
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from csb_generator import builtin_folder, read_image
from diffdeblur.checkpoint import export_model, load_checkpoint
from photographs import extra_photographs
from pipeline import (
    CSB_GENERATE,
    DIFFDEBLUR,
    TEST_PHOTOGRAPHS,
    add_spin_option,
    blurred_photograph,
    photo_folders,
    picture,
    run_logged,
    training_environment,
)
from thesis import (
    EXPERIMENTS,
    Setting,
    generate_setting_data,
    settings_of,
    training_photographs,
)

#: The package's bundled weights, which ``export`` writes by default.
BUNDLED = (
    Path(__file__).resolve().parents[1]
    / "packages/diffdeblur/src/diffdeblur/models/csb-universal.pt"
)

#: The training configuration (``parametrisations.py``'s best row: ``bridge-charbonnier``).
TRAIN_OPTIONS = [
    "--variant", "tiny", "--parametrisation", "bridge", "--loss", "charbonnier",
    "--batch-size", "8", "--lr", "1e-3", "--warmup-steps", "100",
    "--ema-decay", "0.999", "--epochs", "100000", "--samples-per-epoch", "1024",
    "--checkpoint-every", "200", "--validate-every", "100000", "--seed", "0",
]  # fmt: skip

#: Part 2's weight of the LPIPS term in the loss (``diffdeblur train --lpips-loss-weight``).
LPIPS_LOSS_WEIGHT = 0.1

#: How many times the crops of every other setting PSF 16 has in part 2's mixture.
PSF16_SHARE = 3

#: The extra PSF 16 set of part 2's mixture, and its csb-generate seed (the training sets use 0,
#: the test sets 1, the validation sets of part2-pilots.md 2).
PSF16_MORE, PSF16_MORE_SEED = "table3-psf16-more", 3

PROTOCOLS = ("central", "context")
STAGES = ("data", "train", "finetune", "export", "score")


def settings() -> list[Setting]:
    """Every setting of the thesis's three experiments, in their order."""
    return [setting for experiment in EXPERIMENTS for setting in settings_of(experiment)]


def make_data(args: argparse.Namespace, run) -> None:
    """Training and test sets of every setting (stage 1), as ``thesis.py`` makes them, and part
    2's mixture."""
    for setting in settings():
        name = f"{setting.experiment}-{setting.name}"
        generate_setting_data(
            args, setting, args.work / "train" / name, args.work / "test" / name, run
        )
    make_part2_mixture(args, run)


def part2_data(args: argparse.Namespace) -> Path:
    """The folder part 2 trains on."""
    return args.work / ("train-part2" if args.psf16_share > 1 else "train")


def make_part2_mixture(args: argparse.Namespace, run) -> None:
    """Part 2's mixture: part 1's training sets, hard-linked (no second copy on disk), and
    ``(--psf16-share - 1) × --train-count`` more PSF 16 crops of the training photographs."""
    mixture = part2_data(args)
    if mixture == args.work / "train":
        return
    for dataset in sorted((args.work / "train").iterdir()):
        target = mixture / dataset.name
        if not target.exists():
            # Under a temporary name: an interrupted copy is never taken for a whole one.
            partial = mixture / f".{dataset.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(dataset, partial, copy_function=os.link)
            partial.rename(target)
    more = mixture / PSF16_MORE
    if not (more / "manifest.json").exists():
        psf16 = next(s for s in settings() if (s.experiment, s.name) == ("table3", "psf16"))
        train_photos, _ = photo_folders(args.work, args.extra_photographs)
        run([CSB_GENERATE, *psf16.generate, "--no-preview", "--source", str(train_photos),
             "--count", str((args.psf16_share - 1) * args.train_count),
             "--image-size", str(args.patch_size), "--out", str(more),
             "--seed", str(PSF16_MORE_SEED)], f"{PSF16_MORE}-generate-train.log")  # fmt: skip


def _train_part(
    args: argparse.Namespace,
    run,
    folder: Path,
    data: Path,
    options: list[str],
    minutes: float,
    more: float | None,
) -> None:
    """One training run in ``folder``: started for ``minutes``, or, when its checkpoint exists,
    resumed for ``more`` minutes (when given) or left as it is. Each finished invocation is
    recorded, with its wall time, in ``<folder>/parts.json``; a run interrupted before its
    first one finished has no record, and is refused rather than counted without its time."""
    checkpoint = folder / "checkpoint.pt"
    command = [DIFFDEBLUR, "train", "--data", str(data), "--out", str(folder),
               *options, "--patch-size", str(args.patch_size), "--quiet"]  # fmt: skip
    if args.max_steps:
        command += ["--max-steps", str(args.max_steps)]
    record = folder / "parts.json"
    done = json.loads(record.read_text()) if record.exists() else []
    if not checkpoint.exists():
        done = []
    elif not done:
        raise SystemExit(
            f"{folder} holds a training run that was interrupted before it finished (no "
            f"{record.name}); remove that folder to start it again"
        )
    elif more:
        command.append("--resume")
        minutes = more
    else:
        return
    command += ["--budget-minutes", str(minutes)]
    env = training_environment(args.spin)
    seconds = run(command, f"{folder.name}-{len(done) + 1}.log", env)
    done.append({"command": shlex.join(command), "wall_s": round(seconds, 1),
                 "omp_wait_policy": env.get("OMP_WAIT_POLICY", "PASSIVE"),
                 "finished_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
                 "machine": cpu_model()})  # fmt: skip
    record.write_text(json.dumps(done, indent=2) + "\n")


def train(args: argparse.Namespace, run) -> None:
    """Part 1: train on the mixture for the budget, or resume it for ``--more-minutes``."""
    if args.more_minutes and (args.work / "part1.pt").exists():
        raise SystemExit(
            f"--more-minutes: part 2 already started from part 1 ({args.work / 'part1.pt'}); "
            f"remove that file and {args.work / 'finetune'} to continue part 1"
        )
    _train_part(
        args,
        run,
        args.work / "run",
        args.work / "train",
        TRAIN_OPTIONS,
        args.budget_minutes,
        args.more_minutes,
    )


def part_facts(folder: Path) -> dict:
    """Steps, samples seen, wall time, rate and commands of the training run in ``folder``."""
    step = int(load_checkpoint(folder / "checkpoint.pt")["step"])
    log_file = folder / "log.jsonl"  # written every 10 steps: absent after fewer
    lines = log_file.read_text().splitlines() if log_file.exists() else []
    log = [json.loads(line) for line in lines if line]
    rates = [entry["samples_per_s"] for entry in log if "samples_per_s" in entry]
    parts = json.loads((folder / "parts.json").read_text())
    batch = int(TRAIN_OPTIONS[TRAIN_OPTIONS.index("--batch-size") + 1])
    return {
        "steps": step,
        "samples_seen": step * batch,
        "wall_minutes": round(sum(p["wall_s"] for p in parts) / 60, 1),
        "median_samples_per_s": round(float(np.median(rates)), 1) if rates else None,
        "omp_wait_policy": parts[-1]["omp_wait_policy"],
        "finished_utc": parts[-1]["finished_utc"],
        "machine": parts[-1]["machine"],
        "commands": [p["command"] for p in parts],
    }


#: The facts of a part that its exported card keeps (the rest describe the data).
PART_FACTS = ("steps", "samples_seen", "wall_minutes", "median_samples_per_s",
              "omp_wait_policy", "finished_utc", "machine", "commands")  # fmt: skip


def finetune(args: argparse.Namespace, run) -> None:
    """Part 2: part 1's weights trained on with the LPIPS term, the learning rate decayed."""
    part1 = args.work / "part1.pt"
    if not part1.exists():
        export_part(args, args.work / "run", part1, [part_facts(args.work / "run")])
    lpips = ["--lpips-weights", args.lpips_weights] if args.lpips_weights else []
    options = list(TRAIN_OPTIONS)
    options[options.index("--lr") + 1] = str(args.finetune_lr)
    options += ["--init", str(part1), "--lr-schedule", "cosine",
                "--lpips-loss-weight", str(args.lpips_loss_weight), *lpips]  # fmt: skip
    _train_part(
        args, run, args.work / "finetune", part2_data(args), options, args.finetune_minutes, None
    )


def training_parts(args: argparse.Namespace) -> tuple[Path, list[dict]]:
    """The run the model comes from, and the facts of every part that made it."""
    finetuned = args.work / "finetune"
    if (finetuned / "checkpoint.pt").exists():
        before = load_checkpoint(args.work / "part1.pt")["card"]["parts"]
        return finetuned, [*before, part_facts(finetuned)]
    return args.work / "run", [part_facts(args.work / "run")]


def totals(parts: list[dict]) -> dict:
    """Steps, samples seen, wall time and commands of all parts together."""
    return {
        "steps": sum(p["steps"] for p in parts),
        "samples_seen": sum(p["samples_seen"] for p in parts),
        "wall_minutes": round(sum(p["wall_minutes"] for p in parts), 1),
        "commands": [command for p in parts for command in p["commands"]],
    }


def export_part(args: argparse.Namespace, folder: Path, out: Path, parts: list[dict]) -> None:
    """The EMA weights of the run in ``folder`` in float16, with the card's facts, to ``out``."""
    card = {
        "name": "csb-universal",
        "exported_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        **totals(parts),
        "parts": [{key: part[key] for key in PART_FACTS} for part in parts],
        "data": [
            {"name": f"{s.experiment}-{s.name}", "label": s.label, "csb_generate": s.generate}
            for s in settings()
        ],
        "crops_per_setting": args.train_count,
        "crop_size_px": args.patch_size,
        "photographs": training_photographs(args),
        "held_out_photographs": list(TEST_PHOTOGRAPHS),
    }
    if len(parts) > 1 and args.psf16_share > 1:
        card["part2_data"] = {
            "psf16_share": args.psf16_share,
            "more": {"name": PSF16_MORE, "crops": (args.psf16_share - 1) * args.train_count,
                     "seed": PSF16_MORE_SEED},
        }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    export_model(folder / "checkpoint.pt", out, card)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB)", flush=True)


def cpu_model() -> str:
    """The CPU's model name and the cores this process may use."""
    names = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    return f"{names[0] if names else 'unknown CPU'}, {len(os.sched_getaffinity(0))} cores"


def score(args: argparse.Namespace, run) -> dict:
    """``diffdeblur evaluate`` of the exported model on every test set (stage 4); returns the
    summaries by setting and protocol. Reports are kept per model file (by its digest), so a
    retrained model is scored afresh and an interrupted scoring continues."""
    digest = hashlib.sha256(args.model_file.read_bytes()).hexdigest()[:12]
    lpips = ["--lpips-weights", args.lpips_weights] if args.lpips_weights else []
    lpips = ["--no-lpips"] if args.no_lpips else lpips
    results = {}
    for setting in settings():
        name = f"{setting.experiment}-{setting.name}"
        for protocol in PROTOCOLS:
            report = args.work / "reports" / digest / f"{name}-{protocol}"
            if not (report / "metrics.json").exists():
                run(
                    [DIFFDEBLUR, "evaluate", "--checkpoint", str(args.model_file),
                     "--data", str(args.work / "test" / name),
                     "--wiener-tune", str(args.work / "train" / name), "--tune-limit",
                     str(args.tune_count), "--protocol", protocol, "--patch-size",
                     str(args.patch_size), "--device", "cpu", "--quiet", "--overwrite",
                     "--title", f"csb-universal: {setting.label} ({protocol})",
                     "--out", str(report), *lpips],
                    f"evaluate-{name}-{protocol}.log",
                )  # fmt: skip
            metrics = json.loads((report / "metrics.json").read_text())
            results[f"{name}/{protocol}"] = {
                "setting": name,
                "label": setting.label,
                "protocol": protocol,
                "summary": metrics["summary"],
                "by_exposure": metrics.get("by_exposure") or [],
            }
            if protocol == "central" and name == "table3-psf32":
                shutil.copy(report / "examples.png", args.out / "examples-psf32.png")
    return results


def _cell(entry: dict) -> str:
    lpips = "n/a" if entry["lpips"] != entry["lpips"] else f"{entry['lpips']:.3f}"
    return f"{entry['psnr']:.2f} / {entry['ssim']:.3f} / {lpips}"


def results_table(results: dict, protocol: str) -> list[str]:
    """One row per setting (per T for the T-sweeps): Blurred, Wiener (true kernel) and the
    model, with the model's PSNR and LPIPS against the blurred input's."""
    lines = [
        "| setting | Blurred | Wiener, true kernel | csb-universal | Δ PSNR vs Blurred "
        "| Δ LPIPS vs Blurred |",
        "|---|---|---|---|---:|---:|",
    ]
    for entry in (e for e in results.values() if e["protocol"] == protocol):
        groups = [(entry["label"], entry["summary"])]
        exposures = sorted({e["exposure"] for e in entry["by_exposure"]}, reverse=True)
        if len(exposures) > 1:
            groups = [
                (f"{entry['label']}, T = {fraction(t)}",
                 [e for e in entry["by_exposure"] if e["exposure"] == t])
                for t in exposures
            ]  # fmt: skip
        for label, rows in groups:
            by_method = {row["method"]: row for row in rows}
            model, blurred = by_method["model"], by_method["blurred"]
            lines.append(
                f"| {label} | {_cell(blurred)} | {_cell(by_method['wiener'])} | {_cell(model)} "
                f"| {model['psnr'] - blurred['psnr']:+.2f} | "
                f"{model['lpips'] - blurred['lpips']:+.3f} |"
            )
    return lines


def fraction(exposure: float) -> str:
    """1, 1/2, 1/4, ... for the T-sweep's exposures."""
    return "1" if exposure == 1 else f"1/{round(1 / exposure)}"


def pictures(args: argparse.Namespace, run) -> None:
    """Restorations of the held-out ``chelsea`` (blurred here at PSF 32) and of the real
    ``clock_motion``, by the exported model, side by side with their inputs."""
    from diffdeblur.metrics import psnr

    folder = args.work / "pictures"
    folder.mkdir(exist_ok=True)
    blurred_path, sharp_path, _ = blurred_photograph(folder, seed=0)
    clock = builtin_folder() / "clock_motion.png"
    restored = folder / "restored"
    run(
        [DIFFDEBLUR, "restore", "--checkpoint", str(args.model_file), str(blurred_path),
         str(clock), "--out", str(restored), "--device", "cpu", "--quiet", "--overwrite"],
        "restore-pictures.log",
    )  # fmt: skip
    sharp = read_image(sharp_path)

    def db(image: np.ndarray) -> str:
        pair = [torch.from_numpy(a / 255.0).permute(2, 0, 1)[None] for a in (image, sharp)]
        return f"{float(psnr(*pair)):.2f} dB"

    blurred, model = read_image(blurred_path), read_image(restored / blurred_path.name)
    picture(
        args.out / "restorations.png",
        [
            ("held-out chelsea, PSF 32",
             [(f"blurred {db(blurred)}", blurred), (f"csb-universal {db(model)}", model),
              ("sharp", sharp)]),
            ("real motion blur",
             [("blurred (clock_motion)", read_image(clock)),
              ("csb-universal", read_image(restored / clock.name))]),
        ],
    )  # fmt: skip


def write_results(args: argparse.Namespace, parts: list[dict], results: dict) -> None:
    """``<out>/results.md`` and ``results.json``."""
    size = args.model_file.stat().st_size / 2**20
    total = totals(parts)
    lines = [
        "# csb-universal on held-out photographs",
        "",
        f"Model file: {args.model_file.name}, {size:.2f} MiB (float16). Trained "
        f"{total['wall_minutes']} min, {total['steps']:,} steps, {total['samples_seen']:,} "
        f"samples seen, in {len(parts)} part(s):",
        "",
        *(
            f"{number}. {part['wall_minutes']} min, {part['steps']:,} steps (median "
            f"{part['median_samples_per_s']} samples/s, OMP_WAIT_POLICY="
            f"{part['omp_wait_policy']}, finished {part['finished_utc']} UTC): "
            f"`{part['commands'][-1]}`"
            for number, part in enumerate(parts, 1)
        ),
        "",
        "Cells are PSNR (dB) / SSIM / LPIPS over the 48 test crops (per T for the T-sweeps) of "
        "`chelsea` and `coffee`, scored on their central 64 px. Wiener is given each crop's "
        "true kernel and tuned on the setting's training crops. The model restores in one pass "
        "and is given nothing but the blurred crop.",
    ]
    for protocol, text in (
        ("central", "restores the central 64 px alone (the thesis's protocol)"),
        ("context", "restores the whole 96 px crop, then scores its central 64 px"),
    ):
        lines += ["", f"## Protocol `{protocol}`: {text}", "", *results_table(results, protocol)]
    lines += [
        "",
        "![held-out and real restorations](restorations.png)",
        "",
        "![test crops, PSF 32](examples-psf32.png)",
    ]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    (args.out / "results.json").write_text(
        json.dumps({"training": {**total, "parts": parts}, "results": results}, indent=2) + "\n"
    )
    print(f"wrote {args.out / 'results.md'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="datasets and the run (large)")
    parser.add_argument("--out", type=Path, required=True, help="results: tables and pictures")
    parser.add_argument("--budget-minutes", type=float, default=60.0, help="first training part")
    parser.add_argument("--more-minutes", type=float, default=None, help="resume part 1")
    parser.add_argument("--finetune-minutes", type=float, default=30.0, help="part 2's budget")
    parser.add_argument(
        "--lpips-loss-weight",
        type=float,
        default=LPIPS_LOSS_WEIGHT,
        help="part 2's LPIPS term (train's option)",
    )
    parser.add_argument("--finetune-lr", type=float, default=5e-5, help="part 2's peak rate")
    parser.add_argument(
        "--psf16-share",
        type=int,
        default=PSF16_SHARE,
        help="PSF 16's crops in part 2's mixture, in multiples of every other setting's",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="cap per training part")
    parser.add_argument("--model-file", type=Path, default=BUNDLED, help="where export writes")
    parser.add_argument("--train-count", type=int, default=4000, help="per setting (per sweep)")
    parser.add_argument("--test-count", type=int, default=48, help="per setting (per T)")
    parser.add_argument("--patch-size", type=int, default=64, help="training crops and patches")
    parser.add_argument("--test-size", type=int, default=96, help="side of the test crops, px")
    parser.add_argument("--tune-count", type=int, default=64, help="Wiener tuning crops")
    parser.add_argument("--lpips-weights", default=None, help="LPIPS weights (part 2, scores)")
    parser.add_argument("--no-lpips", action="store_true", help="score PSNR and SSIM only")
    parser.add_argument(
        "--extra-photographs",
        default="debian",
        choices=["pypi", "debian"],
        help="training photographs besides the built-in ones (photographs.py)",
    )
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    add_spin_option(parser)
    parser.add_argument("--tiny", action="store_true", help="CI size: a few samples and steps")
    args = parser.parse_args()
    if args.tiny:
        args.train_count, args.test_count, args.patch_size, args.test_size = 12, 2, 32, 48
        args.tune_count = 4
        args.max_steps = args.max_steps or 2
    if args.psf16_share < 1:
        parser.error(f"--psf16-share must be 1 or more, got {args.psf16_share}")
    try:
        extra_photographs(args.extra_photographs)
    except FileNotFoundError as error:
        parser.error(f"--extra-photographs {args.extra_photographs}: {error}")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.work / "logs"
    logs.mkdir(exist_ok=True)

    def run(command: list[str], log_name: str, env: dict[str, str] | None = None) -> float:
        return run_logged(command, logs / log_name, record=args.out / "commands.txt", env=env)

    if "data" in args.stages:
        make_data(args, run)
    if "train" in args.stages:
        train(args, run)
    if "finetune" in args.stages and args.finetune_minutes > 0:
        finetune(args, run)
    folder, parts = training_parts(args)
    print(json.dumps(totals(parts), indent=2), file=sys.stderr)
    if "export" in args.stages:
        export_part(args, folder, args.model_file, parts)
    if "score" in args.stages:
        results = score(args, run)
        pictures(args, run)
        write_results(args, parts, results)


if __name__ == "__main__":
    main()
