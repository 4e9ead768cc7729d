"""Run an autoencoder (and its baselines) on notes, and score every note.

Systems. ``model`` encodes each note and decodes it at its pitch, exactly as a user does with
``model.encode(file)`` then ``model.synthesize(z, pitch=p, seconds=...)`` (same seed, and one note
per decoder pass for parallel decoders, so the noise is the same as the public call's). Two
baselines tell what the model's figures are worth: ``fixed_embedding`` decodes every note from one
embedding, the mean of all evaluated notes' embeddings (what an autoencoder that ignores its input
would do at best), and ``untrained`` is a model of the same config with freshly initialised,
seeded weights, encoding and decoding every note itself. ``original`` is the input notes, scored as
if they were a reconstruction: the ceiling (identification 100%, distances 0, and the pitch the
tracker hears in the real notes).

Scores per note and system (:mod:`timbre.evaluation.metrics`): multi-scale spectral distance,
loudness-envelope error, timbre identification rank among the instruments at its pitch, and
optionally PESTO pitch. Interpolation sweeps slerp between two instruments' embeddings at one pitch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from timbre.embedding import Embedding
from timbre.errors import CheckpointError
from timbre.evaluation.metrics import (
    PitchScore,
    identification_ranks,
    loudness_envelope_error,
    multiscale_spectral_distance,
    pitch_scores,
    spectral_centroid,
    sweep_smoothness,
    timbre_features,
)
from timbre.interpolate import slerp
from timbre.models.autoencoder import Autoencoder
from timbre.synthesizer import TimbreModel
from timbre.train.checkpoint import build_model, load_checkpoint

ORIGINAL = "original"
MODEL = "model"
FIXED_EMBEDDING = "fixed_embedding"
UNTRAINED = "untrained"
BASELINES = (FIXED_EMBEDDING, UNTRAINED)
# Reversals of a sweep's spectral centroid smaller than this fraction of the endpoints' difference are ignored.
SMOOTHNESS_TOLERANCE = 0.1


def untrained_model(model: TimbreModel, seed: int = 0) -> TimbreModel:
    """A model of the same config as ``model`` with freshly initialised (seeded) weights."""
    checkpoint = load_checkpoint(model.info["path"])
    # fork_rng: seeding must not change the random state of the caller.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        autoencoder = build_model(checkpoint["model_config"], checkpoint["path"])
    if not isinstance(autoencoder, Autoencoder):
        raise CheckpointError(f"{checkpoint['path']}: holds a {type(autoencoder).__name__}, not an autoencoder")
    return TimbreModel(autoencoder, name=f"untrained ({model.name})", info={"seed": seed}, device=str(model.device))


def mean_embedding(embeddings: Sequence[Embedding]) -> Embedding:
    """The frame-by-frame mean of equally long embeddings ``[frames, dim]``: one timbre for every note."""
    frames = {embedding.frames for embedding in embeddings}
    if len(frames) != 1:
        raise ValueError(f"embeddings to average must have one length, got {sorted(frames)} frames")
    mean = torch.stack([embedding.tensor for embedding in embeddings]).mean(dim=0)
    return embeddings[0].with_tensor(mean, source=f"mean of {len(embeddings)} embeddings")


def decode_notes(
    model: TimbreModel,
    embeddings: Sequence[Embedding],
    pitches: Sequence[int],
    samples: int,
    batch_size: int,
    seed: int = 0,
    temperature: float | None = None,
    progress: bool = False,
    clock_gain: float | None = None,
) -> np.ndarray:
    """Decode each embedding at its pitch into ``samples`` samples, ``batch_size`` notes per pass
    (``temperature`` and ``clock_gain``: see :meth:`timbre.TimbreModel.synthesize`).

    Returns:
        ``[notes, samples]`` float32.
    """
    seconds = samples / model.sample_rate
    audio = np.zeros((len(embeddings), samples), dtype=np.float32)
    for start in range(0, len(embeddings), batch_size):
        stop = start + batch_size
        decoded = model.synthesize_batch(
            embeddings[start:stop], pitches[start:stop], seconds=[seconds] * len(embeddings[start:stop]),
            temperature=temperature, seed=seed, progress=progress, clock_gain=clock_gain,
        )  # fmt: skip
        length = min(samples, decoded.shape[1])
        audio[start:stop, :length] = decoded[:, :length]
    return audio


@dataclass
class SystemScores:
    """Every note's scores for one system; arrays are ``[notes]``.

    Attributes:
        spectral_distance: multi-scale spectral distance to the original note.
        loudness_error_db: loudness-envelope error against the original note, in dB.
        loudness_bias_db: the mean signed level difference to the original note, in dB.
        rank: place of the note's own instrument among the instruments at its pitch (1 = identified).
        candidates: instruments at the note's pitch.
        pitch: PESTO's verdict per note, or None when pitch was not tracked for this system.
    """

    spectral_distance: np.ndarray
    loudness_error_db: np.ndarray
    loudness_bias_db: np.ndarray
    rank: np.ndarray
    candidates: np.ndarray
    pitch: list[PitchScore] | None

    def summary(self) -> dict[str, Any]:
        """Means and spreads of the scores, identification over notes with at least two candidates."""
        compared = self.candidates >= 2
        identification = None
        if compared.any():
            ranks, candidates = self.rank[compared], self.candidates[compared]
            identification = {
                "top1": float(np.mean(ranks == 1)),
                "top3": float(np.mean(ranks <= 3)),
                "mean_rank": float(ranks.mean()),
                "chance_top1": float(np.mean(1.0 / candidates)),
                "chance_top3": float(np.mean(np.minimum(3, candidates) / candidates)),
                "notes": int(compared.sum()),
            }
        return {
            "identification": identification,
            "spectral_distance": _spread(self.spectral_distance),
            "loudness_error_db": _spread(self.loudness_error_db),
            "loudness_bias_db": _spread(self.loudness_bias_db),
            "pitch": pitch_summary(self.pitch) if self.pitch is not None else None,
        }

    def note(self, row: int) -> dict[str, Any]:
        """The scores of note ``row``."""
        return {
            "spectral_distance": float(self.spectral_distance[row]),
            "loudness_error_db": float(self.loudness_error_db[row]),
            "loudness_bias_db": float(self.loudness_bias_db[row]),
            "identification_rank": int(self.rank[row]),
            "pitch": asdict(self.pitch[row]) if self.pitch is not None else None,
        }


def _spread(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "std": float(values.std()), "median": float(np.median(values))}


def pitch_summary(scores: Sequence[PitchScore]) -> dict[str, Any]:
    """Accuracy and error statistics of a set of notes' pitch scores."""
    sounding = [score for score in scores if score.sounding_fraction > 0]
    return {
        "accuracy": float(np.mean([score.correct for score in scores])),
        "sounding_notes": len(sounding) / len(scores),
        "frames_within": float(np.mean([score.frames_within for score in sounding])) if sounding else None,
        "median_abs_cents": float(np.median([abs(score.cents) for score in sounding])) if sounding else None,
    }


