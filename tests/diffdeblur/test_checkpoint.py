"""Checkpoints (``diffdeblur.checkpoint``): round trip, rebuilding a restorer, refusing files that
are not ours (a crafted pickle payload above all, which must never run), and atomic writes."""

from __future__ import annotations

import os
import pathlib
import pickle
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from diffdeblur.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    TrainingState,
    export_model,
    load_checkpoint,
    load_restorer,
    load_training_state,
    save_checkpoint,
    save_training_state,
)
from diffdeblur.config import DiffusionConfig
from diffdeblur.restorer import Restorer, restorer_config
from diffdeblur.samplers import SamplerSpec
from restorer_support import seeded_restorer

pytestmark = pytest.mark.usefixtures("single_thread")


def _model(parametrisation: str = "refine", seed: int = 0) -> Restorer:
    """A small restorer drawn from ``seed``, its zero-initialised layers made non-zero."""
    config = restorer_config(
        parametrisation, "tiny", diffusion=DiffusionConfig(timesteps=20), base_channels=16
    )
    return seeded_restorer(config, seed).eval()


def _state(model: Restorer, ema: Restorer | None = None) -> dict:
    return {
        "model": model.state_dict(),
        "ema": (ema or model).state_dict(),
        "step": 7,
        "restorer": model.config.to_dict(),
    }


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _files(folder: pathlib.Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# --- round trip ------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(0)
    state = {
        "model": {"w": torch.randn(3, 4, generator=generator), "n": torch.tensor(5)},
        "optimiser": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1}]},
        "step": 12,
        "rng": {"noise": [torch.arange(4, dtype=torch.uint8)]},
        "train": {"lr": 2e-4, "budget_minutes": None, "device": "cpu", "amp": False},
        "restorer": restorer_config("residual", "tiny").to_dict(),
    }
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["format"] == CHECKPOINT_FORMAT
    assert set(loaded) == {"format", *state}
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert torch.equal(loaded["model"]["n"], state["model"]["n"])
    assert torch.equal(loaded["rng"]["noise"][0], state["rng"]["noise"][0])
    assert loaded["optimiser"]["state"][0]["step"].item() == 3.0
    assert loaded["optimiser"]["param_groups"] == [{"lr": 0.1}]
    assert loaded["step"] == 12
    assert loaded["train"] == state["train"]
    assert loaded["restorer"] == state["restorer"]
    # Saving again replaces the file.
    save_checkpoint(path, {**state, "step": 13})
    assert load_checkpoint(path)["step"] == 13


def test_a_training_state_round_trips_and_an_exported_model_is_not_one(tmp_path):
    """The training checkpoint's layout is one type; an exported model (no optimiser, no random
    states) is refused as one, naming the file, and a checkpoint older than the data
    fingerprint reads with None."""
    model = _model("regression")
    optimiser = torch.optim.Adam(model.parameters())
    state = TrainingState(
        model=model.state_dict(),
        ema=model.state_dict(),
        optimiser=optimiser.state_dict(),
        step=7,
        rng={"noise": [torch.Generator().manual_seed(1).get_state()]},
        train={"lr": 2e-4},
        restorer=model.config.to_dict(),
        data_fingerprint="abc",
    )
    path = tmp_path / "checkpoint.pt"
    save_training_state(path, state)
    loaded = load_training_state(path)
    assert (loaded.step, loaded.train, loaded.data_fingerprint) == (7, {"lr": 2e-4}, "abc")
    assert loaded.restorer == state.restorer
    assert all(torch.equal(loaded.ema[k], v) for k, v in state.ema.items())
    assert torch.equal(loaded.rng["noise"][0], state.rng["noise"][0])
    older = {k: v for k, v in state.to_dict().items() if k != "data_fingerprint"}
    save_checkpoint(tmp_path / "older.pt", older)
    assert load_training_state(tmp_path / "older.pt").data_fingerprint is None
    exported = tmp_path / "exported.pt"
    export_model(path, exported, {"name": "test"})
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(exported))} is not a training"):
        load_training_state(exported)


