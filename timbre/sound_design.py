"""Sound-design jobs built from the model and the interpolation functions.

Each job decodes all of its notes in one batched decoder pass and returns waveforms; writing
files and pictures is left to :func:`write_notes` so the CLI, the examples and the demo share it.
For many or long notes, :func:`sweep_embeddings` / :func:`grid_embeddings` and
:func:`synthesize_in_chunks` give the same notes a chunk at a time, so memory stays flat in the
number of notes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from timbre import interpolate
from timbre.embedding import Embedding
from timbre.errors import ConfigError
from timbre.io.audio import save_wav
from timbre.synthesizer import AudioSource, TimbreModel

METHODS = ("slerp", "lerp", "crossfade")
# Samples decoded per chunk by synthesize_in_chunks: 250 note-seconds at 16 kHz, a few hundred MB
# of decoder activations; a 5 x 5 grid of 4 s notes is one chunk.
CHUNK_SAMPLES = 4_000_000


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
    temperature: float | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Notes moving from timbre ``a`` to timbre ``b`` in ``steps`` equal mixes.

    ``method`` is ``"slerp"`` or ``"lerp"`` (blend the embeddings, then decode) or
    ``"crossfade"`` (decode the two endpoints and mix their waveforms: the baseline that blends
    audio instead of timbre).

    Returns: ``(audio [steps, samples], mixes [steps])`` with mix 0 = ``a`` and 1 = ``b``.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown interpolation method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "crossfade":
        _check_steps(steps)
        ends = model.synthesize_batch(
            [model.encode(a), model.encode(b)], [pitch] * 2, seconds=[seconds] * 2, velocities=[velocity] * 2,
            temperature=temperature, seed=seed, progress=progress,
        )  # fmt: skip
        mixes = np.linspace(0.0, 1.0, steps)
        audio = np.stack([crossfade(ends, m) for m in mixes])
        return audio, mixes
    embeddings, mixes = sweep_embeddings(model, a, b, steps=steps, method=method)
    audio = model.synthesize_batch(
        embeddings, [pitch] * steps, seconds=[seconds] * steps, velocities=[velocity] * steps,
        temperature=temperature, seed=seed, progress=progress,
    )  # fmt: skip
    return audio, mixes


def sweep_embeddings(
    model: TimbreModel, a: AudioSource | Embedding, b: AudioSource | Embedding, *, steps: int, method: str
) -> tuple[list[Embedding], np.ndarray]:
    """The ``steps`` embeddings of a ``"slerp"`` or ``"lerp"`` sweep from ``a`` to ``b``, and their mixes."""
    _check_steps(steps)
    if method not in ("slerp", "lerp"):
        raise ConfigError(f"unknown embedding interpolation method {method!r}; choose slerp or lerp")
    embedding_a, embedding_b = model.encode(a), model.encode(b)
    mixes = np.linspace(0.0, 1.0, steps)
    blend = interpolate.slerp if method == "slerp" else interpolate.lerp
    mix_column = torch.as_tensor(mixes, dtype=torch.float32)[:, None]
    tensors = blend(embedding_a.tensor, embedding_b.tensor, mix_column)  # [steps, frames, dim]
    return [embedding_a.with_tensor(t, source=f"{method} {m:.2f}") for t, m in zip(tensors, mixes)], mixes


def crossfade(ends: np.ndarray, mix: float) -> np.ndarray:
    """``(1 - mix) * ends[0] + mix * ends[1]`` of two decoded notes ``[2, samples]``; ``[samples]`` float32."""
    return ((1 - mix) * ends[0] + mix * ends[1]).astype(np.float32)


def _check_steps(steps: int) -> None:
    if steps < 2:
        raise ConfigError(f"steps must be at least 2, got {steps}")


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
    temperature: float | None = None,
    progress: bool = False,
) -> np.ndarray:
    """An NSynth Super style ``size x size`` grid between four corner timbres.

    Corners are top-left, top-right, bottom-left, bottom-right. Returns ``[size, size, samples]``.
    """
    flat = grid_embeddings(model, corners, size=size, weighting=weighting, method=method)
    count = len(flat)
    audio = model.synthesize_batch(
        flat, [pitch] * count, seconds=[seconds] * count, velocities=[velocity] * count,
        temperature=temperature, seed=seed, progress=progress,
    )  # fmt: skip
    return audio.reshape(size, size, -1)


def grid_embeddings(
    model: TimbreModel,
    corners: Sequence[AudioSource | Embedding],
    *,
    size: int,
    weighting: str = "bilinear",
    method: str = "lerp",
) -> list[Embedding]:
    """The ``size * size`` embeddings of :func:`timbre_grid`, row by row."""
    if len(corners) != 4:
        raise ConfigError(f"a grid needs exactly 4 corner sounds, got {len(corners)}")
    if size < 2:
        raise ConfigError(f"grid size must be at least 2, got {size}")
    embeddings = [model.encode(corner) for corner in corners]
    tensors = interpolate.grid([e.tensor for e in embeddings], size, weighting=weighting, method=method)
    return [embeddings[0].with_tensor(t, source="grid") for t in tensors.reshape(size * size, *tensors.shape[2:])]


def synthesize_in_chunks(
    model: TimbreModel,
    embeddings: Sequence[Embedding],
    *,
    pitch: int = 60,
    seconds: float | None = 4.0,
    velocity: int | None = None,
    seed: int = 0,
    temperature: float | None = None,
    progress: bool = False,
    chunk_samples: int = CHUNK_SAMPLES,
) -> Iterator[np.ndarray]:
    """Decode ``embeddings`` at one pitch, a few notes per decoder pass; yields each note ``[samples]``.

    A chunk holds as many notes as fit in ``chunk_samples`` samples (at least one). Chunk ``k`` is
    decoded with seed ``seed + k``: when everything fits in one chunk the notes equal those of
    one :meth:`~timbre.synthesizer.TimbreModel.synthesize_batch` call with ``seed``.
    """
    note_samples = (
        max(round((seconds if seconds is not None else e.seconds) * model.sample_rate) for e in embeddings)
        if embeddings
        else 0
    )
    per_chunk = max(1, chunk_samples // max(note_samples, 1))
    chunks = math.ceil(len(embeddings) / per_chunk)
    from tqdm.auto import tqdm

    with tqdm(total=len(embeddings), unit="note", desc="decoding", disable=not progress or chunks < 2) as bar:
        for index in range(chunks):
            chunk = embeddings[index * per_chunk : (index + 1) * per_chunk]
            audio = model.synthesize_batch(
                chunk, [pitch] * len(chunk), seconds=[seconds] * len(chunk), velocities=[velocity] * len(chunk),
                temperature=temperature, seed=seed + index, progress=progress and chunks == 1,
            )  # fmt: skip
            bar.update(len(chunk))
            yield from audio


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
    temperature: float | None = None,
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
