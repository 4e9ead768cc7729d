"""Style- and voice-conditioned composing with a many-style composer, and composer-chorales next to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from styled_composer import styled_bundle, styled_cache, styled_checkpoint  # noqa: F401

from timbre.errors import ConfigError
from timbre.symbolic.compose import compose, compose_many, load_composer
from timbre.symbolic.tokens import TokenGrammar


def test_a_style_writes_with_its_voices_only(styled_checkpoint: Path) -> None:  # noqa: F811
    composer = load_composer(styled_checkpoint)
    assert composer.styles == ["any", "bach", "trecento"]
    assert composer.head("bach", 2)[1:] == [composer.conditions.id("Style_bach"), composer.conditions.id("Voices_2")]
    for style in ("bach", "trecento"):
        for score in compose_many(composer, 3, style=style, bars=4, seed=0):
            assert {track.program for track in score.tracks} <= set(composer.style_programs[style])
    two = compose(composer, style="bach", voices=2, bars=4, seed=0)
    assert {track.program for track in two.tracks} <= {40, 41}
    # The same seed gives the same piece; "any" may use every program of every style.
    assert (
        compose(composer, style="bach", bars=4, seed=5).dumps_midi()
        == compose(composer, style="bach", bars=4, seed=5).dumps_midi()
    )
    free = compose_many(composer, 4, bars=4, seed=1)
    assert set().union(*({t.program for t in s.tracks} for s in free)) <= set(composer.programs)
    with pytest.raises(ConfigError, match="style 'jazz' is unknown"):
        compose(composer, style="jazz", bars=2)


def test_condition_tokens_never_come_out_of_the_grammar(styled_checkpoint: Path) -> None:  # noqa: F811
    composer = load_composer(styled_checkpoint)
    grammar = TokenGrammar(composer.tokenizer, None, composer.conditions)
    assert grammar.vocab_size == composer.model.vocab_size
    state = grammar.state_after(composer.head("trecento", 3))
    assert state.last_type is None  # conditions say nothing about time
    base = composer.conditions.base_size
    assert not grammar.allowed(state)[base:].any()


def test_the_bundled_chorale_model_still_loads_and_composes() -> None:
    composer = load_composer()
    assert composer.conditions is None and composer.styles == []
    score = compose(composer, bars=2, seed=0)
    assert {track.program for track in score.tracks} <= {40, 41, 42, 43} and score.note_num() > 4
    with pytest.raises(ConfigError, match="trained without styles"):
        compose(composer, style="bach", bars=2)
