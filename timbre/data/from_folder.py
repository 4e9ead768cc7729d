"""An NSynth-layout note dataset from any folder of recordings (``timbre dataset from-folder``).

A sound designer's folder holds one-shots, sustained notes and short phrases, at any rate, mono or
stereo, with names that say nothing about pitch. :func:`build_from_folder` walks it recursively and
turns every note it can trust into an NSynth note (4 s, 16 kHz mono, the attack at the start):

1. Read: every file whose suffix is an audio format (:data:`AUDIO_SUFFIXES`) that libsndfile
   decodes; other files are counted as ignored. Unreadable files are rejected with the decoder's
   reason. The folder is only read, never written (an output inside it is refused).
2. Notes: the first sound starts one; each later onset of librosa's spectral-flux detector
   (:mod:`timbre.data.onsets`; backtracked to the energy minimum before the attack) that raises
   the level by at least :data:`ONSET_RISE_DB` starts another (tremolo, vibrato and noise flicker
   do not; a file whose level never rises that much is not searched). A note runs to the next
   onset or to the point where it decays :data:`TAIL_DB` below its peak.
3. Pitch by PESTO (an independent tracker; its weights ship inside the ``pesto-pitch`` wheel), every
   80 ms over the note's first :data:`PITCH_WINDOW_SECONDS`, on frames within 30 dB of the note's
   loudest (the network runs on those frames only). The note's pitch is the median, checked
   against its octave and twelfth by the spectrum (see :data:`OCTAVE_CANDIDATES`); it is
   *pitched* when at least :data:`MIN_STEADY_FRACTION` of the frames lie within 50 cents of the
   median or an octave of it (noise and drums wander, real notes hold). PESTO's confidence is kept
   as metadata but not used to reject: it stays low on many real instrument notes whose pitch it
   tracks exactly (see :mod:`timbre.evaluation.metrics`).
4. Rejections, each with a reason in the report: unreadable, silent, too short (less than
   :data:`MIN_NOTE_SECONDS` of sound), clipped (at least :data:`CLIPPED_RUNS` runs of
   :data:`CLIP_RUN` samples stuck at full scale in the original file), unpitched, pitch outside
   the MIDI range.
5. Shaping: the note is retuned to its nearest MIDI pitch by resampling (the decoder renders
   integer MIDI pitches; the measured deviation is kept in ``pitch_cents``), cut or padded to
   ``seconds`` from 5 ms before its onset (the attack kept whole; a 10 ms fade before the next note,
   100 ms where a longer note is cut at ``seconds``), and
   scaled so that its loudest 64 ms are at :data:`TARGET_LEVEL_DBFS` (the median level of FluidR3
   notes at velocity 100, the velocity every note gets), or lower when its peak would clip.
6. Splits: ``nsynth-train`` and ``nsynth-valid``, the held-out notes fine-tuning stops on and
   reports on: every ``1 / valid``-th note in pitch order, so they spread over the pitch range.

Output: ``OUT/nsynth-{train,valid}/examples.json`` and ``audio/``, ``OUT/report.json`` and
``report.md`` (kept and rejected counts, every rejection with its reason), ``OUT/pitch_histogram.png``.
Every note records its ``source_file``, ``source_seconds`` (onset), ``pitch_estimate``
(fractional MIDI), ``pitch_cents`` and ``pitch_confidence``.

Deterministic and resumable: files are processed in sorted order and named after their path; the
analysis of each finished file is kept in ``OUT/.from_folder_state.json`` (rewritten atomically
every few seconds, and when interrupted), so a re-run skips files already done and unchanged
(same size and modification time). Every output file is written atomically.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
import torchaudio.transforms
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from timbre.data.augment import shift_pitch
from timbre.data.families import NSYNTH_FAMILIES, NSYNTH_QUALITIES, NSYNTH_SOURCES
from timbre.data.nsynth import AUDIO_DIR, EXAMPLES_FILE
from timbre.data.onsets import detect_onsets
from timbre.data.pesto_fast import ConstantQFrames, fast_encoder
from timbre.errors import ConfigError, DatasetError
from timbre.io.audio import SAMPLE_RATE, save_wav, to_mono
from timbre.io.files import atomic_write

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf", ".w64")
SPLITS = ("train", "valid")
STATE_FILE = ".from_folder_state.json"
REPORT_STEM = "report"
HISTOGRAM_FILE = "pitch_histogram.png"
# Bumped when the analysis changes: a state written by another version is not reused.
ANALYSIS_VERSION = 1

SILENCE_PEAK = 1e-4  # -80 dBFS: a file or note quieter than this is silent
LEVEL_WINDOW = 1024  # 64 ms frames for levels
LEVEL_HOP = 256
ONSET_HOP = 256
# An onset after the first must raise the level this much (loudest 50 ms after it against the median
# of the 150 ms before): a tremolo or vibrato of a few dB does not start a note, a new attack does.
ONSET_RISE_DB = 6.0
# Onsets closer than this to the previous one (or to the first sound) belong to the same attack.
MERGE_SECONDS = 0.15
TAIL_DB = 60.0  # a note ends where it has decayed this far below its loudest frame
MIN_NOTE_SECONDS = 0.1
PREROLL_SECONDS = 0.005
FADE_SECONDS = 0.01  # where the next note starts: keep all that can be kept
# Where a note longer than ``seconds`` is cut: a short release instead of a click in mid-sustain.
CUT_FADE_SECONDS = 0.1
# PESTO's network costs per frame and is most of the analysis: 13 frames over the first second
# cost 40% less than 21 over 1.2 s, for one more wrong pitch among the 80 calibration notes below.
PITCH_WINDOW_SECONDS = 1.0
PITCH_STEP_MS = 80.0
PITCH_FRAME_RANGE_DB = 30.0
STEADY_CENTS = 50.0
# Calibrated on 80 notes of three soundfonts and on noises: white, brown and a drum-like burst give
# 12-33%; real notes mostly 90-100%, low bass and brass notes down to 40-60% (octaves count as steady).
MIN_STEADY_FRACTION = 0.5
RETUNE_MIN_CENTS = 2.0  # smaller deviations are left alone (the resampler's grid is 0.9 cent)
# Octave check: PESTO hears the 2nd or 3rd partial of some low notes (and an octave off on some
# others). The candidates f/3, f/2, f, 2f are compared by the contrast of the averaged spectrum at
# their partials against midway between them (mean dB over the partials below OCTAVE_CHECK_HZ): a
# subharmonic of the true pitch has valleys at half its partials, a multiple misses the partials in
# between. PESTO's f stands unless another candidate beats it by OCTAVE_CHECK_MARGIN_DB: on 80
# notes of three soundfonts this fixed 5 of 14 wrong pitches and broke none (a strict "best
# contrast wins" broke inharmonic mallets and high notes with few partials).
OCTAVE_CANDIDATES = (1 / 3, 1 / 2, 1.0, 2.0)
OCTAVE_CHECK_HZ = 4000.0
OCTAVE_CHECK_PARTIALS = 24
OCTAVE_CHECK_MARGIN_DB = 6.0
OCTAVE_CHECK_FFT = 8192
CLIP_LEVEL = 0.999  # of full scale
CLIP_RUN = 3  # consecutive samples at full scale
CLIPPED_RUNS = 3
# Median loudest-64-ms level of FluidR3_GM notes at velocity 100 in the training data (-27.7 dBFS).
TARGET_LEVEL_DBFS = -28.0
PEAK_LIMIT = 0.99
VELOCITY = 100
PESTO_MODEL = "mir-1k_g7"
# Notes per PESTO call.
_PITCH_BATCH = 32
# The state is rewritten at most this often (seconds), and at the end.
_STATE_SECONDS = 10.0


@dataclass(frozen=True)
class Settings:
    """What a build depends on; a state written with other analysis settings is not reused
    (``instrument_per_folder`` only relabels notes: changing it keeps the analysis)."""

    instrument: str
    seconds: float
    sample_rate: int
    retune: bool
    instrument_per_folder: bool = False
    version: int = ANALYSIS_VERSION

    def instrument_of(self, relative: str) -> str:
        """The instrument of the file at ``relative`` (a path inside the folder, ``/``-separated)."""
        if self.instrument_per_folder and "/" in relative:
            return slug(relative.split("/", 1)[0]) or self.instrument
        return self.instrument


@dataclass
class FolderSummary:
    """What :func:`build_from_folder` did.

    Attributes:
        out: the dataset root.
        files: audio files found; ignored: other files (not an audio format by their suffix).
        notes: kept notes per split.
        rejected: ``[(file, onset seconds or None, reason)]`` for every note or file left out.
        reasons: rejections counted by reason (the reason's first word: ``unpitched``, ``silent`` ...).
        resumed_files: files whose analysis an earlier run had finished.
        seconds: wall time of this run.
        startup_seconds: until the first file's analysis came back (loading the pitch tracker, starting workers).
        notes_per_second: notes kept per second of analysis after that (0 when there was too little to time).
    """

    out: Path
    files: int = 0
    ignored: int = 0
    notes: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[str, float | None, str]] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    resumed_files: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0
    notes_per_second: float = 0.0

    def describe(self) -> str:
        """A few human-readable lines."""
        kept = sum(self.notes.values())
        lines = [
            f"dataset written to {self.out}",
            f"  {self.files} audio files ({self.resumed_files} done by an earlier run), "
            f"{self.ignored} other files ignored",
            f"  kept {kept} notes: " + ", ".join(f"{split} {self.notes.get(split, 0)}" for split in SPLITS),
            f"  rejected {len(self.rejected)}: "
            + (", ".join(f"{reason} {count}" for reason, count in sorted(self.reasons.items())) or "none"),
            f"  {self.seconds:.1f} s ({self.startup_seconds:.1f} s to start, "
            f"then {self.notes_per_second:.1f} notes/s); "
            f"report: {self.out / (REPORT_STEM + '.md')}",
        ]
        return "\n".join(lines)


def slug(text: str) -> str:
    """``text`` in lower case with every run of other characters than ``a-z0-9`` as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# ----------------------------------------------------------------------------- analysis


@dataclass
class _Note:
    """One note found in a file: where it is and what it sounds like (JSON-able)."""

    name: str
    source_file: str
    source_seconds: float
    pitch: int
    pitch_estimate: float
    pitch_cents: float
    pitch_confidence: float
    gain_db: float


def _frame_levels(audio: np.ndarray) -> np.ndarray:
    """``[ceil(samples / LEVEL_HOP)]`` RMS level (dBFS) of ``LEVEL_WINDOW``-sample frames, frame k from k * hop."""
    count = -(-audio.shape[0] // LEVEL_HOP)
    per_hop = LEVEL_WINDOW // LEVEL_HOP
    # Each window is whole hops: sum the energy of every hop once, then neighbouring hops.
    squares = np.pad(audio.astype(np.float64), (0, (count + per_hop) * LEVEL_HOP - audio.shape[0])) ** 2
    hop_energy = squares.reshape(-1, LEVEL_HOP).sum(axis=1)
    energy = np.lib.stride_tricks.sliding_window_view(hop_energy, per_hop)[:count].sum(axis=1)
    return 10.0 * np.log10(energy / LEVEL_WINDOW + 1e-20)


def _level_rises(levels: np.ndarray, sample_rate: int) -> np.ndarray:
    """``[frames]`` the rise of ``levels [frames]`` at each frame.

    The loudest 50 ms from the frame on against the median of the 150 ms up to it, in dB.
    """
    after, before = round(0.05 * sample_rate) // LEVEL_HOP, round(0.15 * sample_rate) // LEVEL_HOP
    ahead = np.pad(levels, (0, after), constant_values=-np.inf)
    loudest_after = np.lib.stride_tricks.sliding_window_view(ahead, after + 1).max(axis=1)
    median_before = np.empty_like(levels)
    median_before[:before] = [np.median(levels[: frame + 1]) for frame in range(min(before, levels.shape[0]))]
    if levels.shape[0] > before:
        median_before[before:] = np.median(np.lib.stride_tricks.sliding_window_view(levels, before + 1), axis=1)
    return loudest_after - median_before


def _resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """:func:`timbre.io.audio.resample` (the same samples), its filter computed once per pair of rates."""
    if orig_rate == new_rate:
        return audio.astype(np.float32, copy=False)
    with torch.inference_mode():
        return _resampler(orig_rate, new_rate)(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))).numpy()


