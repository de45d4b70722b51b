"""The deconvolution front end of a restorer (``--deconvolve``): kernels in the training data,
Wiener with the stored or the estimated kernel, the networks that refine it, and the command-line
tools around one checkpoint of all three."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CROP, explain, run_command
from csb_generator import BUILTIN_PHOTOGRAPHS, open_dataset, read_image, write_image
from diffdeblur.config import DeconvolutionConfig
from diffdeblur.data import open_training_data
from diffdeblur.deconvolution import odd_kernel, odd_kernel_size
from diffdeblur.evaluation import EvaluationSettings, evaluate_samples, summarise
from diffdeblur.kernel_estimation import reblur_loss
from diffdeblur.restorer import Restorer, restorer_config
from diffdeblur.wiener import wiener_deconvolve
from torch import nn


class _Deconvolved(nn.Module):
    """A regressor that returns the deconvolved image it is given (input channels 3-5), so that
    the restorer's output is the front end's."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x[:, 3:6]


def test_odd_kernel_centres_even_kernels_and_keeps_odd_ones():
    even = np.zeros((4, 4))
    even[2, 1:4] = 1.0  # origin (2, 2): the kernel reaches one pixel left, one right
    grid = odd_kernel(even)
    assert grid.shape == (5, 5) and odd_kernel_size(4) == 5 and odd_kernel_size(5) == 5
    assert grid.sum() == pytest.approx(1.0)
    # On the odd grid the origin is the centre, so the horizontal flip is the same kernel.
    np.testing.assert_array_equal(grid, grid[:, ::-1])
    odd = np.arange(9.0).reshape(3, 3)
    np.testing.assert_allclose(odd_kernel(odd), odd / odd.sum(), rtol=1e-6)
    with pytest.raises(ValueError, match="non-negative"):
        odd_kernel(-odd)


def test_training_patches_carry_the_kernel_that_reblurs_them_flips_included(csb_dataset):
    """Each patch's kernel blurs its sharp patch into its blurred one; for a flipped patch the
    unflipped kernel does not (the check bites)."""
    data = open_training_data(csb_dataset, CROP, seed=3)
    assert data.kernel_size == 17  # PSF 16
    flipped_checked = 0
    for epoch in range(3):
        data.set_epoch(epoch)
        for position in range(8):
            sample = data[position]
            kernel = sample["kernel"]
            assert kernel.shape == (17, 17) and kernel.dtype == torch.float32
            assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-6)
            blurred, sharp = sample["blurred"][None], sample["sharp"][None]
            error = reblur_loss(kernel[None].double(), sharp.double(), blurred.double())
            assert error < 2e-3, (epoch, position, float(error))
            stored = torch.from_numpy(odd_kernel(data.dataset[sample["index"]]["kernel"]))
            if not torch.equal(stored, kernel):
                wrong = reblur_loss(stored[None].double(), sharp.double(), blurred.double())
                assert wrong > 3 * error
                flipped_checked += 1
    assert flipped_checked >= 4


def test_the_front_end_equals_the_wiener_baseline_with_the_stored_kernel(csb_dataset):
    """A non-blind restorer whose refiner passes the deconvolution through equals the baseline's
    Wiener filter: to 1e-5 on one image, and scored by ``evaluate_samples`` as its Wiener row.

    The evaluation's row pads by the stored kernel's 16 px, the front end by its odd grid's 17,
    which moves the border extension slightly: the scores agree to 0.02 dB, not exactly. A
    kernel in the wrong orientation or place would cost decibels."""
    config = restorer_config(
        "regression", "tiny", deconvolution=DeconvolutionConfig(kernel_size=17, kernel="true")
    )
    model = Restorer(config).eval()
    model.regressor = _Deconvolved()
    balance = 0.01
    with torch.no_grad():
        model.wiener.log_balance.fill_(math.log(balance))
    dataset = open_dataset(csb_dataset)
    settings = EvaluationSettings(protocol="context", patch_size=24, batch_size=4, limit=8)
    evaluation = evaluate_samples(dataset, settings, model=model, wiener_balance=balance)
    summary = {entry["method"]: entry for entry in summarise(evaluation.rows)}
    assert summary["model"]["psnr"] == pytest.approx(summary["wiener"]["psnr"], abs=0.02)
    assert summary["model"]["ssim"] == pytest.approx(summary["wiener"]["ssim"], abs=1e-4)
    assert summary["model"]["psnr"] > summary["blurred"]["psnr"] + 1.0
    # And on one image by hand, against the baseline itself.
    sample = dataset[0]
    blurred = torch.from_numpy(sample["blurred"]).permute(2, 0, 1)[None] * 2 - 1
    kernel = torch.from_numpy(odd_kernel(sample["kernel"]))[None]
    with torch.no_grad():
        restored = model.restore(blurred, generator=None, kernel=kernel)
    expected = wiener_deconvolve(sample["blurred"], odd_kernel(sample["kernel"]), balance)
    np.testing.assert_allclose(
        ((restored[0] + 1) / 2).permute(1, 2, 0).numpy(), expected, atol=1e-5
    )


