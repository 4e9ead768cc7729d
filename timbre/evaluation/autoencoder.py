"""``timbre evaluate autoencoder``: how faithfully a model brings notes back, beside two baselines.

The notes come from any folder (:mod:`timbre.evaluation.notes`): an NSynth split of instruments
held out in training, or notes rendered from a soundfont the model never heard (the standard set:
:mod:`timbre.evaluation.testset`). Each note is encoded and decoded at its pitch by the model, by
a fixed embedding and by an untrained model of the same config (:mod:`timbre.evaluation.scoring`),
and scored by timbre identification, multi-scale spectral distance, loudness-envelope error and,
where asked, PESTO pitch (:mod:`timbre.evaluation.metrics`). Interpolation sweeps between two
instruments at one pitch check that the pitch holds and the spectral centroid moves smoothly.

All notes are evaluated at one length: ``seconds`` when given (the first seconds of each note, for
slow autoregressive decoders), otherwise the longest note's; shorter notes are zero-padded.

Output in ``out_dir`` (one writer: :func:`timbre.evaluation.report.write_report`): ``report.json``
(every number, the settings, the model and the data, the equivalent command), ``report.md``,
``rainbowgrams.png`` (original and every reconstruction of one note per instrument, at the pitch
nearest middle C), ``sweeps.png``, ``pitch_errors.png`` (when pitch is tracked) and the pictured
notes' audio in ``audio/``.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from timbre import __version__, plots
from timbre.embedding import Embedding
from timbre.errors import ConfigError, DatasetError
from timbre.evaluation.metrics import (
    HELD_SECONDS,
    LOUDNESS_FLOOR_DBFS,
    LOUDNESS_HOP,
    LOUDNESS_RANGE_DB,
    LOUDNESS_WINDOW,
    MSS_FFT_SIZES,
    PESTO_MODEL,
    PESTO_STEP_MS,
    SILENCE_DBFS,
    TOLERANCE_CENTS,
)
from timbre.evaluation.notes import (
    Note,
    NoteFolder,
    load_notes,
    read_note_folder,
    select_notes,
    select_sweep_pairs,
)
from timbre.evaluation.report import markdown_table, number, percent, write_report
from timbre.evaluation.scoring import (
    BASELINES,
    FIXED_EMBEDDING,
    MODEL,
    ORIGINAL,
    SMOOTHNESS_TOLERANCE,
    UNTRAINED,
    SystemScores,
    decode_notes,
    mean_embedding,
    run_sweeps,
    score_systems,
    sweep_summary,
    untrained_model,
)
from timbre.evaluation.testset import RECIPE_FILE
from timbre.hub import load
from timbre.io.audio import save_wav
from timbre.synthesizer import TimbreModel

REPORT_STEM = "report"
# What ``track_pitch`` may say: whose pitch PESTO judges.
PITCH_TRACKING = {"all": None, "model": (ORIGINAL, MODEL), "none": ()}
# How each note is encoded: told its labelled pitch, or told nothing (the pitch heard, where needed).
ENCODE_PITCH = ("given", "heard")
# The targets of the high-fidelity default model (issue 13), on 24 GM programs x 5 pitches of TimGM6mb.
TARGETS = {"top1": 0.60, "top3": 0.85, "spectral_distance": 1.0, "pitch_accuracy": 0.98}
# The row of the notes of ``reference`` (another soundfont's rendering of the same programs).
REFERENCE = "reference"
SYSTEM_NAMES = {
    ORIGINAL: "the original notes",
    MODEL: "model",
    FIXED_EMBEDDING: "every note from one fixed embedding (the mean)",
    UNTRAINED: "untrained model (same config, seeded)",
    REFERENCE: "the same instruments from the reference folder (not a model)",
}
COLUMN_NAMES = {
    ORIGINAL: "original",
    MODEL: "model",
    FIXED_EMBEDDING: "fixed embedding",
    UNTRAINED: "untrained",
    REFERENCE: "reference",
}
# The sheet shows each instrument at the pitch nearest to this.
SHEET_PITCH = 60


def evaluate_autoencoder(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    *,
    split: str | None = None,
    notes: int | None = None,
    seed: int = 0,
    baselines: Sequence[str] = BASELINES,
    track_pitch: str = "model",
    sweeps: int = 4,
    steps: int = 7,
    seconds: float | None = None,
    pitch_range: tuple[int, int] | None = None,
    batch_size: int | None = None,
    temperature: float | None = None,
    clock_gain: float | None = None,
    device: str = "cpu",
    progress: bool = False,
    reference: str | Path | None = None,
    refine: int | None = None,
    encode_pitch: str = "given",
) -> dict[str, Any]:
    """Evaluate an autoencoder on a folder of notes; write the report files.

    Args:
        model: a bundled model name or a checkpoint file or run directory (see :func:`timbre.load`).
        data: a folder of notes (NSynth split or root, or audio files with the pitch in their names).
        out_dir: where the report goes (created).
        split: the split of an NSynth dataset root (default ``test``).
        notes: at most this many notes, in whole pitch groups (None: one per instrument and pitch).
        seed: picks notes and sweeps, the untrained baseline's weights and the decoders' noise.
        baselines: any of ``"fixed_embedding"`` and ``"untrained"``.
        track_pitch: ``"model"`` (the original notes and the model's), ``"all"`` (the baselines'
            too) or ``"none"``; PESTO costs about 0.3 s per 4 s note.
        sweeps: interpolation sweeps (pairs of instruments at one pitch); 0 for none.
        steps: points per sweep, the endpoints included (at least 2).
        seconds: evaluate only the first ``seconds`` of every note (None: whole notes).
        pitch_range: ``(lowest, highest)`` MIDI pitches to draw notes from.
        batch_size: notes per decoder pass (None: 1 for a parallel decoder, as ``model.synthesize``
            does; 16 for an autoregressive one).
        temperature: sampling temperature of an autoregressive decoder (None: the model's own).
        clock_gain: gain of a WaveNet decoder's pitch clock (None: the model's own; see
            :meth:`timbre.TimbreModel.synthesize`).
        device: where the models run (metrics run on the CPU).
        progress: show progress bars while decoding autoregressively.
        reference: a folder holding the same notes (same names) from another source, scored as
            if they were reconstructions: e.g. the test set rendered from another soundfont
            (``timbre evaluate build-testset --soundfont ...``) says how often another maker's
            version of each instrument is identified as that instrument.
        refine: refinement steps of the model's encoding (``model.encode(..., refine=N)``; None:
            the model's own, :attr:`timbre.TimbreModel.default_refine`); the baselines are encoded
            without.
        encode_pitch: ``"given"``: each note is encoded told its labelled pitch (``encode(file,
            pitch=p)``); ``"heard"``: told nothing (``encode(file)``), so that a model that needs the
            pitch hears it, as a user's call without one does.

    Returns:
        The report written to ``report.json``.
    """
    settings = {
        "model": str(model), "data": str(data), "split": split, "notes": notes, "seed": seed,
        "baselines": list(baselines), "track_pitch": track_pitch, "sweeps": sweeps, "steps": steps,
        "seconds": seconds, "pitch_range": pitch_range, "batch_size": batch_size, "temperature": temperature,
        "clock_gain": clock_gain, "device": device, "reference": None if reference is None else str(reference),
        "refine": refine, "encode_pitch": encode_pitch,
    }  # fmt: skip
    _check_settings(settings)
    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    trained = load(model, device=device)
    if temperature is None:  # the report records the temperature and clock gain used
        temperature = settings["temperature"] = trained.default_temperature
    if clock_gain is not None and not trained.has_pitch_clock:
        raise ConfigError(f"model {model}: a clock gain applies to WaveNet decoders with a pitch clock only")
    if clock_gain is None and trained.has_pitch_clock:
        clock_gain = settings["clock_gain"] = trained.default_clock_gain
    if refine is None:  # recorded, so that the report's command repeats it with any model
        refine = settings["refine"] = trained.default_refine
    sample_rate = trained.sample_rate
    folder = read_note_folder(data, split, pitch_range)
    chosen = [folder.notes[index] for index in select_notes(folder.notes, notes, seed)]
    inputs, lengths = load_notes(chosen, sample_rate, None if seconds is None else max(1, round(seconds * sample_rate)))
    samples = inputs.shape[1]
    pitches = [note.pitch for note in chosen]
    decode_options: dict[str, Any] = {
        "batch_size": batch_size or (16 if trained.is_autoregressive else 1),
        "seed": seed,
        "temperature": temperature,
        "progress": progress,
        "clock_gain": clock_gain,
    }

    reference_audio = None if reference is None else _reference_notes(reference, chosen, sample_rate, samples)
    started = time.perf_counter()
    embeddings = _encode(trained, chosen, inputs, lengths, refine, encode_pitch == "given")
    outputs = {MODEL: decode_notes(trained, embeddings, pitches, samples, **decode_options)}
    timings["model_seconds"] = time.perf_counter() - started
    if FIXED_EMBEDDING in baselines:
        started = time.perf_counter()
        fixed = [mean_embedding(embeddings)] * len(chosen)
        outputs[FIXED_EMBEDDING] = decode_notes(trained, fixed, pitches, samples, **decode_options)
        timings["fixed_embedding_seconds"] = time.perf_counter() - started
    if UNTRAINED in baselines:
        started = time.perf_counter()
        untrained = untrained_model(trained, seed)
        untrained_embeddings = _encode(untrained, chosen, inputs, lengths)
        outputs[UNTRAINED] = decode_notes(untrained, untrained_embeddings, pitches, samples, **decode_options)
        timings["untrained_seconds"] = time.perf_counter() - started

    if reference_audio is not None:
        outputs[REFERENCE] = reference_audio
    started = time.perf_counter()
    tracked = PITCH_TRACKING[track_pitch]
    scores = score_systems(
        inputs, outputs, pitches, [note.instrument for note in chosen], sample_rate,
        track_pitch_of=[ORIGINAL, *outputs] if tracked is None else tracked,
    )  # fmt: skip
    timings["scoring_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    pairs = select_sweep_pairs(chosen, sweeps, seed)
    sweep_audio, sweep_records = run_sweeps(
        trained, embeddings, pairs, pitches, steps, samples, decode_options, track_pitch=track_pitch != "none"
    )
    for record in sweep_records:
        record["a"], record["b"] = chosen[record["a"]].name, chosen[record["b"]].name
    timings["interpolation_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    sheet = _sheet_rows(chosen)
    _write_pictures(out_dir, chosen, sheet, inputs, outputs, scores, sweep_audio, sample_rate)
    timings["pictures_seconds"] = time.perf_counter() - started

    report = {
        "command": _command(settings),
        "timbre_version": __version__,
        "model": {**_model_facts(trained), "makeup_db": trained.makeup_applied(clock_gain)},
        "data": _data_facts(folder, chosen, samples / sample_rate),
        "settings": {**settings, **_metric_descriptions(sample_rate)},
        "summary": {name: system.summary() for name, system in scores.items()},
        "targets": _targets(scores[MODEL].summary()),
        "by_instrument": _by_instrument(chosen, scores),
        "reference": None if reference is None else _reference_facts(Path(reference)),
        "notes": [
            {
                "note": note.name,
                "instrument": note.instrument,
                "pitch": note.pitch,
                "velocity": note.velocity,
                **{name: system.note(row) for name, system in scores.items()},
            }
            for row, note in enumerate(chosen)
        ],
        "rainbowgram_sheet": [chosen[row].name for row in sheet],
        "interpolation": {
            "method": "slerp",
            "steps": steps,
            "t": np.linspace(0.0, 1.0, steps).tolist(),
            "summary": sweep_summary(sweep_records, steps),
            "sweeps": sweep_records,
        },
        "timings": timings,
    }
    return write_report(out_dir, REPORT_STEM, report, markdown_report(report))


def _reference_notes(folder: str | Path, chosen: Sequence[Note], sample_rate: int, samples: int) -> np.ndarray:
    """``[notes, samples]``: the notes of ``folder`` named as the chosen ones, in their order.

    Raises:
        DatasetError: the folder lacks one of the chosen notes.
    """
    by_name = {note.name: note for note in read_note_folder(folder).notes}
    missing = [note.name for note in chosen if note.name not in by_name]
    if missing:
        raise DatasetError(
            f"{folder}: the reference folder lacks {len(missing)} of the evaluated notes (first: {missing[0]}); "
            "build it with the same recipe (timbre evaluate build-testset)"
        )
    audio, _ = load_notes([by_name[note.name] for note in chosen], sample_rate, samples)
    return audio


def _reference_facts(folder: Path) -> dict[str, Any]:
    recipe = folder / RECIPE_FILE
    return {
        "folder": str(folder),
        "soundfont": json.loads(recipe.read_text()).get("soundfont") if recipe.is_file() else None,
    }


def _check_settings(settings: dict[str, Any]) -> None:
    for name, lowest in {"notes": 1, "steps": 2, "batch_size": 1, "sweeps": 0, "refine": 0}.items():
        if settings[name] is not None and settings[name] < lowest:
            raise ConfigError(f"{name} must be at least {lowest}, got {settings[name]}")
    unknown = sorted(set(settings["baselines"]) - set(BASELINES))
    if unknown:
        raise ConfigError(f"unknown baseline {unknown[0]!r}; known: {', '.join(BASELINES)}")
    if settings["encode_pitch"] not in ENCODE_PITCH:
        raise ConfigError(f"encode_pitch must be one of {', '.join(ENCODE_PITCH)}, got {settings['encode_pitch']!r}")
    if settings["track_pitch"] not in PITCH_TRACKING:
        raise ConfigError(f"track_pitch must be one of {', '.join(PITCH_TRACKING)}, got {settings['track_pitch']!r}")
    seconds = settings["seconds"]
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"seconds must be a positive number, got {seconds}")
    for name in ("temperature", "clock_gain"):
        if settings[name] is not None and not 0 <= settings[name] < math.inf:
            raise ConfigError(f"{name} must be a finite number >= 0, got {settings[name]}")


def _encode(
    model: TimbreModel,
    notes: Sequence[Note],
    inputs: np.ndarray,
    lengths: Sequence[int],
    refine: int = 0,
    pitch_given: bool = True,
) -> list[Embedding]:
    """Each note's embedding; from its file, as a user would, when the note is evaluated whole;
    told the note's pitch when ``pitch_given``."""
    return [
        model.encode(
            note.path if length == inputs.shape[1] else audio,
            pitch=note.pitch if pitch_given else None,
            velocity=note.velocity,
            refine=refine,
        )
        for note, audio, length in tqdm(
            list(zip(notes, inputs, lengths)), desc="refining", unit="note", disable=not refine, leave=False
        )
    ]


