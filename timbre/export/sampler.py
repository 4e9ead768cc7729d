"""Synthesize the samples of sampler instruments: every root and velocity layer of a plan, looped.

Each sample is one note of :meth:`TimbreModel.synthesize_batch` at the zone's root and the layer's
velocity, ``plan.seconds`` long with the embedding's own release at the end (the key goes up at
``seconds - release``). Its sustain gets a crossfaded loop (:mod:`timbre.export.loop`); a sampler
loops it while the key is held and plays on through the release when the key goes up.

Loudness. Samplers scale a sample by the General MIDI velocity curve ``(velocity / 127) ** 2``
(the SF2 default velocity-to-attenuation modulator, 960 cB concave; SFZ's default
``amp_veltrack=100`` quadratic curve), the curve timbre's own ``synthesize`` uses. So each sample
is stored as it would sound at velocity 127: the note synthesized at the layer's velocity ``v``
divided by ``(v / 127) ** 2``. Played at ``v`` it is exactly timbre's note; velocities inside a
layer scale smoothly; the layers switch timbre where the model's sound changes with velocity.
Layers that come out identical (a model whose velocity only scales the level) share one sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from timbre.embedding import Embedding
from timbre.errors import ConfigError
from timbre.export.loop import Loop, crossfade_loop, find_loop
from timbre.export.plan import KeyZone, SamplingPlan, VelocityLayer
from timbre.models.dsp import velocity_to_gain
from timbre.synthesizer import TimbreModel

DEFAULT_BATCH_SIZE = 32
# Shortest sustain (after the attack, before the key goes up) that can hold a loop.
MIN_SUSTAIN_SECONDS = 0.2


@dataclass
class Sample:
    """One recorded note of an instrument.

    Attributes:
        name: unique within the instrument, file-name safe.
        audio: ``[samples]`` float32 at full velocity, loop seam crossfaded.
        root: MIDI key it was synthesized at.
        loop: its sustain loop.
        key_up: sample where the release begins.
    """

    name: str
    audio: np.ndarray
    root: int
    loop: Loop
    key_up: int


@dataclass(frozen=True)
class Zone:
    """Keys and velocities that play ``samples[sample]`` of an instrument."""

    sample: int
    keys: KeyZone
    layer: VelocityLayer


@dataclass
class Instrument:
    """A multi-sampled instrument (one SFZ file, one SF2 preset).

    Attributes:
        name: shown by the sampler.
        source: the timbre it plays (the source text, for the record).
        samples: its recorded notes.
        zones: which sample each key and velocity plays (covers keys 0-127, velocities 1-127).
        release_seconds: the release baked into each sample after the key-up.
        sample_rate: of every sample.
    """

    name: str
    source: str
    samples: list[Sample]
    zones: list[Zone]
    release_seconds: float
    sample_rate: int


def render_instruments(
    model: TimbreModel,
    presets: Sequence[tuple[str, Embedding]],
    plan: SamplingPlan,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    temperature: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[Instrument]:
    """Synthesize and loop every sample of each ``(name, embedding)`` preset.

    The roots of one preset and velocity layer go through the decoder ``batch_size`` at a time,
    with the seed of the run of roots, so the layers of a root share their noise. With several
    layers, a probe first plays the middle root in every layer: when they come out identical up to
    level (a model whose velocity only scales loudness, as
    :meth:`TimbreModel.synthesize` does for a decoder that is not told the velocity), the other
    roots are synthesized once, in the loudest layer, and all layers share the samples; otherwise
    every layer gets its own samples.

    Args:
        model: the model that plays the embeddings.
        presets: name and embedding of each instrument.
        plan: roots, velocity layers and sample length.
        batch_size: notes per decoder call.
        temperature, seed: as in :meth:`TimbreModel.synthesize_batch`.
        progress: show a progress bar over the notes.

    Raises:
        ConfigError: the samples are too short to hold a loop in their sustain.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    fitted = [model.prepare_embedding(embedding, plan.seconds) for _, embedding in presets]
    for (name, _), layout in zip(presets, fitted):
        sustain = (layout.release_frame - layout.attack_frames) * model.hop_length / model.sample_rate
        if sustain < MIN_SUSTAIN_SECONDS:
            raise ConfigError(
                f"{name}: {plan.seconds:g} s samples leave {max(sustain, 0):.2f} s of sustain between attack and "
                f"release, too short for a loop (need {MIN_SUSTAIN_SECONDS} s): make the samples longer"
            )
    instruments = []
    with tqdm(total=len(presets) * plan.notes, desc="synthesizing samples", unit="note", disable=not progress) as bar:
        for (name, embedding), layout in zip(presets, fitted):
            notes = _PresetSynthesis(model, embedding, plan, batch_size, temperature, seed, bar).run()
            key_up = layout.release_frame * model.hop_length
            # The decoder blends neighbouring frames, so the release can colour the last frame before key-up.
            region = (layout.attack_frames * model.hop_length, key_up - model.hop_length)
            samples: list[Sample] = []
            uncrossfaded: list[np.ndarray] = []  # per sample, to spot layers that came out identical
            zones: list[Zone] = []
            for (keys, layer), full_velocity in notes.items():
                shared = _same_sample(uncrossfaded, zones, keys, full_velocity)
                if shared is None:
                    loop = find_loop(full_velocity, model.sample_rate, midi_frequency(keys.root), region)
                    shared = len(samples)
                    sample_name = f"k{keys.root:03d}_v{layer.velocity:03d}"
                    samples.append(Sample(sample_name, crossfade_loop(full_velocity, loop), keys.root, loop, key_up))
                    uncrossfaded.append(full_velocity)
                zones.append(Zone(shared, keys, layer))
            release = layout.release_seconds
            instruments.append(Instrument(name, embedding.source, samples, zones, release, model.sample_rate))
    return instruments


