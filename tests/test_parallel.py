"""Tests of the parallel harmonic-plus-noise decoder (timbre.models.parallel)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pesto
import pytest
import torch

from timbre.errors import ConfigError
from timbre.models import dsp
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


def expressive_decoder(**overrides: float) -> HarmonicNoiseDecoder:
    """A small decoder with every optional part switched on (bend, inharmonicity, room response)."""
    settings = dict(
        pitch_deviation_cents=100.0,
        max_inharmonicity=0.02,
        reverb_seconds=0.25,
        reverb_bands=4,
        loudness_loss_weight=1.0,
        partial_loss_weight=1.0,
        mel_loss_weight=1.0,
    )
    settings.update(overrides)
    return HarmonicNoiseDecoder(hidden_channels=32, n_harmonics=16, n_noise_bands=17, fft_sizes=(512, 128), **settings)


def test_expressive_controls_are_bounded_and_the_median_bend_is_zero() -> None:
    torch.manual_seed(0)
    decoder = expressive_decoder()
    with torch.no_grad():
        decoder.output.bias[-1] = 3.0  # push the raw bend far up: it must stay bounded and centred
    z = torch.randn(2, 16, 6)
    controls = decoder.controls(z, torch.tensor([45, 70]))
    bend = controls["deviation_cents"]
    assert bend.shape == (2, 6 * 512 // 128)
    assert bend.abs().max() <= 2 * 100.0
    loud = controls["amplitude"][..., 0] > 0.01 * controls["amplitude"][..., 0].amax(dim=1, keepdim=True)
    for note in range(2):
        values = bend[note][loud[note]]
        assert (values >= 0).float().mean() >= 0.5 and (values <= 0).float().mean() >= 0.5  # median at zero
    assert ((controls["inharmonicity"] >= 0) & (controls["inharmonicity"] <= 0.02)).all()
    assert controls["reverb_gain"].shape == (2, 4) and (controls["reverb_gain"] > 0).all()
    assert (controls["reverb_decay"] > 0).all() and (controls["reverb_decay"] <= 0.25 / 3 + 1e-6).all()


def test_expressive_decoder_trains_every_part_and_supervises_the_bend() -> None:
    torch.manual_seed(0)
    decoder = expressive_decoder()
    t = torch.arange(4096) / SAMPLE_RATE
    vibrato_cents = 40.0 * torch.sin(2 * math.pi * 5.0 * t)
    phase = 2 * math.pi * torch.cumsum(dsp.midi_to_hz(60.0) * 2 ** (vibrato_cents / 1200) / SAMPLE_RATE, 0)
    audio = sum(torch.sin(k * phase) / k for k in range(1, 6))[None] * 0.3
    weights = set(decoder.state_dict())
    loss, parts = decoder.reconstruction_loss(audio, torch.randn(1, 16, 8), torch.tensor([60]))
    loss.backward()
    assert set(decoder.state_dict()) == weights  # the losses' buffers stay out of checkpoints
    assert set(parts) == {"stft", "log_magnitude", "linear_magnitude", "pitch_bend", "loudness", "partials", "mel"}
    assert parts["pitch_bend"] > 0.1  # the untrained bend misses a 40-cent vibrato
    assert parts["partials"] > 0.1  # and its partials' levels are off by more than 2 dB
    assert parts["mel"] > 0.1  # and so are its mel bands
    total = parts["stft"] + parts["pitch_bend"] + parts["loudness"] + parts["partials"] + parts["mel"]
    assert loss.item() == pytest.approx(total, rel=1e-4)
    for name, parameter in decoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_without_bend_and_inharmonicity_the_partials_are_exact_harmonics() -> None:
    """With the bend switched on but held at zero, the controls and the partials equal the fixed-pitch path's."""
    torch.manual_seed(0)
    fixed = HarmonicNoiseDecoder(hidden_channels=32, n_harmonics=16, n_noise_bands=17)
    bending = HarmonicNoiseDecoder(hidden_channels=32, n_harmonics=16, n_noise_bands=17, pitch_deviation_cents=50.0)
    state = {key: value for key, value in fixed.state_dict().items() if not key.startswith("output.")}
    bending.load_state_dict(state, strict=False)
    with torch.no_grad():
        bending.output.weight[:-1] = fixed.output.weight
        bending.output.bias[:-1] = fixed.output.bias
        bending.output.weight[-1] = 0.0
        bending.output.bias[-1] = 0.0
    z, pitch = torch.randn(1, 16, 4), torch.tensor([57])
    a, b = fixed.controls(z, pitch), bending.controls(z, pitch)
    for key in ("amplitude", "harmonic_distribution"):
        torch.testing.assert_close(a[key], b[key])
    amplitudes = a["amplitude"] * a["harmonic_distribution"]
    f0 = dsp.midi_to_hz(pitch).float()
    reference = dsp.harmonic_synthesis(f0, amplitudes, 2048, 128, SAMPLE_RATE)
    frames = f0[:, None].expand(1, amplitudes.shape[1])
    bank = dsp.partial_bank(frames, dsp.harmonic_ratios(16, None), amplitudes, 128, SAMPLE_RATE)
    torch.testing.assert_close(bank, reference, atol=2e-4, rtol=0)