def _command(settings: dict[str, Any]) -> str:
    """The ``timbre evaluate autoencoder`` command line that repeats this run."""
    words = ["timbre", "evaluate", "autoencoder"]
    for key, value in settings.items():
        if value is None or (key == "encode_pitch" and value == "given"):
            continue
        if key == "pitch_range":
            key, value = "pitches", f"{value[0]}-{value[1]}"
        elif key == "baselines":
            value = ",".join(value) or "none"
        words += [f"--{key.replace('_', '-')}", str(value)]
    return shlex.join(words)


def _model_facts(model: TimbreModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "path": model.info.get("path"),
        "decoder": model.decoder_kind,
        "parameters": sum(parameter.numel() for parameter in model.autoencoder.parameters()),
        "step": model.info.get("step"),
        "sample_rate": model.sample_rate,
        "info": model.info,
    }


def _data_facts(folder: NoteFolder, chosen: Sequence[Note], seconds: float) -> dict[str, Any]:
    recipe = folder.path / RECIPE_FILE
    return {
        "folder": str(folder.path),
        # How `timbre evaluate build-testset` rendered the folder, when it did.
        "test_set": json.loads(recipe.read_text()) if recipe.is_file() else None,
        "layout": folder.layout,
        "split": folder.split,
        "notes_in_folder": len(folder.notes),
        "instruments_in_folder": len({note.instrument for note in folder.notes}),
        "notes": len(chosen),
        "instruments": sorted({note.instrument for note in chosen}),
        "pitches": sorted({note.pitch for note in chosen}),
        "seconds_per_note": seconds,
    }


