"""Bar regeneration (``timbre compose --prime --keep --regenerate``): kept bars are bit-identical on
user MIDI files the model never saw, regenerated bars hold new notes in place, errors are clear."""

from __future__ import annotations

from pathlib import Path

import pytest
import symusic
from styled_composer import styled_bundle, styled_cache, styled_checkpoint  # noqa: F401

from timbre.cli import main
from timbre.errors import ConfigError
from timbre.symbolic.compose import compose, load_composer, save_midi
from timbre.symbolic.infill import (
    _fit_around_kept,
    bar_grid,
    kept_notes,
    parse_bars,
    regenerate_bars,
    voice_assignment,
)
from timbre.symbolic.tokens import encode_score

from conftest import MIDI_FIXTURES

KEEP = [1, 2, 3, 4, 9, 10, 11, 12]
REGENERATE = [5, 6, 7, 8]


def bar_starts(composer, score: symusic.Score) -> list[int]:
    fitted = score.copy()
    assignment = voice_assignment(score, composer.voice_programs("bach"))
    for index, program in assignment.items():
        fitted.tracks[index].program = program
    fitted.tracks = [fitted.tracks[i] for i in sorted(assignment)]
    return bar_grid(composer, encode_score(composer.tokenizer, fitted), score.ticks_per_quarter).starts


def notes_between(score: symusic.Score, start: int, end: int) -> list[tuple[int, int, int]]:
    return sorted(
        (note.time, note.pitch, track.program)
        for track in score.tracks
        if not track.is_drum
        for note in track.notes
        if start <= note.time < end
    )


# The untrained test model barely tells its styles apart: guidance must be strong to change a draw.
@pytest.mark.parametrize(("song", "guidance"), [("band.mid", 1.0), ("piano.mid", 1.0), ("band.mid", 20.0)])
def test_kept_bars_of_a_user_midi_file_are_bit_identical(
    styled_checkpoint: Path,  # noqa: F811
    song: str,
    guidance: float,
    tmp_path: Path,
) -> None:
    composer = load_composer(styled_checkpoint)
    original = symusic.Score(str(MIDI_FIXTURES / song))
    starts = bar_starts(composer, original)
    edited = regenerate_bars(
        composer, MIDI_FIXTURES / song, REGENERATE, KEEP, style="bach", seed=3, style_guidance=guidance
    )[0]
    # Written to disk and read back, as a user gets it.
    path = save_midi(edited, tmp_path / "edited.mid")
    reread = symusic.Score(str(path))
    assert reread.ticks_per_quarter == original.ticks_per_quarter
    before = kept_notes(original, KEEP, starts)
    assert sum(map(len, before)) > 20
    assert kept_notes(reread, KEEP, starts)[: len(before)] == before
    # The regenerated bars hold new notes, played by the primer's own (pitched) instruments.
    gap_start, gap_end = starts[REGENERATE[0] - 1], starts[REGENERATE[-1]]
    new = notes_between(reread, gap_start, gap_end)
    assert new and new != notes_between(original, gap_start, gap_end)
    assert {program for _, _, program in new} <= {track.program for track in original.tracks if not track.is_drum}
    # Bars named neither kept nor regenerated are emptied (drums excepted).
    assert notes_between(reread, starts[12], starts[-1]) == []
    if guidance != 1.0:  # guidance changes what is written in the gap, never what is kept
        plain = regenerate_bars(composer, MIDI_FIXTURES / song, REGENERATE, KEEP, style="bach", seed=3)[0]
        assert notes_between(plain, gap_start, gap_end) != notes_between(edited, gap_start, gap_end)


def test_kept_notes_come_back_from_the_file_even_where_a_new_note_meets_one_of_their_pitch(tmp_path: Path) -> None:
    # The bundled composer writes notes of the pitches band.mid holds over the gap's edges: written
    # unguarded, a new note struck under a held kept note ended it in the file (and one held into
    # a kept onset took its end); seed 0 made two such variations of six.
    composer = load_composer()
    song = MIDI_FIXTURES / "band.mid"
    original = symusic.Score(str(song))
    kept, regenerate = [1, 2, 5, 6], [3, 4]
    starts = bar_starts(composer, original)
    for index, edited in enumerate(regenerate_bars(composer, song, regenerate, kept, variations=6, style="quartet")):
        reread = symusic.Score(str(save_midi(edited, tmp_path / f"v{index}.mid")))
        assert kept_notes(reread, kept, starts)[: len(original.tracks)] == kept_notes(original, kept, starts)
    assert _fit_around_kept(100, 50, [(0, 120)]) == 0  # struck while a kept note sounds: dropped
    assert _fit_around_kept(100, 50, [(130, 200)]) == 30  # held into a kept onset: cut there
    assert _fit_around_kept(100, 50, [(0, 100), (150, 160)]) == 50  # touching is not overlapping