def test_subharmonics_sound_the_octave_below_sorted_among_the_harmonics() -> None:
    """Half-integer partials: sorted in by frequency, silenced above Nyquist, and audible where asked."""
    assert dsp.partial_numbers(4, 3).tolist() == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0]
    torch.manual_seed(0)
    decoder = HarmonicNoiseDecoder(hidden_channels=32, n_harmonics=16, n_noise_bands=17, n_subharmonics=4)
    z = torch.randn(2, 16, 4)
    distribution = decoder.controls(z, torch.tensor([57, 100]))["harmonic_distribution"]  # 220 Hz, 2637 Hz
    assert distribution.shape == (2, 16, 20)
    # At 2637 Hz: partials 0.5 to 3 sound (7.9 kHz); 3.5 (9.2 kHz) and up are silenced.
    assert (distribution[1, :, :6] > 0).all() and (distribution[1, :, 6:] == 0).all()

    # Only the 0.5 partial open (every other partial and the noise shut): the note sounds at 110 Hz.
    with torch.no_grad():
        decoder.output.weight.zero_()
        decoder.output.bias.fill_(-30.0)
        decoder.output.bias[0] = 0.0  # amplitude
        decoder.output.bias[1 + 16 + 17] = 30.0  # first half-integer partial (the last channels)
    one_second = torch.randn(1, 16, 32)  # 32 frames of 512 samples
    audio = decoder(one_second, torch.tensor([57]), 16000, generator=torch.Generator().manual_seed(0))[0]
    spectrum = torch.fft.rfft(audio * torch.hann_window(16000)).abs()
    assert spectrum.argmax().item() == pytest.approx(110, abs=1)  # 1 Hz bins
    assert spectrum[215:225].amax() < 1e-3 * spectrum.amax()  # nothing at the key's own 220 Hz


def test_room_response_extends_a_note_into_its_silence() -> None:
    """A dry note that stops half-way rings on through the predicted response, the longer the louder."""
    torch.manual_seed(0)
    decoder = expressive_decoder(pitch_deviation_cents=0.0, max_inharmonicity=0.0)
    z = torch.randn(1, 16, 8)
    with torch.no_grad():
        decoder.note_output.bias.copy_(torch.tensor([4.0] * 4 + [3.0] * 4))  # loud, long response
    controls = decoder.controls(z, torch.tensor([60]))
    half = controls["amplitude"].shape[1] // 2
    controls["amplitude"][:, half:] = 0.0
    controls["noise_magnitudes"][:, half:] = 0.0
    wet = decoder._render(controls, torch.tensor([60]), 4096, None)
    controls["reverb_gain"] = controls["reverb_gain"] * 0.0
    dry = decoder._render(controls, torch.tensor([60]), 4096, None)
    tail = slice(2048 + 256, 4096)
    assert dry[0, tail].abs().max() < 1e-4
    assert wet[0, tail].pow(2).mean().sqrt() > 0.05 * wet[0, :2048].pow(2).mean().sqrt()


