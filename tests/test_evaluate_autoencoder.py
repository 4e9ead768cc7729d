"""Tests of the autoencoder evaluation: reading and choosing notes, the baselines, ``timbre evaluate``."""

from __future__ import annotations

import json
import shlex
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from timbre.cli import build_parser, main
from timbre.errors import ConfigError, DatasetError
from timbre.evaluation.notes import (
    Note,
    read_note_folder,
    select_notes,
    select_sweep_pairs,
)
from timbre.evaluation.report import report_excerpt
from timbre.evaluation.scoring import mean_embedding, untrained_model
from timbre.evaluation.testset import RECIPE_FILE, build_testset
from timbre.hub import load
from timbre.io.audio import save_wav

SAMPLE_RATE = 16000


def notes_of(instruments: dict[str, list[int]], velocities: tuple[int, ...] = (100,)) -> list[Note]:
    return [
        Note(f"{name}-{pitch:03d}-{velocity:03d}", name, pitch, velocity, Path(f"{name}-{pitch}-{velocity}.wav"))
        for name, pitches in instruments.items()
        for pitch in pitches
        for velocity in velocities
    ]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_notes_are_chosen_one_per_instrument_and_pitch_in_whole_pitch_groups():
    notes = notes_of({"a": list(range(40, 80)), "b": list(range(40, 80)), "c": [60, 61]}, velocities=(25, 100, 127))
    everything = select_notes(notes)
    # One note per (instrument, pitch), the velocity nearest to 100.
    assert len(everything) == 40 + 40 + 2 and {notes[i].velocity for i in everything} == {100}
    chosen = select_notes(notes, 9, seed=3)
    assert chosen == select_notes(notes, 9, seed=3)
    by_pitch: dict[int, set[str]] = {}
    for index in chosen:
        by_pitch.setdefault(notes[index].pitch, set()).add(notes[index].instrument)
    # Whole groups: every instrument that has a chosen pitch is there; as many pitches as fit in 9 notes.
    for pitch, instruments in by_pitch.items():
        assert instruments == ({"a", "b", "c"} if pitch in (60, 61) else {"a", "b"})
    assert len(chosen) >= 8 and len(chosen) <= 9
    pitches = sorted(by_pitch)
    # Spread over the range 40-79, not bunched together.
    assert pitches[-1] - pitches[0] >= 25
    # A single pitch holding more instruments than asked for keeps a seeded subset.
    crowd = notes_of({name: [60] for name in "abcdef"})
    assert len(select_notes(crowd, 4, seed=0)) == 4


def test_sweep_pairs_join_two_instruments_at_one_pitch():
    notes = notes_of({"a": [48, 60, 72], "b": [60, 72], "c": [60], "d": [36]})
    pairs = select_sweep_pairs(notes, 10, seed=0)
    # Pitch 60 has three instruments (one pair), 72 has two (one pair); 36 and 48 have one each.
    assert len(pairs) == 2 and len(set(pairs)) == 2
    for a, b in pairs:
        assert notes[a].pitch == notes[b].pitch in (60, 72)
        assert notes[a].instrument != notes[b].instrument
    assert select_sweep_pairs(notes, 1, seed=0) == pairs[:1]
    assert select_sweep_pairs(notes_of({"a": [60, 72]}), 4) == []


def write_tone(path: Path, midi: float, seconds: float = 0.5) -> None:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    save_wav(path, (0.3 * np.sin(2 * np.pi * 440 * 2 ** ((midi - 69) / 12) * t)).astype(np.float32), SAMPLE_RATE)


