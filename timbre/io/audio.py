"""Audio I/O and sample-level transforms.

timbre works on 16 kHz mono float32 waveforms in [-1, 1]. :func:`load_audio` turns any
WAV/FLAC/OGG file (integer or float samples, any channel count, any rate) into that form;
:func:`save_wav` writes a waveform atomically, so a reader never sees a half-written file.
Mu-law companding (256 levels, as in WaveNet and NSynth) and loudness normalisation live
here too, so every model and script quantises and scales audio the same way.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile
import torch
import torchaudio.functional

from timbre.constants import MU_LAW_LEVELS, SAMPLE_RATE
from timbre.errors import AudioError, ConfigError, InvalidTypeError, TimbreWarning
from timbre.io.files import atomic_write

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)
# Peak below which a waveform counts as silence: -80 dBFS, a few steps of 16-bit audio.
SILENCE_PEAK = 1e-4
# A downmix this much quieter than its channels (-60 dB) means they cancelled out.
CANCELLED_DOWNMIX = 1e-3


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels of ``audio``.

    Args:
        audio: ``[samples]`` or ``[samples, channels]`` (soundfile's layout).

    Returns:
        ``[samples]``, same dtype.
    """
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise AudioError(f"expected [samples] or [samples, channels] audio, got shape {audio.shape}")
    return audio.mean(axis=1, dtype=audio.dtype)


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited (windowed-sinc) resampling with ``torchaudio.functional.resample``.

    Args:
        audio: ``[samples]`` float waveform.
        orig_rate: rate of ``audio`` in Hz.
        new_rate: wanted rate in Hz.

    Returns:
        ``[ceil(samples * new_rate / orig_rate)]`` float32 waveform.
    """
    if orig_rate <= 0 or new_rate <= 0:
        raise ConfigError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return audio.astype(np.float32, copy=False)
    waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    return torchaudio.functional.resample(waveform, int(orig_rate), int(new_rate)).numpy()


def check_finite(audio: np.ndarray, source: str | os.PathLike) -> None:
    """Raise :class:`AudioError` naming ``source`` if ``audio`` holds NaN or infinity."""
    if not np.isfinite(audio).all():
        raise AudioError(f"{source}: audio contains NaN or infinite samples")


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate``.

    Integer samples are scaled to [-1, 1); float files are kept as stored (not clipped).
    Stereo and multichannel files are averaged to mono, then resampled.

    Args:
        path: WAV, FLAC, OGG or any other format libsndfile reads.
        sample_rate: rate of the returned waveform in Hz.

    Returns:
        ``[samples]`` float32 waveform.

    Raises:
        AudioError: the file is missing, unreadable, empty, or holds non-finite samples.
    """
    _check_path(path)
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        audio, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
        raise AudioError(f"{path}: cannot read audio ({error})") from error
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise AudioError(f"{path}: audio file is empty (no samples)")
    check_finite(audio, path)
    mono = to_mono(audio)
    warn_if_silent(mono, path, channels=audio)
    return resample(mono, file_rate, sample_rate)


def warn_if_silent(mono: np.ndarray, source: str | os.PathLike, channels: np.ndarray | None = None) -> bool:
    """Warn (:class:`TimbreWarning`) when ``mono`` ``[samples]`` is silence; returns whether it is.

    With ``channels`` ``[samples, channels]``, the source of the downmix, a downmix far quieter
    than its channels (anti-phase stereo cancelling out) is named as such.
    """
    mono_peak = peak_level(mono)
    channel_peak = peak_level(channels) if channels is not None and channels.shape[1] > 1 else 0.0
    if channel_peak > SILENCE_PEAK and mono_peak < CANCELLED_DOWNMIX * channel_peak:
        message = (
            f"{source}: the channels cancel out when mixed to mono (anti-phase stereo): "
            f"the mono signal is {20 * math.log10(channel_peak / max(mono_peak, 1e-12)):.0f} dB below the channels"
        )
    elif mono_peak <= SILENCE_PEAK:
        message = f"{source}: the audio is silent (peak below {20 * math.log10(SILENCE_PEAK):.0f} dBFS)"
    else:
        return False
    warnings.warn(message, TimbreWarning, stacklevel=3)
    return True


def _check_path(path: object) -> None:
    if not isinstance(path, (str, Path)) and not hasattr(path, "__fspath__"):
        raise InvalidTypeError(f"an audio file path must be a string or path, got {path!r}")


