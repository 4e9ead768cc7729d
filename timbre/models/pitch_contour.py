"""Pitch contour of a note around its known MIDI pitch: the training target of the decoder's vibrato.

The decoder may bend its fundamental a bounded number of cents around the MIDI pitch (vibrato,
scoops, bends). A spectral loss alone gives a poor gradient with respect to frequency (the
well-known difficulty of learning f0 through a DDSP synthesizer), so the bend is supervised
directly by the contour measured on the target audio. Knowing the nominal pitch makes the
measurement simple and robust: a harmonic-sum salience is evaluated on a grid of candidate
deviations around the MIDI pitch (the sum of the STFT magnitudes at the candidate harmonics), the
best candidate is refined by parabolic interpolation, and frames where the salience has no clear
peak (noise, silence, unpitched sounds) get no weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def harmonic_salience_contour(
    audio: Tensor,
    f0_hz: Tensor,
    hop_length: int,
    n_frames: int,
    sample_rate: int,
    search_cents: float = 100.0,
    step_cents: float = 5.0,
    n_fft: int = 1024,
    max_partial_hz: float = 4000.0,
    max_partials: int = 16,
) -> tuple[Tensor, Tensor]:
    """Deviation of each frame's pitch from ``f0_hz``, in cents, with a confidence weight.

    Args:
        audio: ``[batch, samples]``.
        f0_hz: ``[batch]`` nominal fundamental (the MIDI pitch).
        hop_length: samples per frame; frame ``i`` is centred on sample ``i * hop + hop / 2``
            (the convention of :mod:`timbre.models.dsp`).
        n_frames: frames to return (the last measured frame is held, extra ones are dropped).
        sample_rate: samples per second.
        search_cents: deviations searched on each side of the nominal pitch.
        step_cents: grid step before parabolic refinement.
        n_fft: STFT size (long enough to resolve the harmonics of low notes).
        max_partial_hz: partials above this frequency are not used.
        max_partials: at most this many partials are summed.

    Returns:
        ``cents [batch, n_frames]`` and ``weight [batch, n_frames]`` in [0, 1] (0 where the
        measurement is not trustworthy). Not differentiable (a target, computed without grad).
    """
    with torch.no_grad():
        audio = audio.float()
        window = torch.hann_window(n_fft, device=audio.device)
        shifted = F.pad(audio, (0, hop_length // 2))[:, hop_length // 2 :]
        magnitude = torch.stft(
            shifted, n_fft, hop_length, window=window, center=True, return_complex=True
        ).abs()  # [batch, bins, frames]
        magnitude = magnitude.transpose(1, 2)  # [batch, frames, bins]
        n_bins = magnitude.shape[-1]
        bin_hz = sample_rate / n_fft

        candidates = torch.arange(-search_cents, search_cents + step_cents / 2, step_cents, device=audio.device)
        partials = torch.arange(1, max_partials + 1, device=audio.device, dtype=torch.float32)
        # [batch, candidates, partials] fractional bins of every candidate partial
        hz = f0_hz.float()[:, None, None] * torch.pow(2.0, candidates / 1200.0)[None, :, None] * partials
        usable = (hz < min(max_partial_hz, sample_rate / 2 - 2 * bin_hz)).float()
        position = (hz / bin_hz).clamp(max=n_bins - 2)
        lower = position.floor().long()
        fraction = position - lower
        batch, frames, _ = magnitude.shape
        flat_index = lower.reshape(batch, 1, -1).expand(-1, frames, -1)
        low = torch.gather(magnitude, 2, flat_index)
        high = torch.gather(magnitude, 2, flat_index + 1)
        sampled = (low + (high - low) * fraction.reshape(batch, 1, -1)).reshape(batch, frames, *hz.shape[1:])
        salience = (sampled * usable[:, None]).sum(dim=-1)  # [batch, frames, candidates]

        best = salience.argmax(dim=-1)
        inner = best.clamp(1, salience.shape[-1] - 2)
        left = torch.gather(salience, 2, (inner - 1)[..., None])[..., 0]
        centre = torch.gather(salience, 2, inner[..., None])[..., 0]
        right = torch.gather(salience, 2, (inner + 1)[..., None])[..., 0]
        curvature = left - 2 * centre + right
        offset = torch.where(
            curvature < 0, 0.5 * (left - right) / curvature.clamp(max=-1e-12), torch.zeros_like(centre)
        )
        cents = candidates[inner] + offset.clamp(-1.0, 1.0) * step_cents

        # Confidence: the comb at the best pitch collects far more than the same comb shifted by
        # half a partial (a harmonic sound; noise gives a ratio near one), in a frame no more
        # than 40 dB below the note's loudest frame, and not pinned at the edge of the search.
        best_hz = f0_hz.float()[:, None] * torch.pow(2.0, cents / 1200.0)  # [batch, frames]
        between = (best_hz[..., None] * (partials - 0.5)) / bin_hz  # [batch, frames, partials]
        between_index = between.clamp(max=n_bins - 2).round().long()
        between_magnitude = torch.gather(magnitude, 2, between_index)
        between_usable = (between * bin_hz < min(max_partial_hz, sample_rate / 2 - 2 * bin_hz)).float()
        harmonicity = centre / ((between_magnitude * between_usable).sum(dim=-1) + 1e-9)
        energy = magnitude.pow(2).sum(dim=-1)
        loud = energy > energy.amax(dim=1, keepdim=True) * 1e-4
        inside = (best > 0) & (best < salience.shape[-1] - 1)
        weight = ((harmonicity - 2.0) / 2.0).clamp(0.0, 1.0) * loud * inside

        index = torch.arange(n_frames, device=audio.device).clamp(max=cents.shape[1] - 1)
        return cents[:, index], weight[:, index]


def weighted_median(values: Tensor, weight: Tensor) -> Tensor:
    """Median of ``values [batch, frames]`` under non-negative ``weight`` (0 where all weights are 0).

    Returns:
        ``[batch, 1]``.
    """
    order = values.argsort(dim=1)
    sorted_values = torch.gather(values, 1, order)
    cumulative = torch.gather(weight, 1, order).cumsum(dim=1)
    total = cumulative[:, -1:]
    index = (cumulative < 0.5 * total).sum(dim=1, keepdim=True).clamp(max=values.shape[1] - 1)
    return torch.where(total > 0, torch.gather(sorted_values, 1, index), torch.zeros_like(total))
