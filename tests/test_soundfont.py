from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from timbre.cli import main
from timbre.cli.dataset import parse_int_list
from timbre.data.families import GM_PROGRAMS, NSYNTH_FAMILIES, NSYNTH_SOURCES, instrument_name
from timbre.data.nsynth import SPLITS, NoteDataset, read_examples
from timbre.data.soundfont import build_dataset, soundfont_name, split_instruments
from timbre.errors import ConfigError, DatasetError

NSYNTH_FIELDS = {
    "note": int, "note_str": str, "instrument": int, "instrument_str": str, "pitch": int, "velocity": int,
    "sample_rate": int, "qualities": list, "qualities_str": list, "instrument_family": int,
    "instrument_family_str": str, "instrument_source": int, "instrument_source_str": str,
}  # fmt: skip
OPL3 = Path("/usr/share/sounds/sf2/OPL-3_FM_128M.sf2")
# Every note of these tests is short: the builder's logic does not depend on the note length.
SHORT = dict(seconds=0.5, hold=0.25, progress=False)


@pytest.fixture(scope="module")
def opl3_soundfont() -> Path:
    if not OPL3.is_file():
        pytest.skip(f"{OPL3} is not installed (Debian package opl3-soundfont)")
    return OPL3


@pytest.fixture(scope="module")
def two_soundfont_dataset(fluidr3_soundfont, opl3_soundfont, tmp_path_factory) -> Path:
    """2 soundfonts x 2 programs (piano, flute) x 2 pitches, split 2/1/1 by instrument."""
    root = tmp_path_factory.mktemp("two_soundfonts")
    build_dataset(
        [fluidr3_soundfont, opl3_soundfont], root, programs=(0, 73), pitches=(60, 72), velocities=(100,),
        valid=0.25, test=0.25, **SHORT,
    )  # fmt: skip
    return root


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
    assert summary.unplayable_programs == {"FluidR3_GM.sf2": [19, 40]} and summary.silent == 4
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


def test_soundfont_names():
    assert soundfont_name("/usr/share/sounds/sf2/FluidR3_GM.sf2") == "fluidr3_gm"
    assert soundfont_name("OPL-3_FM_128M.sf2") == "opl_3_fm_128m"
    assert soundfont_name("/x/MuseScore_General.sf3") == "musescore_general"


def test_several_soundfonts_make_distinct_instruments_split_without_leakage(two_soundfont_dataset):
    splits = {split: load_split(two_soundfont_dataset, split) for split in SPLITS}
    notes = [note for examples in splits.values() for note in examples]
    assert len(notes) == len(set(notes)) == 2 * 2 * 2
    instruments_of = {split: {e["instrument_str"] for e in examples.values()} for split, examples in splits.items()}
    assert [len(instruments_of[split]) for split in SPLITS] == [2, 1, 1]
    assert set.union(*instruments_of.values()) == {
        f"{prefix}_{instrument_name(program)}" for prefix in ("fluidr3_gm", "opl_3_fm_128m") for program in (0, 73)
    }
    ids = {}
    for split, examples in splits.items():
        for note_str, fields in examples.items():
            # The note records its soundfont, and its name starts with the soundfont's short name.
            assert fields["soundfont"] in ("FluidR3_GM.sf2", "OPL-3_FM_128M.sf2")
            assert note_str.startswith(soundfont_name(fields["soundfont"]) + "_")
            assert note_str == f"{fields['instrument_str']}-{fields['pitch']:03d}-{fields['velocity']:03d}"
            ids.setdefault(fields["instrument_str"], set()).add(fields["instrument"])
        assert len(NoteDataset(two_soundfont_dataset, split)) == len(examples)
    assert sorted(id for values in ids.values() for id in values) == [0, 73, 128, 128 + 73]

    def audio_of(instrument: str) -> np.ndarray:
        (path,) = two_soundfont_dataset.glob(f"nsynth-*/audio/{instrument}-060-100.wav")
        return soundfile.read(path, dtype="float32")[0]

    # Each soundfont really played its own notes: the FM piano is not FluidR3's sampled piano.
    fluid, opl = audio_of("fluidr3_gm_keyboard_acoustic_000"), audio_of("opl_3_fm_128m_keyboard_acoustic_000")
    assert np.abs(fluid).max() > 0.01 and np.abs(opl).max() > 0.01
    assert np.abs(fluid - opl).max() > 0.05


