"""Composing: determinism, priming, token budgets, clear errors, the CLI and the bundled model."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import symusic
import torch

import timbre.symbolic.compose as compose_module
from timbre.cli import main
from timbre.constants import PRETRAINED_DIR
from timbre.data.midi import build_midi_bundle
from timbre.errors import CheckpointError, ConfigError, MidiError
from timbre.models.composer import Composer, int8_sampling_available
from timbre.symbolic.compose import (
    compose,
    compose_many,
    fit_prime_to_voices,
    load_composer,
    save_midi,
)
from timbre.train.checkpoint import save_checkpoint

from conftest import MIDI_FIXTURES

PRIMER = MIDI_FIXTURES / "primer_melody.mid"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in the trainer's format: an untrained tiny composer and its chorale tokenizer."""
    folder = tmp_path_factory.mktemp("composer")
    data = build_midi_bundle(corpus="chorales", cache_dir=str(folder), limit=4, velocities=0, valid=0.0, test=0.0)
    config = {
        "_target_": "timbre.models.composer.Composer",
        **data.model_overrides,
        "dim": 32,
        "layers": 2,
        "heads": 2,
        "max_context": 128,
    }
    torch.manual_seed(0)
    model = Composer(**{key: value for key, value in config.items() if key != "_target_"})
    state = model.state_dict()
    return save_checkpoint(
        folder / "model.pt",
        {"model_config": config, "model": state, "ema": state, "artifacts": data.artifacts, "step": 0},
    )


def notes_in_beats(score: symusic.Score, until: Fraction | None = None) -> list[tuple]:
    tpq = score.ticks_per_quarter
    notes = [
        (track.program, Fraction(n.time, tpq), n.pitch, Fraction(n.duration, tpq))
        for track in score.tracks
        for n in track.notes
    ]
    return sorted(note for note in notes if until is None or note[1] <= until)


def assert_starts_with_primer(score: symusic.Score, primer: symusic.Score) -> None:
    """The primer's notes open ``score`` (as the soprano, program 40), nothing else before them.

    Generation resumes at the primer's last onset, so other voices may join its last note.
    """
    last = Fraction(max(n.time for n in primer.tracks[0].notes), primer.ticks_per_quarter)
    expected = [(40, onset, pitch, duration) for _, onset, pitch, duration in notes_in_beats(primer)]
    output = notes_in_beats(score, until=last)
    assert [note for note in output if note[1] < last] == [note for note in expected if note[1] < last]
    assert set(note for note in expected if note[1] == last) <= set(output)


def test_same_seed_gives_the_same_midi(checkpoint: Path) -> None:
    composer = load_composer(checkpoint)
    first = compose(composer, bars=2, seed=1)
    assert first.dumps_midi() == compose(composer, bars=2, seed=1).dumps_midi()
    assert first.dumps_midi() != compose(composer, bars=2, seed=2).dumps_midi()
    assert first.note_num() > 0
    assert {track.program for track in first.tracks} <= {40, 41, 42, 43}


def test_priming_keeps_the_primers_notes_at_the_start(checkpoint: Path) -> None:
    composer = load_composer(checkpoint)
    primer = symusic.Score(str(PRIMER))
    score = compose(composer, prime=PRIMER, bars=2, seed=0)
    assert_starts_with_primer(score, primer)  # the melody became the soprano
    assert score.note_num() > primer.note_num()
    assert score.tempos[0].qpm == pytest.approx(primer.tempos[0].qpm)


def test_bars_and_token_budgets(checkpoint: Path) -> None:
    composer = load_composer(checkpoint)
    ticks_per_bar = 4 * 16  # every 4/4 bar at the tokenizer's 16 ticks per quarter
    for bars in (1, 3):
        score = compose(composer, bars=bars, seed=3)
        assert score.start() < bars * ticks_per_bar
    tiny = compose(composer, tokens=1, seed=0)  # one token cannot hold a note: completed to one
    assert tiny.note_num() >= 1
    batch = compose_many(composer, 3, tokens=40, seed=0)
    assert len(batch) == 3 and all(score.note_num() >= 1 for score in batch)


