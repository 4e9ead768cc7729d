"""Which notes an evaluation plays: reading a folder of notes, and choosing among them.

A folder of notes is one of:

- an NSynth split directory (``examples.json`` + ``audio/*.wav``), as ``timbre dataset build`` and
  ``timbre evaluate build-testset`` write it, or a dataset root holding ``nsynth-<split>/``;
- audio files (WAV, FLAC, OGG; subfolders included) whose names carry the MIDI pitch:
  ``flute_60.wav``, ``program-073-pitch-060.wav``, ``violin-C4.wav``, NSynth's
  ``flute_acoustic_002-060-100.wav``; what is left of the name is the instrument (the parent
  folder's name when nothing is left, as in ``flute/60.wav``). A ``notes.json`` beside them may
  give any file's fields instead: ``{"a.wav": {"pitch": 60, "instrument": "flute"}}`` or
  ``{"a.wav": 60}``.

Choice. Timbre identification compares each note with the other instruments at its pitch, so notes
are chosen in whole pitch groups: one note per instrument and pitch (the velocity nearest to 100,
NSynth's default), and when fewer notes are asked for than there are, the notes of as many pitches
as fit, spread evenly over the pitch range.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import librosa
import numpy as np

from timbre.data.nsynth import EXAMPLES_FILE, SPLITS, find_split_dir, read_examples
from timbre.errors import ConfigError, DatasetError
from timbre.io.audio import load_audio

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
NOTES_FILE = "notes.json"
REFERENCE_VELOCITY = 100

_PITCH_WORD = re.compile(r"(?:^|(?<=[-_ .]))pitch[-_ ]?(?P<pitch>\d{1,3})(?=$|[-_ .])", re.IGNORECASE)
_NSYNTH_NAME = re.compile(r"^(?P<instrument>.+)-(?P<pitch>\d{3})-(?P<velocity>\d{3})$")
_NOTE_NAME = re.compile(r"^(?P<instrument>.*?)(?:^|[-_ ])(?P<note>[A-Ga-g](?:#|b)?-?\d)$")
_TRAILING_NUMBER = re.compile(r"^(?P<instrument>(?:.*\D)?)(?P<pitch>\d{1,3})$")


@dataclass(frozen=True)
class Note:
    """One note to evaluate.

    Attributes:
        name: unique within its folder (NSynth ``note_str``, or the file's path without suffix).
        instrument: notes of one instrument share it.
        pitch: MIDI pitch it sounds at.
        velocity: MIDI velocity, when known.
        path: its audio file.
    """

    name: str
    instrument: str
    pitch: int
    velocity: int | None
    path: Path


@dataclass(frozen=True)
class NoteFolder:
    """The notes of a folder and where they came from.

    Attributes:
        path: the folder the notes were read from (a split directory for NSynth layouts).
        layout: ``"nsynth"`` or ``"audio files"``.
        split: the NSynth split name when read from a dataset root, else None.
        notes: sorted by name.
    """

    path: Path
    layout: str
    split: str | None
    notes: list[Note]


def read_note_folder(
    folder: str | os.PathLike, split: str | None = None, pitch_range: tuple[int, int] | None = None
) -> NoteFolder:
    """Read the notes of ``folder`` (see the module docstring for the layouts).

    Args:
        folder: an NSynth split directory or dataset root, or a folder of audio files.
        split: the split of a dataset root (default: ``test``); not allowed for other layouts.
        pitch_range: ``(lowest, highest)`` MIDI pitches to keep.

    Raises:
        DatasetError: the folder is missing, holds no notes (in the range), or a pitch cannot be told.
        ConfigError: ``split`` is given for a folder that has no splits.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder of notes does not exist")
    has_splits = any((folder / prefix / EXAMPLES_FILE).is_file() for s in SPLITS for prefix in (f"nsynth-{s}", s))
    if (folder / EXAMPLES_FILE).is_file() or has_splits or split is not None:
        if (folder / EXAMPLES_FILE).is_file() and split is not None:
            raise ConfigError(f"{folder}: is a single split directory; no split {split!r} to choose")
        split_dir = find_split_dir(folder, split or "test")
        chosen_split = None if split_dir == folder else (split or "test")
        notes = [
            Note(
                name=example["note_str"],
                instrument=str(example["instrument_str"]),
                pitch=int(example["pitch"]),
                velocity=int(example["velocity"]),
                path=split_dir / "audio" / f"{example['note_str']}.wav",
            )
            for example in read_examples(split_dir)
        ]
        result = NoteFolder(split_dir, "nsynth", chosen_split, notes)
    else:
        result = NoteFolder(folder, "audio files", None, _read_audio_files(folder))
    if pitch_range is not None:
        low, high = pitch_range
        kept = [note for note in result.notes if low <= note.pitch <= high]
        if not kept:
            raise DatasetError(f"{result.path}: none of its {len(result.notes)} notes has a pitch in {low}-{high}")
        result = NoteFolder(result.path, result.layout, result.split, kept)
    return result


def _read_audio_files(folder: Path) -> list[Note]:
    files = sorted(path for path in folder.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file())
    if not files:
        raise DatasetError(
            f"{folder}: holds no notes (no {EXAMPLES_FILE}, no nsynth-<split>/ and no "
            f"{', '.join(AUDIO_SUFFIXES)} files)"
        )
    listed = _read_notes_file(folder)
    unknown = sorted(set(listed) - {path.relative_to(folder).as_posix() for path in files})
    if unknown:
        raise DatasetError(f"{folder / NOTES_FILE}: lists {unknown[0]}, which is not an audio file in {folder}")
    notes = []
    for path in files:
        relative = path.relative_to(folder).as_posix()
        fields = listed.get(relative) or _fields_from_name(path)
        instrument = fields.get("instrument") or (path.parent.name if path.parent != folder else "")
        if not instrument:
            instrument = path.stem
        notes.append(
            Note(
                name=relative.rsplit(".", 1)[0],
                instrument=str(instrument),
                pitch=fields["pitch"],
                velocity=fields.get("velocity"),
                path=path,
            )
        )
    return notes


def _read_notes_file(folder: Path) -> dict[str, dict[str, Any]]:
    """``notes.json``'s entries as ``{relative path: {"pitch", "instrument"?, "velocity"?}}``."""
    path = folder / NOTES_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected an object mapping file names to a pitch or to fields")
    entries = {}
    for name, fields in raw.items():
        fields = {"pitch": fields} if isinstance(fields, int) else fields
        if not isinstance(fields, dict) or not isinstance(fields.get("pitch"), int) or not 0 <= fields["pitch"] <= 127:
            raise DatasetError(f"{path}: {name}: expected a MIDI pitch 0-127, or fields with one ('pitch')")
        entries[name] = {key: fields.get(key) for key in ("pitch", "instrument", "velocity")}
    return entries


def pitch_from_name(stem: str) -> tuple[str, int, int | None] | None:
    """``(instrument, pitch, velocity)`` told by a file name without suffix, or None.

    >>> pitch_from_name("program-073-pitch-060")
    ('program-073', 60, None)
    >>> pitch_from_name("flute_60"), pitch_from_name("violin-C4"), pitch_from_name("reed_acoustic_011-062-075")
    (('flute', 60, None), ('violin', 60, None), ('reed_acoustic_011', 62, 75))
    """
    found: tuple[str, int, int | None] | None = None
    if match := _PITCH_WORD.search(stem):
        rest = (stem[: match.start()] + " " + stem[match.end() :]).strip("-_ .")
        found = re.sub(r"[-_ .]{2,}", "-", rest), int(match["pitch"]), None
    elif match := _NSYNTH_NAME.match(stem):
        found = match["instrument"], int(match["pitch"]), int(match["velocity"])
    elif match := _NOTE_NAME.match(stem):
        found = match["instrument"], int(librosa.note_to_midi(match["note"])), None
    elif match := _TRAILING_NUMBER.match(stem):
        found = match["instrument"], int(match["pitch"]), None
    if found is None or not 0 <= found[1] <= 127:
        return None
    return found[0].strip("-_ ."), found[1], found[2]


def _fields_from_name(path: Path) -> dict[str, Any]:
    told = pitch_from_name(path.stem)
    if told is None:
        raise DatasetError(
            f"{path}: cannot tell the MIDI pitch from the file name; name it like flute_60.wav or "
            f"program-073-pitch-060.wav, or list it in {NOTES_FILE}"
        )
    instrument, pitch, velocity = told
    return {"instrument": instrument, "pitch": pitch, "velocity": velocity}


def select_notes(notes: Sequence[Note], count: int | None = None, seed: int = 0) -> list[int]:
    """Indices of the notes to evaluate, in whole pitch groups (see the module docstring).

    Args:
        notes: the candidates.
        count: at most this many (None: one per instrument and pitch, all pitches).
        seed: where the even spread of pitches starts, and which instruments a single pitch too
            large for ``count`` keeps.

    Returns:
        Sorted indices into ``notes``.
    """
    best: dict[tuple[str, int], int] = {}
    for index, note in enumerate(notes):
        key = (note.instrument, note.pitch)
        distance = abs((note.velocity or REFERENCE_VELOCITY) - REFERENCE_VELOCITY)
        current = best.get(key)
        if current is None or distance < abs((notes[current].velocity or REFERENCE_VELOCITY) - REFERENCE_VELOCITY):
            best[key] = index
    if count is None or count >= len(best):
        return sorted(best.values())
    by_pitch: dict[int, list[int]] = defaultdict(list)
    for (_, pitch), index in sorted(best.items()):
        by_pitch[pitch].append(index)
    pitches = sorted(by_pitch)
    rng = np.random.default_rng(seed)
    offset = rng.random()
    for groups in range(len(pitches), 0, -1):
        chosen = sorted({pitches[int((k + offset) * len(pitches) / groups)] for k in range(groups)})
        indices = [index for pitch in chosen for index in by_pitch[pitch]]
        if len(indices) <= count:
            return sorted(indices)
    # Even the single pitch chosen last holds more instruments than asked for.
    return sorted(int(index) for index in rng.choice(indices, size=count, replace=False))


def select_sweep_pairs(notes: Sequence[Note], count: int, seed: int = 0) -> list[tuple[int, int]]:
    """Up to ``count`` pairs of notes of two different instruments at the same pitch.

    Pitches held by at least two instruments are visited in a seeded order, round after round; each
    visit pairs two instruments not yet paired at that pitch, so the pairs spread over pitches
    before any pitch repeats. Expects one note per instrument and pitch (as :func:`select_notes` gives).

    Returns:
        Pairs of indices into ``notes``; fewer than ``count`` when there are no more pairs.
    """
    rng = np.random.default_rng(seed)
    by_pitch: dict[int, list[int]] = defaultdict(list)
    for index, note in enumerate(notes):
        by_pitch[note.pitch].append(index)
    pitches = sorted(pitch for pitch, indices in by_pitch.items() if len({notes[i].instrument for i in indices}) >= 2)
    rng.shuffle(pitches)
    queues = {}
    for pitch in pitches:
        first_of_instrument: dict[str, int] = {}
        for index in by_pitch[pitch]:
            first_of_instrument.setdefault(notes[index].instrument, index)
        names = sorted(first_of_instrument)
        rng.shuffle(names)
        queues[pitch] = [
            (first_of_instrument[names[i]], first_of_instrument[names[i + 1]]) for i in range(0, len(names) - 1, 2)
        ]
    pairs: list[tuple[int, int]] = []
    for round_ in range(max((len(queue) for queue in queues.values()), default=0)):
        pairs += [queues[pitch][round_] for pitch in pitches if round_ < len(queues[pitch])]
    return pairs[:count]


def load_notes(notes: Sequence[Note], sample_rate: int, samples: int | None = None) -> tuple[np.ndarray, list[int]]:
    """The notes' audio at ``sample_rate``, mono, and each file's own length in samples.

    Returns:
        ``([notes, samples] float32, [notes])``: each note cut to ``samples`` or zero-padded to it
        (None: the longest note's length).
    """
    audio = [load_audio(note.path, sample_rate) for note in notes]
    samples = samples or max(len(note) for note in audio)
    batch = np.zeros((len(audio), samples), dtype=np.float32)
    for row, note in enumerate(audio):
        batch[row, : min(samples, len(note))] = note[:samples]
    return batch, [len(note) for note in audio]
