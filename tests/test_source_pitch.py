"""The pitch encode hears in a note it is not told the pitch of (timbre.models.source_pitch)."""

from __future__ import annotations

import numpy as np
import pytest

from timbre.data.timbre_set import TIMBRE_SET_DIR, timbre_file_name
from timbre.io.audio import load_audio
from timbre.models.source_pitch import heard_midi_pitch

SAMPLE_RATE = 16000


def tone(midi: float, seconds: float, partials: int = 6) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 440.0 * 2.0 ** ((midi - 69) / 12)
    return sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, partials + 1)).astype(np.float32)


@pytest.mark.parametrize("program, midi", [(0, 60), (40, 60), (73, 60)])
def test_the_bundled_notes_are_heard_at_their_pitch(program: int, midi: int) -> None:
    """Piano, violin and flute of the bundled timbre set (FluidR3_GM, MIDI 60)."""
    assert heard_midi_pitch(load_audio(TIMBRE_SET_DIR / timbre_file_name(program), SAMPLE_RATE), SAMPLE_RATE) == midi


def test_the_loud_part_decides_and_short_or_silent_clips_are_handled() -> None:
    note = np.concatenate([tone(57, 1.0), 0.001 * tone(70, 2.0)])  # a quiet other pitch after the note
    assert heard_midi_pitch(note, SAMPLE_RATE) == 57
    assert heard_midi_pitch(tone(72, 0.02), SAMPLE_RATE) == 72  # 320 samples, under one frame
    assert heard_midi_pitch(np.zeros(5000, dtype=np.float32), SAMPLE_RATE) == 60