def _metric_descriptions(sample_rate: int) -> dict[str, str]:
    return {
        "spectral_distance": (
            "auraloss MultiResolutionSTFTLoss: mean over FFT sizes "
            f"{', '.join(map(str, MSS_FFT_SIZES))} (hop size/4, Hann window of the size) of "
            "L1(log magnitude) + L1(linear magnitude)"
        ),
        "loudness_error": (
            f"mean |difference| in dB of the frame RMS levels ({LOUDNESS_WINDOW}-sample frames every "
            f"{LOUDNESS_HOP} samples, floored at {LOUDNESS_FLOOR_DBFS:g} dBFS) over the frames where either sounds"
        ),
        "identification": (
            f"mean and standard deviation of MFCCs 1-19 over {HELD_SECONDS[0]:g}-{HELD_SECONDS[1]:g} s, "
            "standardised over the original notes; identified when the nearest original note at the same "
            "pitch (Euclidean) is of the note's own instrument"
        ),
        "pitch_tracker": f"PESTO {PESTO_MODEL} (pesto-pitch), {PESTO_STEP_MS:g} ms frames",
        "sounding_frames": (
            f"frames within {LOUDNESS_RANGE_DB:g} dB of the note's loudest "
            f"(RMS over {1000 * LOUDNESS_WINDOW / sample_rate:g} ms), if that is above {SILENCE_DBFS:g} dBFS"
        ),
        "tolerance_cents": f"{TOLERANCE_CENTS:g}",
        "smoothness_tolerance": f"{SMOOTHNESS_TOLERANCE:g}",
    }


