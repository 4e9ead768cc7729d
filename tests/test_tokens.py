"""Tokenizer creation, save/restore, round trips on real MIDI files, and the sampling grammar."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
import symusic
import torch

from timbre.errors import ConfigError, MidiError
from timbre.symbolic.tokens import (
    TokenGrammar,
    create_tokenizer,
    decode_ids,
    encode_score,
    special_token_id,
    token_types,
    token_values,
    tokenizer_from_dict,
    tokenizer_to_dict,
)

from conftest import MIDI_FIXTURES, SONGS

READABLE = [*SONGS, MIDI_FIXTURES / "primer_melody.mid"]
BAND, PIANO = MIDI_FIXTURES / "band.mid", MIDI_FIXTURES / "piano.mid"


def notes_in_beats(score: symusic.Score) -> list[tuple]:
    """Every note as (program, onset, pitch, duration, velocity), times in quarter notes."""
    tpq = score.ticks_per_quarter
    return sorted(
        (-1 if track.is_drum else track.program, Fraction(n.time, tpq), n.pitch, Fraction(n.duration, tpq), n.velocity)
        for track in score.tracks
        for n in track.notes
    )


@pytest.mark.parametrize("kind", ["remi", "tsd"])
@pytest.mark.parametrize("path", READABLE, ids=lambda path: path.name)
def test_round_trip_reproduces_the_quantized_notes(kind: str, path: Path) -> None:
    tokenizer = create_tokenizer(kind, velocities=32)
    score = symusic.Score(str(path))
    ids = encode_score(tokenizer, score)
    decoded = decode_ids(tokenizer, ids)
    expected = notes_in_beats(tokenizer.preprocess_score(score.copy()))
    assert notes_in_beats(decoded) == expected
    assert len(expected) == score.note_num()  # nothing was dropped by the quantization


def test_saved_tokenizer_is_json_and_restores_the_same_vocabulary() -> None:
    tokenizer = create_tokenizer("remi", velocities=0, time_signatures=True)
    params = tokenizer_to_dict(tokenizer)
    restored = tokenizer_from_dict(json.loads(json.dumps(params)))
    assert type(restored) is type(tokenizer)
    assert restored.vocab == tokenizer.vocab
    score = symusic.Score(str(BAND))
    assert encode_score(restored, score) == encode_score(tokenizer, score)


def test_velocity_tokens_are_optional() -> None:
    with_velocity = token_types(create_tokenizer("remi", velocities=32))
    without = token_types(create_tokenizer("remi", velocities=0))
    assert with_velocity.count("Velocity") == 32
    assert "Velocity" not in without


def test_unknown_tokenizer_and_scores_without_notes_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        create_tokenizer("octuple")
    with pytest.raises(ConfigError, match="unknown miditok"):
        tokenizer_from_dict({"tokenization": "NotATokenizer"})
    with pytest.raises(MidiError, match="no notes"):
        encode_score(create_tokenizer(), symusic.Score(480))


def test_token_values_parse_pitches_and_drum_program() -> None:
    tokenizer = create_tokenizer()
    pitches = token_values(tokenizer, "Pitch")
    assert pitches[tokenizer.vocab["Pitch_60"]] == 60
    assert token_values(tokenizer, "Program")[tokenizer.vocab["Program_-1"]] == -1
    assert special_token_id(tokenizer, "BOS") == tokenizer.vocab["BOS_None"]


@pytest.mark.parametrize("kind", ["remi", "tsd"])
@pytest.mark.parametrize("velocities", [0, 32])
def test_grammar_accepts_every_real_sequence(kind: str, velocities: int) -> None:
    tokenizer = create_tokenizer(kind, velocities=velocities)
    grammar = TokenGrammar(tokenizer)
    for path in SONGS:
        ids = encode_score(tokenizer, symusic.Score(str(path)))
        state = grammar.initial_state()
        for position, token in enumerate(ids):
            assert grammar.allowed(state)[token], f"{path.name}: token {position} {tokenizer[token]} refused"
            grammar.advance(state, token)
        assert state.notes == symusic.Score(str(path)).note_num()


# Bars completed by the end: all but the last one (no bar line follows it). The band's 32 bars
# include a 2/4 one; the piano's 40 bars of 4/4 then 3/4 are followed by a bar with a final chord.
@pytest.mark.parametrize("path, bars", [(BAND, 31), (PIANO, 40)], ids=["band", "piano"])
def test_grammar_counts_bars_alike_for_remi_and_tsd(path: Path, bars: int) -> None:
    score = symusic.Score(str(path))
    counted = []
    for kind in ("remi", "tsd"):
        tokenizer = create_tokenizer(kind)
        counted.append(TokenGrammar(tokenizer).state_after(encode_score(tokenizer, score)).bars)
    assert counted == [bars, bars]


@pytest.mark.parametrize("kind", ["remi", "tsd"])
def test_sequences_sampled_under_the_grammar_always_decode(kind: str) -> None:
    tokenizer = create_tokenizer(kind, velocities=0)
    grammar = TokenGrammar(tokenizer, programs=[40, 41, 42, 43])
    types = token_types(tokenizer)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        state, ids = grammar.initial_state(), []
        for _ in range(300):
            allowed = grammar.allowed(state)
            candidates = allowed.nonzero().squeeze(1)
            token = int(candidates[torch.randint(len(candidates), (1,), generator=generator)])
            grammar.advance(state, token)
            ids.append(token)
        if state.inside_note:  # cut a note short the way compose() does
            ids = ids[: max(i for i, t in enumerate(ids) if types[t] == "Duration") + 1]
        score = decode_ids(tokenizer, ids)
        assert score.note_num() == sum(types[t] == "Duration" for t in ids)
        assert {track.program for track in score.tracks} <= {40, 41, 42, 43}
        symusic.Score.from_midi(score.dumps_midi())  # a valid MIDI file


def test_remi_positions_must_increase_within_a_bar() -> None:
    tokenizer = create_tokenizer("remi", velocities=0)
    grammar = TokenGrammar(tokenizer)
    state = grammar.state_after([tokenizer.vocab[t] for t in ("Bar_None", "TimeSig_3/4", "Position_8")])
    allowed = grammar.allowed(state)
    assert allowed[tokenizer.vocab["Program_0"]]
    assert not allowed[tokenizer.vocab["Position_4"]]
    state = grammar.state_after(
        [
            tokenizer.vocab[t]
            for t in ("Bar_None", "TimeSig_3/4", "Position_8", "Program_0", "Pitch_60", "Duration_1.0.8")
        ]
    )
    allowed = grammar.allowed(state)
    assert allowed[tokenizer.vocab["Position_9"]] and allowed[tokenizer.vocab["Bar_None"]]
    assert not allowed[tokenizer.vocab["Position_8"]]
    assert not allowed[tokenizer.vocab["Position_24"]]  # a 3/4 bar has positions 0-23
    assert not allowed[tokenizer.vocab["EOS_None"]]
