"""The notes of a MIDI file as the renderer sees them: per track, in seconds, within a time window.

Any MIDI file symusic reads is accepted (through :func:`timbre.io.midi.load_score`, which
refuses missing, corrupt and empty files with a :class:`~timbre.errors.MidiError`). Tracks keep
their position in the file (``index``), name, General MIDI program and drum flag, so that
timbres can be assigned by index, name or program. Controllers (pedal, pitch bend, volume) are
not read: a note is its onset, duration, pitch and velocity.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import symusic

from timbre.errors import ConfigError, MidiError
from timbre.io.midi import load_score

MidiSource: TypeAlias = str | os.PathLike | symusic.core.ScoreTick | symusic.core.ScoreSecond

# A note must sound for some time: a zero-length note (a key tapped in the same tick) plays this long.
MIN_NOTE_SECONDS = 0.03


@dataclass(frozen=True)
class Note:
    """One note, times in seconds from the start of the render window."""

    onset: float
    duration: float
    pitch: int
    velocity: int


@dataclass
class TrackNotes:
    """The notes of one MIDI track, sorted by onset.

    Attributes:
        index: position of the track in the file (``--timbre 0=...`` refers to it).
        name: track name ('' when the file has none).
        program: General MIDI program 0-127.
        is_drum: a percussion track (MIDI channel 10).
        notes: the notes starting inside the render window.
    """

    index: int
    name: str
    program: int
    is_drum: bool
    notes: list[Note]

    def describe(self) -> str:
        """``track 2 'Strings'`` (the name only when there is one)."""
        return f"track {self.index}" + (f" {self.name!r}" if self.name else "")


def read_tracks(midi: MidiSource, start: float = 0.0, end: float | None = None) -> list[TrackNotes]:
    """Every track of ``midi`` with its notes starting in ``[start, end)``, times shifted by ``-start``.

    Notes still sounding at ``end`` are cut there (their release is still rendered after it).

    Args:
        midi: a MIDI file path or a :class:`symusic.Score` (any time unit).
        start: beginning of the window in seconds.
        end: end of the window in seconds (None: the end of the piece).

    Returns:
        All tracks in file order, drum and empty tracks included.

    Raises:
        MidiError: the file is missing, corrupt or holds no notes.
        ConfigError: the window is invalid.
    """
    if not (math.isfinite(start) and start >= 0):
        raise ConfigError(f"start must be a number of seconds >= 0, got {start}")
    if end is not None and not (math.isfinite(end) and end > start):
        raise ConfigError(f"end must be a number of seconds after start={start}, got {end}")
    score = load_score(midi) if isinstance(midi, (str, os.PathLike)) else midi
    seconds = score.to("second")
    limit = math.inf if end is None else end
    tracks = []
    for index, track in enumerate(seconds.tracks):
        columns = track.notes.numpy()
        onsets = columns["time"].astype(np.float64)
        inside = (onsets >= start) & (onsets < limit)
        order = np.argsort(onsets[inside], kind="stable")
        onsets = onsets[inside][order] - start
        durations = np.maximum(columns["duration"].astype(np.float64)[inside][order], MIN_NOTE_SECONDS)
        durations = np.minimum(durations, limit - start - onsets)
        pitches = columns["pitch"][inside][order]
        velocities = np.clip(columns["velocity"][inside][order], 1, 127)
        notes = [Note(float(o), float(d), int(p), int(v)) for o, d, p, v in zip(onsets, durations, pitches, velocities)]
        tracks.append(TrackNotes(index, str(track.name).strip(), int(track.program), bool(track.is_drum), notes))
    return tracks


def require_notes(tracks: list[TrackNotes], midi: MidiSource, start: float, end: float | None) -> None:
    """Raise :class:`MidiError` when no pitched track has a note in the window."""
    if any(track.notes and not track.is_drum for track in tracks):
        return
    label = str(midi) if isinstance(midi, (str, os.PathLike)) else "the score"
    window = f" between {start:g} s and {end:g} s" if end is not None else (f" after {start:g} s" if start else "")
    has_drums = any(track.notes and track.is_drum for track in tracks)
    detail = "only drum notes, which are not rendered" if has_drums else "no notes"
    raise MidiError(f"{label}: {detail}{window}")
