"""Build an NSynth-layout note dataset from any SF2 soundfont with FluidSynth.

NSynth's protocol: every note lasts ``seconds`` (4 s), the key is held for ``hold`` (3 s) and then
released, audio is 16 kHz mono, pitches 21-108, velocities 25/50/75/100/127. Each General MIDI
program becomes one instrument, named and labelled by :mod:`timbre.data.families`.

Rendering. FluidSynth renders at 48 kHz (float output, reverb and chorus off) and the result is
downmixed and resampled to ``sample_rate`` with a windowed-sinc filter: FluidSynth's sample
interpolation is not band-limited, so rendering at 16 kHz directly would alias the upper
harmonics of bright notes back into the audible band. A fresh synthesizer renders every note,
which makes each note bit-exact whatever was rendered before it, in whatever process. The gain
(0.5) leaves headroom: the loudest of 640 probed FluidR3_GM notes (every program at 5 pitches,
velocity 127) peaks at 0.45. Notes are not normalised, so velocity keeps its effect on loudness.

Skipped notes. A note for which the preset has no sample starts no voice: such notes are found
up front, without rendering (:func:`probe_notes`), and skipped; a note whose peak stays below
-80 dBFS (about 3 LSB of 16-bit audio) counts as silent and is skipped too. The dataset then
holds only notes "where the instrument sounds".

Splits are by instrument (no instrument appears in two splits), like NSynth. Only instruments
with samples for some requested note take part. They are shuffled with ``seed``; valid gets
``round(valid * n)`` of them and test ``round(test * n)``, but a split with a non-zero fraction
gets at least one instrument as long as one remains for train (valid is served first). So 3
programs with ``valid=test=0.1`` give 1/1/1, 2 programs give 1 train + 1 valid, and 1 program
goes to train.

Resuming. Each wav is written atomically (temporary file, then rename), so a wav that exists
with the expected length and rate is complete: a re-run skips it. ``examples.json`` of each
split is rewritten atomically every few hundred notes and at the end (also when interrupted),
listing exactly the notes of the current run that are on disk.
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import multiprocessing
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from tqdm.auto import tqdm

from timbre.io.audio import SAMPLE_RATE, peak_level, resample, save_wav
from timbre.data.families import DEFAULT_PROGRAMS, NSYNTH_QUALITIES, gm_program, instrument_name
from timbre.data.nsynth import AUDIO_DIR, EXAMPLES_FILE, SPLITS
from timbre.io.files import atomic_write
from timbre.errors import ConfigError, DatasetError

RENDER_RATE = 48000
GAIN = 0.5
SILENCE_PEAK = 1e-4  # -80 dBFS
DEFAULT_PITCHES = tuple(range(21, 109))
DEFAULT_VELOCITIES = (25, 50, 75, 100, 127)
_EXAMPLES_EVERY = 500  # notes between periodic rewrites of examples.json
# Starting a worker process (importing torch) costs seconds: small builds render in-process.
_MIN_JOBS_PER_WORKER = 50


class SoundfontError(DatasetError):
    """A soundfont is missing, unreadable, or lacks a requested preset."""


@functools.cache
def _fluidsynth():
    """Import pyfluidsynth, quieting its C library's own error log (we raise clearer errors)."""
    import fluidsynth

    set_log_function = fluidsynth.cfunc(
        "fluid_set_log_function", ctypes.c_void_p,
        ("level", ctypes.c_int, 1), ("fun", ctypes.c_void_p, 1), ("data", ctypes.c_void_p, 1),
    )
    if set_log_function is not None:
        for level in (1, 2):  # FLUID_ERR, FLUID_WARN
            set_log_function(level, None, None)
    return fluidsynth


@functools.cache
def _write_float_function():
    fluidsynth = _fluidsynth()
    return fluidsynth.cfunc(
        "fluid_synth_write_float", ctypes.c_int,
        ("synth", ctypes.c_void_p, 1), ("len", ctypes.c_int, 1),
        ("lout", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1), ("lincr", ctypes.c_int, 1),
        ("rout", ctypes.c_void_p, 1), ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1),
    )


