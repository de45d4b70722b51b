"""The LPIPS term of the training loss (``PerceptualLoss``, ``diffdeblur train
--lpips-loss-weight``): its value against the evaluation's own LPIPS path, grey images, its
gradient, and a real training run that logs and checkpoints it, with the genuine weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import explain, run_command
from diffdeblur.checkpoint import load_checkpoint
from diffdeblur.losses import PerceptualLoss, compare, pixel_loss
from diffdeblur.lpips_weights import load_lpips
from diffdeblur.metrics import lpips_distance


@pytest.fixture(scope="module")
def lpips_model(genuine_weights: Path) -> torch.nn.Module:
    return load_lpips(genuine_weights)


def _pair(channels: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth image in [-1, 1] and a noisy copy of it, (2, channels, 40, 40)."""
    generator = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(-0.8, 0.8, 40)
    target = (ramp[None, :] * ramp[:, None]).expand(2, channels, 40, 40).clone()
    noise = 0.2 * torch.randn(target.shape, generator=generator)
    return (target + noise).clamp(-1, 1), target


def test_perceptual_loss_is_the_pixel_loss_plus_the_weighted_lpips_distance(lpips_model):
    prediction, target = _pair(3)
    loss = PerceptualLoss("charbonnier", lpips_model, weight=0.25)
    value = loss(prediction, target)
    # The evaluation's path: images in [0, 1], mapped to [-1, 1] inside lpips_distance.
    distance = lpips_distance((prediction + 1) / 2, (target + 1) / 2, lpips_model).mean()
    pixel = pixel_loss(prediction, target, "charbonnier")
    assert float(distance) > 0.01  # noise is far from the smooth image to LPIPS
    assert float(value) == pytest.approx(float(pixel + 0.25 * distance), rel=1e-5)
    assert loss.terms == pytest.approx({"pixel": float(pixel), "lpips": float(distance)}, rel=1e-5)
    assert float(compare(prediction, target, loss)) == pytest.approx(float(value), rel=1e-6)
    assert float(compare(target, target, loss)) == pytest.approx(0.0, abs=1e-6)


def test_a_grey_image_is_compared_as_three_equal_channels(lpips_model):
    grey_prediction, grey_target = _pair(1)
    loss = PerceptualLoss("l1", lpips_model, weight=1.0)
    grey = float(loss(grey_prediction, grey_target))
    colour = float(loss(grey_prediction.expand(-1, 3, -1, -1), grey_target.expand(-1, 3, -1, -1)))
    assert grey == pytest.approx(colour, rel=1e-6)


def test_the_gradient_reaches_the_prediction_and_not_the_lpips_network(lpips_model):
    prediction, target = _pair(3)
    prediction.requires_grad_(True)
    PerceptualLoss("mse", lpips_model, weight=1.0)(prediction, target).backward()
    pixel_only = prediction.detach().clone().requires_grad_(True)
    pixel_loss(pixel_only, target, "mse").backward()
    assert torch.isfinite(prediction.grad).all()
    # The LPIPS term moves the gradient away from the pixel loss's own.
    assert float((prediction.grad - pixel_only.grad).abs().max()) > 1e-4
    assert all(parameter.grad is None for parameter in lpips_model.parameters())


def test_bad_perceptual_settings_are_refused(lpips_model):
    with pytest.raises(ValueError, match="weight must be > 0"):
        PerceptualLoss("l1", lpips_model, weight=0.0)
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        PerceptualLoss("huber", lpips_model, weight=0.1)  # type: ignore[arg-type]


#: A short bridge run of 3 steps of 4 patches of 32 px.
SHORT_BRIDGE = [
    "--variant", "tiny", "--parametrisation", "bridge", "--loss", "charbonnier",
    "--timesteps", "20", "--patch-size", "32", "--batch-size", "4", "--epochs", "1",
    "--samples-per-epoch", "12", "--validation-fraction", "0.25", "--validation-images", "2",
    "--validation-steps", "1", "--log-every", "1", "--device", "cpu", "--precision", "fp32",
    "--threads", "1", "--quiet",
]  # fmt: skip


@pytest.mark.slow  # three interpreter starts and a short training run: about 15 s
def test_train_logs_and_checkpoints_the_lpips_term(
    diffdeblur_cli, cli_env, csb_dataset, genuine_weights, tmp_path
):
    out = tmp_path / "run"
    lpips = ["--lpips-loss-weight", "0.5", "--lpips-weights", genuine_weights]
    command = [diffdeblur_cli, "train", "--data", csb_dataset, "--out", out, *SHORT_BRIDGE]
    result = run_command([*command, *lpips], cli_env)
    assert result.returncode == 0, explain(result)
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [entry for entry in entries if "lpips" in entry]
    assert [entry["step"] for entry in steps] == [1, 2, 3]
    for entry in steps:
        assert entry["lpips"] > 0
        assert entry["loss"] == pytest.approx(entry["pixel"] + 0.5 * entry["lpips"], rel=1e-5)
    saved = load_checkpoint(out / "checkpoint.pt")["train"]
    assert saved["lpips_loss_weight"] == 0.5
    # The weight is part of the run: resuming with another one is refused.
    changed = ["--lpips-loss-weight", "0.1", "--lpips-weights", genuine_weights]
    again = run_command([*command, "--resume", *changed], cli_env)
    assert again.returncode == 2, explain(again)
    assert "--lpips-loss-weight 0.5 -> 0.1" in again.stderr
    # A weights file that does not exist is a usage error that names it.
    missing = tmp_path / "no-such-weights.pt"
    other = [diffdeblur_cli, "train", "--data", csb_dataset, "--out", tmp_path / "other"]
    refused = run_command(
        [*other, *SHORT_BRIDGE, "--lpips-loss-weight", "0.5", "--lpips-weights", missing], cli_env
    )
    assert refused.returncode == 2, explain(refused)
    assert str(missing) in refused.stderr
    assert not (tmp_path / "other" / "checkpoint.pt").exists()
