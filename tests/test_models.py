"""The WaveNet encoder, the pitch-conditioned AR decoder and the autoencoder joining them."""

from __future__ import annotations

import math

import pytest
import torch

from timbre.models.autoencoder import Autoencoder
from timbre.models.decoder import WaveNetDecoder
from timbre.models.encoder import WaveNetEncoder
from timbre.models.wavenet import (
    causal_receptive_field,
    dilations,
    fundamental_phase,
    pitch_source,
    quantize_and_scale,
    source_cycles,
)


def tiny_decoder(**overrides) -> WaveNetDecoder:
    settings = dict(residual_channels=8, skip_channels=8, layers=6, stages=3, kernel_size=3, pitch_embedding_dim=4)
    settings.update(overrides)
    return WaveNetDecoder(**settings)


def test_dilations_cycle_like_nsynth():
    assert dilations(30, 10) == [2**i for i in range(10)] * 3
    # start conv (2 samples) + 2 * sum(dilations) past samples + the current one
    assert causal_receptive_field(30, 10, 3) == 1 + 2 * (1 + 3 * 1023)


def test_encoder_hop_and_shapes():
    torch.manual_seed(0)
    encoder = WaveNetEncoder(channels=8, layers=4, stages=4)
    z = encoder(torch.rand(3, 64_000) * 2 - 1)
    assert z.shape == (3, 16, 125)  # a 4 s NSynth note gives 125 frames
    assert encoder(torch.zeros(1, 6144)).shape == (1, 16, 12)
    with pytest.raises(ValueError, match="multiple of hop_length"):
        encoder(torch.zeros(1, 1000))


def test_encoder_frames_are_local_averages():
    """Frame k pools samples [512k, 512k+512): far-away audio barely changes it (non-causal, finite field)."""
    torch.manual_seed(0)
    encoder = WaveNetEncoder(channels=8, layers=3, stages=3)  # receptive field 1 + 2*(1+7) = 17 samples
    audio = torch.rand(1, 4096) * 2 - 1
    changed = audio.clone()
    changed[:, 3000:] = 0.0
    z, z_changed = encoder(audio), encoder(changed)
    assert torch.allclose(z[..., :5], z_changed[..., :5])  # frames 0-4 end at sample 2560
    assert not torch.allclose(z[..., 6:], z_changed[..., 6:])


def test_mel_encoder_reads_levels_in_decibels_and_keeps_the_latent_shape():
    """The log-mel front end: same latent shape, and a 40 dB quieter note moves the frames by a constant."""
    from timbre.models.encoder import LogMelFrontEnd

    torch.manual_seed(0)
    encoder = WaveNetEncoder(channels=8, layers=2, stages=2, downsample=128, frontend="mel", n_mels=20, n_fft=512)
    audio = torch.sin(torch.arange(64_000) * 2 * math.pi * 440 / 16000)[None] * 0.5
    assert encoder(audio).shape == (1, 16, 125)
    front = LogMelFrontEnd(16000, 128, 512, 20)
    loud, quiet = front(audio), front(audio * 0.01)
    assert loud.shape == (1, 21, 500)  # 20 mel bands and the level
    shift = loud - quiet
    strong = loud > loud.max() - 0.3  # bands well above the -80 dB floor
    torch.testing.assert_close(shift[strong], torch.full_like(shift[strong], math.log(100) / math.log(1e4)))
    with pytest.raises(ValueError, match="frontend"):
        WaveNetEncoder(frontend="cqt")
    with pytest.raises(ValueError, match="downsample"):
        WaveNetEncoder(frontend="mel", downsample=1)


@pytest.mark.parametrize("clock", [0, 3], ids=["nsynth", "pitch-clock"])
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_decoder_is_causal(kernel_size, clock):
    """Logits at time t do not change when inputs after t change."""
    torch.manual_seed(0)
    decoder = tiny_decoder(kernel_size=kernel_size, source_harmonics=clock)
    inputs = torch.rand(2, 1024) * 2 - 1
    z, pitch = torch.randn(2, 16, 2), torch.tensor([48, 72])
    t = 600
    changed = inputs.clone()
    changed[:, t + 1 :] = torch.rand(2, 1024 - t - 1)
    logits, logits_changed = decoder(inputs, z, pitch), decoder(changed, z, pitch)
    assert torch.allclose(logits[..., : t + 1], logits_changed[..., : t + 1], atol=1e-6)
    assert not torch.allclose(logits[..., t + 1 :], logits_changed[..., t + 1 :])


def test_decoder_sees_exactly_its_receptive_field():
    torch.manual_seed(0)
    decoder = tiny_decoder()
    field = decoder.receptive_field
    inputs = torch.rand(1, 512) * 2 - 1
    z, pitch = torch.randn(1, 16, 1), torch.tensor([60])
    t = 400
    within = inputs.clone()
    within[:, t - field + 1] += 0.5
    beyond = inputs.clone()
    beyond[:, t - field] += 0.5
    reference = decoder(inputs, z, pitch)[..., t]
    # The oldest sample's path crosses every layer and is weak at initialisation: compare exactly.
    assert not torch.equal(decoder(within, z, pitch)[..., t], reference)
    assert torch.equal(decoder(beyond, z, pitch)[..., t], reference)


def test_pitch_conditioning_changes_the_prediction():
    torch.manual_seed(0)
    decoder = tiny_decoder()
    inputs, z = torch.rand(1, 256) * 2 - 1, torch.randn(1, 16, 1)
    assert not torch.allclose(decoder(inputs, z, torch.tensor([40])), decoder(inputs, z, torch.tensor([80])))
    with pytest.raises(ValueError, match="out of range"):
        decoder(inputs, z, torch.tensor([128]))