def score_systems(
    originals: np.ndarray,
    outputs: dict[str, np.ndarray],
    pitches: Sequence[int],
    instruments: Sequence[str],
    sample_rate: int,
    track_pitch_of: Sequence[str] = (),
) -> dict[str, SystemScores]:
    """Score the original notes and every system's reconstructions of them.

    Args:
        originals: ``[notes, samples]`` the input notes.
        outputs: ``{system: [notes, samples]}`` reconstructions, row ``i`` of note ``i``.
        pitches, instruments: ``[notes]`` each note's MIDI pitch and instrument.
        sample_rate: of all audio.
        track_pitch_of: systems (``"original"`` included) whose pitch PESTO judges (~0.3 s per note).

    Returns:
        ``{"original": ..., system: ...}`` in that order.
    """
    reference_features = timbre_features(originals, sample_rate)
    systems = {ORIGINAL: originals, **outputs}
    scores = {}
    for name, audio in systems.items():
        features = reference_features if name == ORIGINAL else timbre_features(audio, sample_rate)
        ranks, candidates = identification_ranks(features, reference_features, pitches, instruments)
        scores[name] = SystemScores(
            spectral_distance=multiscale_spectral_distance(audio, originals),
            loudness_error_db=loudness_envelope_error(audio, originals),
            loudness_bias_db=loudness_envelope_error(audio, originals, signed=True),
            rank=ranks,
            candidates=candidates,
            pitch=pitch_scores(audio, pitches, sample_rate) if name in track_pitch_of else None,
        )
    return scores


