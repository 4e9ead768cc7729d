"""The bundled autoencoders load by name and decode: the default, ``timbre.load("wavenet")``, ``"wavenet-v1"``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import timbre
from timbre.data.timbre_set import TIMBRE_SET_DIR, timbre_file_name
from timbre.errors import CheckpointError

FLUTE = TIMBRE_SET_DIR / timbre_file_name(73)
SHORT_NOTE_SECONDS = 0.25
WAVENET_TEMPERATURE = 0.3
WAVENET_CLOCK_GAIN = 3.0
WAVENET_MAKEUP_DB = 12.6


@pytest.fixture(scope="module")
def wavenet_v1() -> timbre.TimbreModel:
    return timbre.load("wavenet-v1")


def test_wavenet_v1_is_the_first_bundled_autoregressive_model(wavenet_v1: timbre.TimbreModel) -> None:
    assert wavenet_v1.name == "wavenet-v1"
    assert wavenet_v1.is_autoregressive and wavenet_v1.decoder_kind == "wavenet"
    assert wavenet_v1.sample_rate == 16000
    assert wavenet_v1.info["step"] == 1800  # the training its model card documents


def test_wavenet_v1_decodes_a_short_note(wavenet_v1: timbre.TimbreModel) -> None:
    embedding = wavenet_v1.encode(FLUTE)
    assert embedding.tensor.shape[1] == 16 and embedding.tensor.isfinite().all()
    audio = wavenet_v1.synthesize(embedding, pitch=60, seconds=SHORT_NOTE_SECONDS, seed=0)
    assert audio.dtype == np.float32 and audio.shape == (round(SHORT_NOTE_SECONDS * 16000),)
    assert np.isfinite(audio).all() and 0.01 < np.abs(audio).max() <= 1.0
    assert np.std(audio) > 1e-3  # a sound, not a constant
    # Sampling is seeded, and the note's pitch conditions the decoder.
    assert np.array_equal(audio, wavenet_v1.synthesize(embedding, pitch=60, seconds=SHORT_NOTE_SECONDS, seed=0))
    assert not np.array_equal(audio, wavenet_v1.synthesize(embedding, pitch=60, seconds=SHORT_NOTE_SECONDS, seed=1))
    higher = wavenet_v1.synthesize(embedding, pitch=72, seconds=SHORT_NOTE_SECONDS, seed=0)
    assert not np.allclose(audio, higher, atol=1e-3)


def test_the_wavenet_decodes_fast_v3s_embeddings_at_their_pitch() -> None:
    """``timbre.load("wavenet")``: the pitch-clock WaveNet on fast-v3's encoder, at its own temperature."""
    from timbre.evaluation.metrics import pitch_scores

    wavenet, fast_v3 = timbre.load("wavenet"), timbre.load("fast-v3")
    assert wavenet.info["path"] == timbre.load("wavenet-v2").info["path"] == timbre.load("wavenet-small").info["path"]
    assert wavenet.is_autoregressive
    assert wavenet.autoencoder.decoder.source_harmonics == 8
    embedding = fast_v3.encode(FLUTE)  # one embedding, two decoders
    assert np.array_equal(wavenet.encode(FLUTE).tensor.numpy(), embedding.tensor.numpy())
    # Its model card's decoding settings.
    assert wavenet.default_temperature == WAVENET_TEMPERATURE and wavenet.default_clock_gain == WAVENET_CLOCK_GAIN
    assert wavenet.makeup_db == WAVENET_MAKEUP_DB
    # At them, notes across two octaves come back at their pitch.
    pitches = [48, 60, 72]
    notes = [wavenet.synthesize(embedding, pitch=pitch, seconds=0.5, seed=0) for pitch in pitches]
    for audio in notes:
        assert np.isfinite(audio).all() and 0.01 < np.abs(audio).max() <= 1.0
    scores = pitch_scores(np.stack(notes), pitches, 16000)
    assert all(score.correct for score in scores), [score.cents for score in scores]


