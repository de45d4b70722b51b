"""``csb-generate``: write a camera-shake dataset as HDF5 shards.

A thin shell over :mod:`csb_generator.generate`: it parses options, shows a progress bar and a
summary, and maps errors to exit codes (2: bad usage or input, 1: failure while writing,
130: interrupted).
"""

from __future__ import annotations

import math
import re
import sys
import time
from fractions import Fraction

import click

from .generate import OutputBusy, OutputError, plan_generation, run_generation
from .modes import BLURRED_DTYPES, MODES, DatasetOptions, OptionError, resolve_options
from .psf import TrajectoryOutsideGrid
from .shards import DatasetFormatError, verify_dataset
from .sources import BUILTIN_PHOTOGRAPHS, SourceError

EPILOG = """
\b
Defaults follow the thesis for each mode:
  fixed   one camera-shake kernel (drawn from the seed) for every image, T = 1, no noise
  random  a new trajectory per image, length drawn in [--min-length, --length], T = 1, no noise
  noisy   a new trajectory per image; T in {8/8..2/8}, lam in {48000*4^k, k=0..4},
          sigma in {0,1,2,4} grey levels, each drawn per image
  tsweep  one trajectory for all images; one dataset per T in {1,1/2,...,1/32};
          lam = 765000, sigma = 0
\b
Examples (the thesis's datasets):
  Table 3, PSF 32:  csb-generate --mode random --psf-size 32 --out data/t3-psf32
  Table 4, row 2:   csb-generate --mode noisy --psf-size 32 --exposure 1 \\
                      --sigma 1 --lam 768000 --out data/t4-s1
  Figure 4, linear: csb-generate --mode tsweep --trajectory linear --out data/f4-linear
  Figure 4, shaky:  csb-generate --mode tsweep --trajectory random --out data/f4-shaky
  Your photos:      csb-generate --mode random --source ~/photos --downscale 2 --out data/mine
  Check a dataset you were given:  csb-generate --verify data/t3-psf32
  One machine's share of a cluster job (then rerun without the two options to join):
                    csb-generate --mode random --out /shared/d --shard-index 3 --num-shards 8
\b
Rerunning a command that was interrupted resumes it: complete shards are kept and the result is
byte-identical to an uninterrupted run. The format is described in docs/format.md.
"""


class NumberList(click.ParamType):
    """A comma-separated list of numbers; fractions (7/8) and inf are accepted."""

    name = "LIST"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        numbers = []
        for item in str(value).split(","):
            item = item.strip()
            try:
                numbers.append(math.inf if item.lower() == "inf" else float(Fraction(item)))
            except (ValueError, ZeroDivisionError):
                self.fail(f"{item!r} is not a number (use e.g. 1,0.5 or 7/8 or inf)", param, ctx)
        return tuple(numbers)


NUMBERS = NumberList()