def _targets(summary: dict[str, Any]) -> dict[str, Any]:
    identification, pitch = summary["identification"] or {}, summary["pitch"] or {}
    values = {
        "top1": identification.get("top1"),
        "top3": identification.get("top3"),
        "spectral_distance": summary["spectral_distance"]["mean"],
        "pitch_accuracy": pitch.get("accuracy"),
    }
    targets = {}
    for name, target in TARGETS.items():
        value = values[name]
        met = None if value is None else (value <= target if name == "spectral_distance" else value >= target)
        targets[name] = {"target": target, "value": value, "met": met}
    return targets


def _by_instrument(chosen: Sequence[Note], scores: dict[str, SystemScores]) -> list[dict[str, Any]]:
    rows = []
    for instrument in sorted({note.instrument for note in chosen}):
        mine = [row for row, note in enumerate(chosen) if note.instrument == instrument]
        model = scores[MODEL]
        pitch = [model.pitch[row].correct for row in mine] if model.pitch is not None else None
        rows.append({
            "instrument": instrument,
            "notes": len(mine),
            "identified": float(np.mean(model.rank[mine] == 1)),
            "mean_rank": float(model.rank[mine].mean()),
            "spectral_distance": float(model.spectral_distance[mine].mean()),
            "loudness_error_db": float(model.loudness_error_db[mine].mean()),
            "pitch_accuracy": float(np.mean(pitch)) if pitch is not None else None,
        })  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------- pictures