@pytest.mark.parametrize("parametrisation", ["residual", "refine", "regression"])
def test_load_restorer_rebuilds_the_same_model(tmp_path, parametrisation):
    model = _model(parametrisation, seed=1)
    ema = _model(parametrisation, seed=2)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state(model, ema))

    for use_ema, source in ((True, ema), (False, model)):
        loaded = load_restorer(path, ema=use_ema)
        assert not loaded.training
        assert loaded.config == model.config
        expected = source.state_dict()
        got = loaded.state_dict()
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[key], expected[key]) for key in expected)
        blurred = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(3)) * 2 - 1
        outputs = [
            net.restore(
                blurred,
                sampler=SamplerSpec(steps=4),
                generator=torch.Generator().manual_seed(4),
            )
            for net in (loaded, source)
        ]
        assert torch.equal(outputs[0], outputs[1])
    # The two weight sets differ, so the loop above tells them apart.
    from_ema, from_model = (
        load_restorer(path).state_dict(),
        load_restorer(path, ema=False).state_dict(),
    )
    assert any(not torch.equal(from_ema[key], from_model[key]) for key in from_ema)


# --- refusals --------------------------------------------------------------------------------


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "step": 1, "model": _Payload(marker)}, path)

    with pytest.raises(CheckpointError, match=re.escape("evil.pt")) as caught:
        load_checkpoint(path)
    assert "refused" in str(caught.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=re.escape("evil.pt")):
        load_restorer(path)
    assert not marker.exists()

    # The payload is live: an unrestricted load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_plain_pickle_payload_is_refused(tmp_path):
    """A file written by ``pickle`` rather than ``torch.save`` is refused the same way."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"format": CHECKPOINT_FORMAT, "x": _Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=re.escape("evil.pkl")):
        load_checkpoint(path)
    assert not marker.exists()


GARBAGE = {
    "empty": b"",
    "text": b"not a checkpoint\n",
    "hello": b"hello world, this is not a checkpoint" * 10,
    "bytes": bytes(range(256)) * 4,
    "random": np.random.default_rng(0).bytes(4096),
    "zip-like": b"PK\x03\x04" + bytes(64),
}


@pytest.mark.parametrize("content", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_file_is_a_checkpoint_error_naming_it(tmp_path, content):
    path = tmp_path / "damaged.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape("damaged.pt")):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=re.escape("damaged.pt")):
        load_restorer(path)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_checkpoint_is_a_checkpoint_error_naming_it(tmp_path, keep):
    good = tmp_path / "good.pt"
    save_checkpoint(good, _state(_model("regression")))
    data = good.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=re.escape("truncated.pt")):
        load_checkpoint(path)


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape("nothing.pt")):
        load_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(CheckpointError, match=re.escape("nothing.pt")):
        load_restorer(tmp_path / "nothing.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)  # a folder


@pytest.mark.parametrize(
    "content",
    [
        {"model": {"w": torch.zeros(3)}, "step": 1},
        {"format": "someone-else-1", "model": {}},
        torch.zeros(3),
        [1, 2, 3],
    ],
    ids=["dict", "other-format", "tensor", "list"],
)
def test_foreign_torch_file_is_refused(tmp_path, content):
    path = tmp_path / "foreign.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=re.escape("foreign.pt")):
        load_checkpoint(path)


def test_checkpoint_without_configuration_or_weights_is_refused(tmp_path):
    model = _model("regression")
    for missing in ("restorer", "ema"):
        state = _state(model)
        del state[missing]
        path = tmp_path / f"no-{missing}.pt"
        save_checkpoint(path, state)
        load_checkpoint(path)  # a readable checkpoint ...
        with pytest.raises(CheckpointError, match=re.escape(f"no-{missing}.pt")):
            load_restorer(path)  # ... that cannot make a restorer
    state = _state(model)
    state["restorer"] = {**state["restorer"], "unknown_field": 1}
    save_checkpoint(tmp_path / "bad-config.pt", state)
    with pytest.raises(CheckpointError, match=re.escape("bad-config.pt")):
        load_restorer(tmp_path / "bad-config.pt")


@pytest.mark.parametrize(
    ("part", "field", "value", "needle"),
    [
        ("unet", "base_channels", 4096, "unet.base_channels = 4096 is not an integer in [1, 1536]"),
        ("diffusion", "timesteps", 2e9, "diffusion.timesteps = 2000000000.0 is not an integer"),
        ("unet", "channel_mult", [1, 2, 64], "unet.channel_mult = (1, 2, 64)"),
        ("unet", "num_res_blocks", True, "unet.num_res_blocks = True"),
        ("diffusion", "beta_end", float("nan"), "diffusion.beta_end = nan is not a finite"),
        ("", "residual_scale", -1.0, "residual_scale = -1.0"),
        ("unet", "base_channels", 1536, "base_channels * max(channel_mult) = 3072 channels"),
    ],
    ids=["huge-width", "huge-timesteps", "huge-multiplier", "bool", "nan", "negative", "widest"],
)
def test_a_configuration_out_of_bounds_is_refused_before_any_allocation(
    tmp_path, monkeypatch, part, field, value, needle
):
    state = _state(_model("refine"))
    config = state["restorer"]
    (config[part] if part else config)[field] = value
    path = tmp_path / "crafted.pt"
    save_checkpoint(path, state)

    def no_network(*_args, **_kwargs):
        raise AssertionError("a network was built from a configuration out of bounds")

    monkeypatch.setattr("diffdeblur.checkpoint.Restorer", no_network)
    with pytest.raises(CheckpointError, match=re.escape("crafted.pt")) as error:
        load_restorer(path)
    assert needle in str(error.value)


def test_non_finite_weights_are_refused_naming_a_tensor(tmp_path):
    model = _model("regression")
    state = _state(model)
    name = next(n for n, t in state["ema"].items() if t.is_floating_point())
    state["ema"] = {**state["ema"], name: torch.full_like(state["ema"][name], float("nan"))}
    save_checkpoint(tmp_path / "diverged.pt", state)
    with pytest.raises(CheckpointError, match=r"diverged\.pt: 1 weight tensors hold NaN or inf"):
        load_restorer(tmp_path / "diverged.pt")
    assert isinstance(load_restorer(tmp_path / "diverged.pt", ema=False), Restorer)  # raw: finite


# --- atomic writes ---------------------------------------------------------------------------


def test_save_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state(_model("regression")))
    save_checkpoint(path, _state(_model("regression", seed=5)))
    assert _files(tmp_path) == ["checkpoint.pt"]


def test_failed_pickling_keeps_the_previous_checkpoint(tmp_path):
    """An object that cannot be pickled fails ``torch.save`` part-way: the old file stays."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state(_model("regression")))
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - pickle's error type is not ours to fix
        save_checkpoint(path, {**_state(_model("regression")), "hook": lambda: None})
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["checkpoint.pt"]
    assert load_checkpoint(path)["step"] == 7


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """A write that dies after some bytes (a full disk, a kill) leaves the old file intact."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state(_model("regression")))
    before = path.read_bytes()
    written = []

    def dying_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 partial bytes of a checkpoint")
        written.append(True)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"model": {}, "step": 8})
    assert written, "the patched torch.save was not used"
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["checkpoint.pt"]
    assert load_checkpoint(path)["step"] == 7


@pytest.mark.slow  # a second interpreter that imports torch
def test_a_killed_writers_temporary_is_removed_by_the_next_save(tmp_path):
    """A run killed while writing leaves its temporary; the next save removes it, and leaves
    alone the temporary of a writer that is still alive."""
    path = tmp_path / "checkpoint.pt"
    writer = (
        "import sys, time, torch\n"
        "from diffdeblur.torch_files import save_atomic\n"
        "def stuck(obj, handle):\n"
        "    handle.write(b'PK partial bytes'); handle.flush(); time.sleep(600)\n"
        "torch.save = stuck\n"
        "save_atomic(sys.argv[1], {'step': 1})\n"
    )
    child = subprocess.Popen([sys.executable, "-c", writer, str(path)])
    killed = tmp_path / f".checkpoint.pt.tmp-{child.pid}"
    try:
        deadline = time.monotonic() + 120
        while not (killed.is_file() and killed.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert killed.is_file(), "the writer never started its temporary"
    finally:
        child.kill()
        child.wait()
    alive = tmp_path / f".checkpoint.pt.tmp-{os.getppid()}"  # our parent: a live process
    alive.write_bytes(b"a live writer's bytes")
    save_checkpoint(path, _state(_model("regression")))
    assert _files(tmp_path) == [alive.name, "checkpoint.pt"]
    assert load_checkpoint(path)["step"] == 7


def test_save_into_a_missing_folder_fails_cleanly(tmp_path):
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "missing" / "checkpoint.pt", {"step": 1})
    assert _files(tmp_path) == []


def test_saved_file_is_complete_on_disk(tmp_path):
    """What ``save_checkpoint`` leaves is exactly a loadable torch file (no stray bytes)."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "model": {"w": torch.ones(2)}})
    assert os.path.getsize(path) > 0
    state = torch.load(path, weights_only=True)
    assert state["format"] == CHECKPOINT_FORMAT
    assert torch.equal(state["model"]["w"], torch.ones(2))
