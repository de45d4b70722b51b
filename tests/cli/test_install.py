"""The package installs on its own (non-editable, in a fresh virtual environment), its command
works there, and it does not pull in PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from cli_support import REPO, TINY, describe, read_json, run_cli

PACKAGE = REPO / "packages" / "csb-generator"


def _run(command, **options) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False, **options
    )
    assert result.returncode == 0, describe(result)
    return result


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("fresh-venv")
    environment = home / "venv"
    _run([sys.executable, "-m", "venv", environment], timeout=300)
    python = environment / "bin" / "python"
    _run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", PACKAGE],
        cwd=home,
        timeout=1800,
    )
    return environment


@pytest.mark.slow
def test_fresh_install_imports_without_torch(fresh_venv, tmp_path):
    python = fresh_venv / "bin" / "python"
    probe = (
        "import importlib.util, json, csb_generator; "
        "print(json.dumps({'file': csb_generator.__file__, "
        "'version': csb_generator.__version__, "
        "'torch': importlib.util.find_spec('torch') is not None}))"
    )
    found = json.loads(_run([python, "-c", probe], cwd=tmp_path).stdout)
    assert Path(found["file"]).is_relative_to(fresh_venv), "imported from the source tree"
    assert found["version"] != "0+unknown"
    assert found["torch"] is False
    listed = json.loads(
        _run(
            [python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"]
        ).stdout
    )
    names = {package["name"].lower() for package in listed}
    assert "csb-generator" in names
    assert not names & {"torch", "pytorch", "torchvision"}
    # Non-editable: no link back to the source tree.
    direct_url = next(fresh_venv.glob("lib/python*/site-packages/csb_generator-*.dist-info"))
    if (direct_url / "direct_url.json").exists():
        info = json.loads((direct_url / "direct_url.json").read_text())
        assert not info.get("dir_info", {}).get("editable", False)


@pytest.mark.slow
def test_fresh_install_generates_a_tsweep(fresh_venv, tmp_path):
    command = fresh_venv / "bin" / "csb-generate"
    out = tmp_path / "sweep"
    result = run_cli(
        ["--mode", "tsweep", "--out", out, "--count", "4", "--shard-size", "2", *TINY],
        executable=command,
        cwd=tmp_path,
    )
    assert result.returncode == 0, describe(result)
    top = read_json(out / "manifest.json")
    assert top["mode"] == "tsweep" and top["count"] == 4 * 6
    for part in top["parts"]:
        folder = out / part["folder"]
        manifest = read_json(folder / "manifest.json")
        assert [entry["count"] for entry in manifest["shards"]] == [2, 2]
        assert (folder / "preview.png").is_file()
        with h5py.File(folder / "shard-00000.h5", "r") as shard:
            assert shard["blurred"].shape == (2, 32, 32, 3)
            assert abs(float(shard["kernel"][0].sum()) - part["exposure"]) < 1e-5


@pytest.mark.slow
def test_fresh_install_without_dask_explains_the_extra(fresh_venv, tmp_path):
    probe = "import importlib.util; print(importlib.util.find_spec('distributed') is None)"
    if _run([fresh_venv / "bin" / "python", "-c", probe]).stdout.strip() != "True":
        pytest.skip("dask.distributed came with the dependencies")
    arguments = "--mode random --count 2 --no-preview --scheduler tcp://127.0.0.1:9".split()
    result = run_cli(
        [*arguments, *TINY, "--out", tmp_path / "d"],
        executable=fresh_venv / "bin" / "csb-generate",
    )
    assert result.returncode != 0
    assert "csb-generator[dask]" in result.stderr, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
