"""The NSynth WaveNet-style encoder: audio to a temporal embedding at hop 512.

Faithful to NSynth's ``h512_bo16`` model: a start convolution, ``layers`` non-causal dilated
residual layers (ReLU, kernel ``kernel_size`` conv, ReLU, 1x1 conv, added to the residual), a 1x1
bottleneck to ``latent_dim`` channels and average pooling over windows of ``hop_length`` samples.

``downsample > 1`` (used by ``model=fast``, never by ``model=nsynth``) makes the start convolution
a strided learned filterbank (kernel ``2 * downsample``, stride ``downsample``), so the residual
stack runs at ``sample_rate / downsample``: the same architecture and latent shape at a fraction of
the cost, which is what lets the parallel model train and encode quickly on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from timbre.models.wavenet import dilations, quantize_and_scale


class NonCausalResidualLayer(nn.Module):
    """``x + conv1x1(relu(dilated_conv(relu(x))))`` with 'same' padding; ``[batch, channels, samples]``."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.dilated = nn.Conv1d(
            channels, channels, kernel_size, dilation=dilation, padding=(kernel_size - 1) * dilation // 2
        )
        self.project = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(F.relu(self.dilated(F.relu(x))))


class WaveNetEncoder(nn.Module):
    """Encodes a waveform into a temporal embedding.

    Args:
        channels: width of every residual layer (NSynth: 128).
        layers: number of dilated layers (NSynth: 30).
        stages: layers per dilation cycle (NSynth: 10, dilations 1..512).
        kernel_size: odd kernel of the dilated convolutions (NSynth: 3).
        latent_dim: embedding channels (NSynth: 16).
        hop_length: samples per embedding frame, the average-pooling window (NSynth: 512).
        downsample: stride of the start convolution (NSynth: 1); must divide ``hop_length``.
    """

    def __init__(
        self,
        channels: int = 128,
        layers: int = 30,
        stages: int = 10,
        kernel_size: int = 3,
        latent_dim: int = 16,
        hop_length: int = 512,
        downsample: int = 1,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"encoder kernel_size must be odd for centred padding, got {kernel_size}")
        if downsample < 1 or hop_length % downsample:
            raise ValueError(f"downsample {downsample} must be a positive divisor of hop_length {hop_length}")
        self.latent_dim = latent_dim
        self.hop_length = hop_length
        self.downsample = downsample
        if downsample == 1:
            self.start = nn.Conv1d(1, channels, kernel_size, padding=kernel_size // 2)
        else:
            self.start = nn.Conv1d(1, channels, 2 * downsample, stride=downsample, padding=downsample // 2)
        self.layers = nn.ModuleList(
            NonCausalResidualLayer(channels, kernel_size, d) for d in dilations(layers, stages)
        )
        self.bottleneck = nn.Conv1d(channels, latent_dim, 1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Args: audio ``[batch, samples]`` in [-1, 1], samples a multiple of ``hop_length``.

        Returns: embedding ``[batch, latent_dim, samples // hop_length]``.
        """
        if audio.dim() != 2:
            raise ValueError(f"encoder expects audio [batch, samples], got shape {tuple(audio.shape)}")
        if audio.shape[-1] % self.hop_length:
            raise ValueError(
                f"encoder input length {audio.shape[-1]} is not a multiple of hop_length {self.hop_length}"
            )
        _, scaled = quantize_and_scale(audio)
        x = self.start(scaled.unsqueeze(1))
        for layer in self.layers:
            x = layer(x)
        return F.avg_pool1d(self.bottleneck(x), self.hop_length // self.downsample)
