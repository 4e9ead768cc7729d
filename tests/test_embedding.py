"""Embedding: duration fitting (attack kept, sustain stretched, release appended) and files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from timbre.embedding import Embedding
from timbre.errors import AudioError


def note_embedding(frames: int = 125) -> Embedding:
    torch.manual_seed(0)
    return Embedding(torch.randn(frames, 16), source="note.wav", pitch=60, velocity=100)


def test_defaults_follow_the_nsynth_note_layout():
    embedding = note_embedding()
    assert embedding.release_frame == round(0.75 * 125)  # held 3 of 4 s
    assert embedding.attack_frames == 8  # 0.25 s at hop 512
    assert embedding.seconds == pytest.approx(4.0, abs=0.01)


@pytest.mark.parametrize("hold_seconds", [0.1, 1.0, 3.0, 10.0])
def test_fit_keeps_attack_and_release_and_reaches_the_length(hold_seconds):
    embedding = note_embedding()
    fitted = embedding.fit_to_duration(hold_seconds)
    hold_frames = int(np.ceil(hold_seconds * 16000 / 512))
    release = embedding.tensor[embedding.release_frame :]
    assert fitted.release_frame == hold_frames
    assert fitted.frames == hold_frames + release.shape[0]
    assert torch.equal(fitted.tensor[fitted.release_frame :], release)
    kept = min(hold_frames, embedding.attack_frames)
    assert torch.equal(fitted.tensor[:kept], embedding.tensor[:kept])


def test_long_notes_stretch_the_sustain_smoothly():
    embedding = note_embedding()
    fitted = embedding.fit_to_duration(12.0)
    sustain = fitted.tensor[embedding.attack_frames : fitted.release_frame]
    original = embedding.tensor[embedding.attack_frames : embedding.release_frame]
    # Linear interpolation stays inside each original frame-to-frame step: no jumps, no loops.
    assert torch.equal(sustain[0], original[0]) and torch.allclose(sustain[-1], original[-1])
    assert sustain.diff(dim=0).abs().max() <= original.diff(dim=0).abs().max() + 1e-6


def test_save_and_load_round_trip(tmp_path):
    embedding = note_embedding()
    path = embedding.save(tmp_path / "z.npy")
    loaded = Embedding.load(path)
    assert torch.equal(loaded.tensor, embedding.tensor)
    assert (loaded.pitch, loaded.velocity, loaded.release_frame, loaded.source) == (60, 100, 94, "note.wav")
    assert json.loads((tmp_path / "z.json").read_text())["hop_length"] == 512


def test_bare_npy_loads_with_defaults(tmp_path):
    np.save(tmp_path / "bare.npy", np.zeros((10, 16), dtype=np.float32))
    loaded = Embedding.load(tmp_path / "bare.npy")
    assert loaded.frames == 10 and loaded.source.endswith("bare.npy")


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(AudioError, match="does not exist"):
        Embedding.load(tmp_path / "missing.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(AudioError, match="junk.npy: is not a NumPy .npy file, not an embedding"):
        Embedding.load(tmp_path / "junk.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(AudioError, match=r"cube.npy: expected an embedding \[frames, dim\]"):
        Embedding.load(tmp_path / "cube.npy")
    with pytest.raises(AudioError, match="NaN"):
        Embedding(torch.full((4, 16), float("nan")))


def test_the_encoded_pitch_is_the_given_one_else_the_estimate_and_mixes_keep_a_shared_one() -> None:
    from timbre.embedding import shared_encoded_pitch

    tensor = torch.zeros(8, 4)
    given = Embedding(tensor, pitch=60, extra={"estimated_pitch": 48})
    estimated = Embedding(tensor, extra={"estimated_pitch": 60})
    unknown = Embedding(tensor)
    assert (given.encoded_pitch, estimated.encoded_pitch, unknown.encoded_pitch) == (60, 60, None)
    assert shared_encoded_pitch([given, estimated]) == {"estimated_pitch": 60}
    assert shared_encoded_pitch([given, Embedding(tensor, pitch=67)]) == {}
    assert shared_encoded_pitch([given, unknown]) == {}
