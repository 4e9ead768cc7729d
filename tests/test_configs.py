"""Every config in conf/ composes, instantiates and runs a forward pass: configs cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from timbre.data import DataBundle
from timbre.train.app import CONFIG_DIR, build_data, build_model_config, instantiate_model

from conftest import MIDI_FIXTURES

GROUPS = {
    group: sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    for group in ("model", "data", "trainer", "experiment")
}


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def forward_on_tiny_input(model: torch.nn.Module, samples: int) -> torch.Tensor:
    """The training loss of a minimal batch the model accepts (``samples`` of audio for autoencoders)."""
    if hasattr(model, "encoder"):
        t = torch.arange(samples) / 16000
        batch = {"audio": 0.3 * torch.sin(2 * torch.pi * 220.0 * t).repeat(2, 1), "pitch": torch.tensor([57, 57])}
    else:  # a composer
        batch = {"tokens": torch.randint(1, model.vocab_size, (2, 16))}
    loss, metrics = model.training_loss(batch)
    return loss


def test_all_groups_have_configs():
    assert {"nsynth", "small", "tiny", "fast", "composer_tiny", "composer_small"} <= set(GROUPS["model"])
    assert {"nsynth", "chorales", "midi_folder"} <= set(GROUPS["data"])
    assert {"fast", "small", "nsynth", "chorales"} <= set(GROUPS["experiment"])


@pytest.mark.parametrize("name", GROUPS["model"])
def test_every_model_config_builds_and_runs(name):
    config = compose_train([f"model={name}"])
    overrides = {"vocab_size": 64, "pad_id": 0} if "composer" in name else {}
    torch.manual_seed(0)
    model = instantiate_model(build_model_config(config.model, overrides))
    # 2,048 samples (4 frames) suit the STFT loss; the 62M-parameter model gets one frame.
    loss = forward_on_tiny_input(model, 512 if name == "nsynth" else 2048)
    assert torch.isfinite(loss) and loss.dim() == 0
    parameters = sum(p.numel() for p in model.parameters())
    if name == "nsynth":
        assert abs(parameters - 62e6) < 0.05 * 62e6
    else:  # the 62M-parameter backward pass is too slow for CI; the others check every weight is used
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad), "unused parameters break DDP"


@pytest.mark.parametrize("name", GROUPS["trainer"])
def test_every_trainer_config_is_valid(name):
    from omegaconf import OmegaConf

    from timbre.train.loop import TrainerSettings

    config = compose_train([f"trainer={name}"])
    TrainerSettings(**OmegaConf.to_container(config.trainer, resolve=True)).validate()


def data_overrides(name: str, note_dataset: Path, tmp_path: Path) -> list[str]:
    return {
        "nsynth": [f"data.root={note_dataset}", "data.crop_samples=2048"],
        "chorales": ["data.limit=8", f"data.cache_dir={tmp_path}", "data.max_tokens=64"],
        "midi_folder": [f"data.folder={MIDI_FIXTURES}", "data.max_tokens=64"],
        "music21": [
            "data.styles=[bach]",
            "data.limit_per_style=3",
            f"data.cache_dir={tmp_path}",
            "data.max_tokens=64",
            "data.valid=0.34",
            "data.test=0.34",
            "data.progress=false",
        ],
    }[name]


@pytest.mark.parametrize("name", GROUPS["data"])
def test_every_data_config_builds_a_bundle(name, note_dataset, tmp_path):
    config = compose_train([f"data={name}", *data_overrides(name, note_dataset, tmp_path)])
    bundle = build_data(config.data)
    assert isinstance(bundle, DataBundle) and len(bundle.train) > 0
    item = bundle.train[0]
    assert all(isinstance(value, torch.Tensor) for value in item.values())


@pytest.mark.parametrize("name", GROUPS["experiment"])
def test_every_experiment_composes_a_consistent_run(name):
    config = compose_train([f"experiment={name}"])
    from omegaconf import OmegaConf

    from timbre.train.loop import TrainerSettings

    TrainerSettings(**OmegaConf.to_container(config.trainer, resolve=True)).validate()
    target = config.model._target_
    if target.endswith("Autoencoder"):
        assert config.data._target_ == "timbre.data.nsynth.build_note_bundle"
        crop = config.data.crop_samples
        assert crop % config.model.encoder.hop_length == 0
        receptive_field = getattr(instantiate(config.model.decoder), "receptive_field", 0)
        assert crop > receptive_field, "crops must be longer than the decoder's receptive field"
    else:
        assert config.data._target_ in (
            "timbre.data.midi.build_midi_bundle",
            "timbre.data.style_corpus.build_music21_bundle",
        )
