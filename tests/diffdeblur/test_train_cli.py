"""``diffdeblur train``, run as the installed console script (and under ``torchrun``): help, a
short real run end to end, usage errors with exit code 2, a non-finite loss with exit code 1, and
DistributedDataParallel over two CPU processes.

Subprocesses run with ``OMP_NUM_THREADS=1``; the usage-error cases start together, a few at a
time, and are checked one by one.
"""

from __future__ import annotations

import json
import re
import resource
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from diffdeblur.checkpoint import load_checkpoint

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: The options of a short run: 2 steps of 4 patches of 32 px with the tiny network.
SHORT = [
    "--variant",
    "tiny",
    "--parametrisation",
    "residual",
    "--timesteps",
    "20",
    "--patch-size",
    "32",
    "--batch-size",
    "4",
    "--epochs",
    "1",
    "--samples-per-epoch",
    "8",
    "--validation-fraction",
    "0.25",
    "--validation-images",
    "2",
    "--validation-steps",
    "2",
    "--log-every",
    "1",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--threads",
    "1",
    "--quiet",
]


def _run(command: list, env: dict, cwd: Path | None = None, timeout: float = 300):
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def _explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


# --- help ------------------------------------------------------------------------------------


@pytest.mark.slow  # two interpreter starts: about 5 s on a loaded machine
def test_help_lists_train_and_train_help_shows_examples(diffdeblur_cli, cli_env):
    commands = [[diffdeblur_cli, "--help"], [diffdeblur_cli, "train", "--help"]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        top, sub = pool.map(lambda command: _run(command, cli_env), commands)
    assert top.returncode == 0, _explain(top)
    assert "train" in top.stdout
    assert sub.returncode == 0, _explain(sub)
    for text in ("Examples:", "--budget-minutes", "--resume", "torchrun", "--parametrisation"):
        assert text in sub.stdout, text
    for name in ("sharp", "residual", "refine", "regression", "tiny", "improved"):
        assert name in sub.stdout, name


# --- a real run ------------------------------------------------------------------------------


@pytest.mark.slow
def test_short_run_writes_the_run_folder_and_resumes(
    diffdeblur_cli, cli_env, csb_dataset, tmp_path
):
    out = tmp_path / "run"
    command = [diffdeblur_cli, "train", "--data", csb_dataset, "--out", out, *SHORT]
    result = _run(command, cli_env)
    assert result.returncode == 0, _explain(result)
    assert "finished: step 2 of 2" in result.stdout
    names = sorted(path.name for path in out.iterdir())
    assert names == ["checkpoint.pt", "config.json", "log.jsonl", "loss.png", "val-0000002.png"]
    for name in ("loss.png", "val-0000002.png"):
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2]
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["variant"] == "tiny"
    assert config["restorer"]["parametrisation"] == "residual"
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(value).all() for value in state["ema"].values())

    # A second run into the folder is refused; with --resume and one more epoch it continues.
    again = _run(command, cli_env)
    assert again.returncode == 2, _explain(again)
    assert "already holds a run" in again.stderr
    more = [*command, "--resume", "--epochs", "2"]  # a repeated option: the last one wins
    resumed = _run(more, cli_env)
    assert resumed.returncode == 0, _explain(resumed)
    assert "finished: step 4 of 4" in resumed.stdout
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4


@pytest.mark.slow
def test_without_out_each_run_gets_a_new_numbered_folder(
    diffdeblur_cli, cli_env, csb_dataset, tmp_path
):
    command = [diffdeblur_cli, "train", "--data", csb_dataset, *SHORT, "--max-steps", "1"]
    for number in ("001", "002"):
        result = _run(command, cli_env, cwd=tmp_path)
        assert result.returncode == 0, _explain(result)
        assert f"run folder: {Path('runs') / number}" in result.stderr
        assert (tmp_path / "runs" / number / "checkpoint.pt").is_file()
    resumed = _run([*command, "--resume"], cli_env, cwd=tmp_path)
    assert resumed.returncode == 2 and "name that folder" in resumed.stderr, _explain(resumed)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["001", "002"]