def test_the_pitch_clock_is_sines_and_cosines_of_the_harmonics_below_nyquist():
    cycles = source_cycles(torch.tensor([69, 117]), 16000)  # 440 Hz; 7040 Hz: only harmonic 1 below 8 kHz
    assert cycles.dtype == torch.float64 and cycles[0].item() == pytest.approx(440 / 16000)
    clock = pitch_source(cycles, torch.arange(2000), harmonics=3)
    assert clock.shape == (2, 6, 2000) and clock.dtype == torch.float32
    t = torch.arange(2000, dtype=torch.float64)
    for k in (1, 2, 3):
        angle = 2 * math.pi * k * 440 / 16000 * t
        assert torch.allclose(clock[0, k - 1].double(), angle.sin(), atol=1e-6)
        assert torch.allclose(clock[0, 3 + k - 1].double(), angle.cos(), atol=1e-6)
    assert clock[1, 0].abs().max() > 0.99 and clock[1, [1, 2, 4, 5]].abs().max() == 0.0  # 14 and 21 kHz: silent
    # A step at time t sees what the whole-crop clock has at t, even hours into a note.
    late = torch.tensor([57_600_000 + 123])
    whole = pitch_source(cycles, torch.arange(late.item() - 3, late.item() + 1), harmonics=3)[..., -1:]
    assert torch.equal(pitch_source(cycles, late, harmonics=3), whole)


def test_a_training_crop_starts_its_clock_in_phase_with_its_fundamental():
    """The fitted phase puts the clock's cosine on the note's fundamental, whatever the other partials."""
    cycles = source_cycles(torch.tensor([60, 45]), 16000)
    t = torch.arange(6144, dtype=torch.float64)
    theta = torch.tensor([0.3, 0.85], dtype=torch.float64)
    fundamental = torch.cos(2 * math.pi * (cycles[:, None] * t + theta[:, None]))
    overtones = 0.8 * torch.cos(2 * math.pi * (3 * cycles[:, None] * t + 0.1)) + 0.05 * torch.randn(2, 6144)
    audio = (0.3 * (fundamental + overtones)).float()
    fitted = fundamental_phase(audio, cycles)
    assert torch.allclose(fitted, theta, atol=0.005)
    clock = pitch_source(cycles, torch.arange(6144), harmonics=2, offsets=fitted)
    assert torch.corrcoef(torch.stack([clock[0, 2].double(), fundamental[0]]))[0, 1] > 0.999
    # Without a fundamental to fit (silence) the offset is still a phase, not NaN.
    assert fundamental_phase(torch.zeros(1, 100), cycles[:1]).isfinite().all()


def test_the_pitch_clock_steers_every_layer_and_nsynth_decoders_have_none():
    torch.manual_seed(0)
    decoder = tiny_decoder(source_harmonics=2)
    inputs, z = torch.rand(1, 256) * 2 - 1, torch.randn(1, 16, 1)
    assert all(layer.source is not None and layer.source.weight.shape == (16, 4, 1) for layer in decoder.gated_layers)
    with torch.no_grad():  # the same pitch embedding for two pitches: only the clock tells them apart
        decoder.pitch_embedding.weight[62] = decoder.pitch_embedding.weight[60]
    assert not torch.allclose(decoder(inputs, z, torch.tensor([60])), decoder(inputs, z, torch.tensor([62])))
    # Training starts each crop's clock on the crop's fundamental; decoding starts it at phase 0.
    audio, pitch = 0.5 * torch.sin(torch.arange(256) * 0.3 + 1.0)[None], torch.tensor([60])
    targets, scaled = quantize_and_scale(audio)
    previous = torch.nn.functional.pad(scaled[:, :-1], (1, 0))
    fitted = fundamental_phase(audio, source_cycles(pitch, 16000))
    with torch.no_grad():
        loss = decoder.reconstruction_loss(audio, z, pitch)[0]
        in_phase = torch.nn.functional.cross_entropy(decoder(previous, z, pitch, fitted), targets)
        from_zero = torch.nn.functional.cross_entropy(decoder(previous, z, pitch), targets)
    assert torch.allclose(loss, in_phase) and not torch.allclose(loss, from_zero)
    # Without a clock the parameters are NSynth's, so checkpoints saved before the clock still load.
    assert not any("source" in name for name in tiny_decoder().state_dict())
    with pytest.raises(ValueError, match="needs a pitch"):
        tiny_decoder(source_harmonics=2, pitch_embedding_dim=0)


def test_nsynth_size_matches_the_paper():
    encoder = WaveNetEncoder()
    decoder = WaveNetDecoder()
    total = sum(p.numel() for p in Autoencoder(encoder, decoder).parameters())
    assert abs(total - 62e6) / 62e6 < 0.05, total


def test_autoencoder_rejects_mismatched_latents():
    with pytest.raises(ValueError, match="latent shape"):
        Autoencoder(WaveNetEncoder(channels=4, layers=1, stages=1, latent_dim=8), tiny_decoder())


def test_training_drives_the_loss_down_on_a_fixed_batch():
    """A tiny autoencoder memorises one batch of harmonic notes: the loss must fall far."""
    torch.manual_seed(0)
    t = torch.arange(1024) / 16000
    audio = torch.stack(
        [0.5 * torch.sin(2 * torch.pi * f * t) + 0.2 * torch.sin(4 * torch.pi * f * t) for f in (220.0, 330.0)]
    )
    batch = {"audio": audio, "pitch": torch.tensor([57, 64])}
    model = Autoencoder(
        WaveNetEncoder(channels=8, layers=2, stages=2), tiny_decoder(residual_channels=16, skip_channels=16)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first, _ = model.training_loss(batch)
    for _ in range(80):
        loss, metrics = model.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first.item(), (first.item(), loss.item())
    assert metrics["accuracy"] > 0.2
