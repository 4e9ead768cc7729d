"""The NSynth autoregressive WaveNet decoder, conditioned on a temporal embedding and a MIDI pitch.

Faithful to NSynth's ``h512_bo16``: a causal start convolution, ``layers`` gated residual layers
(``tanh * sigmoid`` of a causal dilated convolution plus the conditioning, 1x1 residual and skip
projections), ReLU, a 1x1 with the conditioning added again, ReLU, 1x1 to 256 mu-law logits.

The conditioning at frame rate is the embedding ``z`` concatenated with a learned embedding of the
MIDI pitch (broadcast over frames), so a timbre encoded at one pitch can be played at another. Every
layer maps it through its own 1x1 convolution; since a 1x1 convolution commutes with repeating
frames, the maps are applied at frame rate and upsampled afterwards (``hop_length`` times cheaper).

Optionally (``source_harmonics > 0``) every layer also adds a 1x1 map of a sample-rate *pitch
clock*: sines and cosines of the first harmonics of the MIDI pitch
(:func:`timbre.models.wavenet.pitch_source`), the excitation of a neural source-filter model
(Wang et al., 2019). NSynth's decoder has to build an oscillator out of its own feedback, which
it had not done after the training a CPU affords (``wavenet-v1``, then bundled as ``wavenet-small``: no note within
50 cents after 1,800 steps); with a clock in every layer it only has to lock the waveform to it.
Decoding starts the clock at phase 0; in training each crop's clock starts at the phase of the
crop's own fundamental
(:func:`timbre.models.wavenet.fundamental_phase`), so that the clock's cosine is in phase with
the note's fundamental. With a clock of arbitrary phase the past samples tell the next one more
than the clock does, and teacher forcing gives little reason to follow it: after 1,000 steps
trained that way, notes decoded at MIDI 60 came out 0.4 to 3.8 semitones sharp, their strongest
partials on none of the clock's harmonics.

Sampling runs in the cached engine (:mod:`timbre.generation.engine`), which reads the decoder only
through :meth:`WaveNetDecoder.step_weights`: the layout of one step, owned here.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from timbre.models.decoder_step import DecoderStepWeights, LayerStepWeights
from timbre.models.wavenet import (
    MU_LAW_CLASSES,
    CausalConv1d,
    causal_receptive_field,
    dilations,
    fundamental_phase,
    pitch_source,
    quantize_and_scale,
    source_cycles,
    upsample_frames,
)

MIDI_PITCHES = 128


class GatedResidualLayer(nn.Module):
    """One decoder layer: gated activation of a causal dilated conv plus conditioning.

    Tensors are ``[batch, channels, samples]``. The last layer has no residual projection
    (``has_residual=False``): its residual output would feed nothing, and an unused parameter
    breaks DDP's gradient reduction. ``source_channels > 0`` adds a 1x1 map of the pitch clock.
    """

    def __init__(
        self,
        residual_channels: int,
        skip_channels: int,
        condition_channels: int,
        kernel_size: int,
        dilation: int,
        has_residual: bool = True,
        source_channels: int = 0,
    ) -> None:
        super().__init__()
        self.residual_channels = residual_channels
        self.dilated = CausalConv1d(residual_channels, 2 * residual_channels, kernel_size, dilation)
        self.condition = nn.Conv1d(condition_channels, 2 * residual_channels, 1)
        # The pitch clock's map; no bias (the conditioning map has one).
        self.source = nn.Conv1d(source_channels, 2 * residual_channels, 1, bias=False) if source_channels else None
        self.residual = nn.Conv1d(residual_channels, residual_channels, 1) if has_residual else None
        self.skip = nn.Conv1d(residual_channels, skip_channels, 1)

    def gate(self, pre_activation: torch.Tensor) -> torch.Tensor:
        """``tanh(filter) * sigmoid(gate)`` over the two halves of the channel axis."""
        filter_part, gate_part = pre_activation.split(self.residual_channels, dim=1)
        return torch.tanh(filter_part) * torch.sigmoid(gate_part)

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor, source: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x ``[batch, residual, samples]``; condition ``[batch, 2*residual, samples]``;
        source ``[batch, source_channels, samples]`` (the pitch clock) when the layer maps one.

        Returns: ``(residual output [batch, residual, samples], skip [batch, skip, samples])``;
        without a residual projection the residual output is ``x`` itself.
        """
        pre_activation = self.dilated(x) + condition
        if self.source is not None:
            if source is None:
                raise ValueError("this layer adds a pitch clock: pass source")
            pre_activation = pre_activation + self.source(source)
        gated = self.gate(pre_activation)
        residual = x if self.residual is None else x + self.residual(gated)
        return residual, self.skip(gated)