def _sheet_rows(chosen: Sequence[Note]) -> list[int]:
    """One note per instrument, at the pitch nearest :data:`SHEET_PITCH`, in instrument order."""
    rows: dict[str, int] = {}
    for row, note in enumerate(chosen):
        current = rows.get(note.instrument)
        if current is None or abs(note.pitch - SHEET_PITCH) < abs(chosen[current].pitch - SHEET_PITCH):
            rows[note.instrument] = row
    return [rows[name] for name in sorted(rows)]


def _file_name(note: Note) -> str:
    return note.name.replace("/", "__")


def _write_pictures(
    out_dir: Path,
    chosen: Sequence[Note],
    sheet: Sequence[int],
    inputs: np.ndarray,
    outputs: dict[str, np.ndarray],
    scores: dict[str, SystemScores],
    sweep_audio: np.ndarray,
    sample_rate: int,
) -> None:
    """The rainbowgram sheets, the audio of the sheet's notes and sweeps, the pitch-error histogram."""
    audio_dir = out_dir / "audio"
    systems = {ORIGINAL: inputs, **outputs}
    plots.plot_grid(
        [[audio[row] for audio in systems.values()] for row in sheet], out_dir / "rainbowgrams.png", sample_rate,
        row_labels=[f"{chosen[row].instrument} {chosen[row].pitch}" for row in sheet],
        column_labels=[COLUMN_NAMES[name] for name in systems],
    )  # fmt: skip
    for row in sheet:
        for name, audio in systems.items():
            save_wav(audio_dir / f"{_file_name(chosen[row])}_{name}.wav", audio[row], sample_rate)
    if len(sweep_audio):
        plots.plot_grid([list(sweep) for sweep in sweep_audio], out_dir / "sweeps.png", sample_rate)
        for k, sweep in enumerate(sweep_audio):
            for step, audio in enumerate(sweep):
                save_wav(audio_dir / f"sweep_{k:02d}_step_{step}.wav", audio, sample_rate)
    tracked = {COLUMN_NAMES[name]: [score.cents for score in system.pitch]
               for name, system in scores.items() if system.pitch is not None}  # fmt: skip
    if tracked:
        plots.plot_pitch_errors(tracked, out_dir / "pitch_errors.png", TOLERANCE_CENTS)


