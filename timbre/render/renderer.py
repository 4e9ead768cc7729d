"""MIDI to audio through learned timbres: plan the notes, synthesize each distinct one once, mix.

Rendering happens in two steps.

:func:`plan_render` reads the notes (:mod:`timbre.render.notes`), gives every pitched track a
timbre (assigned with ``timbres``/``morphs``, else the bundled timbre of its General MIDI
program), and turns each note into a job: the track's embedding fitted to the note's duration
(attack kept, sustain stretched, release appended; :meth:`timbre.Embedding.fit_to_duration`),
the note's pitch (moved by octaves into the model's range) and velocity. Durations are quantised
to the embedding frame (hop 512 = 32 ms, the decoder's own time resolution), so identical notes
(same timbre, pitch, velocity and duration in frames) become one job with several placements:
that is the note cache. Drum tracks are skipped.

:func:`render_plan` synthesizes the jobs in batches of similar length through the model's decoder
(one :meth:`~timbre.TimbreModel.synthesize_batch` call per batch), gives each note raised-cosine
fades (5 ms in; out over the last 50 ms of its release, or over the whole release where ``release``
cut it short, so a cut note dies away instead of stopping with a click of spectral splatter),
overlap-adds it at each of its onsets with its track's gain, and scales the mix to a peak of
``peak_db`` dBFS, so the result never clips.

Which timbre, morph and gain each track gets is decided by :mod:`timbre.render.assign`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from tqdm.auto import tqdm

from timbre.constants import DEFAULT_PITCH_RANGE
from timbre.embedding import Embedding
from timbre.errors import ConfigError
from timbre.render.assign import Timbre, TrackTimbre, assign_tracks, describe_source
from timbre.render.notes import MidiSource, TrackNotes, read_tracks, require_notes
from timbre.render.timbres import DEFAULT_TIMBRE_SET, TimbreResolver, TimbreSet
from timbre.runtime import threads
from timbre.synthesizer import TimbreModel

logger = logging.getLogger(__name__)

# The pitches the training data covers; a model's checkpoint may state its own ("pitch_range").
FADE_IN_SECONDS = 0.005
# A mix whose peak is below this (-80 dBFS) is silence: it is not normalised up to peak_db.
SILENT_MIX_PEAK = 1e-4
FADE_OUT_SECONDS = 0.05
# Threads of the parallel decoder's synthesis. Its work per batch is frame-rate convolutions and
# memory-bound sample-rate arithmetic: on 2 cores a second thread did not make it faster, idle or
# busy, and beside another process each op waited for whichever thread had lost its core
# (benchmarks/contention.py, job render). Encoding the timbres (plan_render) keeps every core.
PARALLEL_SYNTHESIS_THREADS = 1


@dataclass
class NoteJob:
    """One distinct note to synthesize, and where it sounds.

    Attributes:
        embedding: the timbre fitted to the note (``[frames, dim]``; key up at ``release_frame``).
        pitch: MIDI pitch played (after octave folding).
        velocity: MIDI velocity.
        fade_out: seconds of fade at the end of the note.
        placements: ``(onset sample, amplitude gain)`` of every occurrence.
    """

    embedding: Embedding
    pitch: int
    velocity: int
    fade_out: float = FADE_OUT_SECONDS
    placements: list[tuple[int, float]] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return self.embedding.frames * self.embedding.hop_length


@dataclass
class TrackPlan:
    """How one track is rendered.

    Attributes:
        track: the track's notes.
        timbre: where its timbre comes from ('' for skipped tracks).
        gain_db: its gain in dB.
        octave_shifted: notes moved by octaves into the model's pitch range.
        skipped: why the track is not rendered (None when it is).
    """

    track: TrackNotes
    timbre: str = ""
    gain_db: float = 0.0
    octave_shifted: int = 0
    skipped: str | None = None

    def describe(self) -> str:
        """One line for ``--verbose``."""
        track = self.track
        head = f"{track.describe()}, program {track.program}, {len(track.notes)} notes"
        if self.skipped:
            return f"{head}: skipped ({self.skipped})"
        gain = f", gain {self.gain_db:+g} dB" if self.gain_db else ""
        shifted = f", {self.octave_shifted} moved by octaves" if self.octave_shifted else ""
        return f"{head}: {self.timbre}{gain}{shifted}"


@dataclass
class RenderPlan:
    """Everything :func:`render_plan` needs: the distinct notes and where each one goes.

    Attributes:
        jobs: the distinct notes, shortest first.
        tracks: how each track of the file is rendered.
        sample_rate: audio rate.
        samples: length of the mix (up to the end of the last note's release).
        music_seconds: duration of the music rendered: from the window's start to the last key up.
        plan_seconds: wall time spent planning (mostly encoding the timbres).
    """

    jobs: list[NoteJob]
    tracks: list[TrackPlan]
    sample_rate: int
    samples: int
    music_seconds: float
    plan_seconds: float

    @property
    def notes(self) -> int:
        """Notes played (placements)."""
        return sum(len(job.placements) for job in self.jobs)

    @property
    def unique_notes(self) -> int:
        """Notes synthesized."""
        return len(self.jobs)

    @property
    def cache_hits(self) -> int:
        """Notes played from an already synthesized identical note."""
        return self.notes - self.unique_notes


@dataclass
class RenderResult:
    """A rendered piece.

    Attributes:
        audio: ``[samples]`` float32, peak at ``peak_db`` dBFS (silence stays silent).
        sample_rate: its rate in Hz.
        plan: the plan it was rendered from (tracks, jobs, cache statistics).
        gain: the factor the mix was scaled by to reach the peak level.
        wall_seconds: time spent planning (encoding) and synthesizing.
    """

    audio: np.ndarray
    sample_rate: int
    plan: RenderPlan
    gain: float
    wall_seconds: float

    @property
    def seconds(self) -> float:
        """Length of the audio."""
        return self.audio.shape[0] / self.sample_rate

    @property
    def realtime_factor(self) -> float:
        """Seconds of music (``plan.music_seconds``) rendered per second of wall time."""
        return self.plan.music_seconds / self.wall_seconds if self.wall_seconds > 0 else math.inf


def plan_render(
    midi: MidiSource,
    model: TimbreModel,
    timbres: Mapping[str, Timbre] | None = None,
    morphs: Mapping[str, Sequence[Timbre]] | None = None,
    gains: Mapping[str, float] | None = None,
    *,
    timbre_set_dir: str | os.PathLike = DEFAULT_TIMBRE_SET,
    start: float = 0.0,
    end: float | None = None,
    release: float | None = None,
    interpolation: str = "slerp",
    progress: bool = False,
) -> RenderPlan:
    """Read ``midi`` and decide what to synthesize (see the module docstring).

    Args:
        midi: a MIDI file or a symusic score.
        model: the model that encodes the timbres and will synthesize the notes.
        timbres: ``{track key: source}``; a key is a track index (``"0"``), a track name,
            ``"program:N"`` (every track of that program) or ``"all"``; more specific keys win
            (index, then name, then program, then all). A source is a string (see
            :mod:`timbre.render.timbres`), a parsed :class:`TimbreSource` or an :class:`Embedding`.
            Tracks without one play the bundled timbre of their program.
        morphs: ``{track key: [source, source, ...]}``: the track moves through these timbres,
            evenly spaced over the piece (at least two); a morph overrides ``timbres``.
        gains: ``{track key: gain in dB}``.
        timbre_set_dir: the timbre set for ``gm:N`` sources and unassigned tracks.
        start, end: the window of the piece to render, in seconds (notes starting in it).
        release: cap on each note's release (seconds after key up); None keeps the timbre's full
            release (1 s for NSynth notes). Shorter is faster, mostly with the autoregressive decoder.
        interpolation: ``"slerp"`` or ``"lerp"`` for blends and morphs.
        progress: show the refinement of each timbre file encoded (the model's default steps).

    Raises:
        MidiError: unreadable file, or no pitched notes in the window.
        ConfigError: an unknown track key or timbre source, or a bad option.
        AudioError: a timbre file that cannot be read.
    """
    began = time.perf_counter()
    if release is not None and not (math.isfinite(release) and release >= 0):
        raise ConfigError(f"release must be a number of seconds >= 0, got {release}")
    tracks = read_tracks(midi, start, end)
    require_notes(tracks, midi, start, end)
    resolver = TimbreResolver(model, TimbreSet(timbre_set_dir), interpolation, progress)
    assignments = assign_tracks(tracks, timbres, morphs, gains)
    low, high = _pitch_range(model)
    hop, rate = model.hop_length, model.sample_rate
    release_frames = None if release is None else math.ceil(release * rate / hop - 1e-9)
    # The morph runs from the first to the last onset of the whole piece, over all tracks.
    pitched = [note for track in tracks if not track.is_drum for note in track.notes]
    first_onset, last_onset = min(n.onset for n in pitched), max(n.onset for n in pitched)
    music_seconds = max(n.onset + n.duration for n in pitched)  # durations are cut at the window's end

    jobs: dict[tuple, NoteJob] = {}
    plans = []
    for track in tracks:
        sources, gain_db = assignments[track.index].sources, assignments[track.index].gain_db
        plan = TrackPlan(track, gain_db=gain_db)
        plans.append(plan)
        if track.is_drum:
            plan.skipped = "drum track; percussion is not rendered"
            if track.notes:
                logger.warning("%s is a drum track: skipped (percussion is not rendered)", track.describe())
            continue
        if not track.notes:
            plan.skipped = "no notes in the window"
            continue
        plan.timbre = ("morph " if len(sources) > 1 else "") + " -> ".join(
            describe_source(s, resolver) for s in sources
        )
        timbre_of = TrackTimbre([resolver.resolve(source) for source in sources], resolver, first_onset, last_onset)
        amplitude = 10.0 ** (gain_db / 20.0)
        for note in track.notes:
            pitch = fold_pitch(note.pitch, low, high)
            plan.octave_shifted += pitch != note.pitch
            timbre_key, embedding = timbre_of(note.onset)
            hold_frames = max(1, round(note.duration * rate / hop))
            key = (timbre_key, pitch, note.velocity, hold_frames)
            if key not in jobs:
                fitted, cut = _fit(embedding, hold_frames, release_frames)
                fade_out = FADE_OUT_SECONDS
                if cut and release_frames is not None:  # only a release length asked for cuts a note
                    fade_out = max(FADE_OUT_SECONDS, release_frames * hop / rate)
                jobs[key] = NoteJob(fitted, pitch, note.velocity, fade_out)
            jobs[key].placements.append((round(note.onset * rate), amplitude))
        if plan.octave_shifted:
            logger.warning(
                "%s: %d of %d notes outside the model's pitch range %d-%d were moved by octaves",
                track.describe(), plan.octave_shifted, len(track.notes), low, high,
            )  # fmt: skip

    ordered = sorted(jobs.values(), key=lambda job: job.samples)  # similar lengths batch together
    samples = max(onset + job.samples for job in ordered for onset, _ in job.placements)
    return RenderPlan(ordered, plans, rate, samples, music_seconds, time.perf_counter() - began)


def render_plan(
    plan: RenderPlan,
    model: TimbreModel,
    *,
    batch_size: int = 32,
    temperature: float | None = None,
    seed: int = 0,
    peak_db: float = -1.0,
    progress: bool = False,
) -> RenderResult:
    """Synthesize the notes of ``plan`` and mix them.

    Args:
        plan: from :func:`plan_render` with the same ``model``.
        model: the model that synthesizes.
        batch_size: notes per decoder call.
        temperature: sampling temperature of the autoregressive decoder.
        seed: the same seed and plan give the same audio.
        peak_db: peak level of the mix in dBFS (at most 0).
        progress: show a progress bar.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if not peak_db <= 0:
        raise ConfigError(f"peak level must be at most 0 dBFS, got {peak_db}")
    began = time.perf_counter()
    mix = np.zeros(plan.samples, dtype=np.float64)
    with (
        _synthesis_threads(model),
        tqdm(total=plan.unique_notes, unit="note", desc="synthesizing", disable=not progress) as bar,
    ):
        for batch_index, first in enumerate(range(0, len(plan.jobs), batch_size)):
            batch = plan.jobs[first : first + batch_size]
            audio = model.synthesize_batch(
                [job.embedding for job in batch], [job.pitch for job in batch],
                velocities=[job.velocity for job in batch], temperature=temperature, seed=seed + batch_index,
            )  # fmt: skip
            for row, job in enumerate(batch):
                note = audio[row, : job.samples] * fade_envelope(job.samples, plan.sample_rate, job.fade_out)
                for onset, amplitude in job.placements:
                    mix[onset : onset + job.samples] += amplitude * note
            bar.update(len(batch))
    peak = float(np.abs(mix).max()) if mix.size else 0.0
    if peak < SILENT_MIX_PEAK:
        # Normalising a near-silent mix to peak_db would only blow up the decoder's noise floor.
        logger.warning(
            "the mix is silent (peak %s): the timbres decode to silence for these notes; it is left unnormalised",
            f"{20 * math.log10(peak):.0f} dBFS" if peak > 0 else "0",
        )
        gain = 1.0
    else:
        gain = 10.0 ** (peak_db / 20.0) / peak
    logger.info(
        "notes: %d played, %d synthesized, %d from the cache (%.0f%%)",
        plan.notes, plan.unique_notes, plan.cache_hits, 100.0 * plan.cache_hits / max(plan.notes, 1),
    )  # fmt: skip
    wall = plan.plan_seconds + time.perf_counter() - began
    return RenderResult((mix * gain).astype(np.float32), plan.sample_rate, plan, gain, wall)


def render_midi(
    midi: MidiSource,
    model: TimbreModel,
    timbres: Mapping[str, Timbre] | None = None,
    morphs: Mapping[str, Sequence[Timbre]] | None = None,
    gains: Mapping[str, float] | None = None,
    *,
    timbre_set_dir: str | os.PathLike = DEFAULT_TIMBRE_SET,
    start: float = 0.0,
    end: float | None = None,
    release: float | None = None,
    interpolation: str = "slerp",
    batch_size: int = 32,
    temperature: float | None = None,
    seed: int = 0,
    peak_db: float = -1.0,
    progress: bool = False,
) -> RenderResult:
    """Render a MIDI file through learned timbres: :func:`plan_render` then :func:`render_plan`.

    >>> model = timbre.load()
    >>> result = render_midi("song.mid", model, {"0": "flute.wav", "Bass": "gm:32"})
    >>> timbre.save_wav("song.wav", result.audio, result.sample_rate)
    """
    plan = plan_render(
        midi, model, timbres, morphs, gains, timbre_set_dir=timbre_set_dir, start=start, end=end,
        release=release, interpolation=interpolation, progress=progress,
    )  # fmt: skip
    for track in plan.tracks:
        logger.info("%s", track.describe())
    return render_plan(
        plan, model, batch_size=batch_size, temperature=temperature, seed=seed, peak_db=peak_db, progress=progress
    )


def fold_pitch(pitch: int, low: int, high: int) -> int:
    """Move ``pitch`` by whole octaves into ``[low, high]`` (clamped if the range is under an octave)."""
    if pitch < low:
        pitch += 12 * math.ceil((low - pitch) / 12)
    elif pitch > high:
        pitch -= 12 * math.ceil((pitch - high) / 12)
    return min(max(pitch, low), high)


def fade_envelope(samples: int, sample_rate: int, fade_out_seconds: float = FADE_OUT_SECONDS) -> np.ndarray:
    """Gain ``[samples]``: raised-cosine fades, 5 ms in and ``fade_out_seconds`` out (shrunk for short notes)."""
    fade_in = min(round(FADE_IN_SECONDS * sample_rate), samples // 2)
    fade_out = min(round(fade_out_seconds * sample_rate), samples - fade_in)
    envelope = np.ones(samples, dtype=np.float32)
    envelope[:fade_in] = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade_in) / fade_in)
    envelope[samples - fade_out :] = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, fade_out + 1) / fade_out)
    return envelope


