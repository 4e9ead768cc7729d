"""Sound-design jobs built from the model and the interpolation functions.

Each job decodes all of its notes in one batched decoder pass and returns waveforms; writing
files and pictures is left to :func:`write_notes` so the CLI, the examples and the demo share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from timbre import interpolate
from timbre.embedding import Embedding
from timbre.errors import ConfigError
from timbre.io.audio import save_wav
from timbre.synthesizer import AudioSource, TimbreModel

METHODS = ("slerp", "lerp", "crossfade")


def interpolation_sweep(
    model: TimbreModel,
    a: AudioSource | Embedding,
    b: AudioSource | Embedding,
    *,
    steps: int = 5,
    pitch: int = 60,
    seconds: float | None = 4.0,
    method: str = "slerp",
    velocity: int | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Notes moving from timbre ``a`` to timbre ``b`` in ``steps`` equal mixes.

    ``method`` is ``"slerp"`` or ``"lerp"`` (blend the embeddings, then decode) or
    ``"crossfade"`` (decode the two endpoints and mix their waveforms: the baseline that blends
    audio instead of timbre).

    Returns: ``(audio [steps, samples], mixes [steps])`` with mix 0 = ``a`` and 1 = ``b``.
    """
    if steps < 2:
        raise ConfigError(f"steps must be at least 2, got {steps}")
    if method not in METHODS:
        raise ConfigError(f"unknown interpolation method {method!r}; choose one of {', '.join(METHODS)}")
    embedding_a, embedding_b = model.encode(a), model.encode(b)
    mixes = np.linspace(0.0, 1.0, steps)
    if method == "crossfade":
        ends = model.synthesize_batch(
            [embedding_a, embedding_b], [pitch] * 2, seconds=[seconds] * 2, velocities=[velocity] * 2,
            temperature=temperature, seed=seed, progress=progress,
        )  # fmt: skip
        audio = np.stack([(1 - m) * ends[0] + m * ends[1] for m in mixes]).astype(np.float32)
        return audio, mixes
    blend = interpolate.slerp if method == "slerp" else interpolate.lerp
    mix_column = torch.as_tensor(mixes, dtype=torch.float32)[:, None]
    tensors = blend(embedding_a.tensor, embedding_b.tensor, mix_column)  # [steps, frames, dim]
    embeddings = [embedding_a.with_tensor(t, source=f"{method} {m:.2f}") for t, m in zip(tensors, mixes)]
    audio = model.synthesize_batch(
        embeddings, [pitch] * steps, seconds=[seconds] * steps, velocities=[velocity] * steps,
        temperature=temperature, seed=seed, progress=progress,
    )  # fmt: skip
    return audio, mixes


def timbre_grid(
    model: TimbreModel,
    corners: Sequence[AudioSource | Embedding],
    *,
    size: int = 3,
    pitch: int = 60,
    seconds: float | None = 4.0,
    weighting: str = "bilinear",
    method: str = "lerp",
    velocity: int | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    progress: bool = False,
) -> np.ndarray:
    """An NSynth Super style ``size x size`` grid between four corner timbres.

    Corners are top-left, top-right, bottom-left, bottom-right. Returns ``[size, size, samples]``.
    """
    if len(corners) != 4:
        raise ConfigError(f"a grid needs exactly 4 corner sounds, got {len(corners)}")
    if size < 2:
        raise ConfigError(f"grid size must be at least 2, got {size}")
    embeddings = [model.encode(corner) for corner in corners]
    tensors = interpolate.grid([e.tensor for e in embeddings], size, weighting=weighting, method=method)
    flat = [embeddings[0].with_tensor(t, source="grid") for t in tensors.reshape(size * size, *tensors.shape[2:])]
    count = len(flat)
    audio = model.synthesize_batch(
        flat, [pitch] * count, seconds=[seconds] * count, velocities=[velocity] * count,
        temperature=temperature, seed=seed, progress=progress,
    )  # fmt: skip
    return audio.reshape(size, size, -1)


def morph_note(
    model: TimbreModel,
    a: AudioSource | Embedding,
    b: AudioSource | Embedding,
    *,
    pitch: int = 60,
    seconds: float = 4.0,
    curve: str = "linear",
    method: str = "slerp",
    velocity: int | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    progress: bool = False,
) -> np.ndarray:
    """One note whose timbre moves from ``a`` to ``b`` along ``curve`` over ``seconds``; ``[samples]``."""
    embedding_a = model.prepare_embedding(model.encode(a), seconds)
    embedding_b = model.prepare_embedding(model.encode(b), seconds)
    tensor = interpolate.morph(embedding_a.tensor, embedding_b.tensor, curve, method=method)
    morphed = embedding_a.with_tensor(tensor, source=f"morph {curve}")
    return model.synthesize(
        morphed, pitch=pitch, seconds=seconds, velocity=velocity, temperature=temperature, seed=seed, progress=progress
    )


def write_notes(
    directory: str | Path,
    audios: Sequence[np.ndarray],
    names: Sequence[str],
    sample_rate: int,
    sheet: str | None = None,
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``<directory>/<name>.wav`` per note and, if ``sheet`` is given, a rainbowgram sheet PNG."""
    directory = Path(directory)
    written = [save_wav(directory / f"{name}.wav", audio, sample_rate) for audio, name in zip(audios, names)]
    if sheet:
        from timbre.plots import plot_sweep

        written.append(plot_sweep(list(audios), list(labels or names), directory / sheet, sample_rate=sample_rate))
    return written