# ---------------------------------------------------------------------------------- text


def _summary_cells(summary: dict[str, Any]) -> list[str]:
    identification, pitch = summary["identification"], summary["pitch"]
    distance, loudness = summary["spectral_distance"], summary["loudness_error_db"]
    return [
        percent(identification["top1"]) if identification else "n/a",
        percent(identification["top3"]) if identification else "n/a",
        f"{distance['mean']:.3f} ± {distance['std']:.3f}",
        f"{loudness['mean']:.2f} ± {loudness['std']:.2f}",
        f"{summary['loudness_bias_db']['mean']:+.2f}",
        percent(pitch["accuracy"]) if pitch else "not tracked",
    ]


def results_table(report: dict[str, Any]) -> str:
    """The main table of a report: identification, distances and pitch of the originals, the model and
    its baselines. Also what a model card shows."""
    summary = report["summary"]
    model_identification = summary[MODEL]["identification"]
    chance = f" (chance {percent(model_identification['chance_top1'])})" if model_identification else ""
    header = [
        "", f"timbre identification top-1{chance}", "top-3", "multi-scale spectral distance",
        "loudness-envelope error (dB)", "level bias (dB)",
        f"pitch within {report['settings']['tolerance_cents']} cents",
    ]  # fmt: skip
    rows = [[SYSTEM_NAMES[name], *_summary_cells(summary[name])] for name in summary]
    return markdown_table(header, rows)


