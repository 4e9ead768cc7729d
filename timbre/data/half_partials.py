"""Removing a note's half-integer partials: training notes with and without an octave below.

The decoder plays partials at half-integer multiples of the pitch (an organ's 16' and 5 1/3'
stops sound 0.5 and 1.5 times the written pitch). The training soundfonts' organs all sound them,
so a model learns "organ, therefore a strong 1.5 partial" and plays it on organs that have none
(TimGM6mb's electronic organ: its 1.5 partial 45 dB under partial 1, played at -2 dB). Removing
those partials from some training notes, input and target alike, gives every instrument both
registrations, so the embedding has to carry which one it hears. Removing all of them together
is not enough: the training organs then have either both stops or neither, and a model trained so
(a first version 7) still plays the 5 1/3' stop on an organ that has the 16' alone. Training notes
lose a random subset (:class:`timbre.data.nsynth.NoteDataset`: each partial with probability 1/2).

:func:`remove_half_integer_partials` notches chosen partials at (k + 1/2) times the fundamental at
zero phase; everything between the notches (the whole partials, the noise) passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from timbre.errors import ConfigError

# Notch width (standard deviation of a Gaussian dip) as a fraction of the fundamental: a partial
# with 20 cents of vibrato at 1.5 times the pitch stays within 0.02 f0 of its notch's centre (at
# least 30 dB down); the whole partials, 6 widths away, keep their level (to 1e-7 dB).
NOTCH_WIDTH = 0.08


def half_partial_gain(
    frequencies_hz: np.ndarray, fundamental_hz: float, count: int, removed: Sequence[bool] | None = None
) -> np.ndarray:
    """Gain ``[len(frequencies_hz)]`` in [0, 1]: 0 at (k + 1/2) * fundamental for k < ``count``.

    Gaussian notches of width :data:`NOTCH_WIDTH` * fundamental, multiplied; 1 elsewhere.
    ``removed`` (``[count]``) picks which of them are notched (default: all).
    """
    harmonic_number = frequencies_hz / fundamental_hz
    gain = np.ones_like(frequencies_hz, dtype=np.float64)
    for k in range(count):
        if removed is not None and not removed[k]:
            continue
        distance = harmonic_number - (k + 0.5)
        gain *= 1.0 - np.exp(-0.5 * (distance / NOTCH_WIDTH) ** 2)
    return gain


def remove_half_integer_partials(
    audio: np.ndarray, sample_rate: int, fundamental_hz: float, count: int = 8, removed: Sequence[bool] | None = None
) -> np.ndarray:
    """``audio`` with its partials at 0.5, 1.5, ... (``count`` of them) times ``fundamental_hz`` removed.

    Zero phase (a gain on the spectrum of the note padded to twice its length, so the filter's
    ringing falls in the padding). The level is not restored: a removed octave below is a quieter
    note, as a stop pushed in is.

    Args:
        audio: ``[samples]`` float waveform.
        sample_rate: its rate.
        fundamental_hz: the note's pitch.
        count: how many half-integer partials, from 0.5 up (the decoder's ``n_subharmonics``).
        removed: ``[count]`` which of them go (default: all); the others pass untouched.

    Returns:
        ``[samples]`` float32 waveform.
    """
    if removed is not None and len(removed) != count:
        raise ConfigError(f"removed names {len(removed)} partials, count is {count}")
    if fundamental_hz <= 0 or count < 1:
        raise ConfigError(
            f"removing half-integer partials needs a pitch > 0 Hz and count >= 1, got {fundamental_hz} and {count}"
        )
    n_samples = audio.shape[0]
    n_fft = 2 * n_samples
    spectrum = np.fft.rfft(audio.astype(np.float64), n=n_fft)
    gain = half_partial_gain(np.fft.rfftfreq(n_fft, 1.0 / sample_rate), fundamental_hz, count, removed)
    return np.fft.irfft(spectrum * gain, n=n_fft)[:n_samples].astype(np.float32)
