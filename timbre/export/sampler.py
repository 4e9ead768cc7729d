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
from dataclasses import dataclass
from typing import Sequence

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


@dataclass(frozen=True)
class _Note:
    preset: int
    keys: KeyZone
    layer: VelocityLayer


def render_instruments(
    model: TimbreModel,
    presets: Sequence[tuple[str, Embedding]],
    plan: SamplingPlan,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> list[Instrument]:
    """Synthesize and loop every sample of each ``(name, embedding)`` preset.

    The roots of one preset and velocity layer go through the decoder ``batch_size`` at a time.

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
    # One decoder call per (preset, layer, run of roots), with the seed set by the run: the layers
    # of a root then share their noise, so layers that differ only in level come out identical
    # (up to that level) and share one sample.
    notes: list[_Note] = []
    audio: list[np.ndarray] = []
    with tqdm(total=len(presets) * plan.notes, desc="synthesizing samples", unit="note", disable=not progress) as bar:
        for index, (_, embedding) in enumerate(presets):
            for layer in plan.layers:
                for first in range(0, len(plan.keys), batch_size):
                    keys = plan.keys[first : first + batch_size]
                    audio.extend(
                        model.synthesize_batch(
                            [embedding] * len(keys),
                            pitches=[zone.root for zone in keys],
                            seconds=[plan.seconds] * len(keys),
                            velocities=[layer.velocity] * len(keys),
                            temperature=temperature,
                            seed=seed + first,
                        )
                    )
                    notes.extend(_Note(index, zone, layer) for zone in keys)
                    bar.update(len(keys))

    instruments = []
    for index, ((name, embedding), layout) in enumerate(zip(presets, fitted)):
        key_up = layout.release_frame * model.hop_length
        # The decoder blends neighbouring frames, so the release can colour the last frame before key-up.
        region = (layout.attack_frames * model.hop_length, key_up - model.hop_length)
        samples: list[Sample] = []
        uncrossfaded: list[np.ndarray] = []  # per sample, to spot layers that came out identical
        zones: list[Zone] = []
        for note, waveform in zip(notes, audio):
            if note.preset != index:
                continue
            full_velocity = waveform / float(velocity_to_gain(note.layer.velocity))
            shared = _same_sample(uncrossfaded, zones, note.keys, full_velocity)
            if shared is None:
                loop = find_loop(full_velocity, model.sample_rate, midi_frequency(note.keys.root), region)
                shared = len(samples)
                name_of_sample = f"k{note.keys.root:03d}_v{note.layer.velocity:03d}"
                samples.append(Sample(name_of_sample, crossfade_loop(full_velocity, loop), note.keys.root, loop, key_up))
                uncrossfaded.append(full_velocity)
            zones.append(Zone(shared, note.keys, note.layer))
        release = layout.release_seconds
        instruments.append(Instrument(name, embedding.source, samples, zones, release, model.sample_rate))
    return instruments


def _same_sample(uncrossfaded: list[np.ndarray], zones: list[Zone], keys: KeyZone, audio: np.ndarray) -> int | None:
    """Index of an earlier layer's sample at these keys with the same audio, if any."""
    tolerance = 1e-5 * max(float(np.abs(audio).max()), 1e-12)
    for zone in zones:
        earlier = uncrossfaded[zone.sample]
        if zone.keys == keys and earlier.shape == audio.shape and np.allclose(earlier, audio, rtol=0, atol=tolerance):
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