def summary_table(report: dict[str, Any]) -> str:
    """A few lines for the terminal: the main table and the interpolation summary."""
    data, interpolation = report["data"], report["interpolation"]["summary"]
    header = ["", "top-1", "top-3", "spectral", "loudness dB", "bias dB", "pitch"]
    rows = [header] + [[COLUMN_NAMES[name], *_summary_cells(s)] for name, s in report["summary"].items()]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        (
            f"{data['notes']} notes of {len(data['instruments'])} instruments at {len(data['pitches'])} pitches, "
            f"{data['seconds_per_note']:.2f} s each, from {data['folder']}"
        )
    ]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    if interpolation["sweeps"]:
        kept = interpolation["pitch_kept_steps"]
        lines.append(
            f"interpolation: {interpolation['sweeps']} sweep(s) x {report['interpolation']['steps']} steps; "
            + (f"pitch kept at {percent(kept)} of steps; " if kept is not None else "")
            + f"{interpolation['sweeps_without_reversal']} of {interpolation['sweeps']} sweeps' spectral "
            "centroids without reversal"
        )
    else:
        lines.append("interpolation: no pitch is played by two instruments: no sweeps")
    return "\n".join(lines)


def _data_line(data: dict[str, Any]) -> str:
    if data["layout"] == "nsynth" and data["split"] is not None:
        held = "instruments unseen in training" if data["split"] != "train" else "TRAINING instruments, not held out"
        where = f"`{data['folder']}` ({data['split']} split: {held})"
    elif data.get("test_set"):
        where = f"`{data['folder']}` (a test set rendered from `{data['test_set']['soundfont']}`)"
    else:
        where = f"`{data['folder']}` ({'NSynth layout' if data['layout'] == 'nsynth' else data['layout']})"
    return (
        f"- Data: {where}, {data['notes']} of its {data['notes_in_folder']} notes: {len(data['instruments'])} "
        f"instruments at pitches {', '.join(map(str, data['pitches']))}, the first "
        f"{data['seconds_per_note']:.2f} s of each."
    )


def _reference_line(report: dict[str, Any]) -> list[str]:
    reference = report.get("reference")
    if reference is None:
        return []
    source = f", rendered from `{reference['soundfont']}`" if reference.get("soundfont") else ""
    return [
        f"- Reference: the same notes from `{reference['folder']}`{source}, scored as if reconstructions: "
        "how often another maker's version of each instrument is taken for it."
    ]


def markdown_report(report: dict[str, Any]) -> str:
    """The Markdown report: the results of :func:`evaluate_autoencoder` in tables, with its pictures."""
    model, data, settings = report["model"], report["data"], report["settings"]
    lines = [
        f"# Autoencoder evaluation: {model['name']}",
        "",
        f"Command: `{report['command']}` (timbre {report['timbre_version']})",
        "",
        (
            f"- Model: `{model['path']}`, {model['decoder']} decoder, {model['parameters']:,} parameters, "
            f"training step {model['step'] if model['step'] is not None else 'unknown'}"
            + (f"; its make-up gain of {model['makeup_db']:+g} dB applied." if model.get("makeup_db") else ".")
        ),
        _data_line(data),
        *_reference_line(report),
        f"- Timbre identification: {settings['identification']}. Chance: one over the instruments at the pitch.",
        f"- Spectral distance: {settings['spectral_distance']}. 0 for identical audio.",
        f"- Loudness-envelope error: {settings['loudness_error']}. Level bias: the mean of the signed "
        "differences over the same frames (negative: quieter than the original).",
        (
            f"- Pitch: {settings['pitch_tracker']}; a note is correct when the median pitch of its sounding frames "
            f"({settings['sounding_frames']}) is within {settings['tolerance_cents']} cents of its MIDI pitch "
            f"(a silent note is not correct)."
        ),
        "",
        "## Reconstruction",
        "",
        results_table(report),
        "",
    ]
    for name, target in report["targets"].items():
        if target["value"] is None:
            continue
        value = number(target["value"]) if name == "spectral_distance" else percent(target["value"])
        bound = f"≤ {target['target']:g}" if name == "spectral_distance" else f"≥ {percent(target['target'], 0)}"
        lines.append(
            f"- Target {name.replace('_', ' ')} {bound}: **{'met' if target['met'] else 'not met'}** ({value})."
        )
    if model["decoder"] == "fast":
        lines += [
            "",
            (
                "The fast decoder's oscillators run at the MIDI pitch by construction, so even an untrained one "
                "holds the pitch; what it learns shows in identification and the distances."
            ),
        ]
    lines += ["", "### By instrument (model)", ""]
    lines.append(markdown_table(
        ["instrument", "notes", "identified", "mean rank", "spectral distance", "loudness error (dB)", "pitch"],
        [[row["instrument"], str(row["notes"]), percent(row["identified"]), f"{row['mean_rank']:.1f}",
          f"{row['spectral_distance']:.3f}", f"{row['loudness_error_db']:.2f}", percent(row["pitch_accuracy"])]
         for row in report["by_instrument"]],
    ))  # fmt: skip
    columns = " | ".join(COLUMN_NAMES[name] for name in report["summary"])
    lines += [
        "",
        "![rainbowgrams of every instrument: original and reconstructions](rainbowgrams.png)",
        "",
        f"One note per instrument (the pitch nearest {SHEET_PITCH}); columns: {columns}. Audio in `audio/`.",
    ]
    if any(summary["pitch"] for summary in report["summary"].values()):
        lines += ["", "![per-note pitch errors](pitch_errors.png)"]
    lines += ["", "## Interpolation", "", *_interpolation_lines(report)]
    return "\n".join(lines) + "\n"


