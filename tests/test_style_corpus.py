"""The many-style corpus: conversion of music21's pieces with style and voice labels, conditioned
and fill-in-the-middle training items, style-balanced sampling, and the training loss they feed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import symusic
import torch
from styled_composer import PIECES_PER_STYLE, TEST_STYLES, styled_bundle, styled_cache  # noqa: F401

from timbre.data.midi import collate_tokens
from timbre.data.music21_corpus import build_music21_corpus, corpus_folder, corpus_sources
from timbre.data.style_corpus import (
    StyledPiece,
    StyledWindows,
    create_style_tokenizer,
    fit_context,
    style_conditions,
)
from timbre.data.styles import STYLES, style_named
from timbre.errors import ConfigError
from timbre.models.composer import Composer
from timbre.symbolic.tokens import special_token_id


def test_conversion_labels_every_piece_and_is_done_once(styled_bundle, styled_cache: Path) -> None:  # noqa: F811
    pieces = build_music21_corpus(styled_cache, list(TEST_STYLES), PIECES_PER_STYLE, progress=False)
    assert Counter(piece.style for piece in pieces) == {style: PIECES_PER_STYLE for style in TEST_STYLES}
    folder = corpus_folder(styled_cache)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {row["id"] for row in manifest["pieces"]} == {piece.id for piece in pieces}
    assert manifest["skipped"] == {}
    for piece in pieces:
        score = symusic.Score(str(folder / piece.file))
        programs = [track.program for track in score.tracks]
        assert len(programs) == piece.voices >= 1
        # Voices take the style's programs in order, highest voice first.
        assert programs == list(style_named(piece.style).programs[: piece.voices])
        means = [np.mean([note.pitch for note in track.notes]) for track in score.tracks]
        assert means == sorted(means, reverse=True)
    assert all(piece.voices == 4 for piece in pieces if piece.style == "bach")
    # A second call converts nothing: the files are not rewritten.
    stamps = {piece.file: (folder / piece.file).stat().st_mtime_ns for piece in pieces}
    again = build_music21_corpus(styled_cache, list(TEST_STYLES), PIECES_PER_STYLE, progress=False)
    assert again == pieces
    assert stamps == {piece.file: (folder / piece.file).stat().st_mtime_ns for piece in pieces}
    with pytest.raises(ConfigError, match="unknown styles"):
        build_music21_corpus(styled_cache, ["baroque-pop"], 1, progress=False)


def test_parallel_conversion_writes_what_a_serial_one_does(tmp_path: Path, monkeypatch) -> None:
    import timbre.data.music21_corpus as music21_corpus

    everything = corpus_sources()
    chosen = [source for source in everything if source.collection == "bach"][:2]
    chosen += [source for source in everything if source.collection == "trecento"][:1]
    monkeypatch.setattr(music21_corpus, "corpus_sources", lambda styles=None: chosen)
    serial = build_music21_corpus(tmp_path / "serial", progress=False, workers=1)
    parallel = build_music21_corpus(tmp_path / "parallel", progress=False, workers=2)
    assert parallel == serial and len(serial) == 3
    folders = [corpus_folder(tmp_path / run) for run in ("serial", "parallel")]
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in folders]
    assert manifests[0] == manifests[1]
    assert manifests[1]["done_sources"] == [source.path for source in chosen]
    for piece in serial:
        midi = [(folder / piece.file).read_bytes() for folder in folders]
        assert midi[0] == midi[1]
    with pytest.raises(ConfigError, match="workers"):
        build_music21_corpus(tmp_path / "serial", progress=False, workers=0)


def test_an_archive_carries_the_conversion_to_another_cache(
    styled_bundle,  # noqa: F811 - converts the test pieces into styled_cache
    styled_cache: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
    capsys,
) -> None:
    import timbre.data.music21_corpus as music21_corpus
    from timbre.data.music21_corpus import main, read_archive, write_archive
    from timbre.errors import DatasetError

    expected = build_music21_corpus(styled_cache, list(TEST_STYLES), PIECES_PER_STYLE, progress=False)
    archive = write_archive(tmp_path / "corpus.tar.xz", styled_cache)
    assert read_archive(archive, tmp_path / "elsewhere") == len(expected)

    def parse_nothing(source):
        raise AssertionError(f"{source.path} converted again")

    monkeypatch.setattr(music21_corpus, "_parse_source", parse_nothing)
    assert build_music21_corpus(tmp_path / "elsewhere", list(TEST_STYLES), PIECES_PER_STYLE, progress=False) == expected
    for piece in expected:
        assert (corpus_folder(tmp_path / "elsewhere") / piece.file).read_bytes() == (
            corpus_folder(styled_cache) / piece.file
        ).read_bytes()

    with pytest.raises(DatasetError, match="no converted corpus"):
        write_archive(tmp_path / "empty.tar.xz", tmp_path / "nothing here")
    broken = tmp_path / "broken.tar.xz"
    broken.write_bytes(b"not an archive")
    with pytest.raises(DatasetError, match="broken.tar.xz: not a readable corpus archive"):
        read_archive(broken, tmp_path / "third")
    monkeypatch.setenv("TIMBRE_CACHE", str(tmp_path / "fourth"))
    with pytest.raises(SystemExit) as stopped:
        main(["bach", "--from-archive", str(broken)])
    assert stopped.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "broken.tar.xz: not a readable corpus archive" in error[0]


def test_corpus_sources_cover_the_styles_without_duplicate_encodings() -> None:
    sources = corpus_sources()
    collections = {source.collection for source in sources}
    assert collections == {collection for style in STYLES for collection in style.collections}
    paths = [source.path for source in sources]
    assert not any(path.endswith(".rntxt") for path in paths)
    # Beethoven's op. 18 no. 1 exists as Humdrum and MusicXML: only the MusicXML is kept.
    assert "beethoven/opus18no1/movement1.mxl" in paths and "beethoven/opus18no1/movement1.krn" not in paths
    counts = Counter(source.collection for source in sources)
    assert counts["palestrina"] > 1000 and counts["essenFolksong"] > 20  # Essen: many tunes per ABC file


def test_conversion_command_refuses_an_unknown_style_in_one_line(capsys) -> None:
    from timbre.data.music21_corpus import main

    with pytest.raises(SystemExit) as stopped:
        main(["bach", "mozartish"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown styles ['mozartish']" in error and "palestrina" in error


def synthetic_pieces(tokenizer, counts: dict[str, int], bars: int = 12) -> list[StyledPiece]:
    """Pieces of ``bars`` bars of four quarter notes in one voice, tokenized for real."""
    pieces = []
    for style, count in counts.items():
        program = style_named(style).programs[0]
        for index in range(count):
            score = symusic.Score(480)
            score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
            track = symusic.Track(program=program)
            for beat in range(4 * bars):
                track.notes.append(symusic.Note(beat * 480, 480, 60 + (beat + index) % 12, 90))
            score.tracks.append(track)
            pieces.append(
                StyledPiece(np.asarray(tokenizer.encode(score).ids, dtype=np.int64), style, 1, f"{style}{index}")
            )
    return pieces


@pytest.fixture(scope="module")
def tokenizer():
    return create_style_tokenizer()


def windows(tokenizer, pieces, **options) -> StyledWindows:
    conditions = style_conditions(tokenizer, sorted({piece.style for piece in pieces}))
    settings = dict(
        conditions=conditions, bos=special_token_id(tokenizer, "BOS"), eos=special_token_id(tokenizer, "EOS"),
        bar=tokenizer.vocab["Bar_None"], max_tokens=128, random_crops=True,
    )  # fmt: skip
    settings.update(options)
    return StyledWindows(pieces, **settings)


def test_items_open_with_conditions_that_the_loss_does_not_predict(tokenizer) -> None:
    pieces = synthetic_pieces(tokenizer, {"folk": 3, "bach": 2})
    data = windows(tokenizer, pieces, infill_rate=0.0, condition_dropout=0.0, voices_dropout=0.0)
    conditions = data.conditions
    torch.manual_seed(0)
    for index in range(len(data)):
        item = data[index]
        tokens, mask = item["tokens"].tolist(), item["mask"].tolist()
        assert len(tokens) <= 128
        assert tokens[0] == special_token_id(tokenizer, "BOS")
        assert conditions.name(tokens[1]) in ("Style_folk", "Style_bach")
        assert conditions.name(tokens[2]) == "Voices_1"
        assert mask[:3] == [True, False, False] and all(mask[3:])
        assert tokenizer[tokens[3]] == "Bar_None"  # crops start at a bar line


def test_infilling_items_hold_the_gap_after_both_sides(tokenizer) -> None:
    pieces = synthetic_pieces(tokenizer, {"folk": 2})
    data = windows(tokenizer, pieces, infill_rate=1.0, max_tokens=256)
    conditions, bar = data.conditions, tokenizer.vocab["Bar_None"]
    torch.manual_seed(1)
    seen_gaps = set()
    for index in range(20):
        tokens = data[index % len(data)]["tokens"].tolist()
        names = {token: conditions.name(token) for token in tokens if token >= conditions.base_size}
        order = [names[token] for token in tokens if token in names]
        assert order[2:5] == ["Infill_Prefix", "Infill_Suffix", "Infill_Middle"] and order[-1] == "Infill_End"
        fill_at = tokens.index(conditions.id("Infill_Middle")) + 1
        gap = int(names[tokens[fill_at]].split("_")[1])
        middle = tokens[fill_at + 1 : -1]
        assert middle.count(bar) == gap and middle[0] == bar
        seen_gaps.add(gap)
        assert len(tokens) <= 256
    assert len(seen_gaps) > 2


def test_styles_are_balanced_in_sampling(tokenizer) -> None:
    pieces = synthetic_pieces(tokenizer, {"folk": 90, "bach": 10}, bars=2)
    balanced = windows(tokenizer, pieces, style_balance=0.0)
    proportional = windows(tokenizer, pieces, style_balance=1.0)
    share = {name: float(np.mean([data.styles[i] == "bach" for i in data.slot_style]))
             for name, data in (("balanced", balanced), ("proportional", proportional))}  # fmt: skip
    assert 0.38 < share["balanced"] < 0.62
    assert share["proportional"] < 0.2


def test_fit_context_keeps_the_bars_nearest_the_gap() -> None:
    before = [[1] * 10, [2] * 10, [3] * 10]
    after = [[4] * 10, [5] * 10, [6] * 10]
    kept_before, kept_after = fit_context(before, after, 35)
    assert kept_before == [[2] * 10, [3] * 10] and kept_after == [[4] * 10]
    assert fit_context(before, after, 5) == ([], [])


def test_masked_loss_ignores_conditions_and_a_few_steps_learn(tokenizer) -> None:
    pieces = synthetic_pieces(tokenizer, {"folk": 2, "bach": 2}, bars=4)
    data = windows(tokenizer, pieces, transpose=0)
    torch.manual_seed(0)
    batch = collate_tokens([data[i] for i in range(len(data))], special_token_id(tokenizer, "PAD"))
    model = Composer(data.conditions.vocab_size, dim=32, layers=1, heads=2, ff_mult=2, dropout=0.0, max_context=128)
    loss, _ = model.training_loss(batch)
    # The loss averages the music's tokens only: Style and Voices (positions 1, 2) are no targets.
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(
            model(batch["tokens"][:, :-1]).transpose(1, 2), batch["tokens"][:, 1:], reduction="none"
        )
    music = batch["mask"][:, 1:].clone()
    assert not music[:, :2].any()
    assert torch.isclose(loss, losses[music].mean(), atol=1e-5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        step_loss, _ = model.training_loss(batch)
        optimizer.zero_grad()
        step_loss.backward()
        optimizer.step()
    assert step_loss.item() < 0.8 * loss.item()


def test_a_conversion_that_never_ends_is_cut_off() -> None:
    import time

    from timbre.data.music21_corpus import _time_limit

    started = time.perf_counter()
    with pytest.raises(TimeoutError, match="longer than 1 s"), _time_limit(1):
        while True:  # what music21's repeat expansion does on a few ABC tunes
            time.sleep(0.05)
    assert time.perf_counter() - started < 3
