"""Reading MIDI files (timbre.io.midi): what a score keeps, one clear error per unusable file, and
the committed MIDI fixtures being exactly what ``tests/fixtures/make_midi.py`` writes."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import symusic

from timbre.errors import MidiError
from timbre.io.midi import is_midi_file, load_score

from conftest import FIXTURES, MIDI_FIXTURES


def fixture_maker():
    """The ``tests/fixtures/make_midi.py`` module (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("make_midi", FIXTURES / "make_midi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_fixtures_are_what_the_script_writes() -> None:
    written = fixture_maker().fixture_bytes()
    assert sorted(written) == sorted(path.name for path in MIDI_FIXTURES.glob("*.mid"))
    for name, data in written.items():
        committed = (MIDI_FIXTURES / name).read_bytes()
        if name in ("band.mid", "piano.mid", "primer_melody.mid", "empty.mid"):
            # Compare the music, not the bytes: another symusic version may encode events differently.
            assert symusic.Score.from_midi(data) == symusic.Score.from_midi(committed), f"rerun make_midi.py: {name}"
        elif name == "truncated.mid":
            assert committed == (MIDI_FIXTURES / "band.mid").read_bytes()[:100]
        else:
            assert data == committed, f"rerun make_midi.py: {name}"


def test_band_keeps_every_track_with_its_drum_flag_tempo_and_meter() -> None:
    score = load_score(MIDI_FIXTURES / "band.mid")
    assert score.ticks_per_quarter == 192
    assert [(t.name, t.program, t.is_drum) for t in score.tracks] == [
        ("Melody", 73, False), ("Piano", 0, False), ("Bass", 33, False), ("Drums", 0, True), ("Strings", 48, False),
    ]  # fmt: skip
    drums = score.tracks[3]
    assert {note.pitch for note in drums.notes} == {36, 38, 42, 49}  # kick, snare, hats, crash
    assert [tempo.qpm for tempo in score.tempos] == pytest.approx([118.0, 124.0])
    assert [(s.numerator, s.denominator) for s in score.time_signatures] == [(4, 4), (2, 4), (4, 4)]
    assert len(score.tracks[0].pitch_bends) == 4 and any(c.number == 64 for c in score.tracks[1].controls)
    assert 60 < score.to("second").end() < 65


def test_drum_track_is_written_on_midi_channel_10() -> None:
    data = (MIDI_FIXTURES / "band.mid").read_bytes()
    note_on_channels = {data[i] & 0x0F for i in range(len(data) - 2) if data[i] & 0xF0 == 0x90 and data[i + 2] > 0}
    assert 9 in note_on_channels  # channel 10 counted from 1: where General MIDI puts drums


@pytest.mark.parametrize(
    "name, problem",
    [
        ("empty.mid", "the MIDI file holds no notes"),
        ("corrupt_control_value.mid", "not a readable MIDI file"),
        ("truncated.mid", "not a readable MIDI file"),
    ],
)
def test_unusable_fixture_files_are_one_clear_error(name: str, problem: str) -> None:
    with pytest.raises(MidiError, match=f"^{re.escape(f'{MIDI_FIXTURES / name}: {problem}')}") as error:
        load_score(MIDI_FIXTURES / name)
    assert "\n" not in str(error.value)


def test_missing_files_folders_and_other_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(MidiError, match=f"^{re.escape(str(tmp_path / 'missing.mid'))}: no such MIDI file$"):
        load_score(tmp_path / "missing.mid")
    with pytest.raises(MidiError, match="no such MIDI file"):
        load_score(tmp_path)  # a folder is not a file
    (tmp_path / "notes.mid").write_text("these are not MIDI bytes")
    with pytest.raises(MidiError, match=r"notes\.mid: not a readable MIDI file \(.*MThd"):
        load_score(tmp_path / "notes.mid")
    (tmp_path / "zero.mid").write_bytes(b"")
    with pytest.raises(MidiError, match=r"zero\.mid: not a readable MIDI file"):
        load_score(str(tmp_path / "zero.mid"))


def test_is_midi_file_goes_by_suffix_in_any_case(tmp_path: Path) -> None:
    for name in ("a.mid", "b.MID", "c.midi", "d.txt", "e.mid.bak"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.mid").mkdir()
    found = sorted(path.name for path in tmp_path.iterdir() if is_midi_file(path))
    assert found == ["a.mid", "b.MID", "c.midi"]
    assert not is_midi_file(tmp_path / "missing.mid")
