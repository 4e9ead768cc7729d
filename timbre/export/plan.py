"""Which notes a sampler instrument holds: sampled roots, the keys each one plays, velocity layers.

A multi-sampled instrument is a grid of samples: one root key every ``step`` semitones across a
range, and one sample per velocity layer at each root. Every MIDI key 0-127 and every velocity
1-127 falls in exactly one zone, so the instrument plays whatever a DAW sends it: a key plays the
nearest sampled root, transposed by the sampler (keys outside the sampled range play the lowest or
highest root).
"""

from __future__ import annotations

from dataclasses import dataclass

from timbre.errors import ConfigError

MIDI_KEYS = 128
MAX_VELOCITY = 127
DEFAULT_STEP = 3
DEFAULT_VELOCITY_LAYERS = 3
# Each sample: attack, a held sustain long enough to hold a loop, then the release.
DEFAULT_SAMPLE_SECONDS = 3.0


@dataclass(frozen=True)
class KeyZone:
    """A sampled root key and the keys (inclusive) that play it."""

    root: int
    low: int
    high: int


@dataclass(frozen=True)
class VelocityLayer:
    """Velocities ``low..high`` (inclusive) play the sample synthesized at ``velocity``."""

    low: int
    high: int
    velocity: int


@dataclass(frozen=True)
class SamplingPlan:
    """The zones of an instrument.

    Attributes:
        keys: key zones from low to high, covering keys 0-127 without gaps or overlaps.
        layers: velocity layers from soft to loud, covering velocities 1-127.
        seconds: length of each sample, release included.
    """

    keys: tuple[KeyZone, ...]
    layers: tuple[VelocityLayer, ...]
    seconds: float

    @property
    def notes(self) -> int:
        """Samples one instrument needs to synthesize."""
        return len(self.keys) * len(self.layers)


def sampling_plan(
    low: int,
    high: int,
    step: int = DEFAULT_STEP,
    velocity_layers: int = DEFAULT_VELOCITY_LAYERS,
    seconds: float = DEFAULT_SAMPLE_SECONDS,
) -> SamplingPlan:
    """Roots every ``step`` semitones from ``low`` to ``high`` (``high`` always sampled), and
    ``velocity_layers`` equal layers of the velocity range.

    A key plays its nearest root (the lower one on a tie); keys below ``low`` play ``low`` and keys
    above ``high`` play ``high``. Layer ``i`` of ``n`` spans velocities up to ``round(127 (i+1) / n)``
    and is synthesized at its loudest velocity, the usual sampler convention (a layer's sample
    plays unchanged at the top of its range).

    Raises:
        ConfigError: a range, step, layer count or length that cannot make an instrument.
    """
    if not (0 <= low <= high < MIDI_KEYS):
        raise ConfigError(f"sampled key range {low}-{high} must lie within MIDI keys 0-127, lowest first")
    if step < 1:
        raise ConfigError(f"sampling step must be at least 1 semitone, got {step}")
    if not 1 <= velocity_layers <= MAX_VELOCITY:
        raise ConfigError(f"velocity layers must be between 1 and 127, got {velocity_layers}")
    if not seconds > 0:
        raise ConfigError(f"sample length must be a positive number of seconds, got {seconds}")
    roots = list(range(low, high + 1, step))
    if roots[-1] != high:
        roots.append(high)
    keys = []
    for index, root in enumerate(roots):
        # The boundary between two roots is their midpoint; a key on the midpoint goes to the lower root.
        first = 0 if index == 0 else (roots[index - 1] + root) // 2 + 1
        last = MIDI_KEYS - 1 if index == len(roots) - 1 else (root + roots[index + 1]) // 2
        keys.append(KeyZone(root, first, last))
    tops = [round(MAX_VELOCITY * (i + 1) / velocity_layers) for i in range(velocity_layers)]
    layers = [VelocityLayer(1 if i == 0 else tops[i - 1] + 1, top, top) for i, top in enumerate(tops)]
    return SamplingPlan(tuple(keys), tuple(layers), float(seconds))
