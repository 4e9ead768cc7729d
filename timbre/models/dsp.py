"""Differentiable DSP building blocks for the parallel decoder, after magenta/ddsp (core.py, synths.py).

Everything here is a pure function of tensors: no parameters, no state, differentiable with
respect to the amplitudes and magnitudes a network predicts. Controls are frame-rate tensors
``[batch, frames, channels]``; frame ``i`` of a control at hop ``h`` describes the samples centred
on ``i * h + h / 2`` (the same convention as average pooling with hop ``h`` and as
``torch.nn.functional.interpolate(..., align_corners=False)``), and samples beyond the last frame
hold its value.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def midi_to_hz(notes: Tensor | float) -> Tensor:
    """Frequency in Hz of MIDI note numbers (69 = A4 = 440 Hz); fractional notes are allowed.

    Args:
        notes: MIDI note numbers, any shape (integer or float).

    Returns:
        Float tensor of the same shape.
    """
    notes = torch.as_tensor(notes)
    if not notes.is_floating_point():
        notes = notes.to(torch.get_default_dtype())
    return 440.0 * torch.pow(2.0, (notes - 69.0) / 12.0)


def velocity_to_gain(velocity: Tensor | float) -> Tensor:
    """Linear gain for a MIDI velocity, the General MIDI curve ``(velocity / 127) ** 2`` (40 dB range).

    Args:
        velocity: MIDI velocities in [0, 127], any shape.

    Returns:
        Float tensor of the same shape, 1.0 at velocity 127.
    """
    velocity = torch.as_tensor(velocity)
    if not velocity.is_floating_point():
        velocity = velocity.to(torch.get_default_dtype())
    return (velocity.clamp(0.0, 127.0) / 127.0) ** 2


def exp_sigmoid(x: Tensor, exponent: float = 10.0, max_value: float = 2.0, threshold: float = 1e-7) -> Tensor:
    """DDSP's scaled sigmoid for positive amplitudes: ``max_value * sigmoid(x) ** log(exponent) + threshold``.

    Its log-like slope suits amplitudes, which matter on a decibel scale, and the threshold keeps
    them strictly positive so log-magnitude losses stay finite.
    """
    return max_value * torch.sigmoid(x) ** math.log(exponent) + threshold


def frame_level_db(audio: Tensor, frame_length: int, floor_db: float = -80.0) -> Tensor:
    """RMS level of consecutive frames in dB re full scale, floored at ``floor_db``.

    Args:
        audio: ``[batch, samples]``; a last partial frame is dropped.
        frame_length: samples per frame.

    Returns:
        ``[batch, samples // frame_length]``.
    """
    n_frames = audio.shape[-1] // frame_length
    power = audio[:, : n_frames * frame_length].reshape(audio.shape[0], n_frames, frame_length).pow(2).mean(dim=-1)
    return 10.0 * torch.log10(power.clamp(min=10.0 ** (floor_db / 10.0)))


def upsample_frames(controls: Tensor, n_samples: int, hop_length: int) -> Tensor:
    """Frame-rate controls to sample rate, linearly interpolated between frame centres.

    Args:
        controls: ``[batch, frames, channels]`` at hop ``hop_length``.
        n_samples: length of the result; samples past the last frame centre hold its value,
            frames past ``n_samples`` are ignored.
        hop_length: samples per frame.

    Returns:
        ``[batch, n_samples, channels]``.
    """
    n_frames = controls.shape[1]
    upsampled = F.interpolate(controls.transpose(1, 2), size=n_frames * hop_length, mode="linear", align_corners=False)
    if upsampled.shape[-1] < n_samples:
        upsampled = F.pad(upsampled, (0, n_samples - upsampled.shape[-1]), mode="replicate")
    return upsampled[..., :n_samples].transpose(1, 2)


def hold_to_length(audio: Tensor, n_samples: int) -> Tensor:
    """``[batch, samples]`` cropped, or extended by holding its last sample, to ``n_samples``."""
    if audio.shape[-1] >= n_samples:
        return audio[..., :n_samples]
    return F.pad(audio, (0, n_samples - audio.shape[-1]), mode="replicate")


def _hold_frames(controls: Tensor, n_frames: int) -> Tensor:
    """``[batch, frames, channels]`` cropped, or padded by repeating the last frame, to ``n_frames``."""
    index = torch.arange(n_frames, device=controls.device).clamp(max=controls.shape[1] - 1)
    return controls[:, index]


def oscillator_bank(frequencies: Tensor, amplitudes: Tensor, sample_rate: int) -> Tensor:
    """A bank of sinusoidal oscillators with sample-rate frequency and amplitude envelopes.

    The phase is the cumulative sum of the instantaneous angular frequency, starting at zero on the
    first sample. It is summed in float64 and wrapped to [0, 2 pi) before the sine: in float32 the
    phase of a 7 kHz partial reaches 1.8e5 rad after 4 s, where its resolution is 0.016 rad.
    Oscillators at or above Nyquist are silenced instead of aliasing.

    Args:
        frequencies: ``[batch, samples, oscillators]`` in Hz.
        amplitudes: ``[batch, samples, oscillators]``.
        sample_rate: samples per second.

    Returns:
        ``[batch, samples]``, the sum of the oscillators.
    """
    amplitudes = amplitudes * (frequencies < sample_rate / 2).to(amplitudes.dtype)
    omegas = 2.0 * math.pi * frequencies.double() / sample_rate
    phases = torch.remainder(torch.cumsum(omegas, dim=1) - omegas, 2.0 * math.pi)
    return (torch.sin(phases).to(amplitudes.dtype) * amplitudes).sum(dim=-1)


def harmonic_synthesis(
    f0_hz: Tensor, harmonic_amplitudes: Tensor, n_samples: int, hop_length: int, sample_rate: int
) -> Tensor:
    """Harmonic oscillators at multiples of a constant fundamental, with frame-rate amplitudes.

    Equal to ``oscillator_bank(k * f0, upsample_frames(harmonic_amplitudes))`` for harmonics
    ``k = 1..n``, but computed per hop segment instead of per sample: with a constant frequency,
    ``sin(w (t0 + tau)) = sin(w t0) cos(w tau) + cos(w t0) sin(w tau)``, so each segment of
    ``hop_length`` samples is one small matrix product of per-frame coefficients with a fixed
    ``[harmonics, hop_length]`` basis. That is ~``hop_length`` times fewer sines than the
    oscillator bank and keeps the whole synthesis far faster than real time on a CPU.

    Args:
        f0_hz: ``[batch]`` fundamental frequency in Hz, constant over the note.
        harmonic_amplitudes: ``[batch, frames, harmonics]`` amplitude of harmonic ``k + 1`` in
            channel ``k``, at hop ``hop_length``. Harmonics at or above Nyquist are silenced.
        n_samples: length of the result.
        hop_length: samples per control frame.
        sample_rate: samples per second.

    Returns:
        ``[batch, n_samples]``.
    """
    batch, _, n_harmonics = harmonic_amplitudes.shape
    assert f0_hz.shape == (batch,), f"f0_hz must be [batch={batch}], got {tuple(f0_hz.shape)}"
    device, dtype = harmonic_amplitudes.device, harmonic_amplitudes.dtype
    harmonic_numbers = torch.arange(1, n_harmonics + 1, device=device, dtype=torch.float64)
    harmonic_hz = f0_hz.double()[:, None] * harmonic_numbers  # [batch, harmonics]
    audible = (harmonic_hz < sample_rate / 2).to(dtype)
    amplitudes = harmonic_amplitudes * audible[:, None, :]

    # Segment j spans samples [start_j, start_j + hop) with start_j = (j - 1) * hop + hop // 2, so
    # it runs from the centre of frame j - 1 to the centre of frame j (frame -1 is frame 0 held).
    first_start = hop_length // 2 - hop_length
    n_segments = -(-(n_samples - first_start) // hop_length)
    frame_index = (torch.arange(n_segments + 1, device=device) - 1).clamp(0, amplitudes.shape[1] - 1)
    held = amplitudes[:, frame_index]  # [batch, segments + 1, harmonics]
    left, right = held[:, :-1], held[:, 1:]

    # Phases in cycles, reduced modulo 1 in float64 so late segments keep their precision.
    cycles_per_sample = harmonic_hz / sample_rate  # [batch, harmonics]
    segment_starts = first_start + hop_length * torch.arange(n_segments, device=device, dtype=torch.float64)
    start_phase = 2.0 * math.pi * torch.remainder(segment_starts[None, :, None] * cycles_per_sample[:, None, :], 1.0)
    sin_start, cos_start = torch.sin(start_phase).to(dtype), torch.cos(start_phase).to(dtype)
    offsets = torch.arange(hop_length, device=device, dtype=torch.float64)
    offset_phase = 2.0 * math.pi * torch.remainder(cycles_per_sample[:, :, None] * offsets, 1.0)
    cos_offset, sin_offset = torch.cos(offset_phase).to(dtype), torch.sin(offset_phase).to(dtype)

    # Linear-interpolation weight of the right frame at each offset (matches upsample_frames).
    weight = (offsets + (hop_length // 2 - (hop_length - 1) / 2)).to(dtype) / hop_length  # [hop]
    coefficients = torch.cat(
        [left * sin_start, left * cos_start, right * sin_start, right * cos_start], dim=-1
    )  # [batch, segments, 4 * harmonics]
    basis = torch.cat(
        [(1 - weight) * cos_offset, (1 - weight) * sin_offset, weight * cos_offset, weight * sin_offset], dim=1
    )  # [batch, 4 * harmonics, hop]
    segments = torch.bmm(coefficients, basis)  # [batch, segments, hop]
    return segments.reshape(batch, -1)[:, -first_start : -first_start + n_samples]


def normalize_harmonic_distribution(distribution: Tensor, f0_hz: Tensor, sample_rate: int) -> Tensor:
    """Zero the harmonics at or above Nyquist and rescale the rest to sum to one.

    Args:
        distribution: ``[batch, frames, harmonics]`` positive weights of harmonics ``1..n``.
        f0_hz: ``[batch]`` fundamental in Hz.
        sample_rate: samples per second.

    Returns:
        ``[batch, frames, harmonics]``; all zeros where even the fundamental is above Nyquist.
    """
    n_harmonics = distribution.shape[-1]
    harmonic_numbers = torch.arange(1, n_harmonics + 1, device=distribution.device, dtype=f0_hz.dtype)
    audible = (f0_hz[:, None] * harmonic_numbers < sample_rate / 2).to(distribution.dtype)
    distribution = distribution * audible[:, None, :]
    return distribution / (distribution.sum(dim=-1, keepdim=True) + 1e-7)


def frequency_impulse_response(magnitudes: Tensor) -> Tensor:
    """Linear-phase FIR filters from frequency-sampled magnitude responses (DDSP's frequency sampling).

    The zero-phase impulse response (inverse real FFT of the magnitudes) is centred and shaped by a
    Hann window, which smooths the response between the sampled frequencies.

    Args:
        magnitudes: ``[..., bands]`` gains at ``bands`` frequencies spaced evenly from 0 Hz to Nyquist.

    Returns:
        ``[..., 2 * (bands - 1)]`` impulse responses, delayed by ``bands - 1`` samples.
    """
    impulse_response = torch.fft.irfft(magnitudes)
    size = impulse_response.shape[-1]
    window = torch.hann_window(size, periodic=True, dtype=impulse_response.dtype, device=impulse_response.device)
    return torch.roll(impulse_response, size // 2, dims=-1) * window


def frequency_filter(audio: Tensor, magnitudes: Tensor, hop_length: int) -> Tensor:
    """Filter audio with a time-varying FIR filter, one per block of ``hop_length`` samples.

    Block ``j`` (samples ``[j * hop, (j + 1) * hop)``) is convolved with the impulse response of
    frame ``j`` by FFT and the blocks' tails are overlap-added; the filters' linear-phase delay is
    removed, so a flat response of ones returns ``audio`` unchanged.

    Args:
        audio: ``[batch, samples]``.
        magnitudes: ``[batch, frames, bands]`` magnitude responses (see
            :func:`frequency_impulse_response`); the last frame is held past its end.
        hop_length: samples per frame.

    Returns:
        ``[batch, samples]``.
    """
    batch, n_samples = audio.shape
    n_blocks = -(-n_samples // hop_length)
    impulse_responses = frequency_impulse_response(_hold_frames(magnitudes, n_blocks))  # [batch, blocks, ir]
    ir_size = impulse_responses.shape[-1]
    blocks = F.pad(audio, (0, n_blocks * hop_length - n_samples)).reshape(batch, n_blocks, hop_length)
    fft_size = 2 ** math.ceil(math.log2(hop_length + ir_size - 1))
    spectrum = torch.fft.rfft(blocks, fft_size) * torch.fft.rfft(impulse_responses, fft_size)
    filtered = torch.fft.irfft(spectrum, fft_size)  # [batch, blocks, fft_size]
    output_size = (n_blocks - 1) * hop_length + fft_size
    overlapped = F.fold(
        filtered.transpose(1, 2), output_size=(1, output_size), kernel_size=(1, fft_size), stride=(1, hop_length)
    ).reshape(batch, output_size)
    delay = ir_size // 2
    return overlapped[:, delay : delay + n_samples]


def filtered_noise(
    magnitudes: Tensor, n_samples: int, hop_length: int, generator: torch.Generator | None = None
) -> Tensor:
    """Uniform white noise in [-1, 1] shaped by time-varying filters (DDSP's FilteredNoise synth).

    Args:
        magnitudes: ``[batch, frames, bands]`` magnitude responses at hop ``hop_length``.
        n_samples: length of the result.
        hop_length: samples per frame.
        generator: source of the noise, for reproducible output; the global one when ``None``.

    Returns:
        ``[batch, n_samples]``.
    """
    noise = torch.rand(
        magnitudes.shape[0], n_samples, generator=generator, device=magnitudes.device, dtype=magnitudes.dtype
    )
    return frequency_filter(noise * 2.0 - 1.0, magnitudes, hop_length)


def cents_to_ratio(cents: Tensor) -> Tensor:
    """Frequency ratio of an interval in cents (1200 cents = one octave), any shape."""
    return torch.pow(2.0, cents / 1200.0)


def partial_numbers(n_harmonics: int, n_subharmonics: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """Partials as multiples of the fundamental, ascending: ``1..n_harmonics`` and ``0.5, 1.5, ...``.

    The half-integer ones (``n_subharmonics`` of them, from ``0.5``) are the odd partials of the
    octave below: the 16' and 5 1/3' stops of an organ, sounding under the key's own fundamental.

    Returns:
        ``[n_harmonics + n_subharmonics]`` sorted ratios.
    """
    whole = torch.arange(1, n_harmonics + 1, dtype=dtype)
    half = torch.arange(n_subharmonics, dtype=dtype) + 0.5
    return torch.cat([whole, half]).sort().values


def harmonic_ratios(
    n_harmonics: int, inharmonicity: Tensor | None, dtype: torch.dtype = torch.float64, n_subharmonics: int = 0
) -> Tensor:
    """Partial frequencies as multiples of the fundamental, stiff-string style.

    A stiff string (piano, harpsichord) or a bar (bells, mallets) sounds partial ``k`` at
    ``k * f0 * sqrt(1 + B k^2)`` (Fletcher, 1964); ``B = 0`` gives the harmonic series.

    Args:
        n_harmonics: partials ``k = 1..n_harmonics``.
        inharmonicity: ``[batch]`` coefficients ``B >= 0``, or ``None`` for exact harmonics.
        dtype: dtype of the result.
        n_subharmonics: half-integer partials ``k = 0.5, 1.5, ...`` sorted in among the others
            (:func:`partial_numbers`).

    Returns:
        ``[batch, partials]`` ratios (``[1, partials]`` when ``inharmonicity`` is ``None``),
        ``partials = n_harmonics + n_subharmonics``.
    """
    device = inharmonicity.device if inharmonicity is not None else None
    k = partial_numbers(n_harmonics, n_subharmonics, dtype).to(device)[None, :]
    if inharmonicity is None:
        return k
    return k * torch.sqrt(1.0 + inharmonicity.to(dtype)[:, None] * k**2)


def partial_bank(f0_hz: Tensor, ratios: Tensor, amplitudes: Tensor, hop_length: int, sample_rate: int) -> Tensor:
    """Partials at fixed ratios of a time-varying fundamental, all controls at frame rate.

    The fundamental and the partials' amplitudes are interpolated linearly between frame centres
    (as :func:`upsample_frames` does). The work is organised in segments of ``hop_length`` samples
    running from one frame centre to the next: each partial's phase at a segment's start is
    accumulated in float64 at frame rate and reduced modulo one cycle, and only the phase advance
    within the segment (at most ``hop_length / 2`` cycles of the fundamental) is computed per
    sample in float32. Amplitudes enter as ``left + weight * (right - left)``, so the sum over
    partials is two batched matrix products instead of a sample-rate envelope per partial.
    Partials at or above Nyquist (at the highest fundamental of the note) are silenced.

    Args:
        f0_hz: ``[batch, frames]`` fundamental in Hz at hop ``hop_length``.
        ratios: ``[batch or 1, partials]`` frequency ratios to the fundamental (float64).
        amplitudes: ``[batch, frames, partials]`` at hop ``hop_length``.
        hop_length: samples per frame.
        sample_rate: samples per second.

    Returns:
        ``[batch, frames * hop_length]``; the caller crops or holds to its length.
    """
    batch, n_frames, n_partials = amplitudes.shape
    dtype, device = amplitudes.dtype, amplitudes.device
    ratios = ratios.expand(batch, -1)
    top_hz = f0_hz.detach().amax(dim=1).double()[:, None] * ratios
    amplitudes = amplitudes * (top_hz < sample_rate / 2).to(dtype)[:, None, :]

    # Segment j spans samples [(j - 1) * hop + hop // 2, j * hop + hop // 2): from the centre of
    # frame j - 1 to the centre of frame j (frame -1 is frame 0 held).
    n_segments = n_frames + 1
    index = (torch.arange(n_segments + 1, device=device) - 1).clamp(0, n_frames - 1)
    offsets = torch.arange(hop_length, device=device, dtype=torch.float64)
    weight = (offsets + (hop_length // 2 - (hop_length - 1) / 2)) / hop_length  # right frame's share
    f0_left, f0_right = f0_hz.double()[:, index[:-1]], f0_hz.double()[:, index[1:]]  # [batch, segments]
    # Cycles of the fundamental advanced from the segment's start to each of its samples (exclusive).
    cycles_per_sample = (f0_left[..., None] + (f0_right - f0_left)[..., None] * weight) / sample_rate
    advance = torch.cumsum(cycles_per_sample, dim=-1) - cycles_per_sample  # [batch, segments, hop]
    segment_cycles = advance[..., -1] + cycles_per_sample[..., -1]
    start = torch.cumsum(segment_cycles, dim=1) - segment_cycles  # [batch, segments]
    first = hop_length - hop_length // 2  # samples of segment 0 before sample 0
    start = start - advance[:, :1, first]  # phase zero on sample 0, like the oscillator bank
    start_phase = torch.remainder(start[..., None] * ratios[:, None, :], 1.0)  # [batch, segments, partials]

    sines = _sine_of_phases(
        (2.0 * math.pi * start_phase).to(dtype), (2.0 * math.pi * ratios).to(dtype), advance.to(dtype)
    ).reshape(batch * n_segments, n_partials, hop_length)
    left, right = amplitudes[:, index[:-1]], amplitudes[:, index[1:]]  # [batch, segments, partials]
    pair = torch.stack([left, right - left], dim=-2).reshape(batch * n_segments, 2, n_partials)
    mixed = torch.bmm(pair, sines).reshape(batch, n_segments, 2, hop_length)
    segments = mixed[:, :, 0] + weight.to(dtype) * mixed[:, :, 1]
    return segments.reshape(batch, -1)[:, first : first + n_frames * hop_length]


def _sine_of_phases(start: Tensor, ratios: Tensor, advance: Tensor) -> Tensor:
    """``sin(start[b, s, p] + ratios[b, p] * advance[b, s, n])`` as ``[batch, segments, partials, hop]``.

    Without gradients: one fused multiply-add and an in-place sine. With gradients, the backward
    of :class:`_SineOfPhases` replaces autograd's broadcast multiply-and-sum per input, which was a
    fifth of a training step of the default model.
    """
    if torch.is_grad_enabled() and (start.requires_grad or ratios.requires_grad or advance.requires_grad):
        return _SineOfPhases.apply(start, ratios, advance)
    return torch.addcmul(start[..., None], ratios[:, None, :, None], advance[:, :, None, :]).sin_()


class _SineOfPhases(torch.autograd.Function):
    """Autograd for :func:`_sine_of_phases`: the input gradients as reductions and batched matmuls."""

    @staticmethod
    def forward(ctx: Any, start: Tensor, ratios: Tensor, advance: Tensor) -> Tensor:
        angles = torch.addcmul(start[..., None], ratios[:, None, :, None], advance[:, :, None, :])
        ctx.save_for_backward(angles, ratios, advance)
        return angles.sin()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        angles, ratios, advance = ctx.saved_tensors
        grad_angles = angles.cos().mul_(grad)  # [batch, segments, partials, hop]
        grad_start = grad_angles.sum(dim=-1) if ctx.needs_input_grad[0] else None
        grad_ratios = grad_advance = None
        if ctx.needs_input_grad[1]:
            # Per (batch, segment): [partials, hop] @ [hop, 1], then summed over the segments.
            grad_ratios = torch.matmul(grad_angles, advance[..., None]).sum(dim=1)[..., 0]
        if ctx.needs_input_grad[2]:
            # Per (batch, segment): [1, partials] @ [partials, hop].
            grad_advance = torch.matmul(ratios[:, None, None, :], grad_angles)[:, :, 0, :]
        return grad_start, grad_ratios, grad_advance


def fast_fft_size(size: int) -> int:
    """The smallest ``2^a 3^b 5^c >= size``: pocketfft (torch.fft) is fast at those lengths, and a
    4 s note with a 0.5 s response needs 72,000 points instead of the next power of two, 131,072."""
    best = 2 ** math.ceil(math.log2(max(size, 1)))
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35 * 2 ** max(0, math.ceil(math.log2(size / power35)))
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


def fft_convolve(audio: Tensor, impulse_response: Tensor) -> Tensor:
    """Causal convolution of ``[batch, samples]`` with ``[batch, taps]`` by FFT, cut to ``samples``."""
    n_samples = audio.shape[-1]
    fft_size = fast_fft_size(n_samples + impulse_response.shape[-1] - 1)
    spectrum = torch.fft.rfft(audio, fft_size) * torch.fft.rfft(impulse_response, fft_size)
    return torch.fft.irfft(spectrum, fft_size)[..., :n_samples]


def decaying_noise_response(gains: Tensor, decays: Tensor, bands: Tensor, sample_rate: int) -> Tensor:
    """A room/body impulse response: band-limited noises, each with its own level and decay time.

    Each band's decaying noise ``exp(-t / decays[b]) * bands[b, t]`` (``t = 1..taps``: the response
    starts one sample late, the direct sound being the dry signal itself) is scaled to unit energy
    before its gain, so a gain is the band's wet-to-dry level whatever its decay: a longer tail
    does not make the room louder, and the levels a network predicts stay in a bounded range.

    Args:
        gains: ``[batch, bands]`` wet-to-dry levels.
        decays: ``[batch, bands]`` time constants in seconds (amplitude falls by ``e`` per constant).
        bands: ``[bands, taps]`` band-limited noises (:func:`band_noise`).
        sample_rate: samples per second.

    Returns:
        ``[batch, taps]``.
    """
    time = torch.arange(1, bands.shape[-1] + 1, device=bands.device, dtype=gains.dtype) / sample_rate
    tails = torch.exp(-time / decays[..., None]) * bands  # [batch, bands, taps]
    tails = tails / tails.pow(2).sum(dim=-1, keepdim=True).add(1e-12).sqrt()
    return (gains[..., None] * tails).sum(dim=1)


def band_noise(n_bands: int, n_samples: int, sample_rate: int, seed: int = 0) -> Tensor:
    """White noise split into ``n_bands`` log-spaced bands (40 Hz to Nyquist) that sum back to it.

    The band edges are smooth (raised-cosine crossovers on a log-frequency axis), so any positive
    combination of the bands is a noise with a smooth spectral envelope.

    Returns:
        ``[n_bands, n_samples]``, deterministic for a given ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(n_samples, generator=generator) * 2.0 - 1.0
    spectrum = torch.fft.rfft(noise)
    hz = torch.linspace(0.0, sample_rate / 2, spectrum.shape[-1])
    position = torch.log2(hz.clamp(min=40.0) / 40.0) / math.log2(sample_rate / 2 / 40.0) * (n_bands - 1)
    centres = torch.arange(n_bands, dtype=position.dtype)[:, None]
    distance = (position[None, :] - centres).abs().clamp(max=1.0)
    weights = 0.5 + 0.5 * torch.cos(math.pi * distance)  # partition of unity between neighbouring centres
    return torch.fft.irfft(spectrum[None, :] * weights, n_samples)
