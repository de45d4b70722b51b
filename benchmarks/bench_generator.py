"""Benchmarks of the csb-generator hot paths, with the standard library's ``timeit``.

Run from the repository root with the development environment:

    python benchmarks/bench_generator.py            # full run (about a minute)
    python benchmarks/bench_generator.py --quick    # fewer kernels and repeats (a few seconds)
    python benchmarks/bench_generator.py --json     # also write benchmarks/results/generator.json
    python benchmarks/bench_generator.py --json out.json

What it measures (every time is the *best* (minimum) of ``repeat`` timeit runs; the median is
printed next to it and stored in the JSON):

a. Kernels per second: ``random_psf(sample_rng(0, i), 64, length=32)`` (N = 2000 trajectory
   samples, T = 1) against the pure-Python reference of docs/model.md, sections 1 and 2
   (``tests/plain_model.py``: ``plain_random_trajectory`` + ``plain_psf``), with the split into
   trajectory and PSF.
b. ``degrade`` of a 256x256 RGB float64 crop of a real photograph with a 64 px kernel plus noise
   (lam = 768000, sigma = 1, T = 1) against the floor ``scipy.signal.fftconvolve`` of the same
   arrays alone, with the split into ``blur``, ``add_noise``, ``rng.poisson`` and ``rng.normal``.
c. Cold start: the first ``random_psf`` call in a fresh process with an empty numba cache
   (``NUMBA_CACHE_DIR`` set to a new temporary folder: numba compiles), the same in a second
   process that finds the cache filled by the first, and a warm call in this process.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import timeit
from pathlib import Path

import csb_generator as csb
import numpy as np
import scipy
import scipy.signal

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "generator.json"

sys.path.insert(0, str(ROOT / "tests"))
import plain_model  # noqa: E402  (the pure-Python reference lives in tests/)
from machine import cpu_model, ram_gib  # noqa: E402  (beside this script, on sys.path when it runs)

PSF_SIZE = 64
LENGTH = 32.0
NUM_SAMPLES = 2000
IMAGE_SIZE = 256
LAM = 768000.0
SIGMA = 1.0


def _timeit(func, *, number: int, repeat: int) -> dict:
    """Seconds per call of ``func``: best and median of ``repeat`` runs of ``number`` calls."""
    runs = [t / number for t in timeit.repeat(func, number=number, repeat=repeat)]
    return {"best_s": min(runs), "median_s": statistics.median(runs), "runs": runs}


# --------------------------------------------------------------------------------------------
# a. trajectory + PSF


def _plain_kernel(index: int) -> tuple[list, int]:
    """One kernel from the pure-Python reference, redrawing (new seed) when it leaves the grid."""
    redraws = 0
    while True:
        seed = index + 1_000_003 * redraws
        positions, _ = plain_model.plain_random_trajectory(seed, LENGTH, NUM_SAMPLES)
        kernel = plain_model.plain_psf(positions, PSF_SIZE, 1.0)
        if kernel is not None:
            return kernel, redraws
        redraws += 1


def bench_kernels(quick: bool) -> dict:
    lib_count = 200 if quick else 2000
    plain_count = 20 if quick else 300
    repeat = 3 if quick else 5
    plain_repeat = 1 if quick else 3

    def lib_kernels():
        for i in range(lib_count):
            csb.random_psf(csb.sample_rng(0, i), PSF_SIZE, length=LENGTH, num_samples=NUM_SAMPLES)

    def lib_trajectories():
        for i in range(lib_count):
            csb.random_trajectory(csb.sample_rng(0, i), LENGTH, num_samples=NUM_SAMPLES)

    trajectories = [
        csb.random_psf(csb.sample_rng(0, i), PSF_SIZE, length=LENGTH).trajectory
        for i in range(lib_count)
    ]

    def lib_psfs():
        for trajectory in trajectories:
            csb.psf_from_trajectory(trajectory, PSF_SIZE, 1.0)

    def lib_rngs():
        for i in range(lib_count):
            csb.sample_rng(0, i)

    def plain_kernels():
        for i in range(plain_count):
            _plain_kernel(i)

    def plain_trajectories():
        for i in range(plain_count):
            plain_model.plain_random_trajectory(i, LENGTH, NUM_SAMPLES)

    plain_paths = [_plain_path(i) for i in range(plain_count)]

    def plain_psfs():
        for positions in plain_paths:
            plain_model.plain_psf(positions, PSF_SIZE, 1.0)

    lib_kernels()  # compile (or load the numba cache) before timing
    lib_redraws = sum(
        csb.random_psf(csb.sample_rng(0, i), PSF_SIZE, length=LENGTH).redraws
        for i in range(lib_count)
    )
    plain_redraws = sum(_plain_kernel(i)[1] for i in range(plain_count))

    rows = {}
    for name, func, count, rep in [
        ("library: random_psf (sample_rng + trajectory + PSF)", lib_kernels, lib_count, repeat),
        ("library: sample_rng only", lib_rngs, lib_count, repeat),
        ("library: random_trajectory only", lib_trajectories, lib_count, repeat),
        ("library: psf_from_trajectory only", lib_psfs, lib_count, repeat),
        ("reference: plain trajectory + plain_psf", plain_kernels, plain_count, plain_repeat),
        ("reference: plain_random_trajectory only", plain_trajectories, plain_count, plain_repeat),
        ("reference: plain_psf only", plain_psfs, plain_count, plain_repeat),
    ]:
        timing = _timeit(func, number=1, repeat=rep)
        per_kernel = {k: v / count for k, v in timing.items() if k != "runs"}
        rows[name] = {
            "kernels": count,
            "repeat": rep,
            "us_per_kernel_best": per_kernel["best_s"] * 1e6,
            "us_per_kernel_median": per_kernel["median_s"] * 1e6,
            "kernels_per_s_best": 1.0 / per_kernel["best_s"],
        }
    lib = rows["library: random_psf (sample_rng + trajectory + PSF)"]["us_per_kernel_best"]
    ref = rows["reference: plain trajectory + plain_psf"]["us_per_kernel_best"]
    lib_t = rows["library: random_trajectory only"]["us_per_kernel_best"]
    ref_t = rows["reference: plain_random_trajectory only"]["us_per_kernel_best"]
    lib_p = rows["library: psf_from_trajectory only"]["us_per_kernel_best"]
    ref_p = rows["reference: plain_psf only"]["us_per_kernel_best"]
    return {
        "settings": {
            "psf_size": PSF_SIZE,
            "length": LENGTH,
            "num_samples": NUM_SAMPLES,
            "exposure": 1.0,
        },
        "rows": rows,
        "redraws": {"library": lib_redraws, "reference": plain_redraws},
        "speedup": ref / lib,
        "speedup_trajectory": ref_t / lib_t,
        "speedup_psf": ref_p / lib_p,
        "goal": 100.0,
        "goal_met": ref / lib >= 100.0,
    }


def _plain_path(index: int) -> list:
    positions, _ = plain_model.plain_random_trajectory(index, LENGTH, NUM_SAMPLES)
    centre_fits = plain_model.plain_psf(positions, PSF_SIZE, 1.0) is not None
    if centre_fits:
        return positions
    return _plain_path(index + 1_000_003)


# --------------------------------------------------------------------------------------------
# b. degrade against the FFT floor


def _test_image() -> np.ndarray:
    """A 256x256 RGB float64 crop of a real photograph shipped with scikit-image."""
    import skimage.data

    photo = skimage.data.astronaut()  # 512x512 RGB uint8
    return photo[128 : 128 + IMAGE_SIZE, 160 : 160 + IMAGE_SIZE].astype(np.float64) / 255.0


def bench_degrade(quick: bool) -> dict:
    number = 5 if quick else 20
    repeat = 3 if quick else 7
    image = _test_image()
    kernel = csb.random_psf(csb.sample_rng(0, 0), PSF_SIZE, length=LENGTH).kernel
    kernel3 = kernel[:, :, None]
    blurred = csb.blur(image, kernel)
    photons = LAM / 255.0 * np.clip(blurred, 0.0, 1.0)
    rng = csb.sample_rng(1, 0)  # one generator, advancing from call to call

    cases = [
        (
            "floor: fftconvolve(image, kernel[:, :, None], 'same', axes=(0, 1))",
            lambda: scipy.signal.fftconvolve(image, kernel3, mode="same", axes=(0, 1)),
        ),
        (
            "degrade (blur + noise, lam=768000, sigma=1, T=1)",
            lambda: csb.degrade(image, kernel, 1.0, LAM, SIGMA, rng),
        ),
        ("blur alone", lambda: csb.blur(image, kernel)),
        ("add_noise alone", lambda: csb.add_noise(blurred, 1.0, LAM, SIGMA, rng)),
        ("of which rng.poisson(lam/255 * b), same shape", lambda: rng.poisson(photons)),
        (
            "of which rng.normal(0, sigma/255, b.shape)",
            lambda: rng.normal(0.0, SIGMA / 255.0, size=blurred.shape),
        ),
    ]
    for _, func in cases:  # warm-up
        func()
    rows = {}
    for name, func in cases:
        timing = _timeit(func, number=number, repeat=repeat)
        rows[name] = {
            "number": number,
            "repeat": repeat,
            "ms_best": timing["best_s"] * 1e3,
            "ms_median": timing["median_s"] * 1e3,
        }
    floor = rows[cases[0][0]]["ms_best"]
    for row in rows.values():
        row["x_floor"] = row["ms_best"] / floor
    ratio = rows[cases[1][0]]["ms_best"] / floor
    return {
        "settings": {
            "image": "skimage.data.astronaut()[128:384, 160:416] / 255, float64",
            "shape": list(image.shape),
            "psf_size": PSF_SIZE,
            "length": LENGTH,
            "lam": LAM,
            "sigma": SIGMA,
            "exposure": 1.0,
        },
        "rows": rows,
        "ratio_degrade_to_floor": ratio,
        "goal": 1.5,
        "goal_met": ratio <= 1.5,
    }


# --------------------------------------------------------------------------------------------
# c. cold start (numba compilation)

_CHILD = textwrap.dedent(
    """
    import json, time
    t0 = time.perf_counter()
    import csb_generator as csb
    t1 = time.perf_counter()
    csb.random_psf(csb.sample_rng(0, 0), 64, length=32.0)
    t2 = time.perf_counter()
    csb.random_psf(csb.sample_rng(0, 1), 64, length=32.0)
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1, "second_call_s": t3 - t2}))
    """
)


def _child(cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_cold_start(quick: bool) -> dict:
    trials = 1 if quick else 3
    cold, cached = [], []
    for _ in range(trials):
        with tempfile.TemporaryDirectory(prefix="csb-numba-cache-") as cache_dir:
            cold.append(_child(cache_dir))
            cached.append(_child(cache_dir))
    csb.random_psf(csb.sample_rng(0, 0), PSF_SIZE, length=LENGTH)
    warm = _timeit(
        lambda: csb.random_psf(csb.sample_rng(0, 1), PSF_SIZE, length=LENGTH),
        number=100,
        repeat=3 if quick else 5,
    )

    def median(runs, key):
        return statistics.median(r[key] for r in runs)

    return {
        "trials": trials,
        "cold": {key: median(cold, key) for key in cold[0]},
        "cached": {key: median(cached, key) for key in cached[0]},
        "warm_call_s": warm["best_s"],
        "runs": {"cold": cold, "cached": cached},
    }


# --------------------------------------------------------------------------------------------


def machine() -> dict:
    cpu = cpu_model()
    ram = ram_gib()
    import numba

    def git(*args):
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    changed = git("status", "--porcelain", "--", "packages/csb-generator/src")
    return {
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gib": ram,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "csb_generator": csb.__version__,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "library_sources_modified_since_commit": None if changed is None else bool(changed),
        "load_average_at_start": list(os.getloadavg()),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }


def _markdown_kernels(a: dict) -> list[str]:
    lines = [
        "### a. Trajectory + PSF (psf 64, length 32, N = 2000, T = 1)",
        "",
        "| what | kernels timed × repeats | µs per kernel, best (median) | kernels / s (best) |",
        "|---|---:|---:|---:|",
    ]
    for name, row in a["rows"].items():
        lines.append(
            f"| {name} | {row['kernels']} × {row['repeat']} | "
            f"{row['us_per_kernel_best']:.1f} ({row['us_per_kernel_median']:.1f}) | "
            f"{row['kernels_per_s_best']:,.0f} |"
        )
    lines += [
        "",
        f"Speed-up, library vs reference: **{a['speedup']:.1f}x** (trajectory "
        f"{a['speedup_trajectory']:.1f}x, PSF {a['speedup_psf']:.1f}x); goal >= {a['goal']:g}x: "
        f"{'met' if a['goal_met'] else 'NOT met'}. Redraws: library {a['redraws']['library']}, "
        f"reference {a['redraws']['reference']}.",
    ]
    return lines


def _markdown_degrade(b: dict) -> list[str]:
    lines = [
        "### b. degrade, 256x256 RGB float64, 64 px kernel",
        "",
        "| what | ms per call, best (median) | x floor |",
        "|---|---:|---:|",
    ]
    for name, row in b["rows"].items():
        lines.append(
            f"| {name} | {row['ms_best']:.2f} ({row['ms_median']:.2f}) | {row['x_floor']:.2f} |"
        )
    lines += [
        "",
        f"degrade / floor = **{b['ratio_degrade_to_floor']:.2f}x**; goal <= {b['goal']:g}x: "
        f"{'met' if b['goal_met'] else 'NOT met'}.",
    ]
    return lines


def _markdown_cold_start(c: dict) -> list[str]:
    return [
        f"### c. Cold start (median of {c['trials']} fresh process pair(s))",
        "",
        "| what | import csb_generator (s) | first random_psf call (s) | second call (s) |",
        "|---|---:|---:|---:|",
        f"| cold: empty NUMBA_CACHE_DIR (numba compiles) | {c['cold']['import_s']:.3f} | "
        f"{c['cold']['first_call_s']:.3f} | {c['cold']['second_call_s']:.6f} |",
        f"| cached: same NUMBA_CACHE_DIR, new process | {c['cached']['import_s']:.3f} | "
        f"{c['cached']['first_call_s']:.3f} | {c['cached']['second_call_s']:.6f} |",
        f"| warm: in-process call, best of repeats | | {c['warm_call_s']:.6f} | |",
    ]


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM, "
        f"Python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}, numba {m['numba']}; "
        f"load average at start {m['load_average_at_start'][0]:.2f}. "
        "Times: best (minimum) of the repeats; median in brackets.",
    ]
    for key, render in [
        ("kernels", _markdown_kernels),
        ("degrade", _markdown_degrade),
        ("cold_start", _markdown_cold_start),
    ]:
        if key in results:
            lines += ["", *render(results[key])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer kernels and repeats")
    parser.add_argument(
        "--json",
        nargs="?",
        const=str(DEFAULT_JSON),
        default=None,
        metavar="OUT",
        help=f"write the results as JSON (default path: {DEFAULT_JSON.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--only",
        choices=["kernels", "degrade", "cold_start"],
        action="append",
        help="run only these parts (repeatable); default: all",
    )
    args = parser.parse_args(argv)
    parts = args.only or ["kernels", "degrade", "cold_start"]
    results = {"machine": machine(), "quick": args.quick}
    if "kernels" in parts:
        results["kernels"] = bench_kernels(args.quick)
    if "degrade" in parts:
        results["degrade"] = bench_degrade(args.quick)
    if "cold_start" in parts:
        results["cold_start"] = bench_cold_start(args.quick)
    print(markdown(results))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