def test_training_spectral_loss_equals_auraloss_and_ignores_the_target_gradient() -> None:
    import auraloss

    from timbre.models.spectral_loss import MultiResolutionSTFTLoss

    fft_sizes = (512, 128, 64)
    generator = torch.Generator().manual_seed(0)
    prediction = (torch.rand(3, 4000, generator=generator) - 0.5).requires_grad_()
    target = torch.rand(3, 4000, generator=generator) - 0.5
    reference = auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=list(fft_sizes),
        hop_sizes=[size // 4 for size in fft_sizes],
        win_lengths=list(fft_sizes),
        w_sc=0.0,
        w_log_mag=1.0,
        w_lin_mag=1.0,
        output="full",
    )
    expected, _, expected_log, expected_linear, _ = reference(prediction[:, None], target[:, None])
    loss, log_terms, linear_terms = MultiResolutionSTFTLoss(fft_sizes)(prediction, target)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.stack(log_terms), torch.stack(expected_log))
    torch.testing.assert_close(torch.stack(linear_terms), torch.stack(expected_linear))
    (gradient,) = torch.autograd.grad(loss, prediction)
    (expected_gradient,) = torch.autograd.grad(expected, prediction)
    torch.testing.assert_close(gradient, expected_gradient)


def test_mel_loss_reads_librosas_mel_decibels_and_ignores_what_lies_below_the_floor() -> None:
    """The loss's levels are the judges' (librosa melspectrogram + power_to_db, 2048/512, 128
    bands); a copy 6 dB down costs 6 dB wherever the target is 6 dB above its floor; noise added
    90 dB under the target's peak costs nothing."""
    import librosa

    from timbre.models.spectral_loss import MelDecibelLoss

    t = torch.arange(8192) / SAMPLE_RATE
    tone = sum(torch.sin(2 * math.pi * k * 220.0 * t) / k for k in range(1, 12)) * 0.3
    loss = MelDecibelLoss(SAMPLE_RATE)
    expected = librosa.power_to_db(
        librosa.feature.melspectrogram(y=tone.numpy(), sr=SAMPLE_RATE, n_fft=2048, hop_length=512), top_db=None
    )
    assert np.abs(loss.decibels(tone[None])[0].numpy() - expected).max() < 0.1
    # A copy 6 dB down: every band above the floor + 6 dB is 6 dB off, those nearer it less.
    floor = expected.max() - 80.0
    halved = np.abs(np.maximum(expected - 20 * math.log10(2), floor) - np.maximum(expected, floor)).mean()
    assert 20 * loss(tone[None] * 0.5, tone[None]).item() == pytest.approx(halved, abs=0.05)
    assert halved > 2.0
    peak = loss.decibels(tone[None]).max().item()
    hiss = torch.randn(8192, generator=torch.Generator().manual_seed(0)) * 10 ** ((peak - 90 - 20) / 20)
    assert 20 * loss(tone[None] + hiss, tone[None]).item() < 0.05
    prediction = (tone * 0.5).requires_grad_()
    loss(prediction[None], tone[None]).backward()
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0


def test_partial_levels_read_each_partials_amplitude_where_it_is() -> None:
    from timbre.models.partial_levels import FLOOR_LEVEL, partial_levels

    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    f0 = 220.0
    sharp = f0 * 2 ** (30 / 1200)  # 30 cents sharp of where the partials are looked for
    audio = 0.5 * torch.sin(2 * math.pi * sharp * t) + 0.05 * torch.sin(2 * math.pi * 3 * sharp * t)
    expected = torch.tensor([f0 * k for k in (1, 2, 3, 40)])  # the 40th is above Nyquist
    levels = partial_levels(audio[None], expected.expand(1, 100, 4).contiguous(), 128, SAMPLE_RATE)
    middle = 20 * levels[0, 20:80]  # dB, away from the edges of the note
    assert (middle[:, 0] - 20 * math.log10(0.5)).abs().max() < 1.5
    assert (middle[:, 2] - 20 * math.log10(0.05)).abs().max() < 1.5
    assert (middle[:, 1] < -60).all()  # absent partial: down in the leakage
    assert (levels[0, :, 3] == FLOOR_LEVEL).all()


def test_partial_loss_tells_a_clarinet_profile_from_a_smooth_one() -> None:
    """Two tones with the same loudness: odd partials only vs all partials at 1/k; the loss is
    near zero against itself and large against the other, and its gradient reaches the audio."""
    from timbre.models.partial_levels import partial_levels

    t = torch.arange(8192) / SAMPLE_RATE
    f0 = 196.0
    odd = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 16, 2)) * 0.3
    smooth = (sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 16)) * 0.3).requires_grad_()
    partial_hz = (f0 * torch.arange(1, 16.0)).expand(1, 64, 15).contiguous()
    target = partial_levels(odd[None], partial_hz, 128, SAMPLE_RATE)
    assert (partial_levels(odd[None], partial_hz, 128, SAMPLE_RATE) - target).abs().mean() < 1e-6
    error = (partial_levels(smooth[None], partial_hz, 128, SAMPLE_RATE) - target).abs()[:, 8:56]
    assert error[..., 1::2].mean() > 1.0  # the even partials: more than 20 dB apart
    assert error[..., 0::2].mean() < 0.1  # the odd ones agree within 2 dB
    error.mean().backward()
    assert smooth.grad is not None and smooth.grad.abs().sum() > 0


