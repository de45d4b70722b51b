"""The extra training photographs of the experiments (``experiments/photographs.py``): the files
the packages ship, the training copies made from them, and the folders the scripts train on.

The Debian photographs need the package ``plasma-workspace-wallpapers``; ``.ci/run`` installs it,
and under CI their tests fail rather than skip when it is missing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT / "tests"))

import photographs  # noqa: E402
from pipeline import TEST_PHOTOGRAPHS, photo_folders  # noqa: E402
from prerequisites import missing_prerequisite  # noqa: E402


@pytest.fixture
def debian_installed() -> None:
    if all(p.path.is_file() for p in photographs.DEBIAN_PHOTOGRAPHS):
        return
    missing_prerequisite(
        f"The Debian package {photographs.DEBIAN_PACKAGE} is not installed "
        f"(sudo apt-get install {photographs.DEBIAN_PACKAGE})."
    )


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_matplotlib_photograph_is_copied_unchanged(tmp_path):
    (hopper,) = photographs.extra_photographs("pypi")
    copy = photographs.copy_for_training(hopper, tmp_path)
    assert copy.name == "grace_hopper.png"
    with Image.open(copy) as image:
        assert (image.format, image.mode) == ("PNG", "RGB")
    # 512 × 600 is under MAX_SIDE: the copy is the decoded JPEG, pixel for pixel.
    np.testing.assert_array_equal(_pixels(copy), _pixels(hopper.path))
    assert _pixels(copy).shape == (600, 512, 3)


def test_selections_nest():
    assert photographs.extra_photographs("none") == ()
    assert [p.name for p in photographs.extra_photographs("pypi")] == ["grace_hopper"]
    with pytest.raises(ValueError, match="unknown photograph selection 'all'"):
        photographs.extra_photographs("all")


def test_missing_debian_photograph_says_what_to_install(monkeypatch, tmp_path):
    absent = photographs.PackagedPhotograph("x", "p", "a", "l", tmp_path / "absent.jpg")
    monkeypatch.setattr(photographs, "DEBIAN_PHOTOGRAPHS", (absent,))
    with pytest.raises(FileNotFoundError, match="apt-get install plasma-workspace-wallpapers"):
        photographs.extra_photographs("debian")


def test_debian_photographs_are_reduced_to_max_side(debian_installed, tmp_path):
    chosen = photographs.extra_photographs("debian")
    assert len(chosen) == 1 + len(photographs.DEBIAN_PHOTOGRAPHS) == 9
    for photograph in photographs.DEBIAN_PHOTOGRAPHS:
        assert "LGPL-3.0" in photograph.licence and photograph.author
        copy = _pixels(photographs.copy_for_training(photograph, tmp_path))
        source = _pixels(photograph.path)
        assert source.shape == (1600, 2560, 3)
        assert copy.shape == (640, 1024, 3)
        # A 2.5× reduction keeps the scene: the mean colour of each channel within a grey level,
        # and the copy is not flat.
        np.testing.assert_allclose(copy.mean(axis=(0, 1)), source.mean(axis=(0, 1)), atol=1.0)
        assert copy.std() > 10


def test_training_folder_never_holds_the_test_photographs(debian_installed, tmp_path):
    train, test = photo_folders(tmp_path, "debian")
    assert train.name == "photos-train-debian"
    train_names = {p.stem for p in train.iterdir()}
    assert not train_names & set(TEST_PHOTOGRAPHS)
    assert {p.stem for p in test.iterdir()} == set(TEST_PHOTOGRAPHS)
    assert {"grace_hopper", "kde-path", "astronaut"} <= train_names
    assert len(train_names) == 8 + 9
    assert not [p for p in train.iterdir() if p.name.startswith(".")]


def test_thesis_script_refuses_a_work_folder_of_another_selection(tmp_path):
    (tmp_path / "extra-photographs.txt").write_text("debian\n")
    result = subprocess.run(
        [sys.executable, ROOT / "experiments" / "thesis.py", "table3", "--work", tmp_path,
         "--out", tmp_path / "out", "--extra-photographs", "none"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "holds data made with --extra-photographs debian" in result.stderr
    assert not (tmp_path / "out").exists()
