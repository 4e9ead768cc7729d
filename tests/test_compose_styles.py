"""Style- and voice-conditioned composing with a many-style composer, and composer-chorales next to it."""

from __future__ import annotations

from pathlib import Path

import pytest
import symusic
import torch
from styled_composer import styled_bundle, styled_cache, styled_checkpoint  # noqa: F401

from timbre.errors import ConfigError
from timbre.models.composer import Composer
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


def test_style_guidance_writes_the_style_s_voices_and_refuses_where_nothing_guides(
    styled_checkpoint: Path,  # noqa: F811
) -> None:
    composer = load_composer(styled_checkpoint)
    guided = compose_many(composer, 2, style="trecento", bars=3, seed=4, style_guidance=3.0)
    plain = compose_many(composer, 2, style="trecento", bars=3, seed=4)
    for score in guided:
        assert score.note_num() > 0 and {t.program for t in score.tracks} <= set(composer.style_programs["trecento"])
    assert [s.dumps_midi() for s in guided] != [s.dumps_midi() for s in plain]
    again = compose_many(composer, 2, style="trecento", bars=3, seed=4, style_guidance=3.0)
    assert [s.dumps_midi() for s in guided] == [s.dumps_midi() for s in again]
    refused = [(None, 2.0, "needs a style"), ("any", 2.0, "needs a style"), ("bach", -1.0, "finite number >= 0")]
    for style, scale, message in [*refused, ("bach", float("nan"), "finite number")]:
        with pytest.raises(ConfigError, match=message):
            compose(composer, style=style, bars=1, style_guidance=scale)
    with pytest.raises(ConfigError, match="needs a many-style composer; model.pt has no styles"):
        compose(load_composer("chorales"), bars=1, style_guidance=2.0)


def test_a_piece_longer_than_the_context_keeps_its_style_in_view(
    styled_checkpoint: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    composer = load_composer(styled_checkpoint)
    refills = []
    original = Composer._refill

    def recording(self, rows, conditions, bar_token, cache):
        refills.append((rows[:, :conditions].tolist(), bar_token, rows.shape[1]))
        return original(self, rows, conditions, bar_token, cache)

    monkeypatch.setattr(Composer, "_refill", recording)
    score = compose(composer, style="bach", voices=2, tokens=3 * composer.model.max_context, seed=0)
    assert score.note_num() and len(refills) >= 3  # the 256-token cache filled again and again
    head = composer.head("bach", 2)
    assert all(heads == [head] and bar == composer.tokenizer.vocab["Bar_None"] for heads, bar, _ in refills)
    assert all(later > earlier for (_, _, earlier), (_, _, later) in zip(refills, refills[1:]))


def test_condition_tokens_never_come_out_of_the_grammar(styled_checkpoint: Path) -> None:  # noqa: F811
    composer = load_composer(styled_checkpoint)
    grammar = TokenGrammar(composer.tokenizer, None, composer.conditions)
    assert grammar.vocab_size == composer.model.vocab_size
    state = grammar.state_after(composer.head("trecento", 3))
    assert state.last_type is None  # conditions say nothing about time
    base = composer.conditions.base_size
    assert not grammar.allowed(state)[base:].any()


def test_the_bundled_chorale_model_still_loads_and_composes() -> None:
    composer = load_composer("chorales")
    assert composer.conditions is None and composer.styles == []
    assert load_composer("composer-chorales").path == composer.path
    score = compose(composer, bars=2, seed=0)
    assert {track.program for track in score.tracks} <= {40, 41, 42, 43} and score.note_num() > 4
    with pytest.raises(ConfigError, match="trained without styles"):
        compose(composer, style="bach", bars=2)


def test_a_composer_exported_in_half_precision_loads_and_writes_its_styles(
    styled_checkpoint: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from timbre.train.checkpoint import load_checkpoint
    from timbre.train.export import export_run

    destination = export_run(styled_checkpoint, "styles-half", destination=tmp_path / "bundle", half=True)
    stored = load_checkpoint(destination / "model.pt")["model"]
    original = load_checkpoint(styled_checkpoint)["ema"]
    assert all(tensor.dtype == torch.float16 for tensor in stored.values() if tensor.is_floating_point())
    assert all(torch.equal(stored[key], tensor.half()) for key, tensor in original.items())
    composer = load_composer(destination / "model.pt")
    assert composer.styles == load_composer(styled_checkpoint).styles
    assert next(composer.model.parameters()).dtype == torch.float32
    score = compose(composer, bars=2, style="bach", seed=1)
    assert score.note_num() > 0 and {t.program for t in score.tracks if len(t.notes)} <= {40, 41, 42, 43}
    assert "stored in float16, loaded float32" in (destination / "MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_the_bundled_default_writes_the_styles_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from timbre.cli import main
    from timbre.data.styles import STYLE_NAMES

    composer = load_composer()
    assert composer.path.parent.name == "composer-styles" and load_composer("styles").path == composer.path
    assert composer.styles == ["any", *STYLE_NAMES]
    for style, voices in (("bach", "4"), ("palestrina", "4"), ("irish", "1")):
        out = tmp_path / f"{style}.mid"
        arguments = ["compose", "--style", style, "--voices", voices, "--bars", "4", "--seed", "2", "--out", str(out)]
        assert main(arguments) == 0
        programs = [track.program for track in symusic.Score(str(out)).tracks if len(track.notes)]
        assert programs and set(programs) <= set(composer.style_programs[style][: int(voices)]), style
        if style == "bach":
            assert programs == [40, 41, 42, 43]  # soprano, alto, tenor, bass
    assert main(["compose", "--list-styles"]) == 0
    listed = capsys.readouterr().out
    assert "any: unconditional" in listed and "palestrina: Palestrina's mass movements" in listed
