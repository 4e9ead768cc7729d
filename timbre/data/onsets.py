"""Spectral-flux onsets as librosa finds them, without librosa.

The same detector as ``librosa.onset.onset_detect(onset_envelope=librosa.onset.onset_strength(y=y,
sr=sr, hop_length=hop), sr=sr, hop_length=hop, backtrack=True)`` with librosa's defaults: a
2048-point Hann STFT centred on each frame (zero padding), a 128-band Slaney mel power spectrum in
dB (80 dB range), the mean over bands of its positive rise from the previous frame, normalised to
[0, 1]; peaks that are the maximum of the 30 ms before them and at least 0.07 above the mean of
the 100 ms around them, 30 ms apart at least; each moved back to the envelope's last local
minimum. The same onsets, frame for frame, as librosa 0.11 on the files of the from-folder
benchmark and on random bursts; :mod:`timbre.data.from_folder` uses it because importing librosa
(numba compiling or loading its kernels) cost each worker process seconds, and its per-call
filterbank and peak picker were a fifth of a file's analysis.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

N_FFT = 2048
N_MELS = 128
TOP_DB = 80.0
AMIN = 1e-10
DELTA = 0.07  # of the normalised envelope


def _hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear to 1 kHz (15 mel), logarithmic above (27 mel per factor 6.4)."""
    linear = frequencies / (200.0 / 3)
    logarithmic = 15.0 + np.log(np.maximum(frequencies, 1000.0) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(frequencies >= 1000.0, logarithmic, linear)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear = mels * (200.0 / 3)
    logarithmic = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mels - 15.0))
    return np.where(mels >= 15.0, logarithmic, linear)


@functools.lru_cache(maxsize=4)
def mel_filterbank(sample_rate: int) -> np.ndarray:
    """``[N_MELS, N_FFT // 2 + 1]`` Slaney-normalised mel filters, 0 Hz to Nyquist (``librosa.filters.mel``)."""
    bin_hz = np.linspace(0.0, sample_rate / 2.0, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sample_rate / 2.0)), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bin_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per band
    return filters.astype(np.float32)


def onset_strength(audio: np.ndarray, sample_rate: int, hop: int) -> np.ndarray:
    """``[1 + samples // hop]`` spectral flux of ``audio [samples]``: frame k describes the rise at sample k * hop."""
    spectrum = torch.stft(
        torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
        N_FFT,
        hop,
        window=torch.hann_window(N_FFT),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )  # [bins, frames]
    mel = torch.from_numpy(mel_filterbank(sample_rate)) @ spectrum.abs().square()  # [mels, frames]
    decibels = 10.0 * np.log10(np.maximum(AMIN, mel.numpy()))
    decibels = np.maximum(decibels, decibels.max() - TOP_DB)
    flux = np.maximum(0.0, decibels[:, 1:] - decibels[:, :-1]).mean(axis=0)
    # The first difference belongs to frame 1; librosa then delays the envelope by half a window
    # (N_FFT // (2 * hop) frames) and keeps the frame count.
    delay = 1 + N_FFT // (2 * hop)
    return np.concatenate([np.zeros(delay, dtype=flux.dtype), flux])[: decibels.shape[1]]


def _peaks(envelope: np.ndarray, sample_rate: int, hop: int) -> list[int]:
    """Frames of ``envelope`` (normalised) that librosa's ``util.peak_pick`` picks with ``onset_detect``'s settings."""
    pre_max = int(np.ceil(0.03 * sample_rate // hop))
    post_max = int(np.ceil(0.00 * sample_rate // hop + 1))
    pre_average = int(np.ceil(0.10 * sample_rate // hop))
    post_average = int(np.ceil(0.10 * sample_rate // hop + 1))
    wait = int(np.ceil(0.03 * sample_rate // hop))
    count = envelope.shape[0]
    padded = np.pad(envelope, (pre_max, post_max - 1), constant_values=-np.inf)
    local_max = np.lib.stride_tricks.sliding_window_view(padded, pre_max + post_max).max(axis=1)
    peaks: list[int] = []
    next_allowed = 0
    for frame in np.flatnonzero(envelope == local_max):
        if frame < next_allowed:
            continue
        neighbourhood = envelope[max(0, frame - pre_average) : min(frame + post_average, count)]
        if envelope[frame] >= np.mean(neighbourhood) + DELTA:
            peaks.append(int(frame))
            next_allowed = frame + wait + 1
    return peaks


def detect_onsets(audio: np.ndarray, sample_rate: int, hop: int) -> np.ndarray:
    """Onsets of ``audio [samples]`` in samples (multiples of ``hop``), backtracked to the envelope's last minimum."""
    envelope = onset_strength(audio, sample_rate, hop)
    envelope = envelope - envelope.min()
    envelope /= envelope.max() + np.finfo(envelope.dtype).tiny
    if not envelope.any() or not np.isfinite(envelope).all():
        return np.zeros(0, dtype=np.int64)
    peaks = _peaks(envelope, sample_rate, hop)
    inner = envelope[1:-1]
    minima = np.union1d([0], 1 + np.flatnonzero((inner <= envelope[:-2]) & (inner < envelope[2:])))
    backtracked = minima[np.searchsorted(minima, peaks, side="right") - 1]
    return backtracked.astype(np.int64) * hop
