"""The pad: four corner timbres, the blend at any point (x, y), and the validation of note requests.

The pad is the unit square, x to the right and y downwards, with the corners in NSynth Super's
order: top-left (0, 0), top-right (1, 0), bottom-left (0, 1), bottom-right (1, 1). A point's blend
is the weighted sum (lerp, as NSynth and NSynth Super did) of the corner embeddings, with either
NSynth Super's distance weights or bilinear weights (:func:`corner_weights`).

Requests name corners by the bundled timbre set (``"flute"``, or ``"gm:73"`` for the note of a
General MIDI program) or by the server's own corners; they can never name a file, so a client
cannot make the server read from its disk.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from timbre import interpolate
from timbre.embedding import Embedding, shared_encoded_pitch
from timbre.errors import ConfigError
from timbre.render.timbres import TimbreResolver, TimbreSet, parse_source
from timbre.synthesizer import TimbreModel

# Four contrasting families of the bundled set: struck, woodwind, bowed, synthetic.
DEFAULT_CORNERS = ("acoustic_grand_piano", "flute", "violin", "lead_1_square")
CORNER_POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
# API name -> interpolate.grid_weights name. "nsynth" is the pad's default, as on NSynth Super.
WEIGHTINGS = {"nsynth": "distance", "bilinear": "bilinear"}

PITCH_RANGE = (0, 127)
VELOCITY_RANGE = (1, 127)
SECONDS_RANGE = (0.1, 8.0)
DEFAULT_VELOCITY = 100
DEFAULT_SECONDS = 4.0
MAX_NAME_LENGTH = 64
# Positions and durations are resolved to these steps, so requests that differ by less share a
# cache entry (1e-4 of the pad is far below what a finger or a mouse can aim at).
POSITION_DECIMALS = 4
SECONDS_DECIMALS = 3

NOTE_FIELDS = ("x", "y", "pitch", "velocity", "seconds", "corners", "weighting")


def timbre_name(text: str) -> str:
    """The API name of a timbre: ``"Acoustic Guitar (nylon)"`` -> ``"acoustic_guitar_nylon"``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def corner_weights(x: float, y: float, weighting: str = "nsynth") -> torch.Tensor:
    """Weights of the four corners at pad position (x, y), the formulas of
    :func:`timbre.interpolate.grid_weights` evaluated at any point instead of a grid.

    Args:
        x, y: position in [0, 1] (x to the right, y downwards).
        weighting: ``"nsynth"`` (NSynth Super: ``max(0, 1 - d_i)`` for the distance ``d_i`` to
            corner ``i``, normalised) or ``"bilinear"``.

    Returns:
        ``[4]`` float64 (top-left, top-right, bottom-left, bottom-right), summing to 1.
    """
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if WEIGHTINGS[weighting] == "bilinear":
        return torch.tensor([(1 - x) * (1 - y), x * (1 - y), (1 - x) * y, x * y], dtype=torch.float64)
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    point = torch.tensor([x, y], dtype=torch.float64)
    # Every point of the square is within 1/sqrt(2) of some corner, so the sum is never 0.
    cones = (1 - (point - corners).norm(dim=-1)).clamp_min(0)
    return cones / cones.sum()


@dataclass(frozen=True)
class NoteRequest:
    """A validated request: where on the pad, which note, which corners.

    Attributes:
        x, y: pad position in [0, 1], rounded to ``POSITION_DECIMALS``.
        pitch: MIDI pitch.
        velocity: MIDI velocity (loudness relative to the corners' reference notes).
        seconds: note length including its release.
        corners: four canonical corner names (top-left, top-right, bottom-left, bottom-right).
        weighting: ``"nsynth"`` or ``"bilinear"``.
    """

    x: float
    y: float
    pitch: int
    velocity: int
    seconds: float
    corners: tuple[str, str, str, str]
    weighting: str

    @property
    def blend_key(self) -> tuple:
        """What the blended embedding depends on."""
        return (self.x, self.y, self.corners, self.weighting)


@dataclass(frozen=True)
class Corner:
    """A timbre the pad can put in a corner.

    Attributes:
        name: its API name (``"flute"``).
        embedding: its embedding ``[frames, dim]`` under the served model.
        program: General MIDI program of a bundled timbre, else None.
        family: NSynth instrument family of a bundled timbre, else None.
        source: where it came from (a bundled note's file name, or the path given to the server).
    """

    name: str
    embedding: Embedding
    program: int | None = None
    family: str | None = None
    source: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "program": self.program, "family": self.family}


