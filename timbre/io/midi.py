"""Reading MIDI files into symusic scores, with one clear error for every file that cannot be used.

Every part of timbre that takes a MIDI file (rendering, priming the composer, building a corpus)
reads it through :func:`load_score`, so a missing, corrupt or empty file always fails the same
way: a :class:`~timbre.errors.MidiError` naming the file and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

import symusic

from timbre.errors import MidiError

# File name endings of MIDI files (compared lower-cased: ``.MID`` counts).
MIDI_SUFFIXES = frozenset({".mid", ".midi"})


def load_score(path: str | os.PathLike[str]) -> symusic.Score:
    """Read a MIDI file, refusing files that are missing, unreadable or without notes.

    Args:
        path: a Standard MIDI File (format 0 or 1, any time division).

    Returns:
        The score in ticks, every track kept (drum tracks included).

    Raises:
        MidiError: naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise MidiError(f"{path}: no such MIDI file")
    try:
        score = symusic.Score(str(path))
    except Exception as error:  # symusic raises RuntimeError/ValueError for malformed files
        raise MidiError(f"{path}: not a readable MIDI file ({error})") from error
    if score.note_num() == 0:
        raise MidiError(f"{path}: the MIDI file holds no notes")
    return score


def is_midi_file(path: str | Path) -> bool:
    """Whether ``path`` is a file named like a MIDI file (``.mid``/``.midi``, any case)."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() in MIDI_SUFFIXES
