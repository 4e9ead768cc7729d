"""Tests of the parallel harmonic-plus-noise decoder (timbre.models.parallel)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pesto
import pytest
import torch

from timbre.models import dsp
from timbre.errors import ConfigError
from timbre.models.parallel import HarmonicNoiseDecoder

SAMPLE_RATE = 16000
FIT_PITCH = 57  # A3, 220 Hz
FIT_SAMPLES = 16 * 512


def small_decoder() -> HarmonicNoiseDecoder:
    return HarmonicNoiseDecoder(hidden_channels=32, n_harmonics=16, n_noise_bands=17, fft_sizes=(512, 128))


def harmonic_tone(pitch: int, n_samples: int) -> torch.Tensor:
    """``[n_samples]`` a plucked-string-like note: 1/k harmonics, fast attack, decay, a little noise."""
    generator = torch.Generator().manual_seed(1)
    t = torch.arange(n_samples) / SAMPLE_RATE
    f0 = dsp.midi_to_hz(float(pitch))
    envelope = torch.clamp(t / 0.02, max=1.0) * torch.exp(-3.0 * t)
    tone = sum((0.5 / k) * torch.sin(2 * math.pi * k * f0 * t) for k in range(1, 12))
    return (tone + 0.01 * torch.randn(n_samples, generator=generator)) * envelope


@dataclass
class Fit:
    decoder: HarmonicNoiseDecoder
    z: torch.Tensor
    losses: list[float]


@pytest.fixture(scope="module")
def fit() -> Fit:
    """The default decoder fitted for 60 Adam steps to one note at a fixed random embedding."""
    torch.manual_seed(0)
    decoder = HarmonicNoiseDecoder()
    audio = harmonic_tone(FIT_PITCH, FIT_SAMPLES)[None]
    z = torch.randn(1, decoder.latent_dim, FIT_SAMPLES // decoder.hop_length)
    pitch = torch.tensor([FIT_PITCH])
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        loss, _ = decoder.reconstruction_loss(audio, z, pitch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return Fit(decoder.eval(), z, losses)


def test_protocol_attributes_and_size() -> None:
    decoder = HarmonicNoiseDecoder()
    assert decoder.hop_length == 512 and decoder.latent_dim == 16
    assert sum(p.numel() for p in decoder.parameters()) < 1_000_000


@pytest.mark.parametrize("n_samples", [1, 777, 2048, 2048 + 300, 4 * 512 * 3])
def test_output_length_equals_n_samples(n_samples: int) -> None:
    decoder = small_decoder()
    z = torch.randn(2, 16, 4)
    audio = decoder(z, torch.tensor([40, 70]), n_samples)
    assert audio.shape == (2, n_samples)
    assert torch.isfinite(audio).all()


def test_controls_are_at_the_control_rate_and_respect_nyquist() -> None:
    decoder = small_decoder()
    z = torch.randn(3, 16, 5)
    controls = decoder.controls(z, torch.tensor([60, 100, 127]))  # 262 Hz, 2637 Hz, 12.5 kHz
    frames = 5 * 512 // 128
    assert controls["amplitude"].shape == (3, frames, 1)
    assert controls["noise_magnitudes"].shape == (3, frames, 17)
    distribution = controls["harmonic_distribution"]
    assert distribution.shape == (3, frames, 16)
    torch.testing.assert_close(distribution[0].sum(-1), torch.ones(frames))
    assert (distribution[1, :, 3:] == 0).all()  # harmonic 4 of 2637 Hz is above 8 kHz
    assert (distribution[2] == 0).all()
    assert torch.isfinite(decoder(z, torch.tensor([60, 100, 127]), 2560)).all()


def test_gradient_reaches_every_parameter() -> None:
    decoder = small_decoder()
    audio = torch.randn(2, 2048) * 0.1
    loss, parts = decoder.reconstruction_loss(audio, torch.randn(2, 16, 4), torch.tensor([50, 62]))
    loss.backward()
    assert math.isfinite(loss.item()) and set(parts) == {"stft", "log_magnitude", "linear_magnitude"}
    assert parts["stft"] == pytest.approx(parts["log_magnitude"] + parts["linear_magnitude"], rel=1e-5)
    for name, parameter in decoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_reconstruction_loss_decreases_when_fitting_a_note(fit: Fit) -> None:
    assert all(math.isfinite(loss) for loss in fit.losses)
    assert sum(fit.losses[-5:]) / 5 < 0.5 * fit.losses[0]


@pytest.mark.parametrize("pitch", [FIT_PITCH, FIT_PITCH + 7])
def test_decoded_note_is_at_the_requested_pitch(fit: Fit, pitch: int) -> None:
    """An external pitch tracker hears the requested pitch, also one the decoder was not fitted at."""
    generator = torch.Generator().manual_seed(0)
    audio = fit.decoder.synthesize(fit.z, torch.tensor([pitch]), FIT_SAMPLES, generator=generator)
    _, semitones, confidence, _ = pesto.predict(audio[0], SAMPLE_RATE, convert_to_freq=False)
    voiced = confidence > 0.5
    assert voiced.float().mean() > 0.5
    assert abs(semitones[voiced].median().item() - pitch) < 0.5  # within 50 cents


def test_synthesize_is_reproducible_and_applies_velocity() -> None:
    decoder = small_decoder()
    z, pitch = torch.randn(2, 16, 4), torch.tensor([48, 60])
    first = decoder.synthesize(z, pitch, 2048, generator=torch.Generator().manual_seed(7))
    second = decoder.synthesize(z, pitch, 2048, generator=torch.Generator().manual_seed(7))
    other_seed = decoder.synthesize(z, pitch, 2048, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second) and not torch.equal(first, other_seed)
    assert first.abs().max() <= 1.0 and not first.requires_grad

    velocity = torch.tensor([127, 64])
    scaled = decoder.synthesize(z, pitch, 2048, velocity=velocity, generator=torch.Generator().manual_seed(7))
    unclipped = first.abs() < 1.0
    torch.testing.assert_close(scaled[0], first[0])
    torch.testing.assert_close(scaled[1][unclipped[1]], first[1][unclipped[1]] * (64 / 127) ** 2)


def test_invalid_settings_raise_clear_errors() -> None:
    with pytest.raises(ConfigError, match="control_hop"):
        HarmonicNoiseDecoder(control_hop=100)
    decoder = HarmonicNoiseDecoder()
    with pytest.raises(ConfigError, match="too short"):
        decoder.reconstruction_loss(torch.zeros(1, 1024), torch.zeros(1, 16, 2), torch.tensor([60]))
