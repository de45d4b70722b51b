"""Size and CPU training speed of the U-Net variants (``diffdeblur.unet``), with ``perf_counter``.

Run from the repository root with the development environment:

    python benchmarks/bench_unet.py                    # every variant (3-7 min on 2 shared cores)
    python benchmarks/bench_unet.py --variants tiny    # one or more variants
    python benchmarks/bench_unet.py --steps 5 --big-steps 3   # more timed steps per row
    python benchmarks/bench_unet.py --threads 1 2      # each row with 1 and with 2 threads
    python benchmarks/bench_unet.py --variants tiny --threads 2 --merge   # add rows to the files
    python benchmarks/bench_unet.py --no-write         # print only

For each variant of the thesis's Table 1 (``diffdeblur.config.VARIANTS``) it reports the
parameter count of the conditional ``sharp`` network (6 input channels: the noisy image and the
blurred image) and the time of ONE training step: forward, MSE loss on the noise, backward and an
Adam step, on 64 px patches with batch size 8 (and 32 for ``tiny``). The step time is the median
of ``--steps`` timed steps for ``tiny`` and ``--big-steps`` for the others (9-100 s per row on 2
shared cores), after ``--warmup`` untimed ones: on CPU the first steps are slower, as oneDNN
builds its convolution kernels and memory is allocated (for ``tiny`` the first two are several
times slower, and the median of 3 discards the second); samples/s = batch / median step time.
Data loading is not part of it: the same random batch is used for every step.

Threads: ``torch.set_num_threads`` for each value of ``--threads`` (default: torch's default, one
per core). On a small machine shared with other jobs one thread can be several times faster than
two, since the intra-op threads wait for each other whenever another process holds a core; the
table says which was used and the load average at the start of each row.

Results are written as a Markdown table to ``benchmarks/results/unet_variants.md`` and, with every
step time and the machine description, to ``unet_variants.json`` beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffdeblur.config import VARIANTS, unet_variant
from diffdeblur.unet import UNet, count_parameters
from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PATCH = 64
IN_CHANNELS = 6  # x_t and the blurred image, RGB each
SEED = 0


def _machine() -> dict:
    cpu = cpu_model()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "git_commit": commit,
        "load_average_at_start": list(os.getloadavg()),
    }


def time_training_step(name: str, batch: int, steps: int, warmup: int, threads: int) -> dict:
    """Median time of one Adam training step of variant ``name`` on a batch of 64 px patches.

    Parameters
    ----------
    name : str
        Key of ``VARIANTS``.
    batch : int
        Patches per step.
    steps, warmup : int
        Timed steps, and untimed steps before them.
    threads : int
        PyTorch intra-op threads during the measurement (restored afterwards).

    Returns
    -------
    dict
        ``parameters``, ``step_s`` (median, seconds), ``step_min_s``, ``steps_s`` (every timed
        step), ``samples_per_s``, ``threads``, ``load_average_at_start`` (1 min) and ``date``.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _time_training_step(name, batch, steps, warmup)
    finally:
        torch.set_num_threads(previous_threads)


