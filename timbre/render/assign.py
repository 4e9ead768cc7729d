"""Which timbre, morph and gain each track gets, from ``{track key: value}`` options.

A track key is a track index (``"0"``), a track name (any case), ``"program:N"`` (every pitched
track of that General MIDI program) or ``"all"``; when several keys name a track the most specific
wins: index, then name, then program, then all. A key that names no track is an error, so a typo
never goes unnoticed. Tracks without a timbre play the bundled timbre of their program (``gm:N``).

A morph (GANSynth's MIDI demo) moves a track through two or more timbres across the piece: each
note's embedding mixes the sources at the note's onset, as a fraction of the time from the first
to the last onset of the piece, quantised to :data:`MORPH_STEPS` steps so that the note cache
still applies.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from timbre.embedding import Embedding
from timbre.errors import ConfigError
from timbre.render.notes import TrackNotes
from timbre.render.timbres import TimbreResolver, TimbreSource, parse_source

# Key that assigns a timbre, morph or gain to every track.
ALL_TRACKS = "all"
MORPH_STEPS = 64

Value = TypeVar("Value")
Timbre = TimbreSource | Embedding | str


@dataclass
class TrackAssignment:
    """What the options say about one track.

    Attributes:
        sources: its timbre, or the timbres of its morph in order.
        gain_db: its gain in dB.
    """

    sources: list[TimbreSource | Embedding]
    gain_db: float = 0.0


def assign_tracks(
    tracks: list[TrackNotes],
    timbres: Mapping[str, Timbre] | None = None,
    morphs: Mapping[str, Sequence[Timbre]] | None = None,
    gains: Mapping[str, float] | None = None,
) -> dict[int, TrackAssignment]:
    """``{track index: assignment}`` for every track; a morph overrides a timbre.

    Raises:
        ConfigError: a key naming no track, a malformed source, a morph of fewer than two
            timbres, or a gain that is not a number. The message starts with the argument and the
            key (``timbres key 'Piano': ...``) so that a caller can restate it in its own terms.
    """
    assigned = _match_keys(tracks, {k: _parsed(v) for k, v in (timbres or {}).items()}, "timbres")
    morphing = _match_keys(tracks, {k: _morph_sources(k, v) for k, v in (morphs or {}).items()}, "morphs")
    gain_of = _match_keys(tracks, {k: _gain(k, v) for k, v in (gains or {}).items()}, "gains")
    return {
        track.index: TrackAssignment(
            morphing.get(track.index) or [assigned.get(track.index) or TimbreSource("gm", str(track.program))],
            gain_of.get(track.index, 0.0),
        )
        for track in tracks
    }


def describe_source(source: TimbreSource | Embedding, resolver: TimbreResolver) -> str:
    """``gm:41 (program-040-violin.wav, same family)``, a path, a blend, or ``embedding SOURCE``."""
    if isinstance(source, Embedding):
        return f"embedding {source.source}"
    if source.kind != "gm":
        return str(source)
    entry, reason = resolver.timbre_set.lookup(int(source.value))
    return f"gm:{source.value} ({entry.path.name}, {reason})"


class TrackTimbre:
    """The timbre of a track's notes: one embedding, or a morph through several by onset time.

    Calling it with a note's onset returns ``(key, embedding)``; equal keys mean equal embeddings
    (the resolver returns one object per source, so object identity names a source).

    Args:
        embeddings: the track's timbre, or the timbres of its morph in order.
        resolver: mixes the morph's embeddings.
        first, last: onsets (seconds) where the morph starts and ends.
    """

    def __init__(self, embeddings: list[Embedding], resolver: TimbreResolver, first: float, last: float) -> None:
        self.embeddings = embeddings
        self.resolver = resolver
        self.first, self.last = first, last
        self.steps: dict[int, Embedding] = {}

    def __call__(self, onset: float) -> tuple[Hashable, Embedding]:
        if len(self.embeddings) == 1:
            return id(self.embeddings[0]), self.embeddings[0]
        span = self.last - self.first
        step = round(MORPH_STEPS * (onset - self.first) / span) if span > 0 else 0
        if step not in self.steps:
            # Position along the sources (0 = the first, len - 1 = the last), mixed pairwise.
            position = step / MORPH_STEPS * (len(self.embeddings) - 1)
            segment = min(int(position), len(self.embeddings) - 2)
            mix = position - segment
            pair = self.embeddings[segment : segment + 2]
            self.steps[step] = self.resolver.mix(pair, [1.0 - mix, mix], f"morph step {step}/{MORPH_STEPS}")
        return (tuple(map(id, self.embeddings)), step), self.steps[step]


def _match_keys(tracks: list[TrackNotes], mapping: Mapping[str, Value], argument: str) -> dict[int, Value]:
    """``{track index: value}``: the most specific key of ``mapping`` (the ``argument`` of
    :func:`assign_tracks`) that names each track.

    Raises:
        ConfigError: a key names no track.
    """
    by_index: dict[int, Value] = {}
    by_name: dict[str, Value] = {}
    by_program: dict[int, Value] = {}
    everything = []
    names = Counter(track.name.lower() for track in tracks)
    for key, value in mapping.items():
        key = str(key).strip()
        if key.isdigit() and int(key) < len(tracks):
            by_index[int(key)] = value
        elif key.lower() == ALL_TRACKS:
            everything.append(value)
        elif key.lower().startswith("program:") and key[8:].isdigit():
            if not any(track.program == int(key[8:]) and not track.is_drum for track in tracks):
                raise ConfigError(
                    f"{argument} key {key!r}: no pitched track plays program {key[8:]}{_track_list(tracks)}"
                )
            by_program[int(key[8:])] = value
        elif names[key.lower()]:
            by_name[key.lower()] = value
        else:
            raise ConfigError(f"{argument} key {key!r}: no such track{_track_list(tracks)}")
    matched: dict[int, Value] = {}
    for track in tracks:
        # An index beats a name, a name beats a program, and any of them beats "all".
        if track.index in by_index:
            matched[track.index] = by_index[track.index]
        elif track.name.lower() in by_name:
            matched[track.index] = by_name[track.name.lower()]
        elif track.program in by_program:
            matched[track.index] = by_program[track.program]
        elif everything:
            matched[track.index] = everything[-1]
    return matched


def _track_list(tracks: list[TrackNotes]) -> str:
    listed = "; ".join(f"{t.index} {t.name!r} program {t.program}{' (drums)' if t.is_drum else ''}" for t in tracks)
    return f" (tracks: {listed})"


def _parsed(source: Timbre) -> TimbreSource | Embedding:
    return source if isinstance(source, (TimbreSource, Embedding)) else parse_source(str(source))


def _morph_sources(key: str, sources: Sequence[Timbre]) -> list[TimbreSource | Embedding]:
    if isinstance(sources, str):
        sources = sources.split(",")
    if len(sources) < 2:
        raise ConfigError(f"morphs key {key!r}: a morph needs at least two timbres, got {len(sources)}")
    return [_parsed(source) for source in sources]


def _gain(key: str, value: float) -> float:
    try:
        gain = float(value)
    except (TypeError, ValueError):
        gain = math.nan
    if not math.isfinite(gain):
        raise ConfigError(f"gains key {key!r}: the gain must be a number of dB, got {value!r}")
    return gain
