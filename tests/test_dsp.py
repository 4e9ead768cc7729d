"""Tests of timbre.models.dsp: oscillators, frame upsampling, FIR noise filtering."""

from __future__ import annotations

import math

import pytest
import torch

from timbre.models import dsp

SAMPLE_RATE = 16000


def harmonic_frequencies(f0_hz: torch.Tensor, n_harmonics: int, n_samples: int) -> torch.Tensor:
    """``[batch, n_samples, n_harmonics]`` frequencies of harmonics 1..n, constant over time."""
    harmonics = f0_hz.double()[:, None] * torch.arange(1, n_harmonics + 1, dtype=torch.float64)
    return harmonics[:, None, :].expand(-1, n_samples, -1)


def test_midi_to_hz_reference_pitches() -> None:
    hz = dsp.midi_to_hz(torch.tensor([69, 81, 57, 60]))
    torch.testing.assert_close(hz, torch.tensor([440.0, 880.0, 220.0, 261.6256]), rtol=1e-6, atol=1e-4)
    assert dsp.midi_to_hz(69.5).item() == pytest.approx(440.0 * 2 ** (0.5 / 12))


def test_velocity_to_gain_is_general_midi_square_law() -> None:
    gains = dsp.velocity_to_gain(torch.tensor([0, 64, 127]))
    torch.testing.assert_close(gains, torch.tensor([0.0, (64 / 127) ** 2, 1.0]))


def test_exp_sigmoid_is_positive_bounded_and_increasing() -> None:
    x = torch.linspace(-20, 20, 101)
    y = dsp.exp_sigmoid(x)
    assert (y > 0).all() and (y <= 2.0 + 1e-6).all()
    assert (y.diff() >= 0).all()
    assert dsp.exp_sigmoid(torch.tensor(0.0)).item() == pytest.approx(2.0 * 0.5 ** math.log(10.0) + 1e-7)


@pytest.mark.parametrize("harmonic", [1, 3])
def test_one_hot_harmonic_is_a_sine_at_exactly_that_harmonic(harmonic: int) -> None:
    pitch = torch.tensor([69, 60])
    f0 = dsp.midi_to_hz(pitch)
    n_samples = SAMPLE_RATE
    amplitudes = torch.zeros(2, 10, 8)
    amplitudes[..., harmonic - 1] = 0.5
    audio = dsp.harmonic_synthesis(f0, amplitudes, n_samples, hop_length=128, sample_rate=SAMPLE_RATE)

    t = torch.arange(n_samples, dtype=torch.float64) / SAMPLE_RATE
    expected = 0.5 * torch.sin(2 * math.pi * harmonic * f0.double()[:, None] * t)
    torch.testing.assert_close(audio.double(), expected, atol=2e-5, rtol=0)
    # 1 s of audio: FFT bins are 1 Hz apart, so A4's harmonic must peak on its exact bin.
    peak_bin = torch.fft.rfft(audio[0]).abs().argmax().item()
    assert peak_bin == 440 * harmonic


def test_harmonics_above_nyquist_are_silenced() -> None:
    f0 = torch.tensor([3000.0])
    amplitudes = torch.zeros(1, 4, 4)
    amplitudes[..., 2] = 1.0  # 9 kHz, above the 8 kHz Nyquist limit
    assert dsp.harmonic_synthesis(f0, amplitudes, 2048, 128, SAMPLE_RATE).abs().max() == 0
    sample_rate_amplitudes = amplitudes[:, :1].expand(-1, 2048, -1)
    assert dsp.oscillator_bank(harmonic_frequencies(f0, 4, 2048), sample_rate_amplitudes, SAMPLE_RATE).abs().max() == 0

    # Only harmonics 1 and 2 (3 and 6 kHz) remain when all four are driven.
    all_driven = dsp.harmonic_synthesis(f0, torch.ones(1, 4, 4), 2048, 128, SAMPLE_RATE)
    audible_amplitudes = torch.tensor([1.0, 1.0, 0.0, 0.0]).expand(1, 4, 4)
    audible_only = dsp.harmonic_synthesis(f0, audible_amplitudes, 2048, 128, SAMPLE_RATE)
    torch.testing.assert_close(all_driven, audible_only)


def test_normalize_harmonic_distribution_drops_inaudible_and_sums_to_one() -> None:
    distribution = torch.rand(2, 5, 16) + 0.1
    f0 = torch.tensor([1000.0, 20000.0])  # 7 audible harmonics; none audible
    normalized = dsp.normalize_harmonic_distribution(distribution, f0, SAMPLE_RATE)
    assert (normalized[0, :, 7:] == 0).all() and (normalized[0, :, :7] > 0).all()
    torch.testing.assert_close(normalized[0].sum(-1), torch.ones(5))
    assert (normalized[1] == 0).all()


