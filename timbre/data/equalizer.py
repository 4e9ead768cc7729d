"""Random equalisation of training notes: new colourings of the instruments a dataset has.

A model trained on three soundfonts meets, in use, instruments coloured by other samples,
microphones and filters. :func:`random_equalizer` draws a smooth gain curve over log frequency
(a few bell-shaped boosts and cuts, as a parametric equaliser makes) and applies it to a note at
zero phase, keeping its RMS level: the colour changes, not the loudness or the timing. Training
an autoencoder on such notes (input and target alike) asks the embedding to carry the spectral
envelope it hears rather than the nearest envelope of a training instrument.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from timbre.errors import ConfigError

# Bells centred between 60 Hz and 7 kHz, 0.3 to 2 octaves wide (standard deviation): from a body
# resonance to a broad tilt.
_LOWEST_CENTRE_HZ = 60.0
_HIGHEST_CENTRE_HZ = 7000.0
_NARROWEST_OCTAVES = 0.3
_WIDEST_OCTAVES = 2.0
# Below this the curve is held (log frequency has no 0 Hz).
_CURVE_FLOOR_HZ = 20.0


def equalizer_curve_db(
    frequencies_hz: np.ndarray, gains_db: np.ndarray, centres_hz: np.ndarray, widths_octaves: np.ndarray
) -> np.ndarray:
    """Sum of bells in dB over log frequency: ``[len(frequencies_hz)]``.

    Args:
        frequencies_hz: where to evaluate the curve.
        gains_db, centres_hz, widths_octaves: ``[bells]`` each bell's peak gain, centre and width
            (standard deviation in octaves).
    """
    octaves = np.log2(np.maximum(frequencies_hz, _CURVE_FLOOR_HZ))[:, None]
    distance = (octaves - np.log2(centres_hz)[None, :]) / widths_octaves[None, :]
    return (gains_db[None, :] * np.exp(-0.5 * distance**2)).sum(axis=1)


def random_equalizer(audio: np.ndarray, sample_rate: int, max_db: float, bells: int = 3) -> np.ndarray:
    """``audio`` through a random smooth equaliser, at its own RMS level.

    Draws use torch's global RNG (the trainer seeds it per step, so resumed runs replay them).

    Args:
        audio: ``[samples]`` float waveform.
        sample_rate: its rate.
        max_db: each bell's gain is drawn uniformly from ``[-max_db, max_db]``.
        bells: how many bells the curve sums.

    Returns:
        ``[samples]`` float32 waveform.
    """
    if max_db < 0 or bells < 1:
        raise ConfigError(f"the equaliser needs max_db >= 0 and at least one bell, got {max_db} and {bells}")
    draws = torch.rand(3, bells, dtype=torch.float64).numpy()
    gains_db = max_db * (2.0 * draws[0] - 1.0)
    centres_hz = np.exp2(
        math.log2(_LOWEST_CENTRE_HZ) + draws[1] * (math.log2(_HIGHEST_CENTRE_HZ) - math.log2(_LOWEST_CENTRE_HZ))
    )
    widths = _NARROWEST_OCTAVES + draws[2] * (_WIDEST_OCTAVES - _NARROWEST_OCTAVES)
    n_samples = audio.shape[0]
    # Twice the length: the zero-phase response's ringing falls in the padding, not onto the note's start.
    n_fft = 2 * n_samples
    spectrum = np.fft.rfft(audio.astype(np.float64), n=n_fft)
    gain = 10.0 ** (equalizer_curve_db(np.fft.rfftfreq(n_fft, 1.0 / sample_rate), gains_db, centres_hz, widths) / 20.0)
    equalized = np.fft.irfft(spectrum * gain, n=n_fft)[:n_samples]
    before, after = np.sqrt(np.mean(audio.astype(np.float64) ** 2)), np.sqrt(np.mean(equalized**2))
    if after > 0:
        equalized *= before / after
    return equalized.astype(np.float32)
