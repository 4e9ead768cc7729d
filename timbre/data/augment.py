"""Pitch shifting by resampling, and a training set that shifts notes by small intervals.

:func:`shift_pitch` plays a waveform faster or slower: every frequency (partials and formants
alike) is scaled by ``2 ** (cents / 1200)`` and the duration by the inverse, as a sampler does when
it stretches one recording over neighbouring keys. The rate ratio is rounded to a ratio of small
integers (``RATIO_BASE``: within 0.9 cent of the asked shift) so that torchaudio's windowed-sinc
resampler stays cheap.

:class:`PitchShiftedNotes` uses it for the few-notes fine-tune: a harmonic decoder is told the
pitch, so a note shifted by ``k`` semitones with its label moved by ``k`` is a plausible note of
the same instrument at a neighbouring key. Shifts are whole semitones (the label is a MIDI
number) and small (formants move with the pitch, so large shifts would teach a different timbre).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchaudio.functional

from timbre.data.nsynth import NoteDataset
from timbre.errors import ConfigError
from timbre.io.audio import load_audio

# Resampling from RATIO_BASE to round(RATIO_BASE / factor) Hz: a 2000-step grid of ratios.
RATIO_BASE = 2000


def shift_pitch(audio: np.ndarray, cents: float) -> np.ndarray:
    """Resample ``audio`` so that it sounds ``cents`` higher (negative: lower) when played at its rate.

    Args:
        audio: ``[samples]`` float waveform.
        cents: the shift; the output lasts ``2 ** (-cents / 1200)`` times as long.

    Returns:
        ``[ceil(samples * new / RATIO_BASE)]`` float32 waveform; ``audio`` itself when the shift rounds to none.
    """
    target_rate = round(RATIO_BASE / 2.0 ** (cents / 1200.0))
    if target_rate == RATIO_BASE:
        return audio.astype(np.float32, copy=False)
    waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    return torchaudio.functional.resample(waveform, RATIO_BASE, target_rate).numpy()


class PitchShiftedNotes:
    """Training notes, each drawn shifted by a few semitones (label moved with it) with some probability.

    Args:
        notes: a cropping :class:`NoteDataset` (``crop_samples`` set); its whole notes are read,
            shifted, then cropped by its own rule (:meth:`NoteDataset.crop_start`).
        semitones: largest shift; shifts are drawn uniformly from ``±1 ... ±semitones``.
        probability: chance that an item is shifted at all.
        pitch_range: shifted labels stay within these MIDI pitches (both inclusive); a shift
            that would leave it is not drawn.
        indices: the notes of ``notes`` to use, in order (None: all); item ``i`` is note ``indices[i]``.

    Random draws use torch's global RNG, which the trainer seeds per step: resumed runs replay them.
    Items are those of ``notes`` (``audio [crop_samples]``, ``pitch``, ...).
    """

    def __init__(
        self,
        notes: NoteDataset,
        semitones: int,
        probability: float,
        pitch_range: tuple[int, int] = (0, 127),
        indices: Sequence[int] | None = None,
    ) -> None:
        if notes.crop_samples is None:
            raise ConfigError("pitch-shift augmentation needs cropped training notes (data.crop_samples)")
        if semitones < 0 or not 0.0 <= probability <= 1.0:
            raise ConfigError(
                f"pitch shifts need semitones >= 0 and a probability in [0, 1], got {semitones} and {probability}"
            )
        self.notes, self.semitones, self.probability = notes, int(semitones), float(probability)
        self.pitch_range = pitch_range
        self.indices = list(range(len(notes)) if indices is None else indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        index = self.indices[position]
        item = self.notes[index]
        if not self.semitones or float(torch.rand(())) >= self.probability:
            return item
        pitch = int(item["pitch"])
        low, high = self.pitch_range
        choices = [k for k in range(-self.semitones, self.semitones + 1) if k and low <= pitch + k <= high]
        if not choices:
            return item
        shift = choices[int(torch.randint(len(choices), ()))]
        audio = shift_pitch(load_audio(self.notes.audio_path(index), self.notes.sample_rate), 100.0 * shift)
        crop_samples = self.notes.crop_samples
        assert crop_samples is not None  # checked in __init__
        start = self.notes.crop_start(index, audio)
        crop = audio[start : start + crop_samples]
        crop = np.pad(crop, (0, crop_samples - crop.shape[0]))
        return {**item, "audio": torch.from_numpy(np.ascontiguousarray(crop)), "pitch": torch.tensor(pitch + shift)}
