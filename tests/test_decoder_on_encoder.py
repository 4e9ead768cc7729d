"""``timbre-train experiment=wavenet_on_default``: a WaveNet decoder learns on a trained model's frozen encoder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import timbre
from timbre.cli import main as timbre_cli
from timbre.errors import ConfigError
from timbre.io.audio import load_audio
from timbre.train.app import CONFIG_DIR, train
from timbre.train.checkpoint import load_checkpoint, model_spec, save_checkpoint
from timbre.train.decoder_on_encoder import encoder_fingerprint

# A latent size no bundled model has: the decoder must take the base's, not a config's 16.
BASE_LATENT = 8


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained parallel autoencoder (mel encoder as the default's, latent 8) saved as a checkpoint."""
    overrides = [
        "model=fast",
        "model.encoder.channels=16",
        "model.encoder.layers=2",
        "model.encoder.stages=2",
        f"model.encoder.latent_dim={BASE_LATENT}",
        f"model.decoder.latent_dim={BASE_LATENT}",
        "model.decoder.hidden_channels=16",
        "model.decoder.n_frame_blocks=1",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        config = compose("train", overrides=overrides)
    model_config = OmegaConf.to_container(config.model, resolve=True)
    torch.manual_seed(0)
    model = instantiate(model_config)
    path = tmp_path_factory.mktemp("base") / "model.pt"
    save_checkpoint(path, {"model_config": model_config, "model": model.state_dict()})
    return path


def run_config(base: Path, notes: Path, steps: int, **extra: object):
    settings = {
        "experiment": "wavenet_on_default",
        "encoder_from.base": str(base),
        "encoder_from.valid_pitch": False,
        "data.root": str(notes),
        "data.crop_samples": 2048,
        "data.valid_crop_samples": 2048,
        "model.decoder.residual_channels": 8,
        "model.decoder.skip_channels": 8,
        "model.decoder.layers": 4,
        "model.decoder.stages": 4,
        "model.decoder.pitch_embedding_dim": 4,
        "trainer.max_steps": steps,
        "trainer.batch_size": 2,
        "trainer.log_every": 1,
        "trainer.valid_every": steps,
        "trainer.valid_batches": 1,
        "trainer.checkpoint_every": steps,
        "trainer.progress": False,
        **extra,
    }
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"{key}={value}" for key, value in settings.items()])


def resume(run: Path, steps: int):
    """The config ``timbre-train trainer.resume=RUN trainer.max_steps=STEPS`` continues with."""
    config = OmegaConf.load(run / "config.yaml")
    config.trainer.resume = str(run)
    config.trainer.max_steps = steps
    return config


