"""Parallel decoder (``model=fast``): a whole note at once from harmonic oscillators plus filtered noise.

A non-causal convolutional network turns the timbre embedding and the MIDI pitch into frame-rate
synthesis controls, in the manner of DDSP (Engel et al., 2020): an overall amplitude, a
distribution over the partials of the note's fundamental, and the magnitude response of a
time-varying noise filter. Optional parts, each switched on by a constructor setting, let it
express a real instrument while staying pitch-centred and real-time:

- ``pitch_deviation_cents``: a per-frame bend of the fundamental, bounded by ``tanh``, whose
  loudness-weighted median over the note is removed, so vibrato and scoops are reproduced while
  the note's median stays on the MIDI pitch. It is supervised by the contour measured on the target
  (:mod:`timbre.models.pitch_contour`), because a spectral loss alone barely moves frequencies.
- ``max_inharmonicity``: a per-note stiffness ``B`` stretching partial ``k`` to
  ``k sqrt(1 + B k^2)`` (pianos, mallets, bells).
- ``reverb_seconds``: a per-note room/body response predicted from the whole embedding: decaying
  noise in log-spaced bands with a wet-to-dry level in [0, 1] and a decay time per band (DDSP's
  reverb made conditional), convolved with the dry note. Bounding the level keeps the response a
  room, not an amplifier that would carry the note's loudness instead of its envelope.
- ``n_subharmonics``: partials at ``0.5, 1.5, 2.5, ...`` times the fundamental, the odd partials
  of the octave below. An electronic or pipe organ's 16' and 5 1/3' stops sound there, as loud as
  the key's own fundamental; partials of the MIDI pitch alone cannot play them. The embedding
  describes the spectrum at the pitch it was encoded at, so a note played elsewhere takes its
  octave below from there (``source_pitch``): decoded at another pitch from the embedding alone,
  a flute's low spectrum came out as an octave below it never had.

Trained with a multi-resolution STFT loss (:mod:`timbre.models.spectral_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from timbre.errors import ConfigError
from timbre.models import dsp
from timbre.models.partial_levels import FLOOR_LEVEL, partial_levels
from timbre.models.pitch_contour import harmonic_salience_contour, weighted_median
from timbre.models.spectral_loss import MelDecibelLoss, MultiResolutionSTFTLoss

# Noise filters start almost closed (exp_sigmoid(-5) ~ 2e-5) so that early training shapes the
# harmonic part instead of drowning it in noise, as DDSP's FilteredNoise initial bias does.
_NOISE_BIAS = -5.0
# Reverb band gains (wet-to-dry levels in [0, 1]) start near 0.02 (-35 dB: a dry note), and
# inharmonicity near 0 (harmonic partials).
_REVERB_GAIN_BIAS = -4.0
_INHARMONICITY_BIAS = -8.0
# Frames quieter than this fraction of the note's loudest amplitude do not count for the median bend.
_MEDIAN_FLOOR = 0.01


class ResidualConvBlock(nn.Module):
    """Non-causal dilated convolution with a pointwise mix and a residual connection.

    Args:
        channels: channels in and out.
        dilation: dilation of the kernel-3 convolution; the block sees ``2 * dilation + 1`` frames.
    """

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.dilated = nn.Conv1d(channels, channels, kernel_size=3, dilation=dilation, padding=dilation)
        self.pointwise = nn.Conv1d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """``[batch, channels, frames]`` -> same shape."""
        return x + self.pointwise(F.gelu(self.dilated(F.gelu(x))))


class HarmonicNoiseDecoder(nn.Module):
    """Decode a temporal embedding and a MIDI pitch to audio with a harmonic-plus-noise synthesizer.

    The network runs first at the embedding's frame rate (hop ``hop_length``), then, after linear
    interpolation, at the finer control rate (hop ``control_hop``) so that attacks are not smeared
    over a whole 32 ms embedding frame. Per-note settings (inharmonicity, reverb) come from an
    attention-weighted average of the frame-rate features.

    Args:
        latent_dim: channels of the embedding ``z``.
        hop_length: audio samples per embedding frame.
        sample_rate: audio samples per second.
        n_harmonics: partials of the fundamental; those at or above Nyquist are silenced.
        n_noise_bands: frequencies at which the noise filter's magnitude is predicted, evenly
            spaced from 0 Hz to Nyquist (filters of ``2 * (n_noise_bands - 1)`` taps).
        hidden_channels: width of the network.
        control_hop: audio samples per synthesis control frame; must divide ``hop_length``.
        n_frame_blocks: residual blocks at the embedding frame rate (dilations 1, 2, 4, 8, 1, ...).
        n_control_blocks: residual blocks at the control rate (dilations 1, 2, 4, 8, 1, ...).
        n_pitches: size of the pitch vocabulary (MIDI: 128).
        pitch_embedding_dim: size of the learned pitch embedding.
        fft_sizes: FFT sizes of the multi-resolution STFT loss (hop a quarter, window the full
            size); training crops must be longer than half the largest.
        pitch_deviation_cents: bound of the per-frame bend around the MIDI pitch; 0 disables it
            (the fundamental is then exactly the MIDI pitch).
        pitch_loss_weight: weight of the bend's supervision (L1 in semitones) in the loss.
        loudness_loss_weight: weight of an L1 loss between the frame levels (dB / 20) of the
            output and the target; 0 disables it. Spectral losses alone reward a quiet output
            while the partials' fine structure is still wrong (a misplaced peak costs less when
            it is small), which held a first run 20-30 dB too quiet; the level loss has a
            gradient towards the right loudness whatever the spectral detail.
        partial_loss_weight: weight of an L1 loss between the partials' levels (log10 amplitude,
            i.e. dB / 20) measured the same way on the output and on the target
            (:mod:`timbre.models.partial_levels`); 0 disables it. The STFT losses alone left every
            instrument with nearly the same partial profile.
        mel_loss_weight: weight of an L1 loss between the mel-band levels (dB / 20, floored 80 dB
            below the target's peak: :class:`timbre.models.spectral_loss.MelDecibelLoss`), the
            spectrogram that MFCC-based timbre judges read; 0 disables it.
        max_inharmonicity: upper bound of the stiffness coefficient ``B``; 0 disables it.
        reverb_seconds: length of the predicted room/body response; 0 disables it.
        reverb_bands: log-spaced bands of the response, each with its own gain and decay.
        n_subharmonics: partials at ``0.5, 1.5, ...`` times the fundamental, among the others
            in the harmonic distribution (ascending frequency); 0 disables them. Their controls
            come after the older ones in the output convolution, so a trained decoder can gain
            them (:mod:`timbre.train.warm_start`).
        half_partial_gain_db: range (+-dB) of a per-frame gain on all half-integer partials, one
            more control channel after theirs; 0 disables it. Each partial's control tops out at
            ``exp_sigmoid``'s ceiling, and a drawbar organ's 16' stop (partial 0.5, +11 dB over
            partial 1 on the training soundfonts) came out at -2 dB with both controls near it,
            where their gradients vanish: even 150 refinement steps on the embedding left it
            there. The gain lifts (or lowers) the octave below past that ceiling; from a zero
            weight it is 0 dB, so a trained decoder gains it without changing its output.
    """

    # Set by register_buffer; declared for the type checker.
    reverb_noise: Tensor
    partial_order: Tensor
    half_integer_partials: Tensor

    def __init__(
        self,
        latent_dim: int = 16,
        hop_length: int = 512,
        sample_rate: int = 16000,
        n_harmonics: int = 64,
        n_noise_bands: int = 65,
        hidden_channels: int = 128,
        control_hop: int = 128,
        n_frame_blocks: int = 4,
        n_control_blocks: int = 2,
        n_pitches: int = 128,
        pitch_embedding_dim: int = 16,
        fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64),
        pitch_deviation_cents: float = 0.0,
        pitch_loss_weight: float = 1.0,
        loudness_loss_weight: float = 0.0,
        partial_loss_weight: float = 0.0,
        mel_loss_weight: float = 0.0,
        max_inharmonicity: float = 0.0,
        reverb_seconds: float = 0.0,
        reverb_bands: int = 8,
        n_subharmonics: int = 0,
        half_partial_gain_db: float = 0.0,
    ) -> None:
        super().__init__()
        if control_hop <= 0 or hop_length % control_hop:
            raise ConfigError(f"control_hop={control_hop} must be a positive divisor of hop_length={hop_length}")
        if n_noise_bands < 2:
            raise ConfigError(f"n_noise_bands={n_noise_bands} must be at least 2")
        if pitch_deviation_cents < 0 or max_inharmonicity < 0 or reverb_seconds < 0 or n_subharmonics < 0:
            raise ConfigError(
                "pitch_deviation_cents, max_inharmonicity, reverb_seconds and n_subharmonics must be >= 0, got "
                f"{pitch_deviation_cents}, {max_inharmonicity}, {reverb_seconds}, {n_subharmonics}"
            )
        if half_partial_gain_db < 0 or (half_partial_gain_db and not n_subharmonics):
            raise ConfigError(f"half_partial_gain_db={half_partial_gain_db} must be >= 0, and needs n_subharmonics > 0")
        if reverb_seconds > 0 and reverb_bands < 1:
            raise ConfigError(f"reverb_bands={reverb_bands} must be at least 1")
        self.latent_dim = latent_dim
        self.hop_length = hop_length
        self.sample_rate = sample_rate
        self.n_harmonics = n_harmonics
        self.n_subharmonics = n_subharmonics
        self.half_partial_gain_db = float(half_partial_gain_db)
        self.n_noise_bands = n_noise_bands
        self.control_hop = control_hop
        self.n_pitches = n_pitches
        self.fft_sizes = tuple(fft_sizes)
        self.pitch_deviation_cents = float(pitch_deviation_cents)
        self.pitch_loss_weight = float(pitch_loss_weight)
        self.loudness_loss_weight = float(loudness_loss_weight)
        self.partial_loss_weight = float(partial_loss_weight)
        self.mel_loss_weight = float(mel_loss_weight)
        self.max_inharmonicity = float(max_inharmonicity)
        self.reverb_taps = round(reverb_seconds * sample_rate)
        self.reverb_bands = reverb_bands if self.reverb_taps else 0

        self.pitch_embedding = nn.Embedding(n_pitches, pitch_embedding_dim)
        # +1 input channel: the pitch as a number, which lets pitches rare in training borrow
        # from their neighbours instead of relying on their own embedding alone.
        self.input = nn.Conv1d(latent_dim + pitch_embedding_dim + 1, hidden_channels, kernel_size=1)
        self.frame_blocks = nn.Sequential(
            *(ResidualConvBlock(hidden_channels, 2 ** (i % 4)) for i in range(n_frame_blocks))
        )
        self.control_blocks = nn.Sequential(
            *(ResidualConvBlock(hidden_channels, 2 ** (i % 4)) for i in range(n_control_blocks))
        )
        self._control_split = (
            [1, n_harmonics, n_noise_bands]
            + ([1] if self.pitch_deviation_cents else [])
            + ([n_subharmonics] if n_subharmonics else [])
            + ([1] if self.half_partial_gain_db else [])
        )
        # The output channels of the half-integer partials' controls (new channels come last).
        first_sub = sum(self._control_split[:3]) + (1 if self.pitch_deviation_cents else 0)
        self.subharmonic_channels = slice(first_sub, first_sub + n_subharmonics)
        # Where each control channel's partial goes among the partials sorted by frequency: the
        # whole-number ones first, the half-integer ones after them (the channels' order).
        channel_ratios = torch.cat([torch.arange(1.0, n_harmonics + 1), torch.arange(float(n_subharmonics)) + 0.5])
        self.register_buffer("partial_order", channel_ratios.argsort(), persistent=False)
        self.register_buffer(
            "half_integer_partials", dsp.partial_numbers(n_harmonics, n_subharmonics) % 1 == 0.5, persistent=False
        )
        self.output = nn.Conv1d(hidden_channels, sum(self._control_split), kernel_size=1)
        n_note_controls = (1 if self.max_inharmonicity else 0) + 2 * self.reverb_bands
        # Per-note controls read an attention-weighted average of the frames, so that a note's
        # silent tail (or a crop's lack of one) does not dilute what the sounding part says.
        self.note_attention = nn.Conv1d(hidden_channels, 1, kernel_size=1) if n_note_controls else None
        self.note_output = nn.Linear(hidden_channels, n_note_controls) if n_note_controls else None
        if self.reverb_taps:
            # Fixed band noises, rebuilt from a seed rather than stored: the response's shape is
            # learned through the gains and decays only.
            self.register_buffer(
                "reverb_noise", dsp.band_noise(self.reverb_bands, self.reverb_taps, sample_rate), persistent=False
            )
        self._stft_loss: MultiResolutionSTFTLoss | None = None
        self._mel_loss: MelDecibelLoss | None = None

    def control_features(self, z: Tensor, pitch: Tensor) -> tuple[Tensor, Tensor | None]:
        """The network's features, before the output convolution turns them into controls.

        Args:
            z: ``[batch, latent_dim, frames]`` embedding.
            pitch: ``[batch]`` MIDI pitches (integers in ``[0, n_pitches)``).

        Returns:
            ``[batch, hidden_channels, control_frames]`` features at the control rate, and the
            per-note controls' raw values ``[batch, n_note_controls]`` (``None`` without any).
        """
        assert z.ndim == 3 and z.shape[1] == self.latent_dim, (
            f"z must be [batch, {self.latent_dim}, frames], got {tuple(z.shape)}"
        )
        assert pitch.shape == (z.shape[0],), f"pitch must be [batch={z.shape[0]}], got {tuple(pitch.shape)}"
        n_frames = z.shape[-1]
        pitch_features = torch.cat([self.pitch_embedding(pitch), ((pitch.to(z.dtype) - 64.0) / 64.0)[:, None]], dim=-1)
        x = torch.cat([z, pitch_features[:, :, None].expand(-1, -1, n_frames)], dim=1)
        x = self.frame_blocks(self.input(x))
        note = None
        if self.note_output is not None and self.note_attention is not None:
            attention = torch.softmax(self.note_attention(x), dim=-1)  # [batch, 1, frames]
            note = self.note_output((x * attention).sum(dim=-1))
        upsampling = self.hop_length // self.control_hop
        if upsampling > 1:
            x = F.interpolate(x, scale_factor=upsampling, mode="linear", align_corners=False)
        return self.control_blocks(x), note

    def controls(self, z: Tensor, pitch: Tensor, source_pitch: Tensor | None = None) -> dict[str, Tensor]:
        """Synthesis controls at hop ``control_hop`` and per note.

        Args:
            z: ``[batch, latent_dim, frames]`` embedding.
            pitch: ``[batch]`` MIDI pitches (integers in ``[0, n_pitches)``).
            source_pitch: ``[batch]`` the pitches the embeddings were encoded at, or ``None``
                (``pitch``). Where they differ, the half-integer partials keep the share of the
                harmonic amplitude they have at the source pitch (:meth:`_octave_below_from`).

        Returns:
            ``amplitude`` ``[batch, control_frames, 1]``, ``harmonic_distribution``
            ``[batch, control_frames, n_harmonics + n_subharmonics]`` (partials by ascending
            frequency, :func:`timbre.models.dsp.partial_numbers`; sums to one over audible ones),
            ``noise_magnitudes`` ``[batch, control_frames, n_noise_bands]``, with
            ``control_frames = frames * hop_length // control_hop``; ``deviation_cents``
            ``[batch, control_frames]`` (zeros when the bend is disabled; its loudness-weighted
            median is zero), ``inharmonicity`` ``[batch]`` (zeros when disabled), and when the
            reverb is on ``reverb_gain`` and ``reverb_decay`` (seconds), each ``[batch, reverb_bands]``.
        """
        features, note = self.control_features(z, pitch)
        raw = self.output(features).transpose(1, 2)  # [batch, control_frames, channels]
        parts = raw.split(self._control_split, dim=-1)
        raw_amplitude, raw_distribution, raw_noise = parts[:3]
        amplitude = dsp.exp_sigmoid(raw_amplitude)

        inharmonicity = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        controls: dict[str, Tensor] = {}
        if note is not None:
            if self.max_inharmonicity:
                inharmonicity = self.max_inharmonicity * torch.sigmoid(note[:, 0] + _INHARMONICITY_BIAS)
            if self.reverb_bands:
                raw_gain, raw_decay = note[:, -2 * self.reverb_bands :].split(self.reverb_bands, dim=-1)
                longest = self.reverb_taps / self.sample_rate / 3.0
                controls["reverb_gain"] = torch.sigmoid(raw_gain + _REVERB_GAIN_BIAS)
                controls["reverb_decay"] = 0.005 + (longest - 0.005) * torch.sigmoid(raw_decay)

        if self.pitch_deviation_cents:
            bend = self.pitch_deviation_cents * torch.tanh(parts[3][..., 0])
            loudness = amplitude[..., 0].detach()
            counted = (loudness > _MEDIAN_FLOOR * loudness.amax(dim=1, keepdim=True)).to(bend.dtype)
            deviation = bend - weighted_median(bend, counted)
        else:
            deviation = torch.zeros_like(amplitude[..., 0])

        if self.n_subharmonics:
            # The half-integer partials' controls follow the bend's (and precede the gain's):
            # sorted in among the whole partials by frequency. A decoder that gains them from a
            # trained one should have them fitted to data first (timbre.train.fit_new_partials:
            # trained from one level, they fell under the noise for every note).
            raw_distribution = torch.cat([raw_distribution, raw[..., self.subharmonic_channels]], dim=-1)[
                ..., self.partial_order
            ]
        top_ratio = dsp.harmonic_ratios(
            self.n_harmonics, inharmonicity, n_subharmonics=self.n_subharmonics
        ) * dsp.cents_to_ratio(torch.tensor(self.pitch_deviation_cents, dtype=torch.float64))
        audible = (dsp.midi_to_hz(pitch).double()[:, None] * top_ratio < self.sample_rate / 2).to(z.dtype)
        distribution = dsp.exp_sigmoid(raw_distribution) * audible[:, None, :]
        if self.half_partial_gain_db:
            gain = 10.0 ** (self.half_partial_gain_db / 20.0 * torch.tanh(parts[-1]))  # [batch, frames, 1]
            distribution = torch.where(self.half_integer_partials, distribution * gain, distribution)
        distribution = distribution / (distribution.sum(dim=-1, keepdim=True) + 1e-7)
        if self.n_subharmonics and source_pitch is not None and bool((source_pitch != pitch).any()):
            at_source = self.controls(z, source_pitch)["harmonic_distribution"]
            transposed = self._octave_below_from(at_source, distribution)
            distribution = torch.where((source_pitch != pitch)[:, None, None], transposed, distribution)
        controls.update(
            amplitude=amplitude,
            harmonic_distribution=distribution,
            noise_magnitudes=dsp.exp_sigmoid(raw_noise + _NOISE_BIAS),
            deviation_cents=deviation,
            inharmonicity=inharmonicity,
        )
        return controls

    def _octave_below_from(self, at_source: Tensor, at_pitch: Tensor) -> Tensor:
        """A harmonic distribution whose half-integer partials are those of another pitch's.

        Args:
            at_source: ``[batch, frames, partials]`` the distribution decoded at the source pitch.
            at_pitch: ``[batch, frames, partials]`` the distribution decoded at the pitch played
                (zero for partials at or above its Nyquist).

        Returns:
            ``[batch, frames, partials]``: the half-integer partials as at the source (those
            audible at the pitch played), the whole ones shaped as at the pitch played and
            sharing the rest; sums to one.
        """
        half = self.half_integer_partials
        whole_share = 1.0 - (at_source * half).sum(dim=-1, keepdim=True)
        whole = at_pitch * ~half
        whole = whole / whole.sum(dim=-1, keepdim=True).clamp(min=1e-7) * whole_share
        combined = whole + at_source * half * (at_pitch > 0)
        return combined / combined.sum(dim=-1, keepdim=True).clamp(min=1e-7)

    def _render(
        self, controls: dict[str, Tensor], pitch: Tensor, n_samples: int, generator: torch.Generator | None
    ) -> Tensor:
        """Audio ``[batch, n_samples]`` from :meth:`controls`."""
        harmonic_amplitudes = controls["amplitude"] * controls["harmonic_distribution"]
        dtype = harmonic_amplitudes.dtype
        f0_hz = dsp.midi_to_hz(pitch).to(dtype)
        if self.pitch_deviation_cents or self.max_inharmonicity or self.n_subharmonics:
            f0_frames = f0_hz[:, None] * dsp.cents_to_ratio(controls["deviation_cents"])
            ratios = dsp.harmonic_ratios(
                self.n_harmonics,
                controls["inharmonicity"] if self.max_inharmonicity else None,
                n_subharmonics=self.n_subharmonics,
            )
            # Partials silent at every pitch of the batch cost nothing: most notes use a fraction.
            n_used = int((controls["harmonic_distribution"].detach().amax(dim=(0, 1)) > 0).nonzero().max()) + 1
            harmonic = dsp.partial_bank(
                f0_frames, ratios[:, :n_used], harmonic_amplitudes[..., :n_used], self.control_hop, self.sample_rate
            )
            harmonic = dsp.hold_to_length(harmonic, n_samples)
        else:
            harmonic = dsp.harmonic_synthesis(f0_hz, harmonic_amplitudes, n_samples, self.control_hop, self.sample_rate)
        audio = harmonic + dsp.filtered_noise(controls["noise_magnitudes"], n_samples, self.control_hop, generator)
        if self.reverb_bands:
            response = dsp.decaying_noise_response(
                controls["reverb_gain"], controls["reverb_decay"], self.reverb_noise, self.sample_rate
            )
            audio = audio + dsp.fft_convolve(audio, response)
        return audio

    def forward(
        self,
        z: Tensor,
        pitch: Tensor,
        n_samples: int,
        generator: torch.Generator | None = None,
        source_pitch: Tensor | None = None,
    ) -> Tensor:
        """Decode a note.

        Args:
            z: ``[batch, latent_dim, frames]`` embedding; frame ``i`` describes samples
                ``[i * hop_length, (i + 1) * hop_length)``.
            pitch: ``[batch]`` MIDI pitches.
            n_samples: length of the output; past ``frames * hop_length`` the last frame is held.
            generator: source of the noise, on the decoder's device; the global one when ``None``.
            source_pitch: ``[batch]`` the pitches ``z`` was encoded at, if known (:meth:`controls`).

        Returns:
            ``[batch, n_samples]`` audio, roughly in [-1, 1] (not clipped, to keep gradients).
        """
        return self._render(self.controls(z, pitch, source_pitch), pitch, n_samples, generator)

    def _spectral_loss(self) -> MultiResolutionSTFTLoss:
        if self._stft_loss is None:
            self._stft_loss = MultiResolutionSTFTLoss(self.fft_sizes)
        return self._stft_loss

    def reconstruction_loss(
        self, audio: Tensor, z: Tensor, pitch: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """Multi-resolution STFT loss (L1 of log and of linear magnitudes), plus the bend's supervision.

        Args:
            audio: ``[batch, samples]`` target.
            z: ``[batch, latent_dim, frames]`` its embedding.
            pitch: ``[batch]`` MIDI pitches.
            generator: source of the output's noise; the global one when ``None`` (training).

        Returns:
            The scalar loss and ``{"stft", "log_magnitude", "linear_magnitude"}`` as floats
            (each averaged over the resolutions), plus ``"pitch_bend"`` (mean absolute error of
            the bend in semitones on trusted frames) when the bend is enabled and ``"loudness"``
            (mean absolute frame-level error in dB / 20) when the level loss is, and ``"partials"``
            (mean absolute error of the partials' levels in dB / 20) when the partial loss is, and
            ``"mel"`` (mean absolute error of the mel-band levels in dB / 20) when the mel loss is.
        """
        assert audio.ndim == 2, f"audio must be [batch, samples], got {tuple(audio.shape)}"
        if audio.shape[-1] <= max(self.fft_sizes) // 2:
            raise ConfigError(
                f"crops of {audio.shape[-1]} samples are too short for the STFT loss with FFT size "
                f"{max(self.fft_sizes)}: use crops longer than {max(self.fft_sizes) // 2} samples or smaller fft_sizes"
            )
        controls = self.controls(z, pitch)
        prediction = self._render(controls, pitch, audio.shape[-1], generator)
        stft_loss = self._spectral_loss().to(audio.device)
        loss, log_magnitude, linear_magnitude = stft_loss(prediction, audio)
        n_resolutions = len(self.fft_sizes)
        parts = {
            "stft": loss.item(),
            "log_magnitude": float(sum(term.item() for term in log_magnitude)) / n_resolutions,
            "linear_magnitude": float(sum(term.item() for term in linear_magnitude)) / n_resolutions,
        }
        measured_cents = torch.zeros_like(controls["deviation_cents"])
        if self.pitch_deviation_cents:
            predicted = controls["deviation_cents"]
            target, weight = harmonic_salience_contour(
                audio,
                dsp.midi_to_hz(pitch),
                self.control_hop,
                predicted.shape[1],
                self.sample_rate,
                search_cents=self.pitch_deviation_cents,
            )
            measured_cents = torch.where(weight > 0, target, measured_cents)
            target = (target - weighted_median(target, weight)).clamp(
                -self.pitch_deviation_cents, self.pitch_deviation_cents
            )
            bend_error = (weight * (predicted - target).abs()).sum() / (100.0 * weight.sum().clamp(min=1.0))
            loss = loss + self.pitch_loss_weight * bend_error
            parts["pitch_bend"] = bend_error.item()
        if self.loudness_loss_weight:
            level_error = (
                dsp.frame_level_db(prediction, self.hop_length) - dsp.frame_level_db(audio, self.hop_length)
            ).abs().mean() / 20.0
            loss = loss + self.loudness_loss_weight * level_error
            parts["loudness"] = level_error.item()
        if self.partial_loss_weight:
            # Where the target's partials are: its measured pitch (the MIDI pitch where the contour
            # is not trusted) and the predicted stiffness; the same places are read on the output.
            with torch.no_grad():
                f0_frames = dsp.midi_to_hz(pitch).to(audio.dtype)[:, None] * dsp.cents_to_ratio(measured_cents)
                ratios = dsp.harmonic_ratios(self.n_harmonics, controls["inharmonicity"].detach()).to(audio.dtype)
                partial_hz = [f0_frames[..., None] * ratios[:, None, :]]
                if self.n_subharmonics:
                    # Half-integer partials, read apart from the whole ones: each set's search reach is
                    # a quarter of its first partial, so these never reach the whole partials beside them.
                    # Compared in dB, a quiet partial's error counts as much as a loud one's.
                    half = dsp.harmonic_ratios(
                        0, controls["inharmonicity"].detach(), n_subharmonics=self.n_subharmonics
                    )
                    partial_hz.append(f0_frames[..., None] * half.to(audio.dtype)[:, None, :])
            predicted_levels = torch.cat(
                [partial_levels(prediction, hz, self.control_hop, self.sample_rate) for hz in partial_hz], dim=-1
            )
            target_levels = torch.cat(
                [partial_levels(audio, hz, self.control_hop, self.sample_rate) for hz in partial_hz], dim=-1
            )
            # Entries where both sit on the floor (silence, absent partials) are not counted.
            counted = torch.maximum(predicted_levels, target_levels).detach() > FLOOR_LEVEL
            partial_error = ((predicted_levels - target_levels).abs() * counted).sum() / counted.sum().clamp(min=1)
            loss = loss + self.partial_loss_weight * partial_error
            parts["partials"] = partial_error.item()
        if self.mel_loss_weight:
            if self._mel_loss is None:
                self._mel_loss = MelDecibelLoss(self.sample_rate)
            mel_error = self._mel_loss.to(audio.device)(prediction, audio)
            loss = loss + self.mel_loss_weight * mel_error
            parts["mel"] = mel_error.item()
        return loss, parts

    @torch.inference_mode()
    def synthesize(
        self,
        z: Tensor,
        pitch: Tensor,
        n_samples: int,
        velocity: Tensor | None = None,
        generator: torch.Generator | None = None,
        source_pitch: Tensor | None = None,
    ) -> Tensor:
        """Decode notes for listening: reproducible noise, velocity applied, clipped to [-1, 1].

        Args:
            z: ``[batch, latent_dim, frames]`` embedding.
            pitch: ``[batch]`` MIDI pitches.
            n_samples: length of the output.
            velocity: ``[batch]`` MIDI velocities scaling the loudness the embedding carries by
                :func:`timbre.models.dsp.velocity_to_gain` (127 leaves it unchanged); ``None`` = 127.
            generator: source of the noise, on the decoder's device; the same seed gives the same audio.
            source_pitch: ``[batch]`` the pitches ``z`` was encoded at, if known (:meth:`controls`).

        Returns:
            ``[batch, n_samples]`` audio in [-1, 1].
        """
        audio = self(z, pitch, n_samples, generator=generator, source_pitch=source_pitch)
        if velocity is not None:
            audio = audio * dsp.velocity_to_gain(velocity).to(audio)[:, None]
        return audio.clamp(-1.0, 1.0)