# --- usage errors ----------------------------------------------------------------------------

#: name -> (extra arguments, a fragment of the message); {data}/{empty}/{file} are filled in.
BAD = {
    "batch-size-0": (["--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    "negative-lr": (["--lr", "-1"], "--lr"),
    "validation-fraction": (["--validation-fraction", "1.5"], "--validation-fraction"),
    "unknown-variant": (["--variant", "huge"], "'huge' is not one of"),
    "empty-folder": (["--data", "{empty}"], "neither a csb-generate dataset"),
    "plain-file": (["--data", "{file}"], "neither a csb-generate dataset"),
    "missing-data": (["--data", "{missing}"], "does not exist"),
    "resume-empty-folder": (["--resume"], "does not exist"),
    "blurred-skip-with-eps": (
        ["--parametrisation", "sharp", "--prediction", "eps", "--blurred-skip"],
        "--blurred-skip: applies to --parametrisation sharp with --prediction x0 or v",
    ),
}


@pytest.fixture(scope="module")
def bad_runs(diffdeblur_cli, cli_env, csb_dataset, tmp_path_factory):
    """Every usage-error case of :data:`BAD`, run concurrently (3 at a time): name -> (result,
    the run folder it was given)."""
    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    (root / "file.txt").write_text("not a dataset\n")
    places = {"{empty}": root / "empty", "{file}": root / "file.txt", "{missing}": root / "nope"}

    def run(name: str):
        extra, _ = BAD[name]
        extra = [str(places.get(part, part)) for part in extra]
        out = root / f"out-{name}"
        command = [diffdeblur_cli, "train", "--data", csb_dataset, "--out", out, *SHORT, *extra]
        return _run(command, cli_env), out

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(BAD, pool.map(run, BAD), strict=True))


@pytest.mark.slow  # the shared fixture starts 9 processes
@pytest.mark.parametrize("name", BAD)
def test_bad_usage_exits_2_with_a_clear_message(bad_runs, name):
    result, out = bad_runs[name]
    _, fragment = BAD[name]
    assert result.returncode == 2, _explain(result)
    assert fragment in result.stderr, _explain(result)
    assert "Traceback" not in result.stderr
    assert result.stderr.count("Error") >= 1
    assert not out.exists(), "a refused run must not create its run folder"


#: More usage errors, checked in-process through click's test runner (the exit code and the
#: message are click's; the subprocess cases above show the installed script behaves alike).
BAD_IN_PROCESS = {
    "unknown-parametrisation": (["--parametrisation", "noise"], "'noise' is not one of"),
    "not-a-number": (["--epochs", "many"], "'many' is not a valid integer"),
    "patch-too-large": (["--patch-size", "48"], "patch_size 48"),
    "samples-below-batch": (["--samples-per-epoch", "2"], "--samples-per-epoch"),
    "negative-workers": (["--workers", "-1"], "--workers"),
    "ema-decay-one": (["--ema-decay", "1"], "--ema-decay"),
    "negative-lpips-loss-weight": (
        ["--lpips-loss-weight", "-1"],
        "--lpips-loss-weight: must be >= 0",
    ),
    "lpips-loss-on-noise-prediction": (
        ["--lpips-loss-weight", "0.1"],
        "--lpips-loss-weight: applies to --parametrisation bridge or regression",
    ),
}


@pytest.mark.parametrize("name", BAD_IN_PROCESS)
def test_bad_usage_in_process_exits_2(csb_dataset, tmp_path, name):
    from click.testing import CliRunner
    from diffdeblur.cli import main

    extra, fragment = BAD_IN_PROCESS[name]
    out = tmp_path / "run"
    arguments = ["train", "--data", str(csb_dataset), "--out", str(out), *SHORT, *extra]
    with torch.random.fork_rng():  # a run that gets as far as building its model reseeds torch
        result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert not out.exists()


def test_resuming_from_an_exported_model_exits_2_naming_it(csb_dataset, tmp_path):
    """An exported model holds no optimiser or random states: --resume refuses it, and says
    that --init is how to start from it."""
    from click.testing import CliRunner
    from diffdeblur.checkpoint import export_model
    from diffdeblur.cli import main

    first = tmp_path / "first"
    arguments = ["train", "--data", str(csb_dataset), *SHORT]
    with torch.random.fork_rng():
        assert CliRunner().invoke(main, [*arguments, "--out", str(first)]).exit_code == 0
    out = tmp_path / "run"
    out.mkdir()
    export_model(first / "checkpoint.pt", out / "checkpoint.pt", {"name": "test"})
    with torch.random.fork_rng():
        result = CliRunner().invoke(main, [*arguments, "--out", str(out), "--resume"])
    assert result.exit_code == 2, result.output
    assert f"{out / 'checkpoint.pt'} is not a training checkpoint" in result.output
    assert "--init" in result.output and "`init`" not in result.output


def test_the_library_s_advice_reaches_the_user_in_flags(csb_dataset, tmp_path):
    """The trainer names settings by their fields (```budget_minutes```); ``diffdeblur train``
    shows its flags in their place, in warnings as in errors."""
    from click.testing import CliRunner
    from diffdeblur.cli import main

    # 12 steps: past the 10 the plan measures, far below the few hundred a model needs.
    arguments = ["train", "--data", str(csb_dataset), "--out", str(tmp_path / "run"), *SHORT]
    with torch.random.fork_rng():
        result = CliRunner().invoke(main, [*arguments, "--epochs", "6"])
    assert result.exit_code == 0, result.output
    assert "barely trained. Raise --budget-minutes, or pick a smaller --variant" in result.output
    assert "`" not in result.output


@pytest.mark.slow
def test_non_finite_loss_exits_1_naming_the_step(diffdeblur_cli, cli_env, csb_dataset, tmp_path):
    out = tmp_path / "run"
    diverging = ["--lr", "1e30", "--warmup-steps", "0"]
    result = _run(
        [diffdeblur_cli, "train", "--data", csb_dataset, "--out", out, *SHORT, *diverging], cli_env
    )
    assert result.returncode == 1, _explain(result)
    assert re.search(r"error: the loss is (inf|nan) at step 1\b", result.stderr)
    assert "Traceback" not in result.stderr
    assert not (out / "checkpoint.pt").exists()


def _limit_file_size() -> None:
    """A full disk, simulated: writes beyond 2 MB fail with EFBIG (the signal is ignored)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))


@pytest.mark.slow
def test_a_failed_checkpoint_write_is_one_line_and_exit_1(
    diffdeblur_cli, cli_env, csb_dataset, tmp_path
):
    out = tmp_path / "run"
    result = subprocess.run(
        [str(p) for p in (diffdeblur_cli, "train", "--data", csb_dataset, "--out", out, *SHORT)],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=300,
        preexec_fn=_limit_file_size,
    )
    assert result.returncode == 1, _explain(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "checkpoint.pt failed (is the disk full?)" in errors[0]
    assert str(out) in errors[0] and "--resume" in errors[0]
    assert "Traceback" not in result.stderr, _explain(result)
    assert not (out / "checkpoint.pt").exists()
    assert not list(out.glob(".checkpoint.pt.tmp-*"))


@pytest.mark.slow
def test_out_of_range_data_exits_2_naming_the_shard(
    diffdeblur_cli, cli_env, poisoned_dataset, tmp_path
):
    out = tmp_path / "run"
    result = _run(
        [diffdeblur_cli, "train", "--data", poisoned_dataset, "--out", out, *SHORT], cli_env
    )
    assert result.returncode == 2, _explain(result)
    assert re.search(r"shard-0000\d\.h5: sample \d+: 'blurred' has values outside", result.stderr)
    assert "Traceback" not in result.stderr
    assert not (out / "checkpoint.pt").exists()


# --- DistributedDataParallel -----------------------------------------------------------------


def _torchrun(torchrun_cli, data: Path, out: Path, extra: list[str], env: dict):
    command = [
        torchrun_cli,
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "diffdeblur.cli",
        "train",
        "--data",
        data,
        "--out",
        out,
        *SHORT,
        *extra,
    ]
    return _run(command, env, timeout=600)


@pytest.fixture(scope="module")
def ddp_and_single(torchrun_cli, diffdeblur_cli, cli_env, csb_dataset, tmp_path_factory):
    """The same 3-step ``regression`` run under torchrun on two processes (2 patches each) and
    in one process (4 patches), run concurrently: (ddp result, ddp folder, single result,
    single folder)."""
    root = tmp_path_factory.mktemp("ddp")
    extra = ["--parametrisation", "regression", "--samples-per-epoch", "12", "--warmup-steps", "0"]
    ddp_out, single_out = root / "ddp", root / "single"
    with ThreadPoolExecutor(max_workers=2) as pool:
        ddp_future = pool.submit(_torchrun, torchrun_cli, csb_dataset, ddp_out, extra, cli_env)
        single = _run(
            [diffdeblur_cli, "train", "--data", csb_dataset, "--out", single_out, *SHORT, *extra],
            cli_env,
        )
        ddp = ddp_future.result()
    return ddp, ddp_out, single, single_out


@pytest.mark.slow
def test_ddp_on_two_processes_writes_one_run_folder(ddp_and_single):
    ddp, out, _, _ = ddp_and_single
    assert ddp.returncode == 0, _explain(ddp)
    names = sorted(path.name for path in out.iterdir())
    assert names == ["checkpoint.pt", "config.json", "log.jsonl", "loss.png", "val-0000003.png"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2, 3]  # written once, by rank 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 3
    assert state["train"]["batch_size"] == 4
    assert len(state["rng"]["noise"]) == len(state["rng"]["torch"]) == 2  # one per rank
    for part in ("model", "ema"):
        assert all(torch.isfinite(value).all() for value in state[part].values()), part


@pytest.mark.slow
def test_ddp_on_two_processes_matches_one_process(ddp_and_single):
    """For the noise-free ``regression`` parametrisation (the tiny network has no dropout), two
    ranks of 2 patches compute the step of one process with the batch of 4 (DDP averages the
    gradients), so the weights agree up to float rounding (measured: 7e-8 when both start from
    the same weights). Both runs use the same --seed and must start from the same weights."""
    ddp, ddp_out, single, single_out = ddp_and_single
    assert ddp.returncode == 0, _explain(ddp)
    assert single.returncode == 0, _explain(single)
    state = load_checkpoint(ddp_out / "checkpoint.pt")
    reference = load_checkpoint(single_out / "checkpoint.pt")
    assert state["step"] == reference["step"] == 3
    for part in ("model", "ema"):
        for key, value in reference[part].items():
            torch.testing.assert_close(state[part][key], value, rtol=1e-4, atol=1e-6, msg=key)
    # The weights moved (the EMA lags behind them), so the comparison above can fail.
    model, ema = reference["model"], reference["ema"]
    assert any(not torch.equal(value, ema[key]) for key, value in model.items())


@pytest.mark.slow
def test_same_command_twice_gives_the_same_weights(diffdeblur_cli, cli_env, csb_dataset, tmp_path):
    """Two identical fresh runs (same --seed) in separate processes end with identical weights:
    the initial weights follow --seed, not the process's random default seed."""
    outs = [tmp_path / "a", tmp_path / "b"]
    extra = [
        "--parametrisation",
        "regression",
        "--samples-per-epoch",
        "4",
        "--validate-every",
        "99",
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(
                lambda out: _run(
                    [diffdeblur_cli, "train", "--data", csb_dataset, "--out", out, *SHORT, *extra],
                    cli_env,
                ),
                outs,
            )
        )
    for result in results:
        assert result.returncode == 0, _explain(result)
    first, second = (load_checkpoint(out / "checkpoint.pt") for out in outs)
    for part in ("model", "ema"):
        for key, value in first[part].items():
            assert torch.equal(value, second[part][key]), f"{part}/{key}"
