"""Rainbowgrams, spectrograms, pitch-error histograms and training curves.

A rainbowgram (NSynth paper, Engel et al. 2017) draws a constant-Q transform with its log magnitude
as brightness and its instantaneous frequency as colour. The instantaneous frequency is the phase
of each CQT bin unwrapped along time and differentiated frame to frame, divided by pi so it lies in
[-1, 1]; a steady partial advances its phase by the same amount every hop, so a harmonic tone shows
as horizontal stripes, each of one steady colour. The settings are those of the NSynth rainbowgram
code: hop 256, 40 bins per octave (10 notes x 4-fold oversampling) over 6 octaves from C2, filter
scale 0.8, 70 dB of range below the peak, matplotlib's ``rainbow`` colormap.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``: they
render with the Agg engine, need no display, and leave no global figure state to close. Files are
written atomically (temporary file in the target folder, then rename); the format follows the
suffix (``.png`` normally).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import librosa
import librosa.display
import matplotlib
import numpy as np
import torch
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from timbre.constants import SAMPLE_RATE
from timbre.errors import AudioError, ConfigError
from timbre.io.files import atomic_write

AudioLike = np.ndarray | torch.Tensor

HOP_LENGTH = 256
BINS_PER_OCTAVE = 40
OCTAVES = 6
FMIN_NOTE = "C2"
FILTER_SCALE = 0.8
TOP_DB = 70.0
COLORMAP = "rainbow"
DPI = 100

__all__ = [
    "plot_grid",
    "plot_loss_curve",
    "plot_pitch_errors",
    "plot_rainbowgram",
    "plot_spectrogram",
    "plot_sweep",
    "rainbowgram",
    "rainbowgram_layers",
]


def rainbowgram_layers(audio: AudioLike, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """The two layers of a rainbowgram.

    Args:
        audio: ``[samples]`` mono waveform.
        sample_rate: its rate in Hz.

    Returns:
        ``(brightness, instantaneous_frequency)``, both ``[bins, frames]`` float32, row 0 the lowest
        bin (C2), ``frames = 1 + samples // 256``. ``brightness`` is the CQT power in dB relative to
        its peak, clipped at -70 dB and mapped to [0, 1] (all zeros for silence).
        ``instantaneous_frequency`` is the frame-to-frame phase advance over pi, in [-1, 1]; the
        first frame holds the initial phase over pi, as in the NSynth/GANSynth code.
    """
    audio = _as_audio(audio)
    _check_sample_rate(sample_rate)
    cqt = _cqt(audio, sample_rate)
    magnitude = np.abs(cqt)
    peak = float(magnitude.max())
    if peak == 0.0:
        brightness = np.zeros(magnitude.shape, dtype=np.float32)
    else:
        decibels = librosa.amplitude_to_db(magnitude, ref=peak, amin=1e-10 * peak, top_db=TOP_DB)
        brightness = (decibels / TOP_DB + 1).astype(np.float32)
    # Unwrapping along time (axis 1) then differencing gives the wrapped phase advance per hop.
    phase = np.unwrap(np.angle(cqt), axis=1)
    instantaneous_frequency = np.diff(phase, axis=1, prepend=0.0) / np.pi
    return brightness, instantaneous_frequency.astype(np.float32)


def rainbowgram(audio: AudioLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """RGB rainbowgram image.

    The instantaneous frequency picks the colour from the ``rainbow`` colormap over [-1, 1], scaled
    by the brightness: the same picture as NSynth's, which overlaid a black layer of opacity
    ``1 - brightness`` on the coloured one.

    Args:
        audio: ``[samples]`` mono waveform.
        sample_rate: its rate in Hz.

    Returns:
        ``[bins, frames, 3]`` float32 in [0, 1], row 0 the lowest bin (flip it, or draw with
        ``origin="lower"``, to put high notes on top).
    """
    brightness, instantaneous_frequency = rainbowgram_layers(audio, sample_rate)
    colours = matplotlib.colormaps[COLORMAP]((instantaneous_frequency + 1) / 2)[..., :3]
    return (colours * brightness[..., None]).astype(np.float32)


def plot_rainbowgram(
    audio: AudioLike,
    path: str | os.PathLike | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Figure:
    """Draw a rainbowgram with time in seconds and octave marks (C2 ... C8).

    Args:
        audio: ``[samples]`` mono waveform.
        path: if given, the figure is saved there (800 x 400 px when drawn on its own figure).
        ax: axes to draw into; by default a new figure is made.
        title: axes title.
        sample_rate: its rate in Hz.

    Returns:
        The figure drawn on (``ax.figure`` when ``ax`` is given).
    """
    if ax is None:
        figure = Figure(figsize=(8, 4), dpi=DPI, layout="constrained")
        ax = figure.add_subplot()
    else:
        # Axes of a subfigure belong to its root figure, which is what gets saved.
        figure = ax.figure if isinstance(ax.figure, Figure) else ax.figure.figure
    _draw_rainbowgram(ax, audio, sample_rate, title)
    if path is not None:
        _save(figure, path)
    return figure


def plot_sweep(
    audios: Sequence[AudioLike],
    labels: Sequence[str] | None,
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
) -> Path:
    """A row of rainbowgrams, one per step of an interpolation sweep (300 x 320 px per step).

    Args:
        audios: the steps' ``[samples]`` waveforms, in order.
        labels: one title per step (e.g. ``"t=0.25"``), or None for ``"step 1"``, ``"step 2"``, ...
        path: output image.
        sample_rate: the audio's rate in Hz.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if len(audios) == 0:
        raise ConfigError("plot_sweep needs at least one audio")
    if labels is None:
        labels = [f"step {i + 1}" for i in range(len(audios))]
    if len(labels) != len(audios):
        raise ConfigError(f"plot_sweep got {len(audios)} audios but {len(labels)} labels")
    figure = Figure(figsize=(3 * len(audios), 3.2), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, len(audios), squeeze=False)[0]
    for i, (ax, audio, label) in enumerate(zip(axes, audios, labels)):
        _draw_rainbowgram(ax, audio, sample_rate, label, note_labels=i == 0)
    return _save(figure, path)


