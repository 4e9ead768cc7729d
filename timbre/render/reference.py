"""The FluidSynth reference render of a MIDI file, for A/B listening and for metrics.

It plays exactly the notes the timbre render plays (:func:`timbre.render.notes.read_tracks`: same
window, same onsets, durations, pitches and velocities; controllers ignored; drum tracks left out
unless asked for), each track with the General MIDI soundfont preset of its program. Rendering
follows :mod:`timbre.io.fluidsynth`, which also made the training notes: a fresh synthesizer, reverb
and chorus off, float output at 48 kHz downmixed and resampled to 16 kHz (FluidSynth's sample
interpolation is not band-limited, so rendering at 16 kHz directly would alias bright notes).
"""

from __future__ import annotations

import os

import numpy as np

from timbre.constants import DEFAULT_SOUNDFONT
from timbre.io.audio import SAMPLE_RATE, resample
from timbre.io.fluidsynth import RENDER_RATE, SoundfontError, new_synth, write_float
from timbre.render.notes import MidiSource, TrackNotes, read_tracks, require_notes

# Rendering continues this long after the last key up, like the release of an NSynth note.
TAIL_SECONDS = 1.0
DRUM_CHANNEL = 9
DRUM_BANK = 128
# Channels for pitched tracks; more programs than this are rendered in several passes and summed.
MELODIC_CHANNELS = tuple(channel for channel in range(16) if channel != DRUM_CHANNEL)


def render_fluidsynth(
    midi: MidiSource,
    soundfont: str | os.PathLike = DEFAULT_SOUNDFONT,
    *,
    start: float = 0.0,
    end: float | None = None,
    include_drums: bool = False,
    samples: int | None = None,
    sample_rate: int = SAMPLE_RATE,
    peak_db: float = -1.0,
) -> np.ndarray:
    """Render the notes of ``midi`` with FluidSynth.

    Args:
        midi: a MIDI file or a symusic score.
        soundfont: SF2 file (default: FluidR3_GM, Debian package ``fluid-soundfont-gm``).
        start, end: the window in seconds, as in :func:`timbre.render.render_midi`.
        include_drums: also play drum tracks (channel 10 kits); off by default, like the timbre render.
        samples: length of the result (e.g. the timbre render's, for A/B); default: up to the
            last key up plus 1 s.
        sample_rate: rate of the result.
        peak_db: peak level in dBFS.

    Returns:
        ``[samples]`` float32 mono.

    Raises:
        MidiError: unreadable file or no notes; SoundfontError: missing soundfont.
    """
    tracks = read_tracks(midi, start, end)
    require_notes(tracks, midi, start, end)
    tracks = [track for track in tracks if track.notes and (include_drums or not track.is_drum)]
    last = max(note.onset + note.duration for track in tracks for note in track.notes)
    total = samples if samples is not None else round((last + TAIL_SECONDS) * sample_rate)
    render_total = round(total * RENDER_RATE / sample_rate)

    melodic = sorted({track.program for track in tracks if not track.is_drum})
    stereo = np.zeros((2, render_total), dtype=np.float32)
    passes = [melodic[i : i + len(MELODIC_CHANNELS)] for i in range(0, len(melodic), len(MELODIC_CHANNELS))]
    for index, programs in enumerate(passes):
        channel_of = dict(zip(programs, MELODIC_CHANNELS))
        playing = [t for t in tracks if (t.program in channel_of and not t.is_drum) or (t.is_drum and index == 0)]
        stereo += _render_pass(soundfont, playing, channel_of, render_total)
    audio = resample(stereo.mean(axis=0), RENDER_RATE, sample_rate)[:total]
    audio = np.pad(audio, (0, total - audio.shape[0]))
    peak = float(np.abs(audio).max())
    return (audio * (10.0 ** (peak_db / 20.0) / peak) if peak > 0 else audio).astype(np.float32)


def _render_pass(
    soundfont: str | os.PathLike, tracks: list[TrackNotes], channel_of: dict[int, int], total: int
) -> np.ndarray:
    """One synthesizer playing ``tracks`` (pitched ones on ``channel_of[program]``); ``[2, total]``."""
    synth, soundfont_id = new_synth(soundfont, RENDER_RATE)
    try:
        for program, channel in channel_of.items():
            if synth.program_select(channel, soundfont_id, 0, program) != 0:
                raise SoundfontError(f"{soundfont}: no preset for bank 0, program {program}")
        events = []
        for track in tracks:
            channel = DRUM_CHANNEL if track.is_drum else channel_of[track.program]
            if track.is_drum and synth.program_select(channel, soundfont_id, DRUM_BANK, track.program) != 0:
                synth.program_select(channel, soundfont_id, DRUM_BANK, 0)  # the standard kit
            for note in track.notes:
                events.append((round(note.onset * RENDER_RATE), 1, channel, note.pitch, note.velocity))
                events.append((round((note.onset + note.duration) * RENDER_RATE), 0, channel, note.pitch, 0))
        events.sort()  # at equal times key-ups (0) come before key-downs (1), so repeated notes retrigger
        stereo = np.zeros((2, total), dtype=np.float32)
        position = 0  # the samples rendered so far

        def render_until(stop: int) -> None:
            nonlocal position
            stop = min(stop, total)
            if stop > position:
                write_float(synth, stereo, position, stop)
                position = stop

        # Overlapping notes of one key on one channel: only the last key up releases it.
        held: dict[tuple[int, int], int] = {}
        for sample, is_on, channel, pitch, velocity in events:
            render_until(sample)
            count = held.get((channel, pitch), 0)
            if is_on:
                synth.noteon(channel, pitch, velocity)
                held[(channel, pitch)] = count + 1
            elif count == 1:
                synth.noteoff(channel, pitch)
                held[(channel, pitch)] = 0
            else:
                held[(channel, pitch)] = count - 1
        render_until(total)
        return stereo
    finally:
        synth.delete()