def test_kernels_are_checked_and_a_non_blind_restorer_needs_one():
    front = DeconvolutionConfig(kernel_size=5, kernel="true")
    model = Restorer(restorer_config("bridge", "tiny", deconvolution=front)).eval()
    blurred = torch.zeros(2, 3, 16, 16)
    with pytest.raises(ValueError, match="true kernel"):
        model.restore(blurred, generator=None)
    with pytest.raises(ValueError, match="5x5 kernels"):
        model.restore(blurred, generator=None, kernel=torch.ones(2, 7, 7))
    plain = Restorer(restorer_config("bridge", "tiny")).eval()
    with pytest.raises(ValueError, match="no deconvolution front end"):
        plain.restore(blurred, generator=None, kernel=torch.ones(2, 5, 5))
    with pytest.raises(ValueError, match="odd"):
        DeconvolutionConfig(kernel_size=16)
    blind = Restorer(restorer_config("regression", "tiny", deconvolution=DeconvolutionConfig()))
    with pytest.raises(ValueError, match="stored kernels"):
        blind.training_loss(blurred, blurred, torch.Generator())


def test_the_blind_restorer_estimates_from_the_whole_image_and_restores_any_size():
    front = DeconvolutionConfig(kernel_size=9)
    model = Restorer(restorer_config("regression", "tiny", deconvolution=front)).eval()
    generator = torch.Generator().manual_seed(0)
    for height, width in ((40, 70), (33, 33)):
        blurred = torch.rand(1, 3, height, width, generator=generator) * 2 - 1
        with torch.no_grad():
            observed = model.observe(blurred)
            restored = model.restore(blurred, generator=None)
        assert observed.shape == (1, 6, height, width)
        assert torch.equal(observed[:, :3], blurred)
        kernel = model.kernel_estimator(blurred)
        expected = model.deconvolve(blurred, kernel)
        torch.testing.assert_close(observed[:, 3:], expected)
        assert restored.shape == blurred.shape


def test_the_estimator_runs_in_float32_under_bf16_autocast():
    """In bf16 the estimator collapsed to the identity kernel in training (docs/diffdeblur.md),
    so the restorer runs it in float32: under autocast its estimate is the float32 one exactly,
    where the estimator called under autocast gives another (the check bites)."""
    front = DeconvolutionConfig(kernel_size=9)
    model = Restorer(restorer_config("regression", "tiny", deconvolution=front)).eval()
    blurred = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        plain = model.kernel(blurred)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.kernel(blurred)
            direct = model.kernel_estimator(blurred)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, plain)
    assert not torch.equal(direct.float(), plain)


# --- the command-line tools ---------------------------------------------------------------


def _train(
    cli, env, data: Path, out: Path, deconvolve: str, patch_size: int = 32
) -> subprocess.CompletedProcess:
    command = [
        cli, "train", "--data", data, "--out", out, "--variant", "tiny",
        "--parametrisation", "regression", "--deconvolve", deconvolve,
        "--patch-size", str(patch_size),
        "--batch-size", "4", "--max-steps", "2", "--validation-fraction", "0.25",
        "--validation-images", "2", "--device", "cpu", "--precision", "fp32", "--threads", "1",
        "--quiet",
    ]  # fmt: skip
    return run_command(command, env)


