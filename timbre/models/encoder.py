"""The NSynth WaveNet-style encoder: audio to a temporal embedding at hop 512.

Faithful to NSynth's ``h512_bo16`` model: a start convolution, ``layers`` non-causal dilated
residual layers (ReLU, kernel ``kernel_size`` conv, ReLU, 1x1 conv, added to the residual), a 1x1
bottleneck to ``latent_dim`` channels and average pooling over windows of ``hop_length`` samples.

``downsample > 1`` (used by ``model=fast``, never by ``model=nsynth``) makes the start convolution
a strided learned filterbank (kernel ``2 * downsample``, stride ``downsample``), so the residual
stack runs at ``sample_rate / downsample``: the same architecture and latent shape at a fraction of
the cost, which is what lets the parallel model train and encode quickly on a CPU.

``frontend="mel"`` (used by the default ``model=fast``) replaces the learned filterbank with a
log-mel spectrogram at hop ``downsample``: the residual stack then reads the note's spectral
envelope and loudness on a decibel scale directly. A mu-law waveform compresses a decaying note's
level into a narrow range, which a small encoder struggles to read back; log-mel frames keep a
40 dB decay a 40 dB decay, which is what the decoder needs to rebuild plucked and struck notes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from timbre.models.partial_levels import FLOOR_LEVEL, partial_levels
from timbre.models.wavenet import dilations, quantize_and_scale

# The window partial levels are read with: 2048 samples at 16 kHz (7.8 Hz bins) separate the
# half-integer partials of the lowest notes trained on (MIDI 24, 33 Hz: 16 Hz apart), which the
# mel front end's 1024-sample window cannot.
PARTIAL_FFT_SECONDS = 0.128


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


class LogMelFrontEnd(nn.Module):
    """Log-mel spectrogram frames, ``[batch, samples]`` -> ``[batch, n_mels, samples // hop_length]``.

    Frame ``i`` is centred on sample ``i * hop + hop / 2``, the centre of the samples it stands for,
    so average pooling of the frames lines up with the embedding frames. Magnitudes are in natural
    log units, floored 100 dB below a full-scale band, and scaled to roughly unit range. A last
    channel holds the frame's overall level on the same scale, which the encoder also hands to its
    bottleneck directly (see :class:`WaveNetEncoder`).

    Args:
        sample_rate: audio samples per second.
        hop_length: samples per frame.
        n_fft: window and FFT size.
        n_mels: mel bands from 20 Hz to Nyquist.
    """

    def __init__(self, sample_rate: int, hop_length: int, n_fft: int, n_mels: int) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            f_min=20.0,
            n_mels=n_mels,
            power=1.0,
            center=True,
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` -> ``[batch, n_mels + 1, frames]``: the log-mel bands, then the frame's level."""
        n_frames = audio.shape[-1] // self.hop_length
        shifted = F.pad(audio, (0, self.hop_length // 2))[:, self.hop_length // 2 :]
        magnitude = self.mel(shifted)[..., :n_frames]
        # Dividing natural logs by log(1e4) maps an 80 dB range onto a unit range.
        level = 0.5 * torch.log(magnitude.pow(2).sum(dim=1, keepdim=True).clamp(min=1e-10)) / math.log(1e4)
        return torch.cat([torch.log(magnitude.clamp(min=1e-5)) / math.log(1e4), level], dim=1)


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
        frontend: ``"waveform"`` (NSynth: a convolution over the mu-law scaled waveform) or
            ``"mel"`` (log-mel frames at hop ``downsample``, read by a 1x1 convolution).
        n_mels: mel bands of the ``"mel"`` front end.
        n_fft: window of the ``"mel"`` front end.
        sample_rate: audio samples per second (``"mel"`` front end only).
        bottleneck_inputs: what reaches the bottleneck besides the residual stack (``"mel"``
            front end only): ``"level"``, the frame's overall level; ``"mel"``, the level and
            every log-mel band. With ``"mel"`` the spectral envelope has a linear path into the
            embedding, as the level has: the stack alone handed a 16-dim bottleneck an envelope
            so smoothed that every instrument decoded with nearly the same partial profile.
        partial_inputs: ``"mel"`` front end only: how many partial levels at the note's pitch the
            encoder also reads, at 0.5, 1, 1.5, ... times the fundamental (0: none, the encoder
            does not need the pitch). Above a few hundred hertz a mel band spans several
            partials, so from mel frames alone the encoder can tell a drawbar organ's 5 1/3'
            stop (partial 1.5) from none only through the band's sum; the levels measured at the
            partials themselves (:func:`timbre.models.partial_levels.partial_levels`, the
            measure the decoder's partial loss uses) say it directly. They reach the residual
            stack and, with ``bottleneck_inputs="mel"``, the bottleneck, after the bands.
        octave_down_probability: in training, the chance that a note's partial levels are read
            at an octave below its pitch. An encoder told no pitch hears one (YIN), which is an
            octave low for organs sounding a 16' stop; trained on both, the encoder reads either.
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
        frontend: str = "waveform",
        n_mels: int = 80,
        n_fft: int = 1024,
        sample_rate: int = 16000,
        bottleneck_inputs: str = "level",
        partial_inputs: int = 0,
        octave_down_probability: float = 0.0,
    ) -> None:
        super().__init__()
        if bottleneck_inputs not in ("level", "mel"):
            raise ValueError(f"encoder bottleneck_inputs must be 'level' or 'mel', got {bottleneck_inputs!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"encoder kernel_size must be odd for centred padding, got {kernel_size}")
        if downsample < 1 or hop_length % downsample:
            raise ValueError(f"downsample {downsample} must be a positive divisor of hop_length {hop_length}")
        self.latent_dim = latent_dim
        self.hop_length = hop_length
        self.downsample = downsample
        if frontend not in ("waveform", "mel"):
            raise ValueError(f"encoder frontend must be 'waveform' or 'mel', got {frontend!r}")
        self.frontend = frontend
        if partial_inputs < 0 or (partial_inputs and frontend != "mel"):
            raise ValueError(f"encoder partial_inputs must be >= 0 and needs the mel front end, got {partial_inputs}")
        if not 0.0 <= octave_down_probability <= 1.0:
            raise ValueError(f"encoder octave_down_probability must be in [0, 1], got {octave_down_probability}")
        self.partial_inputs = partial_inputs
        self.octave_down_probability = octave_down_probability
        self.sample_rate = sample_rate
        self.bottleneck_inputs = bottleneck_inputs if frontend == "mel" else "none"
        if frontend == "mel":
            if downsample < 2:
                raise ValueError("the mel front end needs downsample >= 2 (its hop)")
            self.mel = LogMelFrontEnd(sample_rate, downsample, n_fft, n_mels)
            self.start = nn.Conv1d(n_mels + 1 + partial_inputs, channels, 1)
        elif downsample == 1:
            self.start = nn.Conv1d(1, channels, kernel_size, padding=kernel_size // 2)
        else:
            self.start = nn.Conv1d(1, channels, 2 * downsample, stride=downsample, padding=downsample // 2)
        self.layers = nn.ModuleList(NonCausalResidualLayer(channels, kernel_size, d) for d in dilations(layers, stages))
        # The mel front end's level channel also skips the residual stack into the bottleneck: a
        # linear path from loudness in dB to the embedding, learned from the first step, where
        # through the stack alone the level came out compressed (a 40 dB range decoded as 17 dB).
        # The bands follow it with bottleneck_inputs="mel"; the stack's channels come first so a
        # model can grow from one without them (timbre.train.warm_start).
        skipped = {"none": 0, "level": 1, "mel": 1 + n_mels + partial_inputs}[self.bottleneck_inputs]
        self.bottleneck = nn.Conv1d(channels + skipped, latent_dim, 1)

    @property
    def reads_pitch(self) -> bool:
        """Whether :meth:`forward` needs the note's pitch (it reads partial levels)."""
        return self.partial_inputs > 0

    def partial_features(self, audio: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        """Levels of partials 0.5, 1, 1.5, ... x the pitch, ``[batch, partial_inputs, samples // downsample]``.

        Args:
            audio: ``[batch, samples]``.
            pitch: MIDI pitch ``[batch]`` (fractional allowed).

        Returns:
            log10 amplitudes / 4 (the mel bands' scale), from -1 (-80 dBFS, also for partials at or
            above Nyquist) up; frames centred as the mel frames are.
        """
        n_frames = audio.shape[-1] // self.downsample
        fundamental_hz = 440.0 * 2.0 ** ((pitch.to(audio.dtype) - 69.0) / 12.0)
        multiples = 0.5 * torch.arange(1, self.partial_inputs + 1, device=audio.device, dtype=audio.dtype)
        partial_hz = (fundamental_hz[:, None] * multiples)[:, None, :].expand(-1, n_frames, -1)
        n_fft = int(PARTIAL_FFT_SECONDS * self.sample_rate)
        levels = partial_levels(audio, partial_hz, self.downsample, self.sample_rate, n_fft=n_fft)
        return levels.transpose(1, 2) / -FLOOR_LEVEL

    def forward(self, audio: torch.Tensor, pitch: torch.Tensor | None = None) -> torch.Tensor:
        """Args: audio ``[batch, samples]`` in [-1, 1], samples a multiple of ``hop_length``;
        pitch: MIDI pitch ``[batch]``, needed when :attr:`reads_pitch` (ignored otherwise).

        Returns: embedding ``[batch, latent_dim, samples // hop_length]``.
        """
        if audio.dim() != 2:
            raise ValueError(f"encoder expects audio [batch, samples], got shape {tuple(audio.shape)}")
        if audio.shape[-1] % self.hop_length:
            raise ValueError(
                f"encoder input length {audio.shape[-1]} is not a multiple of hop_length {self.hop_length}"
            )
        skipped = None
        if self.frontend == "mel":
            features = self.mel(audio)
            if self.partial_inputs:
                if pitch is None:
                    raise ValueError("this encoder reads partial levels at the note's pitch: pass pitch [batch]")
                if self.training and self.octave_down_probability > 0:
                    lowered = torch.rand(pitch.shape, device=pitch.device) < self.octave_down_probability
                    pitch = torch.where(lowered, pitch - 12, pitch)
                # [bands, level, partials]: new inputs last, where a model without them grows them.
                features = torch.cat([features, self.partial_features(audio, pitch)], dim=1)
            # [level, bands, partials]: the level first, where models without the bands have it.
            level_and_bands = features[:, : -self.partial_inputs or None]
            skipped = (
                level_and_bands[:, -1:]
                if self.bottleneck_inputs == "level"
                else torch.cat([level_and_bands.roll(1, dims=1), features[:, level_and_bands.shape[1] :]], dim=1)
            )
            x = self.start(features)
        else:
            _, scaled = quantize_and_scale(audio)
            x = self.start(scaled.unsqueeze(1))
        for layer in self.layers:
            x = layer(x)
        if skipped is not None:
            x = torch.cat([x, skipped], dim=1)
        return F.avg_pool1d(self.bottleneck(x), self.hop_length // self.downsample)
