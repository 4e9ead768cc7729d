"""Tests of timbre.evaluation.metrics on synthetic signals with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from timbre.evaluation.metrics import (
    LOUDNESS_FLOOR_DBFS,
    count_reversals,
    frame_loudness,
    identification_ranks,
    loudness_envelope_error,
    multiscale_spectral_distance,
    pitch_scores,
    spectral_centroid,
    sweep_smoothness,
    timbre_features,
)
from timbre.evaluation.scoring import score_systems

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
    # Only the frame straddling the change (and its neighbour) may be off; judging the quiet tail
    # too would put half of the frames off by 600 cents.
    assert score.correct and score.frames_within > 0.8
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


def test_loudness_envelope_error_of_a_gain_is_the_gain_in_db():
    note = tone(60, harmonics=3) * np.linspace(1.0, 0.01, SAMPLE_RATE, dtype=np.float32)  # a decaying note
    quieter = note * np.float32(10 ** (-6 / 20))
    assert loudness_envelope_error(quieter, note) == pytest.approx([6.0], abs=1e-4)
    assert loudness_envelope_error(note, quieter) == pytest.approx([6.0], abs=1e-4)
    assert loudness_envelope_error(quieter, note, signed=True) == pytest.approx([-6.0], abs=1e-4)
    assert loudness_envelope_error(note, quieter, signed=True) == pytest.approx([6.0], abs=1e-4)
    assert loudness_envelope_error(note, note)[0] == 0.0
    silence = np.zeros(SAMPLE_RATE, np.float32)
    assert loudness_envelope_error(silence, silence)[0] == 0.0


def test_loudness_envelope_error_of_a_silent_estimate_counts_down_to_the_floor():
    # A constant -20 dBFS signal: frames every 256 samples, 1024 long, centred, zero-padded at the
    # edges. The first two and the last two frames hold 1/2, 3/4, 7/8 and 5/8 of real samples.
    reference = np.full(SAMPLE_RATE, 0.1, np.float32)
    fractions = np.ones(1 + SAMPLE_RATE // 256)
    fractions[[0, 1, -2, -1]] = [0.5, 0.75, 0.875, 0.625]
    expected = np.mean(-20.0 + 10 * np.log10(fractions) - LOUDNESS_FLOOR_DBFS)
    error = loudness_envelope_error(np.zeros_like(reference), reference)
    assert error == pytest.approx([expected], abs=1e-4)
    with pytest.raises(ValueError, match="differ in shape"):
        loudness_envelope_error(reference[:100], reference)


def instrument_note(kind: str, midi: int, seconds: float = 1.0) -> np.ndarray:
    """Four synthetic "instruments" with clearly different spectra."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 440.0 * 2.0 ** ((midi - 69) / 12)
    partials = {"sine": [1.0], "odd": [1, 0, 1 / 3, 0, 1 / 5, 0, 1 / 7], "saw": [1 / k for k in range(1, 12)],
                "high": [0.1, 0.1, 0.2, 1.0, 0.8, 0.6]}[kind]  # fmt: skip
    audio = sum(level * np.sin(2 * np.pi * (k + 1) * f0 * t) for k, level in enumerate(partials) if level)
    return (0.3 * audio / np.abs(audio).max()).astype(np.float32)


KINDS = ("sine", "odd", "saw", "high")


@pytest.fixture(scope="module")
def synthetic_instruments():
    """Four instruments at two pitches: ``(audio [8, samples], pitches, instruments)``."""
    notes = [(kind, pitch) for pitch in (57, 64) for kind in KINDS]
    audio = np.stack([instrument_note(kind, pitch) for kind, pitch in notes])
    return audio, [pitch for _, pitch in notes], [kind for kind, _ in notes]


def test_timbre_features_are_mfcc_statistics_of_the_held_part(synthetic_instruments):
    audio, _, _ = synthetic_instruments
    features = timbre_features(audio, SAMPLE_RATE)
    assert features.shape == (8, 38) and np.isfinite(features).all()
    # A steady tone: its MFCCs barely move over the held part, so the deviations are small.
    assert np.abs(features[0, 19:]).max() < 0.05 * np.abs(features[0, :19]).max()
    # Only 0.1-3.0 s counts: a different first 60 ms (outside every frame centred past 0.1 s) changes nothing.
    changed = audio[0].copy()
    changed[:1000] = 0.0
    assert np.allclose(timbre_features(changed, SAMPLE_RATE), features[0])
    # A note shorter than 0.1 s is described by all of it rather than by nothing.
    assert np.isfinite(timbre_features(audio[0, :1000], SAMPLE_RATE)).all()


def test_identification_of_identical_fixed_and_swapped_reconstructions(synthetic_instruments):
    audio, pitches, instruments = synthetic_instruments
    # Each pitch group of four: the fixed system plays the "saw" note of its pitch for every instrument,
    # the swapped one plays the next instrument's note (no note keeps its own instrument).
    fixed = np.stack([audio[4 * (row // 4) + 2] for row in range(8)])
    swapped = np.stack([audio[4 * (row // 4) + (row + 1) % 4] for row in range(8)])
    scores = score_systems(audio, {"identical": audio.copy(), "fixed": fixed, "swapped": swapped}, pitches,
                           instruments, SAMPLE_RATE)  # fmt: skip
    for name in ("original", "identical"):
        summary = scores[name].summary()
        assert summary["identification"]["top1"] == 1.0 and summary["identification"]["mean_rank"] == 1.0
        assert summary["spectral_distance"]["mean"] == 0.0 and summary["loudness_error_db"]["mean"] == 0.0
    fixed_summary = scores["fixed"].summary()["identification"]
    assert fixed_summary["top1"] == fixed_summary["chance_top1"] == 0.25
    assert fixed_summary["chance_top3"] == 0.75 and fixed_summary["notes"] == 8
    swapped_ranks = scores["swapped"].rank
    assert (swapped_ranks > 1).all() and scores["swapped"].summary()["identification"]["top1"] == 0.0
    assert scores["swapped"].pitch is None  # pitch tracking only when asked


def test_identification_ranks_order_instruments_by_their_nearest_note():
    references = np.array([[0.0], [1.0], [3.0], [10.0]])
    estimates = np.array([[2.9], [1.0], [0.2], [9.0]])
    # Pitch 60: instruments a, b, c; pitch 72: only d (one candidate: trivially rank 1).
    ranks, candidates = identification_ranks(estimates, references, [60, 60, 60, 72], ["a", "b", "c", "d"])
    # 2.9 (standardised alike) is nearest c, then b, then a: a ranks 3rd; b is itself; 0.2 is nearest a, then b, c.
    assert ranks.tolist() == [3, 1, 3, 1] and candidates.tolist() == [3, 3, 3, 1]
    with pytest.raises(ValueError):
        identification_ranks(estimates, references, [60], ["a", "b", "c", "d"])
