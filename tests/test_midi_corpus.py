"""MIDI corpora: chorale conversion and cache, folders of MIDI files, splits, windows, batches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import symusic
import torch

import timbre.data.midi as midi
from timbre.data import DataBundle
from timbre.errors import ConfigError, DatasetError
from timbre.symbolic.tokens import create_tokenizer, tokenizer_from_dict

from conftest import MIDI_FIXTURES


@pytest.fixture(scope="module")
def chorale_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding the first six chorales (about a second to convert)."""
    cache = tmp_path_factory.mktemp("cache")
    midi.build_chorale_corpus(cache, limit=6)
    return cache


def test_chorale_has_four_voices_with_distinct_programs_and_aligned_bars() -> None:
    score = midi.chorale_to_score("bach/bwv269")  # 3/4 with a one-beat pickup
    assert [(t.name, t.program) for t in score.tracks] == list(midi.CHORALE_VOICES)
    assert all(len(t.notes) > 40 for t in score.tracks)
    # The pickup is shifted to the last beat of a full first bar, so beat 1 falls on a bar line.
    assert score.tracks[0].notes[0].time == 2 * midi.CHORALE_TICKS_PER_QUARTER
    assert (score.time_signatures[0].numerator, score.time_signatures[0].denominator) == (3, 4)
    mean_pitch = [np.mean([n.pitch for n in t.notes]) for t in score.tracks]
    assert mean_pitch == sorted(mean_pitch, reverse=True)  # soprano above alto above tenor above bass


def test_chorale_with_bad_repeats_fails_to_convert() -> None:
    with pytest.raises(Exception, match="repeat"):
        midi.chorale_to_score("bach/bwv277")