def run_sweeps(
    model: TimbreModel,
    embeddings: Sequence[Embedding],
    pairs: Sequence[tuple[int, int]],
    pitches: Sequence[int],
    steps: int,
    samples: int,
    decode_options: dict[str, Any],
    track_pitch: bool,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Decode slerp sweeps between the embeddings of each pair, at the pair's pitch.

    Args:
        embeddings: ``[notes]`` embeddings; ``pairs`` index into them and ``pitches``.
        steps: points per sweep from t=0 to t=1, both included.
        decode_options: ``batch_size``, ``seed``, ``temperature``, ``progress``, ``clock_gain`` of
            :func:`decode_notes`.
        track_pitch: judge every step's pitch with PESTO.

    Returns:
        ``(audio [sweeps, steps, samples], one record per sweep)``: the pitch per step (when tracked)
        and the spectral centroid per step with its smoothness.
    """
    mix = torch.linspace(0.0, 1.0, steps)
    sweep_embeddings, step_pitches = [], []
    for a, b in pairs:
        mixed = slerp(embeddings[a].tensor, embeddings[b].tensor, mix[:, None])  # [steps, frames, dim]
        sweep_embeddings += [
            embeddings[a].with_tensor(tensor, source=f"slerp t={t:.3f}") for tensor, t in zip(mixed, mix)
        ]
        step_pitches += [pitches[a]] * steps
    if not pairs:
        return np.zeros((0, steps, samples), dtype=np.float32), []
    audio = decode_notes(model, sweep_embeddings, step_pitches, samples, **decode_options)
    scores = pitch_scores(audio, step_pitches, model.sample_rate) if track_pitch else None
    centroids = spectral_centroid(audio, model.sample_rate).reshape(len(pairs), steps)
    records = []
    for k, (a, b) in enumerate(pairs):
        record: dict[str, Any] = {"a": a, "b": b, "pitch": pitches[a], "centroid_hz": centroids[k].tolist()}
        if scores is not None:
            sweep_scores = scores[k * steps : (k + 1) * steps]
            record["pitch_cents"] = [score.cents for score in sweep_scores]
            record["pitch_correct"] = [score.correct for score in sweep_scores]
        if np.isfinite(centroids[k]).all():
            record.update(asdict(sweep_smoothness(centroids[k], SMOOTHNESS_TOLERANCE)))
        records.append(record)
    return audio.reshape(len(pairs), steps, samples), records


def sweep_summary(records: Sequence[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Totals over sweeps: pitch kept, reversals, overshoot and jumps of the spectral centroid."""
    smooth = [record for record in records if "reversals" in record]
    jumps = [record["max_jump_ratio"] for record in smooth if math.isfinite(record["max_jump_ratio"])]
    tracked = [record for record in records if "pitch_correct" in record]
    return {
        "sweeps": len(records),
        "pitch_kept_steps": float(np.mean([c for r in tracked for c in r["pitch_correct"]])) if tracked else None,
        "sweeps_keeping_pitch_at_every_step": sum(all(r["pitch_correct"]) for r in tracked) if tracked else None,
        "sweeps_without_reversal": sum(record["reversals"] == 0 for record in smooth),
        "sweeps_within_endpoints": sum(record["within_endpoints"] for record in smooth),
        "sweeps_silent_somewhere": len(records) - len(smooth),
        "median_max_jump_ratio": float(np.median(jumps)) if jumps else None,
        "even_jump_ratio": 1.0 / (steps - 1),
    }
