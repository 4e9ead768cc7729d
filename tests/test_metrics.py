"""Tests of timbre.evaluation.metrics on synthetic signals with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from timbre.evaluation.metrics import (
    count_reversals,
    frame_loudness,
    multiscale_spectral_distance,
    pitch_scores,
    spectral_centroid,
    sweep_smoothness,
)

SAMPLE_RATE = 16000


def tone(midi: float, seconds: float = 1.0, amplitude: float = 0.5, harmonics: int = 1) -> np.ndarray:
    """A steady tone at fractional MIDI pitch ``midi`` with ``harmonics`` partials of falling level."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 440.0 * 2.0 ** ((midi - 69) / 12)
    audio = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, harmonics + 1))
    return (amplitude * audio / np.abs(audio).max()).astype(np.float32)


def test_spectral_distance_is_zero_for_identical_notes_and_grows_with_difference():
    notes = np.stack([tone(60), tone(60, harmonics=4), np.zeros(SAMPLE_RATE, np.float32)])
    assert np.array_equal(multiscale_spectral_distance(notes, notes), np.zeros(3))
    near = multiscale_spectral_distance(tone(60, amplitude=0.45), tone(60))
    far = multiscale_spectral_distance(tone(67), tone(60))
    assert near.shape == (1,) and 0 < near[0] < far[0]


def test_spectral_distance_rejects_notes_of_different_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        multiscale_spectral_distance(tone(60), tone(60, seconds=0.5))


def test_pitch_of_a_tone_at_its_midi_pitch_is_correct_and_a_semitone_off_is_not():
    notes = np.stack([tone(69), tone(61, harmonics=5), tone(70), tone(60.3)])
    exact, harmonic, semitone_sharp, detuned = pitch_scores(notes, [69, 61, 69, 60], SAMPLE_RATE)
    for score in (exact, harmonic):
        assert score.correct and abs(score.cents) < 10
        assert score.sounding_fraction == 1.0 and score.frames_within > 0.9
    assert not semitone_sharp.correct and semitone_sharp.cents == pytest.approx(100, abs=10)
    assert semitone_sharp.frames_within < 0.1
    assert detuned.correct and detuned.cents == pytest.approx(30, abs=10)


def test_a_silent_note_has_no_pitch():
    (score,) = pitch_scores(np.zeros((1, SAMPLE_RATE), np.float32), [60], SAMPLE_RATE)
    assert not score.correct and math.isnan(score.cents) and score.sounding_fraction == 0.0


def test_only_frames_near_the_notes_peak_level_are_judged():
    # A loud half second at the right pitch, then a wrong pitch 50 dB lower: the tail is not sounding.
    note = np.concatenate([tone(60, 0.5), tone(66, 0.5, amplitude=0.5 * 10 ** (-50 / 20))])
    (score,) = pitch_scores(note[None], [60], SAMPLE_RATE)
    assert score.correct and score.frames_within > 0.9
    assert 0.4 < score.sounding_fraction < 0.6


def test_frame_loudness_of_a_full_scale_sine_is_minus_3_dbfs():
    loudness = frame_loudness(tone(69, amplitude=1.0)[None], 320)
    assert loudness.shape == (1, 1 + SAMPLE_RATE // 320)
    assert np.allclose(loudness[0, 2:-2], -3.01, atol=0.1)
    assert frame_loudness(np.zeros((1, 1000), np.float32), 320)[0, 0] == -np.inf


def test_spectral_centroid_of_a_sine_is_its_frequency_and_harmonics_raise_it():
    centroids = spectral_centroid(np.stack([tone(69), tone(81), tone(69, harmonics=6)]), SAMPLE_RATE)
    assert centroids[0] == pytest.approx(440, rel=0.01)
    assert centroids[1] == pytest.approx(880, rel=0.01)
    assert centroids[2] > 1.5 * centroids[0]
    assert np.isnan(spectral_centroid(np.zeros(4000, np.float32), SAMPLE_RATE)[0])


@pytest.mark.parametrize(
    "values, tolerance, expected",
    [
        ([0, 1, 2, 3], 0.0, 0),
        ([3, 2, 1, 0], 0.0, 0),
        ([0, 2, 1, 3], 0.5, 2),
        ([0, 2, 1, 3], 1.0, 0),  # the dip of 1 is within tolerance
        ([0, 0.1, -0.1, 0.1, 1], 0.3, 0),  # wiggles before the first real move
        ([0, 1, 0, 1, 0], 0.5, 3),
        ([5], 0.0, 0),
    ],
)
def test_count_reversals(values, tolerance, expected):
    assert count_reversals(values, tolerance) == expected


def test_sweep_smoothness_of_an_even_monotone_sweep():
    smoothness = sweep_smoothness([100, 150, 200, 250, 300])
    assert smoothness.reversals == 0 and smoothness.within_endpoints
    assert smoothness.endpoint_difference == 200
    assert smoothness.max_jump_ratio == pytest.approx(0.25)


def test_sweep_smoothness_of_an_overshooting_jumpy_sweep():
    smoothness = sweep_smoothness([100, 100, 400, 300])
    assert smoothness.reversals == 1 and not smoothness.within_endpoints
    assert smoothness.max_jump_ratio == pytest.approx(1.5)
    assert math.isnan(sweep_smoothness([100, 120, 100]).max_jump_ratio)
    with pytest.raises(ValueError):
        sweep_smoothness([100, float("nan")])
