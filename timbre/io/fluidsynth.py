"""The FluidSynth binding: open a soundfont, render a note, find which notes a preset can play.

Every synthesizer made here has reverb and chorus off and renders float samples, so a render is
the dry sound of the soundfont. A fresh synthesizer per note makes each note bit-exact whatever
was rendered before it, in whatever process.

Rendering rate. Notes render at 48 kHz (:data:`RENDER_RATE`) and are downmixed and resampled to
the wanted rate with a windowed-sinc filter: FluidSynth's sample interpolation is not
band-limited, so rendering at 16 kHz directly would alias the upper harmonics of bright notes
back into the audible band. The gain (:data:`GAIN`, 0.5) leaves headroom: the loudest of 640
probed FluidR3_GM notes (every program at 5 pitches, velocity 127) peaks at 0.45. Notes are not
normalised, so velocity keeps its effect on loudness.

SF2 and SF3 (Ogg Vorbis compressed samples, e.g. MuseScore General) soundfonts both load.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from timbre.errors import ConfigError, DatasetError
from timbre.io.audio import SAMPLE_RATE, resample

RENDER_RATE = 48000
GAIN = 0.5


class SoundfontError(DatasetError):
    """A soundfont is missing, unreadable, or lacks a requested preset."""


@functools.cache
def _fluidsynth() -> Any:
    """Import pyfluidsynth, quieting its C library's own error log (we raise clearer errors)."""
    import fluidsynth

    set_log_function = fluidsynth.cfunc(
        "fluid_set_log_function", ctypes.c_void_p,
        ("level", ctypes.c_int, 1), ("fun", ctypes.c_void_p, 1), ("data", ctypes.c_void_p, 1),
    )  # fmt: skip
    if set_log_function is not None:
        for level in (1, 2):  # FLUID_ERR, FLUID_WARN
            set_log_function(level, None, None)
    return fluidsynth


@functools.cache
def _write_float_function() -> Any:
    # pyfluidsynth only exposes int16 output; the float call keeps the full resolution.
    return _fluidsynth().cfunc(
        "fluid_synth_write_float", ctypes.c_int,
        ("synth", ctypes.c_void_p, 1), ("len", ctypes.c_int, 1),
        ("lout", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1), ("lincr", ctypes.c_int, 1),
        ("rout", ctypes.c_void_p, 1), ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1),
    )  # fmt: skip


# Synths that keep each soundfont loaded for the life of the process: FluidSynth then shares the
# loaded sample data, and the fresh synth made for every note loads the soundfont in ~0.05 s
# instead of 0.15-0.7 s.
_KEEPERS: dict[str, Any] = {}


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Discard what C code writes to file descriptor 2 in the block: FluidSynth's loader prints a
    GLib ``CRITICAL`` line for a file it cannot parse, beside the one-line error raised here."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def new_synth(soundfont: str | os.PathLike, rate: int, gain: float = GAIN) -> tuple[Any, int]:
    """A fresh synthesizer at ``rate`` Hz with ``soundfont`` loaded, reverb and chorus off.

    Returns:
        ``(synth, soundfont_id)``: a ``fluidsynth.Synth`` (the caller calls ``synth.delete()``)
        and the id to pass to ``synth.program_select``.

    Raises:
        SoundfontError: the file is missing or is not a soundfont FluidSynth can load.
        ConfigError: FluidSynth cannot render at ``rate``.
    """
    fluidsynth = _fluidsynth()
    path = str(Path(soundfont).resolve())
    if not os.path.isfile(path):
        raise SoundfontError(f"{soundfont}: soundfont file not found")
    settings = {"synth.reverb.active": 0, "synth.chorus.active": 0}
    if path not in _KEEPERS:
        keeper = fluidsynth.Synth(**settings)
        with _native_stderr_silenced():
            loaded = keeper.sfload(path)
        if loaded < 0:
            keeper.delete()
            raise SoundfontError(f"{soundfont}: FluidSynth cannot load it (not a valid SF2/SF3 soundfont?)")
        _KEEPERS[path] = keeper
    synth = fluidsynth.Synth(gain=gain, samplerate=float(rate), **settings)
    # FluidSynth ignores an out-of-range rate setting and keeps its default: check.
    if synth.get_setting("synth.sample-rate") != float(rate):
        synth.delete()
        raise ConfigError(f"sample rate {rate} Hz is outside what FluidSynth can render")
    soundfont_id = synth.sfload(path)
    if soundfont_id < 0:
        synth.delete()
        raise SoundfontError(f"{soundfont}: FluidSynth cannot load it (not a valid SF2/SF3 soundfont?)")
    return synth, soundfont_id


