"""Composer evaluation: the Kneser-Ney baseline, bits per token, music statistics, the report."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import symusic
import torch

from timbre.cli import main
from timbre.data.midi import build_midi_bundle, corpus_files
from timbre.evaluation.composer import (
    KneserNeyModel,
    _skipped_pieces_summarised,
    key_normalized_pitch_class_histogram,
    model_bits_per_token,
    pitch_class_histogram,
    polyphony,
    scale_consistency,
)
from timbre.models.composer import Composer
from timbre.train.checkpoint import save_checkpoint


def score_of(notes: list[tuple[int, int, int]], program: int = 0) -> symusic.Score:
    """A one-track score of (onset, duration, pitch) notes at 4 ticks per quarter."""
    score = symusic.Score(4)
    track = symusic.Track(program=program)
    for onset, duration, pitch in notes:
        track.notes.append(symusic.Note(onset, duration, pitch, 80))
    score.tracks.append(track)
    return score


@pytest.mark.parametrize("context", [(), (1,), (1, 2), (7, 7), (9, 9)])
def test_kneser_ney_probabilities_sum_to_one(context: tuple[int, ...]) -> None:
    sequences = [[0, 1, 2, 3, 1, 2, 4, 1, 2, 3], [0, 2, 2, 1, 3, 4, 4, 1]]
    model = KneserNeyModel(3, vocab_size=10).fit(sequences)
    assert sum(model.probability(context, token) for token in range(10)) == pytest.approx(1.0)


def test_kneser_ney_learns_repetition_and_unigram_matches_counts() -> None:
    pattern = [0] + [1, 2, 3] * 30
    trigram = KneserNeyModel(3, vocab_size=5).fit([pattern])
    unigram = KneserNeyModel(1, vocab_size=5).fit([pattern])
    assert trigram.bits_per_token([pattern]) < 0.2 and unigram.bits_per_token([pattern]) > 1.5
    # One level: P(w) = max(c(w) - D, 0) / N + D * types / N / V, here c = 30 for each of 3 tokens.
    discount = 0.5  # no token occurs once or twice, so the default discount applies
    expected = (30 - discount) / 90 + discount * 3 / 90 / 5
    assert unigram.probability((), 1) == pytest.approx(expected)
    assert unigram.bits_per_token([pattern]) == pytest.approx(-math.log2(expected))


def test_sliding_windows_score_every_token_once() -> None:
    torch.manual_seed(0)
    model = Composer(20, dim=16, layers=1, heads=2, dropout=0.0, max_context=64).eval()
    sequence = np.random.default_rng(0).integers(0, 20, 50)
    with torch.no_grad():
        logits = model(torch.as_tensor(sequence)[None, :-1])[0]
    exact = -logits.log_softmax(-1).gather(1, torch.as_tensor(sequence[1:])[:, None]).mean().item() / math.log(2)
    assert model_bits_per_token(model, [sequence]) == pytest.approx(exact, rel=1e-5)
    # With a shorter window, early tokens keep the same scores and the mean stays close.
    assert model_bits_per_token(model, [sequence], context=16) == pytest.approx(exact, rel=0.05)


def test_music_statistics_on_known_scores() -> None:
    c_major = score_of([(i * 4, 4, pitch) for i, pitch in enumerate([60, 62, 64, 65, 67, 69, 71, 72])])
    assert scale_consistency(c_major) == 1.0
    histogram = pitch_class_histogram([c_major])
    assert histogram[0] == pytest.approx(0.25) and histogram[1] == 0.0
    chromatic = score_of([(i, 1, 60 + i) for i in range(12)])
    assert scale_consistency(chromatic) == pytest.approx(7 / 12)
    d_major = score_of([(i * 4, 4, pitch + 2) for i, pitch in enumerate([60, 62, 64, 65, 67, 69, 71, 72])])
    assert np.allclose(key_normalized_pitch_class_histogram([c_major, d_major]), histogram)
    chord = score_of([(0, 8, 60), (0, 8, 64), (0, 8, 67), (4, 4, 72)])
    assert polyphony(chord) == pytest.approx((3 * 4 + 4 * 4) / 8)


@pytest.mark.slow
def test_evaluate_command_writes_the_report(tmp_path: Path) -> None:
    data = build_midi_bundle(corpus="chorales", cache_dir=str(tmp_path), limit=8, velocities=0, valid=0.2, test=0.2)
    config = {
        "_target_": "timbre.models.composer.Composer",
        **data.model_overrides,
        "dim": 32,
        "layers": 1,
        "heads": 2,
        "max_context": 256,
    }
    torch.manual_seed(0)
    state = Composer(**{key: value for key, value in config.items() if key != "_target_"}).state_dict()
    checkpoint = save_checkpoint(
        tmp_path / "model.pt",
        {"model_config": config, "model": state, "ema": state, "artifacts": data.artifacts, "step": 0},
    )
    out = tmp_path / "report"
    arguments = ["evaluate", "composer", "--model", str(checkpoint), "--out", str(out), "--samples", "2", "--bars", "2"]
    assert main([*arguments, "--cache-dir", str(tmp_path)]) == 0
    report = json.loads((out / "composer.json").read_text())
    likelihood = report["likelihood"]
    assert report["pieces"] == {"train": 4, "valid": 2, "test": 2}
    # An untrained model is close to uniform over the vocabulary; the n-gram is far better.
    assert likelihood["model_bits_per_token"] > likelihood["ngram_bits_per_token"]
    assert likelihood["target_met"] is False
    assert report["statistics"]["generated"]["pieces"] == 2
    assert 0.0 <= report["statistics"]["pitch_class_histogram_distance"] <= 1.0
    assert 0.0 <= report["statistics"]["key_normalized_pitch_class_histogram_distance"] <= 1.0
    assert sorted(p.name for p in out.glob("*.mid")) == ["sample_00.mid", "sample_01.mid"]
    assert "Held-out likelihood" in (out / "composer.md").read_text()


def test_skipped_pieces_are_summarised_in_one_warning_and_music21_noise_is_dropped() -> None:
    with pytest.warns(UserWarning) as caught:
        with _skipped_pieces_summarised():
            warnings.warn("skipping chorale bach/bwv277: ExpanderException: cannot expand Stream", stacklevel=1)
            warnings.warn("skipping pieces/x.mid: not a MIDI file", stacklevel=1)
            warnings.warn("a music21 parser remark", SyntaxWarning, stacklevel=1)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert (
        message.startswith("2 pieces of the corpus could not be converted or read")
        and "bach/bwv277, pieces/x.mid" in message
    )


def test_chorale_conversion_shows_a_progress_bar_only_while_converting(tmp_path: Path, capsys) -> None:
    assert len(corpus_files("chorales", cache_dir=tmp_path, limit=2, progress=True)) == 2
    assert "converting chorales (once)" in capsys.readouterr().err
    corpus_files("chorales", cache_dir=tmp_path, limit=2, progress=True)  # cached: nothing to show
    assert capsys.readouterr().err == ""
