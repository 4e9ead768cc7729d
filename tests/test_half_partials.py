"""Removing half-integer partials from training notes (timbre.data.half_partials) and its use in
NoteDataset: a real drawbar organ loses its 16' and 5 1/3' stops and keeps the rest."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from timbre.data.half_partials import half_partial_gain, remove_half_integer_partials
from timbre.data.nsynth import NoteDataset, build_note_bundle
from timbre.errors import ConfigError

SAMPLE_RATE = 16000


def partial_levels_db(audio: np.ndarray, fundamental_hz: float, ratios: list[float]) -> np.ndarray:
    """Peak level in dB of each partial ``ratio * fundamental_hz`` (within 3%) over 0.1-1.0 s."""
    held = audio[int(0.1 * SAMPLE_RATE) : SAMPLE_RATE].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(held * np.hanning(len(held))))
    hz = np.fft.rfftfreq(len(held), 1.0 / SAMPLE_RATE)
    levels = []
    for ratio in ratios:
        near = (hz > 0.97 * ratio * fundamental_hz) & (hz < 1.03 * ratio * fundamental_hz)
        levels.append(20 * math.log10(spectrum[near].max() + 1e-12))
    return np.array(levels)


def test_the_gain_notches_half_integer_multiples_only() -> None:
    harmonic_numbers = np.array([0.5, 1.0, 1.5, 2.0, 3.25, 7.5, 8.0, 8.5])
    gain = half_partial_gain(harmonic_numbers * 100.0, 100.0, count=8)
    assert gain[[0, 2, 5]] == pytest.approx(0.0, abs=1e-12)
    assert gain[[1, 3, 6]] == pytest.approx(1.0, abs=1e-6)
    assert 0.9 < gain[4] < 1.0  # between partials: a little of each neighbouring notch's skirt
    assert gain[7] == 1.0  # 8.5 is beyond count=8 (0.5 ... 7.5)
    assert half_partial_gain(np.array([150.0]), 100.0, count=1)[0] == 1.0


def test_a_synthetic_organ_loses_its_octave_below_and_keeps_its_whole_partials() -> None:
    time = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    ratios = [0.5, 1.0, 1.5, 2.0, 3.0, 4.5]
    note = sum(0.1 * np.sin(2 * np.pi * ratio * 220.0 * time) for ratio in ratios).astype(np.float32)
    removed = remove_half_integer_partials(note, SAMPLE_RATE, 220.0)
    assert removed.dtype == np.float32 and removed.shape == note.shape
    change = partial_levels_db(removed, 220.0, ratios) - partial_levels_db(note, 220.0, ratios)
    assert np.all(change[[0, 2, 5]] < -40.0)
    assert np.abs(change[[1, 3, 4]]).max() < 0.1
    only_the_fifth = remove_half_integer_partials(note, SAMPLE_RATE, 220.0, 2, [False, True])
    change = partial_levels_db(only_the_fifth, 220.0, ratios) - partial_levels_db(note, 220.0, ratios)
    assert change[2] < -40.0 and np.abs(change[[0, 1, 3, 4, 5]]).max() < 0.1  # 4.5 is beyond count=2
    with pytest.raises(ConfigError, match="pitch > 0 Hz"):
        remove_half_integer_partials(note, SAMPLE_RATE, 0.0)
    with pytest.raises(ConfigError, match="removed names 1 partials, count is 2"):
        remove_half_integer_partials(note, SAMPLE_RATE, 220.0, 2, [True])


@pytest.fixture(scope="module")
def drawbar_organ(fluidr3_soundfont: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FluidR3's drawbar organ (program 16) and its piano (0) at MIDI 48 and 60."""
    from timbre.data.soundfont import build_dataset

    root = tmp_path_factory.mktemp("drawbar") / "dataset"
    build_dataset(
        fluidr3_soundfont, root, programs=(0, 16), pitches=(48, 60), velocities=(100,), progress=False, workers=1
    )
    return root


def test_training_notes_lose_half_integer_partials_and_validation_notes_never(drawbar_organ: Path) -> None:
    plain = NoteDataset(drawbar_organ, "train", crop_samples=SAMPLE_RATE)
    removing = NoteDataset(drawbar_organ, "train", crop_samples=SAMPLE_RATE, half_partial_removal=1.0)
    organs = [index for index in range(len(plain)) if "organ" in plain.note_str(index)]
    assert organs, "FluidR3's program 16 should be in the training split"
    registrations = set()
    for seed in range(12):
        for index in range(len(plain)):
            torch.manual_seed(1000 * seed + index)
            before = plain[index]["audio"].numpy()  # the same crop: it is drawn first
            float(torch.rand(()))  # then whether to remove
            removed = (torch.rand(8) < 0.5).tolist()  # then which partials
            torch.manual_seed(1000 * seed + index)
            after = removing[index]["audio"].numpy()
            pitch = int(plain.examples[index]["pitch"])
            fundamental = 440.0 * 2.0 ** ((pitch - 69) / 12)
            assert np.array_equal(after, remove_half_integer_partials(before, SAMPLE_RATE, fundamental, 8, removed))
            if index in organs:
                # FluidR3's drawbar sounds the 16' (0.5) and 5 1/3' (1.5) stops; each goes on its own.
                ratios = [0.5, 1.0, 1.5, 2.0]
                change = partial_levels_db(after, fundamental, ratios) - partial_levels_db(before, fundamental, ratios)
                assert np.abs(change[[1, 3]]).max() < 0.5
                for position, k in ((0, 0), (2, 1)):
                    assert (change[position] < -25.0) == removed[k]
                registrations.add((removed[0], removed[1]))
    assert registrations == {(False, False), (False, True), (True, False), (True, True)}

    off = NoteDataset(drawbar_organ, "train", crop_samples=SAMPLE_RATE, half_partial_removal=0.0)
    torch.manual_seed(0)
    first = plain[0]["audio"]
    torch.manual_seed(0)
    assert torch.equal(first, off[0]["audio"])

    bundle = build_note_bundle(drawbar_organ, crop_samples=SAMPLE_RATE, half_partial_removal=1.0)
    assert bundle.train.half_partial_removal == 1.0
    if bundle.valid is not None:
        assert bundle.valid.half_partial_removal == 0.0


def test_bad_half_partial_settings_are_refused(drawbar_organ: Path) -> None:
    with pytest.raises(ConfigError, match="half_partial_removal must be in \\[0, 1\\]"):
        NoteDataset(drawbar_organ, "train", half_partial_removal=1.5)
    with pytest.raises(ConfigError, match="half_partial_count >= 1"):
        NoteDataset(drawbar_organ, "train", half_partial_removal=0.5, half_partial_count=0)
