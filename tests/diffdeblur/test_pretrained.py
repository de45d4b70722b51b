"""The bundled model: exporting a run, loading by name, `diffdeblur models`, `restore` without a
checkpoint, and fine-tuning with `train --init`; on the real shipped file where it matters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CROP, explain, run_command
from csb_generator import BUILTIN_PHOTOGRAPHS, builtin_folder, read_image, write_image
from diffdeblur import load_restorer
from diffdeblur.checkpoint import CheckpointError, export_model, load_checkpoint
from diffdeblur.config import RestorerConfig
from diffdeblur.pretrained import (
    BUNDLED_MODELS,
    DEFAULT_MODEL,
    BundledModel,
    bundled_model_path,
    locate_model,
)
from diffdeblur.restoration import ImageRestorer
from diffdeblur.samplers import SamplerSpec
from diffdeblur.train import train
from diffdeblur.train_config import TrainConfig


def test_every_bundled_model_ships_with_the_package():
    """The wheel carries the weights: fp16, at most 10 MiB, a configuration that passes the
    limits, and the facts of its model card."""
    for name in BUNDLED_MODELS:
        path = bundled_model_path(name)
        assert path.stat().st_size <= 10 * 2**20
        state = load_checkpoint(path)
        floats = [t for t in state["ema"].values() if t.is_floating_point()]
        assert floats and all(t.dtype == torch.float16 for t in floats)
        card = state["card"]
        assert card["name"] == name
        assert card["steps"] > 0 and card["samples_seen"] == 8 * card["steps"]
        assert card["commands"] and all("diffdeblur train" in c for c in card["commands"])
        # The totals are the sums over the parts it was trained in.
        parts = card["parts"]
        assert sum(part["steps"] for part in parts) == card["steps"]
        assert [c for part in parts for c in part["commands"]] == card["commands"]
        assert sum(part["wall_minutes"] for part in parts) == pytest.approx(
            card["wall_minutes"], abs=0.051
        )
        held_out = set(card["held_out_photographs"])
        assert held_out and not held_out & {p["name"] for p in card["photographs"]}
        # Options added since it was saved load at their defaults.
        assert load_restorer(name).config == RestorerConfig.from_dict(state["restorer"])


def test_load_restorer_by_name_is_the_bundled_file():
    by_name = load_restorer(DEFAULT_MODEL)
    by_path = load_restorer(bundled_model_path(DEFAULT_MODEL))
    for (name, a), (_, b) in zip(
        by_name.state_dict().items(), by_path.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
        assert a.dtype == torch.float32 or not a.is_floating_point()  # restored to float32


def test_a_file_of_the_same_name_wins_over_a_bundled_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT_MODEL).write_bytes(b"not a checkpoint")
    assert locate_model(DEFAULT_MODEL) == Path(DEFAULT_MODEL)
    with pytest.raises(CheckpointError, match="not a zip archive"):
        load_restorer(DEFAULT_MODEL)


def test_unknown_and_missing_bundled_models_are_named(monkeypatch):
    with pytest.raises(KeyError, match=r"no bundled model is called 'nope'.*csb-universal"):
        bundled_model_path("nope")
    missing = BundledModel("missing", "missing.pt", "a model whose file is not installed")
    monkeypatch.setitem(BUNDLED_MODELS, "missing", missing)
    with pytest.raises(FileNotFoundError, match=r"the bundled model missing is not installed"):
        bundled_model_path("missing")
    with pytest.raises(FileNotFoundError, match="missing is not installed"):
        load_restorer("missing")


def test_export_keeps_the_ema_weights_in_float16_and_refuses_raw_weights(tiny_checkpoint, tmp_path):
    out = tmp_path / "model.pt"
    export_model(tiny_checkpoint, out, {"name": "test", "steps": 2})
    state = load_checkpoint(out)
    assert state["card"] == {"name": "test", "steps": 2}
    assert "optimiser" not in state and "model" not in state
    assert out.stat().st_size < 0.5 * tiny_checkpoint.stat().st_size
    trained, exported = load_restorer(tiny_checkpoint), load_restorer(out)
    for name, weight in trained.state_dict().items():
        expected = weight.half().float() if weight.is_floating_point() else weight
        assert torch.equal(exported.state_dict()[name], expected), name
    with pytest.raises(CheckpointError, match="EMA weights only"):
        load_restorer(out, ema=False)


def test_export_refuses_what_is_not_a_checkpoint(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"bad\.pt"):
        export_model(tmp_path / "bad.pt", tmp_path / "out.pt", {})
    assert not (tmp_path / "out.pt").exists()


def _fine_tune_config(data: Path, out: Path, init: str | None, **changes) -> TrainConfig:
    options = dict(
        data=str(data), out=str(out), parametrisation="residual", variant="tiny",
        timesteps=20, patch_size=CROP, batch_size=4, epochs=1, samples_per_epoch=8,
        validation_fraction=0.25, validation_images=2, validation_steps=2, device="cpu",
        precision="fp32", threads=1, lr=1e-12, warmup_steps=0, init=init,
    )  # fmt: skip
    return TrainConfig.from_options(**{**options, **changes})


def test_init_starts_from_the_models_ema_weights(csb_dataset, tiny_checkpoint, tmp_path):
    """With a vanishing learning rate, a fine-tuned run ends where its --init model began."""
    config = _fine_tune_config(csb_dataset, tmp_path / "run", str(tiny_checkpoint), max_steps=1)
    result = train(config, progress=False)
    source, tuned = load_checkpoint(tiny_checkpoint), load_checkpoint(result.checkpoint)
    for name, weight in source["ema"].items():
        torch.testing.assert_close(tuned["model"][name], weight, rtol=0, atol=1e-6)
    # A run resumed keeps its own weights; --init is part of the run's options.
    resumed = train(config, resume=True, progress=False)
    assert resumed.step == 2


def test_init_refuses_a_model_of_another_configuration(csb_dataset, tiny_checkpoint, tmp_path):
    config = _fine_tune_config(
        csb_dataset, tmp_path / "run", str(tiny_checkpoint), parametrisation="regression"
    )
    with pytest.raises(ValueError, match=r"init: .*residual network.*regression network"):
        train(config, progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_models_lists_the_bundled_models(diffdeblur_cli, cli_env):
    result = run_command([diffdeblur_cli, "models"], cli_env)
    assert result.returncode == 0, explain(result)
    assert f"{DEFAULT_MODEL} (default):" in result.stdout
    assert "trained: steps" in result.stdout and "samples seen" in result.stdout
    assert str(bundled_model_path(DEFAULT_MODEL)) in result.stdout


@pytest.mark.slow
def test_restore_without_a_checkpoint_uses_the_bundled_model(diffdeblur_cli, cli_env, tmp_path):
    """`diffdeblur restore photo --out dir` with nothing else: the bundled model, named on
    standard error, equal to the library call with that model."""
    photo = tmp_path / "photo.png"
    write_image(photo, read_image(BUILTIN_PHOTOGRAPHS["coffee"].path)[100:171, 200:293])
    clock = builtin_folder() / "clock_motion.png"
    result = run_command(
        [diffdeblur_cli, "restore", photo, clock, "--out", tmp_path / "out", "--device", "cpu"],
        cli_env,
    )
    assert result.returncode == 0, explain(result)
    assert f"restoring with the bundled model {DEFAULT_MODEL}" in result.stderr
    torch.set_num_threads(1)
    restorer = ImageRestorer.load(DEFAULT_MODEL)
    assert (restorer.patch_size, restorer.overlap, restorer.sampler) == (64, 16, SamplerSpec())
    expected = restorer.restore_image(read_image(photo), generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "photo.png"), expected)
    assert read_image(tmp_path / "out" / "clock_motion.png").shape == read_image(clock).shape


@pytest.mark.slow
def test_restore_model_option_and_its_refusals(diffdeblur_cli, cli_env, tiny_checkpoint, tmp_path):
    photo = tmp_path / "photo.png"
    write_image(photo, read_image(BUILTIN_PHOTOGRAPHS["coffee"].path)[:40, :40])
    named = run_command(
        [diffdeblur_cli, "restore", photo, "--model", DEFAULT_MODEL, "--out", tmp_path / "a"],
        cli_env,
    )
    assert named.returncode == 0, explain(named)
    for extra, message in (
        (["--model", "nope"], "Invalid value for '--model'"),
        (["--model", DEFAULT_MODEL, "--checkpoint", tiny_checkpoint], "not both"),
    ):
        result = run_command(
            [diffdeblur_cli, "restore", photo, *extra, "--out", tmp_path / "b"], cli_env
        )
        assert result.returncode == 2, explain(result)
        assert message in result.stderr
    assert not (tmp_path / "b").exists()
