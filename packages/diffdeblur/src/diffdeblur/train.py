"""Training: epochs of a fixed number of samples, EMA, warm-up, clipping, exact resume, DDP.

One function, :func:`train`, runs a training described by a :class:`TrainConfig` (a
:class:`Trainer` does the work in small parts), in one process or under ``torchrun``
(DistributedDataParallel: each rank reads its own share of every epoch and only rank 0 writes).
A run folder holds:

- ``checkpoint.pt``: model, EMA, optimiser, step, random states, configurations (atomic);
- ``log.jsonl``: one JSON line per logged step;
- ``loss.png``: the loss curve; ``val-NNNNNNN.png``: validation restorations
  (blurred | restored | sharp) of held-out patches, restored with the EMA weights.

Exactness: every random draw comes from a generator whose state is checkpointed (the batch order
and patches from (seed, epoch), the diffusion draws from a dedicated generator, dropout from the
global torch generator, saved too). On CPU a run stopped and resumed ends with the same weights as
an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from csb_generator import write_bytes_atomic
from torch import distributed, nn
from torch.utils.data import DataLoader

from .checkpoint import (
    TrainingState,
    load_checkpoint,
    load_training_state,
    restorer_from_checkpoint,
    save_training_state,
)
from .compute import autocast, resolve_device, resolve_precision, set_threads
from .config import ConfigError, DeconvolutionConfig, DiffusionConfig
from .data import open_training_data, split_indices
from .losses import PerceptualLoss, TrainingLoss
from .lpips_weights import load_lpips
from .plots import save_loss_curve, save_restoration_grid
from .pretrained import locate_model
from .restorer import Restorer, restorer_config
from .samplers import SamplerSpec
from .train_config import OptimisationOptions, TrainConfig, check_resumable
from .unet import count_parameters

__all__ = ["NonFiniteLoss", "TrainResult", "train"]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
#: Steps timed before the plan states the measured rate (after one step of warm-up).
PLAN_STEPS = 10
#: Fewer steps than this in a budget give a model that has not learnt to restore.
FEW_STEPS = 300
#: A CPU run without a budget that is expected to take longer than this many hours is warned.
LONG_CPU_HOURS = 2.0


def _duration(hours: float) -> str:
    """A duration for a person: hours, or days beyond two of them."""
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """How a run ended."""

    step: int
    total_steps: int
    stopped_by: str  # "finished", "budget" or "max_steps"
    checkpoint: Path
    last_loss: float


@dataclass
class _Context:
    rank: int
    world: int
    device: torch.device

    @property
    def writes(self) -> bool:
        return self.rank == 0


def _distributed_context(device_option: str) -> _Context:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device_option = resolve_device(device_option)
    if world == 1:
        return _Context(0, 1, torch.device(device_option))
    if not distributed.is_initialized():
        distributed.init_process_group("nccl" if device_option == "cuda" else "gloo")
    rank = distributed.get_rank()
    if device_option == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return _Context(rank, world, torch.device("cuda", local))
    return _Context(rank, world, torch.device("cpu"))


def _epoch_indices(seed: int, epoch: int, dataset_size: int, count: int) -> torch.Tensor:
    """The samples of one epoch: ``count`` indices from permutations of the dataset, one after
    the other, so that no sample repeats until all have been seen (a repeated index in one epoch
    would give the identical patch)."""
    state = np.random.SeedSequence(seed, spawn_key=(epoch,)).generate_state(1, np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state))
    rounds = -(-count // dataset_size)
    order = [torch.randperm(dataset_size, generator=generator) for _ in range(rounds)]
    return torch.cat(order)[:count]


def _learning_rate(options: OptimisationOptions, step: int, horizon: int) -> float:
    """The learning rate of step ``step`` (0-based): linear warm-up, then constant or a cosine
    decay that reaches 0 at step ``horizon``."""
    rate, warmup = options.lr, options.warmup_steps
    if warmup:
        rate *= min(1.0, (step + 1) / warmup)
    if options.lr_schedule == "cosine" and step >= warmup:
        span = max(horizon - warmup, 1)
        progress = min(1.0, (step - warmup) / span)
        rate *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return rate


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for ema_value, value in zip(
        ema.state_dict().values(), model.state_dict().values(), strict=True
    ):
        if ema_value.dtype.is_floating_point:
            ema_value.lerp_(value, 1.0 - decay)
        else:
            ema_value.copy_(value)


def _start_from(init: str, restorer: Restorer, ema: nn.Module, device: torch.device) -> None:
    """Load the EMA weights of the model ``init`` (a file or a bundled model's name) into the
    network and its EMA, with every check of loading a model; refuse another configuration."""
    path = locate_model(init)
    source = restorer_from_checkpoint(load_checkpoint(path, device), path)
    if source.config != restorer.config:
        saved = source.config
        raise ConfigError(
            "init",
            f"{init}: that model is a {saved.unet.base_channels}-channel "
            f"{saved.parametrisation} network, this run builds a "
            f"{restorer.config.parametrisation} network of {restorer.config.unet.base_channels} "
            "channels, or they differ in another option; pass the options it was trained with "
            "(`diffdeblur models` and docs/models.md list them)",
        )
    restorer.load_state_dict(source.state_dict())
    ema.load_state_dict(source.state_dict())


def _truncate_log(path: Path, step: int) -> None:
    """Keep the records of ``log.jsonl`` up to ``step``, the checkpoint's: a run killed after
    its last checkpoint logged steps that the resumed run logs again (and may have left half a
    line). Rewritten atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(record, dict)
            and isinstance(record.get("step"), int)
            and record["step"] <= step
        ):
            kept.append(line + "\n")
    write_bytes_atomic(path, "".join(kept).encode("utf-8"))