@pytest.mark.parametrize(
    ("n_samples", "hop_length", "n_frames"),
    [(1, 128, 3), (1000, 128, 8), (1000, 128, 3), (4096, 512, 8), (3001, 127, 24), (5000, 5, 2000)],
)
def test_harmonic_synthesis_equals_the_sample_rate_oscillator_bank(
    n_samples: int, hop_length: int, n_frames: int
) -> None:
    torch.manual_seed(0)
    # float64 so that the comparison tests the algorithm, not float32 rounding of long sums.
    f0 = torch.tensor([55.0, 261.6, 1500.0], dtype=torch.float64)
    amplitudes = torch.rand(3, n_frames, 12, dtype=torch.float64)
    fast = dsp.harmonic_synthesis(f0, amplitudes, n_samples, hop_length, SAMPLE_RATE)
    reference = dsp.oscillator_bank(
        harmonic_frequencies(f0, 12, n_samples), dsp.upsample_frames(amplitudes, n_samples, hop_length), SAMPLE_RATE
    )
    assert fast.shape == (3, n_samples)
    torch.testing.assert_close(fast, reference, atol=1e-7, rtol=0)


def test_upsample_frames_interpolates_between_centres_and_holds_the_ends() -> None:
    controls = torch.tensor([[[0.0], [10.0], [20.0]]])  # [1, 3 frames, 1]
    hop = 5  # odd: frame centres fall on samples 2, 7, 12
    upsampled = dsp.upsample_frames(controls, 20, hop)[0, :, 0]
    assert upsampled.shape == (20,)
    torch.testing.assert_close(upsampled[[2, 7, 12]], torch.tensor([0.0, 10.0, 20.0]))
    torch.testing.assert_close(upsampled[8], torch.tensor(12.0))
    torch.testing.assert_close(upsampled[:3], torch.zeros(3))
    torch.testing.assert_close(upsampled[12:], torch.full((8,), 20.0))
    assert dsp.upsample_frames(controls, 4, hop).shape == (1, 4, 1)


def test_impulse_response_is_linear_phase() -> None:
    magnitudes = torch.rand(3, 65)
    impulse_response = dsp.frequency_impulse_response(magnitudes)
    assert impulse_response.shape == (3, 128)
    centre = 64
    torch.testing.assert_close(impulse_response[:, centre + 1 :], impulse_response[:, 1:centre].flip(-1))


def test_flat_filter_returns_the_input() -> None:
    audio = torch.randn(2, 1000)
    filtered = dsp.frequency_filter(audio, torch.ones(2, 3, 65), hop_length=128)
    torch.testing.assert_close(filtered, audio, atol=1e-5, rtol=0)


def test_lowpass_filter_removes_high_frequencies() -> None:
    generator = torch.Generator().manual_seed(0)
    magnitudes = torch.zeros(1, 100, 65)
    magnitudes[..., :17] = 1.0  # pass 0-2 kHz
    noise = dsp.filtered_noise(magnitudes, 12800, hop_length=128, generator=generator)
    power = torch.fft.rfft(noise[0]).abs() ** 2
    hz_per_bin = SAMPLE_RATE / 12800
    low = power[: int(1500 / hz_per_bin)].mean()
    high = power[int(3000 / hz_per_bin) :].mean()
    assert high < 1e-3 * low


def test_filtered_noise_is_reproducible_with_a_generator() -> None:
    magnitudes = torch.rand(2, 10, 33)
    first = dsp.filtered_noise(magnitudes, 1111, 64, torch.Generator().manual_seed(3))
    second = dsp.filtered_noise(magnitudes, 1111, 64, torch.Generator().manual_seed(3))
    other = dsp.filtered_noise(magnitudes, 1111, 64, torch.Generator().manual_seed(4))
    assert first.shape == (2, 1111)
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_synths_are_differentiable() -> None:
    f0 = torch.tensor([440.0], dtype=torch.float64)
    amplitudes = torch.rand(1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: dsp.harmonic_synthesis(f0, a, 70, 32, SAMPLE_RATE), (amplitudes,))
    audio = torch.randn(1, 70, dtype=torch.float64)
    magnitudes = torch.rand(1, 3, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: dsp.frequency_filter(audio, m, 32), (magnitudes,))


def test_partial_bank_follows_a_moving_fundamental_like_the_oscillator_bank() -> None:
    """Frame-rate f0 and amplitudes, inharmonic partials: the same signal as a per-sample oscillator bank."""
    torch.manual_seed(0)
    frames, partials, hop = 20, 12, 64
    amplitudes = torch.rand(2, frames, partials)
    f0 = torch.tensor([220.0, 331.0])[:, None] * (1 + 0.01 * torch.sin(torch.arange(frames) / 3.0))[None]
    ratios = dsp.harmonic_ratios(partials, torch.tensor([0.0, 1e-3]))
    per_sample_f0 = dsp.upsample_frames(f0[..., None], frames * hop, hop)[..., 0]
    reference = dsp.oscillator_bank(
        per_sample_f0[..., None] * ratios[:, None, :].float(),
        dsp.upsample_frames(amplitudes, frames * hop, hop),
        SAMPLE_RATE,
    )
    torch.testing.assert_close(dsp.partial_bank(f0, ratios, amplitudes, hop, SAMPLE_RATE), reference, atol=2e-3, rtol=0)


