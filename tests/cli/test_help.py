"""``--help`` documents the thesis's datasets with commands that work; ``--list-builtin`` lists
the built-in photographs."""

from __future__ import annotations

import re
import shlex

from cli_support import assert_ok, describe, read_json, run_cli, run_many
from csb_generator import BUILTIN_PHOTOGRAPHS

#: Appended to the examples of --help so that they run in a second (the last value wins).
SHRINK = ["--count", "2", "--shard-size", "2", "--image-size", "32", "--num-samples", "200"]


def _help_text() -> str:
    result = assert_ok(run_cli(["--help"]))
    assert result.stderr == ""
    return result.stdout


def _examples(text: str) -> dict[str, list[str]]:
    """The example commands of the epilog, by label ("Table 3, PSF 32", ...)."""
    lines = text.splitlines()
    examples, label = {}, None
    for line in lines:
        match = re.match(r"\s+((?:Table|Figure) \d[^:]*):\s+(csb-generate .*)", line)
        if match:
            label = match.group(1)
            examples[label] = match.group(2)
        elif label is not None and examples[label].endswith("\\"):
            examples[label] = examples[label][:-1] + " " + line.strip()
        else:
            label = None
    return {key: shlex.split(value)[1:] for key, value in examples.items()}


def test_help_shows_every_option_and_the_thesis_examples():
    text = _help_text()
    for option in ("--mode", "--out", "--source", "--count", "--exposure", "--lam", "--sigma"):
        assert option in text
    for words in ("Table 3", "Table 4", "Figure 4", "--mode tsweep --trajectory linear"):
        assert words in text
    labels = set(_examples(text))
    assert any(label.startswith("Table 3") for label in labels), labels
    assert any(label.startswith("Table 4") for label in labels), labels
    assert sum(label.startswith("Figure 4") for label in labels) == 2, labels


def test_help_examples_run(tmp_path):
    examples = _examples(_help_text())
    results = run_many(
        [[*arguments, *SHRINK, "--no-preview"] for arguments in examples.values()], cwd=tmp_path
    )
    for (label, arguments), result in zip(examples.items(), results, strict=True):
        assert_ok(result)
        out = tmp_path / arguments[arguments.index("--out") + 1]
        manifest = read_json(out / "manifest.json")
        mode = arguments[arguments.index("--mode") + 1]
        assert manifest["mode"] == mode, label
        if label.startswith("Table 3"):
            assert mode == "random" and manifest["options"]["psf_size"] in (16, 32, 64)
        if label.startswith("Table 4"):
            options = manifest["options"]
            assert mode == "noisy" and options["psf_size"] == 32 and options["exposures"] == [1.0]
            assert len(options["lams"]) == 1 and len(options["sigmas"]) == 1, describe(result)
        if label.startswith("Figure 4"):
            assert mode == "tsweep" and len(manifest["parts"]) == 6
            assert manifest["options"]["trajectory"] in ("linear", "random")


def test_list_builtin():
    result = run_cli(["--list-builtin"])  # needs neither --mode nor --out
    assert result.returncode == 0, describe(result)
    listed = re.findall(r"skimage:(\w+)", result.stdout)
    assert listed == list(BUILTIN_PHOTOGRAPHS), describe(result)
    for photograph in BUILTIN_PHOTOGRAPHS.values():
        assert photograph.licence in result.stdout
