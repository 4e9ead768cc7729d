"""Evaluation of an autoencoder: reconstruction and interpolation of held-out instruments.

Reconstruction. ``notes`` notes of one split (NSynth splits are instrument-disjoint: valid and test
instruments never appear in training) are picked deterministically, spread evenly over the split's
instruments and, within each instrument, over its pitches. Each note is encoded and decoded at its
own pitch (one decoder pass per batch of notes) and scored against its input by the multi-scale
spectral distance and by PESTO pitch accuracy within 50 cents (:mod:`timbre.evaluation.metrics`).
The input notes' own pitch score is the ceiling (what the tracker hears in the real notes); an
untrained model of the same config (seeded weights) scored the same way is the baseline.

Interpolation. ``sweeps`` pairs of notes of two different instruments at the same pitch; their
embeddings are slerped in ``steps`` steps from t=0 to t=1 and every step is decoded at that pitch.
Pitch-keeping: the fraction of steps whose pitch is correct. Smoothness of the steps' spectral
centroids: direction reversals beyond 10% of the endpoints' difference, the largest step over that
difference, and whether every step lies between the endpoints.

All evaluated notes have one length: ``seconds`` when given (the first seconds of each note, for
slow autoregressive decoders), otherwise the longest note; shorter notes are zero-padded.

Output in ``out_dir``: ``report.json`` (every number, the settings, the model and the data, the
equivalent command), ``report.md`` (tables and pictures), ``reconstructions.png`` (rainbowgrams of
input, reconstruction and untrained reconstruction of a few notes), ``sweeps.png`` (rainbowgrams of
a few sweeps), ``pitch_errors.png`` (histogram of per-note pitch errors) and the pictured notes'
audio in ``audio/``.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from timbre import __version__, plots
from timbre.io.audio import save_wav
from timbre.data.nsynth import NoteDataset
from timbre.embedding import Embedding
from timbre.errors import ConfigError
from timbre.evaluation.metrics import (
    LOUDNESS_RANGE_DB,
    LOUDNESS_WINDOW,
    MSS_FFT_SIZES,
    PESTO_MODEL,
    PESTO_STEP_MS,
    SILENCE_DBFS,
    TOLERANCE_CENTS,
    PitchScore,
    multiscale_spectral_distance,
    pitch_scores,
    spectral_centroid,
    sweep_smoothness,
)
from timbre.hub import load
from timbre.interpolate import slerp
from timbre.io.files import atomic_write
from timbre.synthesizer import TimbreModel
from timbre.train.checkpoint import build_model, load_checkpoint

BASELINES = ("untrained", "none")
# Reversals of the centroid smaller than this fraction of the endpoints' difference are ignored.
SMOOTHNESS_TOLERANCE = 0.1
PITCH_ACCURACY_TARGET = 0.95
REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"


# ---------------------------------------------------------------------------------- note choice


def _even_quotas(available: Sequence[int], count: int) -> list[int]:
    """Split ``count`` picks as evenly as possible over groups holding ``available`` items each."""
    quotas = [0] * len(available)
    remaining = min(count, sum(available))
    while remaining:
        open_groups = [i for i, size in enumerate(available) if quotas[i] < size]
        share = max(1, remaining // len(open_groups))
        for i in open_groups:
            take = min(share, available[i] - quotas[i], remaining)
            quotas[i] += take
            remaining -= take
            if not remaining:
                break
    return quotas


def select_notes(examples: Sequence[dict[str, Any]], count: int, seed: int = 0) -> list[int]:
    """Indices of ``count`` notes spread evenly over instruments, and within each over its pitches.

    Each instrument gets an equal share (instruments with fewer notes give their remainder to the
    others; a seeded shuffle decides who gets the leftovers). Within an instrument, the notes sorted
    by pitch and velocity are taken at evenly spaced positions from a seeded offset.

    Args:
        examples: notes as in :attr:`timbre.data.nsynth.NoteDataset.examples`.
        count: how many to pick (all of them if there are fewer).
        seed: the same seed picks the same notes.

    Returns:
        Sorted indices into ``examples``.
    """
    rng = np.random.default_rng(seed)
    by_instrument: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        by_instrument[example["instrument_str"]].append(index)
    names = sorted(by_instrument)
    rng.shuffle(names)
    chosen = []
    for name, quota in zip(names, _even_quotas([len(by_instrument[name]) for name in names], count)):
        if not quota:
            continue
        notes = sorted(by_instrument[name], key=lambda i: (int(examples[i]["pitch"]), int(examples[i]["velocity"]), i))
        offset = rng.random()
        chosen += [notes[int((k + offset) * len(notes) / quota)] for k in range(quota)]
    return sorted(chosen)


def select_sweep_pairs(examples: Sequence[dict[str, Any]], count: int, seed: int = 0) -> list[tuple[int, int]]:
    """Up to ``count`` pairs of notes of two different instruments at the same pitch.

    Pitches held by at least two instruments are visited in a seeded order, round after round; each
    visit pairs two instruments not yet paired at that pitch (one note of each, velocity closest to
    100, the NSynth default), so the pairs spread over pitches before any pitch repeats.

    Returns:
        Pairs of indices into ``examples``; fewer than ``count`` when the split has no more pairs.
    """
    rng = np.random.default_rng(seed)
    by_pitch: dict[int, dict[str, int]] = defaultdict(dict)
    for index, example in enumerate(examples):
        instruments = by_pitch[int(example["pitch"])]
        name = example["instrument_str"]
        current = instruments.get(name)
        if current is None or abs(int(example["velocity"]) - 100) < abs(int(examples[current]["velocity"]) - 100):
            instruments[name] = index
    pitches = sorted(pitch for pitch, instruments in by_pitch.items() if len(instruments) >= 2)
    rng.shuffle(pitches)
    queues = {}
    for pitch in pitches:
        names = sorted(by_pitch[pitch])
        rng.shuffle(names)
        queues[pitch] = [(by_pitch[pitch][names[i]], by_pitch[pitch][names[i + 1]]) for i in range(0, len(names) - 1, 2)]
    pairs: list[tuple[int, int]] = []
    for round_ in range(max((len(queue) for queue in queues.values()), default=0)):
        pairs += [queues[pitch][round_] for pitch in pitches if round_ < len(queues[pitch])]
    return pairs[:count]


# ---------------------------------------------------------------------------------- models


def untrained_model(model: TimbreModel, seed: int = 0) -> TimbreModel:
    """A model of the same config as ``model`` with freshly initialised (seeded) weights."""
    checkpoint = load_checkpoint(model.info["path"])
    # fork_rng: seeding must not change the random state of the caller.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        autoencoder = build_model(checkpoint["model_config"], checkpoint["path"])
    return TimbreModel(autoencoder, name=f"untrained ({model.name})", info={"seed": seed}, device=str(model.device))


def decode_notes(
    model: TimbreModel,
    embeddings: Sequence[Embedding],
    pitches: Sequence[int],
    samples: int,
    batch_size: int = 16,
    seed: int = 0,
    temperature: float = 1.0,
    progress: bool = False,
) -> np.ndarray:
    """Decode embeddings at their pitches, ``batch_size`` notes per decoder pass.

    Returns:
        ``[notes, samples]`` float32, each note cut or zero-padded to ``samples``.
    """
    audio = np.zeros((len(embeddings), samples), dtype=np.float32)
    for start in range(0, len(embeddings), batch_size):
        stop = start + batch_size
        decoded = model.synthesize_batch(
            embeddings[start:stop], pitches[start:stop], temperature=temperature, seed=seed, progress=progress
        )
        length = min(samples, decoded.shape[1])
        audio[start:stop, :length] = decoded[:, :length]
    return audio


def reconstruct(
    model: TimbreModel,
    audio: np.ndarray,
    pitches: Sequence[int],
    batch_size: int = 16,
    seed: int = 0,
    temperature: float = 1.0,
    progress: bool = False,
) -> np.ndarray:
    """Encode each note ``audio [notes, samples]`` and decode it at its pitch; returns ``[notes, samples]``."""
    embeddings = [model.encode(note, pitch=int(pitch)) for note, pitch in zip(audio, pitches)]
    return decode_notes(model, embeddings, pitches, audio.shape[1], batch_size, seed, temperature, progress)


# ---------------------------------------------------------------------------------- evaluation


def _load_notes(dataset: NoteDataset, indices: Sequence[int], samples: int | None) -> np.ndarray:
    """``[notes, samples]``: the first ``samples`` of each note (None: the longest note's length),
    zero-padded when shorter."""
    notes = [dataset[index]["audio"].numpy() for index in indices]
    samples = samples or max(note.shape[0] for note in notes)
    audio = np.zeros((len(notes), samples), dtype=np.float32)
    for row, note in enumerate(notes):
        audio[row, : min(samples, note.shape[0])] = note[:samples]
    return audio


def _pitch_summary(scores: Sequence[PitchScore]) -> dict[str, Any]:
    sounding = [score for score in scores if score.sounding_fraction > 0]
    return {
        "accuracy": float(np.mean([score.correct for score in scores])),
        "sounding_notes": len(sounding) / len(scores),
        "frames_within": float(np.mean([score.frames_within for score in sounding])) if sounding else None,
        "median_abs_cents": float(np.median([abs(score.cents) for score in sounding])) if sounding else None,
    }


def _distance_summary(distances: np.ndarray) -> dict[str, float]:
    return {"mean": float(distances.mean()), "std": float(distances.std()), "median": float(np.median(distances))}


def _json_ready(value: Any) -> Any:
    """Numbers and containers as plain JSON: NaN and infinity become null."""
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _command(settings: dict[str, Any]) -> str:
    """The ``timbre evaluate autoencoder`` command line that repeats this run."""
    words = ["timbre", "evaluate", "autoencoder"]
    for key, value in settings.items():
        if value is None or key == "progress":
            continue
        if key == "pitch_range":
            key, value = "pitches", f"{value[0]}-{value[1]}"
        words += [f"--{key.replace('_', '-')}", str(value)]
    return shlex.join(words)


def evaluate_autoencoder(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    split: str = "test",
    notes: int = 64,
    seed: int = 0,
    baseline: str = "untrained",
    sweeps: int = 4,
    steps: int = 7,
    seconds: float | None = None,
    pitch_range: tuple[int, int] | None = None,
    batch_size: int = 16,
    temperature: float = 1.0,
    examples: int = 4,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate an autoencoder on one split of an NSynth-layout dataset; write the report files.

    Args:
        model: a bundled model name or a checkpoint file or run directory (see :func:`timbre.load`).
        data: dataset root or split directory.
        out_dir: where the report goes (created).
        split: which split; ``test`` and ``valid`` hold instruments unseen in training.
        notes: how many notes to reconstruct.
        seed: picks the notes and pairs, the baseline's weights and the decoders' noise.
        baseline: ``"untrained"`` (score an untrained model of the same config too) or ``"none"``.
        sweeps: interpolation sweeps (pairs of instruments); 0 for none.
        steps: steps per sweep, the endpoints included.
        seconds: evaluate only the first ``seconds`` of every note (None: whole notes).
        pitch_range: ``(lowest, highest)`` MIDI pitches to draw notes from.
        batch_size: notes per decoder pass.
        temperature: sampling temperature of an autoregressive decoder.
        examples: notes and sweeps drawn in the pictures.
        device: where the models run (the pitch tracker runs on the CPU).
        progress: show progress bars while decoding autoregressively.

    Returns:
        The report written to ``report.json``.
    """
    settings = dict(
        model=str(model), data=str(data), split=split, notes=notes, seed=seed, baseline=baseline, sweeps=sweeps,
        steps=steps, seconds=seconds, pitch_range=pitch_range, batch_size=batch_size, temperature=temperature,
        examples=examples, device=device, progress=progress,
    )  # fmt: skip
    _check_settings(settings)
    out_dir = Path(out_dir)
    trained = load(model, device=device)
    dataset = NoteDataset(data, split, pitch_range=pitch_range, sample_rate=trained.sample_rate)
    sample_rate = trained.sample_rate
    timings: dict[str, float] = {}

    # Reconstruction.
    indices = select_notes(dataset.examples, notes, seed)
    inputs = _load_notes(dataset, indices, None if seconds is None else max(1, round(seconds * sample_rate)))
    samples = inputs.shape[1]
    pitches = [int(dataset.examples[i]["pitch"]) for i in indices]
    options = dict(batch_size=batch_size, seed=seed, temperature=temperature, progress=progress)
    started = time.perf_counter()
    outputs = {"model": reconstruct(trained, inputs, pitches, **options)}
    timings["reconstruction_seconds"] = time.perf_counter() - started
    if baseline == "untrained":
        started = time.perf_counter()
        outputs["untrained"] = reconstruct(untrained_model(trained, seed), inputs, pitches, **options)
        timings["untrained_reconstruction_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    distances = {name: multiscale_spectral_distance(audio, inputs) for name, audio in outputs.items()}
    scores = {name: pitch_scores(audio, pitches, sample_rate) for name, audio in {"input": inputs, **outputs}.items()}
    timings["scoring_seconds"] = time.perf_counter() - started
    reconstruction = _reconstruction_report(dataset, indices, distances, scores)

    # Interpolation.
    pairs = select_sweep_pairs(dataset.examples, sweeps, seed)
    started = time.perf_counter()
    sweep_audio, sweep_report = _interpolation(trained, dataset, pairs, steps, samples, options)
    timings["interpolation_seconds"] = time.perf_counter() - started

    audio_seconds = len(indices) * samples / sample_rate
    timings["reconstruction_times_real_time"] = audio_seconds / timings["reconstruction_seconds"]
    model_report = {
        "name": trained.name,
        "path": trained.info.get("path"),
        "decoder": trained.decoder_kind,
        "parameters": sum(parameter.numel() for parameter in trained.autoencoder.parameters()),
        "step": trained.info.get("step"),
        "sample_rate": sample_rate,
        "info": trained.info,
    }
    report = {
        "command": _command(settings),
        "timbre_version": __version__,
        "model": model_report,
        "data": {
            "split_dir": str(dataset.split_dir),
            "split": split,
            "held_out": split != "train",
            "notes_in_split": len(dataset),
            "instruments_in_split": len(dataset.instruments),
            "notes": len(indices),
            "instruments": sorted({dataset.examples[i]["instrument_str"] for i in indices}),
            "seconds_per_note": samples / sample_rate,
        },
        "settings": {
            **{key: value for key, value in settings.items() if key not in ("model", "data", "progress")},
            "spectral_distance": (
                "auraloss MultiResolutionSTFTLoss: mean over FFT sizes "
                f"{', '.join(map(str, MSS_FFT_SIZES))} (hop size/4, Hann window of the size) of "
                "L1(log magnitude) + L1(linear magnitude)"
            ),
            "pitch_tracker": f"PESTO {PESTO_MODEL} (pesto-pitch), {PESTO_STEP_MS:g} ms frames",
            "sounding_frames": (
                f"frames within {LOUDNESS_RANGE_DB:g} dB of the note's loudest "
                f"(RMS over {1000 * LOUDNESS_WINDOW / sample_rate:g} ms), "
                f"if that is above {SILENCE_DBFS:g} dBFS"
            ),
            "tolerance_cents": TOLERANCE_CENTS,
            "smoothness_tolerance": SMOOTHNESS_TOLERANCE,
        },
        "reconstruction": reconstruction,
        "interpolation": sweep_report,
        "targets": _targets(reconstruction),
        "timings": timings,
    }
    report = _json_ready(report)
    _write_pictures(out_dir, dataset, indices, inputs, outputs, scores, sweep_audio, examples, sample_rate)
    with atomic_write(out_dir / REPORT_JSON, "w") as file:
        json.dump(report, file, indent=2, allow_nan=False)
    with atomic_write(out_dir / REPORT_MARKDOWN, "w") as file:
        file.write(markdown_report(report))
    return report


def _check_settings(settings: dict[str, Any]) -> None:
    positive = {"notes": 1, "steps": 2, "batch_size": 1, "sweeps": 0, "examples": 0}
    for name, lowest in positive.items():
        if settings[name] < lowest:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least {lowest}, got {settings[name]}")
    if settings["baseline"] not in BASELINES:
        raise ConfigError(f"--baseline must be one of {', '.join(BASELINES)}, got {settings['baseline']!r}")
    seconds = settings["seconds"]
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"--seconds must be a positive number, got {seconds}")
    if not settings["temperature"] >= 0:
        raise ConfigError(f"--temperature must be >= 0, got {settings['temperature']}")


def _reconstruction_report(
    dataset: NoteDataset,
    indices: Sequence[int],
    distances: dict[str, np.ndarray],
    scores: dict[str, list[PitchScore]],
) -> dict[str, Any]:
    per_note = []
    for row, index in enumerate(indices):
        example = dataset.examples[index]
        per_note.append({
            "note": example["note_str"],
            "instrument": example["instrument_str"],
            "pitch": int(example["pitch"]),
            "velocity": int(example["velocity"]),
            "spectral_distance": {name: float(values[row]) for name, values in distances.items()},
            "pitch_score": {name: asdict(values[row]) for name, values in scores.items()},
        })  # fmt: skip
    summary: dict[str, Any] = {
        name: {"spectral_distance": _distance_summary(distances[name]) if name in distances else None,
               "pitch": _pitch_summary(values)}
        for name, values in scores.items()
    }  # fmt: skip
    # The ceiling, note by note: how often the model keeps the pitch where the tracker hears it in the input.
    heard = [row for row, score in enumerate(scores["input"]) if score.correct]
    summary["model"]["pitch"]["accuracy_where_input_correct"] = (
        float(np.mean([scores["model"][row].correct for row in heard])) if heard else None
    )
    if "untrained" in distances:
        summary["spectral_distance_ratio_to_untrained"] = float(distances["model"].mean() / distances["untrained"].mean())
    by_instrument = []
    for name in sorted({note["instrument"] for note in per_note}):
        rows = [row for row, note in enumerate(per_note) if note["instrument"] == name]
        by_instrument.append({
            "instrument": name,
            "notes": len(rows),
            "spectral_distance": float(distances["model"][rows].mean()),
            "pitch_accuracy": float(np.mean([scores["model"][row].correct for row in rows])),
            "input_pitch_accuracy": float(np.mean([scores["input"][row].correct for row in rows])),
        })  # fmt: skip
    return {"summary": summary, "by_instrument": by_instrument, "notes": per_note}


def _interpolation(
    model: TimbreModel,
    dataset: NoteDataset,
    pairs: Sequence[tuple[int, int]],
    steps: int,
    samples: int,
    options: dict[str, Any],
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode every sweep; returns ``(audio [sweeps, steps, samples], report)``."""
    mix = np.linspace(0.0, 1.0, steps)
    report: dict[str, Any] = {"method": "slerp", "steps": steps, "t": mix.tolist(), "sweeps_found": len(pairs)}
    if not pairs:
        report["note"] = "the split has no pitch played by two instruments: no sweeps"
        return np.zeros((0, steps, samples), dtype=np.float32), report
    endpoints = _load_notes(dataset, [index for pair in pairs for index in pair], samples)
    pitches = [int(dataset.examples[a]["pitch"]) for a, _ in pairs]
    embeddings, step_pitches = [], []
    for (a, b), pitch, note_a, note_b in zip(pairs, pitches, endpoints[0::2], endpoints[1::2]):
        z_a, z_b = model.encode(note_a, pitch=pitch), model.encode(note_b, pitch=pitch)
        mixed = slerp(z_a.tensor, z_b.tensor, torch.tensor(mix, dtype=torch.float32)[:, None])  # [steps, frames, dim]
        embeddings += [z_a.with_tensor(tensor, source=f"slerp t={t:.3f}") for tensor, t in zip(mixed, mix)]
        step_pitches += [pitch] * steps
    audio = decode_notes(model, embeddings, step_pitches, samples, **options)
    scores = pitch_scores(audio, step_pitches, model.sample_rate)
    endpoint_scores = pitch_scores(endpoints, [pitch for pitch in pitches for _ in range(2)], model.sample_rate)
    centroids = spectral_centroid(audio, model.sample_rate).reshape(len(pairs), steps)
    sweeps = []
    for k, ((a, b), pitch) in enumerate(zip(pairs, pitches)):
        sweep_scores = scores[k * steps : (k + 1) * steps]
        record: dict[str, Any] = {
            "a": dataset.examples[a]["note_str"],
            "b": dataset.examples[b]["note_str"],
            "pitch": pitch,
            "input_pitch_correct": [endpoint_scores[2 * k].correct, endpoint_scores[2 * k + 1].correct],
            "pitch_cents": [score.cents for score in sweep_scores],
            "pitch_correct": [score.correct for score in sweep_scores],
            "pitch_kept": float(np.mean([score.correct for score in sweep_scores])),
            "centroid_hz": centroids[k].tolist(),
        }
        if np.isfinite(centroids[k]).all():
            record.update(asdict(sweep_smoothness(centroids[k], SMOOTHNESS_TOLERANCE)))
        sweeps.append(record)
    smooth = [sweep for sweep in sweeps if "reversals" in sweep]
    jumps = [sweep["max_jump_ratio"] for sweep in smooth if math.isfinite(sweep["max_jump_ratio"])]
    report["summary"] = {
        "sweeps": len(sweeps),
        "pitch_kept_steps": float(np.mean([score.correct for score in scores])),
        "sweeps_keeping_pitch_at_every_step": sum(all(sweep["pitch_correct"]) for sweep in sweeps),
        "sweeps_without_reversal": sum(sweep["reversals"] == 0 for sweep in smooth),
        "sweeps_within_endpoints": sum(sweep["within_endpoints"] for sweep in smooth),
        "sweeps_silent_somewhere": len(sweeps) - len(smooth),
        "mean_reversals": float(np.mean([sweep["reversals"] for sweep in smooth])) if smooth else None,
        "median_max_jump_ratio": float(np.median(jumps)) if jumps else None,
        "even_jump_ratio": 1.0 / (steps - 1),
    }
    report["sweeps"] = sweeps
    return audio.reshape(len(pairs), steps, samples), report


def _targets(reconstruction: dict[str, Any]) -> dict[str, Any]:
    summary = reconstruction["summary"]
    accuracy = summary["model"]["pitch"]["accuracy"]
    return {
        "pitch_accuracy": {"target": PITCH_ACCURACY_TARGET, "value": accuracy, "met": accuracy >= PITCH_ACCURACY_TARGET},
        "spectral_distance_ratio_to_untrained": summary.get("spectral_distance_ratio_to_untrained"),
    }


# ---------------------------------------------------------------------------------- pictures


def _example_rows(count: int, examples: int) -> list[int]:
    """Up to ``examples`` rows spread evenly over ``count``."""
    return sorted({round(x) for x in np.linspace(0, count - 1, min(examples, count))}) if count else []


def _write_pictures(
    out_dir: Path,
    dataset: NoteDataset,
    indices: Sequence[int],
    inputs: np.ndarray,
    outputs: dict[str, np.ndarray],
    scores: dict[str, list[PitchScore]],
    sweep_audio: np.ndarray,
    examples: int,
    sample_rate: int,
) -> None:
    """Rainbowgram sheets and audio of ``examples`` notes and sweeps, and the pitch-error histogram."""
    audio_dir = out_dir / "audio"
    rows = _example_rows(len(indices), examples)
    if rows:
        sheet = [[inputs[row], *(audio[row] for audio in outputs.values())] for row in rows]
        plots.plot_grid(sheet, out_dir / "reconstructions.png", sample_rate)
        for row in rows:
            note = dataset.examples[indices[row]]["note_str"]
            save_wav(audio_dir / f"{note}_input.wav", inputs[row], sample_rate)
            for name, audio in outputs.items():
                save_wav(audio_dir / f"{note}_{name}.wav", audio[row], sample_rate)
    sweep_rows = _example_rows(len(sweep_audio), examples)
    if sweep_rows:
        plots.plot_grid([list(sweep_audio[k]) for k in sweep_rows], out_dir / "sweeps.png", sample_rate)
        for k in sweep_rows:
            for step, audio in enumerate(sweep_audio[k]):
                save_wav(audio_dir / f"sweep_{k:02d}_step_{step}.wav", audio, sample_rate)
    _plot_pitch_errors(scores, out_dir / "pitch_errors.png")


def _plot_pitch_errors(scores: dict[str, list[PitchScore]], path: Path, limit: float = 600.0) -> None:
    """Histogram of per-note pitch errors in cents, clipped to ``±limit`` (the edge bins collect the rest)."""
    figure = Figure(figsize=(8, 4), dpi=plots.DPI, layout="constrained")
    ax = figure.add_subplot()
    # Bins centred on multiples of 25 cents, so that exact pitches do not sit on a bin edge.
    bins = np.arange(-limit - 12.5, limit + 13.0, 25.0)
    for width, (name, values) in zip((3.0, 2.0, 1.0), scores.items()):
        cents = np.array([score.cents for score in values if math.isfinite(score.cents)])
        silent = len(values) - cents.size
        label = f"{name} ({silent} silent)" if silent else name
        ax.hist(np.clip(cents, -limit, limit), bins=bins, histtype="step", linewidth=width, label=label)
    for edge in (-TOLERANCE_CENTS, TOLERANCE_CENTS):
        ax.axvline(edge, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("median pitch error of the note's sounding frames (cents, clipped)")
    ax.set_ylabel("notes")
    ax.legend()
    with atomic_write(path) as file:
        figure.savefig(file, format="png", dpi=plots.DPI)


# ---------------------------------------------------------------------------------- text


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


ROW_NAMES = {"model": "model", "untrained": "untrained model (same config)", "input": "input notes (ceiling)"}


def _reconstruction_rows(report: dict[str, Any]) -> list[list[str]]:
    summary = report["reconstruction"]["summary"]
    rows = []
    for name in ("model", "untrained", "input"):
        if name not in summary:
            continue
        distance, pitch = summary[name]["spectral_distance"], summary[name]["pitch"]
        rows.append([
            ROW_NAMES[name],
            "0 (reference)" if distance is None else f"{distance['mean']:.3f} ± {distance['std']:.3f}",
            _percent(pitch["accuracy"]),
            _percent(pitch["frames_within"]),
            _number(pitch["median_abs_cents"], 1),
            _percent(pitch["sounding_notes"]),
        ])  # fmt: skip
    return rows


RECONSTRUCTION_HEADER = [
    "", "spectral distance (mean ± std)", "pitch accuracy (≤50 cents)", "sounding frames ≤50 cents",
    "median |error| (cents)", "notes not silent",
]  # fmt: skip


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def summary_table(report: dict[str, Any]) -> str:
    """A few lines for the terminal: the reconstruction table and the interpolation summary."""
    rows = [RECONSTRUCTION_HEADER[:4]] + [row[:4] for row in _reconstruction_rows(report)]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    data, interpolation = report["data"], report["interpolation"]
    lines.insert(0, f"{data['notes']} notes of {len(data['instruments'])} instruments ({data['split']} split), "
                    f"{data['seconds_per_note']:.2f} s each")  # fmt: skip
    if "summary" in interpolation:
        sweeps = interpolation["summary"]
        lines.append(
            f"interpolation: {sweeps['sweeps']} sweep(s) x {interpolation['steps']} steps; pitch kept at "
            f"{_percent(sweeps['pitch_kept_steps'])} of steps; {sweeps['sweeps_without_reversal']} of "
            f"{sweeps['sweeps']} sweeps' spectral centroids without reversal"
        )
    else:
        lines.append(f"interpolation: {interpolation['note']}")
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    """The Markdown report: tables of :func:`evaluate_autoencoder`'s results and its pictures."""
    model, data, settings = report["model"], report["data"], report["settings"]
    reconstruction, interpolation = report["reconstruction"], report["interpolation"]
    summary = reconstruction["summary"]
    lines = [
        f"# Autoencoder evaluation: {model['name']}",
        "",
        f"Command: `{report['command']}` (timbre {report['timbre_version']})",
        "",
        f"- Model: `{model['path']}`, {model['decoder']} decoder, {model['parameters']:,} parameters, "
        f"training step {model['step'] if model['step'] is not None else 'unknown'}.",
        f"- Data: `{data['split_dir']}` ({data['split']} split: "
        f"{'instruments unseen in training' if data['held_out'] else 'TRAINING instruments, not held out'}), "
        f"{data['notes']} of its {data['notes_in_split']} notes from {len(data['instruments'])} of its "
        f"{data['instruments_in_split']} instruments, the first {data['seconds_per_note']:.2f} s of each.",
        f"- Spectral distance: {settings['spectral_distance']}. 0 for identical audio.",
        f"- Pitch: {settings['pitch_tracker']}; a note is correct when the median pitch of its sounding frames "
        f"({settings['sounding_frames']}) is within {settings['tolerance_cents']:g} cents of its MIDI pitch "
        f"(a silent note is not correct).",
        "",
        "## Reconstruction",
        "",
        _table(RECONSTRUCTION_HEADER, _reconstruction_rows(report)),
        "",
        f"Pitch accuracy of the reconstructions of the notes whose input the tracker hears correctly: "
        f"{_percent(summary['model']['pitch']['accuracy_where_input_correct'])}.",
    ]
    targets = report["targets"]
    pitch_target = targets["pitch_accuracy"]
    lines.append(
        f"Target pitch accuracy ≥ {_percent(pitch_target['target'])}: "
        f"**{'met' if pitch_target['met'] else 'not met'}** ({_percent(pitch_target['value'])})."
    )
    if model["decoder"] == "fast":
        lines.append(
            "The fast decoder's oscillators run at the MIDI pitch by construction, so even an untrained one "
            "scores high on pitch; what it learns shows in the spectral distance."
        )
    if targets["spectral_distance_ratio_to_untrained"] is not None:
        lines.append(
            f"Spectral distance of the trained model relative to the untrained one: "
            f"{targets['spectral_distance_ratio_to_untrained']:.3f}."
        )
    lines += ["", "### By instrument", ""]
    lines.append(_table(
        ["instrument", "notes", "spectral distance", "pitch accuracy", "input pitch accuracy"],
        [[row["instrument"], str(row["notes"]), f"{row['spectral_distance']:.3f}", _percent(row["pitch_accuracy"]),
          _percent(row["input_pitch_accuracy"])] for row in reconstruction["by_instrument"]],
    ))  # fmt: skip
    pictured = [reconstruction["notes"][row]["note"] for row in _example_rows(data["notes"], settings["examples"])]
    columns = "input | " + " | ".join(ROW_NAMES[name] for name in ("model", "untrained") if name in summary)
    if pictured:
        lines += [
            "",
            "![rainbowgrams of input and reconstructions](reconstructions.png)",
            "",
            f"Rows: {', '.join(pictured)}. Columns: {columns}. Audio in `audio/`.",
        ]
    lines += ["", "![per-note pitch errors](pitch_errors.png)", "", "## Interpolation", ""]
    if "summary" not in interpolation:
        lines.append(interpolation["note"].capitalize() + ".")
        return "\n".join(lines) + "\n"
    sweeps = interpolation["summary"]
    lines += [
        f"{sweeps['sweeps']} sweeps between two instruments at one pitch, {interpolation['method']} in "
        f"{interpolation['steps']} steps (t = {', '.join(f'{t:.2f}' for t in interpolation['t'])}), "
        f"every step decoded at that pitch.",
        "",
        f"- Pitch kept (≤{settings['tolerance_cents']:g} cents) at {_percent(sweeps['pitch_kept_steps'])} of "
        f"all steps; {sweeps['sweeps_keeping_pitch_at_every_step']} of {sweeps['sweeps']} sweeps keep it at every step.",
        f"- Spectral centroid: {sweeps['sweeps_without_reversal']} of {sweeps['sweeps']} sweeps move from one "
        f"endpoint towards the other without reversing (reversals smaller than "
        f"{_percent(settings['smoothness_tolerance'])} of the endpoints' difference ignored); "
        f"{sweeps['sweeps_within_endpoints']} stay between the endpoints; median largest step "
        f"{_number(sweeps['median_max_jump_ratio'], 2)} of the endpoints' difference (even steps: "
        f"{sweeps['even_jump_ratio']:.2f}).",
        "",
    ]
    rows = []
    for k, sweep in enumerate(interpolation["sweeps"]):
        rows.append([
            str(k), sweep["a"], sweep["b"], str(sweep["pitch"]),
            f"{sum(sweep['pitch_correct'])}/{len(sweep['pitch_correct'])}",
            " → ".join(_number(value, 0) for value in sweep["centroid_hz"]),
            _number(sweep.get("endpoint_difference"), 0),
            str(sweep.get("reversals", "n/a")), _number(sweep.get("max_jump_ratio"), 2),
        ])  # fmt: skip
    lines.append(_table(
        ["sweep", "from", "to", "pitch", "steps at pitch", "spectral centroid per step (Hz)",
         "endpoint difference (Hz)", "reversals",
         "largest step / endpoint difference"],
        rows,
    ))  # fmt: skip
    pictured_sweeps = _example_rows(sweeps["sweeps"], settings["examples"])
    if pictured_sweeps:
        lines += [
            "",
            "![rainbowgrams of interpolation sweeps](sweeps.png)",
            "",
            f"Rows: sweeps {', '.join(map(str, pictured_sweeps))}; columns: t = 0 ... 1. Audio in `audio/`.",
        ]
    return "\n".join(lines) + "\n"