def _grid_batch(dataset, count: int) -> dict[str, torch.Tensor]:
    """The first ``count`` samples of ``dataset``, stacked: blurred, sharp (and kernel)."""
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    keys = [key for key in ("blurred", "sharp", "kernel") if key in items[0]]
    return {key: torch.stack([item[key] for item in items]) for key in keys}


def _deconvolution(config: TrainConfig, dataset) -> DeconvolutionConfig | None:
    """The front end ``config.restorer.deconvolve`` asks for, sized to the dataset's kernels."""
    deconvolve, data = config.restorer.deconvolve, config.data
    if deconvolve == "none":
        return None
    kernel_size = getattr(dataset, "kernel_size", None)
    if kernel_size is None:
        raise ConfigError(
            "deconvolve",
            f"{deconvolve} learns from stored kernels, and {data.folder} "
            "(a GoPro-style folder) has none: train it on a csb-generate dataset",
        )
    if deconvolve == "estimated" and data.patch_size < kernel_size:
        raise ConfigError(
            "patch_size",
            f"{data.patch_size} is smaller than the {kernel_size} px kernels of "
            f"{data.folder}: the kernel estimator's re-blur loss compares the pixels whose whole "
            f"neighbourhood lies in the patch, so set `patch_size` to {kernel_size} or more",
        )
    return DeconvolutionConfig(kernel_size=kernel_size, kernel=deconvolve)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> TrainResult:
    """Run (or resume) a training.

    At the start it states a plan through ``notify``: device, precision, threads, parameters
    and, after the first steps, the measured samples/s and the steps that the budget will give
    (with a warning when they are too few to learn from).

    Parameters
    ----------
    config : TrainConfig
    resume : bool
        Continue the run in ``config.run.out`` from its checkpoint. Without it, a folder that
        already holds a checkpoint is an error (nothing is overwritten).
    progress : bool
        Show a progress bar (rank 0).
    on_log : callable, optional
        Called with each log record (rank 0).
    notify : callable, optional
        Called with each line of the plan and each warning (rank 0).

    Raises
    ------
    ValueError
        For a data path that is not a dataset, a run folder conflict, or options that differ from
        the run being resumed.
    NonFiniteLoss
        When the loss stops being finite; the last checkpoint is kept unchanged.
    """
    # The caller's thread count comes back afterwards: it is the process's, not this run's.
    caller_threads = torch.get_num_threads()
    try:
        threads = set_threads(config.run.threads)
        trainer = Trainer(
            config, resume=resume, progress=progress, on_log=on_log, notify=notify, threads=threads
        )
        return trainer.run()
    finally:
        torch.set_num_threads(caller_threads)


