"""An evaluation run and its report folder: ``report.md``, ``metrics.json``, ``metrics.csv``,
``per_image.csv``, ``examples.png``, and for a T-sweep ``exposure.png``.

:func:`evaluate_dataset` is what ``diffdeblur evaluate`` runs: it opens the test data (one
dataset, or every exposure of a T-sweep), tunes the Wiener baseline on training data, restores
and scores with :func:`~diffdeblur.evaluation.evaluate_samples`, and calls :func:`write_report`.

Every file is written under a temporary name and renamed, so a report folder never holds a
half-written file under a final name.

Until the report is written, what is scored is kept in ``<out>/.evaluate-progress/``: the rows of
every finished batch (appended and flushed to disk as each batch ends), the Wiener tuning, and the
example images. A rerun of the same evaluation (same data, models, settings and baselines)
continues after the last finished batch and gives the report an uninterrupted run gives; any other
evaluation into that folder starts afresh. The folder is removed once the report is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from csb_generator import atomic_output, write_bytes_atomic

from .evaluation import (
    METHOD_LABELS,
    Distance,
    Evaluation,
    EvaluationSettings,
    evaluate_samples,
    summarise,
)
from .pixels import to_signed
from .plots import save_metric_against_exposure, save_restoration_grid
from .restorer import Restorer
from .wiener import WienerTuning, tune_wiener_balance

__all__ = [
    "PROGRESS_FOLDER",
    "REPORT_FILES",
    "EvaluationStopped",
    "evaluate_dataset",
    "write_report",
]

#: Files every report folder holds (``exposure.png`` only for several exposures).
REPORT_FILES = ("report.md", "metrics.json", "metrics.csv", "per_image.csv", "examples.png")

#: Where an unfinished evaluation keeps what it scored, inside its report folder.
PROGRESS_FOLDER = ".evaluate-progress"


class EvaluationStopped(RuntimeError):
    """A test sample could not be read, or the progress could not be written, in mid-run; what
    was scored before is kept, and a rerun of the same evaluation continues from there."""


def _write_text(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def _csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key) for key in columns})
    return buffer.getvalue()


def _number(value: float, digits: int) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _table(summary: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| Method | PSNR ↑ (dB) | SSIM ↑ | LPIPS ↓ | images |", "|---|---|---|---|---|"]
    for entry in summary:
        lines.append(
            f"| {METHOD_LABELS[entry['method']]} | {_number(entry['psnr'], 2)} | "
            f"{_number(entry['ssim'], 4)} | {_number(entry['lpips'], 4)} | {entry['images']} |"
        )
    return lines


def _exposure_table(by_exposure: Sequence[Mapping[str, Any]]) -> list[str]:
    methods = list(dict.fromkeys(entry["method"] for entry in by_exposure))
    header = " | ".join(f"{METHOD_LABELS[m]} PSNR / SSIM / LPIPS" for m in methods)
    lines = [f"| T | {header} |", "|---" * (len(methods) + 1) + "|"]
    for exposure in sorted({entry["exposure"] for entry in by_exposure}):
        cells = []
        for method in methods:
            entry = next(
                e for e in by_exposure if e["exposure"] == exposure and e["method"] == method
            )
            cells.append(
                f"{_number(entry['psnr'], 2)} / {_number(entry['ssim'], 3)} / "
                f"{_number(entry['lpips'], 3)}"
            )
        lines.append(f"| {exposure:g} | " + " | ".join(cells) + " |")
    return lines


def write_report(
    out: str | Path,
    evaluation: Evaluation,
    settings: EvaluationSettings,
    *,
    title: str = "Evaluation",
    facts: Mapping[str, Any] | None = None,
    wiener_tuning: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the report folder of an evaluation.

    Parameters
    ----------
    out : str or Path
        Folder, created if missing.
    evaluation : Evaluation
        What :func:`~diffdeblur.evaluation.evaluate_samples` returned (for a T-sweep, the rows
        of every exposure together).
    settings : EvaluationSettings
    title : str
        First heading of ``report.md``.
    facts : mapping, optional
        Lines of "what was evaluated" (checkpoint, data, LPIPS weights...), shown in the report
        and stored in the JSON.
    wiener_tuning : mapping, optional
        How the Wiener weights were chosen (stored in the JSON, summarised in the report).

    Returns
    -------
    dict
        The JSON document written to ``metrics.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    facts = dict(facts or {})  # a "sampler" entry replaces the settings' sampler line
    summary = summarise(evaluation.rows)
    exposures = sorted({row["exposure"] for row in evaluation.rows})
    by_exposure = summarise(evaluation.rows, by=("exposure", "method"))
    document = {
        "title": title,
        "facts": facts,
        "settings": {
            **settings.__dict__,
            "sampler": asdict(settings.sampler),
            "sampler_label": settings.sampler_label(),
        },
        "wiener_tuning": dict(wiener_tuning or {}),
        "summary": summary,
        "by_exposure": by_exposure,
        "images": evaluation.rows,
    }

    lines = [f"# {title}", ""]
    for key, value in facts.items():
        if key != "sampler":
            lines.append(f"- **{key}**: {value}")
    square = f"{settings.patch_size}×{settings.patch_size}"
    protocol = {
        "central": f"central {square} patch",
        "context": f"whole images restored, central {square} patch scored",
        "full": f"full images ({settings.patch_size} px patches, {settings.overlap} px overlap)",
    }[settings.protocol]
    lines += [
        f"- **protocol**: {protocol}",
        f"- **sampler**: {facts.get('sampler', settings.sampler_label())}, seed {settings.seed}",
        f"- **images**: {summary[0]['images'] if summary else 0}",
    ]
    for key, value in (wiener_tuning or {}).items():
        if isinstance(value, Mapping) and "balance" in value:
            lines.append(f"- **{key}**: balance {value['balance']:.3g} ({value.get('note', '')})")
    lines += ["", *_table(summary), ""]
    if len(exposures) > 1:
        lines += ["## Against the exposure fraction T", "", *_exposure_table(by_exposure), ""]
        lines += ["![PSNR, SSIM and LPIPS against T](exposure.png)", ""]
        save_metric_against_exposure(out / "exposure.png", by_exposure, METHOD_LABELS)
    lines += ["## Examples", "", "![blurred, baselines, model, sharp](examples.png)", ""]
    _write_text(out / "report.md", "\n".join(lines))
    _write_text(out / "metrics.json", json.dumps(document, indent=2, allow_nan=True) + "\n")
    columns = ("exposure", "method", "images", "psnr", "ssim", "lpips")
    _write_text(out / "metrics.csv", _csv(by_exposure, columns))
    image_columns = ("index", "exposure", "method", "psnr", "ssim", "lpips")
    _write_text(out / "per_image.csv", _csv(evaluation.rows, image_columns))
    if evaluation.examples:
        order = [m for m in (*METHOD_LABELS, "sharp") if m in evaluation.examples]
        columns_ = [to_signed(evaluation.examples[m]) for m in order]
        labels = tuple(METHOD_LABELS.get(m, m.capitalize()) for m in order)
        save_restoration_grid(out / "examples.png", *columns_, labels=labels, title=title)
    return document


def _model_digest(model: Restorer) -> str:
    """SHA-256 of a model's configuration and weights: which model was scored."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class _Progress:
    """What an evaluation into ``out`` has scored so far (module documentation)."""

    def __init__(self, out: Path, key: Mapping[str, Any]):
        self.folder = out / PROGRESS_FOLDER
        text = json.dumps(key, sort_keys=True, default=str)
        stored = self.folder / "key.json"
        if self.folder.exists() and not (
            stored.is_file() and stored.read_text(encoding="utf-8") == text
        ):
            shutil.rmtree(self.folder)  # another evaluation's, or damaged: start afresh
        self.folder.mkdir(parents=True, exist_ok=True)
        if not stored.is_file():
            _write_text(stored, text)
        self._rows_file = self.folder / "rows.jsonl"
        self.batches: dict[str, dict[int, list[dict[str, Any]]]] = {}
        if self._rows_file.is_file():
            for line in self._rows_file.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:  # the last line of a killed run may be cut short
                    continue
                parts = self.batches.setdefault(record["part"], {})
                parts[record["batch"]] = record["rows"]

    def done(self, part: str) -> int:
        """How many batches of ``part`` were scored, from the first on."""
        finished = self.batches.get(part, {})
        count = 0
        while count in finished:
            count += 1
        return count

    def rows(self, part: str) -> list[dict[str, Any]]:
        finished = self.batches.get(part, {})
        return [row for number in range(self.done(part)) for row in finished[number]]

    def keep(self, part: str, number: int, rows: list[dict[str, Any]]) -> None:
        """Append a finished batch's rows and flush them to disk."""
        with open(self._rows_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"part": part, "batch": number, "rows": rows}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.batches.setdefault(part, {})[number] = rows

    def tuning(self, part: str) -> dict[str, Any] | None:
        path = self.folder / f"tuning-{part}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def keep_tuning(self, part: str, tuning: Mapping[str, Any]) -> None:
        _write_text(self.folder / f"tuning-{part}.json", json.dumps(tuning))

    def examples(self) -> dict[str, torch.Tensor] | None:
        path = self.folder / "examples.npz"
        if not path.is_file():
            return None
        with np.load(path) as stored:
            return {name: torch.from_numpy(stored[name]) for name in stored.files}

    def keep_examples(self, examples: Mapping[str, torch.Tensor]) -> None:
        with atomic_output(self.folder / "examples.npz") as handle:
            np.savez(handle, **{name: images.numpy() for name, images in examples.items()})

    def finish(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _parts(data: str | Path) -> dict[float | None, Any]:
    """The test datasets by exposure: every part of a T-sweep, else ``{T or None: dataset}``."""
    from csb_generator import TSweepDataset, open_dataset

    dataset = open_dataset(data)
    if isinstance(dataset, TSweepDataset):
        return dict(dataset.parts)
    return {dataset.exposure: dataset}


def _tuning_record(tuning: WienerTuning, source: str) -> dict[str, Any]:
    best = f"best of {len(tuning.balances)} on {tuning.count} training images of {source}"
    note = best + (", AT THE EDGE of the grid" if tuning.at_edge else "")
    return {
        "balance": tuning.balance,
        "note": note,
        "balances": list(tuning.balances),
        "mean_psnr": list(tuning.mean_psnr),
        "blurred_psnr": tuning.blurred_psnr,
        "count": tuning.count,
        "at_edge": tuning.at_edge,
    }


def _fingerprints(parts: Mapping[float | None, Any]) -> dict[str, Any]:
    return {str(t): part.manifest.get("fingerprint") for t, part in parts.items()}


def _tuned(
    kept: _Progress,
    label: str,
    source: Any,
    name: str,
    rotated: bool,
    limit: int | None,
) -> dict[str, dict[str, Any]]:
    """The Wiener tuning of one part (``wiener``, and ``wiener_rotated`` when asked for):
    kept from an interrupted run, else tuned on ``source`` (a dataset or its folder) and kept."""
    part_tuning = kept.tuning(label)
    if part_tuning is not None:
        return part_tuning
    if isinstance(source, (str, Path)):
        from csb_generator import open_dataset

        source = open_dataset(source)
    part_tuning = {}
    for method, rotate in (("wiener", False), ("wiener_rotated", True)):
        if method == "wiener_rotated" and not rotated:
            continue
        result = tune_wiener_balance(source, limit=limit, rotate_kernel=rotate)
        part_tuning[method] = _tuning_record(result, name)
    kept.keep_tuning(label, part_tuning)
    return part_tuning


def _score_part(
    kept: _Progress,
    label: str,
    evaluation: Evaluation,
    score: Callable[..., Evaluation],
    *,
    count: int,
    settings: EvaluationSettings,
    progress: bool,
) -> None:
    """Score one part (one exposure) of a test set with ``score`` into ``evaluation``: from the
    first batch ``kept`` does not have, keeping each batch as it is scored."""
    from csb_generator import DatasetFormatError
    from tqdm import tqdm

    first = kept.done(label)
    evaluation.rows.extend(kept.rows(label))
    per_batch = 1 if settings.protocol == "full" else settings.batch_size
    bar = tqdm(
        total=count,
        initial=min(first * per_batch, count),
        desc=f"evaluate {label}",
        unit="image",
        disable=not progress,
    )
    try:
        with bar:
            part = score(
                settings, progress=bar.update, first_batch=first, on_batch=partial(kept.keep, label)
            )
            if first > 0 and not evaluation.examples and kept.examples() is None:
                # The examples are the first images, scored before the interruption: their
                # batches again, for the pictures only.
                examples_only = replace(settings, limit=max(settings.examples, 1))
                part.examples = score(examples_only).examples
    except (DatasetFormatError, OSError) as error:
        done = sum(len(rows) for rows in kept.batches.get(label, {}).values())
        raise EvaluationStopped(
            f"{error}; the scores of the batches finished before it are kept in "
            f"{kept.folder} ({done} rows of {label}): rerun the same command to continue"
        ) from error
    evaluation.rows.extend(part.rows)
    if not evaluation.examples:
        evaluation.examples = kept.examples() or part.examples
        if evaluation.examples:
            kept.keep_examples(evaluation.examples)


def evaluate_dataset(
    data: str | Path,
    out: str | Path,
    *,
    models: Mapping[float | None, Restorer],
    settings: EvaluationSettings,
    wiener_tune: str | Path | None = None,
    wiener_balance: float | None = None,
    wiener_rotated: bool = False,
    tune_limit: int | None = 64,
    lpips: Distance | None = None,
    device: str = "cpu",
    title: str = "Evaluation",
    facts: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate restorers and the baselines on a test dataset and write the report folder.

    Parameters
    ----------
    data : str or Path
        A ``csb-generate`` test dataset, or a T-sweep (every exposure is evaluated).
    out : str or Path
        Report folder.
    models : mapping
        ``{None: model}`` for one model for every exposure, or ``{T: model}`` per exposure of a
        T-sweep (every exposure of ``data`` needs one).
    settings : EvaluationSettings
    wiener_tune : str or Path, optional
        Training dataset on which the Wiener balance is chosen by PSNR (per exposure when it is a
        T-sweep with the same exposures). Takes precedence over ``wiener_balance``.
    wiener_balance : float, optional
        A fixed Wiener balance. With neither, the Wiener rows are left out.
    wiener_rotated : bool
        Add a Wiener row with the kernel rotated by 180° (tuned separately): how a filter fed
        the stored kernel behaves when the blur was a correlation, as in the thesis's generator.
    tune_limit : int or None
        Training images used for tuning (the first ones).
    lpips : callable, optional
        LPIPS distance; None leaves the LPIPS column empty.
    device : str
    title : str
    facts : mapping, optional
        Extra lines for the report (checkpoint, data...).
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        The ``metrics.json`` document.
    """
    parts = _parts(data)
    missing = [t for t in parts if t not in models and None not in models]
    if missing:
        raise ValueError(f"no model for exposure(s) {missing}; give one per T or one for all")
    tune_parts = _parts(wiener_tune) if wiener_tune is not None else {}
    out = Path(out)
    # What the kept progress must match to be continued: anything that changes a score.
    progress_key = {
        "data": _fingerprints(parts),
        "models": {str(t): _model_digest(model) for t, model in models.items()},
        "settings": {**settings.__dict__, "sampler": asdict(settings.sampler)},
        "wiener_tune": None if wiener_tune is None else _fingerprints(tune_parts),
        "wiener_balance": wiener_balance,
        "wiener_rotated": wiener_rotated,
        "tune_limit": tune_limit,
        "lpips": lpips is not None,
        "device": str(device),
    }
    kept = _Progress(out, progress_key)
    evaluation = Evaluation()
    tuning: dict[str, Any] = {}
    for exposure, dataset in parts.items():
        label = "all" if exposure is None else f"T={exposure:g}"
        balances: dict[str, float | None] = {"wiener": wiener_balance, "wiener_rotated": None}
        if wiener_rotated:
            balances["wiener_rotated"] = wiener_balance
        if tune_parts:
            source = tune_parts.get(exposure, wiener_tune)
            part_tuning = _tuned(kept, label, source, str(wiener_tune), wiener_rotated, tune_limit)
            for method, record in part_tuning.items():
                balances[method] = record["balance"]
                tuning[f"{METHOD_LABELS[method]} ({label})"] = record
        _score_part(
            kept,
            label,
            evaluation,
            partial(
                evaluate_samples,
                dataset,
                model=models.get(exposure, models.get(None)),
                wiener_balance=balances["wiener"],
                wiener_rotated_balance=balances["wiener_rotated"],
                lpips=lpips,
                device=device,
            ),
            count=len(dataset) if settings.limit is None else min(settings.limit, len(dataset)),
            settings=settings,
            progress=progress,
        )
    document = write_report(
        out, evaluation, settings, title=title, facts=facts, wiener_tuning=tuning
    )
    kept.finish()
    return document