def _as_numpy_mono(audio: np.ndarray | torch.Tensor, path: Path) -> np.ndarray:
    """``[samples]`` or ``[1, samples]`` array or tensor -> ``[samples]`` float32 numpy array."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().to("cpu", torch.float32).numpy()
    mono = np.asarray(audio, dtype=np.float32)
    if mono.ndim == 2 and mono.shape[0] == 1:
        mono = mono[0]
    if mono.ndim != 1:
        raise AudioError(f"{path}: expected mono audio of shape [samples], got shape {mono.shape}")
    return mono


def save_wav(
    path: str | os.PathLike,
    audio: np.ndarray | torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    subtype: str = "PCM_16",
) -> Path:
    """Write mono audio to a WAV file atomically.

    The samples go to a temporary file in the same directory, which is then renamed over
    ``path``: an interrupted write never leaves a truncated file behind. Parent directories
    are created. With an integer ``subtype`` samples outside [-1, 1] are clipped.

    Args:
        path: destination ``.wav`` file.
        audio: ``[samples]`` (or ``[1, samples]``) float waveform, numpy or torch.
        sample_rate: rate in Hz stored in the header.
        subtype: libsndfile subtype, e.g. ``"PCM_16"`` (NSynth's format) or ``"FLOAT"`` (lossless).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        AudioError: the audio is not mono, is empty, or holds non-finite samples.
    """
    _check_path(path)
    path = Path(path)
    if path.suffix.lower() != ".wav":
        found = f"'{path.suffix}'" if path.suffix else "no extension"
        raise AudioError(f"{path}: save_wav writes WAV files, but the name has {found}; use a .wav name")
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, numbers.Real)
        or not 0 < sample_rate < 2**31
        or sample_rate != int(sample_rate)
    ):
        raise ConfigError(f"{path}: sample_rate must be a positive integer number of Hz, got {sample_rate!r}")
    if not isinstance(audio, (np.ndarray, torch.Tensor)):
        raise InvalidTypeError(f"{path}: audio must be a numpy array or torch tensor, got {type(audio).__name__}")
    samples = _as_numpy_mono(audio, path)
    if samples.size == 0:
        raise AudioError(f"{path}: refusing to write empty audio")
    check_finite(samples, path)
    if subtype.startswith("PCM"):
        samples = np.clip(samples, -1.0, 1.0)
    with atomic_write(path) as file:
        soundfile.write(file, samples, int(sample_rate), subtype=subtype, format="WAV")
    return path


def mu_law_encode(audio: np.ndarray | torch.Tensor, levels: int = MU_LAW_LEVELS) -> torch.Tensor:
    """Mu-law compand and quantise a waveform (WaveNet's 8-bit output alphabet).

    Args:
        audio: float waveform of any shape, nominally in [-1, 1]; values outside are clipped.
        levels: number of quantisation levels (256 for 8-bit mu-law).

    Returns:
        LongTensor of the same shape with values in ``[0, levels - 1]``; silence maps to ``levels // 2``.
    """
    waveform = torch.as_tensor(audio)
    if not waveform.is_floating_point():
        waveform = waveform.float()
    return torchaudio.functional.mu_law_encoding(waveform.clamp(-1.0, 1.0), levels)


def mu_law_decode(codes: torch.Tensor, levels: int = MU_LAW_LEVELS) -> torch.Tensor:
    """Invert :func:`mu_law_encode`.

    Quantisation is finest near zero: at 256 levels the round trip error on ``x`` in [-1, 1]
    is below ``0.0222 * |x| + 1e-4``.

    Args:
        codes: integer tensor of any shape with values in ``[0, levels - 1]``.
        levels: number of quantisation levels used to encode.

    Returns:
        float32 tensor of the same shape in [-1, 1].
    """
    return torchaudio.functional.mu_law_decoding(torch.as_tensor(codes), levels).float()


def rms_level(audio: np.ndarray | torch.Tensor) -> float:
    """Root-mean-square level of a waveform of any shape (0.0 for empty input)."""
    if isinstance(audio, torch.Tensor):
        return float(audio.detach().double().square().mean().sqrt()) if audio.numel() else 0.0
    samples = np.asarray(audio, dtype=np.float64)
    return float(math.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0


def peak_level(audio: np.ndarray | torch.Tensor) -> float:
    """Largest absolute sample of a waveform of any shape (0.0 for empty input)."""
    if isinstance(audio, torch.Tensor):
        return float(audio.detach().abs().max()) if audio.numel() else 0.0
    samples = np.asarray(audio)
    return float(np.abs(samples).max()) if samples.size else 0.0


def normalize_peak(audio: ArrayOrTensor, peak: float = 0.99) -> ArrayOrTensor:
    """Scale ``audio`` (any shape, numpy or torch) so its largest absolute sample is ``peak``.

    Silence is returned unchanged (there is nothing to scale).
    """
    current = peak_level(audio)
    return audio if current == 0.0 else audio * (peak / current)


def normalize_rms(audio: ArrayOrTensor, rms: float) -> ArrayOrTensor:
    """Scale ``audio`` (any shape, numpy or torch) so its RMS level is ``rms``.

    No clipping is applied: a quiet, spiky signal can end up with peaks above 1.
    Silence is returned unchanged.
    """
    current = rms_level(audio)
    return audio if current == 0.0 else audio * (rms / current)