def test_pitch_step_and_velocity_draws_are_deterministic(fluidr3_soundfont, tmp_path):
    programs, velocities = (11, 33, 40, 73), (25, 50, 75, 100, 127)
    arguments = dict(programs=programs, pitches=range(48, 54), velocities=velocities, valid=0.0, test=0.0,
                     pitch_step=3, velocities_per_pitch=2, seconds=0.1, hold=0.05, progress=False)  # fmt: skip

    def chosen(root: Path) -> dict[str, dict[int, list[int]]]:
        notes: dict[str, dict[int, list[int]]] = {}
        for fields in load_split(root, "train").values():
            notes.setdefault(fields["instrument_str"], {}).setdefault(fields["pitch"], []).append(fields["velocity"])
        return notes

    first = build_dataset(fluidr3_soundfont, tmp_path / "a", **arguments)
    assert first.notes["train"] == len(programs) * 2 * 2
    notes = chosen(tmp_path / "a")
    offsets = set()
    for pitches in notes.values():
        assert sorted(pitches) == [min(pitches), min(pitches) + 3]
        assert all(len(set(chosen_velocities)) == 2 and set(chosen_velocities) <= set(velocities)
                   for chosen_velocities in pitches.values())  # fmt: skip
        offsets.add(min(pitches) - 48)
    # Offsets differ between instruments, so together they cover every pitch.
    assert offsets == {0, 1, 2}
    build_dataset(fluidr3_soundfont, tmp_path / "b", **arguments)
    assert chosen(tmp_path / "b") == notes
    build_dataset(fluidr3_soundfont, tmp_path / "c", **{**arguments, "seed": 1})
    assert chosen(tmp_path / "c") != notes


def test_interrupted_build_is_a_readable_dataset_and_resumes(fluidr3_soundfont, tmp_path, monkeypatch):
    import timbre.data.soundfont as builder

    arguments = dict(programs=(0, 73), pitches=(60, 62, 64), velocities=(100,), valid=0.0, test=0.0, **SHORT)
    render_job, started = builder._render_job, []

    def render_then_interrupt(job):
        if len(started) == 4:
            raise KeyboardInterrupt
        started.append(job)
        return render_job(job)

    monkeypatch.setattr(builder, "_render_job", render_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(fluidr3_soundfont, tmp_path, **arguments)
    listed = [example["note_str"] for example in read_examples(tmp_path / "nsynth-train")]
    assert sorted(path.stem for path in (tmp_path / "nsynth-train" / "audio").glob("*.wav")) == listed
    assert len(listed) == 4

    monkeypatch.undo()
    summary = build_dataset(fluidr3_soundfont, tmp_path, **arguments)
    assert (summary.resumed, summary.rendered, summary.notes["train"]) == (4, 2, 6)


def test_killed_build_leaves_the_notes_of_its_last_checkpoint(fluidr3_soundfont, tmp_path):
    out = tmp_path / "dataset"
    arguments = "programs=(0, 73), pitches=(60, 62, 64, 65), velocities=(100,), valid=0.0, test=0.0"
    # SIGKILL runs no clean-up: only the periodic checkpoints (here every 2 notes) list the notes.
    script = f"""
import os, signal
import timbre.data.soundfont as builder
builder._CHECKPOINT_NOTES = 2
render_job, started = builder._render_job, []
def render_then_die(job):
    if len(started) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    started.append(job)
    return render_job(job)
builder._render_job = render_then_die
builder.build_dataset({str(fluidr3_soundfont)!r}, {str(out)!r}, {arguments}, seconds=0.5, hold=0.25, progress=False)
"""
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == -signal.SIGKILL
    assert len(list((out / "nsynth-train" / "audio").glob("*.wav"))) == 5
    assert len(read_examples(out / "nsynth-train")) == 4  # written at notes 2 and 4

    summary = build_dataset(fluidr3_soundfont, out, **eval(f"dict({arguments})"), **SHORT)
    assert (summary.resumed, summary.rendered, summary.notes["train"]) == (5, 3, 8)


def test_builder_refuses_clashing_soundfonts_and_unusable_outputs(fluidr3_soundfont, tmp_path):
    notes = dict(programs=[0], pitches=[60], velocities=[100], **SHORT)
    alias = tmp_path / "alias.sf2"
    alias.symlink_to(fluidr3_soundfont)
    with pytest.raises(ConfigError, match="alias.sf2 is given twice"):
        build_dataset([fluidr3_soundfont, alias], tmp_path / "out", **notes)
    (tmp_path / "other").mkdir()
    namesake = tmp_path / "other" / "FluidR3-GM.sf2"
    namesake.write_bytes(b"not read: the names clash first")
    with pytest.raises(ConfigError, match="share the short name 'fluidr3_gm'"):
        build_dataset([fluidr3_soundfont, namesake], tmp_path / "out", **notes)
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(DatasetError, match="file: exists and is not a directory"):
        build_dataset(fluidr3_soundfont, tmp_path / "file", **notes)


def test_cli_builds_from_several_soundfonts(fluidr3_soundfont, opl3_soundfont, tmp_path, capsys):
    arguments = ["dataset", "build", "--soundfont", str(fluidr3_soundfont), "--soundfont", str(opl3_soundfont),
                 "--out", str(tmp_path), "--programs", "73", "--pitches", "60-65", "--pitch-step", "3",
                 "--velocities", "100", "--seconds", "0.5", "--hold", "0.25", "--valid", "0", "--test", "0",
                 "--workers", "1", "--quiet"]  # fmt: skip
    assert main(arguments) == 0
    output = capsys.readouterr().out
    assert "FluidR3_GM.sf2: 2 notes" in output and "OPL-3_FM_128M.sf2: 2 notes" in output
    assert len(load_split(tmp_path, "train")) == 4
    with pytest.raises(SystemExit):
        main(arguments + ["--pitch-step", "0"])
    assert "--pitch-step: must be at least 1, got 0" in capsys.readouterr().err


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
