from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile
import torch

from timbre.errors import AudioError
from timbre.io.audio import (
    SAMPLE_RATE,
    load_audio,
    mu_law_decode,
    mu_law_encode,
    normalize_peak,
    normalize_rms,
    peak_level,
    resample,
    rms_level,
    save_wav,
    to_mono,
)


def sine(rate: int, seconds: float = 0.5, frequency: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    time = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


# (extension, libsndfile format, subtype, max interior error after load at 16 kHz)
LOSSLESS = [
    ("wav", "WAV", "PCM_16", 2e-3),
    ("wav", "WAV", "PCM_24", 2e-3),
    ("wav", "WAV", "PCM_32", 2e-3),
    ("wav", "WAV", "FLOAT", 2e-3),
    ("flac", "FLAC", "PCM_16", 2e-3),
    ("flac", "FLAC", "PCM_24", 2e-3),
]


@pytest.mark.parametrize("extension,file_format,subtype,tolerance", LOSSLESS)
@pytest.mark.parametrize("rate", [16000, 44100, 8000])
@pytest.mark.parametrize("channels", [1, 2])
def test_load_round_trip_any_format_depth_rate_and_channels(
    tmp_path, extension, file_format, subtype, tolerance, rate, channels
):
    source = sine(rate)
    # Right channel at half level: a correct downmix gives 0.75 x the sine, taking one channel does not.
    data = source if channels == 1 else np.stack([source, 0.5 * source], axis=1)
    path = tmp_path / f"note.{extension}"
    soundfile.write(path, data, rate, subtype=subtype, format=file_format)

    audio = load_audio(path)

    expected = sine(SAMPLE_RATE) * (1.0 if channels == 1 else 0.75)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.shape[0] == expected.shape[0]
    interior = slice(200, -200)  # resampling filters ring at the edges
    assert np.max(np.abs(audio[interior] - expected[interior])) < tolerance


@pytest.mark.parametrize("channels", [1, 2])
def test_load_ogg_vorbis_keeps_pitch_and_level(tmp_path, channels):
    source = sine(44100)
    data = source if channels == 1 else np.stack([source, source], axis=1)
    path = tmp_path / "note.ogg"
    soundfile.write(path, data, 44100, format="OGG", subtype="VORBIS")

    audio = load_audio(path)

    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0])))
    peak_frequency = np.fft.rfftfreq(audio.shape[0], 1 / SAMPLE_RATE)[spectrum.argmax()]
    assert abs(peak_frequency - 440.0) < 4.0
    assert rms_level(audio[2000:-2000]) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_load_audio_resamples_to_requested_rate(tmp_path):
    path = tmp_path / "note.wav"
    soundfile.write(path, sine(16000), 16000)
    assert load_audio(path, sample_rate=22050).shape[0] == int(0.5 * 22050)


