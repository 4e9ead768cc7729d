"""WaveNet building blocks shared by the encoder and the autoregressive decoder.

Dilations follow NSynth: layer ``i`` of a stack with ``stages`` layers per cycle has dilation
``2 ** (i % stages)``, so 30 layers with 10 stages cycle 1, 2, ..., 512 three times.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from timbre.io.audio import mu_law_encode


def dilations(layers: int, stages: int) -> list[int]:
    """Dilation of every layer: ``2 ** (i % stages)`` for ``i`` in ``range(layers)``."""
    if layers < 1 or stages < 1:
        raise ValueError(f"layers and stages must be positive, got layers={layers}, stages={stages}")
    return [2 ** (i % stages) for i in range(layers)]


def causal_receptive_field(layers: int, stages: int, kernel_size: int) -> int:
    """Number of past input samples (including the current one) a causal stack sees.

    The start convolution adds ``kernel_size - 1`` samples, every dilated layer
    ``(kernel_size - 1) * dilation``.
    """
    return 1 + (kernel_size - 1) * (1 + sum(dilations(layers, stages)))


MU_LAW_CLASSES = 256


def quantize_and_scale(audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mu-law quantize audio to 256 classes and scale them to [-1, 1), as NSynth feeds its networks.

    Args:
        audio: float waveform ``[batch, samples]`` in [-1, 1].
    Returns:
        ``(classes [batch, samples] long in [0, 256), scaled [batch, samples] float)``.
    """
    quantized = mu_law_encode(audio)
    return quantized, class_to_input(quantized)


def class_to_input(quantized: torch.Tensor) -> torch.Tensor:
    """Map mu-law class ids ``[...]`` to the network's input scale ``(q - 128) / 128``."""
    half = MU_LAW_CLASSES // 2
    return (quantized.to(torch.float32) - half) / half


class CausalConv1d(nn.Conv1d):
    """A dilated convolution whose output at time t only sees inputs at times <= t.

    Input and output are ``[batch, channels, samples]`` with equal lengths (left zero padding).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.left_padding = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left_padding, 0)))


def upsample_frames(frames: torch.Tensor, hop_length: int, samples: int) -> torch.Tensor:
    """Repeat each frame ``hop_length`` times (NSynth's conditioning upsampler).

    Args:
        frames: ``[batch, channels, frames]``.
        samples: length to return; must satisfy ``frames * hop_length >= samples``.
    Returns:
        ``[batch, channels, samples]``.
    """
    available = frames.shape[-1] * hop_length
    if available < samples:
        raise ValueError(f"{frames.shape[-1]} frames at hop {hop_length} cover {available} samples, need {samples}")
    return frames.repeat_interleave(hop_length, dim=-1)[..., :samples]


def source_cycles(pitch: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Cycles per sample of the equal-tempered MIDI ``pitch [batch]``: ``float64 [batch]``.

    Float64 because the source's phase is ``cycles * t`` for ``t`` up to minutes of samples.
    """
    return 440.0 * torch.pow(2.0, (pitch.to(torch.float64) - 69.0) / 12.0) / sample_rate


def pitch_source(
    cycles: torch.Tensor, positions: torch.Tensor, harmonics: int, offsets: torch.Tensor | None = None
) -> torch.Tensor:
    """The sample-rate pitch clock a source-conditioned decoder adds in every layer.

    ``s(t) = [sin(2 pi k phi(t)) for k in 1..H, cos(2 pi k phi(t)) for k in 1..H]`` with
    ``phi(t) = frac(cycles * t + offset)``; harmonic ``k`` is zero where ``k * cycles >= 1/2`` (at
    or above Nyquist it would alias). The decoder, both cached steppers and the native kernel
    compute exactly this (phase in float64, rounded to float32 at the end); decoding starts at
    offset 0.

    Args:
        cycles: ``float64 [batch]`` from :func:`source_cycles`.
        positions: sample indices, ``[samples]`` (any integer or float dtype, or a one-element
            tensor for one step).
        harmonics: ``H``.
        offsets: the phase at position 0 in cycles, ``[batch]`` (default 0; in training, the
            phase of the crop's own fundamental, :func:`fundamental_phase`).
    Returns:
        ``float32 [batch, 2H, samples]``.
    """
    k = torch.arange(1, harmonics + 1, dtype=torch.float64, device=cycles.device)
    phase = cycles[:, None] * positions.to(torch.float64)[None, :]  # [batch, samples]
    if offsets is not None:
        phase = phase + offsets.to(torch.float64)[:, None]
    phase = torch.frac(phase)
    angles = (2 * math.pi) * k[None, :, None] * phase[:, None, :]  # [batch, H, samples]
    audible = (k[None, :] * cycles[:, None] < 0.5).to(torch.float64)[:, :, None]
    return torch.cat([angles.sin() * audible, angles.cos() * audible], dim=1).to(torch.float32)


def fundamental_phase(audio: torch.Tensor, cycles: torch.Tensor) -> torch.Tensor:
    """Phase at sample 0, in cycles in [0, 1), of the component of ``audio`` at ``cycles`` per sample.

    The Hann-windowed Fourier coefficient of each note at its own frequency: for
    ``A cos(2 pi (cycles t + theta))`` plus other partials, ``theta``. A clock started at that
    offset keeps its cosine in phase with the note's fundamental (a note a few cents off its
    MIDI pitch drifts from it by a fraction of a cycle over a crop; the fit is the crop's average).

    Args:
        audio: ``[batch, samples]``.
        cycles: ``float64 [batch]``.
    Returns:
        ``float64 [batch]``.
    """
    samples = audio.shape[-1]
    t = torch.arange(samples, dtype=torch.float64, device=audio.device)
    window = torch.hann_window(samples, periodic=False, dtype=torch.float64, device=audio.device)
    angle = (2 * math.pi) * torch.frac(cycles[:, None] * t[None, :])
    weighted = audio.detach().to(torch.float64) * window
    real, imaginary = (weighted * angle.cos()).sum(-1), -(weighted * angle.sin()).sum(-1)
    return torch.remainder(torch.atan2(imaginary, real) / (2 * math.pi), 1.0)
