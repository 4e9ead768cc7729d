"""Metrics of synthesized notes: spectral distance, loudness-envelope error, timbre identification,
pitch by an independent tracker, spectral centroid and the smoothness of a sequence of values (an
interpolation sweep).

- Multi-scale spectral distance: :class:`auraloss.freq.MultiResolutionSTFTLoss` with the settings of
  the parallel decoder's training loss (FFT sizes 2048 ... 64, hop a quarter of the size, Hann
  window of the full size, L1 of log magnitudes plus L1 of linear magnitudes, averaged over sizes).
  0 for identical signals; it does not care about phase.
- Loudness-envelope error: the RMS level of ``LOUDNESS_WINDOW``-sample frames every
  ``LOUDNESS_HOP`` samples, in dBFS and floored at ``LOUDNESS_FLOOR_DBFS``, of the estimate against
  the reference; the mean absolute difference in dB over the frames where either sounds above the
  floor. A gain error of g dB gives g; a silent estimate of a -20 dBFS note gives 60.
- Timbre identification: each note is described by the mean and the standard deviation over its
  held part (``HELD_SECONDS``, 0.1-3.0 s) of MFCCs 1-19 (librosa's defaults: 2048-point FFT, hop
  512, 128 mel bands; MFCC 0, the overall level, is left out), 38 numbers standardised with the
  mean and deviation of the reference notes. A reconstruction is identified when, among the
  reference notes at its pitch, the nearest (Euclidean) belongs to its own instrument; its rank is
  the place of its own instrument when the instruments are ordered by their nearest note.
- Pitch: PESTO (Riou et al., 2023; weights inside the ``pesto-pitch`` wheel) tracks fractional MIDI
  pitch every 40 ms. A note is "correct" when the median pitch of its sounding frames is within
  ``tolerance_cents`` of the intended MIDI pitch; a silent note is not correct. Sounding frames are
  those within ``LOUDNESS_RANGE_DB`` of the note's loudest frame (RMS over 64 ms), provided that
  one is above ``SILENCE_DBFS``. PESTO's own voicing confidence is not used: on FluidR3 brass,
  guitar, keyboard and bass notes it stays below 0.5 (often below 0.2) on frames whose pitch it
  tracks exactly. PESTO was not trained on timbre's data, so it is an independent judge; run it on
  the input notes too, to know what it can and cannot hear (the ceiling): it makes octave errors on
  some very low and very high notes.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import auraloss
import librosa
import numpy as np
import pesto
import torch

# The parallel decoder's training loss resolutions (timbre.models.parallel.HarmonicNoiseDecoder).
MSS_FFT_SIZES = (2048, 1024, 512, 256, 128, 64)
PESTO_MODEL = "mir-1k_g7"
# PESTO judges every frame on its own and its network, not its CQT, is the cost: a coarser hop
# than its default 10 ms gives the same per-frame pitches for a quarter of the cost (on the 120
# TimGM6mb test notes, 40 ms and 20 ms agree on every note within 0.01 cent).
PESTO_STEP_MS = 40.0
# Notes per PESTO call: bounds the memory of its CQT on long notes.
PESTO_BATCH = 8
TOLERANCE_CENTS = 50.0
LOUDNESS_RANGE_DB = 30.0
SILENCE_DBFS = -60.0
LOUDNESS_WINDOW = 1024
LOUDNESS_HOP = 256
# About the level of 16-bit dither: quieter frames are all "silent" alike.
LOUDNESS_FLOOR_DBFS = -80.0
CENTROID_FFT_SIZE = 2048
# The held part of an NSynth note (key down at 0, up at 3 s), past the attack's first transient.
HELD_SECONDS = (0.1, 3.0)
MFCC_COEFFICIENTS = range(1, 20)
MFCC_FFT_SIZE = 2048
MFCC_HOP = 512

__all__ = [
    "MSS_FFT_SIZES",
    "PitchScore",
    "SweepSmoothness",
    "count_reversals",
    "frame_loudness",
    "identification_ranks",
    "loudness_envelope_error",
    "multiscale_spectral_distance",
    "pitch_scores",
    "spectral_centroid",
    "sweep_smoothness",
    "timbre_features",
    "track_pitch",
]


def _as_batch(audio: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> torch.Tensor:
    """``[notes, samples]`` float32 tensor from an array, a tensor or a list of equally long notes."""
    if isinstance(audio, (list, tuple)):
        audio = np.stack([np.asarray(note, dtype=np.float32) for note in audio])
    batch = torch.as_tensor(audio, dtype=torch.float32)
    if batch.ndim == 1:
        batch = batch[None]
    if batch.ndim != 2 or batch.shape[-1] == 0:
        raise ValueError(f"expected audio [notes, samples] with samples > 0, got shape {tuple(batch.shape)}")
    return batch


@functools.cache
def _multiscale_stft_loss(fft_sizes: tuple[int, ...]) -> auraloss.freq.MultiResolutionSTFTLoss:
    return auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=list(fft_sizes),
        hop_sizes=[size // 4 for size in fft_sizes],
        win_lengths=list(fft_sizes),
        w_sc=0.0,
        w_log_mag=1.0,
        w_lin_mag=1.0,
    )


@torch.inference_mode()
def multiscale_spectral_distance(
    estimate: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    fft_sizes: Sequence[int] = MSS_FFT_SIZES,
) -> np.ndarray:
    """Multi-scale spectral distance of each estimated note to its reference.

    Args:
        estimate, reference: ``[notes, samples]`` (or ``[samples]``) waveforms of equal shape.
        fft_sizes: STFT sizes; hop is a quarter of each, window the full size.

    Returns:
        ``[notes]`` float64: per note, the mean over sizes of ``L1(log|X|, log|Y|) + L1(|X|, |Y|)``.
    """
    estimate, reference = _as_batch(estimate), _as_batch(reference)
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} differ in shape")
    loss = _multiscale_stft_loss(tuple(int(size) for size in fft_sizes))
    # One note at a time: auraloss averages over the batch.
    return np.array([float(loss(x[None, None], y[None, None])) for x, y in zip(estimate, reference)])


@dataclass(frozen=True)
class PitchScore:
    """How well one note holds its intended pitch, as PESTO hears it.

    Attributes:
        cents: median pitch of the sounding frames minus the intended pitch, in cents (NaN when silent).
        correct: ``|cents| <= tolerance``.
        sounding_fraction: fraction of the note's frames that are sounding.
        frames_within: fraction of the sounding frames within the tolerance (NaN when silent).
    """

    cents: float
    correct: bool
    sounding_fraction: float
    frames_within: float


@functools.cache
def _pesto(sample_rate: int) -> torch.nn.Module:
    return pesto.load_model(PESTO_MODEL, step_size=PESTO_STEP_MS, sampling_rate=sample_rate).eval()


@torch.inference_mode()
def track_pitch(audio: np.ndarray | torch.Tensor | Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """PESTO pitch every ``PESTO_STEP_MS`` (40 ms), frame ``k`` centred on sample ``k * hop``.

    Args:
        audio: ``[notes, samples]`` (or ``[samples]``) waveforms.
        sample_rate: their rate in Hz.

    Returns:
        ``[notes, 1 + samples // hop]`` float64 fractional MIDI pitches.
    """
    batch = _as_batch(audio)
    model = _pesto(int(sample_rate))
    midi = []
    for chunk in batch.split(PESTO_BATCH):
        pitch, _confidence, _volume = model(chunk, sr=int(sample_rate), convert_to_freq=False, return_activations=False)
        midi.append(pitch.reshape(chunk.shape[0], -1).double())
    return torch.cat(midi).numpy()


def frame_loudness(audio: np.ndarray | torch.Tensor | Sequence[np.ndarray], hop_length: int) -> np.ndarray:
    """RMS level in dBFS over ``LOUDNESS_WINDOW`` samples centred on every ``hop_length``-th sample.

    Returns:
        ``[notes, 1 + samples // hop_length]`` float64 (-inf for digital silence).
    """
    batch = _as_batch(audio).double()
    half = LOUDNESS_WINDOW // 2
    frames = torch.nn.functional.pad(batch, (half, half)).unfold(-1, LOUDNESS_WINDOW, hop_length)
    frames = frames[:, : 1 + batch.shape[-1] // hop_length]
    return (10.0 * torch.log10(frames.square().mean(dim=-1))).numpy()


def loudness_envelope_error(
    estimate: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor, signed: bool = False
) -> np.ndarray:
    """Mean absolute difference of the frame RMS levels of each estimated note and its reference.

    Args:
        estimate, reference: ``[notes, samples]`` (or ``[samples]``) waveforms of equal shape.
        signed: the mean difference instead (estimate minus reference: negative when the estimate
            is quieter), the level bias a fixed gain would remove.

    Returns:
        ``[notes]`` float64 in dB (0 when both are silent throughout).
    """
    estimate, reference = _as_batch(estimate), _as_batch(reference)
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} differ in shape")
    levels = [np.maximum(frame_loudness(audio, LOUDNESS_HOP), LOUDNESS_FLOOR_DBFS) for audio in (estimate, reference)]
    difference = levels[0] - levels[1] if signed else np.abs(levels[0] - levels[1])
    audible = np.maximum(levels[0], levels[1]) > LOUDNESS_FLOOR_DBFS
    counts = audible.sum(axis=1)
    return np.where(counts > 0, (difference * audible).sum(axis=1) / np.maximum(counts, 1), 0.0)


def timbre_features(audio: np.ndarray | torch.Tensor | Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """Mean and standard deviation of MFCCs 1-19 over each note's held part.

    Args:
        audio: ``[notes, samples]`` (or ``[samples]``) waveforms.
        sample_rate: their rate in Hz.

    Returns:
        ``[notes, 38]`` float64: the 19 means, then the 19 deviations. A note shorter than the held
        part uses what it has past its first 0.1 s (all of it when shorter still).
    """
    batch = _as_batch(audio).numpy()
    # One note at a time: librosa floors the dB spectrogram at 80 dB below the peak of its whole
    # input, which for a batch would make a note's features depend on the other notes.
    with warnings.catch_warnings():
        # librosa warns when a note is shorter than one FFT; it zero-pads, which is right.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal")
        mfcc = np.stack([
            librosa.feature.mfcc(y=note, sr=sample_rate, n_mfcc=max(MFCC_COEFFICIENTS) + 1, n_fft=MFCC_FFT_SIZE,
                                 hop_length=MFCC_HOP)
            for note in batch
        ])[:, list(MFCC_COEFFICIENTS)].astype(np.float64)  # [notes, 19, frames]  # fmt: skip
    # Frame k is centred on sample k * hop (librosa centres its frames); frames reaching past the
    # end of a short note would see librosa's zero padding, not the note.
    times = np.arange(mfcc.shape[-1]) * MFCC_HOP / sample_rate
    end = min(HELD_SECONDS[1], (batch.shape[-1] - MFCC_FFT_SIZE // 2) / sample_rate)
    held = (times >= HELD_SECONDS[0]) & (times <= end)
    if not held.any():
        held[:] = True
    frames = mfcc[..., held]
    return np.concatenate([frames.mean(axis=-1), frames.std(axis=-1)], axis=-1)


def identification_ranks(
    estimate_features: np.ndarray,
    reference_features: np.ndarray,
    pitches: Sequence[int],
    instruments: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Where each estimate's own instrument ranks among the reference instruments at its pitch.

    Note ``i``'s estimate is compared with every reference note of pitch ``pitches[i]`` (its own
    reference included); the instruments are ordered by their nearest reference note, ties in
    the estimate's favour. Features are standardised over all reference notes first.

    Args:
        estimate_features, reference_features: ``[notes, features]``, row ``i`` of both the same note.
        pitches, instruments: ``[notes]`` each note's MIDI pitch and instrument.

    Returns:
        ``(ranks, candidates)``, both ``[notes]`` int: 1 when the nearest reference note is the
        note's own instrument; how many instruments were at that pitch (chance of rank 1 is its inverse).
    """
    estimate_features = np.asarray(estimate_features, dtype=np.float64)
    reference_features = np.asarray(reference_features, dtype=np.float64)
    if estimate_features.shape != reference_features.shape or not len(pitches) == len(instruments) == len(
        estimate_features
    ):
        raise ValueError(
            f"got features {estimate_features.shape} and {reference_features.shape} for "
            f"{len(pitches)} pitches and {len(instruments)} instruments"
        )
    mean = reference_features.mean(axis=0)
    deviation = reference_features.std(axis=0)
    deviation[deviation == 0] = 1.0  # a constant feature tells no instrument apart
    estimate = (estimate_features - mean) / deviation
    reference = (reference_features - mean) / deviation
    pitch_of, instrument_of = np.asarray(pitches), [str(name) for name in instruments]
    ranks = np.zeros(len(pitch_of), dtype=np.int64)
    candidates = np.zeros(len(pitch_of), dtype=np.int64)
    for row in range(len(pitch_of)):
        same_pitch = np.flatnonzero(pitch_of == pitch_of[row])
        distances = np.linalg.norm(reference[same_pitch] - estimate[row], axis=1)
        nearest: dict[str, float] = {}
        for column, distance in zip(same_pitch, distances):
            name = instrument_of[column]
            nearest[name] = min(float(distance), nearest.get(name, np.inf))
        own = nearest[instrument_of[row]]
        ranks[row] = 1 + sum(distance < own for distance in nearest.values())
        candidates[row] = len(nearest)
    return ranks, candidates


def pitch_scores(
    audio: np.ndarray | torch.Tensor | Sequence[np.ndarray],
    pitches: Sequence[int],
    sample_rate: int,
    tolerance_cents: float = TOLERANCE_CENTS,
) -> list[PitchScore]:
    """Score each note's pitch against its intended MIDI pitch.

    Args:
        audio: ``[notes, samples]`` waveforms.
        pitches: ``[notes]`` intended MIDI pitches.
        sample_rate: rate of ``audio`` in Hz.
        tolerance_cents: how far from the intended pitch still counts as correct.
    """
    midi = track_pitch(audio, sample_rate)
    if len(pitches) != midi.shape[0]:
        raise ValueError(f"got {midi.shape[0]} notes but {len(pitches)} pitches")
    loudness = frame_loudness(audio, round(PESTO_STEP_MS * sample_rate / 1000))
    frames = min(midi.shape[1], loudness.shape[1])
    scores = []
    for note_midi, note_loudness, pitch in zip(midi[:, :frames], loudness[:, :frames], pitches):
        peak = note_loudness.max()
        sounding = note_loudness >= peak - LOUDNESS_RANGE_DB if peak >= SILENCE_DBFS else np.zeros(frames, bool)
        errors = 100.0 * (note_midi[sounding] - float(pitch))
        if errors.size == 0:
            scores.append(PitchScore(float("nan"), False, 0.0, float("nan")))
            continue
        cents = float(np.median(errors))
        scores.append(
            PitchScore(
                cents=cents,
                correct=abs(cents) <= tolerance_cents,
                sounding_fraction=errors.size / frames,
                frames_within=float(np.mean(np.abs(errors) <= tolerance_cents)),
            )
        )
    return scores


def spectral_centroid(
    audio: np.ndarray | torch.Tensor | Sequence[np.ndarray], sample_rate: int, n_fft: int = CENTROID_FFT_SIZE
) -> np.ndarray:
    """Spectral centroid of each whole note: the centroid of its STFT magnitude summed over time.

    This is the average of the frames' centroids weighted by their magnitude, so the quiet tail of a
    note counts little and silent frames not at all.

    Args:
        audio: ``[notes, samples]`` (or ``[samples]``) waveforms.
        sample_rate: their rate in Hz.
        n_fft: STFT size (hop a quarter of it, Hann window).

    Returns:
        ``[notes]`` float64 centroids in Hz (NaN for a silent note).
    """
    batch = _as_batch(audio).double()
    if batch.shape[-1] < n_fft:
        batch = torch.nn.functional.pad(batch, (0, n_fft - batch.shape[-1]))
    window = torch.hann_window(n_fft, dtype=torch.float64)
    # center=False: reflection padding at the edges would add a click of broadband energy to every note.
    spectrum = torch.stft(batch, n_fft, n_fft // 4, window=window, center=False, return_complex=True)
    magnitude = spectrum.abs().sum(dim=-1)
    frequencies = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate, dtype=torch.float64)
    total = magnitude.sum(dim=-1)
    centroid = (magnitude * frequencies).sum(dim=-1) / total
    return torch.where(total > 0, centroid, torch.nan).numpy()


def count_reversals(values: Sequence[float], tolerance: float) -> int:
    """Times a sequence turns back by more than ``tolerance``.

    A turn counts once the sequence has retreated more than ``tolerance`` from its last extreme, so
    wiggles smaller than that are ignored: ``[0, 2, 1, 3]`` has 2 reversals at tolerance 0.5 and 0
    at tolerance 1. A monotone sequence has 0.
    """
    values = [float(value) for value in values]
    if not values:
        return 0
    direction = 0
    low = high = extreme = values[0]
    reversals = 0
    for value in values[1:]:
        if direction == 0:
            # No direction yet: wait for the first move larger than the tolerance.
            low, high = min(low, value), max(high, value)
            if value - low > tolerance:
                direction, extreme = 1, value
            elif high - value > tolerance:
                direction, extreme = -1, value
        elif (value - extreme) * direction >= 0:
            extreme = value
        elif abs(value - extreme) > tolerance:
            reversals += 1
            direction, extreme = -direction, value
    return reversals


@dataclass(frozen=True)
class SweepSmoothness:
    """How smoothly a sequence (a sweep's spectral centroids) goes from its first value to its last.

    Attributes:
        endpoint_difference: last value minus first.
        reversals: direction reversals larger than ``relative_tolerance * |endpoint_difference|``.
        max_jump_ratio: the largest step between neighbours over ``|endpoint_difference|``
            (``1 / (steps - 1)`` for an even, monotone sweep; NaN when the endpoints are equal).
        within_endpoints: every value lies between the endpoints, give or take the tolerance.
    """

    endpoint_difference: float
    reversals: int
    max_jump_ratio: float
    within_endpoints: bool


def sweep_smoothness(values: Sequence[float], relative_tolerance: float = 0.1) -> SweepSmoothness:
    """Reversals, largest jump and overshoot of a sweep's values ``[steps]`` (steps >= 2, finite)."""
    sweep = np.asarray(values, dtype=np.float64)
    if sweep.ndim != 1 or sweep.size < 2 or not np.isfinite(sweep).all():
        raise ValueError(f"a sweep needs at least 2 finite values, got {sweep.tolist()}")
    difference = float(sweep[-1] - sweep[0])
    tolerance = relative_tolerance * abs(difference)
    low, high = min(sweep[0], sweep[-1]) - tolerance, max(sweep[0], sweep[-1]) + tolerance
    return SweepSmoothness(
        endpoint_difference=difference,
        reversals=count_reversals(sweep.tolist(), tolerance),
        max_jump_ratio=float(np.abs(np.diff(sweep)).max() / abs(difference)) if difference else float("nan"),
        within_endpoints=bool(((sweep >= low) & (sweep <= high)).all()),
    )