def _verify(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """``--verify DIR``: check a dataset and report, instead of generating one."""
    if value is None or ctx.resilient_parsing:
        return
    try:
        checked = verify_dataset(value)
    except DatasetFormatError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(2)
    click.echo(
        f"{value}: OK, {checked['samples']} samples in {checked['shards']} shards of "
        f"{checked['datasets']} dataset(s): structure, SHA-256 and value ranges checked"
    )
    ctx.exit(0)


def _print_builtin(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo("Built-in photographs (shipped inside the scikit-image wheel):")
    for photograph in BUILTIN_PHOTOGRAPHS.values():
        click.echo(f"  skimage:{photograph.name:<20} {photograph}")
    ctx.exit(0)


#: The flag of each :class:`DatasetOptions` field whose flag is not its name with dashes.
_FLAGS = {
    "blurred_dtype": "--dtype",
    "exposures": "--exposure",
    "lams": "--lam",
    "sigmas": "--sigma",
}


def _flags(option: str) -> str:
    """An :class:`OptionError`'s option (a field, or two joined by ``/``) as this command's."""
    fields = option.split("/")
    return "/".join(_FLAGS.get(field, "--" + field.replace("_", "-")) for field in fields)


#: What the library's messages may name in backquotes: the dataset's options and the arguments
#: of ``plan_generation`` and ``run_generation``.
_NAMED = {*DatasetOptions.__dataclass_fields__, "out", "overwrite", "shard_index", "num_shards"}
_NAMED |= {"workers", "scheduler"}


def _reason_in_flags(reason: str) -> str:
    """A library message with the names it quotes in backquotes (```psf_size```) as flags."""
    return re.sub(r"`([a-z_]+)`", lambda m: _flags(m[1]) if m[1] in _NAMED else m[0], reason)


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EPILOG,
)
@click.option("--mode", type=click.Choice(MODES), required=True, help="Dataset mode.")
@click.option(
    "--out",
    type=click.Path(path_type=str),
    required=True,
    help="Output folder (created; a T-sweep gets one sub-folder per T).",
)
@click.option(
    "--source",
    type=click.Path(path_type=str),
    default=None,
    help="Folder of photographs, searched at any depth. Default: the built-in photographs.",
)
@click.option(
    "--list-builtin",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_builtin,
    help="List the built-in photographs and exit.",
)
@click.option(
    "--verify",
    type=click.Path(path_type=str),
    expose_value=False,
    is_eager=True,
    callback=_verify,
    metavar="DIR",
    help="Check the dataset in DIR (links, external storage, dtypes and shapes, each shard's "
    "SHA-256, every sample's value ranges), report and exit: 0 if sound, 2 if not.",
)
@click.option("--count", type=int, default=1000, show_default=True, help="Samples (per T part).")
@click.option("--image-size", type=int, default=64, show_default=True, help="Crop side, px.")
@click.option("--psf-size", type=int, default=32, show_default=True, help="Kernel side, px.")
@click.option("--channels", type=click.Choice(["1", "3"]), default="3", show_default=True)
@click.option(
    "--length",
    type=float,
    default=None,
    help="Trajectory length in px [psf-size/2]; the maximum of the draw in random mode.",
)
@click.option(
    "--min-length", type=float, default=1.0, show_default=True, help="random mode: shortest px."
)
@click.option("--num-samples", type=int, default=2000, show_default=True, help="Trajectory N.")
@click.option("--anxiety", type=float, default=None, help="Shakiness [drawn: 0.01*U]; 0 = line.")
@click.option("--centripetal", type=float, default=None, help="Pull to start [drawn: 0.7*U].")
@click.option("--gaussian", type=float, default=None, help="Push scale [drawn: 10*U].")
@click.option("--freq-big-shakes", type=float, default=None, help="Inversions [drawn: 0.2*U].")
@click.option("--angle", type=float, default=None, help="Initial direction, degrees [drawn].")
@click.option("--exposure", type=NUMBERS, default=None, help="Exposure(s) T in (0, 1], e.g. 1,1/2.")
@click.option(
    "--lam", type=NUMBERS, default=None, help="Photon scale(s) lambda; inf = no shot noise."
)
@click.option("--sigma", type=NUMBERS, default=None, help="Read noise(s), 8-bit grey levels.")
@click.option(
    "--kernel",
    default="random",
    show_default=True,
    help="fixed mode: random | disk:R | linear:L[:degrees] | a .npy or image file.",
)
@click.option(
    "--trajectory",
    default="random",
    show_default=True,
    help="tsweep mode: random | linear | a .npy file of complex positions (col + 1j*row).",
)
@click.option(
    "--alignment",
    type=click.Choice(["centre-of-mass", "common-origin"]),
    default="centre-of-mass",
    show_default=True,
    help="Kernel centring; common-origin makes the kernels of one trajectory nest.",
)
@click.option(
    "--crop", type=click.Choice(["random", "center"]), default="random", show_default=True
)
@click.option(
    "--downscale", type=float, default=1.0, show_default=True, help="Shrink sources first (>= 1)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Dataset seed.")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--shard-size", type=int, default=256, show_default=True, help="Samples per shard.")
@click.option("--shard-index", type=int, default=None, help="Write only this part (0-based) ...")
@click.option("--num-shards", type=int, default=None, help="... of this many parts.")
@click.option(
    "--scheduler",
    default=None,
    help="dask.distributed scheduler address (tcp://host:8786); needs csb-generator[dask].",
)
@click.option("--overwrite", is_flag=True, help="Replace a different dataset in --out.")
@click.option("--preview/--no-preview", default=True, show_default=True, help="Write preview.png.")
@click.option(
    "--dtype",
    type=click.Choice(BLURRED_DTYPES),
    default="float32",
    show_default=True,
    help="Stored dtype of blurred images (integers are rounded; they lose noise statistics).",
)
@click.option("--store-trajectories", is_flag=True, help="Also store each sample's trajectory.")
@click.option(
    "--compression",
    type=click.Choice(["gzip", "lzf", "none"]),
    default="gzip",
    show_default=True,
    help="HDF5 codec of the image datasets; lzf is faster but its bytes can vary between runs.",
)
def main(**args) -> None:
    """Generate a camera-shake blur dataset (Boracchi & Foi trajectories, Poisson-Gaussian noise
    with the 1/T gain) as HDF5 shards with a manifest.
    """
    execution = {
        key: args.pop(key)
        for key in (
            "out",
            "source",
            "workers",
            "shard_index",
            "num_shards",
            "scheduler",
            "overwrite",
            "preview",
        )
    }
    mode = args.pop("mode")
    args["channels"] = int(args["channels"])
    for field, flag in _FLAGS.items():
        args[field] = args.pop(flag.removeprefix("--"))
    if execution["workers"] < 1:
        raise click.BadParameter("must be >= 1", param_hint="--workers")
    try:
        options = resolve_options(mode, **args)
        plan = plan_generation(
            options,
            execution["out"],
            source_root=execution["source"],
            overwrite=execution["overwrite"],
            shard_index=execution["shard_index"],
            num_shards=execution["num_shards"],
        )
    except OptionError as error:
        raise click.BadParameter(
            _reason_in_flags(error.reason), param_hint=_flags(error.option)
        ) from None
    except OutputBusy as error:  # not the command's fault: the same command works later
        click.echo(f"error: {_reason_in_flags(str(error))}", err=True)
        sys.exit(1)
    except (OutputError, SourceError, TrajectoryOutsideGrid, ValueError) as error:
        raise click.UsageError(_reason_in_flags(str(error))) from None
    except OSError as error:  # the machine's doing (permissions, a full disk), not the user's
        click.echo(f"error: cannot prepare {execution['out']}: {error}", err=True)
        sys.exit(1)

    for key, reason in plan.skipped:
        click.echo(f"warning: skipped {key}: {reason}", err=True)
    click.echo(
        f"{plan.options.mode}: {len(plan.tasks)} shard(s) to write, {plan.kept} complete kept, "
        f"{len(plan.sources)} source image(s)",
        err=True,
    )
    started = time.perf_counter()
    try:
        from tqdm import tqdm

        with tqdm(total=plan.samples_to_write, unit="sample", dynamic_ncols=True) as bar:
            report = run_generation(
                plan,
                workers=execution["workers"],
                scheduler=execution["scheduler"],
                progress=bar.update,
                preview=execution["preview"],
            )
    except KeyboardInterrupt:
        click.echo("interrupted: rerun the same command to resume", err=True)
        sys.exit(130)
    except OSError as error:
        click.echo(f"error: writing the dataset failed: {error}", err=True)
        click.echo("complete shards are kept; rerun the same command to resume", err=True)
        sys.exit(1)
    except RuntimeError as error:
        click.echo(f"error: {_reason_in_flags(str(error))}", err=True)
        sys.exit(1)
    elapsed = time.perf_counter() - started
    _summary(plan, report, elapsed)


def _summary(plan, report, elapsed: float) -> None:
    rate = report.samples_written / elapsed if elapsed > 0 else 0.0
    click.echo(
        f"Wrote {report.shards_written} shard(s), {report.samples_written} samples, in "
        f"{elapsed:.1f} s ({rate:.0f} samples/s); kept {report.shards_kept} complete shard(s)."
    )
    click.echo(f"Output: {plan.out}")
    click.echo(
        f"Sources: {len(plan.sources)} used, {len(plan.skipped)} skipped"
        + (" (reasons above)" if plan.skipped else "")
    )
    if report.manifest is None:
        click.echo(
            "This run wrote one part; when every part is done, rerun the same command without "
            "--shard-index/--num-shards to check the shards and write the manifest."
        )
        return
    click.echo(
        f"Trajectory redraws: {report.redraws}; samples with reflection padding: {report.padded}"
    )
    click.echo(f"Manifest: {report.manifest}")