def test_chorale_cache_is_built_once(chorale_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = sorted((chorale_cache / "chorales").glob("*.mid"))
    assert len(files) == 6
    monkeypatch.setattr(midi, "chorale_to_score", lambda name: pytest.fail(f"{name} converted again"))
    assert midi.build_chorale_corpus(chorale_cache, limit=6) == [
        chorale_cache / "chorales" / (name.replace("/", "_") + ".mid") for name in midi.chorale_names()[:6]
    ]


def test_chorales_that_fail_are_skipped_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = midi.chorale_to_score
    failing = midi.chorale_names()[1]

    def convert(name: str) -> symusic.Score:
        if name == failing:
            raise ValueError("cannot expand Stream: badly formed repeats")
        return real(name)

    monkeypatch.setattr(midi, "chorale_to_score", convert)
    with pytest.warns(UserWarning, match=f"skipping chorale {failing}"):
        files = midi.build_chorale_corpus(tmp_path, limit=3)
    assert len(files) == 2
    assert failing in json.loads((tmp_path / "chorales" / "skipped.json").read_text())


def test_midi_folder_is_searched_recursively(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(MIDI_FIXTURES / "primer_melody.mid", tmp_path / "a" / "b" / "one.MID")
    shutil.copy(MIDI_FIXTURES / "piano.mid", tmp_path / "two.midi")
    (tmp_path / "notes.txt").write_text("not midi")
    assert midi.find_midi_files(tmp_path) == [tmp_path / "a" / "b" / "one.MID", tmp_path / "two.midi"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no .mid or .midi files"):
        midi.find_midi_files(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        midi.find_midi_files(tmp_path / "missing")


def test_split_by_piece_is_seeded_disjoint_and_complete() -> None:
    train, valid, test = midi.split_by_piece(50, 0.1, 0.2, seed=3)
    assert (len(train), len(valid), len(test)) == (35, 5, 10)
    assert sorted(train + valid + test) == list(range(50))
    assert midi.split_by_piece(50, 0.1, 0.2, seed=3) == (train, valid, test)
    assert midi.split_by_piece(50, 0.1, 0.2, seed=4) != (train, valid, test)
    assert [len(s) for s in midi.split_by_piece(4, 0.1, 0.1, seed=0)] == [2, 1, 1]
    with pytest.raises(ConfigError):
        midi.split_by_piece(10, 0.6, 0.5, seed=0)


def test_folder_corpus_skips_broken_files_with_a_warning(tmp_path: Path) -> None:
    readable = ("piano.mid", "primer_melody.mid", "band.mid")
    for name in (*readable, "empty.mid", "corrupt_control_value.mid", "truncated.mid"):
        shutil.copy(MIDI_FIXTURES / name, tmp_path / name)
    with pytest.warns(UserWarning) as warnings:
        bundle = midi.build_midi_bundle(folder=str(tmp_path), max_tokens=64, valid=0.34, test=0.0)
    skipped = sorted(str(warning.message).split(": ")[0].removeprefix("skipping ") for warning in warnings)
    assert skipped == [str(tmp_path / name) for name in ("corrupt_control_value.mid", "empty.mid", "truncated.mid")]
    assert len(bundle.train.pieces) + len(bundle.valid.pieces) == len(readable)


def test_chorale_bundle_feeds_the_trainer(chorale_cache: Path) -> None:
    bundle = midi.build_midi_bundle(
        corpus="chorales", cache_dir=str(chorale_cache), limit=6, velocities=0, max_tokens=128, valid=0.2, test=0.2
    )
    assert isinstance(bundle, DataBundle)
    tokenizer = tokenizer_from_dict(json.loads(json.dumps(bundle.artifacts["tokenizer"])))
    assert bundle.model_overrides == {"vocab_size": len(tokenizer), "pad_id": tokenizer.vocab["PAD_None"]}
    assert bundle.artifacts["programs"] == [40, 41, 42, 43]
    assert bundle.artifacts["corpus"]["limit"] == 6
    assert (len(bundle.train), len(bundle.train.pieces), len(bundle.valid.pieces)) == (4, 4, 1)
    batch = bundle.collate_fn([bundle.train[0], bundle.train[1], bundle.valid[len(bundle.valid) - 1]])
    assert batch["tokens"].shape[0] == 3 and batch["tokens"].shape[1] <= 128
    assert batch["mask"].sum(1).tolist() == [128, 128, len(bundle.valid[len(bundle.valid) - 1]["tokens"])]
    assert (batch["tokens"][~batch["mask"]] == bundle.model_overrides["pad_id"]).all()


def test_validation_windows_predict_every_token_once() -> None:
    pieces = [np.arange(10), np.arange(100, 103)]
    windows = midi.TokenWindows(pieces, max_tokens=4, random_crops=False)
    targets = [t for i in range(len(windows)) for t in windows[i]["tokens"][1:].tolist()]
    assert targets == list(range(1, 10)) + [101, 102]


def test_random_crops_transpose_every_pitch_by_the_same_interval() -> None:
    tokenizer = create_tokenizer("remi", velocities=0)
    vocab = tokenizer.vocab
    names = [
        "Bar_None",
        "Position_0",
        "Program_40",
        "Pitch_60",
        "Duration_1.0.8",
        "Program_41",
        "Pitch_67",
        "Duration_1.0.8",
    ]
    piece = np.array([vocab[n] for n in names])
    windows = midi.TokenWindows(
        [piece], 8, True, {i: int(t.split("_")[1]) for t, i in vocab.items() if t.startswith("Pitch_")}, 5
    )
    shifts = set()
    torch.manual_seed(0)
    for _ in range(40):
        tokens = [tokenizer[i] for i in windows[0]["tokens"].tolist()]
        low, high = int(tokens[3].split("_")[1]), int(tokens[6].split("_")[1])
        assert high - low == 7 and -5 <= low - 60 <= 5
        assert [t for i, t in enumerate(tokens) if i not in (3, 6)] == [
            n for i, n in enumerate(names) if i not in (3, 6)
        ]
        shifts.add(low - 60)
    assert len(shifts) > 5