@pytest.fixture(scope="module")
def trained(base_model: Path, note_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """Three training steps of a tiny WaveNet decoder on the base's encoder, validated with the pitch tracker."""
    run = tmp_path_factory.mktemp("wavenet-on-base") / "run"
    # Validation crops of 4,096 samples: PESTO's window needs more than 2,048.
    config = run_config(
        base_model, note_dataset, 3, **{"encoder_from.valid_pitch": True, "data.valid_crop_samples": 4096}
    )
    result = train(config, run_dir=run)
    return run, result


def test_the_encoder_stays_the_bases_and_the_decoder_takes_its_latent_shape(base_model, trained):
    run, result = trained
    base = load_checkpoint(base_model)
    checkpoint = load_checkpoint(run)
    settings = checkpoint["model_config"]["settings"]
    assert settings["encoder"] == model_spec(base["model_config"])["settings"]["encoder"]
    assert settings["decoder"]["kind"] == "wavenet"
    assert settings["decoder"]["latent_dim"] == BASE_LATENT and settings["decoder"]["hop_length"] == 512
    assert settings["decoder"]["residual_channels"] == 8  # the experiment's decoder with the test's overrides
    for weights in (checkpoint["model"], checkpoint["ema"]):
        encoder = {key: value for key, value in weights.items() if key.startswith("encoder.")}
        assert encoder.keys() == {key for key in base["model"] if key.startswith("encoder.")}
        assert all(torch.equal(value, base["model"][key]) for key, value in encoder.items()), "the encoder moved"
    assert checkpoint["run"]["encoder_from"]["path"] == str(base_model)
    assert result.step == 3
    losses = [loss for _, loss in result.train_losses]
    assert all(torch.isfinite(torch.tensor(losses))) and len(set(losses)) == 3, losses


def test_validation_reports_held_out_pitch_accuracy(trained):
    run, _ = trained
    with open(run / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "valid"]
    assert [int(row["step"]) for row in rows] == [3]
    assert 0.0 <= float(rows[0]["pitch_accuracy"]) <= 1.0
    assert float(rows[0]["cross_entropy"]) > 0


def test_the_run_loads_without_hydra_and_encodes_exactly_as_the_base(base_model, trained, note_dataset):
    run, _ = trained
    model, base = timbre.load(run), timbre.load(base_model)
    assert model.decoder_kind == "wavenet" and model.autoencoder.latent_dim == BASE_LATENT
    note = sorted((note_dataset / "nsynth-valid" / "audio").glob("*.wav"))[0]
    z = model.encode(load_audio(note, 16000))
    assert torch.equal(z.tensor, base.encode(load_audio(note, 16000)).tensor)
    assert encoder_fingerprint(model.autoencoder.encoder) == encoder_fingerprint(base.autoencoder.encoder)
    audio = model.synthesize(z, pitch=62, seconds=0.1)
    assert audio.shape == (1600,) and abs(audio).max() > 0


def test_settings_that_do_not_apply_are_refused_by_name(base_model, note_dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"^encoder_from\.freeze is not a setting"):
        train(run_config(base_model, note_dataset, 2, **{"+encoder_from.freeze": True}), run_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="trainer.init_from does not combine with encoder_from"):
        train(run_config(base_model, note_dataset, 2, **{"trainer.init_from": str(base_model)}), run_dir=tmp_path / "b")
    with pytest.raises(ConfigError, match="model.decoder._target_ 'timbre.models.encoder.WaveNetEncoder' is not"):
        overrides = {"model.decoder._target_": "timbre.models.encoder.WaveNetEncoder"}
        train(run_config(base_model, note_dataset, 2, **overrides), run_dir=tmp_path / "c")
    assert not any(tmp_path.iterdir())  # refused before a run directory was made


def test_a_resumed_run_continues_as_if_uninterrupted(base_model, note_dataset, tmp_path):
    whole = train(run_config(base_model, note_dataset, 4), run_dir=tmp_path / "whole")
    train(run_config(base_model, note_dataset, 2), run_dir=tmp_path / "half")
    resumed = train(resume(tmp_path / "half", 4))
    assert resumed.step == 4 and resumed.run_dir == tmp_path / "half"
    # The notes drawn so far (of 6), each encoded once and kept for the resumed launch.
    assert 0 < len(list((tmp_path / "half" / "embeddings").glob("*.npy"))) <= 6
    assert resumed.train_losses == whole.train_losses[2:]
    after, uninterrupted = load_checkpoint(tmp_path / "half"), load_checkpoint(tmp_path / "whole")
    assert all(torch.equal(after["model"][key], value) for key, value in uninterrupted["model"].items())


def test_decode_with_the_wavenet_decoder(base_model, trained, note_dataset, wavenet_checkpoint, tmp_path, capsys):
    run, _ = trained
    note = sorted((note_dataset / "nsynth-valid" / "audio").glob("*.wav"))[0]
    timbre.load(base_model).encode(str(note)).save(tmp_path / "z.npy")

    # The base's embedding through the decoder trained on its encoder: no warning.
    assert timbre_cli(["decode", str(tmp_path / "z.npy"), "--decoder", "wavenet", "--model", str(run),
                       "--seconds", "0.1", "--out", str(tmp_path / "note.wav")]) == 0  # fmt: skip
    printed = capsys.readouterr()
    assert "warning" not in printed.out + printed.err and (tmp_path / "note.wav").is_file()

    # Through the bundled wavenet decoder (on the default's 64-dim embedding): one line naming both models and shapes.
    assert timbre_cli(["decode", str(tmp_path / "z.npy"), "--decoder", "wavenet",
                       "--out", str(tmp_path / "other.wav")]) == 1  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert f"z [frames, {BASE_LATENT}]" in error and "z [frames, 64]" in error
    assert str(base_model) in error and "wavenet" in error
    assert not (tmp_path / "other.wav").exists()

    # An embedding of the same shape from another encoder decodes, with a warning naming that encoder's model.
    metadata = json.loads((tmp_path / "z.json").read_text())
    (tmp_path / "z.json").write_text(json.dumps({**metadata, "model": str(wavenet_checkpoint)}))
    assert timbre_cli(["decode", str(tmp_path / "z.npy"), "--decoder", "wavenet", "--model", str(run),
                       "--seconds", "0.1", "--out", str(tmp_path / "warned.wav")]) == 0  # fmt: skip
    assert f"was encoded by {wavenet_checkpoint}, whose encoder is not" in capsys.readouterr().out

    # A parallel model asked for as the wavenet decoder.
    assert timbre_cli(["decode", str(tmp_path / "z.npy"), "--decoder", "wavenet", "--model", str(base_model),
                       "--out", str(tmp_path / "other.wav")]) == 1  # fmt: skip
    assert "--decoder wavenet" in capsys.readouterr().err


def test_crops_carry_the_frames_of_the_whole_note_embedding(base_model, note_dataset, tmp_path):
    from timbre.data.nsynth import NoteDataset
    from timbre.train.decoder_on_encoder import EncodedCrops

    base = timbre.load(base_model)
    notes = NoteDataset(note_dataset, "train", crop_samples=2048)
    crops = EncodedCrops(notes, base.autoencoder, tmp_path / "embeddings")
    torch.manual_seed(3)
    item = crops[1]
    torch.manual_seed(3)  # the same draw: where the crop starts
    audio = load_audio(notes.audio_path(1), 16000)
    start = crops.notes.crop_start(1, audio)
    assert start > 0 and start % 512 == 0 and notes.crop_hop == 1  # frame-aligned; the caller's dataset untouched
    assert torch.equal(item["audio"], torch.from_numpy(audio[start : start + 2048]))
    whole = base.encode(audio).tensor.T  # [latent, frames] of the whole note, as at inference
    assert torch.equal(item["z"], whole[:, start // 512 : start // 512 + 4])
    assert item["pitch"] == notes.examples[1]["pitch"]
    # Encoded once: the second time the embedding comes from the run's folder, the same to the bit.
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 1
    assert torch.equal(crops.embedding(1, audio), whole)
    assert torch.equal(
        EncodedCrops(notes, base.autoencoder, tmp_path / "embeddings", from_start=True)[1]["z"], whole[:, :4]
    )
