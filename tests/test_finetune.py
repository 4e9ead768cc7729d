"""``timbre-train experiment=finetune``: the default model adapts to a folder's notes and exports a loadable model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hydra import compose, initialize_config_dir

import timbre
from timbre.data.from_folder import build_from_folder
from timbre.errors import ConfigError
from timbre.io.fluidsynth import render_note
from timbre.train.app import CONFIG_DIR, train
from timbre.train.checkpoint import load_checkpoint
from timbre.train.finetune import FinetuneSettings, freeze_parameters, load_base


@pytest.fixture(scope="module")
def clarinet_notes(fluidr3_soundfont: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight real clarinet notes (FluidR3_GM program 71) from a folder, as from-folder writes them."""
    folder = tmp_path_factory.mktemp("clarinet") / "recordings"
    folder.mkdir()
    for pitch in range(60, 76, 2):
        audio = render_note(fluidr3_soundfont, 71, pitch, 100, seconds=1.0, hold=0.8)
        soundfile.write(folder / f"clarinet take {pitch}.wav", audio, 16000)
    out = folder.parent / "dataset"
    build_from_folder(folder, out, instrument="clarinet", seconds=1.0, valid=0.25, progress=False)
    return out


def finetune_config(root: Path, **extra: object):
    settings = {
        "experiment": "finetune",
        "data.root": str(root),
        "data.crop_samples": 4096,
        "data.valid_crop_samples": 4096,
        "trainer.max_steps": 12,
        "trainer.batch_size": 4,
        "trainer.valid_every": 4,
        "trainer.valid_batches": 1,
        "trainer.checkpoint_every": 12,
        "trainer.progress": False,
        "finetune.track_pitch": False,
        "finetune.estimate_steps": 1,
        **extra,
    }
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"{key}={value}" for key, value in settings.items()])


def test_a_tiny_finetune_lowers_the_held_out_loss_and_exports_a_loadable_model(clarinet_notes, tmp_path, capsys):
    run = tmp_path / "run"
    result = train(finetune_config(clarinet_notes), run_dir=run)
    printed = capsys.readouterr().out
    assert "s per step" in printed and "minute" in printed  # the estimate, before training
    assert result.stopped_by is None and result.step == 12
    # Validated before the first step (the base model), then every 4 steps.
    steps = [step for step, _ in result.valid_losses]
    losses = [loss for _, loss in result.valid_losses]
    assert steps == [0, 4, 8, 12]
    assert min(losses[1:]) < 0.97 * losses[0], losses

    model = timbre.load(str(run / "model"))
    assert model.default_refine == timbre.load().default_refine == 30  # it encodes as its base does
    held_out_file = sorted((clarinet_notes / "nsynth-valid" / "audio").glob("*.wav"))[0]
    note = model.synthesize(model.encode(str(held_out_file)), pitch=64, seconds=1.0)
    assert note.shape == (16000,) and np.isfinite(note).all() and np.abs(note).max() > 1e-3

    comparison = json.loads((run / "model" / "evaluation" / "report.json").read_text())["systems"]
    assert comparison["fine-tuned"]["spectral_distance"] < comparison["base"]["spectral_distance"]
    card = (run / "model" / "MODEL_CARD.md").read_text()
    assert "Before and after fine-tuning" not in card  # the report's title is replaced by the card's
    assert "| multi-scale spectral distance (lower is better) |" in card and "held-out" in card

    # The model is the base's (its own settings, not conf/model) with the frozen parts untouched.
    spec, base_weights, _ = load_base("default")
    exported = load_checkpoint(run / "model" / "model.pt")
    assert exported["model_config"] == spec
    for name, tensor in exported["model"].items():
        if name.startswith(("encoder.", "decoder.pitch_embedding.")):
            assert torch.equal(tensor, base_weights[name]), name
    assert any(not torch.equal(t, base_weights[n]) for n, t in exported["model"].items() if n.startswith("decoder."))
    assert (run / "config.yaml").read_text().count("family: autoencoder") == 1


def test_finetune_settings_and_freezing_are_checked():
    with pytest.raises(ConfigError, match="finetune.patiense is not a fine-tuning setting"):
        FinetuneSettings.from_config({"patiense": 3})
    with pytest.raises(ConfigError, match="pitch_shift_semitones"):
        FinetuneSettings.from_config({"pitch_shift_semitones": 40})
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    with pytest.raises(ConfigError, match="'encoder' names no parameter"):
        freeze_parameters(model, ["encoder"])
    assert freeze_parameters(model, ["0"]) == (6, 3)
    assert not model[0].weight.requires_grad and model[1].weight.requires_grad