def test_variations_differ_and_repeat_with_the_seed(styled_checkpoint: Path) -> None:  # noqa: F811
    composer = load_composer(styled_checkpoint)
    prime = MIDI_FIXTURES / "piano.mid"
    first = regenerate_bars(composer, prime, [3, 4], variations=2, style="trecento", seed=0)
    again = regenerate_bars(composer, prime, [3, 4], variations=2, style="trecento", seed=0)
    assert [a.dumps_midi() for a in first] == [b.dumps_midi() for b in again]
    assert first[0].dumps_midi() != first[1].dumps_midi()
    # Default --keep: every bar not regenerated, so the notes outside bars 3-4 are all the original's.
    original = symusic.Score(str(prime))
    starts = bar_starts(composer, original)
    kept = [bar for bar in range(1, len(starts)) if bar not in (3, 4)]
    assert kept_notes(first[1], kept, starts)[:1] == kept_notes(original, kept, starts)


def test_a_composed_piece_keeps_its_bars_through_two_gaps(styled_checkpoint: Path) -> None:  # noqa: F811
    composer = load_composer(styled_checkpoint)
    piece = compose(composer, style="bach", bars=8, seed=1)
    regenerate = [2, 3, 6]
    edited = regenerate_bars(composer, piece, regenerate, style="bach", seed=2)[0]
    starts = bar_starts(composer, piece)
    kept = [bar for bar in range(1, len(starts)) if bar not in regenerate]
    assert kept_notes(edited, kept, starts)[: len(piece.tracks)] == kept_notes(piece, kept, starts)


def test_bad_requests_give_clear_errors(styled_checkpoint: Path) -> None:  # noqa: F811
    composer = load_composer(styled_checkpoint)
    prime = MIDI_FIXTURES / "primer_melody.mid"
    with pytest.raises(ConfigError, match="has 2 bars; cannot regenerate bar 9"):
        regenerate_bars(composer, prime, [9])
    with pytest.raises(ConfigError, match="bar 2 is both kept and regenerated"):
        regenerate_bars(composer, prime, [2], keep=[1, 2])
    with pytest.raises(ConfigError, match="style 'jazz' is unknown"):
        regenerate_bars(composer, prime, [2], style="jazz")
    chorales = load_composer("chorales")
    with pytest.raises(ConfigError, match="without infilling"):
        regenerate_bars(chorales, prime, [2])
    assert parse_bars("1-4, 9-10,12", "--keep") == [1, 2, 3, 4, 9, 10, 12]
    for text in ("4-1", "a-b", "0-2"):
        with pytest.raises(ConfigError, match="--keep"):
            parse_bars(text, "--keep")


def run_cli(capsys: pytest.CaptureFixture, *arguments: str) -> tuple[int, str, str]:
    """``timbre compose ARGUMENTS`` in this process (the console script's own entry point)."""
    status = main(["compose", *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_regenerates_bars_and_lists_styles(
    styled_checkpoint: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    out = tmp_path / "song.mid"
    prime = str(MIDI_FIXTURES / "band.mid")
    model = str(styled_checkpoint)
    status, _, err = run_cli(capsys, "--model", model, "--prime", prime, "--keep", "1-4,9-12", "--regenerate", "5-8",
                             "--variations", "2", "--style", "bach", "--out", str(out))  # fmt: skip
    assert status == 0, err
    written = [tmp_path / "song_1.mid", tmp_path / "song_2.mid"]
    assert all(path.is_file() for path in written) and not out.exists()
    original = symusic.Score(prime)
    composer = load_composer(styled_checkpoint)
    starts = bar_starts(composer, original)
    for path in written:
        reread = kept_notes(symusic.Score(str(path)), KEEP, starts)
        assert reread[: len(original.tracks)] == kept_notes(original, KEEP, starts)
    status, listed, _ = run_cli(capsys, "--model", model, "--list-styles")
    assert status == 0 and listed.splitlines()[0].startswith("any")
    assert [line.split(":")[0] for line in listed.splitlines()[1:]] == ["bach", "trecento"]
    status, _, err = run_cli(capsys, "--model", model, "--prime", prime, "--regenerate", "40-45", "--out", str(out))
    assert status == 1 and "cannot regenerate bar 40" in err and len(err.strip().splitlines()) == 1
    status, _, err = run_cli(capsys, "--model", model, "--style", "jazz", "--out", str(out))
    assert status == 1 and "--style 'jazz' is unknown" in err
    status, _, err = run_cli(capsys, "--model", model, "--keep", "1-2", "--out", str(out))
    assert status == 1 and "--keep and --variations go with --regenerate" in err
