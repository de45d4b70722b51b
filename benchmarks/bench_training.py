"""Training throughput per U-Net variant at 64 px, and the data loader's share of a step.

Run from the repository root, in the development environment:

    python benchmarks/bench_training.py --data DATA          # every variant, about 6 min on 2 cores
    python benchmarks/bench_training.py --data DATA --variants tiny base --threads 1
    python benchmarks/bench_training.py --quick     # seconds: tiny variant, a tiny dataset made

``--data`` is a ``csb-generate`` dataset with crops of at least ``--patch-size`` (64 px, the
thesis's, by default), e.g. ``csb-generate --mode random --psf-size 32 --count 2000 --out DATA``.

1. **Steps.** For each variant of ``--variants`` (default: all of ``diffdeblur.config.VARIANTS``,
   smallest first) a ``Restorer(restorer_config(--parametrisation, variant))`` (default
   ``sharp``, the thesis's; ``residual`` costs the same, ``refine`` adds a regression U-Net)
   takes full optimiser steps as ``diffdeblur train`` does: ``Restorer.training_loss`` (forward
   and the epsilon-MSE, with its diffusion draws from a seeded ``torch.Generator``), backward,
   gradient clipping at ``--grad-clip`` (1, train's default), an Adam step and the EMA update
   (``--no-ema`` to leave it out), on one real batch of ``--batch-size`` (8) patches from the
   dataset, reused for every step so that no data loading is timed. ``--warmup`` (2) untimed
   steps come first (on a CPU the first steps build kernels and allocate), then ``--steps`` (5)
   timed ones (``time.perf_counter``); the median is the step time and samples/s = batch /
   median.
2. **Loader alone.** A real ``torch.utils.data.DataLoader`` over
   ``diffdeblur.data.open_training_data(DATA, patch, seed=0)`` (HDF5 reading, decompression,
   random crop and flips), with the batch size above, a seeded sampler as in training, and each
   of ``--workers`` (default 0 1 2) worker processes, is read for ``--loader-batches`` (50)
   batches with nothing else running: the first batch (which starts the workers) is timed
   apart, and the rest give the steady seconds per batch. With 0 workers this time is added to
   every training step, so the steps table gives its share, loader / (loader + step).
3. **Loader while training.** The same loaders feed ``--interleaved-steps`` (20) training steps
   of ``--interleaved-variant`` (default ``tiny``, the fastest network, so the one a slow
   loader would starve first): the time spent waiting in ``next(loader)`` against the time of
   the steps themselves. Workers prepare batches while the model computes, but on a small
   machine they also take CPU from it, which only this measurement shows.

Randomness: every draw is seeded (``--seed``): the diffusion noise from a ``torch.Generator``,
the batch order from a ``torch.Generator``, the patches from the dataset's seed. Initial weights
and dropout draw from torch's global generator (torch's layers take no generator), so they run
inside ``torch.random.fork_rng()`` seeded with ``--seed``: seeded, and the global state is left
as it was. ``--threads`` sets ``torch.set_num_threads`` (default: torch's, one per core).

Results in ``--out`` (default ``benchmarks/results/``): ``training.json`` (every step time, the
machine) and ``training.md`` (the tables). ``--quick`` writes ``training-quick.*`` instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from diffdeblur.config import PARAMETRISATIONS, VARIANTS
from diffdeblur.data import open_training_data
from diffdeblur.restorer import Restorer, restorer_config
from machine import describe
from run_options import add_run_options
from tiny_inputs import tiny_dataset
from torch import nn
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STEM = "training"


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    """A restorer with its Adam optimiser and EMA copy, taking the steps ``diffdeblur train`` takes.

    Build and use it inside ``torch.random.fork_rng()``: the initial weights and dropout draw
    from torch's global generator.

    Parameters
    ----------
    parametrisation, variant : str
        As :func:`diffdeblur.restorer.restorer_config`.
    device : torch.device
    seed : int
        Seed of the diffusion draws.
    grad_clip : float
        Maximum gradient norm; 0 leaves clipping out.
    ema : bool
        Update an EMA copy of the weights after every step.
    """

    def __init__(
        self,
        parametrisation: str,
        variant: str,
        device: torch.device,
        *,
        seed: int,
        grad_clip: float,
        ema: bool,
    ):
        self.model = Restorer(restorer_config(parametrisation, variant)).to(device).train()
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if ema else None
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=2e-4)
        self.noise = torch.Generator(device).manual_seed(seed)
        self.grad_clip = grad_clip
        self.device = device
        self.steps = 0

    @property
    def parameters(self) -> int:
        """Trainable parameters of the restorer (every network it has)."""
        return sum(p.numel() for p in self.model.parameters())

    def step(self, blurred: torch.Tensor, sharp: torch.Tensor) -> float:
        """One optimiser step on a batch in [-1, 1]; returns the loss.

        Forward and loss (``Restorer.training_loss``), backward, clipping, Adam, EMA update.
        """
        self.optimiser.zero_grad(set_to_none=True)
        loss, _ = self.model.training_loss(blurred, sharp, self.noise)
        loss.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimiser.step()
        if self.ema is not None:
            decay = min(0.9999, (1 + self.steps) / (10 + self.steps))
            with torch.no_grad():
                for average, value in zip(
                    self.ema.state_dict().values(), self.model.state_dict().values(), strict=True
                ):
                    if average.dtype.is_floating_point:
                        average.lerp_(value, 1.0 - decay)
                    else:
                        average.copy_(value)
        self.steps += 1
        return float(loss.detach())

    def timed_step(self, blurred: torch.Tensor, sharp: torch.Tensor) -> float:
        """Seconds of one :meth:`step` (synchronised on CUDA)."""
        _synchronise(self.device)
        start = time.perf_counter()
        self.step(blurred, sharp)
        _synchronise(self.device)
        return time.perf_counter() - start


def make_loader(
    data: Path, patch: int, batch: int, workers: int, batches: int, seed: int
) -> DataLoader:
    """A training ``DataLoader`` of ``batches`` batches over a dataset, seeded as in training.

    The indices are permutations of the dataset drawn from a seeded ``torch.Generator``, one
    after the other (so no sample repeats until all have been seen), as ``diffdeblur train``
    orders an epoch.

    Parameters
    ----------
    data : Path
        A ``csb-generate`` dataset (or a GoPro-style folder).
    patch, batch, workers, batches, seed : int
        Patch side, batch size, worker processes, number of batches, seed.

    Returns
    -------
    DataLoader
    """
    dataset = open_training_data(data, patch, seed=seed)
    dataset.set_epoch(0)
    order = torch.Generator().manual_seed(seed)
    count = batches * batch
    rounds = -(-count // len(dataset))
    indices = torch.cat([torch.randperm(len(dataset), generator=order) for _ in range(rounds)])
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=indices[:count].tolist(),
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
    )


def time_loader(loader: DataLoader) -> dict:
    """Read every batch of ``loader`` with nothing else running.

    Parameters
    ----------
    loader : DataLoader

    Returns
    -------
    dict
        ``first_batch_s`` (starting the workers and the first batch), ``batches`` (after the
        first), ``s_per_batch`` (their mean: the steady rate, prefetching included) and
        ``batch_s`` (each).
    """
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter() - start
    times = []
    while True:
        start = time.perf_counter()
        try:
            next(iterator)
        except StopIteration:
            break
        times.append(time.perf_counter() - start)
    del iterator  # stops the workers
    return {
        "first_batch_s": first,
        "batches": len(times),
        "s_per_batch": statistics.fmean(times) if times else float("nan"),
        "batch_s": times,
    }


def time_interleaved(trainer: Trainer, loader: DataLoader) -> dict:
    """Train on every batch of ``loader``; how long the loop waits for data, how long it computes.

    The first batch (worker start-up) is waited for but not counted.

    Parameters
    ----------
    trainer : Trainer
    loader : DataLoader

    Returns
    -------
    dict
        ``steps`` (counted), ``wait_s`` and ``step_s`` (totals), ``wait_share`` =
        wait / (wait + step), ``wait_per_step_s``, ``step_per_step_s``.
    """
    iterator = iter(loader)
    batch = next(iterator)
    device = trainer.device
    trainer.timed_step(batch["blurred"].to(device), batch["sharp"].to(device))
    waits, steps = [], []
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        waits.append(time.perf_counter() - start)
        steps.append(trainer.timed_step(batch["blurred"].to(device), batch["sharp"].to(device)))
    del iterator
    wait, step = sum(waits), sum(steps)
    return {
        "steps": len(steps),
        "wait_s": wait,
        "step_s": step,
        "wait_share": wait / (wait + step) if steps else float("nan"),
        "wait_per_step_s": wait / len(steps) if steps else float("nan"),
        "step_per_step_s": step / len(steps) if steps else float("nan"),
    }


def markdown(payload: dict) -> str:
    """The results as a Markdown document with three tables (steps, loader, both together).

    Parameters
    ----------
    payload : dict
        What :func:`main` writes to the JSON file.

    Returns
    -------
    str
    """
    machine, settings = payload["machine"], payload["settings"]
    loaders = {row["workers"]: row for row in payload["loader"]}
    serial = loaders.get(0)
    lines = [
        "# Training throughput per U-Net variant, and the data loader's share of a step",
        "",
        "Written by `python benchmarks/bench_training.py`; do not edit by hand.",
        "",
        f"Full optimiser steps of `Restorer(restorer_config({settings['parametrisation']!r}, "
        f"variant))` as `diffdeblur train` takes them (training loss, backward, gradient "
        f"clipping at {settings['grad_clip']:g}, Adam, "
        f"{'EMA update' if settings['ema'] else 'no EMA'}) on one batch of "
        f"{settings['batch_size']} patches of {settings['patch_size']} px from `{payload['data']}`"
        f" ({payload['dataset_size']} samples); median of {settings['steps']} steps after "
        f"{settings['warmup']} warm-up steps. Device {settings['device']}, "
        f"{payload['torch_threads']} torch threads. Machine: {machine['cpus']} CPUs "
        f"({machine['cpu_model']}), {machine['ram_gib']} GiB RAM, torch {payload['torch']}, "
        f"Python {machine['python']}, commit {machine['git_commit']}"
        f"{' (modified)' if machine['git_modified'] else ''}, {machine['date']}; load average "
        "at the start of each row given (above the number of CPUs, other processes competed).",
        "",
        "| variant | parameters | step (s), median | step (s), min | samples / s "
        "| loader, 0 workers (s / batch) | loader share of a step, 0 workers | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in payload["variants"]:
        loader, share = "", ""
        if serial is not None:
            loader = f"{serial['s_per_batch']:.4f}"
            share = f"{serial['s_per_batch'] / (serial['s_per_batch'] + row['step_s']):.1%}"
        lines.append(
            f"| {row['variant']} | {row['parameters']:,} | {row['step_s']:.3f} "
            f"| {row['step_min_s']:.3f} | {row['samples_per_s']:.1f} | {loader} | {share} "
            f"| {row['load_average_at_start']:.2f} |"
        )
    lines += [
        "",
        f"Data loader alone: `DataLoader(open_training_data(DATA, {settings['patch_size']}, "
        f"seed={settings['seed']}), batch_size={settings['batch_size']}, num_workers=W)`, "
        f"{settings['loader_batches']} batches read with nothing else running; the first batch "
        "(starting the workers) apart, the rest averaged.",
        "",
        "| workers | first batch (s) | s / batch, steady | batches / s | samples / s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in payload["loader"]:
        rate = 1 / row["s_per_batch"]
        lines.append(
            f"| {row['workers']} | {row['first_batch_s']:.3f} | {row['s_per_batch']:.4f} "
            f"| {rate:.1f} | {rate * settings['batch_size']:.0f} |"
        )
    lines += [
        "",
        f"Data loader while training `{settings['interleaved_variant']}`: "
        f"{settings['interleaved_steps']} steps fed by the loader (after one uncounted step on "
        "its first batch); the wait is the time spent in `next(loader)`.",
        "",
        "| workers | steps | step (s), mean | wait for data (s), mean | wait share of the loop |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in payload["interleaved"]:
        lines.append(
            f"| {row['workers']} | {row['steps']} | {row['step_per_step_s']:.3f} "
            f"| {row['wait_per_step_s']:.4f} | {row['wait_share']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def write(payload: dict, out: Path, stem: str) -> None:
    """Write ``stem``.json and ``stem``.md to ``out`` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(payload))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring (top of this file) for what is measured and how.",
    )
    parser.add_argument("--data", type=Path, help="csb-generate dataset (crops >= patch size)")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=None, help="default: all"
    )
    parser.add_argument(
        "--parametrisation", choices=PARAMETRISATIONS, default="sharp", help="default sharp"
    )
    parser.add_argument("--patch-size", type=int, default=64, help="patch side, px (64)")
    parser.add_argument("--batch-size", type=int, default=8, help="patches per step (8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (2)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (5)")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="0: no clipping (1)")
    parser.add_argument("--no-ema", action="store_true", help="leave out the EMA update")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 1, 2], help="loader workers (0 1 2)"
    )
    parser.add_argument("--loader-batches", type=int, default=50, help="batches per loader (50)")
    parser.add_argument(
        "--interleaved-variant", choices=list(VARIANTS), default="tiny", help="default tiny"
    )
    parser.add_argument(
        "--interleaved-steps", type=int, default=20, help="steps fed by each loader (20)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw (0)")
    add_run_options(
        parser,
        RESULTS,
        threads_help="torch.set_num_threads [default: torch's]",
        quick_help="a check of seconds: tiny variant (unless --variants), 32 px, batch 4, 2 steps, "
        "workers 0 1; a tiny dataset is generated in a temporary folder unless --data is given; "
        "writes training-quick.*",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (see the module docstring)."""
    args = _parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.variants = args.variants or ["tiny"]
        args.patch_size, args.batch_size, args.warmup, args.steps = 32, 4, 1, 2
        args.workers, args.loader_batches, args.interleaved_steps = [0, 1], 5, 3
    elif args.data is None:
        sys.exit("--data is required (or --quick for a check)")
    args.variants = args.variants or list(VARIANTS)
    if min(args.steps, args.interleaved_steps, args.batch_size) < 1 or args.loader_batches < 2:
        sys.exit("--steps, --interleaved-steps, --batch-size must be >= 1, --loader-batches >= 2")
    with tempfile.TemporaryDirectory(prefix="bench-training-") as scratch:
        if args.data is None:
            args.data = tiny_dataset(Path(scratch) / "data")
        run(args, stem=f"{STEM}-quick" if args.quick else STEM)


def _meta_parameters(parametrisation: str, variant: str) -> int:
    with torch.device("meta"):
        model = Restorer(restorer_config(parametrisation, variant))
    return sum(p.numel() for p in model.parameters())


def run(args: argparse.Namespace, stem: str) -> None:
    """Measure steps, loaders and both together; write the results (see :func:`main`)."""
    device = torch.device(args.device)
    dataset = open_training_data(args.data, args.patch_size, seed=args.seed)
    rng_devices = [device] if device.type == "cuda" else []
    payload = {
        "benchmark": "training",
        "data": str(args.data),
        "dataset_size": len(dataset),
        "settings": {
            "parametrisation": args.parametrisation,
            "patch_size": args.patch_size,
            "batch_size": args.batch_size,
            "warmup": args.warmup,
            "steps": args.steps,
            "grad_clip": args.grad_clip,
            "ema": not args.no_ema,
            "workers": args.workers,
            "loader_batches": args.loader_batches,
            "interleaved_variant": args.interleaved_variant,
            "interleaved_steps": args.interleaved_steps,
            "seed": args.seed,
            "device": str(device),
            "quick": args.quick,
        },
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": describe(),
        "variants": [],
        "loader": [],
        "interleaved": [],
    }
    trainer_options = {"seed": args.seed, "grad_clip": args.grad_clip, "ema": not args.no_ema}
    # One real batch, read once and reused: the step times hold no data loading.
    first = next(iter(make_loader(args.data, args.patch_size, args.batch_size, 0, 1, args.seed)))
    blurred, sharp = first["blurred"].to(device), first["sharp"].to(device)

    # Smallest first, so that a run stopped early still has the cheap rows.
    names = sorted(args.variants, key=lambda n: _meta_parameters(args.parametrisation, n))
    for name in names:
        load = os.getloadavg()[0]
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(args.seed)
            trainer = Trainer(args.parametrisation, name, device, **trainer_options)
            for _ in range(args.warmup):
                trainer.timed_step(blurred, sharp)
            times = [trainer.timed_step(blurred, sharp) for _ in range(args.steps)]
        step = statistics.median(times)
        row = {
            "variant": name,
            "parameters": trainer.parameters,
            "batch": args.batch_size,
            "step_s": step,
            "step_min_s": min(times),
            "steps_s": times,
            "samples_per_s": args.batch_size / step,
            "load_average_at_start": load,
        }
        del trainer
        payload["variants"].append(row)
        print(
            f"{name:>10}: {row['parameters']:>11,} parameters, {step:.3f} s/step, "
            f"{row['samples_per_s']:.1f} samples/s (load {load:.2f})",
            flush=True,
        )
        write(payload, args.out, stem)

    for workers in args.workers:
        loader = make_loader(
            args.data, args.patch_size, args.batch_size, workers, args.loader_batches, args.seed
        )
        row = {"workers": workers, **time_loader(loader)}
        payload["loader"].append(row)
        print(
            f"loader, {workers} workers: first batch {row['first_batch_s']:.3f} s, then "
            f"{row['s_per_batch']:.4f} s/batch",
            flush=True,
        )
    write(payload, args.out, stem)

    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(args.seed)
        trainer = Trainer(args.parametrisation, args.interleaved_variant, device, **trainer_options)
        for _ in range(args.warmup):
            trainer.timed_step(blurred, sharp)
        for workers in args.workers:
            loader = make_loader(
                args.data,
                args.patch_size,
                args.batch_size,
                workers,
                args.interleaved_steps + 1,
                args.seed,
            )
            row = {"workers": workers, **time_interleaved(trainer, loader)}
            payload["interleaved"].append(row)
            print(
                f"training {args.interleaved_variant} with {workers} workers: "
                f"{row['step_per_step_s']:.3f} s/step, waiting {row['wait_per_step_s']:.4f} "
                f"s/step for data ({row['wait_share']:.1%})",
                flush=True,
            )
    write(payload, args.out, stem)
    print()
    print(markdown(payload))
    print(f"wrote {args.out / stem}.json and .md")


if __name__ == "__main__":
    main()