def plot_grid(
    audios_nested: Sequence[Sequence[AudioLike]],
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    row_labels: Sequence[str] | None = None,
    column_labels: Sequence[str] | None = None,
) -> Path:
    """A sheet of rainbowgrams, e.g. laid out like the interpolation grid (200 x 160 px per cell).

    Args:
        audios_nested: rows of ``[samples]`` waveforms, e.g. ``audios[row][col]`` for the points of
            :func:`timbre.interpolate.grid`; row 0 is drawn on top. All rows must have the same length.
        path: output image.
        sample_rate: the audio's rate in Hz.
        row_labels: one label per row, written on its first cell (default: none).
        column_labels: one title per column, above the top row (default: none). Without either,
            every cell is marked ``row,column``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    rows = len(audios_nested)
    columns = {len(row) for row in audios_nested}
    if rows == 0 or len(columns) != 1 or 0 in columns:
        raise ConfigError(
            f"plot_grid needs equally long, non-empty rows; got row lengths {[len(row) for row in audios_nested]}"
        )
    cols = columns.pop()
    if row_labels is not None and len(row_labels) != rows:
        raise ConfigError(f"plot_grid got {rows} rows but {len(row_labels)} row labels")
    if column_labels is not None and len(column_labels) != cols:
        raise ConfigError(f"plot_grid got {cols} columns but {len(column_labels)} column labels")
    labelled = row_labels is not None or column_labels is not None
    # Column titles take a line of their own above the top row.
    figure = Figure(
        figsize=(2 * cols, 1.6 * rows + (0.3 if column_labels is not None else 0.0)), dpi=DPI, layout="constrained"
    )
    axes = figure.subplots(rows, cols, squeeze=False)
    for r, row in enumerate(audios_nested):
        for c, audio in enumerate(row):
            ax = axes[r][c]
            _draw_rainbowgram(ax, audio, sample_rate, title=None, note_labels=False)
            ax.set_xticks([])
            ax.set_xlabel("")
            ax.set_yticks([])
            if r == 0 and column_labels is not None:
                ax.set_title(column_labels[c], fontsize=9)
            if labelled:
                label = row_labels[r] if row_labels is not None and c == 0 else None
            else:
                label = f"{r},{c}"
            if label:
                ax.text(0.03, 0.95, label, transform=ax.transAxes, va="top", color="white", fontsize=8)
    return _save(figure, path)


def plot_pitch_errors(
    cents: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    tolerance_cents: float = 50.0,
    limit: float = 600.0,
) -> Path:
    """Histograms of per-note pitch errors, one outline per set of notes, 800 x 400 px.

    Args:
        cents: ``{label: [notes]}`` pitch errors in cents; NaN marks a silent note (counted in the label).
        path: output image.
        tolerance_cents: drawn as dashed lines at plus and minus this.
        limit: errors are clipped to ``±limit`` (the edge bins collect the rest).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    figure = Figure(figsize=(8, 4), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    # Bins centred on multiples of 25 cents, so that exact pitches do not sit on a bin edge.
    bins = np.arange(-limit - 12.5, limit + 13.0, 25.0)
    widths = np.linspace(3.0, 1.0, max(len(cents), 1))
    for width, (label, values) in zip(widths, cents.items()):
        errors = np.asarray(values, dtype=np.float64)
        finite = errors[np.isfinite(errors)]
        silent = errors.size - finite.size
        ax.hist(
            np.clip(finite, -limit, limit),
            bins=list(bins),
            histtype="step",
            linewidth=float(width),
            label=f"{label} ({silent} silent)" if silent else label,
        )
    for edge in (-tolerance_cents, tolerance_cents):
        ax.axvline(edge, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("median pitch error of the note's sounding frames (cents, clipped)")
    ax.set_ylabel("notes")
    if cents:
        ax.legend()
    return _save(figure, path)


def plot_spectrogram(
    audio: AudioLike,
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    title: str | None = None,
) -> Path:
    """A log-frequency STFT power spectrogram in dB (window 1024, hop 256), 800 x 400 px.

    Args:
        audio: ``[samples]`` mono waveform.
        path: output image.
        sample_rate: its rate in Hz.
        title: figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    audio = _as_audio(audio)
    _check_sample_rate(sample_rate)
    magnitude = np.abs(librosa.stft(audio, n_fft=1024, hop_length=HOP_LENGTH))
    peak = float(magnitude.max())
    decibels = librosa.amplitude_to_db(magnitude, ref=peak if peak > 0 else 1.0, top_db=80.0)
    figure = Figure(figsize=(8, 4), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    image = librosa.display.specshow(
        decibels,
        sr=sample_rate,
        hop_length=HOP_LENGTH,
        x_axis="time",
        y_axis="log",
        cmap="magma",
        vmin=-80.0,
        vmax=0.0,
        ax=ax,
    )
    figure.colorbar(image, ax=ax, format="%+.0f dB")
    if title:
        ax.set_title(title)
    return _save(figure, path)


def plot_loss_curve(
    steps: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    path: str | os.PathLike,
    valid_steps: Sequence[float] | np.ndarray | None = None,
    valid_losses: Sequence[float] | np.ndarray | None = None,
) -> Path:
    """Training (and optionally validation) loss against step, 800 x 400 px.

    The loss axis is logarithmic when every finite loss is positive (cross-entropy, spectral
    distances), linear otherwise. Non-finite values are left as gaps.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    curves = [("train", *_curve(steps, losses, "steps", "losses"))]
    if (valid_steps is None) != (valid_losses is None):
        raise ConfigError("plot_loss_curve needs both valid_steps and valid_losses, or neither")
    if valid_steps is not None:
        curves.append(("valid", *_curve(valid_steps, valid_losses, "valid_steps", "valid_losses")))
    figure = Figure(figsize=(8, 4), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    for label, x, y in curves:
        ax.plot(x, y, label=label, marker="o" if label == "valid" else None, markersize=3)
    finite = np.concatenate([y[np.isfinite(y)] for _, _, y in curves])
    if finite.size and (finite > 0).all():
        ax.set_yscale("log")
        # Plain numbers ("2", "0.5") rather than the default "2 x 10^0" on short log ranges.
        ax.yaxis.set_major_formatter(ticker.LogFormatter())
        ax.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(figure, path)


# --- helpers -------------------------------------------------------------------------------------


def _as_audio(audio: AudioLike) -> np.ndarray:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise AudioError(f"audio to plot must be a non-empty 1-D [samples] array, got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise AudioError(f"audio to plot must be floating point in [-1, 1], got dtype {audio.dtype}")
    if not np.isfinite(audio).all():
        raise AudioError("audio to plot contains NaN or infinite samples")
    return audio.astype(np.float32, copy=False)


def _check_sample_rate(sample_rate: int) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive integer, got {sample_rate!r}")


def _n_bins(sample_rate: int) -> int:
    # Six octaves, fewer if the top filters would reach past ~0.45 x the sample rate.
    fmin = librosa.note_to_hz(FMIN_NOTE)
    fitting = int(np.floor(BINS_PER_OCTAVE * np.log2(0.45 * sample_rate / fmin)))
    n_bins = min(OCTAVES * BINS_PER_OCTAVE, fitting)
    if n_bins < BINS_PER_OCTAVE:
        raise ConfigError(f"sample_rate {sample_rate} Hz is too low for a rainbowgram from {FMIN_NOTE}")
    return n_bins


def _cqt(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Complex CQT ``[bins, frames]``."""
    with warnings.catch_warnings():
        # librosa warns when a clip is shorter than a low octave's FFT; it zero-pads, which is right.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal")
        return librosa.cqt(
            audio,
            sr=sample_rate,
            hop_length=HOP_LENGTH,
            fmin=librosa.note_to_hz(FMIN_NOTE),
            n_bins=_n_bins(sample_rate),
            bins_per_octave=BINS_PER_OCTAVE,
            filter_scale=FILTER_SCALE,
        )


def _draw_rainbowgram(
    ax: Axes, audio: AudioLike, sample_rate: int, title: str | None, note_labels: bool = True
) -> None:
    image = rainbowgram(audio, sample_rate)
    bins, frames, _ = image.shape
    seconds = frames * HOP_LENGTH / sample_rate
    ax.imshow(image, origin="lower", aspect="auto", interpolation="nearest", extent=(0.0, seconds, 0.0, float(bins)))
    octaves = range(0, bins + 1, BINS_PER_OCTAVE)
    ax.set_yticks([float(b) for b in octaves])
    octave_of_fmin = int(FMIN_NOTE[-1])
    ax.set_yticklabels([f"C{octave_of_fmin + i}" for i in range(len(octaves))] if note_labels else [])
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title, fontsize=10)


def _curve(x: object, y: object, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ConfigError(
            f"{x_name} and {y_name} must be non-empty 1-D sequences of equal length, got shapes {x.shape} and {y.shape}"
        )
    return x, y


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` to ``path`` atomically; the format is the suffix's (PNG when there is none)."""
    path = Path(path)
    image_format = path.suffix.lower().lstrip(".") or "png"
    if image_format not in figure.canvas.get_supported_filetypes():
        raise ConfigError(f"cannot write a figure to {path}: unsupported image format {image_format!r}")
    with atomic_write(path) as file:
        figure.savefig(file, format=image_format, dpi=DPI)
    return path
