"""TimbreModel: encoding files and arrays, synthesis lengths, velocity, seeds, errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

import timbre
from timbre.errors import AudioError, CheckpointError, ConfigError
from timbre.synthesizer import velocity_gain


@pytest.fixture(scope="module")
def model(fast_checkpoint):
    return timbre.load(fast_checkpoint)


def tone(seconds: float, rate: int, frequency: float = 261.6) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def test_encode_file_and_array_agree(model, tmp_path):
    soundfile.write(tmp_path / "tone.wav", tone(1.0, 16000), 16000)
    from_file = model.encode(tmp_path / "tone.wav")
    from_array = model.encode(tone(1.0, 16000))
    assert from_file.tensor.shape == (32, 16)  # ceil(16000 / 512)
    # 16-bit file vs float array: the mel front end's level path passes the quantisation on.
    assert np.allclose(from_file.tensor, from_array.tensor, atol=2e-2)
    assert from_file.source.endswith("tone.wav") and from_file.model == model.name


def test_encode_resamples_and_downmixes(model):
    stereo_44k = np.stack([tone(1.0, 44100), tone(1.0, 44100)], axis=1)
    embedding = model.encode(stereo_44k, sample_rate=44100)
    reference = model.encode(tone(1.0, 16000))
    assert embedding.frames == reference.frames
    assert np.allclose(embedding.tensor, reference.tensor, atol=0.05)


def test_synthesis_has_the_requested_length_and_is_seeded(model):
    embedding = model.encode(tone(1.0, 16000))
    audio = model.synthesize(embedding, pitch=60, seconds=2.5)
    assert audio.shape == (40000,) and audio.dtype == np.float32
    assert np.abs(audio).max() <= 1.0
    assert np.array_equal(audio, model.synthesize(embedding, pitch=60, seconds=2.5))
    assert not np.array_equal(audio, model.synthesize(embedding, pitch=60, seconds=2.5, seed=1))


def test_velocity_scales_loudness_relative_to_the_source(model):
    embedding = model.encode(tone(1.0, 16000), velocity=100)
    loud = model.synthesize(embedding, pitch=60, velocity=100)
    soft = model.synthesize(embedding, pitch=60, velocity=50)
    assert np.allclose(soft, loud * velocity_gain(50, 100), atol=1e-6)
    assert velocity_gain(50, 100) == pytest.approx(0.25)


def test_batch_rows_keep_their_own_lengths(model):
    embedding = model.encode(tone(1.0, 16000))
    audio = model.synthesize_batch([embedding, embedding], [48, 72], seconds=[0.5, 1.5])
    assert audio.shape == (2, 24000)
    assert np.all(audio[0, 8000:] == 0) and np.abs(audio[1, 8000:]).max() > 0


def test_errors_are_clear(model, tmp_path):
    with pytest.raises(ConfigError, match="pitch 130 is outside"):
        model.synthesize(model.encode(tone(0.5, 16000)), pitch=130)
    with pytest.raises(AudioError, match="NaN"):
        model.encode(np.full(1000, np.nan, dtype=np.float32))
    with pytest.raises(CheckpointError, match="not a bundled model"):
        timbre.load("no-such-model")
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="broken.pt: not a readable checkpoint"):
        timbre.load(tmp_path / "broken.pt")


# One rule for bad arguments: a wrong type is an InvalidTypeError (a TypeError), a wrong value a
# ConfigError (a ValueError); both are TimbreErrors with a message naming the argument.
@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m, z: m.synthesize(None), "type", "expected an Embedding"),
        (lambda m, z: m.synthesize([z, z]), "type", "use synthesize_batch"),
        (lambda m, z: m.synthesize(z, pitch=None), "type", "pitch must be an integer"),
        (lambda m, z: m.synthesize(z, pitch=60.5), "type", "pitch must be an integer"),
        (lambda m, z: m.synthesize(z, pitch="60"), "type", "pitch must be an integer"),
        (lambda m, z: m.synthesize(z, pitch=128), "value", "outside the MIDI range"),
        (lambda m, z: m.synthesize(z, velocity=0), "value", "velocity 0 is outside"),
        (lambda m, z: m.synthesize(z, seconds="4"), "type", "seconds must be a number"),
        (lambda m, z: m.synthesize(z, temperature=-1), "value", "temperature must be a number >= 0"),
        (lambda m, z: m.encode(tone(0.5, 16000), sample_rate=0), "value", "sample_rate must be a positive"),
        (lambda m, z: m.encode([0.1, 0.2]), "type", "encode takes an audio file path"),
        (lambda m, z: m.encode(np.array(["a"])), "type", "waveform holds floats"),
        (lambda m, z: z.fit_to_duration(0), "value", "hold_seconds must be a positive number"),
        (lambda m, z: m.synthesize_batch(z, [60]), "type", "takes a list of embeddings"),
    ],
)
def test_bad_arguments_follow_one_rule(model, call, error, words):
    from timbre.errors import InvalidTypeError, TimbreError

    embedding = model.encode(tone(0.5, 16000))
    expected = InvalidTypeError if error == "type" else ConfigError
    with pytest.raises(expected, match=words) as raised:
        call(model, embedding)
    assert isinstance(raised.value, TimbreError)
    assert isinstance(raised.value, TypeError if error == "type" else ValueError)


@pytest.mark.parametrize("device", ["tpu", "cuda:99", "not a device"])
def test_unusable_devices_are_refused(fast_checkpoint, device):
    with pytest.raises(ConfigError, match="device"):
        timbre.load(fast_checkpoint, device=device)


def test_silent_and_too_short_arrays_warn(model):
    from timbre.errors import TimbreWarning

    with pytest.warns(TimbreWarning, match="silent"):
        model.encode(np.zeros(16000, dtype=np.float32))
    with pytest.warns(TimbreWarning, match="shorter than one embedding frame"):
        short = model.encode(tone(0.01, 16000))
    assert short.frames == 1 and torch.isfinite(short.tensor).all()
    with pytest.warns(TimbreWarning, match="cancel out"):
        model.encode(np.stack([tone(0.5, 16000), -tone(0.5, 16000)], axis=1))


@pytest.mark.parametrize("name", [None, 123, ["default"]])
def test_load_refuses_what_is_not_a_name_or_path(name):
    from timbre.errors import InvalidTypeError

    with pytest.raises(InvalidTypeError, match="bundled name"):
        timbre.load(name)
