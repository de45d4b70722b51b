"""``diffdeblur restore`` as a user runs it: real checkpoint, real image files, subprocesses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from csb_generator import BUILTIN_PHOTOGRAPHS, read_image, write_image
from diffdeblur.checkpoint import load_checkpoint, save_checkpoint
from diffdeblur.restoration import ImageRestorer
from diffdeblur.samplers import SamplerSpec

pytestmark = pytest.mark.slow  # each test starts the command-line tool (a few seconds)

FAST = ["--steps", "3", "--patch-size", "32", "--overlap", "8", "--device", "cpu", "--quiet"]


def _run(command: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, env=env, timeout=300
    )


def _explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Odd-sized grey/colour, 8/16-bit PNG, JPEG and TIFF files cut from real photographs."""
    folder = tmp_path_factory.mktemp("inputs")
    astronaut = read_image(BUILTIN_PHOTOGRAPHS["astronaut"].path)
    camera = read_image(BUILTIN_PHOTOGRAPHS["camera"].path)
    files = {
        "grey8.png": camera[100:145, 200:271],
        "rgb8.jpg": astronaut[50:91, 60:137],
        "rgb16.png": astronaut[200:237, 180:233].astype(np.uint16) * 257,
        "grey16.tif": camera[300:319, 10:45].astype(np.uint16) * 257 + 3,
        "small.png": astronaut[10:23, 20:41],  # smaller than a patch
    }
    for name, image in files.items():
        write_image(folder / name, image)
    return {name: folder / name for name in files}


def test_restores_every_size_channel_count_and_bit_depth(
    diffdeblur_cli, cli_env, tiny_checkpoint, inputs, tmp_path
):
    out = tmp_path / "restored"
    command = [diffdeblur_cli, "restore", "--checkpoint", tiny_checkpoint, *inputs.values()]
    result = _run([*command, "--out", out, *FAST], cli_env)
    assert result.returncode == 0, _explain(result)
    for name, source in inputs.items():
        original, restored = read_image(source), read_image(out / name)
        assert restored.shape == original.shape, name
        assert restored.dtype == original.dtype, name
    # The command is the library call: the same image, seed and settings give the same pixels.
    restorer = ImageRestorer.load(
        tiny_checkpoint, patch_size=32, overlap=8, sampler=SamplerSpec(steps=3)
    )
    torch.set_num_threads(1)
    expected = restorer.restore_image(
        read_image(inputs["rgb16.png"]), generator=torch.Generator().manual_seed(0)
    )
    np.testing.assert_array_equal(read_image(out / "rgb16.png"), expected)


def test_folder_input_format_option_and_refusals(
    diffdeblur_cli, cli_env, tiny_checkpoint, inputs, tmp_path
):
    folder = next(iter(inputs.values())).parent
    out = tmp_path / "restored"
    base = [diffdeblur_cli, "restore", "--checkpoint", tiny_checkpoint]
    result = _run([*base, folder, "--out", out, "--format", "png", *FAST], cli_env)
    assert result.returncode == 0, _explain(result)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        Path(name).stem + ".png" for name in inputs
    )
    assert read_image(out / "grey16.png").dtype == np.uint16

    # An existing output is kept unless --overwrite says otherwise.
    before = (out / "small.png").read_bytes()
    again = _run([*base, inputs["small.png"], "--out", out, *FAST], cli_env)
    assert again.returncode == 2, _explain(again)
    assert "--overwrite" in again.stderr and "small.png" in again.stderr
    assert (out / "small.png").read_bytes() == before

    missing = _run([*base, tmp_path / "nope.png", "--out", out, *FAST], cli_env)
    assert missing.returncode == 2 and "nope.png" in missing.stderr, _explain(missing)

    bad_checkpoint = tmp_path / "bad.pt"
    bad_checkpoint.write_bytes(b"not a checkpoint")
    command = [diffdeblur_cli, "restore", "--checkpoint", bad_checkpoint, inputs["small.png"]]
    refused = _run([*command, "--out", tmp_path / "x", *FAST], cli_env)
    assert refused.returncode == 2 and "bad.pt" in refused.stderr, _explain(refused)

    # A diverged run's checkpoint: NaN weights would restore to black images.
    state = load_checkpoint(tiny_checkpoint)
    state["ema"] = {
        name: torch.full_like(t, float("nan")) if t.is_floating_point() else t
        for name, t in state["ema"].items()
    }
    save_checkpoint(tmp_path / "nan.pt", state)
    command = [diffdeblur_cli, "restore", "--checkpoint", tmp_path / "nan.pt", inputs["small.png"]]
    refused = _run([*command, "--out", tmp_path / "y", *FAST], cli_env)
    assert refused.returncode == 2, _explain(refused)
    assert "nan.pt" in refused.stderr and "hold NaN or inf" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "y").exists()


def test_an_unreadable_image_fails_alone(
    diffdeblur_cli, cli_env, tiny_checkpoint, inputs, tmp_path
):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "restored"
    command = [diffdeblur_cli, "restore", "--checkpoint", tiny_checkpoint, broken]
    result = _run([*command, inputs["small.png"], "--out", out, *FAST], cli_env)
    assert result.returncode == 1, _explain(result)
    assert "broken.png" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["small.png"]


def test_help_explains_the_options(diffdeblur_cli, cli_env):
    result = _run([diffdeblur_cli, "restore", "--help"], cli_env)
    assert result.returncode == 0, _explain(result)
    text = " ".join(result.stdout.split())  # help wraps at the terminal width
    for option in ("--checkpoint", "--sampler", "--steps", "--eta", "--patch-size", "--overlap"):
        assert option in text, option
    for phrase in ("--batch-size", "--seed", "--device", "Examples:", "bit depth"):
        assert phrase in text, phrase


def test_the_sampler_options_are_checked_against_the_registry_and_the_model(
    diffdeblur_cli, cli_env, tiny_checkpoint, inputs, tmp_path
):
    base = [diffdeblur_cli, "restore", "--checkpoint", tiny_checkpoint, inputs["small.png"]]
    out = tmp_path / "restored"
    for options, message in (
        (["--sampler", "euler"], "'euler' is not one of 'ddpm', 'ddim', 'bridge'"),
        (["--sampler", "bridge"], "cannot sample"),  # the tiny model is Gaussian diffusion
        (["--steps", "21"], "steps must be <= 20"),
        (["--eta", "1.5"], "eta must be in [0, 1]"),
        (["--sampler", "ddpm", "--steps", "5"], "takes all 20 steps"),
        (["--threads", "0"], "--threads: must be >= 1"),
        (["--patch-size", "32", "--overlap", "32"], "--patch-size/--overlap: overlap must be in"),
    ):
        result = _run([*base, "--out", out, "--device", "cpu", "--quiet", *options], cli_env)
        assert result.returncode == 2, _explain(result)
        assert message in " ".join(result.stderr.split()), _explain(result)
    assert not out.exists()  # nothing was written for a refused command
