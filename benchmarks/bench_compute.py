"""Training samples/s by network, precision, threads and memory layout, alone and under load.

Run from the repository root, in the development environment, with nothing else running:

    python benchmarks/bench_compute.py                 # about 5 minutes on 2 cores
    python benchmarks/bench_compute.py --quick         # seconds: one setting of each table
    python benchmarks/bench_compute.py --compile-only  # eager against torch.compile, 2 threads

Each setting runs in a fresh Python process (``OMP_WAIT_POLICY`` is read when torch loads
OpenMP, and a thread count is best set before the first operation), which takes ``--warmup``
(2) untimed and ``--steps`` (6) timed optimiser steps of ``Restorer.training_loss`` (the
``regression`` parametrisation, as the issue measured it), backward and Adam on one seeded
random batch of 8 patches of 64 px; samples/s is the batch over the median step time
(``time.perf_counter``).

1. **Alone**: every ``--variants`` in fp32 with 1 and 2 threads; the first variant also in bf16
   autocast (on a CPU with native bfloat16 also with spinning waits, beside fp32 so), with
   channels-last memory layout, and with ``torch.compile`` when ``--compile``.
2. **Under load**: a busy-looping Python process holds one core (``--hog``) while the first
   variant trains in fp32 with 1 and 2 threads, with OpenMP's spinning waits (``ACTIVE``) and
   with sleeping ones (``PASSIVE``, what ``import diffdeblur`` sets by default).

``torch.compile`` compiles the networks in place, as ``diffdeblur train --compile`` does; the
compilation falls in the untimed warm-up steps.

Results in ``--out`` (default ``benchmarks/results/``): ``compute.json`` and ``compute.md``
(``compute-compile.*`` with ``--compile-only``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parent.parent


def measure(setting: dict) -> float:
    """Samples/s of one setting, in this process (the worker side)."""
    import torch
    from diffdeblur import Restorer, restorer_config
    from diffdeblur.compute import autocast

    torch.set_num_threads(setting["threads"])
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Restorer(restorer_config("regression", setting["variant"])).train()
    memory_format = torch.channels_last if setting["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    shape = (setting["batch"], 3, setting["patch"], setting["patch"])
    blurred = (torch.rand(shape, generator=generator) * 2 - 1).to(memory_format=memory_format)
    sharp = (torch.rand(shape, generator=generator) * 2 - 1).to(memory_format=memory_format)
    if setting["compile"]:
        for network in (model.denoiser_net, model.regressor):
            if network is not None:
                network.compile()

    def step() -> float:
        started = time.perf_counter()
        with autocast(setting["precision"], "cpu"):
            loss, _ = model.training_loss(blurred, sharp, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return time.perf_counter() - started

    for _ in range(setting["warmup"]):
        step()
    times = [step() for _ in range(setting["steps"])]
    return setting["batch"] / statistics.median(times)


def run_setting(setting: dict, hog: bool) -> dict:
    """Measure ``setting`` in a fresh process, beside a busy loop when ``hog``."""
    environment = dict(os.environ, OMP_WAIT_POLICY=setting["wait_policy"])
    load = os.getloadavg()[0]  # a check that nothing else ran: about 0 before an idle row
    busy = None
    if hog:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
    try:
        result = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(setting)],
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    if result.returncode != 0:
        error = result.stderr.strip().splitlines()[-1]
        return {**setting, "load": hog, "load_average": load, "error": error}
    samples_per_s = float(result.stdout.strip().splitlines()[-1])
    row = {**setting, "load": hog, "load_average": load, "samples_per_s": samples_per_s}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["tiny", "nafnet"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--quick", action="store_true", help="one setting of each table")
    parser.add_argument(
        "--compile-only", action="store_true", help="only eager against compiled, 2 threads"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(measure(json.loads(args.worker)))
        return

    base = {
        "variant": args.variants[0],
        "precision": "fp32",
        "threads": 1,
        "channels_last": False,
        "compile": False,
        "wait_policy": "PASSIVE",
        "batch": 8,
        "patch": 64,
        "warmup": args.warmup,
        "steps": args.steps,
    }
    if args.quick:
        base.update(batch=2, patch=32, warmup=1, steps=2)
    alone = [
        {**base, "variant": variant, "threads": threads}
        for variant in args.variants
        for threads in (1, 2)
    ]
    # Without native bfloat16 a step takes tens of seconds: fewer of them tell the same. With it,
    # bf16 is what --precision auto trains in: timed as fully as fp32, and also with spinning
    # OpenMP waits, the fastest setting on a machine that trains alone.
    from diffdeblur.compute import cpu_has_native_bf16

    if cpu_has_native_bf16():
        bf16 = [{**base, "precision": "bf16", "threads": t} for t in (1, 2)]
        bf16 += [{**base, "precision": "bf16", "threads": 2, "wait_policy": "ACTIVE"}]
        bf16 += [{**base, "threads": 2, "wait_policy": "ACTIVE"}]
    else:
        slow = {"warmup": 1, "steps": 2}
        bf16 = [{**base, "precision": "bf16", "threads": t, **slow} for t in (1, 2)]
    alone += bf16
    alone.append({**base, "threads": 2, "channels_last": True})
    if args.compile:
        alone.append({**base, "threads": 2, "compile": True})
    loaded = [
        {**base, "threads": threads, "wait_policy": policy}
        for threads in (1, 2)
        for policy in ("ACTIVE", "PASSIVE")
    ]
    if args.quick:
        alone, loaded = alone[:1], loaded[-1:]
    if args.compile_only:
        alone = [{**base, "threads": 2, "compile": c} for c in (False, True)]
        loaded = []
    rows = [run_setting(s, hog=False) for s in alone] + [run_setting(s, hog=True) for s in loaded]

    stem = "compute-quick" if args.quick else "compute-compile" if args.compile_only else "compute"
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": describe(ROOT), "rows": rows}
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(_markdown(payload) + "\n")
    print(_markdown(payload))


def _markdown(payload: dict) -> str:
    machine = payload["machine"]
    lines = [
        "# Training samples/s by network, precision, threads and layout",
        "",
        f"{machine['cpu_model']}, {machine['cpus']} CPUs; `regression` parametrisation, batch 8 of "
        "64 px (--quick: 2 of 32 px), median "
        "of the timed steps after warm-up, each setting in a fresh process "
        "(`benchmarks/bench_compute.py`).",
        "",
        "| variant | precision | threads | layout | load | OpenMP waits | samples/s | "
        "load average before |",
        "|---|---|---:|---|---|---|---:|---:|",
    ]
    for row in payload["rows"]:
        layout = "channels-last" if row["channels_last"] else "contiguous"
        if row["compile"]:
            layout += ", torch.compile"
        value = f"{row['samples_per_s']:.1f}" if "samples_per_s" in row else row["error"]
        load = "one core busy" if row["load"] else "idle"
        lines.append(
            f"| {row['variant']} | {row['precision']} | {row['threads']} | {layout} | {load} "
            f"| {row['wait_policy']} | {value} | {row['load_average']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
