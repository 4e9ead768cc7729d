from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from timbre.errors import ConfigError, DatasetError
from timbre.io.audio import rms_level
from timbre.io.fluidsynth import RENDER_RATE, SoundfontError, new_synth, probe_notes, render_note, write_float

MUSESCORE_SF3 = Path("/usr/share/sounds/sf3/MuseScore_General.sf3")


def test_render_note_is_deterministic_and_held_then_released(fluidr3_soundfont):
    audio = render_note(fluidr3_soundfont, 73, 72, 100, seconds=2.0, hold=1.0)
    assert audio.dtype == np.float32 and audio.shape == (32000,)
    assert np.array_equal(audio, render_note(fluidr3_soundfont, 73, 72, 100, seconds=2.0, hold=1.0))
    # A flute sustains while the key is held and dies away after release.
    held, released = rms_level(audio[8000:16000]), rms_level(audio[26000:])
    assert held > 0.01 and released < held / 30


def test_loudness_rises_with_velocity(fluidr3_soundfont):
    levels = [
        rms_level(render_note(fluidr3_soundfont, 0, 60, velocity, seconds=1.0, hold=0.8))
        for velocity in (25, 50, 75, 100, 127)
    ]
    assert all(quieter < louder for quieter, louder in zip(levels, levels[1:])), levels
    assert levels[-1] > 4 * levels[0]


def test_probe_finds_notes_without_samples(fluidr3_soundfont):
    playable = probe_notes(fluidr3_soundfont, [40, 0, 200], [60, 108], [100])
    # FluidR3's violin has no sample for the top key; the piano has; there is no program 200.
    assert playable == {40: [(60, 100)], 0: [(60, 100), (108, 100)]}


def test_a_note_without_samples_renders_as_silence(fluidr3_soundfont):
    audio = render_note(fluidr3_soundfont, 40, 108, 100, seconds=0.5, hold=0.25)
    assert audio.shape == (8000,) and not audio.any()


def test_sf3_soundfonts_render():
    if not MUSESCORE_SF3.is_file():
        pytest.skip(f"{MUSESCORE_SF3} is not installed (Debian package musescore-general-soundfont-small)")
    # SF3 samples are Ogg Vorbis: a flute at A4 must come out as a sounding note, not silence.
    audio = render_note(MUSESCORE_SF3, 73, 69, 100, seconds=1.0, hold=0.5)
    assert rms_level(audio[2000:8000]) > 0.01
    spectrum = np.abs(np.fft.rfft(audio[2000:8000] * np.hanning(6000)))
    assert abs(np.argmax(spectrum) * 16000 / 6000 - 440.0) < 10.0


def test_write_float_renders_into_a_stereo_buffer(fluidr3_soundfont):
    synth, soundfont_id = new_synth(fluidr3_soundfont, RENDER_RATE)
    try:
        assert synth.program_select(0, soundfont_id, 0, 0) == 0
        synth.noteon(0, 60, 100)
        stereo = np.zeros((2, 4800), dtype=np.float32)
        write_float(synth, stereo, 0, 2400)
        assert np.abs(stereo[:, :2400]).max() > 0.01 and not stereo[:, 2400:].any()
        write_float(synth, stereo, 2400, 4800)
        assert np.abs(stereo[:, 2400:]).max() > 0.01
        with pytest.raises(ValueError, match="outside the buffer of 4800 frames"):
            write_float(synth, stereo, 4000, 4801)
        with pytest.raises(ValueError, match="C-contiguous float32"):
            write_float(synth, np.zeros((2, 10)), 0, 10)
    finally:
        synth.delete()


def test_bad_soundfonts_and_rates_are_refused(fluidr3_soundfont, tmp_path):
    with pytest.raises(SoundfontError, match="missing.sf2: soundfont file not found"):
        new_synth(tmp_path / "missing.sf2", RENDER_RATE)
    corrupt = tmp_path / "corrupt.sf2"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00sfbk" + bytes(64))
    with pytest.raises(DatasetError, match="corrupt.sf2: FluidSynth cannot load it"):
        render_note(corrupt, 0, 60, 100)
    with pytest.raises(SoundfontError, match="no preset for bank 5, program 0"):
        render_note(fluidr3_soundfont, 0, 60, 100, bank=5)
    with pytest.raises(ConfigError, match="sample rate 1000000 Hz"):
        new_synth(fluidr3_soundfont, 1_000_000)