@pytest.fixture(scope="module")
def blind_checkpoint(diffdeblur_cli, cli_env, csb_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("blind") / "run"
    result = _train(diffdeblur_cli, cli_env, csb_dataset, out, "estimated")
    assert result.returncode == 0, explain(result)
    return out / "checkpoint.pt"


@pytest.mark.slow
def test_the_blind_checkpoint_restores_photographs_of_any_size(
    diffdeblur_cli, cli_env, blind_checkpoint, tmp_path
):
    astronaut = read_image(BUILTIN_PHOTOGRAPHS["astronaut"].path)
    # Smaller than the 17 px kernels is restored too (the PSF-64 protocol's case); 1 px is not.
    sources = {
        "wide.png": astronaut[50:91, 60:137],
        "tall.png": astronaut[0:70, 0:45],
        "small.png": astronaut[:12, :12],
    }
    for name, image in sources.items():
        write_image(tmp_path / name, image)
    too_small = tmp_path / "tiny.png"
    write_image(too_small, astronaut[:1, :1])
    out = tmp_path / "restored"
    command = [diffdeblur_cli, "restore", "--checkpoint", blind_checkpoint, "--out", out]
    result = run_command([*command, *(tmp_path / n for n in sources), "--quiet"], cli_env)
    assert result.returncode == 0, explain(result)
    for name, image in sources.items():
        assert read_image(out / name).shape == image.shape
    small = run_command([*command, too_small, "--quiet"], cli_env)
    assert small.returncode == 1, explain(small)
    assert "tiny.png" in small.stderr and "too small" in small.stderr
    assert not (out / "tiny.png").exists()


@pytest.mark.slow
def test_the_non_blind_checkpoint_is_scored_with_the_stored_kernels_and_refuses_photographs(
    diffdeblur_cli, cli_env, csb_dataset, tmp_path
):
    run = tmp_path / "run"
    result = _train(diffdeblur_cli, cli_env, csb_dataset, run, "true")
    assert result.returncode == 0, explain(result)
    photo = tmp_path / "photo.png"
    write_image(photo, read_image(BUILTIN_PHOTOGRAPHS["astronaut"].path)[:40, :40])
    command = [diffdeblur_cli, "restore", "--checkpoint", run / "checkpoint.pt", photo]
    refused = run_command([*command, "--out", tmp_path / "restored"], cli_env)
    assert refused.returncode == 2 and "true kernel" in refused.stderr, explain(refused)
    report = tmp_path / "report"
    command = [
        diffdeblur_cli, "evaluate", "--checkpoint", run / "checkpoint.pt", "--data", csb_dataset,
        "--limit", "4", "--patch-size", "24", "--out", report, "--device", "cpu", "--quiet",
        "--no-lpips",
    ]  # fmt: skip
    scored = run_command(command, cli_env)
    assert scored.returncode == 0, explain(scored)
    summary = json.loads((report / "metrics.json").read_text())["summary"]
    model = [entry for entry in summary if entry["method"] == "model"]
    assert len(model) == 1 and model[0]["images"] == 4 and math.isfinite(model[0]["psnr"])


def test_an_image_folder_without_kernels_is_refused(diffdeblur_cli, cli_env, tmp_path):
    astronaut = read_image(BUILTIN_PHOTOGRAPHS["astronaut"].path)
    for name, top in (("a", 0), ("b", 100)):
        for kind in ("blur", "sharp"):
            (tmp_path / "gopro" / "scene" / kind).mkdir(parents=True, exist_ok=True)
            image = astronaut[top : top + 48, :48]
            write_image(tmp_path / "gopro" / "scene" / kind / f"{name}.png", image)
    result = _train(diffdeblur_cli, cli_env, tmp_path / "gopro", tmp_path / "run", "estimated")
    assert result.returncode == 2, explain(result)
    assert "--deconvolve: estimated learns from stored kernels" in result.stderr
    assert "has none" in result.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_the_estimator_refuses_patches_smaller_than_the_kernel(
    diffdeblur_cli, cli_env, csb_dataset, tmp_path
):
    # The dataset's 16 px kernels sit on a 17 px grid; the re-blur loss has no pixel in a
    # 16 px patch whose whole neighbourhood it holds.
    result = _train(diffdeblur_cli, cli_env, csb_dataset, tmp_path / "run", "estimated", 16)
    assert result.returncode == 2, explain(result)
    assert "--patch-size: 16 is smaller than" in result.stderr
    assert "set --patch-size to 17 or more" in result.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
