"""Sweeps, grids and morphs on the bundled default model: pitch kept at every mix, smooth timbre moves."""

from __future__ import annotations

import numpy as np
import pytest

import timbre
from timbre.data.timbre_set import TIMBRE_SET_DIR, timbre_file_name
from timbre.evaluation.metrics import pitch_scores, spectral_centroid, sweep_smoothness
from timbre.sound_design import interpolation_sweep, morph_note, timbre_grid

FLUTE, CELLO, TRUMPET, ORGAN = (str(TIMBRE_SET_DIR / timbre_file_name(p)) for p in (73, 42, 56, 19))


@pytest.fixture(scope="module")
def model():
    return timbre.load()  # the bundled default: a trained model, not a fixture


@pytest.mark.parametrize("pitch", [48, 67])
def test_sweep_keeps_the_pitch_at_every_mix(model, pitch):
    audio, mixes = interpolation_sweep(model, FLUTE, CELLO, steps=5, pitch=pitch, seconds=2.0)
    scores = pitch_scores(audio, [pitch] * len(mixes), model.sample_rate)
    assert all(score.correct for score in scores), [round(score.cents) for score in scores]


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
    corners = model.synthesize_batch([model.encode(s) for s in (FLUTE, TRUMPET, CELLO, ORGAN)], [60] * 4, seconds=[1.0] * 4)
    # The filtered-noise part draws other noise in another batch, so compare spectra, not samples.
    grid_corners = np.stack([grid[0, 0], grid[0, 2], grid[2, 0], grid[2, 2]])
    expected = spectral_centroid(corners, model.sample_rate)
    np.testing.assert_allclose(spectral_centroid(grid_corners, model.sample_rate), expected, rtol=0.02)
    assert expected.max() > 1.2 * expected.min()  # the four corners do sound different


def test_morph_starts_like_a_and_ends_like_b(model):
    morphed = morph_note(model, FLUTE, TRUMPET, pitch=60, seconds=3.0, curve="linear")
    ends = model.synthesize_batch([model.encode(FLUTE), model.encode(TRUMPET)], [60, 60], seconds=[3.0, 3.0])
    third = morphed.shape[0] // 3
    start_centroids = spectral_centroid(np.stack([morphed[:third], ends[0][:third], ends[1][:third]]), model.sample_rate)
    assert abs(start_centroids[0] - start_centroids[1]) < abs(start_centroids[0] - start_centroids[2])
    held = slice(int(1.8 * model.sample_rate), int(2.3 * model.sample_rate))  # late in the hold, before release
    end_centroids = spectral_centroid(np.stack([morphed[held], ends[0][held], ends[1][held]]), model.sample_rate)
    assert abs(end_centroids[0] - end_centroids[2]) < abs(end_centroids[0] - end_centroids[1])
