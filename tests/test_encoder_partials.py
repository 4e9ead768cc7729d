"""An encoder that also reads partial levels at the note's pitch (``WaveNetEncoder(partial_inputs=N)``):
what it reads, how a trained model grows it without changing its output, and how ``encode`` gives
it a pitch (the one given, else the one heard)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_warm_start import small_autoencoder, trained_like

from timbre.models.encoder import WaveNetEncoder
from timbre.synthesizer import TimbreModel
from timbre.train.warm_start import widened_state

SAMPLE_RATE = 16000


def harmonic_tone(fundamental_hz: float, amplitudes: dict[float, float], seconds: float = 1.0) -> torch.Tensor:
    """``[1, samples]``: a sine of ``amplitude`` at ``ratio * fundamental_hz`` for each entry."""
    time = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    tone = sum(a * torch.sin(2 * math.pi * r * fundamental_hz * time) for r, a in amplitudes.items())
    return tone.float()[None]


def test_partial_features_read_each_partial_at_its_level_and_the_floor_between() -> None:
    encoder = WaveNetEncoder(
        channels=8, layers=1, stages=1, latent_dim=4, downsample=128, frontend="mel", n_mels=20, partial_inputs=8
    )
    amplitudes = {1.0: 0.5, 1.5: 0.2, 2.0: 0.05, 3.0: 0.01}  # MIDI 57: 220 Hz
    features = encoder.partial_features(harmonic_tone(220.0, amplitudes), torch.tensor([57]))
    assert features.shape == (1, 8, SAMPLE_RATE // 128)
    assert_levels(features[0, :, 20:-20], {int(2 * ratio) - 1: amplitude for ratio, amplitude in amplitudes.items()})
    # Read an octave low (as YIN hears some organs), each partial fills the slot of twice its ratio.
    octave_low = encoder.partial_features(harmonic_tone(220.0, amplitudes), torch.tensor([45]))
    assert_levels(octave_low[0, :, 20:-20], {3: 0.5, 5: 0.2, 7: 0.05})  # 6.0 x 110 Hz is past slot 8


def assert_levels(features: torch.Tensor, sounding: dict[float, float]) -> None:
    """Slots ``sounding`` (index: amplitude) read log10(amplitude) / 4 within 1.5 dB (a Hann
    window's scalloping: the largest bin is read, not interpolated) in every frame of
    ``features [slots, frames]``; the other slots read 60 dB or more below full scale (their
    neighbours' window sidelobes, or the -80 dB floor)."""
    for slot in range(features.shape[0]):
        if slot in sounding:
            expected = torch.full_like(features[slot], math.log10(sounding[slot]) / 4)
            torch.testing.assert_close(features[slot], expected, atol=1.5 / 80, rtol=0)
        else:
            assert features[slot].amax() <= -60 / 80, f"slot {slot} should be empty"


def test_an_encoder_reading_partials_needs_the_pitch_and_only_a_mel_front_end_has_them() -> None:
    encoder = WaveNetEncoder(channels=8, layers=1, stages=1, latent_dim=4, downsample=128, frontend="mel",
                             n_mels=20, partial_inputs=4)  # fmt: skip
    assert encoder.reads_pitch
    with pytest.raises(ValueError, match="pass pitch"):
        encoder(torch.zeros(1, 1024))
    with pytest.raises(ValueError, match="needs the mel front end"):
        WaveNetEncoder(channels=8, layers=1, stages=1, latent_dim=4, downsample=128, partial_inputs=4)
    with pytest.raises(ValueError, match="octave_down_probability"):
        WaveNetEncoder(channels=8, layers=1, stages=1, latent_dim=4, downsample=128, frontend="mel",
                       octave_down_probability=1.5)  # fmt: skip


def test_a_model_grown_to_read_partials_computes_exactly_what_the_trained_one_did() -> None:
    trained = trained_like(latent_dim=4)
    torch.manual_seed(2)
    grown = small_autoencoder(latent_dim=4, partial_inputs=12).eval()
    grown.load_state_dict(widened_state(grown, trained.state_dict(), "trained.pt"))
    assert grown.encoder_reads_pitch and not trained.encoder_reads_pitch
    audio = harmonic_tone(220.0, {1.0: 0.4, 1.5: 0.2, 3.0: 0.1}, seconds=4096 / SAMPLE_RATE).repeat(2, 1)
    pitch = torch.tensor([57, 45])
    with torch.no_grad():
        torch.testing.assert_close(grown.encode(audio, pitch), trained.encode(audio), rtol=0, atol=1e-6)
    # Training gives the new inputs a use: their zero weights have a gradient from the first step.
    grown.train()
    loss, _ = grown.training_loss({"audio": audio, "pitch": pitch})
    loss.backward()
    start = grown.encoder.start.weight
    assert torch.equal(start[:, -12:], torch.zeros_like(start[:, -12:]))
    assert start.grad is not None and start.grad[:, -12:].abs().amax() > 0


def test_in_training_some_notes_read_their_partials_an_octave_low() -> None:
    torch.manual_seed(0)
    model = small_autoencoder(latent_dim=4, partial_inputs=12, octave_down_probability=1.0)
    audio = harmonic_tone(220.0, {1.0: 0.4, 1.5: 0.2}, seconds=4096 / SAMPLE_RATE)
    with torch.no_grad():
        model.eval()
        at_pitch, octave_low = model.encode(audio, torch.tensor([57])), model.encode(audio, torch.tensor([45]))
        model.train()
        training = model.encode(audio, torch.tensor([57]))
    assert not torch.allclose(at_pitch, octave_low)
    torch.testing.assert_close(training, octave_low, rtol=0, atol=0)


@pytest.fixture(scope="module")
def flute_note(fluidr3_soundfont: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FluidR3's flute (program 73) at MIDI 67, a real note file."""
    from timbre.data.soundfont import build_dataset

    root = tmp_path_factory.mktemp("flute") / "dataset"
    build_dataset(fluidr3_soundfont, root, programs=(73,), pitches=(67,), velocities=(100,), progress=False, workers=1)
    return next(root.rglob("*.wav"))


def test_encode_reads_partials_at_the_pitch_given_else_at_the_pitch_heard(flute_note: Path) -> None:
    torch.manual_seed(3)
    model = TimbreModel(small_autoencoder(latent_dim=4, partial_inputs=12))
    at_67 = model.encode(flute_note, pitch=67).tensor
    heard = model.encode(flute_note).tensor
    at_62 = model.encode(flute_note, pitch=62).tensor
    torch.testing.assert_close(heard, at_67, rtol=0, atol=0)  # YIN hears the flute's own pitch
    assert (at_62 - at_67).abs().amax() > 1e-3  # the pitch matters
    assert np.isfinite(heard.numpy()).all()
