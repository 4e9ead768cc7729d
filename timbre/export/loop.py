"""Loop points in the sustain of a note, where waveform and spectrum match, and the crossfade.

A sampler holds a note by playing ``[start, end)`` over and over: after sample ``end - 1`` it
plays ``start`` again. The seam is inaudible when the audio around ``start`` continues the audio
around ``end``. :func:`find_loop` searches for such a pair:

1. Candidate ends lie in the last part of the search region (the late sustain, just before the
   key is let go). For each, the waveform around the end (two periods of the note on either side)
   is compared with every candidate start by normalised cross-correlation (one FFT per end).
2. The best correlated starts (local maxima) are then scored by
   ``(1 - correlation) + spectral distance + level difference in dB / 20``, where the spectral
   distance is one minus the cosine similarity of the magnitude spectra of Hann windows
   (2048 samples) centred on start and end. Among near-equal scores the longer loop wins.

:func:`crossfade_loop` then makes the seam continuous by making the audio around the loop end
continue like the audio around the loop start: the ``crossfade`` samples before ``end`` fade into
the samples before ``start``, and the ``crossfade`` samples from ``end`` on start as the samples
from ``start`` and fade back into their own audio. Around the jump from ``end - 1`` to ``start`` a
player then finds the same waveform on both sides, whichever neighbours its interpolator reads
(a crossfade on the loop-start side alone still clicked in sfizz, which interpolates the first
samples after a wrap with those before the loop start); entering the loop from the attack plays
the untouched note, and leaving it at ``end`` on key release is continuous too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from timbre.errors import ConfigError

SPECTRUM_WINDOW = 2048
CANDIDATE_ENDS = 6
CANDIDATE_STARTS = 8
# Quieter than this (RMS) counts as silence: any loop will do.
SILENCE_RMS = 1e-6
_HANN = np.hanning(SPECTRUM_WINDOW)


@dataclass(frozen=True)
class Loop:
    """A sustain loop.

    Attributes:
        start: first sample of the loop.
        end: first sample after the loop (the player jumps from ``end - 1`` back to ``start``).
        crossfade: samples on either side of ``end`` blended with those around ``start`` (:func:`crossfade_loop`).
        correlation: normalised cross-correlation of the waveforms around start and end (1 = same).
        spectral_distance: 1 - cosine similarity of the magnitude spectra at start and end.
        level_db: RMS level difference between start and end, in dB (absolute).
    """

    start: int
    end: int
    crossfade: int
    correlation: float
    spectral_distance: float
    level_db: float

    @property
    def length(self) -> int:
        return self.end - self.start


def find_loop(
    audio: np.ndarray,
    sample_rate: int,
    frequency: float,
    region: tuple[int, int],
    min_seconds: float = 0.1,
    max_seconds: float = 0.6,
    crossfade_seconds: float = 0.03,
) -> Loop:
    """The best loop inside ``region`` of ``audio`` (algorithm in the module docstring).

    Args:
        audio: ``[samples]`` float waveform of one note.
        sample_rate: its rate in Hz.
        frequency: the note's fundamental in Hz (sets the correlation window: two periods).
        region: ``(first, stop)``: the loop and its crossfades lie in ``[first, stop)``, i.e.
            ``first <= start - crossfade`` and ``end + crossfade <= stop``.
        min_seconds, max_seconds: loop length bounds (shortened to fit the region).
        crossfade_seconds: crossfade length (shortened to half the shortest loop if needed).

    Raises:
        ConfigError: the region cannot hold a loop.
    """
    audio = np.asarray(audio, dtype=np.float64)
    first, stop = max(0, int(region[0])), min(audio.shape[0], int(region[1]))
    period = sample_rate / max(float(frequency), 1.0)
    window = int(np.clip(round(2 * period), 32, 512))  # half-width of the compared waveform
    crossfade = round(crossfade_seconds * sample_rate)
    min_length = max(round(min_seconds * sample_rate), 2 * window, 1)
    crossfade = max(1, min(crossfade, min_length // 2))
    first += max(crossfade, window)
    last_end = stop - max(crossfade, window)
    if last_end - first < min_length:
        raise ConfigError(
            f"no room for a loop: the sustain {region[0]}-{region[1]} is shorter than "
            f"{(min_length + crossfade + 2 * window) / sample_rate:.3f} s"
        )
    max_length = max(min_length, min(round(max_seconds * sample_rate), last_end - first))
    if np.sqrt(np.mean(audio[first:last_end] ** 2)) < SILENCE_RMS:
        return Loop(last_end - min_length, last_end, crossfade, 1.0, 0.0, 0.0)

    # Ends spread over the last stretch of the region, at most one short loop length back.
    spread = min(min_length // 2, last_end - first - min_length)
    ends = np.unique(np.linspace(last_end - spread, last_end, CANDIDATE_ENDS).round().astype(int))
    energy = np.concatenate([[0.0], np.cumsum(audio**2)])
    candidates: list[tuple[int, int, float]] = []  # (start, end, correlation)
    for end in ends:
        lowest, highest = max(first, end - max_length), end - min_length
        if highest < lowest:
            continue
        template = audio[end - window : end + window]
        segment = audio[lowest - window : highest + window]
        # correlation[k] = <audio[lowest + k - window : lowest + k + window], template>
        correlation = fftconvolve(segment, template[::-1], mode="valid")
        starts = np.arange(lowest, highest + 1)
        norms = np.sqrt(np.maximum(energy[starts + window] - energy[starts - window], 0.0) * np.sum(template**2))
        ncc = np.where(norms > 0, correlation / np.maximum(norms, 1e-30), 0.0)
        candidates.extend((int(starts[i]), int(end), float(ncc[i])) for i in _top_peaks(ncc, CANDIDATE_STARTS))
    positions = sorted({position for start, end, _ in candidates for position in (start, end)})
    spectra = dict(zip(positions, zip(*_spectra(audio, positions))))
    best: tuple[float, Loop] | None = None
    for start, end, correlation in candidates:
        loop = _score(spectra, start, end, crossfade, correlation)
        cost = _cost(loop) - 0.01 * loop.length / max_length  # prefer longer loops among near-equals
        if best is None or cost < best[0]:
            best = (cost, loop)
    assert best is not None, "the region check above guarantees at least one candidate"
    return best[1]


def crossfade_loop(audio: np.ndarray, loop: Loop) -> np.ndarray:
    """A copy of ``audio`` whose loop end continues like its loop start (see the module docstring).

    With ``c = crossfade``, ``r`` a raised-cosine ramp from 0 to 1 over ``c`` samples and
    ``i < c``: sample ``end - c + i`` becomes ``(1 - r_i) audio[end - c + i] + r_i audio[start - c + i]``
    and sample ``end + i`` becomes ``(1 - r_i) audio[start + i] + r_i audio[end + i]``. The two sides
    are correlated (that is how the loop was chosen), so amplitudes add.

    Args:
        audio: ``[samples]``; needs ``c <= start``, ``c <= end - start`` and ``end + c <= samples``.

    Returns:
        ``[samples]`` float32.
    """
    c = loop.crossfade
    if loop.end + c > audio.shape[0] or loop.start < c or loop.start + c > loop.end:
        raise ConfigError(f"loop {loop.start}-{loop.end} with a {c}-sample crossfade does not fit the audio")
    source = np.asarray(audio, dtype=np.float32)
    result = source.copy()
    ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(c) + 0.5) / c)).astype(np.float32)
    before_end, before_start = source[loop.end - c : loop.end], source[loop.start - c : loop.start]
    result[loop.end - c : loop.end] = (1.0 - ramp) * before_end + ramp * before_start
    from_end, from_start = source[loop.end : loop.end + c], source[loop.start : loop.start + c]
    result[loop.end : loop.end + c] = (1.0 - ramp) * from_start + ramp * from_end
    return result


def _top_peaks(values: np.ndarray, count: int) -> list[int]:
    """Indices of the ``count`` largest local maxima of ``values`` (the global maximum at least)."""
    interior = np.flatnonzero((values[1:-1] >= values[:-2]) & (values[1:-1] >= values[2:])) + 1
    candidates = np.concatenate([interior, [int(np.argmax(values))]]).astype(int)
    best = candidates[np.argsort(values[candidates])[::-1][: count + 1]]
    return list(dict.fromkeys(int(i) for i in best))[:count]


def _score(
    spectra: dict[int, tuple[np.ndarray, float]], start: int, end: int, crossfade: int, correlation: float
) -> Loop:
    """The loop ``[start, end)`` with its match measures; ``spectra`` maps positions to (spectrum, RMS)."""
    (start_spectrum, start_rms), (end_spectrum, end_rms) = spectra[start], spectra[end]
    denominator = np.linalg.norm(start_spectrum) * np.linalg.norm(end_spectrum)
    cosine = float(start_spectrum @ end_spectrum / denominator) if denominator > 0 else 1.0
    level = abs(20 * np.log10(start_rms / end_rms)) if min(start_rms, end_rms) > 0 else 0.0
    return Loop(start, end, crossfade, correlation, max(0.0, 1.0 - cosine), float(level))


def _cost(loop: Loop) -> float:
    return (1.0 - loop.correlation) + loop.spectral_distance + loop.level_db / 20.0


def _spectra(audio: np.ndarray, centres: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude spectra ``[positions, bins]`` and RMS ``[positions]`` of Hann windows of
    :data:`SPECTRUM_WINDOW` samples centred on each position (zero beyond the audio's ends)."""
    half = SPECTRUM_WINDOW // 2
    padded = np.pad(audio, half)
    frames = np.stack([padded[centre : centre + SPECTRUM_WINDOW] for centre in centres])
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return np.abs(np.fft.rfft(frames * _HANN, axis=1)), rms
