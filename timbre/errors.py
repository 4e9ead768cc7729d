"""Exceptions that carry a message meant for the user.

The CLI prints ``str(error)`` of any :class:`TimbreError` and exits with status 1, without a
traceback, so every message must name the file (or setting) and say what is wrong with it.

One rule for bad arguments of the Python API: a value of the right type that cannot be used
(a pitch of 200, a negative duration, a mix outside [0, 1]) raises :class:`ConfigError`, a
``ValueError``; a value of the wrong type (``pitch="60"``, ``synthesize(None)``) raises
:class:`InvalidTypeError`, a ``TypeError``. Both are timbre errors, so one ``except TimbreError``
catches everything timbre raises on purpose, and plain ``except ValueError`` still works.
"""

from __future__ import annotations


class TimbreError(Exception):
    """Base class of every error timbre raises on purpose."""


class AudioError(TimbreError, ValueError):
    """An audio file or array cannot be used: missing, empty, corrupt, non-finite."""


class DatasetError(TimbreError):
    """A note dataset is missing, malformed, or yields nothing after filtering."""


class MidiError(TimbreError, ValueError):
    """A MIDI file is missing, corrupt, or holds no notes."""


class CheckpointError(TimbreError):
    """A checkpoint is missing, corrupt, or does not match the code that loads it."""


class ConfigError(TimbreError, ValueError):
    """A configuration value, override or function argument is invalid."""


class InvalidTypeError(ConfigError, TypeError):
    """A function argument has the wrong type (e.g. a string where a MIDI pitch is expected)."""


class TimbreWarning(UserWarning):
    """A result that is probably not what the user wanted (silent input, a cancelled downmix, ...).

    The CLI prints these as one ``warning:`` line each.
    """
