"""Refining an embedding through the decoder: the loss falls, reproducibly, and the API and CLI offer it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import timbre
from timbre.cli import main
from timbre.errors import ConfigError
from timbre.io.audio import load_audio
from timbre.models.refine import estimate_midi_pitch, refine_embedding
from timbre.render.timbres import TimbreSet
from timbre.synthesizer import encoding_key
from timbre.train.export import export_run


@pytest.fixture(scope="module")
def bundled() -> timbre.TimbreModel:
    """The bundled default: refinement matters for a trained decoder."""
    return timbre.load()


@pytest.fixture(scope="module")
def violin(note_dataset: Path) -> tuple[Path, int]:
    """A real FluidR3_GM violin note (1 s) and its MIDI pitch."""
    notes = sorted((note_dataset / "nsynth-train" / "audio").glob("*.wav"))
    path = next(path for path in notes if "string" in path.name)
    return path, int(path.stem.split("-")[-2])


def test_refining_lowers_the_decoders_loss_on_the_note_and_is_reproducible(bundled, violin):
    path, pitch = violin
    audio, _ = soundfile.read(path, dtype="float32")
    x = torch.from_numpy(audio[: 16 * 512])[None]
    decoder = bundled.autoencoder.decoder
    with torch.inference_mode():
        z = bundled.autoencoder.encode(x)
    midi = torch.tensor([pitch])

    refined = refine_embedding(decoder, x, z, midi, steps=8)
    again = refine_embedding(decoder, x, z, midi, steps=8)
    assert refined.shape == z.shape and not refined.requires_grad
    assert torch.equal(refined, again)  # a fixed noise draw: the same steps every time
    assert not torch.equal(refined, z)

    def loss(embedding: torch.Tensor) -> float:
        with torch.no_grad():
            value, _ = decoder.reconstruction_loss(x, embedding, midi, generator=torch.Generator().manual_seed(0))
        return value.item()

    assert loss(refined) < 0.97 * loss(z)
    assert refine_embedding(decoder, x, z, midi, steps=0) is z


def test_bad_refinements_are_refused(bundled, wavenet_checkpoint: Path):
    z = torch.zeros(1, bundled.autoencoder.latent_dim, 4)
    with pytest.raises(ConfigError, match="steps must be >= 0"):
        refine_embedding(bundled.autoencoder.decoder, torch.zeros(1, 2048), z, torch.tensor([60]), steps=-1)
    wavenet = timbre.load(str(wavenet_checkpoint))
    with pytest.raises(ConfigError, match="only a parallel decoder"):
        refine_embedding(wavenet.autoencoder.decoder, torch.zeros(1, 2048), z, torch.tensor([60]), steps=1)
    with pytest.raises(ConfigError, match="autoregressive decoder: only a parallel one can refine"):
        wavenet.encode(np.zeros(2048, dtype=np.float32), refine=1)
    for steps in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="refine must be a whole number"):
            bundled.encode(np.zeros(2048, dtype=np.float32), refine=steps)


def test_the_pitch_of_a_real_note_is_estimated(violin):
    path, pitch = violin
    audio, _ = soundfile.read(path, dtype="float32")
    padded = np.concatenate([audio, np.zeros(8000, dtype=np.float32)])  # silence after must not matter
    assert estimate_midi_pitch(torch.from_numpy(padded), 16000) == pitch


def test_encode_refines_short_and_long_sounds_keeping_their_frames(bundled, violin):
    path, pitch = violin
    plain = bundled.encode(path, pitch=pitch, refine=0)
    refined = bundled.encode(path, pitch=pitch, refine=3)
    assert refined.tensor.shape == plain.tensor.shape and not torch.equal(refined.tensor, plain.tensor)
    assert refined.pitch == pitch
    # Shorter than half the loss's largest FFT: encoded padded with silence, cut back to its frames.
    click = bundled.encode(np.sin(np.linspace(0, 60, 700)).astype(np.float32), pitch=60, refine=2)
    assert click.tensor.shape == (2, bundled.autoencoder.latent_dim) and click.tensor.isfinite().all()


def test_cli_encode_refine(bundled, violin, tmp_path, capsys):
    path, _ = violin
    out = tmp_path / "z.npy"
    assert main(["encode", str(path), "--out", str(out), "--refine", "2"]) == 0  # pitch estimated
    assert np.load(out).shape[1] == bundled.autoencoder.latent_dim
    assert "refining" in capsys.readouterr().err  # the steps' progress bar
    with pytest.raises(SystemExit) as exit_info:
        main(["encode", str(path), "--out", str(tmp_path / "y.npy"), "--refine", "-3"])
    assert exit_info.value.code == 2 and "-3 is not a whole number >= 0" in capsys.readouterr().err


def test_sound_design_commands_show_the_default_models_refinement(bundled, violin, tmp_path, capsys):
    path, pitch = violin
    out = tmp_path / "m.wav"
    assert main(["morph", str(path), str(path), "--pitch", str(pitch), "--seconds", "1", "--out", str(out)]) == 0
    assert out.is_file() and "refining" in capsys.readouterr().err  # the progress of encoding the ends


def test_render_shows_the_refinement_of_a_timbre_file(bundled, violin, tmp_path, capsys):
    from conftest import MIDI_FIXTURES

    path, _ = violin
    out = tmp_path / "song.wav"
    midi = str(MIDI_FIXTURES / "piano.mid")
    assert main(["render", midi, "--timbre", f"all={path}", "--end", "1", "--out", str(out)]) == 0
    assert out.is_file() and "refining" in capsys.readouterr().err
    # The bundled timbre set's notes are stored refined: nothing to show for them.
    assert main(["render", midi, "--end", "1", "--out", str(tmp_path / "set.wav")]) == 0
    assert "refining" not in capsys.readouterr().err


def test_a_model_exported_with_refine_steps_refines_by_default_and_ships_its_timbre_set_refined(
    fast_checkpoint: Path, wavenet_checkpoint: Path, violin, tmp_path: Path
):
    destination = export_run(fast_checkpoint, "refining-test", destination=tmp_path / "bundle", refine_steps=2)
    model = timbre.load(destination / "model.pt")
    assert model.default_refine == 2 and timbre.load(fast_checkpoint).default_refine == 0
    assert "- Refinement steps of `encode` by default: 2 " in (destination / "MODEL_CARD.md").read_text()
    path, pitch = violin
    by_default = model.encode(path, pitch=pitch)
    assert torch.equal(by_default.tensor, model.encode(path, pitch=pitch, refine=2).tensor)
    assert not torch.equal(by_default.tensor, model.encode(path, pitch=pitch, refine=0).tensor)

    # The bundled timbre set's notes were refined at export, and encode returns those embeddings:
    # the same as refining them now, and only for that very sound at that pitch and step count.
    entries = TimbreSet().entries
    assert len(model.known_embeddings) == 2 * len(entries)
    entry = entries[0]
    audio = load_audio(entry.path, model.sample_rate)
    stored = model.known_embeddings[encoding_key(audio, entry.pitch, 2)]["tensor"]
    told_nothing = model.known_embeddings[encoding_key(audio, None, 2)]
    assert torch.equal(model.encode(entry.path, pitch=entry.pitch).tensor, stored)
    assert torch.equal(model.encode(entry.path).tensor, told_nothing["tensor"])
    assert model.encode(entry.path).extra == told_nothing["extra"]
    model.known_embeddings.clear()
    assert torch.allclose(model.encode(entry.path, pitch=entry.pitch).tensor, stored, atol=1e-5)
    assert torch.allclose(model.encode(entry.path).tensor, told_nothing["tensor"], atol=1e-5)
    for other in (encoding_key(audio * 0.5, entry.pitch, 2), encoding_key(audio, entry.pitch + 1, 2),
                  encoding_key(audio, entry.pitch, 3)):  # fmt: skip
        assert other not in timbre.load(destination / "model.pt").known_embeddings

    with pytest.raises(ConfigError, match="only a parallel decoder can refine an embedding"):
        export_run(wavenet_checkpoint, "x", destination=tmp_path / "wavenet", refine_steps=1)
    assert not (tmp_path / "wavenet" / "model.pt").exists()