# Synths that keep each soundfont loaded for the life of the process: FluidSynth then shares the
# loaded sample data, and the fresh synth made for every note loads the soundfont in ~0.05 s
# instead of 0.15-0.7 s.
_KEEPERS: dict[str, Any] = {}


def _new_synth(soundfont: str | os.PathLike, rate: int) -> tuple[Any, int]:
    """A fresh synthesizer at ``rate`` with ``soundfont`` loaded; returns (synth, soundfont id)."""
    fluidsynth = _fluidsynth()
    path = str(Path(soundfont).resolve())
    if not os.path.isfile(path):
        raise SoundfontError(f"{soundfont}: soundfont file not found")
    settings = {"synth.reverb.active": 0, "synth.chorus.active": 0}
    if path not in _KEEPERS:
        keeper = fluidsynth.Synth(**settings)
        if keeper.sfload(path) < 0:
            keeper.delete()
            raise SoundfontError(f"{soundfont}: FluidSynth cannot load it (not a valid SF2 soundfont?)")
        _KEEPERS[path] = keeper
    synth = fluidsynth.Synth(gain=GAIN, samplerate=float(rate), **settings)
    # FluidSynth ignores an out-of-range rate setting and keeps its default: check.
    if synth.get_setting("synth.sample-rate") != float(rate):
        synth.delete()
        raise ConfigError(f"sample rate {rate} Hz is outside what FluidSynth can render")
    soundfont_id = synth.sfload(path)
    if soundfont_id < 0:
        synth.delete()
        raise SoundfontError(f"{soundfont}: FluidSynth cannot load it (not a valid SF2 soundfont?)")
    return synth, soundfont_id


def probe_notes(
    soundfont: str | os.PathLike,
    programs: Iterable[int],
    pitches: Iterable[int],
    velocities: Iterable[int],
    bank: int = 0,
) -> dict[int, list[tuple[int, int]]]:
    """Which notes each preset has samples for, found without rendering.

    A key-down starts one voice per matching sample zone of the preset, so a note that starts
    no voice is one the preset cannot play.

    Returns:
        ``{program: [(pitch, velocity), ...]}`` with the notes that start at least one voice,
        for every program that has a preset in ``bank`` (programs without one are left out).
    """
    pitches, velocities = list(pitches), list(velocities)
    synth, soundfont_id = _new_synth(soundfont, RENDER_RATE)
    try:
        playable = {}
        for program in programs:
            if synth.program_select(0, soundfont_id, bank, program) != 0:
                continue
            playable[program] = []
            for pitch in pitches:
                for velocity in velocities:
                    synth.noteon(0, pitch, velocity)
                    if synth.get_active_voice_count() > 0:
                        playable[program].append((pitch, velocity))
                    synth.all_sounds_off(0)
                    synth.get_samples(64)  # one block: lets the synth free the stopped voices
        return playable
    finally:
        synth.delete()


def render_note(
    soundfont: str | os.PathLike,
    program: int,
    pitch: int,
    velocity: int,
    seconds: float = 4.0,
    hold: float = 3.0,
    sample_rate: int = SAMPLE_RATE,
    bank: int = 0,
) -> np.ndarray:
    """Render one note of a soundfont preset, NSynth style.

    The key goes down at 0 s and up at ``hold`` seconds; rendering continues to ``seconds``.
    Deterministic: the same arguments give the same samples, bit for bit.

    Args:
        soundfont: path to an SF2 file.
        program: preset number (General MIDI program 0-127 in bank 0).
        pitch: MIDI key 0-127.
        velocity: MIDI velocity 1-127.
        seconds: length of the note.
        hold: how long the key is held (at most ``seconds``).
        sample_rate: rate of the returned audio in Hz.
        bank: soundfont bank of the preset.

    Returns:
        ``[round(seconds * sample_rate)]`` float32 mono waveform; all zeros when the preset has
        no sample for this key and velocity.

    Raises:
        SoundfontError: the soundfont is missing or unreadable, or has no such preset.
    """
    render_rate = max(RENDER_RATE, sample_rate)
    total = round(seconds * render_rate)
    held = min(round(hold * render_rate), total)
    synth, soundfont_id = _new_synth(soundfont, render_rate)
    try:
        if synth.program_select(0, soundfont_id, bank, program) != 0:
            raise SoundfontError(f"{soundfont}: no preset for bank {bank}, program {program}")
        synth.noteon(0, pitch, velocity)
        output = np.zeros(round(seconds * sample_rate), dtype=np.float32)
        if synth.get_active_voice_count() == 0:
            return output
        stereo = np.zeros((2, total), dtype=np.float32)
        write_float = _write_float_function()

        def render(start: int, stop: int) -> None:
            if stop > start:
                left, right = stereo[0, start:], stereo[1, start:]
                write_float(synth.synth, stop - start, left.ctypes.data, 0, 1, right.ctypes.data, 0, 1)

        render(0, held)
        synth.noteoff(0, pitch)
        render(held, total)
    finally:
        synth.delete()
    audio = resample(stereo.mean(axis=0), render_rate, sample_rate)
    length = min(audio.shape[0], output.shape[0])
    output[:length] = audio[:length]
    return output


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
    soundfont: str
    bank: int
    program: int
    pitch: int
    velocity: int
    seconds: float
    hold: float
    sample_rate: int
    path: str


