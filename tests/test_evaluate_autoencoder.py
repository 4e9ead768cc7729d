"""Tests of timbre.evaluation.autoencoder and ``timbre evaluate autoencoder``."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from timbre.cli import build_parser, main
from timbre.evaluation.autoencoder import _even_quotas, select_notes, select_sweep_pairs, untrained_model
from timbre.hub import load


def examples(instruments: dict[str, list[int]], velocity: int = 100) -> list[dict]:
    return [
        {"instrument_str": name, "pitch": pitch, "velocity": velocity, "note_str": f"{name}-{pitch:03d}-{velocity:03d}"}
        for name, pitches in instruments.items()
        for pitch in pitches
    ]


def test_quotas_are_even_and_respect_what_each_group_holds():
    assert _even_quotas([5, 5, 5], 6) == [2, 2, 2]
    assert _even_quotas([1, 5, 5], 7) == [1, 3, 3]
    assert sum(_even_quotas([2, 3], 100)) == 5


def test_notes_are_spread_over_instruments_and_pitches():
    notes = examples({"a": list(range(40, 80)), "b": list(range(40, 80)), "c": [60, 61]})
    chosen = select_notes(notes, 10, seed=3)
    assert chosen == select_notes(notes, 10, seed=3) and chosen != select_notes(notes, 10, seed=4)
    by_instrument = {name: [notes[i]["pitch"] for i in chosen if notes[i]["instrument_str"] == name] for name in "abc"}
    assert sorted(by_instrument["c"]) == [60, 61]
    assert len(by_instrument["a"]) == len(by_instrument["b"]) == 4
    for pitches in (by_instrument["a"], by_instrument["b"]):
        # Evenly spaced over 40 pitches: one in each quarter of the range.
        assert sorted((pitch - 40) // 10 for pitch in pitches) == [0, 1, 2, 3]
    assert select_notes(notes, 1000) == list(range(len(notes)))


def test_sweep_pairs_join_two_instruments_at_one_pitch():
    notes = examples({"a": [48, 60, 72], "b": [60, 72], "c": [60], "d": [36]})
    pairs = select_sweep_pairs(notes, 10, seed=0)
    # Pitch 60 has three instruments (one pair), 72 has two (one pair); 36 and 48 have one each.
    assert len(pairs) == 2 and len(set(pairs)) == 2
    for a, b in pairs:
        assert notes[a]["pitch"] == notes[b]["pitch"] in (60, 72)
        assert notes[a]["instrument_str"] != notes[b]["instrument_str"]
    assert select_sweep_pairs(notes, 1, seed=0) == pairs[:1]
    assert select_sweep_pairs(examples({"a": [60, 72]}), 4) == []


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


@pytest.mark.slow
def test_evaluate_autoencoder_writes_the_report(fast_checkpoint: Path, note_dataset: Path, tmp_path: Path, capsys):
    out = tmp_path / "report"
    arguments = [
        "evaluate", "autoencoder", "--model", str(fast_checkpoint), "--data", str(note_dataset), "--split", "train",
        "--notes", "3", "--sweeps", "3", "--steps", "3", "--examples", "2", "--out", str(out),
    ]  # fmt: skip
    assert main(arguments) == 0
    assert "input notes (ceiling)" in capsys.readouterr().out
    for name in ("reconstructions.png", "sweeps.png", "pitch_errors.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert len(list((out / "audio").glob("*.wav"))) == 2 * 3 + 2 * 3  # 2 pictured notes x 3, 2 sweeps x 3 steps

    report = json.loads((out / "report.json").read_text())
    assert report["command"].startswith("timbre evaluate autoencoder --model ")
    assert report["model"]["decoder"] == "fast" and report["model"]["parameters"] > 0
    assert report["data"]["notes"] == 3 and report["data"]["seconds_per_note"] == pytest.approx(1.0)
    assert report["data"]["instruments"] == ["keyboard_acoustic_000", "string_acoustic_000"]
    notes = report["reconstruction"]["notes"]
    assert len(notes) == 3
    for note in notes:
        assert set(note["spectral_distance"]) == {"model", "untrained"}
        assert set(note["pitch_score"]) == {"input", "model", "untrained"}
        # The fixture checkpoint is itself the seed-0 untrained model: the baseline must match it exactly.
        assert note["spectral_distance"]["model"] == note["spectral_distance"]["untrained"] > 0
        # Real FluidR3 piano and violin notes at 60 and 64: the tracker hears their pitch.
        assert note["pitch_score"]["input"]["correct"]
    summary = report["reconstruction"]["summary"]
    assert summary["input"]["pitch"]["accuracy"] == 1.0 and summary["input"]["spectral_distance"] is None
    assert summary["spectral_distance_ratio_to_untrained"] == 1.0
    assert report["targets"]["pitch_accuracy"]["value"] == summary["model"]["pitch"]["accuracy"]

    interpolation = report["interpolation"]
    # Two instruments at each of two pitches: two sweeps of the three asked for.
    assert interpolation["summary"]["sweeps"] == 2 and interpolation["t"] == [0.0, 0.5, 1.0]
    for sweep in interpolation["sweeps"]:
        assert sweep["a"].split("-")[1] == sweep["b"].split("-")[1] == f"{sweep['pitch']:03d}"
        assert len(sweep["pitch_cents"]) == len(sweep["centroid_hz"]) == 3
        assert sweep["reversals"] >= 0 and sweep["pitch_kept"] == np.mean(sweep["pitch_correct"])

    markdown = (out / "report.md").read_text()
    assert "| input notes (ceiling) | 0 (reference) | 100.0%" in markdown
    assert "![rainbowgrams of interpolation sweeps](sweeps.png)" in markdown


@pytest.mark.slow
def test_a_split_of_one_instrument_has_no_sweeps(fast_checkpoint: Path, note_dataset: Path, tmp_path: Path):
    out = tmp_path / "report"
    arguments = [
        "evaluate", "autoencoder", "--model", str(fast_checkpoint), "--data", str(note_dataset), "--split", "valid",
        "--baseline", "none", "--examples", "0", "--seconds", "0.5", "--pitches", "60-64", "--out", str(out),
    ]  # fmt: skip
    assert main(arguments) == 0
    report = json.loads((out / "report.json").read_text())
    # The recorded command repeats the run: it parses to the same settings.
    repeated = vars(build_parser().parse_args([*shlex.split(report["command"])[1:], "--out", str(out)]))
    assert {key: repeated[key] for key in ("data", "split", "baseline", "seconds", "pitches", "examples")} == {
        "data": str(note_dataset), "split": "valid", "baseline": "none", "seconds": 0.5, "pitches": (60, 64),
        "examples": 0,
    }  # fmt: skip
    assert report["data"]["notes"] == 2 and report["data"]["seconds_per_note"] == 0.5
    assert "untrained" not in report["reconstruction"]["summary"]
    assert "summary" not in report["interpolation"] and "no sweeps" in report["interpolation"]["note"]
    assert not (out / "reconstructions.png").exists() and (out / "pitch_errors.png").exists()


def test_bad_settings_and_missing_splits_fail_with_one_line(fast_checkpoint: Path, note_dataset: Path, tmp_path, capsys):
    common = ["evaluate", "autoencoder", "--model", str(fast_checkpoint), "--out", str(tmp_path)]
    assert main([*common, "--data", str(note_dataset), "--steps", "1"]) == 1
    assert "--steps must be at least 2" in capsys.readouterr().err
    assert main([*common, "--data", str(note_dataset), "--split", "test"]) == 1
    assert "no examples.json for split 'test'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
