"""WaveNet building blocks shared by the encoder and the autoregressive decoder.

Dilations follow NSynth: layer ``i`` of a stack with ``stages`` layers per cycle has dilation
``2 ** (i % stages)``, so 30 layers with 10 stages cycle 1, 2, ..., 512 three times.
"""

from __future__ import annotations

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
