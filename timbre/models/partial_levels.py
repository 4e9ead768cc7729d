"""Levels of a note's partials, measured the same way on the decoder's output and on its target.

A multi-resolution STFT loss teaches a harmonic synthesizer an instrument's partial levels only
slowly: in a log-magnitude spectrogram the few bins at the partials are outnumbered by the bins
between them (noise floor, window sidelobes), and a partial a little off in frequency or phase
blurs its own gradient. The first default model trained that way came out with nearly the same
partial profile for every instrument (a clarinet's weak even partials, an organ's strong octaves:
gone). Measuring each partial's level where it should be, in dB, on both signals and comparing
them gives the decoder's harmonic distribution a direct, frequency-tolerant target, weak partials
counting as much as strong ones, which is also how timbre is heard and how MFCCs see it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Amplitudes below 1e-4 (-80 dBFS) are noise floor, not timbre: levels are floored there.
FLOOR_LEVEL = -4.0


def partial_levels(
    audio: Tensor,
    partial_hz: Tensor,
    hop_length: int,
    sample_rate: int,
    n_fft: int = 2048,
) -> Tensor:
    """Amplitude of each partial per frame, in log10 units, floored at ``FLOOR_LEVEL`` (-80 dBFS).

    The level of partial ``k`` in frame ``i`` is the largest STFT magnitude within a quarter of the
    fundamental's spacing of its expected frequency (so a partial slightly off, by vibrato or
    stiffness, is still found), scaled so that a sinusoid of amplitude ``A`` reads ``log10(A)``.

    Args:
        audio: ``[batch, samples]``.
        partial_hz: ``[batch, frames, partials]`` expected frequencies; frame ``i`` is centred on
            sample ``i * hop + hop / 2`` (the convention of :mod:`timbre.models.dsp`). Partials
            at or above Nyquist read the floor.
        hop_length: samples per frame.
        sample_rate: samples per second.
        n_fft: STFT size (2048 at 16 kHz separates the partials of the lowest MIDI notes used).

    Returns:
        ``[batch, frames, partials]``; differentiable with respect to ``audio``.
    """
    batch, n_frames, n_partials = partial_hz.shape
    window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype)
    shifted = F.pad(audio, (0, hop_length // 2))[:, hop_length // 2 :]
    spectrum = torch.stft(shifted, n_fft, hop_length, window=window, center=True, return_complex=True)
    magnitude = torch.sqrt(spectrum.real**2 + spectrum.imag**2 + 1e-12).transpose(1, 2)  # [batch, frames, bins]
    index = torch.arange(n_frames, device=audio.device).clamp(max=magnitude.shape[1] - 1)
    magnitude = magnitude[:, index]
    n_bins = magnitude.shape[-1]
    bin_hz = sample_rate / n_fft

    with torch.no_grad():
        spacing = partial_hz[..., :1].clamp(min=bin_hz)  # the fundamental: partials are about this far apart
        reach = (0.25 * spacing / bin_hz).floor().clamp(1, 8).long()  # [batch, frames, 1] bins each side
        offsets = torch.arange(-8, 9, device=audio.device)
        centre = (partial_hz / bin_hz).round().long()
        bins = centre[..., None] + offsets  # [batch, frames, partials, 17]
        inside = (offsets.abs() <= reach[..., None]) & (bins >= 0) & (bins < n_bins)
        audible = partial_hz < sample_rate / 2 - 2 * bin_hz
    sampled = torch.gather(magnitude, 2, bins.clamp(0, n_bins - 1).reshape(batch, n_frames, -1))
    sampled = sampled.reshape(batch, n_frames, n_partials, -1).masked_fill(~inside, 0.0)
    amplitude = sampled.amax(dim=-1) * (2.0 / window.sum())  # a sinusoid's peak reads its amplitude
    amplitude = torch.where(audible, amplitude, torch.zeros_like(amplitude))
    return torch.log10(amplitude.clamp(min=10.0**FLOOR_LEVEL))
