"""MIDI rendering through learned timbres (timbre.render and ``timbre render``).

The models are the untrained fixtures of conftest: their timbres are random, but the parallel
decoder is pitch-exact by construction (harmonic oscillators at the MIDI pitch), so an independent
pitch tracker (PESTO) checks pitches and times of a rendered line even without training.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile
import symusic
import torch

import timbre
from timbre import interpolate
from timbre.cli import main
from timbre.errors import ConfigError, MidiError
from timbre.render import (
    TimbreResolver,
    TimbreSet,
    TimbreSource,
    fold_pitch,
    onset_f_measure,
    parse_assignment,
    parse_source,
    plan_render,
    read_tracks,
    render_fluidsynth,
    render_midi,
)
from timbre.render.renderer import fade_envelope

from conftest import MIDI_FIXTURES, SONGS

PEAK = 10 ** (-1 / 20)  # the default -1 dBFS
# A monophonic line: (onset s, duration s, pitch, velocity), with rests between the notes.
LINE = [
    (0.2, 0.4, 60, 100), (0.9, 0.4, 64, 90), (1.6, 0.4, 67, 110),
    (2.3, 0.4, 72, 100), (3.0, 0.4, 69, 80), (3.7, 0.4, 65, 100),
]  # fmt: skip


def write_midi(path: Path, tracks: list[tuple[str, int, bool, list[tuple[float, float, int, int]]]]) -> Path:
    """A MIDI file at 60 bpm and 1000 ticks per quarter, so one tick is one millisecond."""
    score = symusic.Score(1000)
    score.tempos.append(symusic.Tempo(0, 60.0))
    for name, program, is_drum, notes in tracks:
        track = symusic.Track(name, program, is_drum)
        for onset, duration, pitch, velocity in notes:
            track.notes.append(symusic.Note(round(onset * 1000), round(duration * 1000), pitch, velocity))
        score.tracks.append(track)
    score.dump_midi(str(path))
    return path


@pytest.fixture(scope="module")
def timbre_set(fluidr3_soundfont: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Piano, finger bass, violin and flute reference notes in a timbre set folder."""
    from timbre.data.timbre_set import build_timbre_set

    folder = tmp_path_factory.mktemp("timbres")
    build_timbre_set(fluidr3_soundfont, folder, programs=(0, 33, 40, 73))
    return folder


@pytest.fixture(scope="module")
def fast_model(fast_checkpoint: Path) -> timbre.TimbreModel:
    return timbre.load(fast_checkpoint)


@pytest.fixture(scope="module")
def flute_wav(timbre_set: Path) -> Path:
    return timbre_set / "program-073-flute.wav"


@pytest.fixture
def line_midi(tmp_path: Path) -> Path:
    return write_midi(tmp_path / "line.mid", [("Melody", 73, False, LINE)])


