"""The many-style evaluation: features and judge, per-style likelihood, infilling figures, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import symusic
from styled_composer import styled_bundle, styled_cache, styled_checkpoint  # noqa: F401

from timbre.evaluation.composer import evaluate_composer
from timbre.evaluation.style_judge import StyleJudge, judge_view, piece_features


def melody(pitches: list[int], program: int = 73, quarter: int = 480, length: int = 1) -> symusic.Score:
    score = symusic.Score(quarter)
    track = symusic.Track(program=program)
    for index, pitch in enumerate(pitches):
        track.notes.append(symusic.Note(index * quarter * length, quarter * length, pitch, 90))
    score.tracks.append(track)
    return score


def test_features_describe_pitch_intervals_durations_and_voices() -> None:
    scale = melody([60, 62, 64, 65, 67])
    features = piece_features(scale)
    assert features.shape == (12 + 25 + 7 + 3 + 8,)
    pitch_classes, intervals, durations = features[:12], features[12:37], features[37:44]
    assert np.isclose(pitch_classes.sum(), 1) and pitch_classes[0] == pitch_classes[2] == 0.2
    assert intervals[12 + 2] == 0.75 and intervals[12 + 1] == 0.25  # three whole steps, one half step
    assert durations[3] == 1.0  # every note a quarter
    chord = melody([48, 50, 52, 53, 55], program=42)
    two_voices = scale.copy()
    two_voices.tracks.append(chord.tracks[0])
    both = piece_features(two_voices)
    assert both[44] == 2 / 8 and features[44] == 1 / 8  # voice count
    assert both[45] > features[45]  # polyphony
    assert np.allclose(both[[48, 50]], [63.6 / 128, 51.6 / 128])  # mean pitch of each voice, highest first


def test_the_headline_judge_sees_a_tune_alike_in_every_key_and_the_other_does_not() -> None:
    tune = [62, 66, 69, 71, 69, 66, 64, 62, 61, 62]  # D major
    keys = [piece_features(melody([pitch + shift for pitch in tune])) for shift in (0, 2, 5, -3)]
    features = np.stack(keys)
    normalized, played = judge_view(features, "key_normalized"), judge_view(features, "as_played")
    assert np.allclose(normalized[:, :12], normalized[0, :12])  # the same histogram from C
    assert normalized[0, 0] > 0 and normalized[0, 1] == 0  # D becomes C; no C sharp in a major tune
    assert not np.allclose(played[:, :12], played[0, :12]) and np.array_equal(played, features)
    assert np.array_equal(normalized[:, 12:], features[:, 12:])  # only the pitch classes move
    assert np.array_equal(features[0], piece_features(melody(tune)))  # judge_view copies, never edits


def test_judge_separates_distinct_styles_and_reports_cross_validated_accuracy() -> None:
    rng = np.random.default_rng(0)
    pieces, labels = [], []
    for _ in range(12):
        # "Slow low chorale" against "fast high jig": durations and register differ.
        pieces.append(melody(list(rng.integers(40, 55, 8)), program=42, length=2))
        labels.append("slow")
        pieces.append(melody(list(rng.integers(70, 85, 8)), quarter=480, length=1))
        labels.append("fast")
    features = np.stack([piece_features(piece) for piece in pieces])
    judge = StyleJudge(seed=0)
    accuracy = judge.cross_validated_accuracy(features, labels)
    assert accuracy["accuracy"] == 1.0 and accuracy["folds"] == 5 and accuracy["pieces"] == 24
    assert judge.fit(features, labels).predict(features[:2]) == ["slow", "fast"]


def test_evaluate_composer_reports_per_style(styled_checkpoint: Path, styled_cache: Path, tmp_path: Path) -> None:  # noqa: F811
    report = evaluate_composer(
        styled_checkpoint, tmp_path, samples=2, bars=2, seed=0, cache_dir=styled_cache, top_k=5, style_guidance=2.0
    )
    assert set(report["likelihood"]) == {"bach", "trecento"}
    for entry in report["likelihood"].values():
        # An untrained model is near uniform over its vocabulary: far above the fitted n-gram.
        assert entry["model_bits_per_token"] > entry["ngram_bits_per_token"] > 0
        assert entry["test_pieces"] == 1 and not entry["target_applies"]
    judged = report["style_judge"]
    assert 0 <= judged["real_accuracy"]["accuracy"] <= 1 and set(judged["generated"]) == {"bach", "trecento"}
    assert all(entry["samples"] == 2 for entry in judged["generated"].values())
    assert sorted(path.name for path in tmp_path.glob("*.mid")) == [
        "bach_00.mid", "bach_01.mid", "trecento_00.mid", "trecento_01.mid"
    ]  # fmt: skip
    infilling = report["infilling"]
    assert infilling["pieces"] >= 1 and infilling["kept_notes"] > 0 and infilling["kept_unchanged"] == 1.0
    assert infilling["middle_bits_per_token_infilling"] > 0
    written = json.loads((tmp_path / "composer_styles.json").read_text())
    assert written["infilling"]["kept_unchanged"] == 1.0
    # The judged pieces were sampled as asked, and the report says how.
    assert written["generation"]["top_k"] == 5 and written["generation"]["style_guidance"] == 2.0
    markdown = (tmp_path / "composer_styles.md").read_text()
    assert "## Style judge" in markdown and "top-k 5, style guidance 2)" in markdown
    # The judge on histograms as played is reported beside the headline one, on the same pieces.
    played = written["style_judge"]["as_played"]
    assert set(played["generated"]) == {"bach", "trecento"} and 0 <= played["real_accuracy"]["accuracy"] <= 1
    assert "as played (keys not normalized)" in markdown