def test_fit_prime_to_voices_orders_tracks_by_register() -> None:
    score = symusic.Score(480)
    for program, pitch in ((0, 40), (1, 72), (2, 60)):
        track = symusic.Track(program=program)
        track.notes.append(symusic.Note(0, 480, pitch, 80))
        score.tracks.append(track)
    fitted = fit_prime_to_voices(score, [40, 41, 42, 43])
    assert sorted((t.notes[0].pitch, t.program) for t in fitted.tracks) == [(40, 42), (60, 41), (72, 40)]
    assert fit_prime_to_voices(fitted, [40, 41, 42, 43]) is fitted  # already in the model's voices


def test_bad_primers_models_and_options_give_clear_errors(checkpoint: Path, tmp_path: Path) -> None:
    composer = load_composer(checkpoint)
    with pytest.raises(MidiError, match="holds no notes"):
        compose(composer, prime=MIDI_FIXTURES / "empty.mid")
    with pytest.raises(MidiError, match="not a readable MIDI file"):
        compose(composer, prime=MIDI_FIXTURES / "corrupt_control_value.mid")
    with pytest.raises(ConfigError, match=r"top_p must be in \(0, 1\], got 1.5"):
        compose(composer, top_p=1.5)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_composer(tmp_path / "missing.pt")
    with pytest.raises(MidiError, match="does not exist"):
        save_midi(symusic.Score(480), tmp_path / "no" / "x.mid")


def test_cli_writes_identical_files_and_reports_errors(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    outputs = [tmp_path / "a.mid", tmp_path / "b.mid"]
    for out in outputs:
        assert main(["compose", "--model", str(checkpoint), "--out", str(out), "--seed", "1", "--bars", "2"]) == 0
    assert outputs[0].read_bytes() == outputs[1].read_bytes()
    assert symusic.Score(str(outputs[0])).note_num() > 0
    assert (
        main(
            [
                "compose",
                "--model",
                str(checkpoint),
                "--out",
                str(tmp_path / "c.mid"),
                "--prime",
                str(MIDI_FIXTURES / "empty.mid"),
            ]
        )
        == 1
    )
    assert "empty.mid: the MIDI file holds no notes" in capsys.readouterr().err


@pytest.mark.skipif(not int8_sampling_available(), reason="PyTorch has no fbgemm int8 engine here")
def test_sampling_weights_float32_by_default_int8_on_request(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exact, reduced = load_composer(checkpoint), load_composer(checkpoint, weights="int8")
    assert (exact.weights, reduced.weights) == ("float32", "int8")
    assert exact.sampler is exact.model
    assert isinstance(reduced.sampler.head, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(reduced.model.head, torch.nn.Linear)  # likelihoods stay float32
    for composer in (exact, reduced):
        assert compose(composer, bars=2, seed=3).note_num() > 0
    with pytest.raises(ConfigError, match="composer weights must be one of float32, int8, not 'bf16'"):
        load_composer(checkpoint, weights="bf16")

    asked = []  # the weights the CLI asks for, through the real loader

    def recording_loader(path, weights="float32"):
        asked.append(weights)
        return load_composer(path, weights)

    monkeypatch.setattr(compose_module, "load_composer", recording_loader)
    for flags in ([], ["--weights", "int8"]):
        out = tmp_path / f"cli{len(asked)}.mid"
        assert main(["compose", "--model", str(checkpoint), "--out", str(out), "--bars", "2", *flags]) == 0
    assert asked == ["float32", "int8"]
    assert (tmp_path / "cli1.mid").read_bytes() == save_midi(compose(reduced, bars=2), tmp_path / "r.mid").read_bytes()


@pytest.mark.slow
def test_bundled_chorale_model_composes_four_part_music_deterministically(tmp_path: Path) -> None:
    assert (PRETRAINED_DIR / "composer-chorales" / "model.pt").is_file(), "the bundled chorale composer is missing"
    outputs = [tmp_path / "x.mid", tmp_path / "y.mid"]
    for out in outputs:
        assert main(["compose", "--model", "chorales", "--out", str(out), "--seed", "1"]) == 0
    assert outputs[0].read_bytes() == outputs[1].read_bytes()
    score = symusic.Score(str(outputs[0]))
    assert sorted(track.program for track in score.tracks if len(track.notes) > 8) == [40, 41, 42, 43]
    chorales = load_composer("chorales")
    for seed in range(3):
        assert_starts_with_primer(compose(chorales, prime=PRIMER, bars=4, seed=seed), symusic.Score(str(PRIMER)))
