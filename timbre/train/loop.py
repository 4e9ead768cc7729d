"""The training loop shared by every timbre model: step-based, exactly resumable, DDP-ready.

Exact resumption rests on one rule: everything random in step ``s`` (which examples, which crops,
dropout) is drawn from generators seeded by ``(seed, s, rank)``. A resumed run restores the weights,
optimizer, schedule and EMA, then replays the same step numbers, so its losses equal those of an
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from timbre.data import DataBundle, SizedDataset
from timbre.errors import ConfigError, TimbreError
from timbre.io.files import remove_stale_temporaries
from timbre.runtime import cpu_has_native_bf16
from timbre.train.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, save_checkpoint
from timbre.train.distributed import ProcessContext, barrier, replicas_identical
from timbre.train.ema import ExponentialMovingAverage
from timbre.train.metrics_log import MetricsLog


@dataclass
class TrainerSettings:
    """The ``trainer`` config group (see ``conf/trainer/default.yaml`` for what each key means)."""

    max_steps: int = 2000
    batch_size: int = 8
    lr: float = 2e-4
    lr_decay_steps: list[int] = field(default_factory=list)
    lr_decay_factors: list[float] = field(default_factory=list)
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    log_every: int = 10
    valid_every: int = 250
    valid_batches: int = 4
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    num_workers: int = 0
    seed: int = 0
    precision: str = "bf16"
    cpu_bf16: str = "never"
    device: str = "auto"
    resume: str | None = None
    init_from: str | None = None
    fit_new_partials: int = 0
    progress: bool = True

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> TrainerSettings:
        """Settings from the ``trainer`` config, type-checked and validated.

        Raises:
            ConfigError: naming an unknown key, a value of the wrong type, or an invalid value.
        """
        fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        refuse_unknown_keys("trainer", "a trainer setting", cls, values)
        for name, value in values.items():
            if not _has_type(value, fields[name]):
                raise ConfigError(f"trainer.{name} must be {_TYPE_WORDS[fields[name]]}, got {value!r}")
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid ``trainer.*`` value."""
        positive = ("max_steps", "batch_size", "log_every", "valid_every", "checkpoint_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"trainer.{name} must be positive, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"trainer.lr must be a positive number, got {self.lr}")
        if len(self.lr_decay_steps) != len(self.lr_decay_factors):
            raise ConfigError(
                f"trainer.lr_decay_steps ({len(self.lr_decay_steps)} values) and trainer.lr_decay_factors "
                f"({len(self.lr_decay_factors)} values) must have the same length"
            )
        if list(self.lr_decay_steps) != sorted(self.lr_decay_steps):
            raise ConfigError(f"trainer.lr_decay_steps must be increasing, got {list(self.lr_decay_steps)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"trainer.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.precision not in ("bf16", "fp32"):
            raise ConfigError(f"trainer.precision must be bf16 or fp32, got {self.precision!r}")
        if self.cpu_bf16 not in ("never", "auto"):
            raise ConfigError(f"trainer.cpu_bf16 must be never or auto, got {self.cpu_bf16!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"trainer.device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("trainer.device=cuda but no CUDA device is available")
        if self.num_workers < 0 or self.valid_batches < 0 or self.keep_checkpoints < 0 or self.fit_new_partials < 0:
            raise ConfigError("trainer.num_workers, valid_batches, keep_checkpoints and fit_new_partials must be >= 0")
        if self.fit_new_partials and not self.init_from:
            raise ConfigError("trainer.fit_new_partials fits what trainer.init_from's weights lack: set init_from")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


# What each annotation of TrainerSettings accepts, in words for the messages.
_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "float | None": "a number or null",
    "bool": "true or false",
    "str": "a string",
    "str | None": "a string or null",
    "list[int]": "a list of integers",
    "list[float]": "a list of numbers",
}


def _has_type(value: Any, annotation: str) -> bool:
    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    def is_number(x: Any) -> bool:
        return is_int(x) or isinstance(x, float)

    checks = {
        "int": is_int,
        "float": is_number,
        "float | None": lambda x: x is None or is_number(x),
        "bool": lambda x: isinstance(x, bool),
        "str": lambda x: isinstance(x, str),
        "str | None": lambda x: x is None or isinstance(x, str),
        "list[int]": lambda x: isinstance(x, (list, tuple)) and all(map(is_int, x)),
        "list[float]": lambda x: isinstance(x, (list, tuple)) and all(map(is_number, x)),
    }
    return checks[annotation](value)


def step_seed(seed: int, step: int, rank: int, stream: int) -> int:
    """A 63-bit seed for random ``stream`` (0 data, 1 model) of ``step`` on ``rank``."""
    return (seed * 1_000_003 + step * 8_191 + rank * 131 + stream) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's ``random`` (datasets may use any of them)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class StepBatches(Dataset):
    """Item ``k`` is the training batch of step ``first_step + k``, a pure function of the step.

    Used through a ``DataLoader(batch_size=None)`` so workers can prefetch without breaking
    exact resumption.
    """

    def __init__(
        self,
        examples: SizedDataset,
        collate_fn: Callable[[list[Any]], Any],
        batch_size: int,
        seed: int,
        rank: int,
        first_step: int,
        last_step: int,
    ) -> None:
        self.examples, self.collate_fn, self.batch_size = examples, collate_fn, batch_size
        self.seed, self.rank, self.first_step, self.last_step = seed, rank, first_step, last_step

    def __len__(self) -> int:
        return max(0, self.last_step - self.first_step)

    def __getitem__(self, k: int) -> Any:
        seed_everything(step_seed(self.seed, self.first_step + k, self.rank, stream=0))
        indices = torch.randint(len(self.examples), (self.batch_size,))
        return self.collate_fn([self.examples[int(i)] for i in indices])


class Trainable(Protocol):
    """What the trainer needs of a model besides being an ``nn.Module``."""

    def training_loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]: ...