def test_a_folder_of_wav_files_with_the_pitch_in_their_names(tmp_path: Path):
    for name in ("flute_60.wav", "program-073-pitch-062.wav", "violin-C4.wav", "reed_acoustic_011-062-075.wav",
                 "cello/48.wav", "mystery.wav"):  # fmt: skip
        write_tone(tmp_path / name, 60)
    (tmp_path / "notes.json").write_text(json.dumps({"mystery.wav": {"pitch": 67, "instrument": "oboe"}}))
    folder = read_note_folder(tmp_path)
    assert folder.layout == "audio files" and folder.split is None
    found = {(note.instrument, note.pitch, note.velocity) for note in folder.notes}
    assert found == {
        ("flute", 60, None), ("program-073", 62, None), ("violin", 60, None), ("reed_acoustic_011", 62, 75),
        ("cello", 48, None), ("oboe", 67, None),
    }  # fmt: skip
    assert {note.name for note in folder.notes} >= {"cello/48", "mystery"}
    in_range = read_note_folder(tmp_path, pitch_range=(59, 62)).notes
    assert [note.name for note in in_range] == ["flute_60", "program-073-pitch-062", "reed_acoustic_011-062-075",
                                                "violin-C4"]  # fmt: skip

    (tmp_path / "notes.json").unlink()
    with pytest.raises(DatasetError, match=r"mystery\.wav: cannot tell the MIDI pitch"):
        read_note_folder(tmp_path)
    with pytest.raises(DatasetError, match="no examples.json for split 'test'"):
        read_note_folder(tmp_path / "cello", split="test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no notes"):
        read_note_folder(tmp_path / "empty")


def test_nsynth_layouts_are_read_by_split(note_dataset: Path):
    train = read_note_folder(note_dataset, split="train")
    assert train.layout == "nsynth" and train.split == "train" and len(train.notes) == 4
    assert {note.instrument for note in train.notes} == {"keyboard_acoustic_000", "string_acoustic_000"}
    # A split directory is read as it is; a root without a test split says where it looked.
    assert read_note_folder(note_dataset / "nsynth-valid").notes[0].instrument == "flute_acoustic_001"
    with pytest.raises(DatasetError, match="no examples.json for split 'test'"):
        read_note_folder(note_dataset)
    with pytest.raises(ConfigError, match="single split directory"):
        read_note_folder(note_dataset / "nsynth-valid", split="valid")


def test_untrained_baseline_is_the_same_config_with_seeded_weights(fast_checkpoint: Path):
    model = load(fast_checkpoint)
    state = torch.random.get_rng_state()
    # The fixture checkpoint holds the weights of the config instantiated after torch.manual_seed(0).
    same = untrained_model(model, seed=0).autoencoder.state_dict()
    other = untrained_model(model, seed=1).autoencoder.state_dict()
    assert torch.equal(torch.random.get_rng_state(), state), "building the baseline changed the global RNG"
    for key, tensor in model.autoencoder.state_dict().items():
        assert torch.equal(same[key], tensor), key
    assert any(not torch.equal(other[key], tensor) for key, tensor in same.items())


def test_the_fixed_embedding_is_the_frame_by_frame_mean():
    model = load()
    first, second = (model.encode(np.random.default_rng(seed).normal(0, 0.1, 8000).astype(np.float32))
                     for seed in (0, 1))  # fmt: skip
    fixed = mean_embedding([first, second])
    assert torch.allclose(fixed.tensor, (first.tensor + second.tensor) / 2)
    with pytest.raises(ValueError, match="one length"):
        mean_embedding([first, model.encode(np.zeros(16000, np.float32))])