class _PresetSynthesis:
    """The notes of one preset at full velocity (see :func:`render_instruments`)."""

    def __init__(
        self, model: TimbreModel, embedding: Embedding, plan: SamplingPlan, batch_size: int, temperature: float | None,
        seed: int, bar: tqdm,
    ) -> None:  # fmt: skip
        self.model, self.embedding, self.plan, self.bar = model, embedding, plan, bar
        self.batch_size, self.temperature, self.seed = batch_size, temperature, seed

    def run(self) -> dict[tuple[KeyZone, VelocityLayer], np.ndarray]:
        """``{(key zone, layer): [samples]}``, layer by layer, each layer's keys from low to high."""
        layers, keys = self.plan.layers, self.plan.keys
        probed: dict[VelocityLayer, dict[KeyZone, np.ndarray]] = {layer: {} for layer in layers}
        if len(layers) > 1:
            middle = keys[len(keys) // 2]
            probed = {layer: {middle: self.synthesize([middle], layer)[0]} for layer in layers}
            if all(_same_audio(probed[layer][middle], probed[layers[-1]][middle]) for layer in layers):
                rest = [zone for zone in keys if zone != middle]
                audio = probed[layers[-1]] | dict(zip(rest, self.synthesize(rest, layers[-1])))
                self.bar.update(len(rest) * (len(layers) - 1))  # the layers sharing these samples
                # Loudest layer first: the shared samples are named after the velocity they were made at.
                return {(zone, layer): audio[zone] for layer in reversed(layers) for zone in keys}
        notes = {}
        for layer in layers:
            rest = [zone for zone in keys if zone not in probed[layer]]
            audio = probed[layer] | dict(zip(rest, self.synthesize(rest, layer)))
            notes.update({(zone, layer): audio[zone] for zone in keys})
        return notes

    def synthesize(self, keys: Sequence[KeyZone], layer: VelocityLayer) -> list[np.ndarray]:
        """The roots of ``keys`` at ``layer.velocity``, divided by that velocity's gain: ``[samples]`` each."""
        gain = float(velocity_to_gain(layer.velocity))
        audio: list[np.ndarray] = []
        for first in range(0, len(keys), self.batch_size):
            run = keys[first : first + self.batch_size]
            rows = self.model.synthesize_batch(
                [self.embedding] * len(run),
                pitches=[zone.root for zone in run],
                seconds=[self.plan.seconds] * len(run),
                velocities=[layer.velocity] * len(run),
                temperature=self.temperature,
                seed=self.seed + first,
            )
            audio.extend(row / gain for row in rows)
            self.bar.update(len(run))
        return audio


def _same_audio(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float rounding (relative to the louder peak)."""
    tolerance = 1e-5 * max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-12)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=0, atol=tolerance))


def _same_sample(uncrossfaded: list[np.ndarray], zones: list[Zone], keys: KeyZone, audio: np.ndarray) -> int | None:
    """Index of an earlier layer's sample at these keys with the same audio, if any."""
    for zone in zones:
        if zone.keys == keys and _same_audio(uncrossfaded[zone.sample], audio):
            return zone.sample
    return None


def normalize(instruments: Sequence[Instrument], peak_db: float = -1.0) -> float:
    """Scale every sample of ``instruments`` by one gain so the loudest peaks at ``peak_db`` dBFS.

    One gain for the whole pack keeps the loudness relations between its instruments (a grid's
    cells, several presets). Returns the gain applied.
    """
    peak = max((float(np.abs(sample.audio).max()) for i in instruments for sample in i.samples), default=0.0)
    if peak == 0.0:
        return 1.0
    gain = 10.0 ** (peak_db / 20.0) / peak
    for instrument in instruments:
        for sample in instrument.samples:
            sample.audio = (sample.audio * gain).astype(np.float32)
    return gain


def midi_frequency(key: int) -> float:
    """Equal-tempered frequency of a MIDI key in Hz (A4 = key 69 = 440 Hz)."""
    return 440.0 * math.pow(2.0, (key - 69) / 12.0)
