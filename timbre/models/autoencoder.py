"""An encoder and a pitch-conditioned decoder joined into one trainable note autoencoder.

The decoder is either the autoregressive :class:`~timbre.models.decoder.WaveNetDecoder` or the
parallel :class:`~timbre.models.parallel.HarmonicNoiseDecoder`; both implement
``reconstruction_loss(audio, z, pitch)``; the parallel one synthesizes a note itself, the
autoregressive one is run by the cached engine (:mod:`timbre.generation`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from timbre.models.decoder import WaveNetDecoder
from timbre.models.encoder import WaveNetEncoder
from timbre.models.parallel import HarmonicNoiseDecoder


class Autoencoder(nn.Module):
    """Encoder + decoder sharing the latent shape ``[batch, latent_dim, frames]`` at ``hop_length``.

    Args:
        encoder: maps audio ``[batch, samples]`` to ``z [batch, latent_dim, samples // hop_length]``.
        decoder: reconstructs audio from ``z`` and the MIDI pitch.
        sample_rate: audio rate the model was trained at.
    """

    def __init__(
        self, encoder: WaveNetEncoder, decoder: WaveNetDecoder | HarmonicNoiseDecoder, sample_rate: int = 16000
    ) -> None:
        super().__init__()
        if encoder.hop_length != decoder.hop_length or encoder.latent_dim != decoder.latent_dim:
            raise ValueError(
                "encoder and decoder disagree on the latent shape: "
                f"hop {encoder.hop_length} vs {decoder.hop_length}, dim {encoder.latent_dim} vs {decoder.latent_dim}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.sample_rate = sample_rate
        self.hop_length = encoder.hop_length
        self.latent_dim = encoder.latent_dim

    @property
    def encoder_reads_pitch(self) -> bool:
        """Whether :meth:`encode` needs the notes' pitch (an encoder reading partial levels)."""
        return bool(getattr(self.encoder, "reads_pitch", False))

    def encode(self, audio: torch.Tensor, pitch: torch.Tensor | None = None) -> torch.Tensor:
        """``audio [batch, samples]`` (a multiple of ``hop_length``) to ``z [batch, latent_dim, frames]``.

        ``pitch`` (MIDI ``[batch]``) is needed when :attr:`encoder_reads_pitch`, ignored otherwise.
        """
        return self.encoder(audio, pitch)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction loss of ``batch["audio"] [batch, samples]`` given ``batch["pitch"] [batch]``."""
        audio, pitch = batch["audio"], batch["pitch"]
        return self.decoder.reconstruction_loss(audio, self.encode(audio, pitch), pitch)

    def decode(
        self, z: torch.Tensor, pitch: torch.Tensor, n_samples: int | None = None, **options: Any
    ) -> torch.Tensor:
        """Synthesize ``[batch, n_samples]`` (default ``frames * hop_length``) from ``z`` at MIDI ``pitch [batch]``.

        The autoregressive decoder is run by the cached decoding engine
        (:func:`timbre.generation.engine.generate`, which reads the decoder's step layout); the
        parallel decoder synthesizes the whole note itself. ``options`` go to whichever runs.
        """
        if n_samples is None:
            n_samples = z.shape[-1] * self.hop_length
        if isinstance(self.decoder, WaveNetDecoder):
            from timbre.generation.engine import generate  # deferred: most models never need the engine

            return generate(self.decoder, z, pitch, n_samples, **options)
        return self.decoder.synthesize(z, pitch, n_samples, **options)