def _fit(embedding: Embedding, hold_frames: int, release_frames: int | None) -> tuple[Embedding, bool]:
    """``embedding`` held for exactly ``hold_frames`` frames, its release cut to ``release_frames``.

    Returns:
        The fitted embedding, and whether its release was cut.
    """
    # Half a frame short of the target: fit_to_duration rounds up, and a float product of exactly
    # hold_frames could round up to one frame more.
    seconds = (hold_frames - 0.5) * embedding.hop_length / embedding.sample_rate
    fitted = embedding.fit_to_duration(seconds)
    if release_frames is not None and fitted.frames > fitted.release_frame + release_frames:
        return replace(fitted, tensor=fitted.tensor[: fitted.release_frame + release_frames]), True
    return fitted, False


def _synthesis_threads(model: TimbreModel) -> contextlib.AbstractContextManager:
    """The thread count synthesis runs with: :data:`PARALLEL_SYNTHESIS_THREADS` for the parallel
    decoder; the autoregressive engine chooses its own (one thread per group of notes)."""
    if model.is_autoregressive:
        return contextlib.nullcontext()
    return threads(PARALLEL_SYNTHESIS_THREADS)


def _pitch_range(model: TimbreModel) -> tuple[int, int]:
    low, high = model.info.get("pitch_range") or DEFAULT_PITCH_RANGE
    return int(low), int(high)