class WaveNetDecoder(nn.Module):
    """Autoregressive decoder over 256 mu-law classes.

    Args:
        residual_channels: width of the residual stream (NSynth: 512).
        skip_channels: width of the skip stream (NSynth: 256).
        layers: gated layers (NSynth: 30).
        stages: layers per dilation cycle (NSynth: 10).
        kernel_size: causal kernel (NSynth: 3).
        latent_dim: channels of the embedding ``z`` (NSynth: 16).
        pitch_embedding_dim: channels of the learned MIDI pitch embedding (0 disables pitch).
        hop_length: samples per embedding frame (NSynth: 512).
        source_harmonics: harmonics ``H`` of the sample-rate pitch clock added in every layer
            (``2H`` channels; 0, NSynth's decoder, adds none).
        sample_rate: the audio's rate, which turns a MIDI pitch into the clock's cycles per
            sample (used only with a clock).
    """

    def __init__(
        self,
        residual_channels: int = 512,
        skip_channels: int = 256,
        layers: int = 30,
        stages: int = 10,
        kernel_size: int = 3,
        latent_dim: int = 16,
        pitch_embedding_dim: int = 16,
        hop_length: int = 512,
        source_harmonics: int = 0,
        sample_rate: int = 16000,
    ) -> None:
        super().__init__()
        if source_harmonics < 0 or (source_harmonics and not pitch_embedding_dim):
            raise ValueError(
                f"source_harmonics must be >= 0 and needs a pitch (pitch_embedding_dim > 0), got "
                f"source_harmonics={source_harmonics}, pitch_embedding_dim={pitch_embedding_dim}"
            )
        self.latent_dim = latent_dim
        self.hop_length = hop_length
        self.source_harmonics = source_harmonics
        self.sample_rate = sample_rate
        self.classes = MU_LAW_CLASSES
        self.receptive_field = causal_receptive_field(layers, stages, kernel_size)
        condition_channels = latent_dim + pitch_embedding_dim
        self.pitch_embedding = nn.Embedding(MIDI_PITCHES, pitch_embedding_dim) if pitch_embedding_dim else None
        self.start = CausalConv1d(1, residual_channels, kernel_size)
        self.skip_start = nn.Conv1d(residual_channels, skip_channels, 1)
        layer_dilations = dilations(layers, stages)
        self.layers = nn.ModuleList(
            GatedResidualLayer(
                residual_channels,
                skip_channels,
                condition_channels,
                kernel_size,
                d,
                has_residual=i < layers - 1,
                source_channels=2 * source_harmonics,
            )
            for i, d in enumerate(layer_dilations)
        )
        self.output_hidden = nn.Conv1d(skip_channels, skip_channels, 1)
        self.output_condition = nn.Conv1d(condition_channels, skip_channels, 1)
        self.logits = nn.Conv1d(skip_channels, self.classes, 1)

    def conditioning(self, z: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        """Frame-rate conditioning: ``z [batch, latent, frames]`` and ``pitch [batch]`` to
        ``[batch, latent + pitch_embedding_dim, frames]``."""
        if z.dim() != 3 or z.shape[1] != self.latent_dim:
            raise ValueError(f"decoder expects z [batch, {self.latent_dim}, frames], got {tuple(z.shape)}")
        if self.pitch_embedding is None:
            return z
        if pitch.shape != (z.shape[0],):
            raise ValueError(f"pitch must be [batch={z.shape[0]}], got {tuple(pitch.shape)}")
        if pitch.min() < 0 or pitch.max() >= MIDI_PITCHES:
            raise ValueError(f"MIDI pitch out of range 0..127: {pitch.tolist()}")
        pitch_frames = self.pitch_embedding(pitch).unsqueeze(-1).expand(-1, -1, z.shape[-1])
        return torch.cat([z, pitch_frames], dim=1)

    def pitch_clock(
        self, pitch: torch.Tensor, samples: int, offsets: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The pitch clock over ``samples``, from phase ``offsets [batch]`` (cycles; default 0):
        ``[batch, 2H, samples]``; ``None`` without a clock."""
        if not self.source_harmonics:
            return None
        positions = torch.arange(samples, device=pitch.device)
        return pitch_source(source_cycles(pitch, self.sample_rate), positions, self.source_harmonics, offsets)

    def layer_conditions(self, condition: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each layer's conditioning bias at frame rate.

        Args: condition ``[batch, condition_channels, frames]`` from :meth:`conditioning`.
        Returns: ``([batch, 2*residual, frames] per layer, output bias [batch, skip, frames])``.
        """
        return [layer.condition(condition) for layer in self.gated_layers], self.output_condition(condition)

    @property
    def gated_layers(self) -> list[GatedResidualLayer]:
        """The gated residual layers, in order (``self.layers`` typed)."""
        return [cast(GatedResidualLayer, layer) for layer in self.layers]

    def forward(
        self, inputs: torch.Tensor, z: torch.Tensor, pitch: torch.Tensor, clock_offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced logits.

        Args:
            inputs: the previous samples at network scale ``[batch, samples]`` (sample ``t`` of
                ``inputs`` is the waveform's sample ``t-1``; see :meth:`reconstruction_loss`).
            z: embedding ``[batch, latent_dim, frames]`` with ``frames * hop_length >= samples``.
            pitch: MIDI pitch ``[batch]``.
            clock_offsets: the pitch clock's phase at sample 0, cycles ``[batch]`` (default 0, as
                decoding starts it).
        Returns:
            logits ``[batch, 256, samples]``; position ``t`` predicts waveform sample ``t``.
        """
        samples = inputs.shape[-1]
        layer_biases, output_bias = self.layer_conditions(self.conditioning(z, pitch))
        source = self.pitch_clock(pitch, samples, clock_offsets)
        x = self.start(inputs.unsqueeze(1))
        skip = self.skip_start(x)
        for layer, bias in zip(self.layers, layer_biases, strict=True):
            x, layer_skip = layer(x, upsample_frames(bias, self.hop_length, samples), source)
            skip = skip + layer_skip
        hidden = self.output_hidden(F.relu(skip)) + upsample_frames(output_bias, self.hop_length, samples)
        return self.logits(F.relu(hidden))

    def reconstruction_loss(
        self, audio: torch.Tensor, z: torch.Tensor, pitch: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of the mu-law classes of ``audio [batch, samples]`` given their past.

        With a pitch clock, each crop's clock is started in phase with its fundamental (see the
        module docstring).

        Returns ``(loss, {"cross_entropy": ..., "accuracy": ...})``.
        """
        targets, scaled = quantize_and_scale(audio)
        # Shift right by one sample: the prediction of sample t sees samples < t only.
        inputs = F.pad(scaled[:, :-1], (1, 0))
        offsets = None
        if self.source_harmonics:
            offsets = fundamental_phase(audio, source_cycles(pitch, self.sample_rate))
        logits = self(inputs, z, pitch, offsets)
        loss = F.cross_entropy(logits, targets)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return loss, {"cross_entropy": loss.item(), "accuracy": accuracy.item()}

    @torch.no_grad()
    def step_weights(self) -> DecoderStepWeights:
        """This decoder as the per-sample step of :mod:`timbre.models.decoder_step`.

        Tensors are float32 on the decoder's device and may share memory with its parameters:
        read them, never write them.

        The single place that maps the layers above to the step's matrices: a cached engine reads
        nothing else of the decoder.
        """

        def matrix(conv: nn.Conv1d) -> torch.Tensor:  # 1x1 conv [out, in, 1] -> [in, out]
            return conv.weight[:, :, 0].t().float().contiguous()

        def bias(conv: nn.Conv1d) -> torch.Tensor:
            if conv.bias is None:  # every convolution of this decoder is built with a bias
                raise ValueError(f"decoder convolution {conv} has no bias")
            return conv.bias.detach().float()

        def taps(conv: nn.Conv1d) -> torch.Tensor:  # [out, in, K] -> [K, in, out]
            return conv.weight.permute(2, 1, 0).float().contiguous()

        layers = tuple(
            LayerStepWeights(
                dilation=layer.dilated.dilation[0],
                dilated_weight=taps(layer.dilated),
                dilated_bias=bias(layer.dilated),
                condition_weight=matrix(layer.condition),
                condition_bias=bias(layer.condition),
                skip_weight=matrix(layer.skip),
                skip_bias=bias(layer.skip),
                residual_weight=None if layer.residual is None else matrix(layer.residual),
                residual_bias=None if layer.residual is None else bias(layer.residual),
                source_weight=None if layer.source is None else matrix(layer.source),
            )
            for layer in self.gated_layers
        )
        return DecoderStepWeights(
            hop_length=self.hop_length,
            sample_rate=self.sample_rate,
            start_weight=taps(self.start)[:, 0, :].contiguous(),
            start_bias=bias(self.start),
            skip_start_weight=matrix(self.skip_start),
            skip_start_bias=bias(self.skip_start),
            layers=layers,
            hidden_weight=matrix(self.output_hidden),
            hidden_bias=bias(self.output_hidden),
            output_condition_weight=matrix(self.output_condition),
            output_condition_bias=bias(self.output_condition),
            logits_weight=matrix(self.logits),
            logits_bias=bias(self.logits),
        )