def write_float(synth: Any, stereo: np.ndarray, start: int, stop: int) -> None:
    """Render frames ``[start, stop)`` of ``synth`` into ``stereo`` (``[2, frames]`` float32, C order)."""
    if stereo.dtype != np.float32 or stereo.ndim != 2 or stereo.shape[0] != 2 or not stereo.flags.c_contiguous:
        raise ValueError(f"stereo must be a C-contiguous float32 [2, frames] array, got {stereo.dtype} {stereo.shape}")
    if not 0 <= start <= stop <= stereo.shape[1]:
        raise ValueError(f"frames [{start}, {stop}) fall outside the buffer of {stereo.shape[1]} frames")
    if stop > start:
        left, right = stereo[0, start:], stereo[1, start:]
        _write_float_function()(synth.synth, stop - start, left.ctypes.data, 0, 1, right.ctypes.data, 0, 1)


def probe_notes(
    soundfont: str | os.PathLike,
    programs: Iterable[int],
    pitches: Iterable[int],
    velocities: Iterable[int],
    bank: int = 0,
) -> dict[int, list[tuple[int, int]]]:
    """Which notes each preset has samples for, found without rendering.

    A key-down starts one voice per matching sample zone of the preset, so a note that starts
    no voice is one the preset cannot play.

    Returns:
        ``{program: [(pitch, velocity), ...]}`` with the notes that start at least one voice,
        for every program that has a preset in ``bank`` (programs without one are left out).
    """
    pitches, velocities = list(pitches), list(velocities)
    synth, soundfont_id = new_synth(soundfont, RENDER_RATE)
    try:
        playable: dict[int, list[tuple[int, int]]] = {}
        for program in programs:
            if synth.program_select(0, soundfont_id, bank, program) != 0:
                continue
            playable[program] = []
            for pitch in pitches:
                for velocity in velocities:
                    synth.noteon(0, pitch, velocity)
                    if synth.get_active_voice_count() > 0:
                        playable[program].append((pitch, velocity))
                    synth.all_sounds_off(0)
                    synth.get_samples(64)  # one block: lets the synth free the stopped voices
        return playable
    finally:
        synth.delete()


def render_note(
    soundfont: str | os.PathLike,
    program: int,
    pitch: int,
    velocity: int,
    seconds: float = 4.0,
    hold: float = 3.0,
    sample_rate: int = SAMPLE_RATE,
    bank: int = 0,
) -> np.ndarray:
    """Render one note of a soundfont preset, NSynth style.

    The key goes down at 0 s and up at ``hold`` seconds; rendering continues to ``seconds``.
    Deterministic: the same arguments give the same samples, bit for bit.

    Args:
        soundfont: path to an SF2 or SF3 file.
        program: preset number (General MIDI program 0-127 in bank 0).
        pitch: MIDI key 0-127.
        velocity: MIDI velocity 1-127.
        seconds: length of the note.
        hold: how long the key is held (at most ``seconds``).
        sample_rate: rate of the returned audio in Hz.
        bank: soundfont bank of the preset.

    Returns:
        ``[round(seconds * sample_rate)]`` float32 mono waveform; all zeros when the preset has
        no sample for this key and velocity.

    Raises:
        SoundfontError: the soundfont is missing or unreadable, or has no such preset.
    """
    render_rate = max(RENDER_RATE, sample_rate)
    total = round(seconds * render_rate)
    held = min(round(hold * render_rate), total)
    output = np.zeros(round(seconds * sample_rate), dtype=np.float32)
    synth, soundfont_id = new_synth(soundfont, render_rate)
    try:
        if synth.program_select(0, soundfont_id, bank, program) != 0:
            raise SoundfontError(f"{soundfont}: no preset for bank {bank}, program {program}")
        synth.noteon(0, pitch, velocity)
        if synth.get_active_voice_count() == 0:
            return output
        stereo = np.zeros((2, total), dtype=np.float32)
        write_float(synth, stereo, 0, held)
        synth.noteoff(0, pitch)
        write_float(synth, stereo, held, total)
    finally:
        synth.delete()
    audio = resample(stereo.mean(axis=0), render_rate, sample_rate)
    length = min(audio.shape[0], output.shape[0])
    output[:length] = audio[:length]
    return output
