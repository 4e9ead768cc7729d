"""Does a render play the score's notes when they are due? Onset F-measure against the MIDI.

Onsets are detected in the audio with librosa's spectral-flux onset detector (log-mel flux) and
matched one to one with the score's note onsets within +-50 ms (``mir_eval.onset``, the MIREX
convention). The score's onsets are those the renderer plays (pitched tracks in the window; drums
optional); onsets closer than 30 ms are merged, because a detector hears a chord, or a strum, as
one event.

Detector settings, chosen on FluidSynth renders (the reference the timbre renders are compared
with) of 30 s (30-60 s) of the four real-world songs in ``../shared/midi`` and of a monophonic
six-note line played by piano, violin and flute: a 10 ms hop (librosa's default 512 samples gave
F 0.4-0.7, its frames too coarse for +-50 ms), flux against the frame two hops back (``lag=2``:
vibrato and bow noise make fewer false onsets than with lag 1), a peak threshold of 0.03.
F-measure: songs 0.89-0.98, piano and violin lines 1.0, flute line 0.57 (soft, breathy onsets with
vibrato remain hard for any spectral-flux detector). Measured with ``ONSET_*`` as below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import librosa
import mir_eval
import numpy as np

from timbre.io.audio import SAMPLE_RATE
from timbre.render.notes import MidiSource, TrackNotes, read_tracks

ONSET_HOP_SECONDS = 0.01
ONSET_LAG = 2
ONSET_DELTA = 0.03
MERGE_SECONDS = 0.03
WINDOW_SECONDS = 0.05


@dataclass(frozen=True)
class OnsetScore:
    """Onset precision, recall and F-measure, and the number of onsets on each side."""

    precision: float
    recall: float
    f_measure: float
    reference: int
    estimated: int


def reference_onsets(tracks: Sequence[TrackNotes], include_drums: bool = False) -> np.ndarray:
    """Sorted note onsets (seconds) of ``tracks``; onsets within 30 ms of the previous kept one merged."""
    onsets = np.sort([note.onset for track in tracks if include_drums or not track.is_drum for note in track.notes])
    kept: list[float] = []
    for onset in onsets:
        if not kept or onset - kept[-1] > MERGE_SECONDS:
            kept.append(float(onset))
    return np.asarray(kept)


def detect_onsets(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Onset times (seconds) heard in ``audio [samples]``."""
    hop = round(ONSET_HOP_SECONDS * sample_rate)
    audio = np.asarray(audio, dtype=np.float32)
    envelope = librosa.onset.onset_strength(y=audio, sr=sample_rate, hop_length=hop, lag=ONSET_LAG)
    return librosa.onset.onset_detect(
        onset_envelope=envelope, sr=sample_rate, hop_length=hop, units="time", delta=ONSET_DELTA
    )


def onset_f_measure(
    audio: np.ndarray,
    midi: MidiSource,
    *,
    sample_rate: int = SAMPLE_RATE,
    start: float = 0.0,
    end: float | None = None,
    include_drums: bool = False,
    window: float = WINDOW_SECONDS,
) -> OnsetScore:
    """Onset F-measure of a render of ``midi`` (the window ``start``-``end`` it was rendered with).

    Args:
        audio: ``[samples]`` the render; time 0 is ``start`` in the MIDI file.
        midi: the MIDI file or score that was rendered.
        sample_rate: rate of ``audio``.
        start, end: the rendered window in seconds.
        include_drums: count drum onsets too (for a render that plays them).
        window: matching tolerance in seconds.
    """
    reference = reference_onsets(read_tracks(midi, start, end), include_drums)
    estimated = detect_onsets(audio, sample_rate)
    f_measure, precision, recall = mir_eval.onset.f_measure(reference, estimated, window=window)
    return OnsetScore(float(precision), float(recall), float(f_measure), len(reference), len(estimated))
