"""Evidence for the speed-ups that were *not* adopted, timed against the current library.

Nothing here is used by the library. Three earlier prototypes were adopted into it (commit
253621d: the real-arithmetic trajectory loop ``trajectory._integrate_path``, the one-pass numba
PSF ``psf._splat_exposed`` and the in-place spectrum product in ``blur._convolve_valid``) and are
no longer prototyped here. What is left:

* kernels: where the library's time goes (``sample_rng``, the numpy draws, the numba loop and
  splat, each timed alone) next to the pure-Python reference, and one option not adopted: the
  per-step draws made inside numba (another draw order, so other kernels);
* degrade: single-precision FFTs in ``blur``, exact noise drawn in two threads from spawned child
  generators, numba noise samplers, and Normal approximations of the shot noise.

Each prototype is checked against the library's result (the largest difference for the blur; the
mean and standard deviation of the added noise for the samplers, which draw other streams and,
for the approximations, another distribution) and timed with ``timeit`` (best of the repeats) in
the same run as the library function it would replace. The numbers are quoted in
docs/performance.md.

    python benchmarks/speedup_prototypes.py [--quick] [--json [OUT]]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import timeit
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import csb_generator as csb
import numba
import numpy as np
import scipy.fft
import scipy.signal
from csb_generator.psf import _splat_exposed
from csb_generator.trajectory import _integrate_path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "prototypes.json"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_generator  # noqa: E402  (for the machine description)
import plain_model  # noqa: E402

PSF_SIZE, LENGTH, N = 64, 32.0, 2000


def best(func, number, repeat):
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number


# ---------------------------------------------------------------------------------------------
# Kernels


@numba.njit(cache=False)
def integrate_drawing(step, anxiety, centripetal, gaussian, freq, v0r, v0i, n, rng):
    """The library's real-arithmetic loop, drawing each step's numbers inside numba.

    Draw order per step: shake test, (shake angle if shaking), real push, imaginary push. This is
    not the library's documented order (all uniforms, then all normals), so the kernels differ.
    """
    cols = np.zeros(n)
    rows = np.zeros(n)
    xr = 0.0
    xi = 0.0
    vr = v0r * anxiety
    vi = v0i * anxiety
    shakes = 0
    for t in range(n - 1):
        shake_r = 0.0
        shake_i = 0.0
        if rng.random() < freq * anxiety:
            phi = math.pi + rng.random() - 0.5
            c = math.cos(phi)
            s = math.sin(phi)
            shake_r = 2.0 * vr * c - 2.0 * vi * s
            shake_i = 2.0 * vr * s + 2.0 * vi * c
            shakes += 1
        dv_r = shake_r + anxiety * (gaussian * rng.standard_normal() - centripetal * xr) * step
        dv_i = shake_i + anxiety * (gaussian * rng.standard_normal() - centripetal * xi) * step
        vr += dv_r
        vi += dv_i
        speed = math.hypot(vr, vi)
        vr = vr / speed * step
        vi = vi / speed * step
        xr += vr
        xi += vi
        cols[t + 1] = xr
        rows[t + 1] = xi
    return cols, rows, shakes


def proto_kernel_drawing(index: int) -> np.ndarray:
    """sample_rng + the parameter draws + integrate_drawing + the library's _splat_exposed."""
    rng = csb.sample_rng(0, index)
    while True:
        anxiety = 0.01 * rng.random()
        centripetal = 0.7 * rng.random()
        gaussian = 10.0 * rng.random()
        freq = 0.2 * rng.random()
        angle = 2 * math.pi * rng.random()
        cols, rows, _ = integrate_drawing(
            LENGTH / (N - 1),
            anxiety,
            centripetal,
            gaussian,
            freq,
            math.cos(angle),
            math.sin(angle),
            N,
            rng,
        )
        kernel, fits = _splat_exposed(cols, rows, 1.0, PSF_SIZE, False)
        if fits:
            return kernel


