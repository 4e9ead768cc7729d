"""Property tests: whatever bytes or shapes a user passes, timbre either works or raises its own error.

Random files (bytes, truncated or prefixed with real headers) and random arrays (any shape, dtype,
value) go to encode, decode (Embedding.load + synthesize), render and load_score. The only
exceptions allowed are TimbreError subclasses; results, when there are any, are finite audio.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import symusic
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import timbre
from timbre.embedding import Embedding
from timbre.errors import AudioError, TimbreError
from timbre.io.midi import load_score
from timbre.render import render_midi

# Real headers, so that random bodies also reach the parsers behind the format checks.
HEADERS = [
    b"",
    b"RIFF\x24\x00\x00\x00WAVEfmt ",
    b"fLaC",
    b"OggS",
    b"\x93NUMPY\x01\x00",
    b"MThd\x00\x00\x00\x06\x00\x01",
]
PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

random_files = st.tuples(st.sampled_from(HEADERS), st.binary(max_size=512)).map(lambda parts: parts[0] + parts[1])
dtypes = st.sampled_from([np.float32, np.float64, np.int16, np.int32, np.uint8, np.bool_, np.complex64])
arrays = hnp.arrays(
    dtypes,
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=700),
    elements=None,
)


@pytest.fixture(scope="module")
def model() -> timbre.TimbreModel:
    return timbre.load()


@PROPERTY
@given(data=random_files, suffix=st.sampled_from([".wav", ".flac", ".ogg", ".npy", ""]))
def test_encode_random_files(model, tmp_path, data, suffix):
    path = tmp_path / f"input{suffix}"
    path.write_bytes(data)
    try:
        embedding = model.encode(path)
    except TimbreError:
        return
    assert torch.isfinite(embedding.tensor).all()


@PROPERTY
@given(array=arrays, sample_rate=st.one_of(st.none(), st.integers(-10, 96000)))
def test_encode_random_arrays(model, array, sample_rate):
    try:
        embedding = model.encode(array, sample_rate=sample_rate)
    except TimbreError:
        return
    assert embedding.dim == model.autoencoder.latent_dim and torch.isfinite(embedding.tensor).all()


@pytest.mark.parametrize("shape", [(0,), (100, 0), (0, 2), (0, 0), (), (2, 3, 100)])
def test_encode_refuses_arrays_without_a_waveform(model, shape):
    with pytest.raises(AudioError, match=r"expected a waveform \[samples\] or \[samples, channels\]"):
        model.encode(np.zeros(shape, dtype=np.float32))


@PROPERTY
@given(data=random_files)
def test_load_random_embedding_files(tmp_path, data):
    path = tmp_path / "z.npy"
    path.write_bytes(data)
    try:
        Embedding.load(path)
    except TimbreError:
        pass


@PROPERTY
@given(
    tensor=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=40), elements=st.floats(width=32)),
    pitch=st.one_of(st.integers(-5, 140), st.floats(), st.text(max_size=3), st.none()),
    seconds=st.one_of(st.none(), st.floats(-1, 3), st.just(math.nan), st.just(math.inf)),
    temperature=st.one_of(st.floats(-2, 3), st.just(math.nan)),
)
def test_decode_random_embeddings(model, tensor, pitch, seconds, temperature):
    assume(seconds is None or not (math.isfinite(seconds) and seconds >= 2.5))  # long notes: slow, not new
    try:
        audio = model.synthesize(torch.from_numpy(tensor), pitch=pitch, seconds=seconds, temperature=temperature)
    except TimbreError:
        return
    assert audio.ndim == 1 and np.isfinite(audio).all()
    if seconds is not None:
        assert audio.shape[0] == round(seconds * model.sample_rate)


@PROPERTY
@given(data=random_files)
def test_load_score_random_files(tmp_path, data):
    path = tmp_path / "song.mid"
    path.write_bytes(data)
    try:
        load_score(path)
    except TimbreError:
        pass


@PROPERTY
@given(data=random_files)
def test_render_random_files(model, tmp_path, data):
    path = tmp_path / "song.mid"
    path.write_bytes(data)
    try:
        render_midi(path, model)
    except TimbreError:
        pass


notes = st.lists(
    st.tuples(st.integers(0, 127), st.integers(0, 2000), st.integers(0, 1000), st.integers(0, 127)), max_size=4
)


@PROPERTY
@given(notes=notes, program=st.integers(0, 127), drum=st.booleans())
def test_render_random_scores(model, tmp_path, notes, program, drum):
    score = symusic.Score(480)
    track = symusic.Track(program=program, is_drum=drum)
    for pitch, start, duration, velocity in notes:
        track.notes.append(symusic.Note(start, duration, pitch, velocity))
    score.tracks.append(track)
    path = tmp_path / "song.mid"
    score.dump_midi(path)
    try:
        result = render_midi(path, model, batch_size=4)
    except TimbreError:
        return
    assert np.isfinite(result.audio).all() and np.abs(result.audio).max() <= 1.0 + 1e-6
    assert not math.isnan(result.gain)
