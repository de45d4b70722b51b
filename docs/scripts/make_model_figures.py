"""Regenerate the figures of docs/model.md (and docs/index.md).

    python docs/scripts/make_model_figures.py            # writes docs/img/kernels.png
                                                         # and docs/img/exposure_tradeoff.png
    python docs/scripts/make_model_figures.py --out DIR  # somewhere else

Every random draw comes from ``csb_generator.sample_rng`` with the fixed seeds below, so the
figures are the same on every run (up to the matplotlib version's rendering). The photograph is
``skimage.data.astronaut()``, which ships inside the scikit-image wheel: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import io
from fractions import Fraction
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import csb_generator as csb
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

DOCS_IMG = Path(__file__).resolve().parents[1] / "img"
DPI = 110

#: Seeds of the figures (dataset seed, sample index) for sample_rng.
KERNEL_SEED = 5
TRAJECTORY_SEED, TRAJECTORY_INDEX = 3, 0
NOISE_SEED = 11

ANXIETIES = (0.0, 0.001, 0.005, 0.01, 0.05)
LENGTHS = (8.0, 16.0, 32.0)
KERNEL_PSF = 64
#: Side of the central window of each kernel that the grid shows (checked to hold all the mass).
KERNEL_VIEW = 40

EXPOSURES = (1.0, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32)
TRADEOFF_PSF = 64
TRADEOFF_LENGTH = 32.0
TRADEOFF_ANXIETY = 0.005
#: (lam, sigma) rows: the thesis's T-sweep setting, then its (sigma, lam) = (2, 192000) pair.
NOISE_ROWS = ((765000.0, 0.0), (192000.0, 2.0))
#: Crop of the degraded photograph shown (top, left, size), in pixels of the 512x512 image.
CROP = (40, 150, 200)


def _show_kernel(ax, kernel: np.ndarray, view: int | None = None) -> None:
    """Square-root display, scaled to the kernel's own maximum, so faint parts of a path show.

    ``view`` shows only the central ``view x view`` window; it must hold the whole kernel.
    """
    if view is not None:
        start = kernel.shape[0] // 2 - view // 2
        window = kernel[start : start + view, start : start + view]
        if not np.isclose(window.sum(), kernel.sum(), rtol=0, atol=1e-12):
            raise ValueError("the display window would hide part of the kernel")
        kernel = window
    ax.imshow(np.sqrt(kernel / kernel.max()), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: Path, *, palette: bool = False) -> None:
    """Save a figure as PNG; ``palette`` quantises it to 256 colours to keep photographs small."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    image = Image.open(io.BytesIO(buffer.getvalue()))
    if palette:
        image = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    image.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


def kernels_figure(path: Path) -> None:
    """A grid of camera-shake kernels: anxiety across, path length down, one seed throughout."""
    fig, axes = plt.subplots(
        len(LENGTHS), len(ANXIETIES), figsize=(1.75 * len(ANXIETIES), 2.1 * len(LENGTHS) + 0.3)
    )
    for row, length in enumerate(LENGTHS):
        for col, anxiety in enumerate(ANXIETIES):
            psf = csb.random_psf(
                csb.sample_rng(KERNEL_SEED, 0), KERNEL_PSF, length=length, anxiety=anxiety
            )
            ax = axes[row, col]
            _show_kernel(ax, psf.kernel, KERNEL_VIEW)
            label = "0 (linear)" if anxiety == 0 else f"{anxiety:g}"
            extra = f"{psf.trajectory.num_shakes} shake(s)" if anxiety > 0 else "straight"
            if psf.redraws:
                extra += f", {psf.redraws} redraw(s)"
            ax.set_title(f"a = {label}, L = {length:g}\n{extra}", fontsize=8)
    fig.suptitle(
        f"Camera-shake kernels, psf {KERNEL_PSF}, T = 1, sample_rng({KERNEL_SEED}, 0) in every "
        f"panel\n(central {KERNEL_VIEW}x{KERNEL_VIEW} px shown, square-root display)",
        fontsize=9,
    )
    fig.tight_layout()
    _save(fig, path)


def _psnr(estimate: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((estimate - reference) ** 2))
    return 10 * np.log10(1.0 / mse)


def _fraction(value: float) -> str:
    return str(Fraction(value).limit_denominator(64))


def exposure_tradeoff_figure(path: Path) -> None:
    """One trajectory, T = 1 .. 1/32: kernels on top, the degraded photograph below."""
    import skimage.data

    image = skimage.data.astronaut().astype(np.float64) / 255.0
    psf = csb.random_psf(
        csb.sample_rng(TRAJECTORY_SEED, TRAJECTORY_INDEX),
        TRADEOFF_PSF,
        exposure=list(EXPOSURES),
        length=TRADEOFF_LENGTH,
        anxiety=TRADEOFF_ANXIETY,
    )
    top, left, size = CROP
    crop = (slice(top, top + size), slice(left, left + size))
    sharp = image[crop]
    rows = 1 + len(NOISE_ROWS)
    fig, axes = plt.subplots(
        rows, len(EXPOSURES), figsize=(1.7 * len(EXPOSURES), 1.85 * rows + 0.3)
    )
    for col, (exposure, kernel) in enumerate(zip(EXPOSURES, psf.kernel, strict=True)):
        _show_kernel(axes[0, col], kernel, KERNEL_VIEW)
        axes[0, col].set_title(f"T = {_fraction(exposure)}, sum k = {kernel.sum():.3g}", fontsize=8)
        for row, (lam, sigma) in enumerate(NOISE_ROWS, start=1):
            # The same noise generator for every T, as in a tsweep dataset: only T differs.
            degraded = csb.degrade(
                image, kernel, exposure, lam=lam, sigma=sigma, rng=csb.sample_rng(NOISE_SEED, row)
            )
            ax = axes[row, col]
            ax.imshow(degraded[crop], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"PSNR {_psnr(degraded[crop], sharp):.1f} dB", fontsize=8)
            if col == 0:
                ax.set_ylabel(f"λ = {lam:.0f}\nσ = {sigma:g}", fontsize=8)
    axes[0, 0].set_ylabel(
        f"kernel (psf {TRADEOFF_PSF},\ncentral {KERNEL_VIEW} px, sqrt)", fontsize=8
    )
    fig.suptitle(
        f"Exposure trade-off: one trajectory (L = {TRADEOFF_LENGTH:g}, a = {TRADEOFF_ANXIETY:g}, "
        f"sample_rng({TRAJECTORY_SEED}, {TRAJECTORY_INDEX})); shorter T: less blur, more noise",
        fontsize=9,
    )
    fig.tight_layout()
    _save(fig, path, palette=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DOCS_IMG, help=f"folder (default {DOCS_IMG})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    kernels_figure(args.out / "kernels.png")
    exposure_tradeoff_figure(args.out / "exposure_tradeoff.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
