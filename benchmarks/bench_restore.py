"""Time and peak memory of ``diffdeblur restore`` on one 1280x720 frame, per patch size and overlap.

Run from the repository root, in the development environment:

    python benchmarks/bench_restore.py --checkpoint RUN/checkpoint.pt
    python benchmarks/bench_restore.py --checkpoint RUN/checkpoint.pt --patch-sizes 64 \\
        --overlaps 0 16 --steps 3 --threads 1                  # a cheaper run
    python benchmarks/bench_restore.py --quick    # seconds: tiny model, 320x180 image, 2 steps

The image is a real photograph at the GoPro frame size (1280x720 RGB, 8 bit): scikit-image's
``rocket`` (SpaceX's launch photograph of DSCOVR, 640x427) cropped to 16:9 around its centre
(640x360), upscaled 2x with a bicubic spline (``skimage.transform.resize(order=3)``) and
blurred with a seeded camera-shake kernel (``csb_generator.random_psf(sample_rng(seed, 0), 32,
length=16)``, ``csb_generator.blur``), so that the input looks like what the command is for;
the time does not depend on the content. It is written as ``frame.png`` into a temporary folder.

For every patch size P of ``--patch-sizes`` (default 32 64 128) and overlap O of ``--overlaps``
(default 0 8 16 32; only O < P) the real command line runs in a fresh process:

    /usr/bin/time -v diffdeblur restore --checkpoint CKPT frame.png --out DIR --sampler ddim \\
        --steps S --patch-size P --overlap O --batch-size B --device cpu --quiet --overwrite

once with ``--steps S`` (default 5) and once with ``--steps 1``; the time per sampling step is
``(wall(S) - wall(1)) / (S - 1)``, which leaves out what both runs share (starting Python,
importing torch, loading the checkpoint, reading and writing the image, the first step's
kernel set-up). Patches per second = patches x (S - 1) / that difference, where the number of
patches is ``len(diffdeblur.tiling.PatchGrid(720, 1280, P, O))`` and every step runs the network
on every patch (``--batch-size`` patches per call, default 16). Wall time and peak memory
(maximum resident set size of the ``diffdeblur`` process, which holds the model, the patches and
the full-size images) are parsed from the output of GNU ``/usr/bin/time -v``. Where that program
is missing, each run is started from a small Python wrapper process instead, which times it with
``time.perf_counter`` and reads its peak memory from ``resource.getrusage(RUSAGE_CHILDREN)``;
the results file says which was used. A model trained on 64 px patches runs on other patch sizes
(the U-Net is convolutional), but restores best at its own.

``--threads N`` sets ``OMP_NUM_THREADS=N`` for the restore processes (PyTorch's intra-op threads;
default: the environment's, else one per core). Only the default DDIM sampler (eta 0) is timed:
a DDPM step costs the same network calls.

Results, rewritten after every configuration, in ``--out`` (default ``benchmarks/results/``):
``restore.json`` (every run, the machine), ``restore.md`` (the table) and ``restore.png`` (time
per step against the number of patches, and peak memory against overlap, per patch size).
``--quick`` writes ``restore-quick.*`` instead, so that a check never replaces real results.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from diffdeblur.tiling import PatchGrid
from machine import describe
from run_options import add_run_options
from tiny_inputs import console_script, tiny_checkpoint, tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STEM = "restore"
GNU_TIME = Path("/usr/bin/time")

# Fallback without GNU time: run the command from this wrapper and report what it measured.
_WRAPPER = textwrap.dedent(
    """
    import json, resource, subprocess, sys, time
    start = time.perf_counter()
    code = subprocess.run(sys.argv[2:]).returncode
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(sys.argv[1], "w") as handle:
        json.dump({"wall_s": wall, "peak_rss_kib": usage.ru_maxrss,
                   "user_s": usage.ru_utime, "system_s": usage.ru_stime}, handle)
    sys.exit(code)
    """
)


def frame(width: int = 1280, height: int = 720, seed: int = 0) -> np.ndarray:
    """A blurred photograph of ``width`` x ``height`` pixels, RGB uint8.

    ``skimage.data.rocket()`` (640x427) is cropped around its centre to the aspect ratio of the
    frame, resized to the frame with a bicubic spline (upscaled 2x for 1280x720) and blurred
    with a camera-shake kernel of 32 px (trajectory length 16 px) drawn from ``seed``.

    Parameters
    ----------
    width, height : int
        Frame size in pixels.
    seed : int
        Seed of the blur kernel (``csb_generator.sample_rng(seed, 0)``).

    Returns
    -------
    ndarray, shape (height, width, 3), uint8
    """
    import csb_generator as csb
    import skimage.data
    import skimage.transform

    photo = skimage.data.rocket()
    rows, columns = photo.shape[:2]
    if columns * height >= rows * width:  # wider than the frame: keep every row
        keep = round(rows * width / height)
        left = (columns - keep) // 2
        photo = photo[:, left : left + keep]
    else:
        keep = round(columns * height / width)
        top = (rows - keep) // 2
        photo = photo[top : top + keep]
    resized = skimage.transform.resize(
        photo, (height, width), order=3, anti_aliasing=photo.shape[0] > height
    )
    kernel = csb.random_psf(csb.sample_rng(seed, 0), 32, length=16.0).kernel
    blurred = np.clip(csb.blur(np.clip(resized, 0, 1), kernel), 0, 1)
    return np.rint(blurred * 255).astype(np.uint8)


def _parse_gnu_time(report: str) -> dict:
    """Wall time, peak memory and CPU times from the report of ``/usr/bin/time -v``."""
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", report)
    hours, minutes, seconds = (float(group or 0) for group in wall.groups())
    return {
        "wall_s": hours * 3600 + minutes * 60 + seconds,
        "peak_rss_kib": int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)[1]),
        "user_s": float(re.search(r"User time \(seconds\): ([\d.]+)", report)[1]),
        "system_s": float(re.search(r"System time \(seconds\): ([\d.]+)", report)[1]),
    }


def measure(command: list[str], env: dict[str, str], scratch: Path) -> dict:
    """Run ``command`` once in a fresh process; its wall time, peak memory and CPU time.

    Parameters
    ----------
    command : list of str
        The command line.
    env : dict
        Its environment.
    scratch : Path
        A folder for the fallback wrapper's report.

    Returns
    -------
    dict
        ``wall_s`` (GNU time's elapsed time, or the wrapper's ``perf_counter``),
        ``perf_counter_s`` (measured here, around the whole launch), ``peak_rss_mib``,
        ``user_s``, ``system_s``.

    Raises
    ------
    RuntimeError
        If the command fails (its error output is in the message).
    """
    if GNU_TIME.is_file() and os.access(GNU_TIME, os.X_OK):
        wrapped = [str(GNU_TIME), "-v", *command]
    else:
        report = scratch / "usage.json"
        wrapped = [sys.executable, "-c", _WRAPPER, str(report), *command]
    start = time.perf_counter()
    done = subprocess.run(wrapped, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    if wrapped[0] == str(GNU_TIME):
        usage = _parse_gnu_time(done.stderr)
    else:
        usage = json.loads(report.read_text())
    return {
        "wall_s": usage["wall_s"],
        "perf_counter_s": elapsed,
        "peak_rss_mib": usage["peak_rss_kib"] / 1024,
        "user_s": usage["user_s"],
        "system_s": usage["system_s"],
    }


def configuration(
    restore: list[str],
    patch: int,
    overlap: int,
    steps: int,
    *,
    shape: tuple[int, int],
    batch_size: int,
    baseline: bool,
    repeat: int,
    env: dict[str, str],
    scratch: Path,
) -> dict:
    """Measure one (patch size, overlap): runs with ``steps`` and, with ``baseline``, 1 step.

    Parameters
    ----------
    restore : list of str
        ``diffdeblur restore`` with the options every configuration shares.
    patch, overlap, steps : int
    shape : (int, int)
        Height and width of the image.
    batch_size : int
        Patches per network call.
    baseline : bool
        Also run with one step, and take the difference.
    repeat : int
        Runs of each command; the fastest is kept.
    env : dict
        Environment of the runs.
    scratch : Path
        Scratch folder.

    Returns
    -------
    dict
        The configuration, ``patches``, ``calls_per_step``, ``run`` (the ``steps`` run),
        ``baseline_run`` (or None), ``s_per_step``, ``patches_per_s``, ``peak_rss_mib``.
    """
    patches = len(PatchGrid(shape[0], shape[1], patch, overlap))
    options = ["--patch-size", str(patch), "--overlap", str(overlap)]

    def best(count: int) -> dict:
        runs = [
            measure([*restore, "--steps", str(count), *options], env, scratch)
            for _ in range(repeat)
        ]
        return min(runs, key=lambda run: run["wall_s"])

    full = best(steps)
    one = best(1) if baseline else None
    if one is not None:
        per_step = (full["wall_s"] - one["wall_s"]) / (steps - 1)
    else:
        per_step = full["wall_s"] / steps  # start-up included
    return {
        "patch_size": patch,
        "overlap": overlap,
        "patches": patches,
        "calls_per_step": -(-patches // batch_size),
        "steps": steps,
        "run": full,
        "baseline_run": one,
        "s_per_step": per_step,
        "patches_per_s": patches / per_step if per_step > 0 else float("nan"),
        "peak_rss_mib": max(full["peak_rss_mib"], one["peak_rss_mib"] if one else 0.0),
    }


def markdown(payload: dict) -> str:
    """The results as a Markdown document with one table.

    Parameters
    ----------
    payload : dict
        What :func:`main` writes to the JSON file.

    Returns
    -------
    str
    """
    machine, settings = payload["machine"], payload["settings"]
    steps = settings["steps"]
    per_step = (
        f"(wall({steps} steps) - wall(1 step)) / {steps - 1}"
        if settings["baseline"]
        else f"wall({steps} steps) / {steps}, start-up included"
    )
    lines = [
        f"# Restoring a {settings['width']}x{settings['height']} image: time and memory "
        "against patch size and overlap",
        "",
        "Written by `python benchmarks/bench_restore.py`; do not edit by hand.",
        "",
        f"`diffdeblur restore` of one {settings['width']}x{settings['height']} RGB image "
        f"({payload['image']}) with `--checkpoint {payload['checkpoint']}` "
        f"({payload['model']}), DDIM, batches of {settings['batch_size']} patches, device "
        f"{settings['device']}, {payload['threads']} threads; each run a fresh process. "
        f"s / step = {per_step}. Peak RSS: the restore process's maximum resident set size "
        f"({payload['memory_source']}). Best of {settings['repeat']} run(s). "
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['ram_gib']} GiB "
        f"RAM, torch {payload['torch']}, Python {machine['python']}, commit "
        f"{machine['git_commit']}{' (modified)' if machine['git_modified'] else ''}, "
        f"{machine['date']}, load average {machine['load_average_at_start'][0]:.2f} at the start.",
        "",
        f"| patch | overlap | patches | network calls / step | wall, {steps} steps (s) "
        "| wall, 1 step (s) | s / step | patches / s | peak RSS (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in payload["results"]:
        one = "" if row["baseline_run"] is None else f"{row['baseline_run']['wall_s']:.2f}"
        lines.append(
            f"| {row['patch_size']} | {row['overlap']} | {row['patches']:,} "
            f"| {row['calls_per_step']:,} | {row['run']['wall_s']:.2f} "
            f"| {one} | {row['s_per_step']:.3f} "
            f"| {row['patches_per_s']:.1f} | {row['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(payload: dict, path: Path) -> None:
    """Time per step against patch count, and peak memory against overlap, per patch size.

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

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    sizes = sorted({row["patch_size"] for row in payload["results"]})
    for size in sizes:
        rows = sorted(
            (row for row in payload["results"] if row["patch_size"] == size),
            key=lambda row: row["overlap"],
        )
        label = f"patch {size}"
        left.plot([r["patches"] for r in rows], [r["s_per_step"] for r in rows], "o-", label=label)
        for row in rows:
            left.annotate(
                f"o={row['overlap']}",
                (row["patches"], row["s_per_step"]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
            )
        right.plot(
            [r["overlap"] for r in rows], [r["peak_rss_mib"] for r in rows], "o-", label=label
        )
    left.set_xlabel("patches per step")
    left.set_ylabel("seconds per sampling step")
    left.set_title("Time per step (o = overlap, px)", fontsize=10)
    right.set_xlabel("overlap (px)")
    right.set_ylabel("peak RSS (MiB)")
    right.set_title("Peak memory of the restore process", fontsize=10)
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    settings = payload["settings"]
    figure.suptitle(
        f"diffdeblur restore, {settings['width']}x{settings['height']}, {payload['model']}, "
        f"batch {settings['batch_size']}, threads: {payload['threads']}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write(payload: dict, out: Path, stem: str) -> None:
    """Write ``stem``.json, ``stem``.md and ``stem``.png to ``out`` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(payload))
    if payload["results"]:
        plot(payload, out / f"{stem}.png")


def _size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` as (width, height)."""
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1280x720, got {text!r}")
    return int(match[1]), int(match[2])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring (top of this file) for what is measured and how.",
    )
    parser.add_argument("--checkpoint", type=Path, help="trained model (checkpoint.pt)")
    parser.add_argument(
        "--patch-sizes", type=int, nargs="+", default=[32, 64, 128], help="default 32 64 128"
    )
    parser.add_argument(
        "--overlaps",
        type=int,
        nargs="+",
        default=[0, 8, 16, 32],
        help="default 0 8 16 32 (each only with larger patches)",
    )
    parser.add_argument("--steps", type=int, default=5, help="DDIM steps of the timed run (5)")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the 1-step runs; s/step is then wall / steps, start-up included",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="patches per call (16)")
    parser.add_argument("--size", type=_size, default=(1280, 720), help="WIDTHxHEIGHT (1280x720)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per command, best kept (1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image's blur kernel")
    add_run_options(
        parser,
        RESULTS,
        threads_help="OMP_NUM_THREADS of the restore processes [default: the environment's]",
        quick_help="a check of seconds: 320x180 image, patches 32 64, overlaps 0 16, 2 steps; a "
        "tiny model is trained in a temporary folder unless --checkpoint is given; writes "
        "restore-quick.*",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (see the module docstring)."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.size, args.patch_sizes, args.overlaps, args.steps = (320, 180), [32, 64], [0, 16], 2
    elif args.checkpoint is None:
        sys.exit("--checkpoint is required (or --quick for a check)")
    if args.steps < 1 + (not args.no_baseline):
        sys.exit("--steps must be >= 2 (>= 1 with --no-baseline)")
    if args.batch_size < 1 or args.repeat < 1:
        sys.exit("--batch-size and --repeat must be >= 1")
    with tempfile.TemporaryDirectory(prefix="bench-restore-") as folder:
        scratch = Path(folder)
        if args.checkpoint is None:
            args.checkpoint = tiny_checkpoint(tiny_dataset(scratch / "data"), scratch / "run")
        run(args, scratch, stem=f"{STEM}-quick" if args.quick else STEM)


def run(args: argparse.Namespace, scratch: Path, stem: str) -> None:
    """Measure every configuration and write the results after each (see :func:`main`)."""
    from csb_generator import write_image
    from diffdeblur.checkpoint import load_checkpoint

    width, height = args.size
    image = scratch / "frame.png"
    write_image(image, frame(width, height, args.seed))
    state = load_checkpoint(args.checkpoint)
    train = state.get("train") if isinstance(state.get("train"), dict) else {}
    model = (
        f"{state['restorer']['parametrisation']}, variant {train.get('variant', 'unknown')}, "
        f"trained on {train.get('patch_size', '?')} px patches"
    )
    env = dict(os.environ)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)  # what the children will use, for the record
    restore = [
        str(console_script("diffdeblur")),
        "restore",
        *("--checkpoint", str(args.checkpoint), str(image), "--out", str(scratch / "restored")),
        *("--sampler", "ddim", "--batch-size", str(args.batch_size), "--device", args.device),
        *("--seed", "0", "--quiet", "--overwrite"),
    ]
    gnu = GNU_TIME.is_file() and os.access(GNU_TIME, os.X_OK)
    payload = {
        "benchmark": "restore",
        "checkpoint": str(args.checkpoint),
        "model": model,
        "image": (
            f"skimage.data.rocket() cropped to {width}:{height}, resized with a bicubic spline, "
            f"blurred by a 32 px camera-shake kernel (seed {args.seed})"
        ),
        "command": " ".join(
            [*restore, "--steps", "S", "--patch-size", "P", "--overlap", "O"]
        ).replace(str(scratch), "TMP"),
        "memory_source": (
            "GNU /usr/bin/time -v, Maximum resident set size"
            if gnu
            else "no /usr/bin/time: resource.getrusage(RUSAGE_CHILDREN).ru_maxrss in a wrapper "
            "process per run"
        ),
        "settings": {
            "width": width,
            "height": height,
            "patch_sizes": args.patch_sizes,
            "overlaps": args.overlaps,
            "steps": args.steps,
            "baseline": not args.no_baseline,
            "batch_size": args.batch_size,
            "repeat": args.repeat,
            "device": args.device,
            "quick": args.quick,
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": describe(),
        "results": [],
    }
    if not gnu:
        print("no /usr/bin/time: measuring through a Python wrapper process", file=sys.stderr)
    for patch in sorted(args.patch_sizes):
        for overlap in sorted(o for o in args.overlaps if o < patch):
            row = configuration(
                restore,
                patch,
                overlap,
                args.steps,
                shape=(height, width),
                batch_size=args.batch_size,
                baseline=not args.no_baseline,
                repeat=args.repeat,
                env=env,
                scratch=scratch,
            )
            payload["results"].append(row)
            print(
                f"patch {patch:>3} overlap {overlap:>2}: {row['patches']:>5} patches, "
                f"{row['s_per_step']:.3f} s/step, {row['patches_per_s']:.1f} patches/s, "
                f"peak {row['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
            write(payload, args.out, stem)
    write(payload, args.out, stem)
    shutil.rmtree(scratch / "restored", ignore_errors=True)
    print()
    print(markdown(payload))
    print(f"wrote {args.out / stem}.json, .md and .png")


if __name__ == "__main__":
    main()