def _time_training_step(name: str, batch: int, steps: int, warmup: int) -> dict:
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load = os.getloadavg()[0]
    config = unet_variant(name, in_channels=IN_CHANNELS)
    generator = torch.Generator().manual_seed(SEED)
    net = UNet(config, generator=generator).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(batch, IN_CHANNELS, PATCH, PATCH, generator=generator)
    noise = torch.randn(batch, config.out_channels, PATCH, PATCH, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    # Dropout draws from torch's global random state; fork it so the benchmark leaves it as is.
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        times = []
        for index in range(warmup + steps):
            start = time.perf_counter()
            optimiser.zero_grad(set_to_none=True)
            loss = F.mse_loss(net(x, t), noise)
            loss.backward()
            optimiser.step()
            elapsed = time.perf_counter() - start
            if index >= warmup:
                times.append(elapsed)
    step = statistics.median(times)
    return {
        "variant": name,
        "batch": batch,
        "parameters": count_parameters(net),
        "step_s": step,
        "step_min_s": min(times),
        "steps_s": times,
        "samples_per_s": batch / step,
        "threads": torch.get_num_threads(),
        "load_average_at_start": load,
        "date": date,
        "final_loss": loss.item(),
    }


def markdown(rows: list[dict], machine: dict, settings: dict) -> str:
    """The results as a Markdown document with one table."""
    lines = [
        "# U-Net variants: size and CPU training speed",
        "",
        "Written by `python benchmarks/bench_unet.py`; do not edit by hand.",
        "",
        f"One training step = forward + MSE loss + backward + Adam step on {PATCH} px patches, "
        f"conditional `sharp` network ({IN_CHANNELS} input channels). Step time: median of "
        f"{settings['steps_tiny']} steps (`tiny`) or {settings['steps_other']} steps (the others) "
        f"after {settings['warmup']} warm-up step(s). "
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), torch {machine['torch']}, "
        f"Python {machine['python']}, commit {machine['git_commit']}, {machine['date']}; "
        "shared with other jobs, so the load average at the start of each row is given "
        "(more than the 2 cores means other processes were competing for them).",
        "",
        "| variant | batch | parameters | step time (s) | samples/s | threads "
        "| load avg at start | measured (UTC) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['batch']} | {row['parameters']:,} | {row['step_s']:.3f} "
            f"| {row['samples_per_s']:.1f} | {row['threads']} "
            f"| {row['load_average_at_start']:.2f} | {row['date'][:16].replace('T', ' ')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=3, help="timed steps of tiny (default 3)")
    parser.add_argument(
        "--big-steps", type=int, default=2, help="timed steps of the other variants (default 2)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[torch.get_num_threads()],
        help="intra-op thread counts to measure each row with (default: torch's default)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of the existing result files for other (variant, batch, threads)",
    )
    parser.add_argument("--no-write", action="store_true", help="print, write no result files")
    args = parser.parse_args()

    machine = _machine()
    settings = {
        "patch": PATCH,
        "in_channels": IN_CHANNELS,
        "steps_tiny": args.steps,
        "steps_other": args.big_steps,
        "warmup": args.warmup,
    }
    # Small to large, so a run stopped early still has the cheap rows.
    names = sorted(args.variants, key=lambda n: count_parameters(_meta(n)))
    rows = []
    for name in names:
        for batch in (8, 32) if name == "tiny" else (8,):
            for threads in args.threads:
                steps = args.steps if name == "tiny" else args.big_steps
                row = time_training_step(name, batch, steps, args.warmup, threads)
                print(
                    f"{name:>10} batch {batch:>2}, {threads} threads: "
                    f"{row['parameters']:>11,} parameters, {row['step_s']:.3f} s/step, "
                    f"{row['samples_per_s']:.1f} samples/s "
                    f"(load {row['load_average_at_start']:.2f})",
                    flush=True,
                )
                rows.append(row)
    json_path = RESULTS / "unet_variants.json"
    if args.merge and json_path.is_file():
        rows = _merged(json.loads(json_path.read_text()), rows)
    document = markdown(rows, machine, settings)
    print()
    print(document)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "unet_variants.md").write_text(document)
        payload = {"machine": machine, "settings": settings, "results": rows}
        json_path.write_text(json.dumps(payload, indent=2) + "\n")


def _merged(earlier: dict, rows: list[dict]) -> list[dict]:
    """``rows`` plus the rows of an earlier result file that measured something else."""
    key = _row_key
    measured = {key(row) for row in rows}
    kept = []
    for row in earlier["results"]:
        if key(row) not in measured:
            # Rows written before rows carried their date have the run's.
            kept.append({"date": earlier["machine"]["date"], **row})
    return sorted(kept + rows, key=lambda row: (row["parameters"], *key(row)))


def _row_key(row: dict) -> tuple:
    return row["variant"], row["batch"], row["threads"]


def _meta(name: str) -> UNet:
    with torch.device("meta"):
        return UNet(unet_variant(name, in_channels=IN_CHANNELS))


if __name__ == "__main__":
    main()
