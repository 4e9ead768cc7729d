"""Tests of the pitch-contour measurement that supervises the decoder's bend (timbre.models.pitch_contour)."""

from __future__ import annotations

import math

import pytest
import torch

from timbre.models import dsp
from timbre.models.pitch_contour import harmonic_salience_contour, weighted_median

SAMPLE_RATE = 16000
HOP = 128


def tone(pitch: float, cents: torch.Tensor, partials: int = 8) -> torch.Tensor:
    """``[samples]`` a harmonic tone whose pitch follows ``cents [samples]`` around MIDI ``pitch``."""
    frequency = dsp.midi_to_hz(pitch) * 2 ** (cents / 1200)
    phase = 2 * math.pi * torch.cumsum(frequency / SAMPLE_RATE, 0)
    return sum(torch.sin(k * phase) / k for k in range(1, partials + 1)) * 0.3


@pytest.mark.parametrize("pitch", [40, 60, 79])
def test_contour_follows_a_vibrato(pitch: int) -> None:
    n = SAMPLE_RATE
    t = torch.arange(n) / SAMPLE_RATE
    cents = 10.0 + 35.0 * torch.sin(2 * math.pi * 5.5 * t)
    frames = n // HOP
    measured, weight = harmonic_salience_contour(
        tone(pitch, cents)[None], dsp.midi_to_hz(torch.tensor([pitch])), HOP, frames, SAMPLE_RATE
    )
    centres = (torch.arange(frames) * HOP + HOP // 2).clamp(max=n - 1)
    truth = cents[centres]
    inner = slice(8, frames - 8)  # the STFT window runs off the ends of the clip
    assert weight[0, inner].min() > 0.5
    error = (measured[0, inner] - truth[inner]).abs()
    assert error.median() < 3.0 and error.max() < 12.0


def test_noise_and_silence_get_no_weight() -> None:
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(1, SAMPLE_RATE, generator=generator) * 2 - 1
    _, weight = harmonic_salience_contour(noise, torch.tensor([261.6]), HOP, SAMPLE_RATE // HOP, SAMPLE_RATE)
    assert weight.mean() < 0.1
    silence = torch.zeros(1, SAMPLE_RATE)
    _, weight = harmonic_salience_contour(silence, torch.tensor([261.6]), HOP, SAMPLE_RATE // HOP, SAMPLE_RATE)
    assert weight.sum() == 0


def test_weighted_median_ignores_unweighted_values() -> None:
    values = torch.tensor([[5.0, -100.0, 1.0, 3.0, 100.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    weight = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(weighted_median(values, weight), torch.tensor([[3.0], [0.0]]))
