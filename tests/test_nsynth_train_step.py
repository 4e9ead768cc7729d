"""``model=nsynth`` stays NSynth's recipe for GPUs and still trains on a CPU: one real step, tiny batch.

The 62M-parameter model gets one optimizer step on one 512-sample crop of a real note (the
smallest crop its encoder accepts: one 512-sample frame), through the trainer the recipe uses.
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import default_collate

from timbre.errors import ConfigError
from timbre.models.autoencoder import Autoencoder
from timbre.models.decoder import WaveNetDecoder
from timbre.train.app import CONFIG_DIR, _container, build_data, build_model_config, check_crops, instantiate_model
from timbre.train.loop import Trainer, TrainerSettings


def nsynth_config(note_dataset, *extra: str):
    overrides = [
        "experiment=nsynth",
        f"data.root={note_dataset}",
        "data.crop_samples=512",
        "data.valid_crop_samples=512",
        "trainer.batch_size=1",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def test_one_training_step_of_the_nsynth_recipe_runs_on_cpu(note_dataset, tmp_path):
    config = nsynth_config(note_dataset, "trainer.device=cpu")
    # The recipe is NSynth's (batch 32, bf16 autocast on CUDA); only the batch and crop are shrunk here.
    assert config.trainer.precision == "bf16" and config.trainer.max_steps == 200000
    torch.manual_seed(0)
    model_config = build_model_config(config.model, {})
    check_crops(config.data, model_config)
    data = build_data(config.data)
    model = instantiate_model(model_config)
    assert isinstance(model, Autoencoder) and isinstance(model.decoder, WaveNetDecoder)
    assert model.decoder.receptive_field > 4000  # the paper's 30 layers of 10-dilation stages, not a small one
    trainer = Trainer(model, data, TrainerSettings.from_config(_container(config.trainer)), tmp_path, model_config)
    assert trainer.device.type == "cpu"
    before = [parameter.detach().clone() for parameter in model.parameters()]
    batch = (data.collate_fn or default_collate)([data.train[0]])
    assert batch["audio"].shape == (1, 512)

    metrics = trainer.train_step(batch)

    assert math.isfinite(metrics["loss"]) and metrics["loss"] > 0 and math.isfinite(metrics["grad_norm"])
    assert trainer.step == 1
    unchanged = [
        name
        for (name, parameter), old in zip(model.named_parameters(), before, strict=True)
        if torch.equal(parameter.detach(), old)
    ]
    assert not unchanged, f"parameters the step did not update: {unchanged}"


def test_the_recipe_picks_cuda_only_where_it_exists(monkeypatch, note_dataset):
    """device=auto (the recipe's) is CUDA when available, else the CPU; bf16 autocast only on CUDA."""
    config = nsynth_config(note_dataset)
    settings = TrainerSettings.from_config(_container(config.trainer))
    assert settings.device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert settings.resolved_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert settings.resolved_device() == torch.device("cuda")
    cpu_only = TrainerSettings.from_config({**_container(config.trainer), "device": "cuda"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        cpu_only.validate()