def _render_job(job: _NoteJob) -> tuple[_NoteJob, bool]:
    """Render one note and write it; returns (job, whether it sounded and was written)."""
    audio = render_note(
        job.soundfont, job.program, job.pitch, job.velocity, job.seconds, job.hold, job.sample_rate, job.bank
    )
    if peak_level(audio) < SILENCE_PEAK:
        return job, False
    save_wav(job.path, audio, job.sample_rate, subtype="PCM_16")
    return job, True


def _worker_init() -> None:
    import torch

    # Workers already use every core between them; more threads per worker would only contend.
    torch.set_num_threads(1)


def _note_example(program: int, pitch: int, velocity: int, sample_rate: int) -> dict[str, Any]:
    """All NSynth fields of one note. ``instrument`` is the GM program (unique per soundfont)."""
    entry = gm_program(program)
    instrument = instrument_name(program)
    return {
        "note": (program * 128 + pitch) * 128 + velocity,
        "note_str": f"{instrument}-{pitch:03d}-{velocity:03d}",
        "instrument": program,
        "instrument_str": instrument,
        "pitch": pitch,
        "velocity": velocity,
        "sample_rate": sample_rate,
        "qualities": [0] * len(NSYNTH_QUALITIES),
        "qualities_str": [],
        "instrument_family": entry.family_id,
        "instrument_family_str": entry.family,
        "instrument_source": entry.source_id,
        "instrument_source_str": entry.source,
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
        rendered: notes rendered and written by this run.
        resumed: notes found complete on disk and kept.
        silent: notes skipped because the preset has no sample for them or they rendered silent.
        missing_programs: requested programs the soundfont has no preset for.
        unplayable_programs: programs whose preset has a sample for none of the requested notes.
    """

    out: Path
    notes: dict[str, int] = field(default_factory=dict)
    instruments: dict[str, list[str]] = field(default_factory=dict)
    rendered: int = 0
    resumed: int = 0
    silent: int = 0
    missing_programs: list[int] = field(default_factory=list)
    unplayable_programs: list[int] = field(default_factory=list)

    def describe(self) -> str:
        """A few human-readable lines."""
        lines = [f"dataset written to {self.out}"]
        for split in SPLITS:
            lines.append(
                f"  {split:5s}: {self.notes.get(split, 0):6d} notes, "
                f"{len(self.instruments.get(split, []))} instruments ({', '.join(self.instruments.get(split, []))})"
            )
        lines.append(
            f"  rendered {self.rendered}, kept from an earlier run {self.resumed}, skipped silent {self.silent}"
        )
        if self.missing_programs:
            lines.append(f"  programs without a preset in the soundfont: {', '.join(map(str, self.missing_programs))}")
        if self.unplayable_programs:
            lines.append(f"  programs with no sample for these notes: {', '.join(map(str, self.unplayable_programs))}")
        return "\n".join(lines)


def _check_arguments(
    programs: Sequence[int], pitches: Sequence[int], velocities: Sequence[int],
    seconds: float, hold: float, valid: float, test: float, sample_rate: int, workers: int,
) -> None:
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    def check_range(name: str, values: Sequence[int], low: int, high: int) -> None:
        outside = [value for value in values if not low <= value <= high]
        check(len(values) > 0, f"{name}: none given")
        check(not outside, f"{name} must be {low}-{high}, got {', '.join(map(str, outside[:5]))}")

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


def build_dataset(
    soundfont: str | os.PathLike,
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
) -> BuildSummary:
    """Render every (program, pitch, velocity) note of a soundfont into an NSynth-layout dataset.

    Writes ``out/nsynth-{train,valid,test}/examples.json`` and ``.../audio/<note_str>.wav``
    (16-bit PCM). Re-running with the same arguments skips finished notes.

    Args:
        soundfont: SF2 file.
        out: dataset root (created).
        programs: General MIDI programs; each is one instrument.
        pitches: MIDI keys.
        velocities: MIDI velocities.
        seconds: note length; hold: how long the key is held.
        valid, test: fractions of the instruments held out (see the module docstring).
        sample_rate: rate of the written audio.
        progress: show a progress bar.
        workers: processes rendering in parallel (the output does not depend on it).
        seed: seed of the instrument split.
        bank: soundfont bank holding the presets.

    Raises:
        ConfigError: an argument is out of range.
        SoundfontError: the soundfont is missing or unreadable, or has none of the programs.
    """
    programs = sorted(set(int(p) for p in programs))
    pitches = sorted(set(int(p) for p in pitches))
    velocities = sorted(set(int(v) for v in velocities))
    _check_arguments(programs, pitches, velocities, seconds, hold, valid, test, sample_rate, workers)
    out = Path(out)
    playable = probe_notes(soundfont, programs, pitches, velocities, bank)
    summary = BuildSummary(
        out=out,
        missing_programs=[p for p in programs if p not in playable],
        unplayable_programs=[p for p in playable if not playable[p]],
        silent=sum(len(pitches) * len(velocities) - len(notes) for notes in playable.values()),
    )
    # Only instruments that can sound take part in the split, so no split gets a mute instrument.
    sounding = [p for p in programs if playable.get(p)]
    if not sounding:
        raise SoundfontError(
            f"{soundfont}: none of the programs {programs} (bank {bank}) has samples for the requested notes"
        )

    split_of = split_instruments([instrument_name(p) for p in sounding], valid, test, seed)
    examples: dict[str, dict[str, dict[str, Any]]] = {split: {} for split in SPLITS}
    frames = round(seconds * sample_rate)
    jobs = []
    for program in sounding:
        split = split_of[instrument_name(program)]
        for pitch, velocity in playable[program]:
            example = _note_example(program, pitch, velocity, sample_rate)
            path = out / f"nsynth-{split}" / AUDIO_DIR / f"{example['note_str']}.wav"
            if _is_complete_wav(path, frames, sample_rate):
                examples[split][example["note_str"]] = example
                summary.resumed += 1
            else:
                jobs.append(
                    _NoteJob(str(soundfont), bank, program, pitch, velocity, seconds, hold, sample_rate, str(path))
                )

    def write_examples() -> None:
        for split in SPLITS:
            # Also rewrite splits left from an earlier run with other programs, so none goes stale.
            if split in split_of.values() or (out / f"nsynth-{split}").exists():
                _write_json_atomically(out / f"nsynth-{split}" / EXAMPLES_FILE, dict(sorted(examples[split].items())))

    bar = tqdm(
        total=summary.resumed + len(jobs), initial=summary.resumed, disable=not progress, unit="note", desc="rendering"
    )
    try:
        for done, (job, sounded) in enumerate(_run_jobs(jobs, workers), start=1):
            if sounded:
                example = _note_example(job.program, job.pitch, job.velocity, sample_rate)
                examples[split_of[example["instrument_str"]]][example["note_str"]] = example
                summary.rendered += 1
            else:
                summary.silent += 1
                bar.set_postfix(silent=summary.silent)
            bar.update()
            if done % _EXAMPLES_EVERY == 0:
                write_examples()
    finally:
        bar.close()
        write_examples()  # also when interrupted: the finished notes form a usable dataset

    for split in SPLITS:
        summary.notes[split] = len(examples[split])
        summary.instruments[split] = sorted({e["instrument_str"] for e in examples[split].values()})
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
