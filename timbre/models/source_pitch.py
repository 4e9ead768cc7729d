"""The MIDI pitch a note sounds at, heard cheaply: what a decoder needs to know of a sound it encoded.

A decoder with partials on the octave below reads them at the pitch an embedding was encoded at
(:meth:`timbre.models.parallel.HarmonicNoiseDecoder.controls`). When ``encode`` is not told that
pitch, :func:`heard_midi_pitch` estimates it with YIN (de Cheveigné & Kawahara, 2002; librosa's),
about 50 ms for a 4 s note and nothing to load. On the 120 TimGM6mb test notes it gives the MIDI
pitch of 112 and an octave under it for the other 8, all organs sounding a 16' stop, where the
octave below is the same either way. PESTO (:mod:`timbre.evaluation.metrics`) is the evaluations'
judge; it loads a model whose checkpoint needs the training stack's configuration library.
"""

from __future__ import annotations

import numpy as np

# YIN's search range: MIDI 23-107, wider than the notes models are trained on (24-96).
_LOWEST_HZ = 30.0
_HIGHEST_HZ = 4000.0
_FRAME = 2048
_HOP = 512
# Frames within this many dB of the note's loudest count: a release or a silence after the note
# does not pull the median.
_LOUD_DB = 30.0


def heard_midi_pitch(audio: np.ndarray, sample_rate: int) -> int:
    """The median YIN pitch of the loud frames of ``audio`` ``[samples]``, as a MIDI number in [0, 127].

    A clip shorter than one frame is heard with silence after it; a silent one reads 60.
    """
    import librosa  # deferred: a second of imports, needed only here

    audio = np.asarray(audio, dtype=np.float32)
    if audio.shape[0] < _FRAME:
        audio = np.pad(audio, (0, _FRAME - audio.shape[0]))
    rms = librosa.feature.rms(y=audio, frame_length=_FRAME, hop_length=_HOP, center=True)[0]
    if not rms.max() > 0:
        return 60
    hz = librosa.yin(audio, fmin=_LOWEST_HZ, fmax=_HIGHEST_HZ, sr=sample_rate, frame_length=_FRAME, hop_length=_HOP)
    level_db = 20.0 * np.log10(np.maximum(rms, 1e-10))
    loud = level_db[: hz.shape[0]] >= level_db.max() - _LOUD_DB
    return int(np.clip(np.rint(np.median(librosa.hz_to_midi(hz[loud]))), 0, 127))
