"""Fine-tuning a trained autoencoder on a user's own notes: ``timbre-train experiment=finetune data.root=DS``.

The ``finetune`` config section (``conf/experiment/finetune.yaml`` says why each value) turns a
training run into a fine-tune:

- The model is the base model's (``finetune.base``: a bundled name, ``default`` included, or a
  checkpoint path), built from the base checkpoint's own settings and started from its (EMA)
  weights; ``conf/model`` is not used, and the run's ``config.yaml`` records the base's model spec.
  The optimizer starts fresh.
- ``finetune.freeze`` lists parameter name prefixes kept at the base's weights.
- Training notes are shifted by up to ``pitch_shift_semitones`` with the label moved along
  (:class:`timbre.data.augment.PitchShiftedNotes`).
- Held-out notes: the dataset's valid split (``timbre dataset from-folder`` writes one), or else
  ``held_out`` of the training notes, spread over the pitches. The run validates on them before its
  first step, keeps the best weights (``checkpoints/best.pt``) and stops after ``patience``
  validations without improvement, or at ``max_minutes``.
- Before training it measures a few steps and prints how long the run will take.
- At the end it exports the best weights as ``RUN_DIR/<export>/model.pt`` (load it with
  ``timbre.load("RUN_DIR/<export>")``) with ``MODEL_CARD.md``: the held-out notes reconstructed
  by the base model and by the fine-tuned one, scored by multi-scale spectral distance,
  loudness-envelope error and (``track_pitch``) PESTO pitch accuracy.

A fine-tune resumes like any run (``timbre-train trainer.resume=RUN_DIR``): the weights come from
its checkpoint, not from the base.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import Subset, default_collate

from timbre.data import DataBundle
from timbre.data.augment import PitchShiftedNotes
from timbre.data.from_folder import held_out_names
from timbre.data.nsynth import NoteDataset
from timbre.errors import CheckpointError, ConfigError
from timbre.io.audio import load_audio
from timbre.io.files import atomic_write
from timbre.train.checkpoint import (
    LAST_CHECKPOINT,
    build_model,
    export_inference_checkpoint,
    load_checkpoint,
    load_model,
    load_state,
)
from timbre.train.distributed import init_distributed, shutdown
from timbre.train.loop import (
    EarlyStopping,
    Trainer,
    TrainerSettings,
    TrainResult,
    describe_command,
    move_to,
    refuse_unknown_keys,
)

# Rough cost of scoring one held-out note (encode and decode by two models, metrics), and of PESTO
# on three versions of it, in seconds on a shared 2-core CPU: only for the printed estimate.
_EVALUATION_SECONDS_PER_NOTE = 0.5
_PITCH_SECONDS_PER_NOTE = 1.0


@dataclass
class FinetuneSettings:
    """The ``finetune`` config section (see ``conf/experiment/finetune.yaml``)."""

    base: str = "default"
    freeze: list[str] = field(default_factory=lambda: ["encoder", "decoder.pitch_embedding"])
    pitch_shift_semitones: int = 2
    pitch_shift_probability: float = 0.5
    patience: int = 6
    min_improvement: float = 0.0
    held_out: float = 0.2
    max_minutes: float | None = 10.0
    export: str = "model"
    name: str | None = None
    track_pitch: bool = True
    estimate_steps: int = 3

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> FinetuneSettings:
        """Settings from the ``finetune`` config, checked.

        Raises:
            ConfigError: naming an unknown key or an invalid value.
        """
        refuse_unknown_keys("finetune", "a fine-tuning setting", cls, values)
        settings = cls(**values)
        checks = [
            (isinstance(settings.base, str) and settings.base != "", "finetune.base must be a model name or path"),
            (
                isinstance(settings.freeze, list) and all(isinstance(p, str) for p in settings.freeze),
                "finetune.freeze must be a list of parameter name prefixes",
            ),
            (0 <= settings.pitch_shift_semitones <= 12, "finetune.pitch_shift_semitones must be 0-12"),
            (0 <= settings.pitch_shift_probability <= 1, "finetune.pitch_shift_probability must be in [0, 1]"),
            (settings.patience >= 1, "finetune.patience must be at least 1"),
            (0 <= settings.min_improvement < 1, "finetune.min_improvement must be in [0, 1)"),
            (0 < settings.held_out < 1, "finetune.held_out must be a fraction in (0, 1)"),
            (
                settings.max_minutes is None or settings.max_minutes > 0,
                "finetune.max_minutes must be positive or null",
            ),
            (settings.export != "" and "/" not in settings.export, "finetune.export must be a folder name"),
            (settings.estimate_steps >= 0, "finetune.estimate_steps must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{message}, got {values}")
        return settings


@dataclass(frozen=True)
class HeldOutNote:
    """A held-out note the model card scores: its file and labels."""

    name: str
    path: Path
    pitch: int
    velocity: int


# ----------------------------------------------------------------------------- building blocks


def load_base(base: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """``(model spec, EMA weights, checkpoint path)`` of a bundled model name or a checkpoint path.

    Raises:
        CheckpointError: unknown name, missing or unreadable checkpoint, or not an autoencoder.
    """
    from timbre.hub import resolve

    checkpoint = load_checkpoint(resolve(base))
    if checkpoint["model_config"]["family"] != "autoencoder":
        raise CheckpointError(
            f"{checkpoint['path']}: holds a {checkpoint['model_config']['family']}, not an autoencoder"
        )
    weights = checkpoint.get("ema") or checkpoint["model"]
    return checkpoint["model_config"], weights, checkpoint["path"]


def freeze_parameters(model: torch.nn.Module, prefixes: list[str]) -> tuple[int, int]:
    """Stop gradients to every parameter whose name starts with one of ``prefixes``.

    Returns:
        ``(frozen, trainable)`` parameter counts (numbers of weights).

    Raises:
        ConfigError: a prefix matches no parameter (a typo would silently train everything).
    """
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name == prefix or name.startswith(prefix + ".") for name in names):
            roots = sorted({name.rsplit(".", 2)[0] for name in names})
            raise ConfigError(
                f"finetune.freeze: {prefix!r} names no parameter of the model (e.g. {', '.join(roots[:6])})"
            )
    frozen = trainable = 0
    for name, parameter in model.named_parameters():
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
        else:
            trainable += parameter.numel()
    if trainable == 0:
        raise ConfigError("finetune.freeze freezes every parameter: nothing would train")
    return frozen, trainable


def finetune_data(bundle: DataBundle, settings: FinetuneSettings) -> tuple[DataBundle, list[HeldOutNote]]:
    """The training notes (pitch-shifted) and the held-out notes of a note dataset.

    Args:
        bundle: what ``build_note_bundle`` gave (cropping train notes, valid notes or None).
        settings: the fine-tuning settings.

    Returns:
        The bundle to train on and the held-out notes, whole, for the model card.
    """
    train = bundle.train
    if not isinstance(train, NoteDataset) or train.crop_samples is None:
        raise ConfigError("fine-tuning needs cropped notes in the NSynth layout (data=nsynth, data.crop_samples)")
    train_indices = list(range(len(train)))
    valid = bundle.valid
    if valid is not None:
        if not isinstance(valid, NoteDataset):
            raise ConfigError("fine-tuning needs held-out notes in the NSynth layout")
        held_out_set, held_out_indices = valid, list(range(len(valid)))
    else:  # no valid split: hold out part of the training notes, spread over the pitches
        notes = [{"name": train.note_str(i), "pitch": int(e["pitch"])} for i, e in enumerate(train.examples)]
        held_names = held_out_names(notes, settings.held_out)
        if not held_names:
            raise ConfigError(f"{train.split_dir}: {len(train)} note(s) is too few to hold some out for validation")
        held_out_indices = [i for i in train_indices if train.note_str(i) in held_names]
        train_indices = [i for i in train_indices if train.note_str(i) not in held_names]
        held_out_set = NoteDataset(
            train.split_dir,
            train.split,
            crop_samples=train.crop_samples,
            deterministic_crops=True,
            seed=train.seed,
            sample_rate=train.sample_rate,
            crop_hop=train.crop_hop,
            silence_db=train.silence_db,
        )
        valid = Subset(held_out_set, held_out_indices)
    shifted = PitchShiftedNotes(
        train, settings.pitch_shift_semitones, settings.pitch_shift_probability, indices=train_indices
    )
    held_out = [
        HeldOutNote(
            held_out_set.note_str(i),
            held_out_set.audio_path(i),
            int(held_out_set.examples[i]["pitch"]),
            int(held_out_set.examples[i]["velocity"]),
        )
        for i in held_out_indices
    ]
    finetuning = DataBundle(train=shifted, valid=valid, collate_fn=bundle.collate_fn, artifacts=bundle.artifacts)
    return finetuning, held_out


def measure_step_seconds(
    model: torch.nn.Module, data: DataBundle, batch_size: int, device: torch.device, steps: int
) -> float:
    """Seconds of one training step (batch loading, loss, backward), the median of ``steps`` after a warm-up.

    Weights, gradients and the random state are left as they were.
    """
    collate = data.collate_fn or default_collate
    durations = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model.train()
        for repeat in range(steps + 1):
            started = time.perf_counter()
            indices = torch.randint(len(data.train), (batch_size,))
            batch = move_to(collate([data.train[int(i)] for i in indices]), device)
            loss, _ = model.training_loss(batch)  # type: ignore[operator]
            loss.backward()
            model.zero_grad(set_to_none=True)
            if repeat:  # the first step pays for one-time allocations
                durations.append(time.perf_counter() - started)
    return statistics.median(durations) if durations else 0.0


def _minutes(seconds: float) -> str:
    minutes = round(seconds / 60)
    return "under a minute" if minutes < 1 else f"about {minutes} minute" + ("s" if minutes > 1 else "")


def describe_estimate(
    step_seconds: float,
    trainer_settings: TrainerSettings,
    settings: FinetuneSettings,
    train_notes: int,
    held_out: int,
    done_steps: int = 0,
) -> str:
    """One line: how long the fine-tune will take, at most (``done_steps``: already done by a resumed run)."""
    steps = max(0, trainer_settings.max_steps - done_steps)
    validations = steps // trainer_settings.valid_every + 1
    valid_batches = min(trainer_settings.valid_batches, math.ceil(held_out / trainer_settings.batch_size))
    # A validation batch is a forward pass, about a third of a training step.
    training = steps * step_seconds + validations * valid_batches * step_seconds / 3
    scoring = held_out * (_EVALUATION_SECONDS_PER_NOTE + (_PITCH_SECONDS_PER_NOTE if settings.track_pitch else 0.0))
    limit = settings.max_minutes * 60 if settings.max_minutes is not None else math.inf
    if training > limit:
        fitting = int(limit / (training / max(steps, 1)))
        plan = f"{_minutes(limit)} of training (the time limit: about {fitting} of {steps} steps)"
    else:
        plan = f"at most {steps} steps, {_minutes(training)} of training"
    return (
        f"timbre-train: fine-tuning on {train_notes} notes, {held_out} held out; {step_seconds:.2f} s per step: "
        f"{plan}, then {_minutes(scoring)} to score the held-out notes; "
        f"early stopping (patience {settings.patience}) usually ends it sooner"
    )


# ----------------------------------------------------------------------------- before and after


def compare_on_notes(
    base: str | Path, tuned: str | Path, notes: list[HeldOutNote], track_pitch: bool, seed: int = 0
) -> dict[str, Any]:
    """Score the base and the fine-tuned model's reconstructions of ``notes`` (whole notes).

    Each note is encoded from its file and decoded at its pitch by each model, as ``model.encode``
    then ``model.synthesize`` do.

    Returns:
        ``{"notes": [...], "systems": {"base": {...}, "fine-tuned": {...}, ["original": {...}]}}``
        with per-system means of ``spectral_distance``, ``loudness_error_db`` and (``track_pitch``)
        ``pitch_accuracy``, and per-note values.
    """
    from timbre.evaluation.metrics import loudness_envelope_error, multiscale_spectral_distance, pitch_scores
    from timbre.evaluation.scoring import decode_notes
    from timbre.hub import load

    models = {"base": load(base), "fine-tuned": load(tuned)}
    sample_rate = models["base"].sample_rate
    clips = [load_audio(note.path, sample_rate) for note in notes]
    samples = max(clip.shape[0] for clip in clips)
    originals = np.zeros((len(notes), samples), dtype=np.float32)
    for row, clip in enumerate(clips):
        originals[row, : clip.shape[0]] = clip
    pitches = [note.pitch for note in notes]
    systems: dict[str, dict[str, Any]] = {}
    per_note: dict[str, dict[str, list[float]]] = {}
    for label, model in models.items():
        embeddings = [model.encode(clip, pitch=n.pitch, velocity=n.velocity) for clip, n in zip(clips, notes)]
        audio = decode_notes(model, embeddings, pitches, samples, batch_size=1, seed=seed)
        spectral = multiscale_spectral_distance(audio, originals)
        loudness = loudness_envelope_error(audio, originals)
        per_note[label] = {"spectral_distance": spectral.tolist(), "loudness_error_db": loudness.tolist()}
        systems[label] = {"spectral_distance": float(spectral.mean()), "loudness_error_db": float(loudness.mean())}
        if track_pitch:
            correct = [score.correct for score in pitch_scores(audio, pitches, sample_rate)]
            systems[label]["pitch_accuracy"] = float(np.mean(correct))
    if track_pitch:
        systems["original"] = {
            "pitch_accuracy": float(np.mean([s.correct for s in pitch_scores(originals, pitches, sample_rate)]))
        }
    return {
        "notes": [
            {
                "note": note.name,
                "pitch": note.pitch,
                **{label: {k: v[row] for k, v in per_note[label].items()} for label in per_note},
            }
            for row, note in enumerate(notes)
        ],
        "systems": systems,
    }


def comparison_markdown(comparison: dict[str, Any], base: str, notes: int) -> str:
    """The before/after table of :func:`compare_on_notes`, as Markdown."""
    from timbre.evaluation.report import markdown_table, number, percent

    systems = comparison["systems"]
    before, after = systems["base"], systems["fine-tuned"]

    def change(key: str) -> str:
        return f"{100 * (after[key] - before[key]) / before[key]:+.1f}%" if before[key] else "n/a"

    rows = [
        ["multi-scale spectral distance (lower is better)", number(before["spectral_distance"]),
         number(after["spectral_distance"]), change("spectral_distance")],
        ["loudness-envelope error, dB (lower is better)", number(before["loudness_error_db"], 2),
         number(after["loudness_error_db"], 2), change("loudness_error_db")],
    ]  # fmt: skip
    if "pitch_accuracy" in before:
        ceiling = systems["original"]["pitch_accuracy"]
        label = f"pitch within 50 cents (PESTO; the original notes: {percent(ceiling)})"
        rows.append([label, percent(before["pitch_accuracy"]), percent(after["pitch_accuracy"]), ""])
    return "\n".join(
        [
            "# Before and after fine-tuning",
            "",
            f"The {notes} held-out notes (never trained on), each encoded from its file and decoded at its pitch, "
            f"by the base model (`{base}`) and by the fine-tuned one; means over the notes.",
            "",
            markdown_table(["held-out notes", "base", "fine-tuned", "change"], rows),
        ]
    )


def export_finetuned(
    result: TrainResult,
    base: str,
    base_path: str,
    settings: FinetuneSettings,
    held_out: list[HeldOutNote],
    data_root: str,
) -> tuple[Path, dict[str, Any]]:
    """Export the best weights of a fine-tune with a model card of before/after figures.

    Returns:
        ``(export directory, comparison)``.
    """
    from timbre.evaluation.report import write_report
    from timbre.train.export import model_card

    best = result.best_checkpoint if result.best_checkpoint and result.best_checkpoint.is_file() else None
    source = best or result.run_dir / "checkpoints" / LAST_CHECKPOINT
    destination = result.run_dir / settings.export
    # The fine-tuned model encodes as its base does, refined by the same default steps (its
    # timbre set is not refined ahead: a new decoder would need its own, 16 encodings more).
    refine_steps = int(load_checkpoint(base_path).get("encoding", {}).get("refine", 0))
    export_inference_checkpoint(source, destination / "model.pt", refine_steps=refine_steps)
    model, _ = load_model(destination / "model.pt")
    comparison = compare_on_notes(base_path, destination, held_out, settings.track_pitch)
    markdown = comparison_markdown(comparison, base, len(held_out))
    write_report(destination / "evaluation", "report", comparison, markdown)
    checkpoint = load_checkpoint(source)
    step = checkpoint.get("training", {}).get("step")
    name = settings.name or result.run_dir.name
    description = (
        f"Fine-tuned from `{base}` (`{base_path}`) on the notes of `{data_root}` "
        "with `timbre-train experiment=finetune`: "
        f"the weights of its best validation on {len(held_out)} held-out notes (step {step}"
        + (f", {result.finished_early}" if result.finished_early else "")
        + f"); frozen: {', '.join(settings.freeze) or 'nothing'}; pitch shifts up to {settings.pitch_shift_semitones} "
        f'semitones. Load it with `timbre.load("{destination}")`.'
    )
    card = model_card(
        name, description, checkpoint, model, "", destination / "evaluation" / "report.md", refine_steps=refine_steps
    )
    with atomic_write(destination / "MODEL_CARD.md", mode="w") as handle:
        handle.write(card)
    return destination, comparison


# ----------------------------------------------------------------------------- the run


def run_finetune(config: DictConfig, run_dir: Path | None, resume_state: dict[str, Any] | None) -> TrainResult:
    """Fine-tune as ``config`` says (called by :func:`timbre.train.app.train` when ``finetune`` is set).

    Args:
        config: the composed config (the resumed run's own when resuming), with a ``finetune`` section.
        run_dir: output directory; defaults to Hydra's run dir.
        resume_state: the checkpoint to resume from, or None for a fresh fine-tune from the base.
    """
    from hydra.core.hydra_config import HydraConfig

    from timbre.train.app import _claim_config, _container, _warn_if_threads_differ, build_data, check_crops

    settings = FinetuneSettings.from_config(_container(config.finetune))
    trainer_settings = TrainerSettings.from_config(_container(config.trainer))
    if resume_state is not None:  # the weights come from the run's own checkpoint
        spec, weights = resume_state["model_config"], None
        base_path = str(resume_state.get("run", {}).get("base", settings.base))
    else:
        spec, weights, base_path = load_base(settings.base)
    with open_dict(config):
        # The model is the base's, whatever conf/model says: config.yaml records what is trained.
        config.model = OmegaConf.create(spec)
    if run_dir is None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
    context = init_distributed(trainer_settings.resolved_device().type)
    try:
        torch.manual_seed(trainer_settings.seed)
        check_crops(config.data, spec)
        data, held_out = finetune_data(build_data(config.data), settings)
        model = build_model(spec, base_path)
        if weights is not None:
            load_state(model, weights, base_path)
        frozen, trainable = freeze_parameters(model, settings.freeze)
        device = trainer_settings.resolved_device()
        if context.is_main:
            _claim_config(run_dir, config, resuming=resume_state is not None)
            print(
                f"timbre-train: fine-tuning {settings.base} ({base_path}): {trainable:,} weights train, "
                f"{frozen:,} frozen ({', '.join(settings.freeze) or 'none'}); run dir {run_dir}",
                flush=True,
            )
            if settings.estimate_steps:
                step_seconds = measure_step_seconds(
                    model.to(device), data, trainer_settings.batch_size, device, settings.estimate_steps
                )
                done = int(resume_state["training"]["step"]) if resume_state is not None else 0
                estimate = describe_estimate(
                    step_seconds, trainer_settings, settings, len(data.train), len(held_out), done
                )
                print(estimate, flush=True)
        threads = torch.get_num_threads()
        run_info = {
            "command": describe_command(),
            "config": _container(config),
            "world_size": context.world_size,
            "threads": threads,
            "base": base_path,
        }
        if resume_state is not None:
            _warn_if_threads_differ(resume_state, threads)
        trainer = Trainer(
            model, data, trainer_settings, run_dir, spec, context, resume_state, run_info,
            early_stopping=EarlyStopping(settings.patience, settings.min_improvement),
            time_limit_seconds=settings.max_minutes * 60 if settings.max_minutes is not None else None,
        )  # fmt: skip
        result = trainer.fit()
        if context.is_main and result.stopped_by is None:
            how = f"{result.finished_early} at step {result.step}" if result.finished_early else f"step {result.step}"
            print(f"timbre-train: fine-tuning ended ({how}); scoring the held-out notes", flush=True)
            destination, comparison = export_finetuned(
                result, settings.base, base_path, settings, held_out, str(config.data.get("root"))
            )
            before, after = (comparison["systems"][key]["spectral_distance"] for key in ("base", "fine-tuned"))
            print(
                f"timbre-train: held-out spectral distance {before:.3f} (base) -> {after:.3f} (fine-tuned), "
                f"{100 * (after - before) / before:+.1f}%; model in {destination} "
                f'(timbre.load("{destination}"), see its MODEL_CARD.md)',
                flush=True,
            )
        elif context.is_main:
            print(
                f"timbre-train: stopped by {result.stopped_by} at step {result.step}; "
                f"resume with: timbre-train trainer.resume={run_dir}",
                file=sys.stderr,
                flush=True,
            )
        return result
    finally:
        shutdown(context)