@pytest.fixture(scope="module")
def tiny_testset(fluidr3_soundfont: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Piano, violin and flute at pitches 60 and 67, 1 s notes, built like the standard test set."""
    out = tmp_path_factory.mktemp("testset") / "set"
    build_testset(fluidr3_soundfont, out, programs=[0, 40, 73], pitches=[60, 67], seconds=1.0, hold=0.75,
                  progress=False)  # fmt: skip
    return out


def test_the_test_set_is_one_split_directory_with_its_recipe(tiny_testset: Path, fluidr3_soundfont: Path):
    recipe = json.loads((tiny_testset / RECIPE_FILE).read_text())
    assert recipe["notes"] == 6 and recipe["pitches"] == [60, 67] and recipe["velocity"] == 100
    assert sorted(path.name for path in tiny_testset.iterdir()) == ["audio", "examples.json", RECIPE_FILE]
    assert len(list((tiny_testset / "audio").glob("*.wav"))) == 6
    # The same recipe again is a no-op; another recipe in the same folder is refused.
    assert build_testset(fluidr3_soundfont, tiny_testset, programs=[0, 40, 73], pitches=[60, 67], seconds=1.0,
                         hold=0.75, progress=False) == recipe  # fmt: skip
    with pytest.raises(DatasetError, match="another recipe"):
        build_testset(fluidr3_soundfont, tiny_testset, programs=[0], pitches=[60], progress=False)


@pytest.mark.slow
def test_evaluate_the_bundled_model_end_to_end(tiny_testset: Path, tmp_path: Path, capsys):
    out = tmp_path / "report"
    arguments = ["evaluate", "autoencoder", "--data", str(tiny_testset), "--sweeps", "1", "--steps", "3",
                 "--out", str(out)]  # fmt: skip
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "6 notes of 3 instruments at 2 pitches" in printed and "fixed embedding" in printed

    report = json.loads((out / "report.json").read_text())
    assert report["model"]["name"] == "default" and report["model"]["decoder"] == "fast"
    assert report["data"]["layout"] == "nsynth" and report["data"]["notes"] == 6
    assert report["data"]["test_set"]["programs"] == [0, 40, 73]  # the recipe travels with the report
    summary = report["summary"]
    assert list(summary) == ["original", "model", "fixed_embedding", "untrained"]
    original = summary["original"]
    assert original["identification"]["top1"] == 1.0 and original["spectral_distance"]["mean"] == 0.0
    # Real FluidR3 piano, violin and flute at 60 and 67: the tracker hears their pitch.
    assert original["pitch"]["accuracy"] == 1.0
    # One embedding decoded at one pitch gives one sound for all three instruments: chance exactly.
    fixed = summary["fixed_embedding"]["identification"]
    assert fixed["top1"] == pytest.approx(1 / 3) == pytest.approx(fixed["chance_top1"])
    assert summary["fixed_embedding"]["pitch"] is None  # pitch of the baselines only with --track-pitch all
    for name in ("model", "fixed_embedding", "untrained"):
        assert summary[name]["spectral_distance"]["mean"] > 0 and summary[name]["loudness_error_db"]["mean"] > 0
        # A level bias is an average of signed differences: never larger than the absolute error.
        assert abs(summary[name]["loudness_bias_db"]["mean"]) <= summary[name]["loudness_error_db"]["mean"] + 1e-9
    # The trained model is closer to its inputs than the untrained one.
    assert summary["model"]["spectral_distance"]["mean"] < summary["untrained"]["spectral_distance"]["mean"]
    assert report["targets"]["top1"]["value"] == summary["model"]["identification"]["top1"]
    assert len(report["notes"]) == 6 and report["notes"][0]["model"]["identification_rank"] in (1, 2, 3)

    # Every instrument on the sheet: 3 rows x 4 columns (original, model, two baselines) and their audio.
    assert png_size(out / "rainbowgrams.png") == (800, 510)
    assert len(report["rainbowgram_sheet"]) == 3
    assert len(list((out / "audio").glob("*.wav"))) == 3 * 4 + 1 * 3
    assert png_size(out / "sweeps.png") == (600, 160) and (out / "pitch_errors.png").is_file()
    assert report["interpolation"]["summary"]["sweeps"] == 1

    markdown = (out / "report.md").read_text()
    assert "| the original notes | 100.0% | 100.0% | 0.000 ± 0.000 | 0.00 ± 0.00 | +0.00 | 100.0% |" in markdown
    assert "![rainbowgrams of every instrument" in markdown and "(a test set rendered from `" in markdown
    excerpt = report_excerpt(out / "report.md")
    assert "# Autoencoder" not in excerpt and "![" not in excerpt and "| the original notes |" in excerpt

    # The recorded command repeats the run: it parses to the same settings.
    repeated = vars(build_parser().parse_args([*shlex.split(report["command"])[1:], "--out", str(out)]))
    assert repeated["data"] == str(tiny_testset) and repeated["baselines"] == ["fixed_embedding", "untrained"]
    assert repeated["sweeps"] == 1 and repeated["steps"] == 3 and repeated["track_pitch"] == "model"


@pytest.mark.slow
def test_evaluate_a_folder_of_named_wav_files(tiny_testset: Path, tmp_path: Path):
    folder = tmp_path / "notes"
    folder.mkdir()
    for wav in (tiny_testset / "audio").glob("*.wav"):
        instrument, pitch, _ = wav.stem.rsplit("-", 2)
        shutil.copy(wav, folder / f"{instrument.split('_')[0]}_{int(pitch)}.wav")
    out = tmp_path / "report"
    arguments = ["evaluate", "autoencoder", "--data", str(folder), "--out", str(out), "--baselines", "none",
                 "--track-pitch", "none", "--sweeps", "0", "--seconds", "0.5", "--pitches", "60-60"]  # fmt: skip
    assert main(arguments) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["layout"] == "audio files" and report["data"]["test_set"] is None
    assert report["data"]["instruments"] == ["flute", "keyboard", "string"]
    assert report["data"]["seconds_per_note"] == 0.5 and report["data"]["pitches"] == [60]
    assert list(report["summary"]) == ["original", "model"] and report["summary"]["model"]["pitch"] is None
    assert png_size(out / "rainbowgrams.png") == (400, 510) and not (out / "pitch_errors.png").exists()
    assert "--baselines none" in report["command"]


def test_bad_settings_and_folders_fail_with_one_line(tmp_path: Path, capsys):
    common = ["evaluate", "autoencoder", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--data", str(tmp_path), "--steps", "1"])
    assert exit_info.value.code == 2 and "at least 2 steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*common, "--data", str(tmp_path), "--baselines", "average"])
    assert "expected 'none' or some of fixed_embedding,untrained" in capsys.readouterr().err
    write_tone(tmp_path / "notes" / "unnamed.wav", 60)
    assert main([*common, "--data", str(tmp_path / "notes")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unnamed.wav: cannot tell the MIDI pitch" in error
    assert not (tmp_path / "out").exists()


def test_a_reference_folder_is_scored_beside_the_model(tiny_testset: Path, tmp_path: Path):
    """The same notes as reference: a perfect row; a folder lacking notes: one clear error."""
    from timbre.evaluation.autoencoder import evaluate_autoencoder

    report = evaluate_autoencoder("default", tiny_testset, tmp_path / "report", baselines=(), track_pitch="none",
                                  sweeps=0, seconds=0.5, reference=tiny_testset)  # fmt: skip
    reference = report["summary"]["reference"]
    assert reference["identification"]["top1"] == 1.0 and reference["spectral_distance"]["mean"] == 0.0
    assert report["reference"] == {
        "folder": str(tiny_testset),
        "soundfont": str(report["data"]["test_set"]["soundfont"]),
    }
    assert (
        "--reference" in report["command"]
        and "- Reference: the same notes from" in (tmp_path / "report" / "report.md").read_text()
    )
    partial = tmp_path / "partial"
    shutil.copytree(tiny_testset, partial)
    missing = next((partial / "audio").glob("*.wav"))
    examples = json.loads((partial / "examples.json").read_text())
    del examples[missing.stem]
    (partial / "examples.json").write_text(json.dumps(examples))
    missing.unlink()
    with pytest.raises(DatasetError, match="reference folder lacks 1 of the evaluated notes"):
        evaluate_autoencoder("default", tiny_testset, tmp_path / "other", baselines=(), track_pitch="none",
                             sweeps=0, seconds=0.5, reference=partial)  # fmt: skip


def test_notes_can_be_encoded_told_nothing_as_encode_file_is(tiny_testset: Path, tmp_path: Path):
    """``--encode-pitch heard``: the model hears each note's pitch (YIN hears these six right, so the
    figures are the labelled run's); the setting is recorded in the report's command."""
    from timbre.evaluation.autoencoder import evaluate_autoencoder

    options = {"baselines": (), "track_pitch": "none", "sweeps": 0, "seconds": 0.5}
    given = evaluate_autoencoder("default", tiny_testset, tmp_path / "given", **options)
    heard = evaluate_autoencoder("default", tiny_testset, tmp_path / "heard", encode_pitch="heard", **options)
    assert heard["summary"]["model"] == given["summary"]["model"]
    assert "--encode-pitch heard" in heard["command"] and "--encode-pitch" not in given["command"]
    with pytest.raises(ConfigError, match="encode_pitch must be one of given, heard"):
        evaluate_autoencoder("default", tiny_testset, tmp_path / "other", encode_pitch="midi", **options)