def test_partial_loss_hears_the_octave_below_only_with_subharmonics() -> None:
    """A drawbar-like target (a loud partial at half the pitch) costs more than the same tone without
    it, to a decoder whose half-integer partials are shut, and costs the same to one without them."""
    torch.manual_seed(0)
    settings = dict(hidden_channels=32, n_harmonics=16, n_noise_bands=17, fft_sizes=(512, 128), partial_loss_weight=1.0)
    plain = HarmonicNoiseDecoder(**settings)
    with_octave_below = HarmonicNoiseDecoder(**settings, n_subharmonics=2)
    with_octave_below.load_state_dict(
        {key: value for key, value in plain.state_dict().items() if not key.startswith("output.")}, strict=False
    )
    with torch.no_grad():
        with_octave_below.output.weight[:-2] = plain.output.weight
        with_octave_below.output.bias[:-2] = plain.output.bias
        with_octave_below.output.weight[-2:] = 0.0
        with_octave_below.output.bias[-2:] = -30.0  # shut
    t = torch.arange(8192) / SAMPLE_RATE
    f0 = dsp.midi_to_hz(57.0)
    tone = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 9)) * 0.2
    drawbar = tone + 0.2 * torch.sin(math.pi * f0 * t)
    z, pitch = torch.randn(1, 16, 16), torch.tensor([57])

    def partial_error(decoder: HarmonicNoiseDecoder, target: torch.Tensor) -> float:
        torch.manual_seed(1)  # the same output noise for every call
        return decoder.reconstruction_loss(target[None], z, pitch)[1]["partials"]

    assert partial_error(plain, drawbar) == pytest.approx(partial_error(plain, tone), abs=0.02)
    assert partial_error(with_octave_below, drawbar) > partial_error(with_octave_below, tone) + 0.05


def test_a_note_played_away_from_its_source_pitch_keeps_the_octave_below_it_had_there() -> None:
    """With ``source_pitch``, the half-integer partials take the share of the harmonic amplitude
    they have at the source pitch; the whole partials keep their shape at the pitch played; a
    row played at its own pitch is untouched."""
    torch.manual_seed(0)
    decoder = HarmonicNoiseDecoder(hidden_channels=32, n_harmonics=8, n_noise_bands=17, n_subharmonics=4)
    z = torch.randn(2, 16, 4)
    half = dsp.partial_numbers(8, 4) % 1 == 0.5
    at_source = decoder.controls(z, torch.tensor([60, 60]))["harmonic_distribution"]
    plain = decoder.controls(z, torch.tensor([100, 60]))["harmonic_distribution"]
    moved = decoder.controls(z, torch.tensor([100, 60]), source_pitch=torch.tensor([60, 60]))["harmonic_distribution"]

    assert torch.equal(moved[1], plain[1])  # played where it was encoded
    assert torch.allclose(moved[0].sum(dim=-1), torch.ones(4 * 4))
    # At MIDI 100 (2637 Hz) the half-integer partials 0.5-2.5 sound and 3.5 is over Nyquist: it is
    # silenced and the rest scaled back up to a sum of one.
    audible_half = half & (dsp.partial_numbers(8, 4) < 3)
    dropped = at_source[0][:, half & ~audible_half].sum(dim=-1, keepdim=True)
    assert (dropped > 0.01).all()
    assert torch.allclose(moved[0][:, audible_half], at_source[0][:, audible_half] / (1 - dropped), rtol=1e-4)
    assert (moved[0][:, half & ~audible_half] == 0).all()
    whole = ~half & (plain[0][0] > 0)
    assert torch.allclose(
        moved[0][:, whole] / moved[0][:, whole].sum(dim=-1, keepdim=True),
        plain[0][:, whole] / plain[0][:, whole].sum(dim=-1, keepdim=True),
        rtol=1e-4,
    )
    # The decoder alone changes the octave below with the pitch played: the source's is not the same.
    assert not torch.allclose(plain[0][:, audible_half], at_source[0][:, audible_half], rtol=0.05)
