"""``diffdeblur``: train conditional diffusion deblurring models.

A thin shell over :mod:`diffdeblur.train`. Exit codes: 0 done, 1 the run failed (non-finite
loss: the last checkpoint is kept), 2 bad usage or input, 130 interrupted.
"""

from __future__ import annotations

import os
import sys

import click

from .checkpoint import CheckpointError
from .config import PARAMETRISATIONS, VARIANTS

TRAIN_EPILOG = """
\b
Examples:
  # The thesis's recipe (GPU): base U-Net, sharp image diffused, 4000 epochs of 1024 patches
  diffdeblur train --data data/t3-psf32 --out runs/thesis --variant base --parametrisation sharp
  # A CPU budget: a tiny network, the residual diffused, stop cleanly after 30 minutes
  diffdeblur train --data data/t3-psf32 --out runs/cpu --variant tiny --parametrisation residual \\
      --batch-size 8 --budget-minutes 30
  # Continue a run (also after a budget stop or an interruption)
  diffdeblur train --data data/t3-psf32 --out runs/cpu --variant tiny --parametrisation residual \\
      --batch-size 8 --budget-minutes 30 --resume
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
    help="A csb-generate dataset folder, or a GoPro-style folder (*/blur/*, */sharp/*).",
)
@click.option("--out", required=True, type=click.Path(path_type=str), help="Run folder.")
@click.option("--variant", type=click.Choice(list(VARIANTS)), default="base", show_default=True)
@click.option(
    "--parametrisation",
    type=click.Choice(PARAMETRISATIONS),
    default="sharp",
    show_default=True,
    help="What is diffused: sharp (thesis), residual, refine (predict-and-refine), regression.",
)
@click.option(
    "--schedule", type=click.Choice(["linear", "cosine"]), default="linear", show_default=True
)
@click.option("--timesteps", type=int, default=1000, show_default=True, help="Diffusion steps.")
@click.option("--residual-scale", type=float, default=5.0, show_default=True)
@click.option("--patch-size", type=int, default=64, show_default=True, help="Patch side, px.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Over all processes.")
@click.option("--epochs", type=int, default=4000, show_default=True)
@click.option("--samples-per-epoch", type=int, default=1024, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True, help="Adam learning rate.")
@click.option("--warmup-steps", type=int, default=500, show_default=True)
@click.option("--ema-decay", type=float, default=0.9999, show_default=True)
@click.option("--grad-clip", type=float, default=1.0, show_default=True, help="0: off.")
@click.option("--amp/--no-amp", default=False, show_default=True, help="Mixed precision.")
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
    from .train import NonFiniteLoss, TrainConfig
    from .train import train as run_training

    try:
        config = TrainConfig(**options)
        result = run_training(config, resume=resume, progress=not quiet)
    except (ValueError, CheckpointError, FileNotFoundError, NotADirectoryError) as error:
        raise click.UsageError(str(error)) from None
    except NonFiniteLoss as error:
        click.echo(f"error: {error}", err=True)
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


if __name__ == "__main__":  # torchrun -m diffdeblur.cli
    main()
