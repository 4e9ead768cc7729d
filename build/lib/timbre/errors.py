"""Exceptions that carry a message meant for the user.

The CLI prints ``str(error)`` of any :class:`TimbreError` and exits with status 1, without a
traceback, so every message must name the file (or setting) and say what is wrong with it.
"""

from __future__ import annotations


class TimbreError(Exception):
    """Base class of every error timbre raises on purpose."""


class AudioError(TimbreError):
    """An audio file or array cannot be used: missing, empty, corrupt, non-finite."""


class DatasetError(TimbreError):
    """A note dataset is missing, malformed, or yields nothing after filtering."""


class MidiError(TimbreError):
    """A MIDI file is missing, corrupt, or holds no notes."""


class CheckpointError(TimbreError):
    """A checkpoint is missing, corrupt, or does not match the code that loads it."""


class ConfigError(TimbreError):
    """A configuration value or override is invalid."""