class Instrument:
    """The served model, its corner timbres and the blends between them.

    Args:
        model: the model that encodes the corners and synthesizes the notes.
        corners: the four default corners, top-left first: bundled names (``"flute"``),
            ``gm:PROGRAM``, audio files or ``.npy`` embeddings. Default: ``DEFAULT_CORNERS``.
        timbre_set: the set requests may choose corners from (default: the bundled one).

    Raises:
        ConfigError: not four corners, an unknown name or a missing file.
    """

    def __init__(
        self, model: TimbreModel, corners: Sequence[str] | None = None, timbre_set: TimbreSet | None = None
    ) -> None:
        self.model = model
        self.timbre_set = timbre_set or TimbreSet()
        self._resolver = TimbreResolver(model, self.timbre_set, interpolation="lerp")
        self._bundled = {timbre_name(entry.name): entry for entry in self.timbre_set.entries}
        sources = [str(source).strip() for source in corners] if corners is not None else self._default_corner_sources()
        if len(sources) != 4:
            raise ConfigError(f"the pad needs 4 corners ({', '.join(CORNER_POSITIONS)}), got {len(sources)}")
        for source in sources:  # before the encoding below, so a typo fails at once
            self._check_corner_source(source)
        # Every bundled timbre is encoded up front (16 notes, about a second): a request never waits
        # for an encoder, and the corner table is read-only while requests are served.
        self._corners: dict[str, Corner] = {
            name: Corner(
                name, self._resolver.resolve(f"gm:{entry.program}"), entry.program, entry.family, entry.path.name
            )
            for name, entry in self._bundled.items()
        }
        self.default_corners = tuple(self._load_corner(source).name for source in sources)

    def _default_corner_sources(self) -> list[str]:
        """``DEFAULT_CORNERS``, completed from the set when an installed set lacks some of them."""
        chosen = [name for name in DEFAULT_CORNERS if name in self._bundled]
        chosen += [name for name in self._bundled if name not in chosen][: 4 - len(chosen)]
        return chosen

    # ------------------------------------------------------------------ corners

    def _check_corner_source(self, text: str) -> None:
        """Raise ConfigError unless ``text`` is a bundled name, a valid ``gm:PROGRAM`` or an existing file."""
        if text in self._bundled:
            return
        if text.startswith("gm:"):
            if not (text[3:].isdigit() and 0 <= int(text[3:]) <= 127):
                raise ConfigError(f"corner {text!r}: gm: takes a General MIDI program 0-127")
            return
        if parse_source(text).kind not in ("audio", "embedding"):
            raise ConfigError(
                f"corner {text!r}: expected a bundled timbre name, gm:PROGRAM, an audio file or an .npy embedding"
            )
        if not Path(text).is_file():
            raise ConfigError(
                f"corner {text!r}: no such file, and not a bundled timbre (bundled: {', '.join(self._bundled)})"
            )

    def _load_corner(self, text: str) -> Corner:
        """A corner from a source the server was started with (checked; files included)."""
        if text in self._bundled or text.startswith("gm:"):
            return self.corner(text)
        name = timbre_name(Path(text).stem) or "corner"
        if name in self._corners:
            name = f"{name}_{len(self._corners)}"
        corner = Corner(name, self._resolver.resolve(parse_source(text)), source=str(Path(text).resolve()))
        self._corners[name] = corner
        return corner

    def corner(self, name: str) -> Corner:
        """The corner a request names: a bundled timbre, ``gm:PROGRAM``, or one of the server's corners.

        Raises:
            ConfigError: the name is none of these.
        """
        if name in self._corners:
            return self._corners[name]
        if name.startswith("gm:"):
            program = name[3:]
            if not (program.isdigit() and 0 <= int(program) <= 127):
                raise ConfigError(f"corner {name!r}: gm: takes a General MIDI program 0-127")
            entry, _reason = self.timbre_set.lookup(int(program))
            return self._corners[timbre_name(entry.name)]
        raise ConfigError(f"unknown corner {_short(name)}: use a name from /api/v1/timbres or gm:PROGRAM")

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/v1/timbres`` returns: the default corners and the bundled set."""
        corners = [
            {**self._corners[name].describe(), "position": position}
            for name, position in zip(self.default_corners, CORNER_POSITIONS)
        ]
        bundled = [
            {"name": name, "program": entry.program, "family": entry.family} for name, entry in self._bundled.items()
        ]
        return {
            "model": self.model.name,
            "sample_rate": self.model.sample_rate,
            "corners": corners,
            "timbres": bundled,
            "weightings": list(WEIGHTINGS),
            "limits": {
                "pitch": list(PITCH_RANGE),
                "velocity": list(VELOCITY_RANGE),
                "seconds": list(SECONDS_RANGE),
            },
        }

    # ------------------------------------------------------------------ requests and blends

    def parse_request(self, payload: Any) -> NoteRequest:
        """Validate a request body (a decoded JSON object) into a :class:`NoteRequest`.

        ``x`` and ``y`` are required; ``pitch`` defaults to 60 (an embedding request needs none),
        ``velocity`` to ``DEFAULT_VELOCITY``, ``seconds`` to ``DEFAULT_SECONDS``, ``corners`` to the
        server's, ``weighting`` to ``"nsynth"``.

        Raises:
            ConfigError: a missing, unknown or out-of-range field, or an unknown corner.
        """
        if not isinstance(payload, Mapping):
            raise ConfigError(f"the request body must be a JSON object with fields {', '.join(NOTE_FIELDS)}")
        unknown = sorted(set(payload) - set(NOTE_FIELDS))
        if unknown:
            raise ConfigError(f"unknown field {unknown[0]!r} (fields: {', '.join(NOTE_FIELDS)})")
        for required in ("x", "y"):
            if required not in payload:
                raise ConfigError(f"missing field {required!r}: the pad position, a number in [0, 1]")
        x = round(_number(payload, "x", (0.0, 1.0)), POSITION_DECIMALS)
        y = round(_number(payload, "y", (0.0, 1.0)), POSITION_DECIMALS)
        pitch = _integer(payload, "pitch", PITCH_RANGE, 60)
        velocity = _integer(payload, "velocity", VELOCITY_RANGE, DEFAULT_VELOCITY)
        seconds = round(_number(payload, "seconds", SECONDS_RANGE, DEFAULT_SECONDS), SECONDS_DECIMALS)
        weighting = payload.get("weighting", "nsynth")
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {_short(weighting)}")
        corners = payload.get("corners", self.default_corners)
        if not isinstance(corners, (list, tuple)) or len(corners) != 4:
            raise ConfigError(f"corners must be a list of 4 timbre names ({', '.join(CORNER_POSITIONS)})")
        names = []
        for name in corners:
            if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
                raise ConfigError(f"corner {_short(name)}: expected a timbre name of 1-{MAX_NAME_LENGTH} characters")
            names.append(self.corner(name).name)
        return NoteRequest(x, y, pitch, velocity, seconds, tuple(names), weighting)  # type: ignore[arg-type]

    def weights(self, request: NoteRequest) -> torch.Tensor:
        """``[4]`` corner weights of the request's position."""
        return corner_weights(request.x, request.y, request.weighting)

    def blend(self, request: NoteRequest) -> Embedding:
        """The embedding ``[frames, dim]`` at the request's pad position.

        Corners of different lengths are stretched to the longest (:func:`timbre.interpolate.align`),
        whose attack and release marks the blend keeps. At a corner the blend is that corner's
        embedding exactly (its weight is 1, the others 0).
        """
        corners = [self._corners[name].embedding for name in request.corners]
        tensor = interpolate.blend([c.tensor for c in corners], self.weights(request), method="lerp")
        longest = max(corners, key=lambda corner: corner.frames)
        velocities = {corner.velocity for corner in corners}
        return replace(
            longest,
            tensor=tensor.float(),
            source=f"pad({request.x:g}, {request.y:g})",
            pitch=None,
            velocity=velocities.pop() if len(velocities) == 1 else None,
            extra=shared_encoded_pitch(corners),
        )


def _number(payload: Mapping, field: str, limits: tuple[float, float], default: float | None = None) -> float:
    value = payload.get(field, default)
    # bool is an int in Python, but `true` is no position or length.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{field} must be a number in [{limits[0]:g}, {limits[1]:g}], got {_short(value)}")
    if not limits[0] <= value <= limits[1]:
        raise ConfigError(f"{field} {value:g} is outside [{limits[0]:g}, {limits[1]:g}]")
    return float(value)


def _integer(payload: Mapping, field: str, limits: tuple[int, int], default: int) -> int:
    value = payload.get(field, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{field} must be an integer in [{limits[0]}, {limits[1]}], got {_short(value)}")
    if not limits[0] <= value <= limits[1]:
        raise ConfigError(f"{field} {value} is outside [{limits[0]}, {limits[1]}]")
    return value


def _short(value: Any) -> str:
    """A bounded rendering of a client's value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