@functools.lru_cache(maxsize=8)
def _resampler(orig_rate: int, new_rate: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig_rate, new_rate, dtype=torch.float32)


def _clip_runs(channels: np.ndarray) -> np.ndarray:
    """Start samples (at the file's rate) of runs of ``CLIP_RUN`` samples at full scale, in any channel."""
    if -CLIP_LEVEL < channels.min() and channels.max() < CLIP_LEVEL:
        return np.zeros(0, dtype=np.int64)
    at_rail = (np.abs(channels) >= CLIP_LEVEL).any(axis=1).astype(np.int8)
    if not at_rail.any():
        return np.zeros(0, dtype=np.int64)
    edges = np.diff(np.concatenate([[0], at_rail, [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return starts[stops - starts >= CLIP_RUN]


def _onsets(audio: np.ndarray, sample_rate: int) -> list[int]:
    """Note starts in samples: the first sound, then the spectral-flux onsets that raise the level."""
    levels = _frame_levels(audio)
    peak_level = levels.max()
    sounding = np.flatnonzero(levels > max(peak_level - TAIL_DB, 20 * math.log10(SILENCE_PEAK)))
    if sounding.size == 0:
        return []
    first_sound = int(sounding[0]) * LEVEL_HOP
    onsets = [first_sound]
    rises = _level_rises(levels, sample_rate)
    # A second note needs a rise somewhere after the first one's attack: most files (one-shots)
    # have none, and the spectral flux is not needed to know that they hold one note.
    earliest = math.ceil((first_sound + MERGE_SECONDS * sample_rate) / LEVEL_HOP)
    if not (rises[earliest:] >= ONSET_RISE_DB).any():
        return onsets
    for onset in (int(sample) for sample in detect_onsets(audio, sample_rate, ONSET_HOP)):
        frame = onset // LEVEL_HOP
        if onset - onsets[-1] < MERGE_SECONDS * sample_rate or frame >= rises.shape[0]:
            continue
        if rises[frame] >= ONSET_RISE_DB:
            onsets.append(onset)
    return onsets


def _note_end(audio: np.ndarray, start: int, stop: int) -> int:
    """Where the sound between ``start`` and ``stop`` has decayed ``TAIL_DB`` below its loudest frame."""
    levels = _frame_levels(audio[start:stop])
    floor = max(levels.max() - TAIL_DB, 20 * math.log10(SILENCE_PEAK))
    sounding = np.flatnonzero(levels > floor)
    if sounding.size == 0:
        return start
    return min(stop, start + (int(sounding[-1]) + 1) * LEVEL_HOP + LEVEL_WINDOW // 2)


class _PitchTracker:
    """PESTO, loaded once per process, run on the frames a note's pitch is judged on."""

    def __init__(self, sample_rate: int) -> None:
        import pesto

        self.sample_rate = sample_rate
        self.model = pesto.load_model(PESTO_MODEL, step_size=PITCH_STEP_MS, sampling_rate=sample_rate).eval()
        self.constant_q = ConstantQFrames(self.model.preprocessor)
        self.encoder = fast_encoder(self.model.encoder)
        self.reduce_activations = pesto.utils.reduce_activations
        self.hop = round(PITCH_STEP_MS * sample_rate / 1000)
        # PESTO's output bins are rolled by its tuning offset before they are reduced to a pitch.
        self.roll = -round(float(self.model.shift) * self.model.bins_per_semitone)

    def judged_frames(self, windows: np.ndarray, frames: int) -> np.ndarray:
        """``[notes, frames]`` True for the frames of ``windows [notes, samples]`` within 30 dB of their note's loudest.

        Frame k of PESTO is centred on sample k * hop; its level is that of the ``LEVEL_WINDOW``
        samples around it.
        """
        padded = np.pad(windows.astype(np.float64), ((0, 0), (LEVEL_WINDOW // 2, LEVEL_WINDOW // 2)))
        around = np.lib.stride_tricks.sliding_window_view(padded, LEVEL_WINDOW, axis=1)[:, :: self.hop][:, :frames]
        levels = 10.0 * np.log10(np.mean(around**2, axis=2) + 1e-20)
        return levels >= levels.max(axis=1, keepdims=True) - PITCH_FRAME_RANGE_DB

    @torch.inference_mode()
    def __call__(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional MIDI pitch and confidence ``[notes, frames]`` of ``windows [notes, samples]`` (NaN: not judged).

        PESTO sees one frame at a time, and costs more per frame than everything else the
        analysis does: ``PESTO.forward`` runs here on the judged frames only
        (:meth:`judged_frames`), its constant-Q transform and encoder in their faster forms
        (:mod:`timbre.data.pesto_fast`).
        """
        model = self.model
        pitches, confidences = [], []
        for start in range(0, len(windows), _PITCH_BATCH):  # bounds memory on long phrases
            chunk = np.ascontiguousarray(windows[start : start + _PITCH_BATCH])
            judged = self.judged_frames(chunk, self.constant_q.frames(chunk.shape[1]))
            decibels = self.constant_q(torch.from_numpy(chunk), torch.from_numpy(judged))  # [judged frames, bins]
            # PESTO scales its dB spectrum to log power in place; the exp of that feeds its confidence.
            log_power = decibels.mul_(math.log(10) / 10.0).unsqueeze(1)  # [judged frames, 1 harmonic, bins]
            confidence = model.confidence(log_power.exp().squeeze(1))
            activations = self.encoder(model.crop_cqt(log_power)).roll(self.roll, -1)
            pitch = self.reduce_activations(activations, reduction=model.reduction)
            pitches.append(np.full(judged.shape, np.nan))
            pitches[-1][judged] = pitch.double().numpy()
            confidences.append(np.full(judged.shape, np.nan))
            confidences[-1][judged] = confidence.double().numpy()
        return np.concatenate(pitches), np.concatenate(confidences)


def _judge_pitch(pitch: np.ndarray, confidence: np.ndarray) -> tuple[float, float, float]:
    """``(median pitch, confidence, steady fraction)`` of one note's judged frames (not NaN in ``pitch [frames]``)."""
    used = ~np.isnan(pitch)
    median = float(np.median(pitch[used]))
    # Octave slips of the tracker on a held note count as steady; noise lands anywhere.
    distance = np.abs((pitch[used] - median + 6.0) % 12.0 - 6.0)
    steady = float(np.mean(distance * 100.0 <= STEADY_CENTS))
    return median, float(np.median(confidence[used])), steady


def _harmonic_contrast(spectrum: np.ndarray, sample_rate: int, f0: float) -> float:
    """Mean dB of the averaged magnitude ``spectrum`` at the partials of ``f0`` over midway between them."""
    bin_hz = sample_rate / OCTAVE_CHECK_FFT
    count = int(min(OCTAVE_CHECK_PARTIALS, OCTAVE_CHECK_HZ // f0))
    if count < 2 or f0 / bin_hz < 4:  # too few partials, or partials closer than the resolution
        return -np.inf

    def level(frequency: float) -> float:
        centre = frequency / bin_hz  # the loudest bin within 3% (partials stretch, tuning drifts)
        low, high = int(centre * 0.97), int(math.ceil(centre * 1.03)) + 1
        return float(spectrum[low:high].max())

    partials = np.array([level(k * f0) for k in range(1, count + 1)])
    between = np.array([level((k - 0.5) * f0) for k in range(1, count + 1)])
    return float(np.mean(20.0 * np.log10((partials + 1e-9) / (between + 1e-9))))


def _check_octave(estimate: float, window: np.ndarray, sample_rate: int) -> float:
    """``estimate`` (fractional MIDI) moved to the octave or twelfth the spectrum supports best."""
    frames = np.lib.stride_tricks.sliding_window_view(window, OCTAVE_CHECK_FFT)[:: OCTAVE_CHECK_FFT // 4]
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(OCTAVE_CHECK_FFT) / OCTAVE_CHECK_FFT)  # periodic
    spectrum = np.abs(np.fft.rfft(frames * hann, axis=1)).mean(axis=0)
    f0 = 440.0 * 2.0 ** ((estimate - 69.0) / 12.0)
    contrasts = [_harmonic_contrast(spectrum, sample_rate, f0 * factor) for factor in OCTAVE_CANDIDATES]
    own = contrasts[OCTAVE_CANDIDATES.index(1.0)]
    best = int(np.argmax(contrasts))
    if not np.isfinite(own) or contrasts[best] < own + OCTAVE_CHECK_MARGIN_DB:
        return estimate
    return estimate + 12.0 * math.log2(OCTAVE_CANDIDATES[best])


def _fade(audio: np.ndarray, samples: int, at_start: bool) -> None:
    """Fade ``samples`` at the start or the end of ``audio`` in place (half a raised cosine)."""
    samples = min(samples, audio.shape[0])
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, samples, dtype=np.float32))
    if at_start:
        audio[:samples] *= ramp
    else:
        audio[audio.shape[0] - samples :] *= ramp[::-1]


def analyse_file(
    path: Path, relative: str, name_stem: str, settings: Settings, tracker: _PitchTracker
) -> tuple[list[tuple[_Note, np.ndarray]], list[tuple[float | None, str]]]:
    """Find, judge and shape the notes of one file.

    Args:
        path: the file; relative: its path inside the folder (for the report).
        name_stem: the start of its notes' names (instrument and file, unique in the build).

    Returns:
        ``([(note, audio [seconds * sample_rate])], [(onset seconds or None for the whole file, reason)])``.
    """
    try:
        channels, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
        return [], [(None, f"unreadable ({error})")]
    if channels.size == 0:
        return [], [(None, "empty (no samples)")]
    if not np.isfinite(channels).all():
        return [], [(None, "unreadable (NaN or infinite samples)")]
    rate = settings.sample_rate
    audio = _resample(to_mono(channels), int(file_rate), rate)
    if np.abs(audio).max() < SILENCE_PEAK:
        return [], [(None, f"silent (peak below {20 * math.log10(SILENCE_PEAK):.0f} dBFS)")]
    clip_starts = _clip_runs(channels) * rate / file_rate
    onsets = _onsets(audio, rate)
    if not onsets:
        return [], [(None, "silent (no sound above the noise floor)")]

    candidates: list[tuple[int, int, float]] = []  # (start, end, onset seconds)
    rejected: list[tuple[float | None, str]] = []
    for index, onset in enumerate(onsets):
        start = max(0, onset - round(PREROLL_SECONDS * rate))
        stop = onsets[index + 1] if index + 1 < len(onsets) else audio.shape[0]
        end = _note_end(audio, onset, stop)
        seconds = round(onset / rate, 3)
        if end - onset < MIN_NOTE_SECONDS * rate:
            sounding = f"{(end - onset) / rate:.2f} s"
            rejected.append((seconds, f"too short ({sounding} of sound, at least {MIN_NOTE_SECONDS} s)"))
        elif np.count_nonzero((clip_starts >= start) & (clip_starts < end)) >= CLIPPED_RUNS:
            rejected.append((seconds, "clipped (samples stuck at full scale)"))
        else:
            candidates.append((start, end, seconds))
    if not candidates:
        return [], rejected

    window = round(PITCH_WINDOW_SECONDS * rate)
    windows = np.zeros((len(candidates), window), dtype=np.float32)
    for row, (start, end, _) in enumerate(candidates):
        piece = audio[start : min(end, start + window)]
        windows[row, : piece.shape[0]] = piece
    pitches, confidences = tracker(windows)

    notes: list[tuple[_Note, np.ndarray]] = []
    length = round(settings.seconds * rate)
    for row, (start, end, seconds) in enumerate(candidates):
        estimate, confidence, steady = _judge_pitch(pitches[row], confidences[row])
        if steady < MIN_STEADY_FRACTION:
            rejected.append(
                (seconds, f"unpitched (pitch steady within {STEADY_CENTS:.0f} cents on {100 * steady:.0f}% of frames)")
            )
            continue
        estimate = _check_octave(estimate, windows[row], rate)
        pitch = round(estimate)
        if not 0 <= pitch <= 127:
            rejected.append((seconds, f"pitch outside the MIDI range ({estimate:.1f})"))
            continue
        cents = 100.0 * (estimate - pitch)
        note_audio = audio[start:end].copy()
        if settings.retune and abs(cents) >= RETUNE_MIN_CENTS:
            note_audio = shift_pitch(note_audio, -cents)
        cut = note_audio.shape[0] > length
        note_audio = note_audio[:length]
        _fade(note_audio, round(0.001 * rate), at_start=True)
        _fade(note_audio, round((CUT_FADE_SECONDS if cut else FADE_SECONDS) * rate), at_start=False)
        if not cut:
            note_audio = np.pad(note_audio, (0, length - note_audio.shape[0]))
        loudest = float(_frame_levels(note_audio).max())
        gain = 10.0 ** ((TARGET_LEVEL_DBFS - loudest) / 20.0)
        gain = min(gain, PEAK_LIMIT / max(float(np.abs(note_audio).max()), 1e-12))
        name = f"{name_stem}_{len(notes) + 1:02d}-{pitch:03d}-{VELOCITY:03d}" if len(candidates) > 1 else (
            f"{name_stem}-{pitch:03d}-{VELOCITY:03d}"
        )  # fmt: skip
        note = _Note(name, relative, seconds, pitch, round(estimate, 4), round(cents, 2), round(confidence, 4),
                     round(20.0 * math.log10(gain), 2))  # fmt: skip
        notes.append((note, (note_audio * gain).astype(np.float32)))
    return notes, rejected


# ----------------------------------------------------------------------------- the build

# Starting a worker (importing torch and PESTO) costs seconds: small folders are analysed in-process.
_MIN_FILES_PER_WORKER = 24
# The pitch tracker of this process (loaded on its first file; each worker process has its own).
_tracker: _PitchTracker | None = None


@dataclass(frozen=True)
class _FileJob:
    path: Path
    relative: str
    key: list[int]
    stem: str
    settings: Settings


def _analyse_job(job: _FileJob) -> tuple[_FileJob, list[tuple[_Note, np.ndarray]], list[tuple[float | None, str]]]:
    global _tracker
    if _tracker is None:
        _tracker = _PitchTracker(job.settings.sample_rate)
    return (job, *analyse_file(job.path, job.relative, job.stem, job.settings, _tracker))


def _worker_init() -> None:
    # Workers already use every core between them; more threads per worker would only contend:
    # torch's and numpy's BLAS (OpenBLAS spins a thread per core by default; one thread per worker
    # analysed 35% more notes per second with a training running).
    torch.set_num_threads(1)
    threadpool_limits(1)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Forkserver where there is one (a fresh process that imports torch and PESTO once, then forks
    each worker: they start without importing them again), spawn elsewhere. Never plain fork:
    forking a process whose torch threads are running can deadlock."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "pesto"])
    return context


def _run_jobs(
    jobs: list[_FileJob], workers: int
) -> Iterator[tuple[_FileJob, list[tuple[_Note, np.ndarray]], list[tuple[float | None, str]]]]:
    """Results of :func:`analyse_file` for every job, in the jobs' order."""
    workers = min(workers, len(jobs) // _MIN_FILES_PER_WORKER)
    if workers <= 1:
        yield from map(_analyse_job, jobs)
        return
    with _worker_context().Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(_analyse_job, jobs, chunksize=2)


def _check_paths(folder: Path, out: Path) -> None:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder of recordings does not exist")
    resolved_folder, resolved_out = folder.resolve(), out.resolve()
    if resolved_out == resolved_folder or resolved_folder in resolved_out.parents:
        raise DatasetError(f"{out}: is inside the folder of recordings {folder}, which is never written to")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / STATE_FILE).is_file():
        raise DatasetError(f"{out}: is not empty and holds no from-folder build; choose a new or empty folder")


def _audio_files(folder: Path) -> tuple[list[Path], int]:
    """Audio files under ``folder`` sorted by relative path, and how many other files there are."""
    files, ignored = [], 0
    for root, directories, names in os.walk(folder):
        directories.sort()
        for name in names:
            path = Path(root) / name
            if name.startswith("."):
                continue
            if path.suffix.lower() in AUDIO_SUFFIXES:
                files.append(path)
            else:
                ignored += 1
    return sorted(files, key=lambda path: path.relative_to(folder).as_posix()), ignored


def _name_stems(files: Sequence[Path], folder: Path, instrument: str) -> list[str]:
    """A unique name start per file: the instrument and the file's path (a number added on a clash)."""
    stems, used = [], set()
    for path in files:
        base = f"{instrument}_{slug(path.relative_to(folder).with_suffix('').as_posix()) or 'file'}"
        stem, number = base, 2
        while stem in used:
            stem, number = f"{base}_{number}", number + 1
        used.add(stem)
        stems.append(stem)
    return stems


def _file_key(path: Path) -> list[int]:
    status = path.stat()
    return [status.st_size, status.st_mtime_ns]


def _analysis_settings(settings: Settings) -> dict[str, Any]:
    return {key: value for key, value in asdict(settings).items() if key != "instrument_per_folder"}


def _load_state(out: Path, settings: Settings) -> dict[str, Any]:
    try:
        state = json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or state.get("settings") != _analysis_settings(settings):
        return {}
    files = state.get("files")
    return files if isinstance(files, dict) else {}


def _write_json(path: Path, data: Any) -> None:
    with atomic_write(path, "w") as file:
        json.dump(data, file, indent=1)
        file.write("\n")


def _wav_path(out: Path, split: str, name: str) -> Path:
    return out / f"nsynth-{split}" / AUDIO_DIR / f"{name}.wav"


def _find_wav(out: Path, name: str) -> Path | None:
    for split in SPLITS:
        path = _wav_path(out, split, name)
        if path.is_file():
            return path
    return None


def held_out_names(notes: Sequence[dict[str, Any]], fraction: float) -> set[str]:
    """Per instrument (``note["instrument"]``, when given), every ``1 / fraction``-th note in (pitch, name)
    order, starting half a step in: held-out notes spread over each instrument's pitches.

    At least one note of an instrument when ``fraction > 0`` and it has two notes or more; never all of them.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for note in notes:
        groups.setdefault(str(note.get("instrument", "")), []).append(note)
    held_out: set[str] = set()
    for group in groups.values():
        if fraction <= 0 or len(group) < 2:
            continue
        ordered = sorted(group, key=lambda note: (note["pitch"], note["name"]))
        count = min(len(ordered) - 1, max(1, round(fraction * len(ordered))))
        positions = {int((k + 0.5) * len(ordered) / count) for k in range(count)}
        held_out |= {ordered[position]["name"] for position in positions}
    return held_out


def _example(note: dict[str, Any], settings: Settings, family: str | None, source: str | None) -> dict[str, Any]:
    """NSynth's fields of a note (unknown family or source: ``"unknown"``, id -1) and its provenance."""
    return {
        "note_str": note["name"],
        "instrument_str": settings.instrument_of(note["source_file"]),
        "pitch": note["pitch"],
        "velocity": VELOCITY,
        "sample_rate": settings.sample_rate,
        "qualities": [0] * len(NSYNTH_QUALITIES),
        "qualities_str": [],
        "instrument_family": NSYNTH_FAMILIES.index(family) if family else -1,
        "instrument_family_str": family or "unknown",
        "instrument_source": NSYNTH_SOURCES.index(source) if source else -1,
        "instrument_source_str": source or "unknown",
        **{key: note[key] for key in ("source_file", "source_seconds", "pitch_estimate", "pitch_cents")},
        "pitch_confidence": note["pitch_confidence"],
        "gain_db": note["gain_db"],
    }


def build_from_folder(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    *,
    instrument: str | None = None,
    seconds: float = 4.0,
    valid: float = 0.2,
    family: str | None = None,
    source: str | None = None,
    retune: bool = True,
    sample_rate: int = SAMPLE_RATE,
    progress: bool = True,
    workers: int = 1,
    instrument_per_folder: bool = False,
) -> FolderSummary:
    """Find the notes of every recording under ``folder`` and write them as an NSynth-layout dataset.

    See the module docstring for what is kept, how, and what is written.

    Args:
        folder: the recordings (read only; subfolders included).
        out: dataset root to write (created; a re-run into it resumes).
        instrument: name of the instrument (default: the folder's name); letters, digits and ``_``.
        seconds: length of every note.
        valid: fraction of the notes held out (``nsynth-valid``).
        family, source: NSynth family and source labels, when known.
        retune: resample each note onto its nearest MIDI pitch.
        sample_rate: rate of the written notes.
        progress: show a progress bar.
        workers: processes analysing files in parallel (the output does not depend on it).
        instrument_per_folder: each top-level subfolder of ``folder`` is an instrument named after
            it (files directly in ``folder`` are ``instrument``); notes are held out per instrument.

    Raises:
        ConfigError: an argument is out of range.
        DatasetError: the folder does not exist, ``out`` cannot be used, or no note was kept.
    """
    started = time.perf_counter()
    folder, out = Path(folder), Path(out)
    name = slug(instrument if instrument is not None else folder.resolve().name) or "instrument"
    if instrument is not None and name != instrument:
        raise ConfigError(f"instrument name {instrument!r}: use lower-case letters, digits and _ (e.g. {name!r})")
    if not (math.isfinite(seconds) and 0.25 <= seconds <= 60):
        raise ConfigError(f"seconds must be between 0.25 and 60, got {seconds}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if not 0 <= valid < 1:
        raise ConfigError(f"valid must be a fraction in [0, 1), got {valid}")
    if family is not None and family not in NSYNTH_FAMILIES:
        raise ConfigError(f"family {family!r} is not an NSynth family ({', '.join(NSYNTH_FAMILIES)})")
    if source is not None and source not in NSYNTH_SOURCES:
        raise ConfigError(f"source {source!r} is not an NSynth source ({', '.join(NSYNTH_SOURCES)})")
    _check_paths(folder, out)
    settings = Settings(name, float(seconds), int(sample_rate), bool(retune), bool(instrument_per_folder))
    files, ignored = _audio_files(folder)
    if not files:
        raise DatasetError(f"{folder}: holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    stems = _name_stems(files, folder, name)
    out.mkdir(parents=True, exist_ok=True)
    previous = _load_state(out, settings)
    state: dict[str, Any] = {}
    summary = FolderSummary(out=out, files=len(files), ignored=ignored)
    jobs: list[_FileJob] = []
    for path, stem in zip(files, stems):
        relative = path.relative_to(folder).as_posix()
        key = _file_key(path)
        done = previous.get(relative)
        if (
            isinstance(done, dict)
            and done.get("key") == key
            and done.get("stem") == stem
            and all(_find_wav(out, note["name"]) for note in done.get("notes", []))
        ):
            state[relative] = done
            summary.resumed_files += 1
        else:
            jobs.append(_FileJob(path, relative, key, stem, settings))
    order = {path.relative_to(folder).as_posix(): position for position, path in enumerate(files)}

    def save_state() -> None:
        ordered = dict(sorted(state.items(), key=lambda item: order[item[0]]))
        _write_json(out / STATE_FILE, {"settings": _analysis_settings(settings), "files": ordered})

    last_save = time.monotonic()
    bar = tqdm(total=len(files), initial=summary.resumed_files, disable=not progress, unit="file", desc="analysing")
    new_notes, first_result, first_notes = 0, None, 0
    try:
        for job, found, rejected in _run_jobs(jobs, workers):
            for note, audio in found:
                save_wav(_find_wav(out, note.name) or _wav_path(out, "train", note.name), audio, sample_rate)
            new_notes += len(found)
            if first_result is None:  # the rate counts from here: model loading is a one-time cost
                first_result, first_notes = time.perf_counter(), new_notes
            state[job.relative] = {
                "key": job.key,
                "stem": job.stem,
                "notes": [asdict(note) for note, _ in found],
                "rejected": [{"seconds": seconds, "reason": reason} for seconds, reason in rejected],
            }
            bar.update()
            if time.monotonic() - last_save >= _STATE_SECONDS:
                save_state()
                last_save = time.monotonic()
    finally:
        bar.close()
        save_state()
    state = dict(sorted(state.items(), key=lambda item: order[item[0]]))
    if first_result is not None and new_notes > first_notes:
        summary.notes_per_second = (new_notes - first_notes) / (time.perf_counter() - first_result)
    summary.startup_seconds = (first_result or time.perf_counter()) - started

    notes = [note for entry in state.values() for note in entry["notes"]]
    if not notes:
        _write_report(out, folder, settings, state, summary, {}, started)
        raise DatasetError(
            f"{folder}: no usable note in {len(files)} audio files (see {out / (REPORT_STEM + '.md')} for the reasons)"
        )
    held_out = held_out_names(
        [{**note, "instrument": settings.instrument_of(note["source_file"])} for note in notes], valid
    )
    examples: dict[str, dict[str, Any]] = {split: {} for split in SPLITS}
    kept = {note["name"] for note in notes}
    for note in notes:
        split = "valid" if note["name"] in held_out else "train"
        current, wanted = _find_wav(out, note["name"]), _wav_path(out, split, note["name"])
        if current is not None and current != wanted:
            wanted.parent.mkdir(parents=True, exist_ok=True)
            os.replace(current, wanted)
        examples[split][note["name"]] = _example(note, settings, family, source)
    for split in SPLITS:  # notes of an earlier build with other files or settings
        audio_dir = out / f"nsynth-{split}" / AUDIO_DIR
        for stale in audio_dir.glob("*.wav") if audio_dir.is_dir() else ():
            if stale.stem not in kept:
                stale.unlink()
        (out / f"nsynth-{split}" / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
        _write_json(out / f"nsynth-{split}" / EXAMPLES_FILE, dict(sorted(examples[split].items())))
    summary.notes = {split: len(examples[split]) for split in SPLITS}
    _write_report(out, folder, settings, state, summary, examples, started)
    return summary


# ----------------------------------------------------------------------------- report


def _write_report(
    out: Path,
    folder: Path,
    settings: Settings,
    state: dict[str, Any],
    summary: FolderSummary,
    examples: dict[str, dict[str, Any]],
    started: float,
) -> None:
    from timbre.evaluation.report import markdown_table, write_report

    for relative, entry in state.items():
        for rejection in entry["rejected"]:
            summary.rejected.append((relative, rejection["seconds"], rejection["reason"]))
    summary.reasons = dict(Counter(reason.split(" (")[0] for _, _, reason in summary.rejected))
    summary.seconds = time.perf_counter() - started
    pitches = [example["pitch"] for split in examples.values() for example in split.values()]
    held_out = [example["pitch"] for example in examples.get("valid", {}).values()]
    if pitches:
        _plot_pitch_histogram(pitches, held_out, out / HISTOGRAM_FILE, settings.instrument)
    report = {
        "folder": str(folder),
        "instrument": settings.instrument,
        "notes_per_instrument": dict(
            sorted(Counter(e["instrument_str"] for split in examples.values() for e in split.values()).items())
        ),
        "settings": asdict(settings),
        "files": summary.files,
        "ignored_files": summary.ignored,
        "kept": summary.notes,
        "rejected": len(summary.rejected),
        "rejected_by_reason": summary.reasons,
        "notes_per_second": summary.notes_per_second,
        "startup_seconds": summary.startup_seconds,
        "seconds": summary.seconds,
        "files_detail": {
            relative: {"kept": [note["name"] for note in entry["notes"]], "rejected": entry["rejected"]}
            for relative, entry in state.items()
        },
        "pitch_histogram": dict(sorted(Counter(pitches).items())),
    }

    def where(rejection: dict[str, Any]) -> str:
        return f" at {rejection['seconds']:.2f} s" if rejection["seconds"] is not None else ""

    rows = [
        [relative, str(len(entry["notes"])), "; ".join(r["reason"] + where(r) for r in entry["rejected"]) or "-"]
        for relative, entry in state.items()
    ]
    markdown = "\n".join(
        [
            f"# Notes from {folder}",
            "",
            f"Instrument `{settings.instrument}`: {summary.files} audio files, "
            f"{sum(summary.notes.values())} notes kept "
            f"({', '.join(f'{split} {count}' for split, count in summary.notes.items())}), "
            f"{len(summary.rejected)} rejected"
            + (f" ({', '.join(f'{r} {c}' for r, c in sorted(summary.reasons.items()))})" if summary.reasons else "")
            + f"; {summary.ignored} other files ignored.",
            "",
            f"![pitches]({HISTOGRAM_FILE})" if pitches else "",
            "",
            markdown_table(["file", "notes kept", "rejected"], rows),
        ]
    )
    write_report(out, REPORT_STEM, report, markdown)


def _plot_pitch_histogram(pitches: Sequence[int], held_out: Sequence[int], path: Path, instrument: str) -> None:
    """Notes per MIDI pitch, the held-out ones stacked on top, 800 x 300 px."""
    from matplotlib.figure import Figure

    low, high = min(pitches), max(pitches)
    bins = np.arange(low - 0.5, high + 1.5)
    remaining = list((Counter(pitches) - Counter(held_out)).elements())
    figure = Figure(figsize=(8, 3), dpi=100, layout="constrained")
    ax = figure.add_subplot()
    ax.hist([remaining, list(held_out)], bins=list(bins), stacked=True, label=["train", "held out (valid)"])
    ax.set_xlabel("MIDI pitch (PESTO, rounded)")
    ax.set_ylabel("notes")
    ax.set_title(f"{instrument}: {len(pitches)} notes")
    ax.legend()
    with atomic_write(path) as file:
        figure.savefig(file, format="png")
