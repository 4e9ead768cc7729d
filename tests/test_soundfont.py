from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import soundfile
import torch

from timbre.io.audio import rms_level
from timbre.cli import main
from timbre.cli.dataset import parse_int_list
from timbre.data.families import GM_PROGRAMS, NSYNTH_FAMILIES, NSYNTH_SOURCES, instrument_name
from timbre.data.nsynth import SPLITS
from timbre.data.soundfont import build_dataset, probe_notes, render_note, split_instruments
from timbre.errors import ConfigError, DatasetError

NSYNTH_FIELDS = {
    "note": int, "note_str": str, "instrument": int, "instrument_str": str, "pitch": int, "velocity": int,
    "sample_rate": int, "qualities": list, "qualities_str": list, "instrument_family": int,
    "instrument_family_str": str, "instrument_source": int, "instrument_source_str": str,
}  # fmt: skip


def load_split(root, split):
    return json.loads((root / f"nsynth-{split}" / "examples.json").read_text())


def pesto_pitches(notes: list[np.ndarray], sample_rate: int = 16000) -> list[float]:
    """Median MIDI pitch that pesto hears over 0.5-1.5 s of each note (held, after the attack).

    All frames count: the note sounds throughout, and pesto's confidence is low on low piano notes.
    """
    import pesto

    held = torch.from_numpy(np.stack([audio[sample_rate // 2 : 3 * sample_rate // 2] for audio in notes]))
    _, pitch, _, _ = pesto.predict(held, sample_rate, convert_to_freq=False)
    return pitch.median(dim=-1).values.tolist()


def test_every_gm_program_has_nsynth_labels():
    assert len(GM_PROGRAMS) == 128
    assert all(entry.family in NSYNTH_FAMILIES and entry.source in NSYNTH_SOURCES for entry in GM_PROGRAMS)
    names = [instrument_name(program) for program in range(128)]
    assert len(set(names)) == 128
    assert names[0] == "keyboard_acoustic_000" and names[40] == "string_acoustic_000"
    assert names[73] == "flute_acoustic_001"  # piccolo (72) is flute 000
    assert {GM_PROGRAMS[p].family for p in (56, 57, 58)} == {"brass"} and GM_PROGRAMS[81].source == "synthetic"


@pytest.mark.parametrize(
    "count,valid,test,expected",
    [(3, 0.1, 0.1, (1, 1, 1)), (2, 0.1, 0.1, (1, 1, 0)), (1, 0.1, 0.1, (1, 0, 0)),
     (10, 0.1, 0.1, (8, 1, 1)), (20, 0.1, 0.2, (14, 2, 4)), (5, 0.0, 0.0, (5, 0, 0)), (2, 0.5, 0.45, (1, 1, 0))],
)  # fmt: skip
def test_split_by_instrument_counts(count, valid, test, expected):
    names = [f"string_acoustic_{i:03d}" for i in range(count)]
    assignment = split_instruments(names, valid, test)
    assert sorted(assignment) == names
    assert tuple(list(assignment.values()).count(split) for split in SPLITS) == expected
    assert split_instruments(list(reversed(names)), valid, test) == assignment  # deterministic


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


@pytest.mark.slow
def test_builder_writes_nsynth_layout_at_the_right_pitch(fluidr3_dataset):
    seen_instruments, notes, stated = [], [], []
    for split in SPLITS:
        examples = load_split(fluidr3_dataset, split)
        assert len(examples) == 3
        wavs = (fluidr3_dataset / f"nsynth-{split}" / "audio").glob("*.wav")
        assert sorted(path.stem for path in wavs) == sorted(examples)
        seen_instruments.append({fields["instrument_str"] for fields in examples.values()})
        for note_str, fields in examples.items():
            assert {name: type(fields[name]) for name in NSYNTH_FIELDS} == NSYNTH_FIELDS
            assert re.fullmatch(r"[a-z_]+_(acoustic|electronic|synthetic)_\d{3}-\d{3}-\d{3}", note_str)
            assert note_str == f"{fields['instrument_str']}-{fields['pitch']:03d}-{fields['velocity']:03d}"
            assert fields["instrument_family_str"] == NSYNTH_FAMILIES[fields["instrument_family"]]
            assert fields["instrument_source_str"] == NSYNTH_SOURCES[fields["instrument_source"]]
            assert fields["qualities"] == [0] * 10 and fields["sample_rate"] == 16000
            path = fluidr3_dataset / f"nsynth-{split}" / "audio" / f"{note_str}.wav"
            info = soundfile.info(path)
            assert (info.frames, info.samplerate, info.channels, info.subtype) == (64000, 16000, 1, "PCM_16")
            notes.append(soundfile.read(path, dtype="float32")[0])
            stated.append((note_str, fields["pitch"]))
    # Split by instrument: one each, none shared.
    assert [len(s) for s in seen_instruments] == [1, 1, 1] and len(set.union(*seen_instruments)) == 3
    # An independent pitch tracker hears every note at its stated pitch.
    for (note_str, pitch), heard in zip(stated, pesto_pitches(notes)):
        assert abs(100 * (heard - pitch)) < 50, f"{note_str}: pesto hears {100 * (heard - pitch):+.0f} cents"


def test_builder_resumes(fluidr3_dataset, fluidr3_soundfont, tmp_path):
    root = shutil.copytree(fluidr3_dataset, tmp_path / "dataset")
    arguments = dict(programs=(0, 40, 73), pitches=(48, 60, 72), velocities=(100,), progress=False)
    kept = root / "nsynth-train" / "audio" / "keyboard_acoustic_000-060-100.wav"
    removed = root / "nsynth-train" / "audio" / "keyboard_acoustic_000-072-100.wav"
    kept_before = kept.stat().st_mtime_ns
    removed_bytes = removed.read_bytes()
    removed.unlink()

    summary = build_dataset(fluidr3_soundfont, root, **arguments)

    assert (summary.rendered, summary.resumed, summary.silent) == (1, 8, 0)
    assert summary.notes == {"train": 3, "valid": 3, "test": 3}
    assert kept.stat().st_mtime_ns == kept_before  # not rewritten
    assert removed.read_bytes() == removed_bytes  # re-rendered bit for bit
    assert load_split(root, "train") == load_split(fluidr3_dataset, "train")


def test_builder_skips_silent_notes_and_reports_them(fluidr3_soundfont, tmp_path):
    summary = build_dataset(
        fluidr3_soundfont, tmp_path, programs=(40, 19, 0), pitches=(107, 108), velocities=(127,),
        seconds=0.5, hold=0.25, valid=0.0, test=0.0, progress=False,
    )  # fmt: skip
    # Violin (40) and church organ (19) have no samples up there; the piano (0) has.
    assert summary.unplayable_programs == [19, 40] and summary.silent == 4
    assert summary.notes["train"] == 2 and summary.instruments["train"] == [instrument_name(0)]
    assert not (tmp_path / "nsynth-valid").exists()


def test_builder_rejects_bad_arguments(fluidr3_soundfont, tmp_path):
    with pytest.raises(DatasetError, match="missing.sf2: soundfont file not found"):
        build_dataset(tmp_path / "missing.sf2", tmp_path / "out", programs=[0], pitches=[60], velocities=[100])
    corrupt = tmp_path / "corrupt.sf2"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00sfbk" + bytes(64))
    with pytest.raises(DatasetError, match="corrupt.sf2: FluidSynth cannot load it"):
        build_dataset(corrupt, tmp_path / "out", programs=[0], pitches=[60], velocities=[100])
    good = dict(programs=[0], pitches=[60], velocities=[100])
    for bad in (dict(pitches=[20, 130]), dict(velocities=[0]), dict(hold=5.0), dict(valid=0.6, test=0.5)):
        with pytest.raises(ConfigError):
            build_dataset(fluidr3_soundfont, tmp_path / "out", **{**good, **bad})
    assert not (tmp_path / "out").exists()


def test_parse_int_list():
    assert parse_int_list("21-24", "--pitches") == [21, 22, 23, 24]
    assert parse_int_list("48, 60,72", "--pitches") == [48, 60, 72]
    assert parse_int_list("0-2,40", "--programs") == [0, 1, 2, 40]
    with pytest.raises(ConfigError, match="--pitches: range '108-21' runs backwards"):
        parse_int_list("108-21", "--pitches")
    with pytest.raises(ConfigError, match="--programs: expected numbers"):
        parse_int_list("piano", "--programs")


def test_cli_build(fluidr3_soundfont, tmp_path, capsys):
    arguments = ["dataset", "build", "--soundfont", str(fluidr3_soundfont), "--out", str(tmp_path / "data"),
                 "--programs", "73", "--pitches", "60-61", "--velocities", "100", "--seconds", "0.5", "--hold", "0.25",
                 "--workers", "1", "--quiet"]  # fmt: skip
    assert main(arguments) == 0
    output = capsys.readouterr().out
    assert "train:      2 notes, 1 instruments (flute_acoustic_001)" in output and str(tmp_path / "data") in output
    assert sorted(load_split(tmp_path / "data", "train")) == [f"flute_acoustic_001-0{p}-100" for p in (60, 61)]

    assert main(["dataset", "build", "--soundfont", str(tmp_path / "no.sf2"), "--out", str(tmp_path / "x")]) == 1
    assert "no.sf2: soundfont file not found" in capsys.readouterr().err
    assert main(arguments + ["--pitches", "200"]) == 1
    assert "pitches must be 0-127, got 200" in capsys.readouterr().err