def _interpolation_lines(report: dict[str, Any]) -> list[str]:
    interpolation = report["interpolation"]
    sweeps, records = interpolation["summary"], interpolation["sweeps"]
    if not records:
        return ["No pitch is played by two instruments: no sweeps."]
    lines = [
        (
            f"{sweeps['sweeps']} sweeps between two instruments at one pitch, {interpolation['method']} in "
            f"{interpolation['steps']} steps (t = {', '.join(f'{t:.2f}' for t in interpolation['t'])}), "
            "every step decoded at that pitch."
        ),
        "",
    ]
    if sweeps["pitch_kept_steps"] is not None:
        lines.append(
            f"- Pitch kept at {percent(sweeps['pitch_kept_steps'])} of all steps; "
            f"{sweeps['sweeps_keeping_pitch_at_every_step']} of {sweeps['sweeps']} sweeps keep it at every step."
        )
    lines += [
        (
            f"- Spectral centroid: {sweeps['sweeps_without_reversal']} of {sweeps['sweeps']} sweeps move from one "
            f"endpoint towards the other without reversing (reversals smaller than "
            f"{percent(float(report['settings']['smoothness_tolerance']))} of the endpoints' difference ignored); "
            f"{sweeps['sweeps_within_endpoints']} stay between the endpoints; median largest step "
            f"{number(sweeps['median_max_jump_ratio'], 2)} of the endpoints' difference (even steps: "
            f"{sweeps['even_jump_ratio']:.2f})."
        ),
        "",
    ]
    rows = [
        [str(k), sweep["a"], sweep["b"], str(sweep["pitch"]),
         f"{sum(sweep['pitch_correct'])}/{len(sweep['pitch_correct'])}" if "pitch_correct" in sweep else "n/a",
         " → ".join(number(value, 0) for value in sweep["centroid_hz"]),
         number(sweep.get("endpoint_difference"), 0), str(sweep.get("reversals", "n/a")),
         number(sweep.get("max_jump_ratio"), 2)]
        for k, sweep in enumerate(records)
    ]  # fmt: skip
    lines.append(markdown_table(
        ["sweep", "from", "to", "pitch", "steps at pitch", "spectral centroid per step (Hz)",
         "endpoint difference (Hz)", "reversals", "largest step / endpoint difference"],
        rows,
    ))  # fmt: skip
    lines += ["", "![rainbowgrams of interpolation sweeps](sweeps.png)", "", "Rows: sweeps; columns: t = 0 ... 1."]
    return lines