def pesto_pitches(audio: np.ndarray, sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """(times in seconds, MIDI pitch) every 10 ms, by PESTO."""
    import pesto

    times, pitches, _, _ = pesto.predict(torch.from_numpy(audio), sample_rate, step_size=10.0, convert_to_freq=False)
    return times.numpy() / 1000.0, pitches.numpy()


# ---------------------------------------------------------------------------- sources and keys


def test_parse_source_forms() -> None:
    assert parse_source("flute.wav") == TimbreSource("audio", "flute.wav")
    assert parse_source("z.npy") == TimbreSource("embedding", "z.npy")
    assert parse_source("gm:40") == TimbreSource("gm", "40")
    blend = parse_source("blend:a.wav,b.npy:1,3")
    assert blend.parts == (TimbreSource("audio", "a.wav"), TimbreSource("embedding", "b.npy"))
    assert blend.weights == (0.25, 0.75)
    # Without weights the numbers of gm: sources are not mistaken for weights.
    assert parse_source("blend:gm:1,gm:2").weights == (0.5, 0.5)
    assert parse_source("blend:gm:1,gm:2:0.2,0.8").parts == (TimbreSource("gm", "1"), TimbreSource("gm", "2"))
    assert parse_assignment("program:33=gm:32") == ("program:33", "gm:32")


@pytest.mark.parametrize(
    "text", ["gm:200", "gm:x", "blend:a.wav", "blend:a.wav,b.wav:1,-1", "blend:a.wav,blend:b.wav", ""]
)
def test_parse_source_refuses_malformed(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_source(text)


def test_parse_assignment_needs_key_and_value() -> None:
    with pytest.raises(ConfigError, match="TRACK=VALUE"):
        parse_assignment("flute.wav")


def test_timbre_set_lookup_prefers_program_then_family_then_nearest(tmp_path: Path) -> None:
    notes = [
        {"program": 0, "name": "Acoustic Grand Piano", "family": "keyboard", "file": "a.wav"},
        {"program": 42, "name": "Cello", "family": "string", "file": "b.wav"},
        {"program": 73, "name": "Flute", "family": "flute", "file": "c.wav"},
    ]
    (tmp_path / "index.json").write_text(json.dumps({"soundfont": "x.sf2", "notes": notes}))
    timbres = TimbreSet(tmp_path)
    assert [(e.program, why) for e, why in [timbres.lookup(73)]] == [(73, "same program")]
    entry, why = timbres.lookup(40)  # violin: no violin, but a string instrument
    assert (entry.program, why) == (42, "same family")
    entry, why = timbres.lookup(56)  # trumpet: no brass at all
    assert (entry.program, why) == (42, "nearest program")
    assert entry.path == tmp_path / "b.wav" and entry.pitch == 60 and entry.velocity == 100
    (tmp_path / "index.json").write_text(json.dumps(notes))  # a bare list works too
    assert TimbreSet(tmp_path).lookup(1)[0].program == 0


def test_missing_or_corrupt_timbre_set_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="index.json: no timbre set here"):
        TimbreSet(tmp_path).lookup(0)
    (tmp_path / "index.json").write_text('{"notes": [{"program": 1}]}')
    with pytest.raises(ConfigError, match="not a timbre set index"):
        TimbreSet(tmp_path).lookup(0)


def test_blend_source_is_the_interpolation_of_its_parts(fast_model, timbre_set: Path, flute_wav: Path) -> None:
    resolver = TimbreResolver(fast_model, TimbreSet(timbre_set), interpolation="slerp")
    violin = resolver.resolve("gm:40")
    flute = resolver.resolve(str(flute_wav))
    mixed = resolver.resolve(f"blend:gm:40,{flute_wav}:1,3")
    torch.testing.assert_close(mixed.tensor, interpolate.slerp(violin.tensor, flute.tensor, 0.75).float())
    assert resolver.resolve("gm:40") is violin  # encoded once
    assert resolver.resolve("gm:41") is violin  # viola: no viola in the set, the violin plays it
    assert violin.pitch == 60 and violin.velocity == 100


def test_unknown_timbre_source_and_track_are_clear_errors(
    fast_model, timbre_set: Path, line_midi: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="unknown timbre source 'missing.wav'"):
        plan_render(line_midi, fast_model, {"0": "missing.wav"}, timbre_set_dir=timbre_set)
    with pytest.raises(ConfigError, match="timbres key 'Piano': no such track.*'Melody'"):
        plan_render(line_midi, fast_model, {"Piano": "gm:0"}, timbre_set_dir=timbre_set)
    with pytest.raises(ConfigError, match="no pitched track plays program 5"):
        plan_render(line_midi, fast_model, {"program:5": "gm:0"}, timbre_set_dir=timbre_set)
    np.save(tmp_path / "wrong.npy", np.zeros((10, 3), dtype=np.float32))
    with pytest.raises(ConfigError, match="wrong.npy: embedding has 3 dims"):
        plan_render(line_midi, fast_model, {"0": str(tmp_path / "wrong.npy")}, timbre_set_dir=timbre_set)


def test_empty_and_corrupt_midi_files_are_clear_errors(fast_model, timbre_set: Path) -> None:
    with pytest.raises(MidiError, match="empty.mid: the MIDI file holds no notes"):
        render_midi(MIDI_FIXTURES / "empty.mid", fast_model, timbre_set_dir=timbre_set)
    with pytest.raises(MidiError, match="corrupt_control_value.mid: not a readable MIDI file"):
        render_midi(MIDI_FIXTURES / "corrupt_control_value.mid", fast_model, timbre_set_dir=timbre_set)


def test_cli_errors_are_one_line_and_exit_1(fast_checkpoint: Path, timbre_set: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "x.wav")
    common = ["--out", out, "--model", str(fast_checkpoint), "--timbre-set", str(timbre_set), "--no-progress"]
    for midi, extra, message in [
        (MIDI_FIXTURES / "empty.mid", [], "holds no notes"),
        (MIDI_FIXTURES / "corrupt_control_value.mid", [], "not a readable MIDI file"),
        (MIDI_FIXTURES / "primer_melody.mid", ["--timbre", "0=nope.flac"], "unknown timbre source 'nope.flac'"),
        (MIDI_FIXTURES / "primer_melody.mid", ["--decoder", "wavenet"], "has a fast decoder, but --decoder wavenet"),
        # The library names its arguments (timbres, morphs, gains); the CLI restates them as options.
        (MIDI_FIXTURES / "primer_melody.mid", ["--timbre", "Piano=gm:0"], "--timbre Piano: no such track"),
        (MIDI_FIXTURES / "primer_melody.mid", ["--morph", "0=gm:0"], "--morph 0: a morph needs at least two timbres"),
        (MIDI_FIXTURES / "primer_melody.mid", ["--gain", "0=loud"], "--gain 0: the gain must be a number of dB"),
        (MIDI_FIXTURES / "primer_melody.mid", ["--timbre", "flute.wav"], "--timbre 'flute.wav': expected TRACK=VALUE"),
        (MIDI_FIXTURES / "primer_melody.mid", ["--start", "10", "--end", "5"], "--end 5 must be after --start 10"),
    ]:
        assert main(["render", str(midi), *common, *extra]) == 1
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("timbre render: error:") and message in error[0]
    assert not Path(out).exists()
    # A negative time is refused by the parser (usage line, exit 2) before anything loads.
    with pytest.raises(SystemExit) as exit_info:
        main(["render", str(MIDI_FIXTURES / "primer_melody.mid"), *common, "--start", "-1"])
    assert exit_info.value.code == 2 and "-1 is not a number >= 0" in capsys.readouterr().err


# ---------------------------------------------------------------------------- notes and planning


def test_read_tracks_window_shifts_and_cuts(fast_model, line_midi: Path) -> None:
    (track,) = read_tracks(line_midi, start=0.5, end=1.8)
    assert [(round(n.onset, 3), round(n.duration, 3), n.pitch) for n in track.notes] == [(0.4, 0.4, 64), (1.1, 0.2, 67)]
    assert (track.name, track.program, track.is_drum) == ("Melody", 73, False)
    with pytest.raises(MidiError, match="no notes between 5 s and 6 s"):
        plan_render(line_midi, fast_model, start=5.0, end=6.0)


def test_fold_pitch_moves_by_octaves() -> None:
    assert [fold_pitch(p, 24, 96) for p in (12, 23, 24, 60, 96, 97, 127)] == [24, 35, 24, 60, 96, 85, 91]


def test_out_of_range_pitches_move_by_octaves_with_one_warning_per_track(
    fast_model, timbre_set: Path, tmp_path: Path, caplog
) -> None:
    notes = [(0.0, 0.2, 12, 100), (0.3, 0.2, 100, 100), (0.6, 0.2, 60, 100), (0.9, 0.2, 110, 100)]
    midi = write_midi(tmp_path / "wide.mid", [("A", 0, False, notes), ("B", 40, False, notes[2:3])])
    with caplog.at_level(logging.WARNING, logger="timbre.render"):
        plan = plan_render(midi, fast_model, timbre_set_dir=timbre_set)
    assert sorted(job.pitch for job in plan.jobs) == [24, 60, 60, 86, 88]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["track 0 'A': 3 of 4 notes outside the model's pitch range 24-96 were moved by octaves"]
    assert [t.octave_shifted for t in plan.tracks] == [3, 0]


def test_drum_tracks_are_skipped_with_a_message(fast_model, timbre_set: Path, tmp_path: Path, caplog) -> None:
    midi = write_midi(tmp_path / "drums.mid", [("Kit", 0, True, [(0.0, 0.1, 36, 100)]), ("Keys", 0, False, LINE[:2])])
    with caplog.at_level(logging.WARNING, logger="timbre.render"):
        plan = plan_render(midi, fast_model, timbre_set_dir=timbre_set)
    assert "track 0 'Kit' is a drum track: skipped" in caplog.text
    assert plan.tracks[0].skipped and not plan.tracks[1].skipped and plan.notes == 2
    with pytest.raises(MidiError, match="only drum notes"):
        plan_render(write_midi(tmp_path / "kit.mid", [("Kit", 0, True, [(0.0, 0.1, 36, 100)])]), fast_model)


def test_track_keys_most_specific_wins_and_gains_apply(fast_model, timbre_set: Path, tmp_path: Path) -> None:
    tracks = [("Lead", 73, False, LINE[:1]), ("Pad", 0, False, LINE[1:2]), ("Low", 33, False, LINE[2:3])]
    midi = write_midi(tmp_path / "keys.mid", tracks)
    plan = plan_render(
        midi, fast_model, {"all": "gm:40", "pad": "gm:73", "2": "gm:0"}, gains={"Lead": -6, "program:33": 3},
        timbre_set_dir=timbre_set,
    )  # fmt: skip
    assert [t.timbre.split(" ")[0] for t in plan.tracks] == ["gm:40", "gm:73", "gm:0"]
    gain_of = {job.pitch: job.placements[0][1] for job in plan.jobs}
    assert gain_of == pytest.approx({60: 10 ** (-6 / 20), 64: 1.0, 67: 10 ** (3 / 20)})


def test_note_fitting_follows_duration_and_release_cap(
    fast_model, flute_wav: Path, line_midi: Path, tmp_path: Path
) -> None:
    plan = plan_render(line_midi, fast_model, {"0": str(flute_wav)})
    source = fast_model.encode(flute_wav)
    release = source.frames - source.release_frame
    (track,) = read_tracks(line_midi)
    held = {note.pitch: round(note.duration * 16000 / 512) for note in track.notes}  # 0.4 s: 12 or 13 frames
    for job in plan.jobs:
        assert job.embedding.release_frame == held[job.pitch]
        assert job.embedding.frames == held[job.pitch] + release
        torch.testing.assert_close(job.embedding.tensor[:8], source.tensor[:8])  # the attack is kept
    capped = plan_render(line_midi, fast_model, {"0": str(flute_wav)}, release=0.1)
    assert all(job.embedding.frames == held[job.pitch] + 4 for job in capped.jobs)


# ---------------------------------------------------------------------------- rendering


def test_monophonic_line_has_the_midi_pitches_at_the_midi_times(fast_model, flute_wav: Path, line_midi: Path) -> None:
    result = render_midi(line_midi, fast_model, {"all": str(flute_wav)}, release=0.1)
    audio = result.audio
    times, pitches = pesto_pitches(audio)
    for onset, duration, pitch, _ in LINE:
        inside = (times > onset + 0.08) & (times < onset + duration - 0.06)
        assert abs(np.median(pitches[inside]) - pitch) < 0.5, (onset, pitch)
        note = audio[round((onset + 0.05) * 16000) : round((onset + duration - 0.05) * 16000)]
        assert np.sqrt(np.mean(note**2)) > 0.05
    # Key up (to the 32 ms frame), then a release of 4 frames (0.128 s), then silence.
    for (onset, duration, *_), (next_onset, *_) in zip(LINE, LINE[1:]):
        rest = audio[round((onset + duration + 0.016 + 0.128) * 16000) : round(next_onset * 16000)]
        assert rest.size > 0.03 * 16000 and np.abs(rest).max() < 1e-6
    assert result.seconds == pytest.approx(LINE[-1][0] + LINE[-1][1] + 0.128, abs=0.017)
    score = onset_f_measure(audio, line_midi)
    assert score.reference == len(LINE) and score.f_measure >= 0.9, score


def test_repeated_notes_are_synthesized_once(fast_model, flute_wav: Path, tmp_path: Path, monkeypatch) -> None:
    notes = [(0.0, 0.25, 60, 100), (1.5, 0.25, 60, 100), (3.0, 0.26, 60, 100), (4.5, 0.25, 60, 90), (6.0, 0.5, 60, 100)]
    midi = write_midi(tmp_path / "repeat.mid", [("A", 0, False, notes), ("B", 0, False, notes[:2])])
    synthesized = []
    original = type(fast_model).synthesize_batch

    def counting(self, embeddings, *args, **kwargs):
        synthesized.append(len(embeddings))
        return original(self, embeddings, *args, **kwargs)

    monkeypatch.setattr(type(fast_model), "synthesize_batch", counting)
    result = render_midi(midi, fast_model, {"all": str(flute_wav)}, release=0.2)
    # 0.25 s and 0.26 s are both 8 frames; velocity 90 and 0.5 s are new notes; track B repeats A.
    assert (result.plan.notes, result.plan.unique_notes, result.plan.cache_hits) == (7, 3, 4)
    assert sum(synthesized) == 3
    length = result.plan.jobs[0].samples
    first, second = (result.audio[round(t * 16000) :][:length] for t in (0.0, 1.5))
    np.testing.assert_array_equal(first, second)


def test_fade_envelope_has_no_steps() -> None:
    envelope = fade_envelope(16000, 16000)
    assert envelope[0] == 0.0 and envelope[-1] == 0.0 and envelope[8000] == 1.0
    assert np.abs(np.diff(envelope)).max() < 0.02
    assert fade_envelope(100, 16000).max() <= 1.0


@pytest.mark.parametrize("song", SONGS, ids=lambda path: path.name)
def test_polyphonic_songs_render_without_clipping(fast_model, timbre_set: Path, song: Path) -> None:
    result = render_midi(song, fast_model, timbre_set_dir=timbre_set, start=20.0, end=26.0)
    audio = result.audio
    assert np.isfinite(audio).all() and np.abs(audio).max() == pytest.approx(PEAK, rel=1e-5)
    assert result.plan.notes > 10 and result.plan.unique_notes <= result.plan.notes
    assert 6.0 < result.seconds < 6.0 + 8.0  # the window plus the last notes' ringing
    assert all(t.skipped for t in result.plan.tracks if t.track.is_drum)
    first = min(n.onset for t in result.plan.tracks if not t.skipped for n in t.track.notes)
    assert np.abs(audio[round(first * 16000) : round((first + 0.2) * 16000)]).max() > 0.01


def test_morph_moves_from_source_to_target_by_onset(fast_model, timbre_set: Path, tmp_path: Path) -> None:
    notes = [(t, 0.3, 60 + i, 100) for i, t in enumerate([0.0, 1.0, 2.0, 3.0, 4.0])]
    midi = write_midi(tmp_path / "morph.mid", [("Voice", 0, False, notes)])
    plan = plan_render(
        midi, fast_model, morphs={"0": ["gm:0", "gm:73"]}, timbre_set_dir=timbre_set, interpolation="lerp"
    )
    resolver = TimbreResolver(fast_model, TimbreSet(timbre_set))
    piano, flute = resolver.resolve("gm:0").tensor, resolver.resolve("gm:73").tensor
    by_pitch = {job.pitch: job.embedding for job in plan.jobs}
    for pitch, mix in [(60, 0.0), (62, 0.5), (64, 1.0)]:
        held = by_pitch[pitch].release_frame
        expected = interpolate.lerp(piano, flute, mix).float()[:held]
        torch.testing.assert_close(by_pitch[pitch].tensor[:8], expected[:8])
    assert "morph gm:0" in plan.tracks[0].timbre


def test_wavenet_decoder_renders_short_notes(wavenet_checkpoint: Path, flute_wav: Path, tmp_path: Path) -> None:
    midi = write_midi(tmp_path / "two.mid", [("A", 73, False, [(0.0, 0.1, 60, 100), (0.15, 0.1, 67, 100)])])
    out = tmp_path / "ar.wav"
    status = main(
        ["render", str(midi), "--out", str(out), "--decoder", "wavenet", "--model", str(wavenet_checkpoint),
         "--timbre", f"0={flute_wav}", "--release", "0.05", "--no-progress"]
    )  # fmt: skip
    assert status == 0
    audio, rate = soundfile.read(out)
    assert rate == 16000 and audio.shape[0] == round(0.15 * 16000) + 5 * 512
    assert 0.5 < np.abs(audio).max() < 1.0


@pytest.mark.parametrize("program", [0, 40])  # piano, violin
def test_fluidsynth_reference_plays_the_same_notes(program: int, tmp_path: Path) -> None:
    midi = write_midi(tmp_path / "line.mid", [("Line", program, False, LINE), ("Kit", 0, True, [(0.0, 0.1, 36, 127)])])
    reference = render_fluidsynth(midi, samples=72000)
    assert reference.shape == (72000,) and np.abs(reference).max() == pytest.approx(PEAK, rel=1e-5)
    times, pitches = pesto_pitches(reference)
    for onset, duration, pitch, _ in LINE:
        inside = (times > onset + 0.08) & (times < onset + duration - 0.06)
        assert abs(np.median(pitches[inside]) - pitch) < 0.5
    assert np.abs(reference[: round(0.15 * 16000)]).max() < 1e-4  # the drum track is left out
    assert onset_f_measure(reference, midi).f_measure == 1.0
    with_drums = render_fluidsynth(midi, include_drums=True)
    assert np.abs(with_drums[: round(0.15 * 16000)]).max() > 0.01


@pytest.mark.slow
def test_cli_renders_a_song_with_reference(
    fast_checkpoint: Path, timbre_set: Path, flute_wav: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "song.wav"
    status = main(
        ["render", str(MIDI_FIXTURES / "band.mid"), "--out", str(out), "--model", str(fast_checkpoint),
         "--timbre-set", str(timbre_set), "--start", "10", "--end", "18", "--timbre", f"Melody={flute_wav}",
         "--timbre", "Piano=blend:gm:0,gm:40:0.3,0.7", "--morph", "Bass=gm:33,gm:40", "--gain", "Bass=-3",
         "--reference", "fluidsynth", "--verbose", "--no-progress"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    audio, rate = soundfile.read(out)
    reference, _ = soundfile.read(out.with_suffix(".fluidsynth.wav"))
    assert rate == 16000 and audio.shape == reference.shape and np.abs(audio).max() < 1.0
    assert "from the cache" in captured.err and "track 3 'Drums' is a drum track" in captured.err
    assert "morph gm:33" in captured.err and "gain -3 dB" in captured.err
    assert captured.out.count("onset F-measure") == 2


def test_a_silent_mix_is_not_normalised_up_to_the_peak(
    fast_model, timbre_set: Path, line_midi: Path, monkeypatch, caplog
) -> None:
    """Timbres that decode to silence must not be scaled up to -1 dBFS (that only amplifies noise)."""
    from timbre.render.renderer import SILENT_MIX_PEAK

    def near_silence(embeddings, pitches, **options):
        return np.full((len(embeddings), 10 * 16000), SILENT_MIX_PEAK / 10, dtype=np.float32)

    monkeypatch.setattr(fast_model, "synthesize_batch", near_silence)
    with caplog.at_level(logging.WARNING, logger="timbre.render"):
        result = render_midi(line_midi, fast_model, timbre_set_dir=timbre_set)
    assert result.gain == 1.0 and np.abs(result.audio).max() < SILENT_MIX_PEAK
    assert "the mix is silent" in caplog.text
