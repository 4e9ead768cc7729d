"""Tests of timbre.plots: rainbowgram content and the image files every plot writes."""

from __future__ import annotations

import struct
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from timbre import plots
from timbre.errors import AudioError, ConfigError

SAMPLE_RATE = 16000


def sine(frequency: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def a440() -> np.ndarray:
    return sine(440.0)


def test_rainbowgram_of_a_sine_is_brightest_at_its_bin_with_steady_colour(a440):
    image = plots.rainbowgram(a440)
    bins = plots.OCTAVES * plots.BINS_PER_OCTAVE
    frames = 1 + len(a440) // plots.HOP_LENGTH
    assert image.shape == (bins, frames, 3) and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1
    expected_bin = round(plots.BINS_PER_OCTAVE * np.log2(440.0 / librosa.note_to_hz("C2")))  # 110
    middle = slice(10, -10)  # away from the zero-padded edges
    row_brightness = image[:, middle].max(axis=-1).mean(axis=1)
    assert row_brightness.argmax() == expected_bin
    # Instantaneous frequency: 440 Hz turns 7.04 cycles per 256-sample hop, i.e. +0.04 of a turn,
    # which is 0.08 in units of pi. Computed along time, so the same in every frame.
    _, instantaneous_frequency = plots.rainbowgram_layers(a440)
    steady = instantaneous_frequency[expected_bin, middle]
    np.testing.assert_allclose(steady, 0.08, atol=2e-3)
    # Steady frequency means steady colour along the row.
    assert image[expected_bin, middle].std(axis=0).max() < 0.01


def test_rainbowgram_layers_of_silence_and_tensor_input():
    brightness, _ = plots.rainbowgram_layers(torch.zeros(4000))
    assert brightness.max() == 0  # silence is black, not normalised up to full brightness


def test_rainbowgram_rejects_bad_audio():
    with pytest.raises(AudioError, match="1-D"):
        plots.rainbowgram(np.zeros((2, 1000), dtype=np.float32))
    with pytest.raises(AudioError, match="NaN"):
        plots.rainbowgram(np.full(1000, np.nan, dtype=np.float32))


def test_plot_rainbowgram_writes_png(tmp_path, a440):
    path = tmp_path / "sub" / "a440.png"
    figure = plots.plot_rainbowgram(a440, path=path, title="A4")
    assert png_size(path) == (800, 400)
    assert figure.axes[0].get_title() == "A4"
    assert list(tmp_path.glob("sub/.*")) == []  # no temporary file left behind


def test_plot_sweep_grid_spectrogram_sizes(tmp_path, a440):
    steps = [sine(f, 0.5) for f in (220.0, 330.0, 440.0)]
    assert png_size(plots.plot_sweep(steps, ["0", "0.5", "1"], tmp_path / "sweep.png")) == (900, 320)
    cells = [[steps[0], steps[1]], [steps[2], steps[0]]]
    assert png_size(plots.plot_grid(cells, tmp_path / "grid.png")) == (400, 320)
    assert png_size(plots.plot_spectrogram(a440, tmp_path / "spec.png")) == (800, 400)
    with pytest.raises(ConfigError, match="labels"):
        plots.plot_sweep(steps, ["only one"], tmp_path / "bad.png")
    with pytest.raises(ConfigError, match="row lengths"):
        plots.plot_grid([[steps[0]], [steps[1], steps[2]]], tmp_path / "bad.png")


def test_plot_grid_with_row_and_column_labels(tmp_path, a440):
    cells = [[a440, a440, a440], [a440, a440, a440]]
    path = plots.plot_grid(cells, tmp_path / "sheet.png", row_labels=["flute 60", "violin 60"],
                           column_labels=["original", "model", "untrained"])  # fmt: skip
    # 200 x 160 px per cell, plus a line of column titles.
    assert png_size(path) == (600, 350)
    with pytest.raises(ConfigError, match="2 rows but 1 row labels"):
        plots.plot_grid(cells, tmp_path / "bad.png", row_labels=["only one"])
    with pytest.raises(ConfigError, match="3 columns but 2 column labels"):
        plots.plot_grid(cells, tmp_path / "bad.png", column_labels=["a", "b"])


def test_plot_pitch_errors_counts_silent_notes(tmp_path):
    path = plots.plot_pitch_errors({"original": [0.0, 3.0, float("nan")], "model": [900.0, -20.0, 0.0]},
                                   tmp_path / "pitch.png")  # fmt: skip
    assert png_size(path) == (800, 400)


def test_plot_loss_curve(tmp_path):
    steps = np.arange(50)
    losses = 5 * np.exp(-steps / 10) + 0.1
    path = plots.plot_loss_curve(
        steps, losses, tmp_path / "loss.png", valid_steps=[0, 25, 49], valid_losses=[5.0, 0.5, 0.2]
    )
    assert png_size(path) == (800, 400)
    with pytest.raises(ConfigError, match="equal length"):
        plots.plot_loss_curve(steps, losses[:-1], tmp_path / "bad.png")
    with pytest.raises(ConfigError, match="format"):
        plots.plot_loss_curve(steps, losses, tmp_path / "loss.xyz")