def kernel_section(quick: bool) -> list[tuple[str, float, str]]:
    count = 200 if quick else 2000
    plain_count = 10 if quick else 100
    repeat = 3 if quick else 5
    calls = 100 if quick else 500

    # One path with the library's own draws, for the loop and the splat timed alone.
    rng = csb.sample_rng(5, 0)
    uniforms = rng.random((N - 1, 2))
    normals = rng.standard_normal((N - 1, 2))
    args = (LENGTH / (N - 1), 0.01, 0.3, 5.0, 1.0)  # about 20 big shakes expected
    trajectory = csb.random_psf(csb.sample_rng(0, 0), PSF_SIZE, length=LENGTH).trajectory
    cols = np.ascontiguousarray(trajectory.positions.real)
    rows = np.ascontiguousarray(trajectory.positions.imag)
    _integrate_path(*args, 1 + 0j, uniforms, normals)
    _splat_exposed(cols, rows, 1.0, PSF_SIZE, False)

    # The prototype draws another stream: check only that its kernels are kernels.
    for i in range(20):
        kernel = proto_kernel_drawing(i)
        assert kernel.shape == (PSF_SIZE, PSF_SIZE) and abs(kernel.sum() - 1.0) < 1e-12
    differs = not np.array_equal(
        proto_kernel_drawing(0),
        csb.random_psf(csb.sample_rng(0, 0), PSF_SIZE, length=LENGTH).kernel,
    )

    def plain():
        for i in range(plain_count):
            positions, _ = plain_model.plain_random_trajectory(i, LENGTH, N)
            plain_model.plain_psf(positions, PSF_SIZE, 1.0)

    def library():
        for i in range(count):
            csb.random_psf(csb.sample_rng(0, i), PSF_SIZE, length=LENGTH)

    def prototype_drawing():
        for i in range(count):
            proto_kernel_drawing(i)

    def rngs_and_draws():
        for i in range(count):
            r = csb.sample_rng(0, i)
            r.random((N - 1, 2))
            r.standard_normal((N - 1, 2))

    library()
    plain_us = best(plain, 1, 1 if quick else 3) / plain_count * 1e6
    lib_us = best(library, 1, repeat) / count * 1e6
    drawing_us = best(prototype_drawing, 1, repeat) / count * 1e6
    rng_draws_us = best(rngs_and_draws, 1, repeat) / count * 1e6
    draw_rng = csb.sample_rng(9, 0)
    return [
        ("plain reference kernel (plain_random_trajectory + plain_psf)", plain_us, "µs"),
        (f"library random_psf kernel ({plain_us / lib_us:.1f}x the reference)", lib_us, "µs"),
        (
            "library sample_rng(0, i) alone",
            best(lambda: csb.sample_rng(0, 1), calls, repeat) * 1e6,
            "µs",
        ),
        (
            "numpy draws: rng.random((1999, 2)) + rng.standard_normal((1999, 2))",
            best(
                lambda: (draw_rng.random((N - 1, 2)), draw_rng.standard_normal((N - 1, 2))),
                calls,
                repeat,
            )
            * 1e6,
            "µs",
        ),
        (
            f"sample_rng + numpy draws, per kernel (1/{plain_us / rng_draws_us:.0f} of the "
            "reference)",
            rng_draws_us,
            "µs",
        ),
        (
            "library trajectory._integrate_path alone (numba loop)",
            best(lambda: _integrate_path(*args, 1 + 0j, uniforms, normals), calls, repeat) * 1e6,
            "µs",
        ),
        (
            "library psf._splat_exposed alone (numba weights, centring, splat)",
            best(lambda: _splat_exposed(cols, rows, 1.0, PSF_SIZE, False), calls, repeat) * 1e6,
            "µs",
        ),
        (
            "library psf_from_trajectory (psf 64)",
            best(lambda: csb.psf_from_trajectory(trajectory, PSF_SIZE), calls, repeat) * 1e6,
            "µs",
        ),
        (
            "prototype kernel: per-step draws inside numba + library _splat_exposed ("
            + ("another draw order, so other kernels; " if differs else "")
            + f"{plain_us / drawing_us:.1f}x the reference)",
            drawing_us,
            "µs",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Blur and noise


@numba.njit(cache=False)
def noise_hybrid(blurred, photons_per_unit, read_sd, gain, rng, threshold):
    """Exact Poisson below ``threshold`` expected photons, Normal(mu, mu) above (approximation)."""
    flat = blurred.ravel()
    out = np.empty(flat.size)
    for i in range(flat.size):
        mu = photons_per_unit * min(max(flat[i], 0.0), 1.0)
        if mu < threshold:
            shot = rng.poisson(mu)
        else:
            shot = mu + math.sqrt(mu) * rng.standard_normal()
        y = (shot / photons_per_unit + read_sd * rng.standard_normal()) * gain
        out[i] = min(max(y, 0.0), 1.0)
    return out.reshape(blurred.shape)


def convolve_valid(region, kernel, dtype):
    """The library's valid-part FFT convolution (in-place product), in ``dtype``."""
    region = region.astype(dtype, copy=False)
    kernel = kernel.astype(dtype)
    height, width = region.shape[:2]
    kh, kw = kernel.shape
    shape = (scipy.fft.next_fast_len(height, True), scipy.fft.next_fast_len(width, True))
    spectrum = scipy.fft.rfft2(region, s=shape, axes=(0, 1))
    spectrum *= scipy.fft.rfft2(kernel, s=shape)[:, :, None]
    return scipy.fft.irfft2(spectrum, s=shape, axes=(0, 1))[kh - 1 : height, kw - 1 : width]


def blur_proto(image, kernel, dtype):
    """Reflect-pad as the library's blur() does, then convolve_valid; cast *before* padding."""
    kh, kw = kernel.shape
    pads = ((kh - 1 - kh // 2, kh // 2), (kw - 1 - kw // 2, kw // 2), (0, 0))
    return convolve_valid(
        np.pad(image.astype(dtype, copy=False), pads, mode="reflect"), kernel, dtype
    )


def noise_normal_approx(blurred, photons_per_unit, read_sd, gain, rng):
    """Normal approximation everywhere: y = b + sqrt(b / p + s^2) * z, one draw per value."""
    signal = np.clip(blurred, 0.0, 1.0)
    noisy = signal + np.sqrt(signal / photons_per_unit + read_sd**2) * rng.standard_normal(
        signal.shape
    )
    noisy *= gain
    return np.clip(noisy, 0.0, 1.0, out=noisy)


_POOL = ThreadPoolExecutor(2)


def noise_two_chunks(blurred, photons_per_unit, read_sd, gain, rng):
    """Exact noise, top and bottom halves drawn from two spawned child generators in two threads.

    Deterministic whatever the number of cores, because the split (2 chunks) is fixed; but a
    different stream from the library's.
    """
    children = rng.spawn(2)
    photons = photons_per_unit * np.clip(blurred, 0.0, 1.0)
    out = np.empty_like(photons)
    half = photons.shape[0] // 2

    def chunk(k):
        rows = slice(0, half) if k == 0 else slice(half, None)
        part = children[k].poisson(photons[rows]) / photons_per_unit
        part += children[k].normal(0.0, read_sd, size=part.shape)
        out[rows] = part

    list(_POOL.map(chunk, (0, 1)))
    out *= gain
    return np.clip(out, 0.0, 1.0, out=out)


def degrade_section(quick: bool) -> list[tuple[str, float, str]]:
    import skimage.data

    number, repeat = (5, 3) if quick else (20, 7)
    image = skimage.data.astronaut()[128:384, 160:416].astype(np.float64) / 255.0
    kernel = csb.random_psf(csb.sample_rng(0, 0), PSF_SIZE, length=LENGTH).kernel
    lam, sigma = 768000.0, 1.0
    p = lam / 255.0
    sd = sigma / 255.0
    rng = csb.sample_rng(1, 0)
    blurred = csb.blur(image, kernel)
    noise_hybrid(blurred, p, sd, 1.0, rng, 1000.0)
    # The float64 prototype is the library's algorithm: it must give the library's blur.
    assert np.array_equal(blur_proto(image, kernel, np.float64), blurred)
    f32_error = np.abs(blur_proto(image, kernel, np.float32) - blurred).max()
    photons = p * np.clip(blurred, 0, 1)
    lib_noise_sd = float(
        np.std(csb.add_noise(blurred, 1.0, lam, sigma, csb.sample_rng(2, 0)) - blurred)
    )

    def share(threshold):
        return f"{float(np.mean(photons >= threshold)):.0%}"

    def noise_sd(func):
        """Standard deviation of the added noise, relative to the library's (one draw each)."""
        return f"noise sd {float(np.std(func() - blurred)) / lib_noise_sd:.4f}x the library's"

    def timed(func):
        return best(func, number, repeat)

    floor = timed(
        lambda: scipy.signal.fftconvolve(image, kernel[:, :, None], mode="same", axes=(0, 1))
    )
    rows = [
        ("floor: scipy.signal.fftconvolve", floor),
        ("library degrade", timed(lambda: csb.degrade(image, kernel, 1.0, lam, sigma, rng))),
        ("library blur", timed(lambda: csb.blur(image, kernel))),
        (
            f"prototype blur, float32 FFTs (max abs(db) vs library {f32_error:.0e})",
            timed(lambda: blur_proto(image, kernel, np.float32)),
        ),
        ("library add_noise", timed(lambda: csb.add_noise(blurred, 1.0, lam, sigma, rng))),
        (
            "prototype exact noise in two fixed chunks, two threads (spawned generators; "
            + noise_sd(lambda: noise_two_chunks(blurred, p, sd, 1.0, csb.sample_rng(2, 1)))
            + ")",
            timed(lambda: noise_two_chunks(blurred, p, sd, 1.0, rng)),
        ),
        (
            "prototype numba noise, exact Poisson everywhere ("
            + noise_sd(lambda: noise_hybrid(blurred, p, sd, 1.0, csb.sample_rng(2, 2), np.inf))
            + ")",
            timed(lambda: noise_hybrid(blurred, p, sd, 1.0, rng, np.inf)),
        ),
        (
            f"prototype numba noise, Normal(mu, mu) where mu >= 1000 photons ({share(1000)} here; "
            + noise_sd(lambda: noise_hybrid(blurred, p, sd, 1.0, csb.sample_rng(2, 3), 1000.0))
            + ")",
            timed(lambda: noise_hybrid(blurred, p, sd, 1.0, rng, 1000.0)),
        ),
        (
            f"prototype numba noise, Normal(mu, mu) where mu >= 100 photons ({share(100)} here; "
            + noise_sd(lambda: noise_hybrid(blurred, p, sd, 1.0, csb.sample_rng(2, 4), 100.0))
            + ")",
            timed(lambda: noise_hybrid(blurred, p, sd, 1.0, rng, 100.0)),
        ),
        (
            "prototype numpy noise, Normal approximation everywhere, one draw per value ("
            + noise_sd(lambda: noise_normal_approx(blurred, p, sd, 1.0, csb.sample_rng(2, 5)))
            + ")",
            timed(lambda: noise_normal_approx(blurred, p, sd, 1.0, rng)),
        ),
        (
            "prototype degrade: float32 blur + library add_noise (exact)",
            timed(
                lambda: csb.add_noise(blur_proto(image, kernel, np.float32), 1.0, lam, sigma, rng)
            ),
        ),
        (
            "prototype degrade: float32 blur + exact noise in two threads",
            timed(lambda: noise_two_chunks(blur_proto(image, kernel, np.float32), p, sd, 1.0, rng)),
        ),
        (
            "prototype degrade: float32 blur + numba noise, Normal where mu >= 100",
            timed(
                lambda: noise_hybrid(blur_proto(image, kernel, np.float32), p, sd, 1.0, rng, 100.0)
            ),
        ),
        (
            "prototype degrade: float32 blur + Normal approximation everywhere",
            timed(
                lambda: noise_normal_approx(blur_proto(image, kernel, np.float32), p, sd, 1.0, rng)
            ),
        ),
    ]
    return [(f"{name} ({value / floor:.2f}x floor)", value * 1e3, "ms") for name, value in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer kernels and repeats")
    parser.add_argument(
        "--json",
        nargs="?",
        const=str(DEFAULT_JSON),
        default=None,
        metavar="OUT",
        help=f"also write the rows as JSON (default path: {DEFAULT_JSON.relative_to(ROOT)})",
    )
    args = parser.parse_args(argv)
    machine = bench_generator.machine()
    rows = kernel_section(args.quick) + degrade_section(args.quick)
    print(
        f"Best of the timeit repeats. 1-minute load average at start "
        f"{machine['load_average_at_start'][0]:.2f}.\n"
    )
    print("| prototype or reference | time |\n|---|---:|")
    for name, value, unit in rows:
        print(
            f"| {name} | {value:.1f} {unit} |"
            if unit == "µs"
            else f"| {name} | {value:.2f} {unit} |"
        )
    print(f"\n1-minute load average at the end {os.getloadavg()[0]:.2f}.")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "machine": machine,
            "quick": args.quick,
            "rows": [{"name": name, "best": value, "unit": unit} for name, value, unit in rows],
        }
        result["load_average_at_end"] = list(os.getloadavg())
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
