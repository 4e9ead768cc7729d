"""The `timbre` command against a new user's mistakes, run as a user runs it: a subprocess.

Every case asserts the exit status, that the message is one line naming the problem, that there
is no traceback, and that every file that existed before the command is byte-identical after it
(and, for failures, that no file appeared).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import MIDI_FIXTURES

RATE = 16000


def run_timbre(arguments: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "timbre.cli", *arguments], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=environment,
    )  # fmt: skip


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def tone(seconds: float = 0.5, pitch: int = 60) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t)).astype(np.float32)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A folder with what a user has at hand: notes, an embedding, MIDI files, broken files."""
    soundfile.write(tmp_path / "a.wav", tone(), RATE)
    soundfile.write(tmp_path / "b.wav", tone(pitch=64), RATE)
    soundfile.write(tmp_path / "silent.wav", np.zeros(RATE // 2, dtype=np.float32), RATE)
    left = tone()
    soundfile.write(tmp_path / "antiphase.wav", np.stack([left, -left], axis=1), RATE)
    soundfile.write(tmp_path / "nan.wav", np.full(RATE // 4, np.nan, dtype=np.float32), RATE, subtype="FLOAT")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (tmp_path / "bad.sf2").write_bytes(b"RIFF\x00\x00\x00\x00sfbkLIST not a soundfont")
    np.save(tmp_path / "z.npy", np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32))
    np.save(tmp_path / "strings.npy", np.array(["a", "b"]))
    for name in ("piano.mid", "empty.mid", "truncated.mid"):
        shutil.copy(MIDI_FIXTURES / name, tmp_path / name)
    (tmp_path / "song.wav").write_bytes((tmp_path / "a.wav").read_bytes())  # an earlier render
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "out").mkdir()
    shutil.copy(tmp_path / "a.wav", tmp_path / "out" / "grid_r0_c0.wav")
    return tmp_path


# (arguments, exit status, words the one-line message must hold)
FAILURES = [
    # An output equal to an input is refused before any work.
    (["encode", "a.wav", "--out", "a.wav"], 1, ".npy"),
    (["decode", "z.npy", "--out", "z.npy"], 1, ".wav"),
    (["render", "piano.mid", "--out", "piano.mid"], 1, ".wav"),
    (["morph", "a.wav", "song.wav", "--out", "song.wav"], 1, "would destroy the input"),
    (
        ["grid", "out/grid_r0_c0.wav", "a.wav", "b.wav", "a.wav", "--size", "2", "--out", "out"],
        1,
        "would destroy the input",
    ),
    # A failing reference render must not replace the earlier song.wav.
    (["render", "piano.mid", "--out", "song.wav", "--reference", "fluidsynth", "--soundfont", "bad.sf2"], 1, "bad.sf2"),
    (["render", "piano.mid", "--out", "song.wav", "--reference", "fluidsynth", "--soundfont", "no.sf2"], 1, "no.sf2"),
    # Output paths that cannot be written, checked before the model loads.
    (["decode", "z.npy", "--out", "folder.wav"], 1, "is an existing folder"),
    (["decode", "z.npy", "--out", "a.wav/x.wav"], 1, "is a file, not a folder"),
    (["decode", "z.npy", "--out", "/proc/x.wav"], 1, "cannot write in folder /proc"),
    (["interpolate", "a.wav", "b.wav", "--out", "a.wav"], 1, "is an existing file, not a folder"),
    (["decode", "z.npy", "--out", "x.mp3"], 1, "writes .wav files, but the name has '.mp3'"),
    (["compose", "--out", "song.wav", "--bars", "1"], 1, "writes .mid or .midi files"),
    # Devices and sampling values.
    (["decode", "z.npy", "--out", "x.wav", "--device", "tpu"], 2, "'tpu' is not"),
    (["encode", "a.wav", "--out", "x.npy", "--device", "cuda:7"], 2, "cuda"),
    (["decode", "z.npy", "--out", "x.wav", "--temperature", "-1"], 2, "-1 is not a number >= 0"),
    (["render", "piano.mid", "--out", "x.wav", "--temperature", "-1"], 2, "-1 is not a number >= 0"),
    (["evaluate", "autoencoder", "--data", "out", "--out", "r", "--device", "tpu"], 2, "'tpu' is not"),
    (["export", "a.wav", "--out", "x.sf2", "--device", "cuda:7"], 2, "cuda"),
    (["export", "a.wav", "--out", "x.sf2", "--temperature", "-1"], 2, "-1 is not a number >= 0"),
    (["evaluate", "composer", "--out", "r", "--top-p", "2"], 2, "2 is not a probability"),
    (["compose", "--out", "x.mid", "--weights", "int4"], 2, "invalid choice: 'int4'"),
    (["compose", "--out", "x.mid", "--style-guidance", "-1"], 2, "-1 is not a number >= 0"),
    (["compose", "--out", "x.mid", "--style-guidance", "2"], 1, "--style-guidance needs a style to guide towards"),
    (["compose", "--model", "chorales", "--style-guidance", "2", "--out", "x.mid"], 1, "needs a many-style composer"),
    (["evaluate", "composer", "--model", "chorales", "--out", "r", "--style-guidance", "2"], 1, "needs a many-style"),
    # Bounds.
    (["compose", "--out", "x.mid", "--bars", "10000"], 2, "more than the maximum of 1024"),
    (["interpolate", "a.wav", "b.wav", "--out", "sweep", "--seconds", "100000"], 2, "longer than the maximum note"),
    (["grid", "a.wav", "b.wav", "--size", "1000", "--out", "grid"], 2, "more than the maximum"),
    (["export", "a.wav", "--out", "x.sf2", "--seconds", "1000"], 2, "longer than the maximum sample of 60 s"),
    (["evaluate", "composer", "--out", "r", "--samples", "0"], 2, "0 is not a positive integer"),
    # Outputs of the evaluation and export commands, checked before any work.
    (["evaluate", "composer", "--out", "a.wav"], 1, "--out a.wav: is an existing file, not a folder"),
    (["evaluate", "autoencoder", "--data", "out", "--out", "a.wav"], 1, "is an existing file, not a folder"),
    (["evaluate", "autoencoder", "--data", "a.wav", "--out", "r"], 1, "--data a.wav: is a file"),
    (["evaluate", "build-testset", "--soundfont", "bad.sf2", "--out", "t"], 1, "bad.sf2: FluidSynth cannot load"),
    (["export", "a.wav", "--out", "/proc/x.sf2"], 1, "cannot write in folder /proc"),
    (["export", "a.wav", "--out", "x.sfz", "--format", "sf2"], 1, "writes .sf2 files, but the name has '.sfz'"),
    (["export", "a.wav", "--out", "x.sf2", "--format", "sfz"], 1, "an SFZ export writes a folder"),
    # Messages that say what is wrong.
    (["grid", "a.wav", "b.wav", "a.wav", "--out", "grid"], 1, "a grid needs exactly 4 sounds"),
    (["grid", "a.wav", "b.wav", "a.wav", "b.wav", "a.wav", "--out", "grid"], 1, "got 5"),
    (["export-grid", "a.wav", "b.wav", "a.wav", "--out", "g.sf2"], 1, "exactly 4 corner timbres"),
    (["render", "piano.mid", "--out", "x.wav", "--timbre", "all=blend:a.wav,b.wav:0.5"], 1, "2 sources but 1 weights"),
    (["decode", "a.wav", "--out", "x.wav"], 1, "is an audio file (WAV), not an embedding"),
    (["decode", "strings.npy", "--out", "x.wav"], 1, "an embedding [frames, dim]"),
    (["compose", "--out", "x.mid", "--model", "nowhere.pt"], 1, "nowhere.pt"),
    # The inputs that were already handled well.
    (["encode", "empty.wav", "--out", "x.npy"], 1, "empty.wav"),
    (["encode", "corrupt.wav", "--out", "x.npy"], 1, "corrupt.wav"),
    (["encode", "nan.wav", "--out", "x.npy"], 1, "NaN"),
    (["encode", "missing.wav", "--out", "x.npy"], 1, "missing.wav: file does not exist"),
    (["render", "empty.mid", "--out", "x.wav"], 1, "empty.mid"),
    (["render", "truncated.mid", "--out", "x.wav"], 1, "truncated.mid"),
    (["compose", "--out", "x.mid", "--prime", "empty.mid"], 1, "empty.mid"),
    (["encode"], 2, "the following arguments are required"),
]


@pytest.mark.slow
@pytest.mark.parametrize("arguments, status, words", FAILURES, ids=[" ".join(case[0]) for case in FAILURES])
def test_mistakes_give_one_line_and_touch_nothing(workspace, arguments, status, words):
    if "cuda" in " ".join(arguments) and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    before = snapshot(workspace)
    result = run_timbre(arguments, workspace)
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    command = " ".join(arguments[:2] if arguments[0] == "evaluate" else arguments[:1])
    assert lines[0].startswith(f"timbre {command}: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    assert snapshot(workspace) == before  # nothing changed, nothing new


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, warning",
    [
        ("silent.wav", "silent.wav: the audio is silent"),
        ("antiphase.wav", "antiphase.wav: the channels cancel out when mixed to mono"),
    ],
)
def test_degenerate_audio_is_encoded_with_a_warning(workspace, name, warning):
    result = run_timbre(["encode", name, "--out", "z2.npy"], workspace)
    assert result.returncode == 0, result.stderr
    assert any(line.startswith(f"timbre encode: warning: {warning}") for line in result.stderr.splitlines())
    assert (workspace / "z2.npy").is_file()


@pytest.mark.slow
def test_compose_accepts_the_bundled_name_and_labels_its_times(workspace):
    result = run_timbre(["compose", "--model", "default", "--bars", "1", "--out", "piece.mid"], workspace)
    assert result.returncode == 0, result.stderr
    assert "s of music; composed in" in result.stdout
    assert (workspace / "piece.mid").read_bytes()[:4] == b"MThd"


@pytest.mark.slow
def test_a_failed_grid_leaves_no_partial_folder(workspace):
    """Notes are written as they are decoded, yet the output folder gets all of them or nothing."""
    result = run_timbre(["grid", "a.wav", "b.wav", "a.wav", "nan.wav", "--size", "2", "--out", "new/grid"], workspace)
    assert result.returncode == 1 and "NaN" in result.stderr
    assert not (workspace / "new").exists()


def test_help_into_a_closed_pipe_is_quiet(tmp_path):
    command = f"{sys.executable} -m timbre.cli --help | head -1"
    result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr and result.stdout.startswith("usage: timbre")
