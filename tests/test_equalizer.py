"""The random equaliser of training notes (timbre.data.equalizer) and its use in NoteDataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from timbre.data.equalizer import equalizer_curve_db, random_equalizer
from timbre.data.nsynth import NoteDataset, build_note_bundle
from timbre.errors import ConfigError

SAMPLE_RATE = 16000
PARTIALS_HZ = (110.0, 440.0, 1760.0, 7040.0)


def test_the_curve_is_a_sum_of_bells_over_log_frequency() -> None:
    frequencies = np.array([250.0, 500.0, 1000.0, 2000.0, 4000.0, 5.0])
    curve = equalizer_curve_db(frequencies, np.array([6.0]), np.array([1000.0]), np.array([1.0]))
    peak_at_one_octave = 6.0 * np.exp(-0.5)
    assert curve[:5] == pytest.approx(
        [6.0 * np.exp(-2.0), peak_at_one_octave, 6.0, peak_at_one_octave, 6.0 * np.exp(-2.0)]
    )
    assert curve[5] == pytest.approx(6.0 * np.exp(-0.5 * np.log2(1000 / 20) ** 2))  # held below 20 Hz
    two = equalizer_curve_db(frequencies, np.array([6.0, -3.0]), np.array([1000.0, 250.0]), np.array([1.0, 0.5]))
    alone = equalizer_curve_db(frequencies, np.array([-3.0]), np.array([250.0]), np.array([0.5]))
    assert two == pytest.approx(curve + alone)


def partial_amplitudes(audio: np.ndarray) -> np.ndarray:
    """Amplitudes of :data:`PARTIALS_HZ` in one second of audio (1 Hz bins)."""
    spectrum = np.abs(np.fft.rfft(audio[:SAMPLE_RATE] * np.hanning(SAMPLE_RATE)))
    return np.array([spectrum[int(hz)] for hz in PARTIALS_HZ])


def test_equalising_recolours_a_note_at_its_own_level_and_replays_under_a_seed() -> None:
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    note = sum(0.1 * np.sin(2 * np.pi * hz * t) for hz in PARTIALS_HZ).astype(np.float32)
    torch.manual_seed(4)
    first = random_equalizer(note, SAMPLE_RATE, max_db=6.0)
    torch.manual_seed(4)
    assert np.array_equal(first, random_equalizer(note, SAMPLE_RATE, max_db=6.0))
    assert first.dtype == np.float32 and first.shape == note.shape
    assert np.sqrt(np.mean(first**2)) == pytest.approx(np.sqrt(np.mean(note**2)), rel=1e-5)

    changes_db = []
    for seed in range(20):
        torch.manual_seed(seed)
        gains = 20 * np.log10(
            partial_amplitudes(random_equalizer(note, SAMPLE_RATE, max_db=6.0)) / partial_amplitudes(note)
        )
        changes_db.append(gains - gains.mean())  # the level is restored: only the profile counts
    changes_db = np.array(changes_db)
    # Three bells of at most 6 dB: no partial moves 36 dB against another, yet the profile moves.
    assert np.abs(changes_db).max() < 18.0
    assert np.abs(changes_db).mean() > 0.5
    assert np.allclose(random_equalizer(note, SAMPLE_RATE, max_db=0.0), note, atol=1e-5)


def test_training_notes_are_equalised_and_validation_notes_never(fluidr3_dataset) -> None:
    plain = NoteDataset(fluidr3_dataset, "train", crop_samples=8192)
    equalised = NoteDataset(fluidr3_dataset, "train", crop_samples=8192, equalizer_db=6.0, equalizer_probability=1.0)
    for index in range(len(plain)):
        torch.manual_seed(index)
        before = plain[index]["audio"].numpy()
        torch.manual_seed(index)  # the same crop: it is drawn before the equaliser
        after = equalised[index]["audio"].numpy()
        assert not np.allclose(before, after, atol=1e-4)
        assert np.sqrt(np.mean(after**2)) == pytest.approx(np.sqrt(np.mean(before**2)), rel=1e-4)

    never = NoteDataset(fluidr3_dataset, "train", crop_samples=8192, equalizer_db=6.0, equalizer_probability=0.0)
    torch.manual_seed(0)
    first = plain[0]["audio"]
    torch.manual_seed(0)
    assert torch.equal(first, never[0]["audio"])

    bundle = build_note_bundle(fluidr3_dataset, crop_samples=8192, equalizer_db=6.0, equalizer_probability=1.0)
    assert bundle.train.equalizer_db == 6.0
    assert bundle.valid is not None and bundle.valid.equalizer_db == 0.0  # deterministic crops: never equalised
    reference = NoteDataset(fluidr3_dataset, "valid", crop_samples=8192, deterministic_crops=True)
    assert torch.equal(bundle.valid[0]["audio"], reference[0]["audio"])


def test_bad_equalizer_settings_are_refused(fluidr3_dataset) -> None:
    with pytest.raises(ConfigError, match="equalizer_db must be >= 0"):
        NoteDataset(fluidr3_dataset, "train", equalizer_db=-1.0)
    with pytest.raises(ConfigError, match="equalizer_probability in \\[0, 1\\]"):
        NoteDataset(fluidr3_dataset, "train", equalizer_db=6.0, equalizer_probability=1.5)
