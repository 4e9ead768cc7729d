"""Build an NSynth-layout note dataset from one or several soundfonts (SF2/SF3) with FluidSynth.

NSynth's protocol: every note lasts ``seconds`` (4 s), the key is held for ``hold`` (3 s) and then
released, audio is 16 kHz mono, pitches 21-108, velocities 25/50/75/100/127. Rendering is
:func:`timbre.io.fluidsynth.render_note`. An instrument is one (soundfont, General MIDI program)
pair, labelled with NSynth's family and source by :mod:`timbre.data.families`; the default
programs are the pitched ones, 0-111 (percussive programs, sound effects and drum kits are left
out, as NSynth has no unpitched notes).

Names. With one soundfont, instruments get NSynth's own names (``keyboard_acoustic_000``, numbered
over the 128 GM programs, so a program keeps its name whichever programs are built). With several,
each name starts with its soundfont's short name (:func:`soundfont_name`: the file name's stem in
lower case, e.g. ``fluidr3_gm_keyboard_acoustic_000``), so names stay unique; a note is
``<instrument>-<pitch>-<velocity>`` (``fluidr3_gm_keyboard_acoustic_000-060-100``). Every note
also records ``soundfont`` (the file name) and ``program``.

Fewer notes per instrument. NSynth renders every pitch at every velocity. ``pitch_step=n`` keeps
every n-th pitch of the requested ones, from an offset drawn per instrument, so that together the
instruments still cover every pitch; ``velocities_per_pitch=k`` keeps k of the playable velocities
of each (instrument, pitch), drawn per (instrument, pitch). Both draws hash ``seed`` with the
instrument's name: the same notes in every run and process.

Skipped notes. A note for which the preset has no sample starts no voice: such notes are found
up front, without rendering (:func:`timbre.io.fluidsynth.probe_notes`), and skipped; a note whose
peak stays below -80 dBFS (about 3 LSB of 16-bit audio) counts as silent and is skipped too. The
dataset then holds only notes of each instrument's sounding range.

Splits are by instrument (no instrument appears in two splits), like NSynth. Only instruments
with samples for some requested note take part. They are shuffled with ``seed``; valid gets
``round(valid * n)`` of them and test ``round(test * n)``, but a split with a non-zero fraction
gets at least one instrument as long as one remains for train (valid is served first). So 3
programs with ``valid=test=0.1`` give 1/1/1, 2 programs give 1 train + 1 valid, and 1 program
goes to train.

Resuming and interruptions. Each wav is written atomically (temporary file, then rename), so a
wav that exists with the expected length and rate is complete: a re-run skips it. ``examples.json``
of each split is rewritten atomically when the build starts, every few hundred notes or half
minute, and at the end (also when interrupted), listing exactly the notes of the current run that
are on disk: a build killed at any moment leaves a readable dataset of the notes finished by its
last checkpoint, and a re-run completes it. Notes render in a seeded random order, so an
unfinished build holds a sample of every instrument rather than the first instruments complete.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile
from tqdm.auto import tqdm

from timbre.data.families import DEFAULT_PROGRAMS, NSYNTH_QUALITIES, gm_program, instrument_name
from timbre.data.nsynth import AUDIO_DIR, EXAMPLES_FILE, SPLITS
from timbre.errors import ConfigError, DatasetError
from timbre.io.audio import SAMPLE_RATE, peak_level, save_wav
from timbre.io.files import atomic_write
from timbre.io.fluidsynth import SoundfontError, probe_notes, render_note

__all__ = [
    "DEFAULT_PITCHES", "DEFAULT_VELOCITIES", "BuildSummary", "SoundfontError", "build_dataset",
    "probe_notes", "render_note", "soundfont_name", "split_instruments",
]  # fmt: skip

SILENCE_PEAK = 1e-4  # -80 dBFS
DEFAULT_PITCHES = tuple(range(21, 109))
DEFAULT_VELOCITIES = (25, 50, 75, 100, 127)
# examples.json is rewritten after this many notes or seconds, whichever comes first.
_CHECKPOINT_NOTES = 500
_CHECKPOINT_SECONDS = 30.0
# Starting a worker process (importing torch) costs seconds: small builds render in-process.
_MIN_JOBS_PER_WORKER = 50

SoundfontPath = str | os.PathLike


def soundfont_name(soundfont: SoundfontPath) -> str:
    """Short name of a soundfont: its file name's stem in lower case, other characters as ``_``.

    ``/usr/share/sounds/sf2/FluidR3_GM.sf2`` -> ``fluidr3_gm``, ``OPL-3_FM_128M.sf2`` -> ``opl_3_fm_128m``.
    """
    return re.sub(r"[^a-z0-9]+", "_", Path(soundfont).stem.lower()).strip("_") or "soundfont"


@dataclass(frozen=True)
class _Instrument:
    """One (soundfont, program) pair of a build."""

    soundfont: str
    index: int  # position of the soundfont in the build's list
    program: int
    name: str


def _instruments(soundfonts: Sequence[str], programs: Sequence[int]) -> list[_Instrument]:
    qualify = len(soundfonts) > 1
    return [
        _Instrument(
            soundfont,
            index,
            program,
            f"{soundfont_name(soundfont)}_{instrument_name(program)}" if qualify else instrument_name(program),
        )  # fmt: skip
        for index, soundfont in enumerate(soundfonts)
        for program in programs
    ]


def _draw(seed: int, *key: object) -> random.Random:
    # A string seed is hashed with SHA-512: the same draws in every process, unlike hash().
    return random.Random(":".join(map(str, (seed, *key))))


def _pitch_offset(instrument: _Instrument, pitch_step: int, seed: int) -> int:
    return _draw(seed, instrument.name, "pitch").randrange(pitch_step)


def _chosen_notes(
    instrument: _Instrument, playable: list[tuple[int, int]], velocities_per_pitch: int | None, seed: int
) -> list[tuple[int, int]]:
    """The playable (pitch, velocity) notes kept: all, or ``velocities_per_pitch`` per pitch."""
    if velocities_per_pitch is None:
        return sorted(playable)
    by_pitch: dict[int, list[int]] = {}
    for pitch, velocity in playable:
        by_pitch.setdefault(pitch, []).append(velocity)
    chosen: list[tuple[int, int]] = []
    for pitch, velocities in sorted(by_pitch.items()):
        count = min(velocities_per_pitch, len(velocities))
        picked = _draw(seed, instrument.name, pitch, "velocity").sample(sorted(velocities), count)
        chosen.extend((pitch, velocity) for velocity in sorted(picked))
    return chosen


def split_instruments(names: Sequence[str], valid: float, test: float, seed: int = 0) -> dict[str, str]:
    """Assign whole instruments to splits (see the module docstring for the rule).

    Returns:
        ``{instrument name: "train" | "valid" | "test"}``.
    """
    count = len(names)
    counts = {"valid": round(valid * count), "test": round(test * count)}
    for split, fraction in (("valid", valid), ("test", test)):
        if fraction > 0 and counts[split] == 0 and count - counts["valid"] - counts["test"] > 1:
            counts[split] = 1
    while count > 0 and count - counts["valid"] - counts["test"] < 1:
        counts["test" if counts["test"] else "valid"] -= 1
    shuffled = sorted(names)
    random.Random(seed).shuffle(shuffled)
    assignment = {}
    for position, name in enumerate(shuffled):
        if position < counts["valid"]:
            assignment[name] = "valid"
        elif position < counts["valid"] + counts["test"]:
            assignment[name] = "test"
        else:
            assignment[name] = "train"
    return assignment


@dataclass(frozen=True)
class _NoteJob:
    instrument: _Instrument
    bank: int
    pitch: int
    velocity: int
    seconds: float
    hold: float
    sample_rate: int
    path: str


def _render_job(job: _NoteJob) -> tuple[_NoteJob, bool]:
    """Render one note and write it; returns (job, whether it sounded and was written)."""
    audio = render_note(
        job.instrument.soundfont, job.instrument.program, job.pitch, job.velocity,
        job.seconds, job.hold, job.sample_rate, job.bank,
    )  # fmt: skip
    if peak_level(audio) < SILENCE_PEAK:
        return job, False
    save_wav(job.path, audio, job.sample_rate, subtype="PCM_16")
    return job, True


def _worker_init() -> None:
    import torch

    # Workers already use every core between them; more threads per worker would only contend.
    torch.set_num_threads(1)


def _note_example(instrument: _Instrument, pitch: int, velocity: int, sample_rate: int) -> dict[str, Any]:
    """All NSynth fields of one note, plus the ``soundfont`` file name and the ``program``.

    ``instrument`` (NSynth's integer id) is ``128 * soundfont position + program``, unique in a build.
    """
    entry = gm_program(instrument.program)
    instrument_id = 128 * instrument.index + instrument.program
    return {
        "note": (instrument_id * 128 + pitch) * 128 + velocity,
        "note_str": f"{instrument.name}-{pitch:03d}-{velocity:03d}",
        "instrument": instrument_id,
        "instrument_str": instrument.name,
        "pitch": pitch,
        "velocity": velocity,
        "sample_rate": sample_rate,
        "qualities": [0] * len(NSYNTH_QUALITIES),
        "qualities_str": [],
        "instrument_family": entry.family_id,
        "instrument_family_str": entry.family,
        "instrument_source": entry.source_id,
        "instrument_source_str": entry.source,
        "soundfont": Path(instrument.soundfont).name,
        "program": instrument.program,
    }


def _is_complete_wav(path: Path, frames: int, sample_rate: int) -> bool:
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError):
        return False
    return info.frames == frames and info.samplerate == sample_rate and info.channels == 1


def _write_json_atomically(path: Path, data: Any) -> None:
    with atomic_write(path, mode="w") as file:
        json.dump(data, file)


@dataclass
class BuildSummary:
    """What :func:`build_dataset` did.

    Attributes:
        out: the dataset root.
        notes: notes on disk per split after the build (``{"train": n, "valid": n, "test": n}``).
        instruments: instrument names per split.
        notes_per_soundfont: notes on disk per soundfont file name.
        rendered: notes rendered and written by this run.
        resumed: notes found complete on disk and kept.
        silent: probed notes skipped because the preset has no sample for them or they rendered silent.
        missing_programs: per soundfont file name, requested programs it has no preset for.
        unplayable_programs: per soundfont file name, programs whose preset has a sample for none
            of the requested notes.
    """

    out: Path
    notes: dict[str, int] = field(default_factory=dict)
    instruments: dict[str, list[str]] = field(default_factory=dict)
    notes_per_soundfont: dict[str, int] = field(default_factory=dict)
    rendered: int = 0
    resumed: int = 0
    silent: int = 0
    missing_programs: dict[str, list[int]] = field(default_factory=dict)
    unplayable_programs: dict[str, list[int]] = field(default_factory=dict)

    def describe(self) -> str:
        """A few human-readable lines."""
        lines = [f"dataset written to {self.out}"]
        for split in SPLITS:
            names = self.instruments.get(split, [])
            shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
            lines.append(f"  {split:5s}: {self.notes.get(split, 0):6d} notes, {len(names)} instruments ({shown})")
        if len(self.notes_per_soundfont) > 1:
            for soundfont, count in self.notes_per_soundfont.items():
                lines.append(f"  {soundfont}: {count} notes")
        lines.append(
            f"  rendered {self.rendered}, kept from an earlier run {self.resumed}, skipped silent {self.silent}"
        )
        for title, programs in (
            ("programs without a preset", self.missing_programs),
            ("programs with no sample for these notes", self.unplayable_programs),
        ):
            for soundfont, numbers in programs.items():
                if numbers:
                    lines.append(f"  {title} in {soundfont}: {', '.join(map(str, numbers))}")
        return "\n".join(lines)


def _check_arguments(
    soundfonts: Sequence[str], programs: Sequence[int], pitches: Sequence[int], velocities: Sequence[int],
    seconds: float, hold: float, valid: float, test: float, sample_rate: int, workers: int,
    pitch_step: int, velocities_per_pitch: int | None,
) -> None:  # fmt: skip
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    def check_range(name: str, values: Sequence[int], low: int, high: int) -> None:
        outside = [value for value in values if not low <= value <= high]
        check(len(values) > 0, f"{name}: none given")
        check(not outside, f"{name} must be {low}-{high}, got {', '.join(map(str, outside[:5]))}")

    check(len(soundfonts) > 0, "no soundfont given")
    names: dict[str, str] = {}
    files: dict[Path, str] = {}
    for soundfont in soundfonts:
        name, file = soundfont_name(soundfont), Path(soundfont).resolve()
        check(file not in files, f"soundfont {soundfont} is given twice (also as {files.get(file)})")
        check(name not in names, f"soundfonts {names.get(name)} and {soundfont} share the short name '{name}'")
        names[name], files[file] = soundfont, soundfont
    check_range("programs", programs, 0, 127)
    check_range("pitches", pitches, 0, 127)
    check_range("velocities", velocities, 1, 127)
    check(math.isfinite(seconds) and seconds > 0, f"seconds must be positive, got {seconds}")
    check(math.isfinite(hold) and 0 < hold <= seconds, f"hold must be in (0, seconds={seconds}], got {hold}")
    check(
        0 <= valid < 1 and 0 <= test < 1 and valid + test < 1,
        f"valid and test must be fractions summing below 1, got {valid} and {test}",
    )
    check(sample_rate > 0, f"sample_rate must be positive, got {sample_rate}")
    check(workers >= 1, f"workers must be at least 1, got {workers}")
    check(pitch_step >= 1, f"pitch_step must be at least 1, got {pitch_step}")
    check(
        velocities_per_pitch is None or velocities_per_pitch >= 1,
        f"velocities_per_pitch must be at least 1, got {velocities_per_pitch}",
    )


def _check_out(out: Path) -> None:
    """Refuse an output that cannot be a dataset root, before any rendering."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a directory")
    existing = next(parent for parent in (out, *out.parents) if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise DatasetError(f"{out}: cannot write there ({existing} is not a writable directory)")


def _probe(
    instruments: list[_Instrument], pitches: Sequence[int], velocities: Sequence[int],
    pitch_step: int, seed: int, bank: int,
) -> dict[_Instrument, list[tuple[int, int]] | None]:  # fmt: skip
    """Playable notes of each instrument among its pitches (``None``: no preset for the program).

    Instruments sharing a soundfont and a pitch offset are probed in one call (one synthesizer).
    """
    groups: dict[tuple[str, int], list[_Instrument]] = {}
    for instrument in instruments:
        offset = _pitch_offset(instrument, pitch_step, seed)
        groups.setdefault((instrument.soundfont, offset), []).append(instrument)
    playable: dict[_Instrument, list[tuple[int, int]] | None] = {}
    for (soundfont, offset), members in groups.items():
        kept_pitches = pitches[offset::pitch_step]
        found = probe_notes(soundfont, [member.program for member in members], kept_pitches, velocities, bank)
        for member in members:
            playable[member] = found.get(member.program)
    return playable


def build_dataset(
    soundfonts: SoundfontPath | Sequence[SoundfontPath],
    out: str | os.PathLike,
    programs: Sequence[int] = DEFAULT_PROGRAMS,
    pitches: Sequence[int] = DEFAULT_PITCHES,
    velocities: Sequence[int] = DEFAULT_VELOCITIES,
    seconds: float = 4.0,
    hold: float = 3.0,
    valid: float = 0.1,
    test: float = 0.1,
    sample_rate: int = SAMPLE_RATE,
    progress: bool = True,
    workers: int = 1,
    seed: int = 0,
    bank: int = 0,
    pitch_step: int = 1,
    velocities_per_pitch: int | None = None,
) -> BuildSummary:
    """Render the notes of every (soundfont, program) instrument into one NSynth-layout dataset.

    Writes ``out/nsynth-{train,valid,test}/examples.json`` and ``.../audio/<note_str>.wav``
    (16-bit PCM). Re-running with the same arguments skips finished notes.

    Args:
        soundfonts: one SF2/SF3 file or several; each (soundfont, program) is one instrument.
        out: dataset root (created).
        programs: General MIDI programs, built from every soundfont.
        pitches: MIDI keys (each instrument keeps those it can play).
        velocities: MIDI velocities.
        seconds: note length; hold: how long the key is held.
        valid, test: fractions of the instruments held out (see the module docstring).
        sample_rate: rate of the written audio.
        progress: show a progress bar.
        workers: processes rendering in parallel (the output does not depend on it).
        seed: seed of the instrument split and of the pitch and velocity draws.
        bank: soundfont bank holding the presets.
        pitch_step: keep every ``pitch_step``-th of ``pitches`` per instrument (1: all).
        velocities_per_pitch: keep this many velocities per (instrument, pitch) (``None``: all).

    Raises:
        ConfigError: an argument is out of range, or two soundfonts share a short name.
        SoundfontError: a soundfont is missing or unreadable, or none has any of the programs.
        DatasetError: ``out`` cannot be written.
    """
    given = [soundfonts] if isinstance(soundfonts, (str, os.PathLike)) else soundfonts
    soundfont_files: list[str] = [os.fspath(soundfont) for soundfont in given]
    programs = sorted(set(int(p) for p in programs))
    pitches = sorted(set(int(p) for p in pitches))
    velocities = sorted(set(int(v) for v in velocities))
    _check_arguments(
        soundfont_files, programs, pitches, velocities, seconds, hold, valid, test, sample_rate, workers,
        pitch_step, velocities_per_pitch,
    )  # fmt: skip
    out = Path(out)
    _check_out(out)
    instruments = _instruments(soundfont_files, programs)
    probed = _probe(instruments, pitches, velocities, pitch_step, seed, bank)
    summary = BuildSummary(out=out)
    chosen: dict[_Instrument, list[tuple[int, int]]] = {}
    for instrument, playable in probed.items():
        file_name = Path(instrument.soundfont).name
        missing = summary.missing_programs.setdefault(file_name, [])
        unplayable = summary.unplayable_programs.setdefault(file_name, [])
        if playable is None:
            missing.append(instrument.program)
            continue
        probed_notes = len(pitches[_pitch_offset(instrument, pitch_step, seed) :: pitch_step]) * len(velocities)
        summary.silent += probed_notes - len(playable)
        if not playable:
            unplayable.append(instrument.program)
            continue
        chosen[instrument] = _chosen_notes(instrument, playable, velocities_per_pitch, seed)
    # Only instruments that can sound take part in the split, so no split gets a mute instrument.
    if not chosen:
        raise SoundfontError(
            f"{', '.join(soundfont_files)}: none of the programs {programs} (bank {bank}) "
            "has samples for the requested notes"
        )

    split_of = split_instruments([instrument.name for instrument in chosen], valid, test, seed)
    examples: dict[str, dict[str, dict[str, Any]]] = {split: {} for split in SPLITS}
    frames = round(seconds * sample_rate)
    jobs = []
    for instrument, notes in chosen.items():
        split = split_of[instrument.name]
        for pitch, velocity in notes:
            example = _note_example(instrument, pitch, velocity, sample_rate)
            path = out / f"nsynth-{split}" / AUDIO_DIR / f"{example['note_str']}.wav"
            if _is_complete_wav(path, frames, sample_rate):
                examples[split][example["note_str"]] = example
                summary.resumed += 1
            else:
                jobs.append(_NoteJob(instrument, bank, pitch, velocity, seconds, hold, sample_rate, str(path)))

    def write_examples() -> None:
        for split in SPLITS:
            # Also rewrite splits left from an earlier run with other programs, so none goes stale.
            if split in split_of.values() or (out / f"nsynth-{split}").exists():
                _write_json_atomically(out / f"nsynth-{split}" / EXAMPLES_FILE, dict(sorted(examples[split].items())))

    # A seeded random order spreads the notes of an unfinished build over all instruments and pitches.
    random.Random(seed).shuffle(jobs)
    write_examples()  # a build killed before its first checkpoint still leaves a readable dataset
    bar = tqdm(
        total=summary.resumed + len(jobs), initial=summary.resumed, disable=not progress, unit="note", desc="rendering"
    )
    last_checkpoint, since_checkpoint = time.monotonic(), 0
    try:
        for job, sounded in _run_jobs(jobs, workers):
            if sounded:
                example = _note_example(job.instrument, job.pitch, job.velocity, sample_rate)
                examples[split_of[job.instrument.name]][example["note_str"]] = example
                summary.rendered += 1
            else:
                summary.silent += 1
                bar.set_postfix(silent=summary.silent)
            bar.update()
            since_checkpoint += 1
            if since_checkpoint >= _CHECKPOINT_NOTES or time.monotonic() - last_checkpoint >= _CHECKPOINT_SECONDS:
                write_examples()
                last_checkpoint, since_checkpoint = time.monotonic(), 0
    finally:
        bar.close()
        write_examples()  # also when interrupted: the finished notes form a usable dataset

    for split in SPLITS:
        summary.notes[split] = len(examples[split])
        summary.instruments[split] = sorted({e["instrument_str"] for e in examples[split].values()})
    for soundfont in soundfont_files:
        file_name = Path(soundfont).name
        summary.notes_per_soundfont[file_name] = sum(
            example["soundfont"] == file_name for split in SPLITS for example in examples[split].values()
        )
    summary.missing_programs = {name: numbers for name, numbers in summary.missing_programs.items() if numbers}
    summary.unplayable_programs = {name: numbers for name, numbers in summary.unplayable_programs.items() if numbers}
    return summary


def _run_jobs(jobs: list[_NoteJob], workers: int) -> Iterator[tuple[_NoteJob, bool]]:
    """Results of :func:`_render_job` for every job, in completion order."""
    workers = min(workers, len(jobs) // _MIN_JOBS_PER_WORKER)
    if workers <= 1:
        yield from map(_render_job, jobs)
        return
    # spawn, not fork: forking a process whose torch threads are running can deadlock.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap_unordered(_render_job, jobs, chunksize=4)