def test_default_model_loads_and_decodes_a_short_note() -> None:
    model = timbre.load()
    assert not model.is_autoregressive and model.decoder_kind == "fast"
    # Version 7: version 3's architecture (the 64-dim embedding, whose bottleneck reads the log-mel
    # bands too) with partials on the octave below, trained with the mel-level loss.
    assert model.autoencoder.latent_dim == 64 and model.autoencoder.encoder.bottleneck_inputs == "mel"
    # fast-v7's weights, refining each encoding by 30 steps unless told otherwise.
    assert model.info["path"] == timbre.load("fast-v7-refined").info["path"] and model.default_refine == 30
    one_pass = timbre.load("fast-v7")
    assert one_pass.default_refine == 0 and not one_pass.known_embeddings
    weights = one_pass.autoencoder.state_dict()
    assert all(torch.equal(tensor, weights[name]) for name, tensor in model.autoencoder.state_dict().items())
    assert model.autoencoder.decoder.mel_loss_weight > 0 and model.reads_source_pitch
    audio = model.synthesize(model.encode(FLUTE), pitch=67, seconds=SHORT_NOTE_SECONDS, seed=0)
    assert audio.shape == (round(SHORT_NOTE_SECONDS * 16000),)
    assert np.isfinite(audio).all() and 0.01 < np.abs(audio).max() <= 1.0


@pytest.mark.parametrize("name", ["fast-v2", "fast-v4", "default"])
def test_fast_v2_and_the_default_play_the_asked_pitch_with_their_expressive_parts_on(name: str) -> None:
    """Versions 2, 4 and the default (5) of the parallel model: bend, inharmonicity and room enabled;
    notes come back at their pitch, the default's octave below (read at the pitch the flute was
    encoded at, which it estimates) included: from the embedding alone it played this flute an
    octave low at 79."""
    from timbre.evaluation.metrics import pitch_scores

    model = timbre.load(name)
    decoder = model.autoencoder.decoder
    assert decoder.pitch_deviation_cents > 0 and decoder.max_inharmonicity > 0 and decoder.reverb_taps > 0
    embedding = model.encode(FLUTE)
    notes = [model.synthesize(embedding, pitch=pitch, seconds=1.0, seed=0) for pitch in (55, 67, 79)]
    for audio in notes:
        assert audio.shape == (16000,) and np.isfinite(audio).all() and 0.01 < np.abs(audio).max() <= 1.0
    scores = pitch_scores(np.stack(notes), [55, 67, 79], 16000)  # PESTO, median of the sounding frames
    assert all(score.correct for score in scores), [score.cents for score in scores]


def test_a_model_with_an_octave_below_estimates_the_pitch_a_note_is_encoded_at(tmp_path) -> None:
    """fast-v5 (half-integer partials) records the pitch PESTO hears when none is given, keeps it
    through save and load, and records none when the pitch is given; fast-v4 never estimates."""
    model = timbre.load("fast-v5")
    assert model.reads_source_pitch and not timbre.load("fast-v4").reads_source_pitch
    embedding = model.encode(FLUTE)
    assert embedding.pitch is None and embedding.extra == {"estimated_pitch": 60}  # the timbre set's notes: C4
    assert timbre.Embedding.load(embedding.save(tmp_path / "flute.npy")).extra == {"estimated_pitch": 60}
    assert model.encode(FLUTE, pitch=60).extra == {}
    assert timbre.load("fast-v4").encode(FLUTE).extra == {}
    # A clip shorter than the tracker's window is heard with silence after it.
    clip = 0.5 * np.sin(2 * np.pi * 261.63 * np.arange(300) / 16000).astype(np.float32)
    assert abs(model.encode(clip).extra["estimated_pitch"] - 60) <= 1


def test_unknown_bundled_name_is_a_clear_error() -> None:
    with pytest.raises(CheckpointError, match="wavenet-large: no such file, and not a bundled model .*wavenet-small"):
        timbre.load("wavenet-large")