class Trainer:
    """One run of :func:`train`, in small parts: set up, resume, step, log, save and validate.

    Built with the threads already set (``threads`` is only reported); :meth:`run` trains until
    the epochs, the budget or ``max_steps`` end it. The order of every seeded draw is part of
    the contract: a resumed run ends with the same weights as an uninterrupted one.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool,
        progress: bool,
        on_log: Callable[[dict[str, Any]], None] | None,
        notify: Callable[[str], None] | None,
        threads: int,
    ):
        self.config, self.on_log, self.notify = config, on_log, notify
        self.batch_size = config.optimisation.batch_size
        self.context = _distributed_context(config.run.device)
        self.precision = resolve_precision(config.run.precision, self.context.device)
        self.out = Path(config.run.out)
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        self.log_path = self.out / LOG_NAME
        self._check_run_folder(resume)
        # A resumed run's options are checked before the data, the networks and the LPIPS
        # network are loaded, so that a mistyped option is refused at once.
        saved = self._saved_state() if resume else None
        self._open_data()
        self._build_networks()
        self.step = 0
        if config.restorer.init is not None and not resume:
            _start_from(config.restorer.init, self.restorer, self.ema, self.context.device)
        if saved is not None:
            self._resume(saved)
        self.model: nn.Module = self.restorer
        if self.context.world > 1:
            self.model = nn.parallel.DistributedDataParallel(self.restorer)
        self._plan_steps()
        minutes, restorer = config.run.budget_minutes, config.restorer
        budget = f", budget {minutes:g} min" if minutes else ""
        self.say(
            f"plan: {self.context.device.type}, {self.precision}, {threads} thread(s), "
            f"{count_parameters(self.restorer) / 1e6:.2f} M parameters ({restorer.variant}, "
            f"{restorer.parametrisation}), batch {self.batch_size}, step {self.step} of "
            f"{self.total_steps}{budget}"
        )
        self._prepare_folder(resume)
        self.bar = self._progress_bar() if progress and self.context.writes else None
        self.started = time.monotonic()
        self.run_steps, self.last_loss = 0, math.nan
        self.window_start, self.window_samples = time.monotonic(), 0
        self.plan_started = self.started

    # -- setup ----------------------------------------------------------------------------------

    def _check_run_folder(self, resume: bool) -> None:
        out, checkpoint = self.out, self.checkpoint_path
        if checkpoint.exists() and not resume:
            raise ConfigError(
                "out",
                f"{out} already holds a run ({CHECKPOINT_NAME}); pass `resume` to continue it or "
                "choose another `out`",
            )
        if resume and not checkpoint.exists():
            raise ConfigError("resume", f"{checkpoint} does not exist")
        if out.exists() and not out.is_dir():
            raise ConfigError("out", f"{out} is a file, not a folder")

    def _open_data(self) -> None:
        config = self.config
        dataset = open_training_data(
            config.data.folder, config.data.patch_size, seed=config.run.seed
        )
        if len(dataset) < 2:
            raise ValueError(
                f"{config.data.folder} holds {len(dataset)} sample(s); training needs at least 2"
            )
        train_indices, validation_indices = split_indices(
            len(dataset), config.data.validation_fraction, config.run.seed
        )
        # Opened once: the two sides share its shards (or decoded images).
        self.dataset = dataset
        self.training = dataset.subset(train_indices)
        # Central, unflipped validation patches: the same images at every validation.
        self.validation = dataset.subset(validation_indices, flips=False, crop="center")

    def _build_networks(self) -> None:
        config, device = self.config, self.context.device
        seed, wanted, optimisation = config.run.seed, config.restorer, config.optimisation
        # The initial weights come from the global generator (torch's layers take no
        # generator): seeded the same on every rank, so --seed fixes them and every rank
        # starts alike.
        torch.manual_seed(seed * 1009)
        diffusion = DiffusionConfig(
            timesteps=wanted.timesteps,
            schedule=wanted.schedule,
            prediction=wanted.prediction,
            bridge_noise=wanted.bridge_noise,
        )
        self.restorer = Restorer(
            restorer_config(
                wanted.parametrisation,
                wanted.variant,
                diffusion=diffusion,
                residual_scale=wanted.residual_scale,
                deconvolution=_deconvolution(config, self.dataset),
                blurred_skip=wanted.blurred_skip,
                **wanted.unet_overrides,
            )
        ).to(device)
        self.ema = copy.deepcopy(self.restorer).requires_grad_(False)
        if config.run.compile:
            # In place, so the state dict keeps its keys; the EMA copy, used only to validate
            # and to save, stays eager.
            restorer = self.restorer
            for network in (restorer.denoiser_net, restorer.regressor, restorer.kernel_estimator):
                if network is not None:
                    network.compile()
        self.optimiser = torch.optim.Adam(self.restorer.parameters(), lr=optimisation.lr)
        # Dropout draws from torch's global generator too (nn.Dropout takes no generator); it
        # is reseeded per rank here and checkpointed, which keeps runs reproducible and
        # resumable.
        torch.manual_seed(seed * 1009 + 1 + self.context.rank)
        self.noise = torch.Generator(device).manual_seed(seed * 1013 + self.context.rank)
        self.loss: TrainingLoss = optimisation.loss  # type: ignore[assignment]
        if optimisation.lpips_loss_weight > 0:
            lpips = load_lpips(optimisation.lpips_weights, device)
            self.loss = PerceptualLoss(optimisation.loss, lpips, optimisation.lpips_loss_weight)

    def _saved_state(self) -> TrainingState:
        """The checkpoint of the run being resumed, once its options are checked."""
        state = load_training_state(self.checkpoint_path, self.context.device)
        check_resumable(state.train, self.config, self.checkpoint_path)
        return state

    def _resume(self, state: TrainingState) -> None:
        config, context, path = self.config, self.context, self.checkpoint_path
        self.restorer.load_state_dict(state.model)
        self.ema.load_state_dict(state.ema)
        self.optimiser.load_state_dict(state.optimiser)
        self.step = int(state.step)
        saved_data = state.data_fingerprint  # None in checkpoints of older versions
        if saved_data is not None and saved_data != self.dataset.fingerprint:
            raise ConfigError(
                "resume",
                f"`data` {config.data.folder} holds other data than the run in {path} was "
                f"trained on (dataset fingerprints {saved_data[:12]}… and "
                f"{self.dataset.fingerprint[:12]}…); the same dataset moved or copied elsewhere "
                "is fine",
            )
        saved_world = len(state.rng["noise"])
        if saved_world != context.world:
            raise ConfigError(
                "resume",
                f"the run in {path} used {saved_world} process(es); resume it with "
                f"the same number (this run has {context.world})",
            )
        self.noise.set_state(state.rng["noise"][context.rank].cpu())
        torch.set_rng_state(state.rng["torch"][context.rank].cpu())

    def _plan_steps(self) -> None:
        config, world = self.config, self.context.world
        self.per_rank = self.batch_size // world
        if self.per_rank * world != self.batch_size:
            raise ConfigError(
                "batch_size",
                f"{self.batch_size} must be a multiple of the {world} processes",
            )
        self.steps_per_epoch = config.data.samples_per_epoch // self.batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError(
                "samples_per_epoch",
                f"{config.data.samples_per_epoch} must be at least `batch_size` {self.batch_size}",
            )
        self.total_steps = config.optimisation.epochs * self.steps_per_epoch
        # float16's narrow range needs the loss scaled; bfloat16 has float32's range.
        fp16 = self.precision == "fp16"
        self.scaler = torch.amp.GradScaler(self.context.device.type, enabled=fp16)
        self.horizon = self.total_steps
        if config.run.max_steps is not None:
            self.horizon = min(self.horizon, self.step + config.run.max_steps)

    def _prepare_folder(self, resume: bool) -> None:
        if self.context.writes:
            self.out.mkdir(parents=True, exist_ok=True)
            document = {"train": self.config.options(), "restorer": self.restorer.config.to_dict()}
            (self.out / "config.json").write_text(json.dumps(document, indent=2))
        self.grid = _grid_batch(self.validation, self.config.run.validation_images)
        if resume and self.context.writes:
            _truncate_log(self.log_path, self.step)

    def _progress_bar(self):
        from tqdm import tqdm

        # Counted in samples, so that the bar's rate is samples/s; the step is in the postfix.
        return tqdm(
            total=self.horizon * self.batch_size,
            initial=self.step * self.batch_size,
            unit="sample",
            dynamic_ncols=True,
        )

    # -- reporting ------------------------------------------------------------------------------

    def say(self, line: str) -> None:
        """Tell the caller a line of the plan or a warning (rank 0)."""
        if self.notify is not None and self.context.writes:
            self.notify(line)

    def plan_from_rate(self) -> None:
        """State the measured rate and, under a budget, the horizon it gives this run."""
        config, step, run_steps = self.config, self.step, self.run_steps
        rate = PLAN_STEPS / max(time.monotonic() - self.plan_started, 1e-9)
        line = f"plan: {rate * self.batch_size:.1f} samples/s measured over {PLAN_STEPS} steps"
        if config.run.budget_minutes is not None:
            left = 60 * config.run.budget_minutes - (time.monotonic() - self.started)
            self.horizon = min(self.horizon, step + int(rate * max(left, 0.0)))
            line += f"; about {self.horizon - step + run_steps} steps in this run's budget"
            if self.bar is not None:
                self.bar.total = self.horizon * self.batch_size
                self.bar.refresh()
        self.say(line)
        if config.run.budget_minutes is None and self.context.device.type == "cpu":
            hours = (self.horizon - step) / rate / 3600
            if hours > LONG_CPU_HOURS:
                self.say(
                    f"warning: at this rate the {self.horizon - step} steps left "
                    f"({config.optimisation.epochs} epochs of {config.data.samples_per_epoch} "
                    f"samples, {config.restorer.variant}) take about {_duration(hours)} on this "
                    "CPU. For a CPU run pass a budget, e.g. `budget_minutes` 30, and a small "
                    "network, `variant` tiny (the CPU recipe at the top of docs/diffdeblur.md)"
                )
        # A fine-tuning run (--init) starts from a trained model: a few steps are its point.
        if config.restorer.init is None and self.horizon - step + run_steps < FEW_STEPS:
            self.say(
                f"warning: this run will take only about {self.horizon - step + run_steps} "
                f"steps; a model trained for fewer than {FEW_STEPS} steps is barely trained. "
                "Raise `budget_minutes`, or pick a smaller `variant`"
            )

    def log(self, epoch: int, loss: torch.Tensor, parts: dict[str, float]) -> None:
        """Append the record of the step just taken to ``log.jsonl`` (every ``log_every``)."""
        config, context = self.config, self.context
        log_now = self.step % config.run.log_every == 0 or self.step == self.total_steps
        if log_now and context.world > 1:  # log the loss of the whole batch
            mean = loss.detach().clone()
            distributed.all_reduce(mean)
            self.last_loss = float(mean) / context.world
        if not (context.writes and log_now):
            return
        now = time.monotonic()
        record = {
            "step": self.step,
            "epoch": epoch,
            "loss": self.last_loss,
            **parts,
            "lr": _learning_rate(config.optimisation, self.step - 1, self.horizon),
            "samples_per_s": self.window_samples / max(now - self.window_start, 1e-9),
            "elapsed_s": now - self.started,
        }
        self.window_start, self.window_samples = now, 0
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.on_log is not None:
            self.on_log(record)

    # -- saving and validating ------------------------------------------------------------------

    def save(self, step_done: int) -> None:
        """Write the checkpoint (rank 0; every rank's random states gathered) and the loss
        curve."""
        noise_states = [self.noise.get_state()]
        torch_states = [torch.get_rng_state()]
        world = self.context.world
        if world > 1:
            noise_states = [torch.empty_like(noise_states[0]) for _ in range(world)]
            torch_states = [torch.empty_like(torch_states[0]) for _ in range(world)]
            distributed.all_gather_object(noise_states, self.noise.get_state())
            distributed.all_gather_object(torch_states, torch.get_rng_state())
        if not self.context.writes:
            return
        state = TrainingState(
            model=self.restorer.state_dict(),
            ema=self.ema.state_dict(),
            optimiser=self.optimiser.state_dict(),
            step=step_done,
            rng={"noise": noise_states, "torch": torch_states},
            train=self.config.options(),
            restorer=self.restorer.config.to_dict(),
            data_fingerprint=self.dataset.fingerprint,
        )
        save_training_state(self.checkpoint_path, state)
        save_loss_curve(self.log_path, self.out / "loss.png")

    def validate(self) -> None:
        """Restore the validation patches with the EMA weights into ``val-STEP.png``."""
        _validate(self.ema, self.grid, self.config, self.out / f"val-{self.step:07d}.png")

    # -- training -------------------------------------------------------------------------------

    def epoch_loader(self, epoch: int, first_batch: int) -> DataLoader:
        """This rank's batches of ``epoch`` from batch ``first_batch`` on."""
        config = self.config
        order = _epoch_indices(
            config.run.seed,
            epoch,
            len(self.training),
            self.steps_per_epoch * self.batch_size,
        )
        mine = order.view(self.steps_per_epoch, self.context.world, self.per_rank)
        mine = mine[first_batch:, self.context.rank]
        self.training.set_epoch(epoch)
        return DataLoader(
            self.training,
            batch_size=self.per_rank,
            sampler=mine.flatten().tolist(),
            num_workers=config.run.workers,
            # A private generator: the loader's seed draw must not move the global generator,
            # or dropout would depend on where a run was resumed.
            generator=torch.Generator(),
        )

    def optimise(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """One optimiser step and EMA update on ``batch``; returns the loss and its parts.

        Raises
        ------
        NonFiniteLoss
            When the loss (on any rank) is not finite; nothing is updated then.
        """
        config, device = self.config, self.context.device
        blurred = batch["blurred"].to(device)
        sharp = batch["sharp"].to(device)
        kernel = batch["kernel"].to(device) if "kernel" in batch else None
        for group in self.optimiser.param_groups:
            group["lr"] = _learning_rate(config.optimisation, self.step, self.horizon)
        with autocast(self.precision, device):
            loss, parts = self.model(blurred, sharp, self.noise, self.loss, kernel)
        finite = torch.isfinite(loss.detach()).float()
        if self.context.world > 1:  # one rank's NaN must stop every rank, not hang them
            distributed.all_reduce(finite, op=distributed.ReduceOp.MIN)
        if not finite.item():
            kept = (
                f"the last checkpoint ({self.checkpoint_path}) is kept"
                if self.checkpoint_path.exists()
                else "no checkpoint had been written yet"
            )
            raise NonFiniteLoss(
                f"the loss is {float(loss.detach())} at step {self.step}; stopped, {kept}. "
                "Check the data, lower `lr` or enable `grad_clip`"
            )
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if config.optimisation.grad_clip > 0:
            self.scaler.unscale_(self.optimiser)
            nn.utils.clip_grad_norm_(self.restorer.parameters(), config.optimisation.grad_clip)
        self.scaler.step(self.optimiser)
        self.scaler.update()
        decay = min(config.optimisation.ema_decay, (1 + self.step) / (10 + self.step))
        _update_ema(self.ema, self.restorer, decay)
        if isinstance(self.loss, PerceptualLoss):
            parts |= self.loss.terms
        return loss, parts

    def after_step(self, epoch: int, loss: torch.Tensor, parts: dict[str, float]) -> None:
        """Count the step, time it, log it, and checkpoint or validate when they are due."""
        config = self.config
        self.step += 1
        self.run_steps += 1
        self.last_loss = float(loss.detach())
        if self.run_steps == 1:  # the first step allocates; time the ones after it
            self.plan_started = time.monotonic()
        elif self.run_steps == 1 + PLAN_STEPS:
            self.plan_from_rate()
        self.window_samples += self.batch_size
        self.log(epoch, loss, parts)
        if self.bar is not None:
            self.bar.update(self.batch_size)
            self.bar.set_postfix(step=self.step, loss=f"{self.last_loss:.4f}", refresh=False)
        if self.step % config.run.checkpoint_every == 0:
            self.save(self.step)
        if self.context.writes and self.step % config.run.validate_every == 0:
            self.validate()

    def stop_reason(self) -> str | None:
        """``"budget"`` or ``"max_steps"`` when this run must stop now (every rank alike)."""
        config = self.config
        over_budget = (
            config.run.budget_minutes is not None
            and time.monotonic() - self.started > 60 * config.run.budget_minutes
        )
        if self.context.world > 1:  # every rank must stop at the same step
            flag = torch.tensor([float(over_budget)])
            distributed.all_reduce(flag, op=distributed.ReduceOp.MAX)
            over_budget = bool(flag.item())
        if over_budget:
            return "budget"
        if config.run.max_steps is not None and self.run_steps >= config.run.max_steps:
            return "max_steps"
        return None

    def run(self) -> TrainResult:
        """Train to the end of the epochs, the budget or ``max_steps``; save and validate."""
        stopped_by = None
        try:
            while self.step < self.total_steps and stopped_by is None:
                epoch, first_batch = divmod(self.step, self.steps_per_epoch)
                for batch in self.epoch_loader(epoch, first_batch):
                    loss, parts = self.optimise(batch)
                    self.after_step(epoch, loss, parts)
                    if self.step >= self.total_steps:
                        break
                    stopped_by = self.stop_reason()
                    if stopped_by is not None:
                        break
            self.save(self.step)
            if self.context.writes:
                self.validate()
        finally:
            if self.bar is not None:
                self.bar.close()
        return TrainResult(
            self.step, self.total_steps, stopped_by or "finished", self.checkpoint_path,
            self.last_loss,
        )  # fmt: skip


@torch.no_grad()
def _validate(ema: Restorer, grid: dict[str, torch.Tensor], config: TrainConfig, path: Path):
    device = next(ema.parameters()).device
    generator = torch.Generator(device).manual_seed(config.run.seed)
    steps = min(config.run.validation_steps, ema.diffusion.num_timesteps)
    # Only a non-blind front end is given the kernel; a blind one estimates it, as in use.
    front = ema.config.deconvolution
    kernel = grid["kernel"].to(device) if front is not None and front.kernel == "true" else None
    restored = ema.restore(
        grid["blurred"].to(device),
        sampler=SamplerSpec(steps=steps),
        generator=generator,
        kernel=kernel,
    )
    blurred, sharp = grid["blurred"], grid["sharp"]
    save_restoration_grid(path, blurred, restored.cpu(), sharp, title=f"step {path.stem[4:]}")