def training_loss(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """``model.training_loss(batch)``: the loss and its named parts (checked to exist in Trainer)."""
    return cast(Trainable, model).training_loss(batch)


class LossModule(nn.Module):
    """Wraps a model so that ``forward(batch)`` is its ``training_loss`` (what DDP needs to sync)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return training_loss(self.model, batch)


def move_to(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(value, device) for value in batch)
    return batch


def learning_rate_multiplier(settings: TrainerSettings) -> Callable[[int], float]:
    """Piecewise-constant multiplier of ``lr``: ``lr_decay_factors[i]`` from ``lr_decay_steps[i]`` on."""
    milestones = list(zip(settings.lr_decay_steps, settings.lr_decay_factors))

    def multiplier(step: int) -> float:
        factor = 1.0
        for milestone, milestone_factor in milestones:
            if step >= milestone:
                factor = milestone_factor
        return factor

    return multiplier


class GracefulStop:
    """Turns the first SIGINT/SIGTERM into a request to checkpoint and stop after this step."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second signal: stop right now
            signal.signal(signum, self.previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


@dataclass
class EarlyStopping:
    """Stop when the validation loss has not improved for ``patience`` validations in a row.

    Attributes:
        patience: validations without a new best before stopping.
        min_improvement: a new best must be lower than the old one by this fraction of it.
        best_loss, best_step: the best validation so far (``inf``, -1 before any).
        since_best: validations since then.
    """

    patience: int
    min_improvement: float = 0.0
    best_loss: float = math.inf
    best_step: int = -1
    since_best: int = 0

    def update(self, step: int, loss: float) -> bool:
        """Record the validation loss of ``step``; returns whether it is a new best."""
        if loss < self.best_loss * (1.0 - self.min_improvement) or self.best_step < 0:
            self.best_loss, self.best_step, self.since_best = loss, step, 0
            return True
        self.since_best += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.since_best >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` reports.

    ``stopped_by`` names a signal that interrupted the run (resume it to continue);
    ``finished_early`` says why a run ended before ``max_steps`` by design (``"early stopping"``,
    ``"time limit"``); ``best_checkpoint`` is the checkpoint of the best validation when early
    stopping was on.
    """

    run_dir: Path
    step: int
    stopped_by: str | None
    last_checkpoint: Path
    train_losses: list[tuple[int, float]]
    valid_losses: list[tuple[int, float]]
    finished_early: str | None = None
    best_checkpoint: Path | None = None

    def ending(self) -> str:
        """The line a training command ends with: how it ended, where its checkpoint is, how to resume."""
        how = f"stopped by {self.stopped_by}" if self.stopped_by else "finished"
        resume = f"; resume with: timbre-train trainer.resume={self.run_dir}" if self.stopped_by else ""
        return f"timbre-train: {how} at step {self.step}; checkpoint {self.last_checkpoint}{resume}"


def refuse_unknown_keys(section: str, what: str, settings: type, values: dict[str, Any]) -> None:
    """Raise ConfigError naming the first key of config ``section`` that is not a field of ``settings``.

    ``what`` says what a key should have been (``"a trainer setting"``); the message lists the
    settings there are.
    """
    names = [f.name for f in dataclasses.fields(settings)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]} is not {what} (the settings are: {', '.join(names)})")


class Trainer:
    """Trains ``model`` (anything with ``training_loss(batch) -> (loss, metrics)``) on ``data``.

    Args:
        model: the freshly built model (weights are replaced when resuming).
        data: datasets and collate function from the data config.
        settings: the ``trainer`` config.
        run_dir: where checkpoints, ``metrics.csv`` and ``loss.png`` go.
        model_config: the model spec (see :mod:`timbre.models.registry`), stored in every checkpoint.
        context: this process's rank in a DDP run.
        resume_state: a loaded checkpoint to continue from, or None.
        run_info: JSON-able facts stored in checkpoints (command line, configs, wall time).
        early_stopping: when given, the run validates once before its first step, keeps the EMA
            weights of its best validation in ``checkpoints/best.pt``, and ends when they have not
            improved for ``patience`` validations (its state is checkpointed for resuming).
        time_limit_seconds: end the run (checkpointed) after the step that passes this much wall
            time of this launch; None for no limit.
    """

    def __init__(
        self,
        model: nn.Module,
        data: DataBundle,
        settings: TrainerSettings,
        run_dir: Path,
        model_config: dict[str, Any],
        context: ProcessContext = ProcessContext(),
        resume_state: dict[str, Any] | None = None,
        run_info: dict[str, Any] | None = None,
        early_stopping: EarlyStopping | None = None,
        time_limit_seconds: float | None = None,
    ) -> None:
        settings.validate()
        if not hasattr(model, "training_loss"):
            raise ConfigError(f"{type(model).__name__} has no training_loss(batch) method: it cannot be trained")
        if len(data.train) == 0:
            raise TimbreError("the training set is empty: check data.root and the data filters")
        self.settings, self.data, self.context = settings, data, context
        self.run_dir = Path(run_dir)
        self.model_config = model_config
        self.device = settings.resolved_device()
        if self.device.type == "cuda" and context.distributed:
            self.device = torch.device("cuda", context.local_rank)
        self.autocasts = self._autocasts()
        self.run_info = {**(run_info or {}), "bf16_autocast": self.autocasts}
        self.model = model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, learning_rate_multiplier(settings))
        self.ema = ExponentialMovingAverage(self.model, settings.ema_decay)
        self.step = 0
        self.wall_seconds = 0.0
        self.early_stopping = early_stopping
        self.time_limit_seconds = time_limit_seconds
        if resume_state is not None:
            self._restore(resume_state)
        self.loss_module: nn.Module = LossModule(self.model)
        if context.distributed:
            self.loss_module = nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if context.is_main:
            # Left by a process killed while writing a checkpoint; this run owns the directory.
            for folder in (self.run_dir, self.run_dir / "checkpoints"):
                for temporary in remove_stale_temporaries(folder):
                    print(f"timbre-train: removed {temporary}, an unfinished write of a killed run", flush=True)
        self.metrics = MetricsLog(self.run_dir / "metrics.csv") if context.is_main else None
        if self.metrics is not None:
            self.metrics.truncate_after(self.step)

    # ----------------------------------------------------------------------------- state

    def _restore(self, state: dict[str, Any]) -> None:
        training = state.get("training")
        if training is None:
            raise TimbreError(f"{state.get('path')}: an inference-only checkpoint cannot be resumed")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(training["ema_state"])
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        self.step = int(training["step"])
        self.wall_seconds = float(state.get("run", {}).get("wall_seconds", 0.0))
        if self.early_stopping is not None and "early_stopping" in training:
            self.early_stopping.load_state_dict(training["early_stopping"])

    def checkpoint_state(self) -> dict[str, Any]:
        training: dict[str, Any] = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema_state": self.ema.state_dict(),
            "settings": vars(self.settings),
        }
        if self.early_stopping is not None:
            training["early_stopping"] = self.early_stopping.state_dict()
        return {
            "model_config": self.model_config,
            "model": self.model.state_dict(),
            "ema": self.ema.model.state_dict(),
            "artifacts": self.data.artifacts,
            "training": training,
            "run": {**self.run_info, "wall_seconds": self.wall_seconds, "step": self.step},
        }

    def save(self) -> Path:
        """Write ``last.pt`` (and a numbered copy, pruned to ``keep_checkpoints``); main rank only."""
        directory = self.run_dir / "checkpoints"
        last = directory / LAST_CHECKPOINT
        if not self.context.is_main:
            return last
        state = self.checkpoint_state()
        save_checkpoint(last, state)
        if self.settings.keep_checkpoints:
            save_checkpoint(directory / f"step_{self.step:08d}.pt", state)
            numbered = sorted(directory.glob("step_*.pt"))
            for old in numbered[: -self.settings.keep_checkpoints]:
                old.unlink(missing_ok=True)
        return last

    def _validate_for_early_stopping(self, valid_losses: list[tuple[int, float]]) -> None:
        """Validate, log, and keep ``best.pt`` when the loss is a new best (main rank, early stopping on)."""
        assert self.early_stopping is not None and self.metrics is not None
        valid_metrics = self.validate()
        if valid_metrics is None:
            raise ConfigError("early stopping needs a validation set (held-out notes) and trainer.valid_batches > 0")
        valid_losses.append((self.step, valid_metrics["loss"]))
        self.metrics.log(self.step, "valid", valid_metrics)
        if self.early_stopping.update(self.step, valid_metrics["loss"]):
            save_checkpoint(self.run_dir / "checkpoints" / BEST_CHECKPOINT, self.checkpoint_state())

    # ----------------------------------------------------------------------------- loop

    def _batches(self) -> DataLoader:
        collate = self.data.collate_fn or default_collate
        steps = StepBatches(
            self.data.train,
            collate,
            self.settings.batch_size,
            self.settings.seed,
            self.context.rank,
            self.step,
            self.settings.max_steps,
        )
        return DataLoader(
            steps,
            batch_size=None,
            shuffle=False,
            num_workers=self.settings.num_workers,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )

    def _autocast(self) -> Any:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocasts)

    def _autocasts(self) -> bool:
        """Whether steps run under bf16 autocast: on CUDA with ``precision=bf16``; on a CPU also
        ``cpu_bf16=auto``, and only one with native bf16 units (emulated bf16 is slower than fp32).
        Decided once, when the trainer is built (``self.autocasts``)."""
        if self.settings.precision != "bf16":
            return False
        if self.device.type == "cuda":
            return True
        return self.device.type == "cpu" and self.settings.cpu_bf16 == "auto" and cpu_has_native_bf16()

    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimizer step on ``batch``; returns its metrics (``loss``, ``lr``, ``grad_norm``, ...)."""
        seed_everything(step_seed(self.settings.seed, self.step, self.context.rank, stream=1))
        self.loss_module.train()
        with self._autocast():
            loss, metrics = self.loss_module(move_to(batch, self.device))
        if not torch.isfinite(loss):
            raise TimbreError(
                f"the training loss became {loss.item()} at step {self.step}; lower trainer.lr or check the data. "
                f"The last good checkpoint is in {self.run_dir / 'checkpoints'}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.settings.grad_clip if self.settings.grad_clip else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model)
        self.step += 1
        return {"loss": loss.item(), **metrics, "lr": lr, "grad_norm": float(grad_norm)}

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Mean metrics of the EMA model over ``valid_batches`` fixed batches of the valid set."""
        valid = self.data.valid
        if valid is None or len(valid) == 0 or self.settings.valid_batches == 0:
            return None
        collate = self.data.collate_fn or default_collate
        count = min(len(valid), self.settings.valid_batches * self.settings.batch_size)
        # Evenly spaced items cover every held-out instrument or piece, the same ones every time.
        indices = np.linspace(0, len(valid) - 1, count).round().astype(int)
        seed_everything(step_seed(self.settings.seed, 0, 0, stream=2))
        totals: dict[str, float] = {}
        batches = 0
        model = self.ema.model.to(self.device)
        for start in range(0, count, self.settings.batch_size):
            batch = collate([valid[int(i)] for i in indices[start : start + self.settings.batch_size]])
            with self._autocast():
                loss, metrics = training_loss(model, move_to(batch, self.device))
            for name, value in {"loss": loss.item(), **metrics}.items():
                totals[name] = totals.get(name, 0.0) + float(value)
            batches += 1
        return {name: value / batches for name, value in totals.items()}

    def fit(self) -> TrainResult:
        """Train until ``max_steps`` or a SIGINT/SIGTERM; checkpoint on the way and at the end."""
        settings, is_main = self.settings, self.context.is_main
        train_losses: list[tuple[int, float]] = []
        valid_losses: list[tuple[int, float]] = []
        window: dict[str, list[float]] = {}
        progress = None
        if is_main and settings.progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=settings.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        stopped_by: str | None = None
        finished_early: str | None = None
        started = time.perf_counter()
        launched = started
        window_started = started
        if self.early_stopping is not None and self.metrics is not None and self.step == 0:
            self._validate_for_early_stopping(valid_losses)  # the starting point: what must be beaten
        with GracefulStop() as stop:
            for batch in self._batches():
                metrics = self.train_step(batch)
                train_losses.append((self.step, metrics["loss"]))
                for name, value in metrics.items():
                    window.setdefault(name, []).append(value)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{metrics['loss']:.4f}")
                if self.step % settings.log_every == 0 and self.metrics is not None:
                    means = {name: sum(values) / len(values) for name, values in window.items()}
                    now = time.perf_counter()
                    means["steps_per_second"] = len(window["loss"]) / max(now - window_started, 1e-9)
                    self.metrics.log(self.step, "train", means)
                    window, window_started = {}, now
                out_of_time = (
                    self.time_limit_seconds is not None and time.perf_counter() - launched >= self.time_limit_seconds
                )
                # With early stopping the last weights are validated too: they may be the best.
                last_step = out_of_time or self.step >= settings.max_steps
                due = self.step % settings.valid_every == 0
                if (due or last_step) and self.metrics is not None and self.early_stopping:
                    self._validate_for_early_stopping(valid_losses)
                    if progress is not None:
                        progress.write(f"step {self.step}: valid loss {valid_losses[-1][1]:.4f}")
                    if self.early_stopping.exhausted:
                        finished_early = "early stopping"
                elif due and self.metrics is not None:  # on the main process
                    valid_metrics = self.validate()
                    if valid_metrics is not None:
                        valid_losses.append((self.step, valid_metrics["loss"]))
                        self.metrics.log(self.step, "valid", valid_metrics)
                        if progress is not None:
                            progress.write(f"step {self.step}: valid loss {valid_metrics['loss']:.4f}")
                if out_of_time:
                    finished_early = finished_early or "time limit"
                stop_now = self._agree_to_stop(stop.requested is not None or finished_early is not None)
                if self.step % settings.checkpoint_every == 0 or stop_now or self.step >= settings.max_steps:
                    self.wall_seconds += time.perf_counter() - started
                    started = time.perf_counter()
                    self.save()
                    if is_main and self.metrics is not None:
                        self.metrics.plot(self.run_dir / "loss.png")
                    barrier(self.context)
                if stop_now:
                    if finished_early is None:
                        stopped_by = stop.requested or "signal on another rank"
                    break
        if progress is not None:
            progress.close()
        if not replicas_identical(self.model, self.context):
            raise TimbreError("DDP replicas diverged: parameters differ between ranks")
        return TrainResult(
            run_dir=self.run_dir,
            step=self.step,
            stopped_by=stopped_by,
            last_checkpoint=self.run_dir / "checkpoints" / LAST_CHECKPOINT,
            train_losses=train_losses,
            valid_losses=valid_losses,
            finished_early=finished_early,
            best_checkpoint=self.run_dir / "checkpoints" / BEST_CHECKPOINT if self.early_stopping else None,
        )

    def _agree_to_stop(self, local_request: bool) -> bool:
        """All ranks stop at the same step if any of them was signalled."""
        if not self.context.distributed:
            return local_request
        import torch.distributed as dist

        flag = torch.tensor(
            [1.0 if local_request else 0.0], device=self.device if dist.get_backend() == "nccl" else "cpu"
        )
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def describe_command() -> str:
    """The command line that started this process, for model cards."""
    return " ".join(Path(sys.argv[0]).name if i == 0 else arg for i, arg in enumerate(sys.argv))
