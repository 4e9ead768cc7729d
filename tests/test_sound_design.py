"""Sweeps, grids and morphs on the bundled default model: pitch kept at every mix, smooth timbre moves."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

import timbre
from timbre.data.timbre_set import TIMBRE_SET_DIR, timbre_file_name
from timbre.evaluation.metrics import spectral_centroid, sweep_smoothness
from timbre.sound_design import interpolation_sweep, morph_note, timbre_grid

FLUTE, CELLO, TRUMPET, ORGAN = (str(TIMBRE_SET_DIR / timbre_file_name(p)) for p in (73, 42, 56, 19))


@pytest.fixture(scope="module")
def model():
    return timbre.load()  # the bundled default: a trained model, not a fixture


def spectrum_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute difference (dB) of two sounds' average magnitude spectra, 47 Hz to 4 kHz.

    Harmonics sit at multiples of the pitch, so a semitone off moves every peak; another timbre
    changes their levels. (The filtered noise of the fast decoder keeps equal sounds ~1 dB apart.)
    """

    def average_spectrum(audio: np.ndarray) -> np.ndarray:
        frames = np.lib.stride_tricks.sliding_window_view(audio, 2048)[::512] * np.hanning(2048)
        return 20 * np.log10(np.abs(np.fft.rfft(frames, axis=-1)).mean(axis=0)[6:512] + 1e-6)

    return float(np.mean(np.abs(average_spectrum(x) - average_spectrum(y))))


@pytest.mark.parametrize("pitch", [48, 67])
def test_sweep_ends_are_the_two_timbres_at_the_asked_pitch(model, pitch):
    # Checking the pitch of every mix would prove nothing: the fast decoder's oscillators play the
    # asked pitch whatever the embedding. What can go wrong is the sweep's own plumbing.
    audio, mixes = interpolation_sweep(model, FLUTE, CELLO, steps=5, pitch=pitch, seconds=2.0)
    assert mixes.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    flute, cello = model.encode(FLUTE), model.encode(CELLO)
    ends = model.synthesize_batch([flute, cello], [pitch] * 2, seconds=[2.0] * 2)
    off_pitch = model.synthesize_batch([flute, cello], [pitch + 1] * 2, seconds=[2.0] * 2)
    for end, own, other in ((audio[0], 0, 1), (audio[-1], 1, 0)):
        distance = spectrum_distance(end, ends[own])
        assert distance < 0.75 * spectrum_distance(end, ends[other]), "a sweep end is not its own timbre"
        assert distance < 0.25 * spectrum_distance(end, off_pitch[own]), "a sweep end is not at the asked pitch"


def test_sweep_moves_the_spectral_centroid_between_the_endpoints(model):
    audio, _ = interpolation_sweep(model, FLUTE, TRUMPET, steps=7, pitch=60, seconds=2.0)
    centroids = spectral_centroid(audio, model.sample_rate)
    smoothness = sweep_smoothness(centroids, relative_tolerance=0.25)
    assert smoothness.within_endpoints, centroids.round()
    assert smoothness.reversals <= 1, centroids.round()


def test_crossfade_is_a_mix_of_the_endpoints(model):
    audio, mixes = interpolation_sweep(model, FLUTE, CELLO, steps=3, pitch=60, seconds=1.0, method="crossfade")
    np.testing.assert_allclose(audio[1], 0.5 * (audio[0] + audio[2]), atol=1e-6)


def test_grid_corners_decode_the_corner_timbres(model):
    grid = timbre_grid(model, [FLUTE, TRUMPET, CELLO, ORGAN], size=3, pitch=60, seconds=1.0)
    corners = model.synthesize_batch(
        [model.encode(s) for s in (FLUTE, TRUMPET, CELLO, ORGAN)], [60] * 4, seconds=[1.0] * 4
    )
    # The filtered-noise part draws other noise in another batch, so compare spectra, not samples.
    grid_corners = np.stack([grid[0, 0], grid[0, 2], grid[2, 0], grid[2, 2]])
    expected = spectral_centroid(corners, model.sample_rate)
    np.testing.assert_allclose(spectral_centroid(grid_corners, model.sample_rate), expected, rtol=0.02)
    assert expected.max() > 1.2 * expected.min()  # the four corners do sound different


def test_morph_starts_like_a_and_ends_like_b(model):
    morphed = morph_note(model, FLUTE, TRUMPET, pitch=60, seconds=3.0, curve="linear")
    ends = model.synthesize_batch([model.encode(FLUTE), model.encode(TRUMPET)], [60, 60], seconds=[3.0, 3.0])
    third = morphed.shape[0] // 3
    start_centroids = spectral_centroid(
        np.stack([morphed[:third], ends[0][:third], ends[1][:third]]), model.sample_rate
    )
    assert abs(start_centroids[0] - start_centroids[1]) < abs(start_centroids[0] - start_centroids[2])
    held = slice(int(1.8 * model.sample_rate), int(2.3 * model.sample_rate))  # late in the hold, before release
    end_centroids = spectral_centroid(np.stack([morphed[held], ends[0][held], ends[1][held]]), model.sample_rate)
    assert abs(end_centroids[0] - end_centroids[2]) < abs(end_centroids[0] - end_centroids[1])


def test_chunked_decoding_matches_one_batch_and_bounds_each_pass(model, monkeypatch):
    from timbre.sound_design import grid_embeddings, synthesize_in_chunks

    embeddings = grid_embeddings(model, [FLUTE, CELLO, TRUMPET, ORGAN], size=2)
    whole = model.synthesize_batch(embeddings, [60] * 4, seconds=[0.5] * 4, seed=3)
    one_chunk = list(synthesize_in_chunks(model, embeddings, pitch=60, seconds=0.5, seed=3))
    np.testing.assert_array_equal(np.stack(one_chunk), whole)  # fits in one chunk: the same notes
    # Another batch may round differently (a pass synthesizes as many partials as its widest note
    # needs, which changes the order of the sums), never by more than float32 rounding.
    same_notes = partial(np.testing.assert_allclose, rtol=0, atol=1e-5)

    passes = []
    original = model.synthesize_batch

    def counting(batch, *args, **kwargs):
        passes.append(len(batch))
        return original(batch, *args, **kwargs)

    monkeypatch.setattr(model, "synthesize_batch", counting)
    chunked = list(synthesize_in_chunks(model, embeddings, pitch=60, seconds=0.5, seed=3, chunk_samples=16000))
    assert passes == [2, 2]  # 8000 samples a note, 16000 a pass
    assert len(chunked) == 4 and all(note.shape == (8000,) for note in chunked)
    same_notes(np.stack(chunked[:2]), whole[:2])  # chunk 0 keeps the seed


def test_staged_directory_gets_every_file_or_none(tmp_path):
    from timbre.io.files import staged_directory

    with pytest.raises(KeyboardInterrupt):
        with staged_directory(tmp_path / "new" / "out") as staging:
            (staging / "a.wav").write_bytes(b"a")
            raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with staged_directory(tmp_path / "out") as staging:
        (staging / "a.wav").write_bytes(b"a")
        assert not (tmp_path / "out" / "a.wav").exists()  # nothing visible before the end
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav", "keep.txt"]
