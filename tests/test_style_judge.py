"""The many-style evaluation: features and judge, per-style likelihood, infilling figures, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import symusic
from styled_composer import styled_bundle, styled_cache, styled_checkpoint  # noqa: F401

from timbre.evaluation.composer import evaluate_composer
from timbre.evaluation.style_judge import (
    METERS,
    RHYTHM_FEATURES,
    StyleJudge,
    judge_view,
    piece_features,
    rhythm_features,
)


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
    assert features.shape == (12 + 25 + 7 + 3 + 8 + RHYTHM_FEATURES,)
    assert np.array_equal(features[55:], rhythm_features(scale))
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


def notes_at(onsets_and_durations: list[tuple[int, int]], quarter: int = 480) -> symusic.Score:
    """One voice of notes at (onset, duration) ticks."""
    score = symusic.Score(quarter)
    track = symusic.Track(program=40)
    for onset, duration in onsets_and_durations:
        track.notes.append(symusic.Note(onset, duration, 67, 90))
    score.tracks.append(track)
    return score


def test_rhythm_features_tell_a_jig_from_a_strathspey_by_meter_onsets_and_snaps() -> None:
    meters, beat, bar, ratios = (len(METERS) + 1, 12, 16, 7)
    # A 6/8 jig: running eighths, three to a dotted quarter.
    jig = notes_at([(index * 240, 240) for index in range(12)])
    jig.time_signatures.append(symusic.TimeSignature(0, 6, 8))
    # A 4/4 strathspey: Scotch snaps (sixteenth, dotted eighth) on every beat.
    snaps = [(beat_start + offset, length) for beat_start in range(0, 8 * 480, 480) for offset, length in
             ((0, 120), (120, 360))]  # fmt: skip
    strathspey = notes_at(snaps)
    strathspey.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    jig_rhythm, strathspey_rhythm = rhythm_features(jig), rhythm_features(strathspey)
    assert jig_rhythm.shape == strathspey_rhythm.shape == (RHYTHM_FEATURES,)
    assert jig_rhythm[METERS.index((6, 8))] == 1 and strathspey_rhythm[METERS.index((4, 4))] == 1
    assert jig_rhythm[:meters].sum() == strathspey_rhythm[:meters].sum() == 1
    jig_beat, snap_beat = jig_rhythm[meters : meters + beat], strathspey_rhythm[meters : meters + beat]
    assert jig_beat[0] == jig_beat[6] == 0.5  # on the quarter and on the half
    assert snap_beat[0] == snap_beat[3] == 0.5  # on the beat and a sixteenth after it
    jig_bar = jig_rhythm[meters + beat : meters + beat + bar]
    assert np.allclose(jig_bar[[0, 2, 5, 8, 10, 13]], 1 / 6)  # six eighths in a 6/8 bar of 16 bins
    snap_ratios = strathspey_rhythm[-ratios:]
    # Short-long steps (x3: log2 1.58 rounds to 2) and long-short ones (/3), one of each per beat.
    assert snap_ratios[3 + 2] == 8 / 15 and snap_ratios[3 - 2] == 7 / 15
    assert jig_rhythm[-ratios:][3] == 1.0  # even eighths
    # A meter change restarts the bar count; a piece without a meter is counted in 4/4.
    changed = notes_at([(0, 480), (1440, 480), (2400, 480)])  # 3/4 bar, then 2/4 bars
    changed.time_signatures.extend([symusic.TimeSignature(0, 3, 4), symusic.TimeSignature(1440, 2, 4)])
    assert rhythm_features(changed)[meters + beat] == 1.0  # every note on a downbeat
    assert rhythm_features(notes_at([(0, 480)]))[METERS.index((4, 4))] == 1


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