def test_harmonic_ratios_stretch_like_a_stiff_string() -> None:
    ratios = dsp.harmonic_ratios(4, torch.tensor([0.0, 0.01]))
    torch.testing.assert_close(ratios[0], torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(ratios[1, 3], torch.tensor(4 * math.sqrt(1 + 0.01 * 16), dtype=torch.float64))


def test_band_noise_bands_sum_back_to_white_noise_and_split_the_spectrum() -> None:
    bands = dsp.band_noise(6, 8192, SAMPLE_RATE, seed=3)
    white = torch.rand(8192, generator=torch.Generator().manual_seed(3)) * 2 - 1
    torch.testing.assert_close(bands.sum(0), white, atol=1e-4, rtol=0)
    spectrum = torch.fft.rfft(bands).abs() ** 2
    centroid = (spectrum * torch.arange(spectrum.shape[-1])).sum(-1) / spectrum.sum(-1)
    assert (centroid.diff() > 0).all()  # bands go up in frequency


def test_fft_convolve_equals_direct_convolution() -> None:
    torch.manual_seed(0)
    audio, response = torch.randn(2, 300), torch.randn(2, 40)
    direct = torch.stack(
        [
            torch.nn.functional.conv1d(audio[i][None, None], response[i].flip(0)[None, None], padding=39)[0, 0, :300]
            for i in range(2)
        ]
    )
    torch.testing.assert_close(dsp.fft_convolve(audio, response), direct, atol=1e-4, rtol=0)


def test_decaying_noise_response_decays_at_each_bands_own_rate() -> None:
    bands = dsp.band_noise(2, 16000, SAMPLE_RATE, seed=1)
    response = dsp.decaying_noise_response(
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.05, 0.05], [0.2, 0.2]]), bands, SAMPLE_RATE
    )

    def level(signal: torch.Tensor, start: int) -> float:
        return signal[start : start + 800].pow(2).mean().sqrt().item()

    # Over 0.2 s the first (tau 0.05 s) falls by e^4, the second (tau 0.2 s) by e^1, within noise.
    assert math.log(level(response[0], 0) / level(response[0], 3200)) == pytest.approx(4.0, abs=0.6)
    assert math.log(level(response[1], 0) / level(response[1], 3200)) == pytest.approx(1.0, abs=0.4)


def test_frame_level_db_measures_rms_in_decibels_with_a_floor() -> None:
    t = torch.arange(1024) / SAMPLE_RATE
    sine = torch.sin(2 * math.pi * 440 * t) * 0.1  # RMS 0.1 / sqrt(2): -23.0 dB
    levels = dsp.frame_level_db(torch.stack([sine, torch.zeros(1024)]), 256)
    assert levels.shape == (2, 4)
    torch.testing.assert_close(levels[0], torch.full((4,), 20 * math.log10(0.1 / math.sqrt(2))), atol=0.05, rtol=0)
    assert (levels[1] == -80.0).all()


def test_partial_bank_phase_gradients_match_plain_autograd() -> None:
    """The hand-written backward of the partials' sine gives autograd's gradients (float64 gradcheck)."""
    from timbre.models.dsp import _SineOfPhases

    generator = torch.Generator().manual_seed(0)
    start = torch.rand(2, 3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    ratios = torch.rand(2, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    advance = torch.rand(2, 3, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_SineOfPhases.apply, (start, ratios, advance))
    plain = torch.addcmul(start[..., None], ratios[:, None, :, None], advance[:, :, None, :]).sin()
    torch.testing.assert_close(_SineOfPhases.apply(start, ratios, advance), plain)


def test_partial_bank_without_gradients_equals_the_differentiable_path() -> None:
    f0 = torch.full((2, 6), 220.0) * torch.linspace(1.0, 1.02, 6)
    amplitudes = torch.rand(2, 6, 5, generator=torch.Generator().manual_seed(1))
    ratios = dsp.harmonic_ratios(5, torch.tensor([0.0, 1e-3]))
    with torch.no_grad():
        fast = dsp.partial_bank(f0, ratios, amplitudes, 32, 16000)
    differentiable = dsp.partial_bank(f0.requires_grad_(), ratios, amplitudes, 32, 16000)
    torch.testing.assert_close(fast, differentiable.detach())


def test_fast_fft_size_is_the_smallest_5_smooth_length() -> None:
    def smallest_5_smooth(n: int) -> int:
        while True:
            rest = n
            for prime in (2, 3, 5):
                while rest % prime == 0:
                    rest //= prime
            if rest == 1:
                return n
            n += 1

    for size in [*range(1, 600), 71999, 24383]:
        assert dsp.fast_fft_size(size) == smallest_5_smooth(size), size
