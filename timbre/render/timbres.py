"""Where a track's timbre comes from: audio files, saved embeddings, blends, or the bundled timbre set.

A timbre source is written as (on the command line and in Python alike):

- ``flute.wav``: an audio file (any format, rate and channel count), encoded on the fly;
- ``flute.npy``: an embedding saved by :meth:`timbre.Embedding.save` or ``timbre encode``;
- ``gm:40``: the bundled timbre of General MIDI program 40 (see :meth:`TimbreSet.lookup`);
- ``blend:a.wav,b.npy,gm:73:0.3,0.5,0.2``: a weighted mix of such sources; the weights after the
  last ``:`` are optional (equal weights without them) and are normalised to sum to 1.

A timbre set is a folder of NSynth-protocol reference notes (4 s, key held 3 s, pitch 60, velocity
100, 16 kHz) with an ``index.json`` listing ``{"program", "name", "family", "file"}`` per note (under
``"notes"``, or as a bare list); :func:`timbre.data.timbre_set.build_timbre_set` writes one from any
SF2 soundfont, and one ships with timbre.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from timbre import interpolate
from timbre.constants import TIMBRE_SET_DIR
from timbre.data.families import gm_program
from timbre.data.timbre_set import REFERENCE_PITCH, REFERENCE_VELOCITY
from timbre.embedding import Embedding, shared_encoded_pitch
from timbre.errors import ConfigError
from timbre.synthesizer import TimbreModel

DEFAULT_TIMBRE_SET = TIMBRE_SET_DIR
INDEX_FILE = "index.json"
SOURCE_SYNTAX = "an audio file, an .npy embedding, gm:PROGRAM or blend:A,B[:WEIGHT_A,WEIGHT_B]"


@dataclass(frozen=True)
class TimbreSource:
    """A parsed timbre source.

    Attributes:
        kind: ``"audio"``, ``"embedding"``, ``"gm"`` or ``"blend"``.
        value: the file path (audio, embedding) or the program number (gm); '' for a blend.
        parts: the sources a blend mixes (each a single source, not a blend).
        weights: one weight per part, summing to 1.
    """

    kind: str
    value: str = ""
    parts: tuple[TimbreSource, ...] = ()
    weights: tuple[float, ...] = ()

    def __str__(self) -> str:
        if self.kind == "gm":
            return f"gm:{self.value}"
        if self.kind == "blend":
            weights = ",".join(f"{w:g}" for w in self.weights)
            return f"blend:{','.join(map(str, self.parts))}:{weights}"
        return self.value


def parse_source(text: str) -> TimbreSource:
    """Parse a timbre source (syntax in the module docstring); files are not checked here.

    Raises:
        ConfigError: malformed ``gm:`` or ``blend:`` source.
    """
    text = str(text).strip()
    if not text:
        raise ConfigError(f"empty timbre source: expected {SOURCE_SYNTAX}")
    if text.startswith("blend:"):
        return _parse_blend(text)
    return _parse_single(text)


def _parse_single(text: str) -> TimbreSource:
    if text.startswith("gm:"):
        number = text[3:]
        if not number.isdigit() or not 0 <= int(number) <= 127:
            raise ConfigError(f"timbre source {text!r}: gm: takes a General MIDI program 0-127")
        return TimbreSource("gm", str(int(number)))
    if text.startswith("blend:"):
        raise ConfigError(f"timbre source {text!r}: a blend cannot be nested in a blend or a morph")
    kind = "embedding" if text.lower().endswith(".npy") else "audio"
    return TimbreSource(kind, text)


def _parse_blend(text: str) -> TimbreSource:
    body = text[len("blend:") :]
    names, weights = body.split(","), None
    if ":" in body:
        head, tail = body.rsplit(":", 1)
        numbers = _numbers(tail)
        # Numbers after the last colon are weights, unless that colon is a gm: prefix
        # ("blend:gm:1,gm:2" has no weights).
        if numbers is not None and head.split(",")[-1].strip().lower() != "gm":
            names, weights = head.split(","), numbers
            if len(weights) != len(names):
                raise ConfigError(
                    f"timbre source {text!r}: {len(names)} sources but {len(weights)} weights; "
                    "give one weight per source, e.g. blend:a.wav,b.wav:0.3,0.7"
                )
    if len(names) < 2 or any(not name.strip() for name in names):
        raise ConfigError(f"timbre source {text!r}: a blend needs at least two sources, e.g. blend:a.wav,b.wav:0.3,0.7")
    weights = weights or [1.0] * len(names)
    if any(not (math.isfinite(w) and w >= 0) for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"timbre source {text!r}: blend weights must be non-negative numbers with a positive sum")
    total = sum(weights)
    parts = tuple(_parse_single(name.strip()) for name in names)
    return TimbreSource("blend", parts=parts, weights=tuple(w / total for w in weights))


def _numbers(text: str) -> list[float] | None:
    try:
        return [float(item) for item in text.split(",")]
    except ValueError:
        return None


def parse_assignment(text: str) -> tuple[str, str]:
    """Split ``KEY=VALUE`` (e.g. ``0=flute.wav``, ``program:33=gm:32``, ``Bass=blend:...``).

    Raises:
        ConfigError: starting with ``repr(text)``, when the key or the value is missing.
    """
    key, separator, value = str(text).partition("=")
    if not separator or not key.strip() or not value.strip():
        raise ConfigError(
            f"{text!r}: expected TRACK=VALUE, where TRACK is a track index, a track name, program:N or all"
        )
    return key.strip(), value.strip()


@dataclass(frozen=True)
class BundledTimbre:
    """One reference note of a timbre set."""

    program: int
    name: str
    family: str
    path: Path
    pitch: int = REFERENCE_PITCH
    velocity: int = REFERENCE_VELOCITY


class TimbreSet:
    """A folder of reference notes named by General MIDI program, read lazily.

    Args:
        directory: the folder holding ``index.json`` (default: the set bundled with timbre).
    """

    def __init__(self, directory: str | os.PathLike = DEFAULT_TIMBRE_SET) -> None:
        self.directory = Path(directory)
        self._entries: list[BundledTimbre] | None = None

    @property
    def entries(self) -> list[BundledTimbre]:
        """The notes of the set, by program.

        Raises:
            ConfigError: the set is missing, its index is corrupt, or it lists no notes.
        """
        if self._entries is None:
            self._entries = self._read_index()
        return self._entries

    def _read_index(self) -> list[BundledTimbre]:
        index = self.directory / INDEX_FILE
        if not index.is_file():
            hint = " (the bundled timbre set is not installed)" if self.directory == DEFAULT_TIMBRE_SET else ""
            raise ConfigError(
                f"{index}: no timbre set here{hint}; give each track a timbre, or use a timbre set "
                "written by timbre.data.timbre_set.build_timbre_set"
            )
        try:
            rows = json.loads(index.read_text())
            rows = rows["notes"] if isinstance(rows, dict) else rows
            entries = [
                BundledTimbre(
                    int(row["program"]),
                    str(row["name"]),
                    str(row["family"]),
                    self.directory / row["file"],
                    int(row.get("pitch", REFERENCE_PITCH)),
                    int(row.get("velocity", REFERENCE_VELOCITY)),
                )
                for row in rows
            ]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{index}: not a timbre set index ({type(error).__name__}: {error})") from None
        if not entries:
            raise ConfigError(f"{index}: the timbre set lists no notes")
        return sorted(entries, key=lambda entry: entry.program)

    def lookup(self, program: int) -> tuple[BundledTimbre, str]:
        """The note to play ``program`` with, and why it was chosen.

        The note of the same program; else, of the programs of the same NSynth family (see
        :mod:`timbre.data.families`), the nearest by program number; else the nearest program
        (lower one on a tie).

        Returns:
            ``(note, reason)`` with reason ``"same program"``, ``"same family"`` or ``"nearest program"``.
        """
        entries = self.entries
        for entry in entries:
            if entry.program == program:
                return entry, "same program"
        family = gm_program(program).family
        relatives = [entry for entry in entries if entry.family == family]
        if relatives:
            return min(relatives, key=lambda entry: abs(entry.program - program)), "same family"
        return min(entries, key=lambda entry: abs(entry.program - program)), "nearest program"


class TimbreResolver:
    """Turns timbre sources into embeddings of one model, encoding every file once.

    Args:
        model: the model whose encoder makes the embeddings.
        timbre_set: where ``gm:N`` sources and tracks without an assigned timbre find their notes.
        interpolation: ``"slerp"`` or ``"lerp"``, how blends and morphs mix embeddings.
        progress: show the refinement of each file encoded (the model's default steps).
    """

    def __init__(
        self, model: TimbreModel, timbre_set: TimbreSet, interpolation: str = "slerp", progress: bool = False
    ) -> None:
        if interpolation not in interpolate.METHODS:
            raise ConfigError(f"interpolation must be one of {', '.join(interpolate.METHODS)}, got {interpolation!r}")
        self.model = model
        self.timbre_set = timbre_set
        self.interpolation = interpolation
        self.progress = progress
        self._cache: dict[str, Embedding] = {}

    def resolve(self, source: TimbreSource | Embedding | str) -> Embedding:
        """The embedding of ``source`` (a parsed or textual source, or an Embedding used as is).

        Raises:
            ConfigError: the file does not exist, or the embedding does not fit the model.
            AudioError: the file cannot be read or decoded.
        """
        if isinstance(source, Embedding):
            return self._check(source, source.source)
        if isinstance(source, str):
            source = parse_source(source)
        # Programs played by one note of the set share its embedding (and so the note cache).
        key = str(self.timbre_set.lookup(int(source.value))[0].path) if source.kind == "gm" else str(source)
        if key not in self._cache:
            self._cache[key] = self._load(source)
        return self._cache[key]

    def _load(self, source: TimbreSource) -> Embedding:
        if source.kind == "gm":
            entry, _ = self.timbre_set.lookup(int(source.value))
            if not entry.path.is_file():
                raise ConfigError(f"{entry.path}: listed in {self.timbre_set.directory / INDEX_FILE} but missing")
            return self.model.encode(entry.path, pitch=entry.pitch, velocity=entry.velocity, progress=self.progress)
        if source.kind == "blend":
            return self.mix([self.resolve(part) for part in source.parts], source.weights, str(source))
        if not Path(source.value).is_file():
            raise ConfigError(f"unknown timbre source {source.value!r}: no such file (a source is {SOURCE_SYNTAX})")
        if source.kind == "embedding":
            return self._check(Embedding.load(source.value), source.value)
        return self.model.encode(source.value, progress=self.progress)

    def _check(self, embedding: Embedding, label: str) -> Embedding:
        model = self.model
        if embedding.dim != model.autoencoder.latent_dim:
            raise ConfigError(
                f"{label}: embedding has {embedding.dim} dims, "
                f"model {model.name} expects {model.autoencoder.latent_dim}"
            )
        if (embedding.sample_rate, embedding.hop_length) != (model.sample_rate, model.hop_length):
            raise ConfigError(
                f"{label}: embedding made at {embedding.sample_rate} Hz with hop {embedding.hop_length}, "
                f"model {model.name} works at {model.sample_rate} Hz with hop {model.hop_length}"
            )
        return embedding

    def mix(self, embeddings: Sequence[Embedding], weights: Sequence[float], label: str) -> Embedding:
        """Weighted mix of embeddings (frames stretched to the longest, see :func:`timbre.interpolate.align`).

        The result keeps the attack and release frames of the longest source: NSynth-protocol notes
        share one layout, so stretching lines their attacks and releases up.
        """
        tensor = interpolate.blend([e.tensor for e in embeddings], list(weights), method=self.interpolation)
        longest = max(embeddings, key=lambda e: e.frames)
        velocities = {e.velocity for e in embeddings}
        return replace(
            longest, tensor=tensor.float(), source=label, pitch=None,
            velocity=velocities.pop() if len(velocities) == 1 else None, extra=shared_encoded_pitch(embeddings),
        )  # fmt: skip