def test_to_mono_averages_channels():
    stereo = np.array([[1.0, 0.0], [0.5, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(to_mono(stereo), [0.5, 0.5])
    np.testing.assert_array_equal(to_mono(stereo[:, 0]), stereo[:, 0])


def test_resample_preserves_a_band_limited_tone():
    out = resample(sine(48000), 48000, 16000)
    assert out.shape[0] == 8000
    assert np.max(np.abs(out[200:-200] - sine(16000)[200:-200])) < 2e-3


@pytest.mark.parametrize("as_tensor", [False, True])
def test_save_wav_round_trip_pcm16(tmp_path, as_tensor):
    audio = sine(SAMPLE_RATE)
    path = save_wav(tmp_path / "sub" / "out.wav", torch.from_numpy(audio)[None] if as_tensor else audio)
    info = soundfile.info(path)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (SAMPLE_RATE, 1, "PCM_16", "WAV")
    np.testing.assert_allclose(load_audio(path), audio, atol=1 / 32768 + 1e-7)


def test_save_wav_float_is_lossless_and_pcm_clips(tmp_path):
    audio = np.array([0.1, -0.7, 1.5, -2.0], dtype=np.float32)
    np.testing.assert_array_equal(load_audio(save_wav(tmp_path / "f.wav", audio, subtype="FLOAT")), audio)
    clipped = load_audio(save_wav(tmp_path / "i.wav", audio))
    assert clipped.max() <= 1.0 and clipped.min() == -1.0


def test_save_wav_is_atomic(tmp_path):
    path = tmp_path / "out.wav"
    save_wav(path, sine(SAMPLE_RATE))
    before = path.read_bytes()
    bad = sine(SAMPLE_RATE)
    bad[10] = np.nan
    with pytest.raises(AudioError, match="out.wav"):
        save_wav(path, bad)
    # The failed write neither touched the existing file nor left a temporary one behind.
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.wav"]
    save_wav(path, 0.5 * sine(SAMPLE_RATE))
    assert path.read_bytes() != before and os.listdir(tmp_path) == ["out.wav"]


def test_save_wav_rejects_stereo_and_empty(tmp_path):
    with pytest.raises(AudioError, match="shape"):
        save_wav(tmp_path / "s.wav", np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(AudioError, match="empty"):
        save_wav(tmp_path / "e.wav", np.zeros(0, dtype=np.float32))


def test_mu_law_round_trip_error_bound():
    x = torch.linspace(-1, 1, 200_001)
    codes = mu_law_encode(x)
    assert codes.dtype == torch.long
    assert codes.min() == 0 and codes.max() == 255
    assert torch.unique(codes).numel() == 256  # every level is reachable
    assert (codes[1:] >= codes[:-1]).all()  # monotonic
    decoded = mu_law_decode(codes)
    assert decoded.dtype == torch.float32
    error = (decoded - x).abs()
    assert (error <= 0.0222 * x.abs() + 1e-4).all()
    # Quiet samples are resolved far more finely than loud ones: the point of companding.
    assert error[x.abs() < 0.01].max() < 5e-4


def test_mu_law_silence_clipping_and_numpy_input():
    assert mu_law_encode(np.zeros(3, dtype=np.float32)).tolist() == [128, 128, 128]
    assert mu_law_encode(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]
    assert abs(float(mu_law_decode(torch.tensor(128)))) < 1e-4


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_normalize_peak_and_rms(kind):
    audio = sine(SAMPLE_RATE, amplitude=0.1)
    audio = torch.from_numpy(audio) if kind == "torch" else audio
    peaked = normalize_peak(audio)
    assert type(peaked) is type(audio)
    assert peak_level(peaked) == pytest.approx(0.99, rel=1e-5)
    assert peak_level(normalize_peak(audio, peak=0.5)) == pytest.approx(0.5, rel=1e-5)
    assert rms_level(normalize_rms(audio, rms=0.2)) == pytest.approx(0.2, rel=1e-5)
    silence = audio * 0
    assert peak_level(normalize_peak(silence)) == 0.0 and rms_level(normalize_rms(silence, 0.1)) == 0.0


def test_load_missing_file(tmp_path):
    with pytest.raises(AudioError, match="missing.wav: no such audio file"):
        load_audio(tmp_path / "missing.wav")


def test_load_zero_byte_file(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="zero.wav"):
        load_audio(path)


def test_load_wav_without_samples(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="empty.wav: audio file is empty"):
        load_audio(path)


def test_load_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x00\x10\x00\x00WAVEjunk" + os.urandom(512))
    with pytest.raises(AudioError, match="corrupt.wav: cannot read audio"):
        load_audio(path)


def test_load_nan_samples(tmp_path):
    audio = sine(SAMPLE_RATE)
    audio[100] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(path, audio, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: audio contains NaN"):
        load_audio(path)


@pytest.mark.parametrize(
    "name, rate, audio, error, words",
    [
        ("x.wav", 0, np.zeros(10, np.float32), "value", "sample_rate must be a positive integer"),
        ("x.wav", 16000.5, np.zeros(10, np.float32), "value", "sample_rate must be a positive integer"),
        ("x.mp3", 16000, np.zeros(10, np.float32), "value", "save_wav writes WAV files"),
        ("x.wav", 16000, [0.0, 0.1], "type", "must be a numpy array or torch tensor"),
    ],
)
def test_save_wav_refuses_bad_arguments_and_writes_nothing(tmp_path, name, rate, audio, error, words):
    from timbre.errors import ConfigError, InvalidTypeError

    expected = InvalidTypeError if error == "type" else (ConfigError, AudioError)
    with pytest.raises(expected, match=words):
        save_wav(tmp_path / name, audio, rate)
    assert os.listdir(tmp_path) == []


def test_cancelled_stereo_warns_when_loaded(tmp_path):
    from timbre.errors import TimbreWarning

    left = 0.5 * np.sin(np.linspace(0, 100, 8000)).astype(np.float32)
    soundfile.write(tmp_path / "anti.wav", np.stack([left, -left], axis=1), 16000)
    with pytest.warns(TimbreWarning, match="channels cancel out"):
        load_audio(tmp_path / "anti.wav")
