"""Every reference from code or docs to a file of the repository points at one that exists.

A reference is a path from the repository's root into one of :data:`ROOTS`, such as
``docs/format.md`` or ``benchmarks/results/open_verify.json``, written in any text file of the
repository; one that names a heading (``docs/model.md#1-trajectory``) must name a heading of that
page, as mkdocs spells its anchors. Links between the pages themselves are mkdocs' to check
(``mkdocs build --strict``). Requirements kept outside the repository cannot be followed by a
reader, so text that cites them ("spec section 3", the ``shared/`` folder) fails as well.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
ROOTS = ("docs", "experiments", "benchmarks", "packages", "tests")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yml", ".yaml", ".txt", ".cfg", ".sh"}
SKIPPED_FOLDERS = {
    ".git",
    ".nox",
    ".pytest_cache",
    ".ruff_cache",
    "__pycache__",
    "build",
    "dist",
    "site",
}
# A root folder, then path characters; it ends on a word character or a slash, so the full stop
# of a sentence is not part of it. A path preceded by a path character is a tail of another path.
REFERENCE = re.compile(r"(?<![\w/.$-])((?:" + "|".join(ROOTS) + r")/[\w./-]*[\w/])(?:#([\w-]+))?")
OUTSIDE = re.compile(r"\bspec sections? \d|\bshared/spec\b")


def _text_files() -> list[Path]:
    files = [path for path in REPOSITORY.iterdir() if path.is_file()]
    for folder in (*ROOTS, ".ci", ".github"):
        for path in (REPOSITORY / folder).rglob("*"):
            relative = path.relative_to(REPOSITORY)
            if path.is_file() and not SKIPPED_FOLDERS.intersection(relative.parts[:-1]):
                files.append(path)
    no_suffix_scripts = {REPOSITORY / ".ci" / "run"}
    return [
        path
        for path in files
        if (path.suffix in TEXT_SUFFIXES or path in no_suffix_scripts)
        and not any(part.endswith(".egg-info") for part in path.parts)
    ]


def _slug(heading: str) -> str:
    """The anchor mkdocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = text.replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


@cache
def _anchors(page: Path) -> frozenset[str]:
    anchors, fenced = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} +(.*?) *#*$", line)):
            anchors.add(_slug(heading.group(1)))
    return frozenset(anchors)


def _references() -> list[tuple[str, str, str | None]]:
    found = []
    for path in _text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for match in REFERENCE.finditer(line):
                where = f"{path.relative_to(REPOSITORY)}:{number}"
                found.append((where, match.group(1), match.group(2)))
    return found


def test_the_scan_finds_the_references_it_is_meant_to_check():
    found = {(target, anchor) for _, target, anchor in _references()}
    assert ("docs/format.md", None) in found
    assert ("benchmarks/results/open_verify.json", None) in found
    assert ("docs/model.md", "1-trajectory") in found


def test_every_referenced_file_exists():
    missing = [
        f"{where}: {target}"
        for where, target, _ in _references()
        if not (REPOSITORY / target.rstrip("/")).exists()
    ]
    assert not missing, "references to files the repository does not have:\n" + "\n".join(missing)


def test_every_referenced_heading_exists():
    missing = [
        f"{where}: {target}#{anchor}"
        for where, target, anchor in _references()
        if anchor is not None
        and target.endswith(".md")
        and (REPOSITORY / target).is_file()
        and anchor not in _anchors(REPOSITORY / target)
    ]
    assert not missing, "references to headings that do not exist:\n" + "\n".join(missing)


def test_the_slugs_are_those_of_mkdocs():
    assert _slug("2. Kernel (PSF) for an exposure fraction T") == (
        "2-kernel-psf-for-an-exposure-fraction-t"
    )
    assert _slug("Command line: `csb-generate`") == "command-line-csb-generate"
    assert _slug("Metrics: [LPIPS](metrics.md) offline") == "metrics-lpips-offline"


def test_nothing_cites_requirements_kept_outside_the_repository():
    this_file = Path(__file__).resolve()
    cited = [
        f"{path.relative_to(REPOSITORY)}:{number}: {line.strip()}"
        for path in _text_files()
        if path.resolve() != this_file
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        )
        if OUTSIDE.search(line)
    ]
    assert not cited, "text that cites files outside the repository:\n" + "\n".join(cited)
