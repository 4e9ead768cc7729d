"""The sound designer's model: encode sounds into embeddings, synthesize notes from embeddings.

:class:`TimbreModel` wraps a trained :class:`~timbre.models.autoencoder.Autoencoder` (parallel or
autoregressive decoder) with file handling, duration fitting, velocity and batching.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from timbre.embedding import ESTIMATED_PITCH, Embedding
from timbre.errors import AudioError, ConfigError, InvalidTypeError, TimbreWarning
from timbre.io.audio import load_audio, resample, to_mono, warn_if_silent
from timbre.models.autoencoder import Autoencoder
from timbre.models.decoder import WaveNetDecoder
from timbre.models.dsp import velocity_to_gain

AudioSource = str | os.PathLike | np.ndarray | torch.Tensor
# Loudness of a note encoded without a known velocity is taken as that of this velocity.
REFERENCE_VELOCITY = 100
# Shortest input the encoders are run on, in frames (see TimbreModel.encode).
MIN_ENCODED_FRAMES = 2


class TimbreModel:
    """A trained autoencoder ready for encoding and synthesis.

    Args:
        autoencoder: the trained model (EMA weights).
        name: how it was loaded (a bundled name or a path); stored in embeddings.
        info: facts from its checkpoint (step, training command, pitch range, ...).
        device: where to run ("cpu", "cuda", or a torch.device).
        known_embeddings: refined encodings computed when the model was exported (its bundled
            timbre set's notes), by :func:`encoding_key`: ``{"tensor": [frames, latent_dim],
            "extra": {...}}``. ``encode`` returns them instead of refining those sounds again.
    """

    def __init__(
        self,
        autoencoder: Autoencoder,
        name: str = "model",
        info: dict[str, Any] | None = None,
        device: str = "cpu",
        known_embeddings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.device = check_device(device)
        self.autoencoder = autoencoder.eval().to(self.device)
        self.name = name
        self.info = dict(info or {})
        self.known_embeddings = dict(known_embeddings or {})

    @property
    def sample_rate(self) -> int:
        return self.autoencoder.sample_rate

    @property
    def hop_length(self) -> int:
        return self.autoencoder.hop_length

    @property
    def is_autoregressive(self) -> bool:
        return isinstance(self.autoencoder.decoder, WaveNetDecoder)

    @property
    def default_temperature(self) -> float:
        """The sampling temperature ``synthesize`` uses when given none: the one the model was exported
        with (``python -m timbre.train.export --temperature``, stated in its card), else 1.0."""
        temperature = self.info.get("sampling_temperature")
        return 1.0 if temperature is None else float(temperature)

    @property
    def has_pitch_clock(self) -> bool:
        """Whether the decoder is a WaveNet driven by a sample-rate pitch clock (``source_harmonics``)."""
        return self.is_autoregressive and bool(getattr(self.autoencoder.decoder, "source_harmonics", 0))

    @property
    def default_clock_gain(self) -> float:
        """The pitch clock gain ``synthesize`` decodes with when given none: the one the model was
        exported with (``python -m timbre.train.export --clock-gain``, stated in its card), else 1.0."""
        gain = self.info.get("sampling_clock_gain")
        return 1.0 if gain is None else float(gain)

    @property
    def makeup_db(self) -> float:
        """The gain in dB ``synthesize`` applies to an autoregressive decoder's audio (then clipped to
        [-1, 1]) when decoding at its default clock gain (at any temperature and weight format): the
        level that gain loses at the model's default temperature, measured on held-out notes and
        stated in its card (``python -m timbre.train.export --makeup-db``); 0 unless set."""
        gain = self.info.get("sampling_makeup_db")
        return 0.0 if gain is None else float(gain)

    @property
    def default_refine(self) -> int:
        """The refinement steps ``encode`` takes when given none: the ones the model was exported
        with (``python -m timbre.train.export --refine``, stated in its card), else 0."""
        steps = self.info.get("encoding_refine")
        return 0 if steps is None else int(steps)

    @property
    def reads_source_pitch(self) -> bool:
        """Whether the decoder plays partials on the octave below (``n_subharmonics``), which it
        takes from the pitch an embedding was encoded at when played at another
        (:meth:`timbre.models.parallel.HarmonicNoiseDecoder.controls`): that pitch is the
        embedding's :attr:`~timbre.Embedding.encoded_pitch`, else the pitch played."""
        return bool(getattr(self.autoencoder.decoder, "n_subharmonics", 0))

    @property
    def decoder_kind(self) -> str:
        return "wavenet" if self.is_autoregressive else "fast"

    def __repr__(self) -> str:
        return f"TimbreModel({self.name!r}, decoder={self.decoder_kind}, sample_rate={self.sample_rate})"

    # ------------------------------------------------------------------ encoding

    def _audio(self, source: AudioSource, sample_rate: int | None) -> tuple[np.ndarray, str]:
        """Load or convert ``source`` to mono float32 at the model's rate; returns (audio, label)."""
        if sample_rate is not None and (
            isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real) or not sample_rate > 0
        ):
            raise ConfigError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
        if isinstance(source, (str, os.PathLike)):
            return load_audio(source, self.sample_rate), str(source)
        if not isinstance(source, (np.ndarray, torch.Tensor)):
            raise InvalidTypeError(
                f"encode takes an audio file path, a waveform array/tensor or an Embedding, got {type(source).__name__}"
            )
        array = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
        if np.issubdtype(array.dtype, np.signedinteger):
            # Integer PCM, as soundfile returns it: full scale is the type's range.
            array = array / float(np.iinfo(array.dtype).max + 1)
        elif not np.issubdtype(array.dtype, np.floating):
            raise InvalidTypeError(f"array: a waveform holds floats or signed integer PCM, got dtype {array.dtype}")
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
            array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise AudioError("array: the waveform holds NaN, infinite or out-of-range samples")
        if array.ndim not in (1, 2) or array.size == 0:  # [n, 0] would be averaged into NaN
            raise AudioError(f"array: expected a waveform [samples] or [samples, channels], got shape {array.shape}")
        if array.ndim == 2:
            # [channels, samples] or [samples, channels]: the longer axis is time.
            channels = array if array.shape[0] >= array.shape[1] else array.T
            array = to_mono(channels)
            warn_if_silent(array, "array", channels)
        else:
            warn_if_silent(array, "array")
        if sample_rate is not None and sample_rate != self.sample_rate:
            array = resample(array, int(sample_rate), self.sample_rate)
        return array, "array"

    def encode(
        self,
        source: AudioSource | Embedding,
        sample_rate: int | None = None,
        pitch: int | None = None,
        velocity: int | None = None,
        refine: int | None = None,
        progress: bool = False,
    ) -> Embedding:
        """Encode a sound into an :class:`Embedding` ``[frames, latent_dim]``.

        Args:
            source: an audio file (any rate, mono or stereo), or a waveform array/tensor
                (``sample_rate`` says its rate; default: the model's), or an Embedding (returned as is).
            pitch, velocity: MIDI pitch and velocity of the source note, when known (metadata).
                A model that :attr:`reads_source_pitch` estimates a pitch not given
                (:func:`timbre.models.source_pitch.heard_midi_pitch`, ``embedding.extra["estimated_pitch"]``);
                an encoder that reads partial levels reads them at that pitch.
            refine: gradient steps that move the embedding towards one the decoder renders closer
                to the source (:mod:`timbre.models.refine`; parallel decoder only). Each step costs
                about a decode and its backward pass (0.2-0.4 s for a 4 s note on 2 CPU threads).
                The note is rendered at ``pitch``; when not given, at the pitch estimated above
                (a model that reads source pitch), else at the one PESTO hears. None: the
                model's own (:attr:`default_refine`); 0 encodes in one pass.
            progress: show a progress bar while refining.
        """
        if isinstance(source, Embedding):
            return source
        if refine is None:
            refine = self.default_refine
        if not isinstance(refine, numbers.Integral) or isinstance(refine, bool) or refine < 0:
            raise ConfigError(f"refine must be a whole number of steps >= 0, got {refine!r}")
        if refine and self.is_autoregressive:
            raise ConfigError(f"model {self.name} has an autoregressive decoder: only a parallel one can refine")
        audio, label = self._audio(source, sample_rate)
        if audio.shape[0] < self.hop_length:
            warnings.warn(
                f"{label}: {audio.shape[0]} samples is shorter than one embedding frame ({self.hop_length} samples); "
                "the rest of the frame is taken as silence",
                TimbreWarning,
                stacklevel=2,
            )
        known = self.known_embeddings.get(encoding_key(audio, pitch, refine)) if refine else None
        if known is not None:
            return Embedding(
                known["tensor"].clone(), self.sample_rate, self.hop_length, source=label, pitch=pitch,
                velocity=velocity, model=self.name, extra=dict(known["extra"]),
            )  # fmt: skip
        frames = math.ceil(audio.shape[0] / self.hop_length)
        # Encoders pad by reflection (a mel front end by half an FFT), which needs more than one
        # frame of input, and refining needs more than half the loss's largest FFT: a shorter clip
        # is encoded with silence after it and cut back.
        encoded_frames = max(frames, MIN_ENCODED_FRAMES)
        if refine:
            encoded_frames = max(encoded_frames, max(self.autoencoder.decoder.fft_sizes) // 2 // self.hop_length + 1)
        waveform = torch.zeros(1, encoded_frames * self.hop_length)
        waveform[0, : audio.shape[0]] = torch.from_numpy(np.clip(audio, -1.0, 1.0))
        waveform = waveform.to(self.device)
        heard_pitch = None
        if pitch is None and (self.reads_source_pitch or self.autoencoder.encoder_reads_pitch):
            from timbre.models.source_pitch import heard_midi_pitch

            heard_pitch = heard_midi_pitch(audio, self.sample_rate)
        encoder_pitch = None
        if self.autoencoder.encoder_reads_pitch:  # partial levels are read at the pitch given, else heard
            encoder_pitch = torch.tensor([pitch if pitch is not None else heard_pitch], device=self.device)
        with torch.inference_mode():
            z = self.autoencoder.encode(waveform, encoder_pitch)
        if refine:
            from timbre.models.refine import estimate_midi_pitch, refine_embedding

            # The embedding records the pitch it was fitted at: the heard one when the model
            # estimated it (its octave below is taken from there), else PESTO's.
            refine_pitch = pitch if pitch is not None else heard_pitch
            if refine_pitch is None:
                refine_pitch = estimate_midi_pitch(waveform[0], self.sample_rate)
            z = refine_embedding(
                self.autoencoder.decoder, waveform, z, torch.tensor([refine_pitch], device=self.device), refine,
                progress=progress,
            )  # fmt: skip
        z = z[0].T.cpu()[:frames]
        extra: dict[str, Any] = {}
        if pitch is None and self.reads_source_pitch:
            extra[ESTIMATED_PITCH] = heard_pitch
        return Embedding(
            z,
            self.sample_rate,
            self.hop_length,
            source=label,
            pitch=pitch,
            velocity=velocity,
            model=self.name,
            extra=extra,
        )

    # ------------------------------------------------------------------ synthesis

    def synthesize(
        self,
        embedding: Embedding | torch.Tensor,
        *,
        pitch: int = 60,
        seconds: float | None = None,
        velocity: int | None = None,
        temperature: float | None = None,
        seed: int = 0,
        progress: bool = False,
        weights: str = "float32",
        clock_gain: float | None = None,
    ) -> np.ndarray:
        """Play ``embedding`` at MIDI ``pitch``; returns a waveform ``[samples]`` float32.

        Args:
            embedding: an Embedding, or a bare tensor ``[frames, dim]``.
            pitch: MIDI pitch 0-127.
            seconds: total length including the release; None keeps the embedding's own length.
            velocity: MIDI velocity; scales loudness relative to the source note's velocity
                (General MIDI curve ``(v/127)**2``). None keeps the encoded loudness.
            temperature: sampling temperature of the autoregressive decoder (0 = greedy); None
                uses the model's own (:attr:`default_temperature`).
            seed: random seed (same seed, same audio).
            progress: show a progress bar (autoregressive decoding).
            weights: how the autoregressive decoder's step stores its matrices: ``"float32"``, or
                ``"bfloat16"`` / ``"int8"`` for faster decoding of large decoders, with logits a little
                off float32's (``benchmarks/decode_speed.py`` states how far).
            clock_gain: how strongly a pitch-clock WaveNet is pulled to its pitch (multiplies the
                clock's maps; 1 decodes as trained); None uses the model's own
                (:attr:`default_clock_gain`; at that gain the model's :attr:`makeup_db` restores
                the level). Only for models with a pitch clock (:attr:`has_pitch_clock`).
        """
        if isinstance(embedding, (list, tuple)):
            raise InvalidTypeError(
                f"synthesize plays one embedding, got a {type(embedding).__name__} of {len(embedding)}; "
                "use synthesize_batch for several"
            )
        audio = self.synthesize_batch(
            [embedding],
            [pitch],
            seconds=[seconds],
            velocities=[velocity],
            temperature=temperature,
            seed=seed,
            progress=progress,
            weights=weights,
            clock_gain=clock_gain,
        )
        return audio[0]

    def makeup_applied(self, clock_gain: float | None) -> float:
        """The make-up gain (dB) ``synthesize`` applies when decoding at ``clock_gain`` (None: the default)."""
        at_default = clock_gain is None or clock_gain == self.default_clock_gain
        return self.makeup_db if self.is_autoregressive and at_default else 0.0

    def _clock_gain(self, clock_gain: float | None) -> float:
        """``clock_gain`` checked (a finite number >= 0, for a model with a pitch clock), or the model's own."""
        if clock_gain is None:
            return self.default_clock_gain
        if isinstance(clock_gain, bool) or not isinstance(clock_gain, numbers.Real):
            raise InvalidTypeError(f"clock_gain must be a number >= 0, got {clock_gain!r}")
        if not 0 <= float(clock_gain) < math.inf:
            raise ConfigError(f"clock_gain must be a finite number >= 0, got {clock_gain}")
        if not self.has_pitch_clock:
            raise ConfigError(f"model {self.name}: clock_gain applies to WaveNet decoders with a pitch clock only")
        return float(clock_gain)

    def prepare_embedding(self, embedding: Embedding | torch.Tensor, seconds: float | None) -> Embedding:
        """``embedding`` checked against this model and fitted to a total length of ``seconds``
        (release kept whole; None keeps its length). A bare tensor ``[frames, dim]`` is wrapped."""
        if not isinstance(embedding, (Embedding, torch.Tensor, np.ndarray)):
            raise InvalidTypeError(
                f"expected an Embedding (from encode) or a tensor [frames, dim], got {type(embedding).__name__}"
            )
        if not isinstance(embedding, Embedding):
            embedding = Embedding(torch.as_tensor(embedding), self.sample_rate, self.hop_length)
        if embedding.dim != self.autoencoder.latent_dim:
            raise ConfigError(
                f"{embedding.source}: embedding has {embedding.dim} dims, "
                f"model {self.name} expects {self.autoencoder.latent_dim}"
            )
        if seconds is None:
            return embedding
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
            raise InvalidTypeError(f"seconds must be a number (or None), got {seconds!r}")
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ConfigError(f"seconds must be a positive number, got {seconds}")
        return embedding.fit_to_duration(max(seconds - embedding.release_seconds, self.hop_length / self.sample_rate))

    @torch.inference_mode()
    def synthesize_batch(
        self,
        embeddings: Sequence[Embedding | torch.Tensor],
        pitches: Sequence[int],
        *,
        seconds: Sequence[float | None] | None = None,
        velocities: Sequence[int | None] | None = None,
        temperature: float | None = None,
        seed: int = 0,
        progress: bool = False,
        weights: str = "float32",
        clock_gain: float | None = None,
    ) -> np.ndarray:
        """Synthesize several notes in one decoder pass; returns ``[notes, samples]``.

        ``pitches``, ``seconds`` and ``velocities`` hold one value per embedding (see
        :meth:`synthesize`); ``temperature``, ``seed``, ``progress``, ``weights`` and ``clock_gain``
        apply to the whole batch.

        Notes are fitted to their ``seconds`` and padded (with their last frame) to the longest;
        each output row is cut to its own note's length and zero-padded after it.
        """
        if isinstance(embeddings, (Embedding, torch.Tensor, np.ndarray)) or not isinstance(embeddings, Sequence):
            raise InvalidTypeError(
                f"synthesize_batch takes a list of embeddings, got {type(embeddings).__name__}; use synthesize for one"
            )
        count = len(embeddings)
        seconds = list(seconds) if seconds is not None else [None] * count
        velocities = list(velocities) if velocities is not None else [None] * count
        pitches = [midi_number(pitch, "pitch", 0) for pitch in pitches]
        if not (len(pitches) == len(seconds) == len(velocities) == count) or count == 0:
            raise ConfigError("synthesize_batch needs one pitch, duration and velocity per embedding")
        velocities = [None if v is None else midi_number(v, "velocity", 1) for v in velocities]
        temperature = self.default_temperature if temperature is None else temperature
        check_temperature(temperature)
        clock_gain = self._clock_gain(clock_gain)
        from timbre.generation.engine import WEIGHT_NAMES  # deferred: parallel models never need the engine

        if not isinstance(weights, str):
            raise InvalidTypeError(f"weights must be a name ({', '.join(map(repr, WEIGHT_NAMES))}), got {weights!r}")
        if weights not in WEIGHT_NAMES:
            raise ConfigError(f"weights must be one of {', '.join(map(repr, WEIGHT_NAMES))}, got {weights!r}")
        if weights != "float32" and not self.is_autoregressive:
            raise ConfigError(f"model {self.name}: {weights} weights apply to autoregressive (wavenet) decoders only")
        fitted = [self.prepare_embedding(embedding, length) for embedding, length in zip(embeddings, seconds)]
        lengths = [
            round(length * self.sample_rate) if length is not None else e.frames * self.hop_length
            for e, length in zip(fitted, seconds)
        ]
        frames = max(e.frames for e in fitted)
        z = torch.stack([_pad_frames(e.tensor, frames) for e in fitted]).transpose(1, 2).to(self.device)
        pitch_tensor = torch.tensor([int(p) for p in pitches], device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        options: dict[str, Any] = {"generator": generator}
        if self.is_autoregressive:
            options.update(temperature=temperature, progress=progress, weight_dtype=WEIGHT_NAMES[weights])
            if self.has_pitch_clock:
                options.update(clock_gain=clock_gain)
        elif self.reads_source_pitch:
            # Where the pitch an embedding was encoded at is unknown, it is taken to be the one played.
            source_pitches = [p if e.encoded_pitch is None else e.encoded_pitch for e, p in zip(fitted, pitches)]
            options.update(source_pitch=torch.tensor(source_pitches, device=self.device))
        audio = self.autoencoder.decode(z, pitch_tensor, max(lengths), **options).float().cpu().numpy()
        if not np.isfinite(audio).all():
            raise AudioError(f"model {self.name}: the decoder produced NaN or infinite samples")
        makeup_db = self.makeup_applied(clock_gain)
        if makeup_db:
            audio = np.clip(audio * np.float32(10 ** (makeup_db / 20)), -1.0, 1.0)
        for row, (embedding, velocity, length) in enumerate(zip(fitted, velocities, lengths)):
            audio[row, length:] = 0.0
            if velocity is not None:
                audio[row] *= velocity_gain(velocity, embedding.velocity)
        return np.clip(audio, -1.0, 1.0).astype(np.float32)


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, refused unless this machine can run on it.

    Raises:
        ConfigError: an unknown device name, a device type timbre does not run on, or CUDA
            asked for where there is none.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {str(device)!r} is not a device name; use cpu or cuda") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r}: this machine has no CUDA device; use cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    elif resolved.type != "cpu":
        raise ConfigError(f"device {str(device)!r} is not supported; use cpu or cuda")
    return resolved


def midi_number(value: Any, name: str, lowest: int) -> int:
    """``value`` as a MIDI number in ``[lowest, 127]``: integers only (``60.5`` and ``"60"`` are refused).

    Raises:
        InvalidTypeError: not an integer (bool, float, str, None, ...).
        ConfigError: an integer outside the range.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(f"{name} must be an integer MIDI {name} {lowest}-127, got {value!r}")
    if not lowest <= int(value) <= 127:
        raise ConfigError(f"{name} {value} is outside the MIDI range {lowest}-127")
    return int(value)


def check_temperature(temperature: Any) -> None:
    """Raise unless ``temperature`` is a finite number >= 0 (0 is greedy decoding)."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise InvalidTypeError(f"temperature must be a number >= 0, got {temperature!r}")
    if not 0 <= float(temperature) < math.inf:
        raise ConfigError(f"temperature must be a number >= 0 (0 is greedy), got {temperature}")


def velocity_gain(velocity: int, source_velocity: int | None) -> float:
    """Amplitude ratio between playing at ``velocity`` and the source note's velocity."""
    velocity = midi_number(velocity, "velocity", 1)
    reference = source_velocity or REFERENCE_VELOCITY
    return float(velocity_to_gain(torch.tensor(float(velocity))) / velocity_to_gain(torch.tensor(float(reference))))


def _pad_frames(tensor: torch.Tensor, frames: int) -> torch.Tensor:
    """Repeat the last frame of ``[f, dim]`` up to ``frames`` (the tail is silenced afterwards)."""
    missing = frames - tensor.shape[0]
    return torch.cat([tensor, tensor[-1:].expand(missing, -1)]) if missing > 0 else tensor


def encoding_key(audio: np.ndarray, pitch: int | None, refine: int) -> str:
    """What identifies a refined encoding among a model's known ones: the hash of the audio
    ``[samples]`` (float32 at the model's rate), the pitch it was told (None: estimated) and the
    refinement steps."""
    digest = hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()
    return f"{digest}:{pitch}:{refine}"
