"""The sound commands end to end: encode, decode, interpolate, grid, morph; and their errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from timbre.cli import main


@pytest.fixture(scope="module")
def notes(note_dataset):
    train = sorted((note_dataset / "nsynth-train" / "audio").glob("*.wav"))
    valid = sorted((note_dataset / "nsynth-valid" / "audio").glob("*.wav"))
    return [str(train[0]), str(valid[0]), str(train[-1]), str(valid[-1])]


def wav(path) -> np.ndarray:
    audio, rate = soundfile.read(path)
    assert rate == 16000
    return audio


def test_encode_then_decode(notes, fast_checkpoint, tmp_path, capsys):
    model = ["--model", str(fast_checkpoint)]
    assert main(["encode", notes[0], "--out", str(tmp_path / "z.npy"), *model]) == 0
    assert np.load(tmp_path / "z.npy").shape == (32, 16)
    out = tmp_path / "note.wav"
    assert (
        main(
            ["decode", str(tmp_path / "z.npy"), "--pitch", "67", "--seconds", "2", "--out", str(out), "--plot", *model]
        )
        == 0
    )
    assert wav(out).shape == (32000,)
    assert (tmp_path / "note.png").stat().st_size > 1000
    assert f"wrote {out}" in capsys.readouterr().out


def test_interpolate_writes_every_step(notes, fast_checkpoint, tmp_path):
    out = tmp_path / "sweep"
    code = main(
        [
            "interpolate",
            notes[0],
            notes[1],
            "--steps",
            "4",
            "--seconds",
            "1",
            "--out",
            str(out),
            "--plot",
            "--model",
            str(fast_checkpoint),
        ]
    )
    assert code == 0
    names = sorted(p.name for p in out.glob("*.wav"))
    assert names == ["step_00_mix_0.00.wav", "step_01_mix_0.33.wav", "step_02_mix_0.67.wav", "step_03_mix_1.00.wav"]
    assert (out / "sweep.png").is_file()


def test_crossfade_mixes_the_decoded_endpoints(notes, fast_checkpoint, tmp_path):
    out = tmp_path / "fade"
    main(
        [
            "interpolate",
            notes[0],
            notes[1],
            "--steps",
            "3",
            "--seconds",
            "1",
            "--method",
            "crossfade",
            "--out",
            str(out),
            "--model",
            str(fast_checkpoint),
        ]
    )
    first, middle, last = (wav(out / f"step_0{i}_mix_{m}.wav") for i, m in enumerate(["0.00", "0.50", "1.00"]))
    assert np.allclose(middle, 0.5 * (first + last), atol=2 / 32768)


def test_grid_and_morph(notes, fast_checkpoint, tmp_path):
    model = ["--model", str(fast_checkpoint)]
    assert (
        main(["grid", *notes, "--size", "3", "--seconds", "1", "--out", str(tmp_path / "grid"), "--plot", *model]) == 0
    )
    assert len(list((tmp_path / "grid").glob("grid_r*_c*.wav"))) == 9
    assert (tmp_path / "grid" / "grid.png").is_file()
    assert (
        main(
            ["morph", notes[0], notes[1], "--seconds", "2", "--curve", "ease", "--out", str(tmp_path / "m.wav"), *model]
        )
        == 0
    )
    assert wav(tmp_path / "m.wav").shape == (32000,)


def test_autoregressive_decode_shows_progress(notes, wavenet_checkpoint, tmp_path, capsys):
    model = ["--model", str(wavenet_checkpoint)]
    main(["encode", notes[0], "--out", str(tmp_path / "z.npy"), *model])
    assert main(["decode", str(tmp_path / "z.npy"), "--seconds", "0.2", "--out", str(tmp_path / "ar.wav"), *model]) == 0
    assert wav(tmp_path / "ar.wav").shape == (3200,)
    assert "decoding" in capsys.readouterr().err
    # int8 weights decode it too; a parallel model refuses them before writing anything.
    int8 = ["decode", str(tmp_path / "z.npy"), "--seconds", "0.2", "--weights", "int8"]
    int8 += ["--out", str(tmp_path / "q.wav")]
    assert main([*int8, *model]) == 0
    assert wav(tmp_path / "q.wav").shape == (3200,)
    int8[-1] = str(tmp_path / "p.wav")
    assert main(int8) == 1
    assert "int8 weights apply to autoregressive (wavenet) decoders only" in capsys.readouterr().err
    assert not (tmp_path / "p.wav").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["encode", "{missing}", "--out", "{tmp}/z.npy"], "missing.wav: file does not exist"),
        (["encode", "{corrupt}", "--out", "{tmp}/z.npy"], "corrupt.wav"),
        (["decode", "{corrupt}", "--out", "{tmp}/x.wav"], "corrupt.wav"),
        (["encode", "{note}", "--out", "{tmp}/z.npy", "--model", "nonexistent-model"], "not a bundled model"),
        (["interpolate", "{note}", "{note}", "--steps", "1", "--out", "{tmp}/s"], "steps must be at least 2"),
    ],
)
def test_bad_input_gives_one_clear_line(arguments, message, notes, fast_checkpoint, tmp_path, capsys):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    values = {
        "missing": str(tmp_path / "missing.wav"),
        "corrupt": str(tmp_path / "corrupt.wav"),
        "note": notes[0],
        "tmp": str(tmp_path),
    }
    argv = [a.format(**values) for a in arguments]
    if "--model" not in argv:
        argv += ["--model", str(fast_checkpoint)]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_out_of_range_pitch_is_rejected_by_the_parser(notes, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["decode", "z.npy", "--pitch", "200", "--out", "x.wav"])
    assert exit_info.value.code == 2
    assert "pitch 200 is outside the MIDI range" in capsys.readouterr().err
