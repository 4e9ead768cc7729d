"""The model registry and the checkpoint format: specs of plain values, weights_only loading,
the bundled models, and checkpoints of the Hydra-config format (v1) read and upgraded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from timbre.constants import PRETRAINED_DIR
from timbre.errors import CheckpointError, ConfigError
from timbre.models.autoencoder import Autoencoder
from timbre.models.composer import Composer
from timbre.models.registry import check_spec, model_from_spec, spec_from_hydra_config
from timbre.train.app import CONFIG_DIR
from timbre.train.checkpoint import (
    CHECKPOINT_FORMAT,
    HYDRA_CONFIG_FORMAT,
    load_checkpoint,
    load_model,
    save_checkpoint,
    upgrade_checkpoint,
)

MODEL_CONFIGS = sorted(path.stem for path in (CONFIG_DIR / "model").glob("*.yaml"))
BUNDLED = {
    "fast": "autoencoder",
    "fast-v2": "autoencoder",
    "fast-v3": "autoencoder",
    "fast-v4": "autoencoder",
    "fast-v5": "autoencoder",
    "fast-v6": "autoencoder",
    "fast-v7": "autoencoder",
    "fast-v7-refined": "autoencoder",
    "wavenet-v1": "autoencoder",
    "wavenet-v2": "autoencoder",
    "composer-chorales": "composer",
    "composer-styles": "composer",
}


def hydra_model_config(name: str) -> dict:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        config = compose("train", overrides=[f"model={name}"])
    model = OmegaConf.to_container(config.model, resolve=False)
    if model.get("vocab_size") == "???":  # the composer's vocabulary comes from the data's tokenizer
        model["vocab_size"] = 40
    return model


def strings_in(value) -> list[str]:
    if isinstance(value, dict):
        return [*value.keys(), *(s for item in value.values() for s in strings_in(item))]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_model_config_converts_to_a_spec_that_builds_the_same_model(name):
    config = hydra_model_config(name)
    spec = spec_from_hydra_config(config)
    assert not any("_target_" in s or s.startswith("timbre.") for s in strings_in(spec)), spec
    torch.manual_seed(0)
    expected = instantiate(config, _convert_="all")
    torch.manual_seed(0)
    built = model_from_spec(spec)
    assert type(built) is type(expected)
    expected_state, built_state = expected.state_dict(), built.state_dict()
    assert list(built_state) == list(expected_state)
    for key, tensor in expected_state.items():  # same classes, same arguments, same construction order
        assert torch.equal(built_state[key], tensor), key


def test_settings_reach_the_class_unchanged():
    spec = spec_from_hydra_config(hydra_model_config("tiny"))
    spec["settings"]["encoder"]["channels"] = 8
    spec["settings"]["decoder"]["layers"] = 3
    model = model_from_spec(spec)
    assert model.encoder.start.out_channels == 8 and len(model.decoder.layers) == 3
    spec["settings"]["decoder"]["no_such_option"] = 1
    with pytest.raises(ConfigError, match="wavenet decoder settings do not fit WaveNetDecoder.*no_such_option"):
        model_from_spec(spec)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"family": "gan", "settings": {}}, "unknown model family 'gan'"),
        ({"_target_": "timbre.models.composer.Composer"}, "keys 'family' and 'settings'"),
        ({"family": "autoencoder", "settings": {"encoder": {"kind": "wavenet"}}}, "need a 'decoder' dict"),
        (
            {"family": "autoencoder", "settings": {"encoder": {"kind": "wavenet"}, "decoder": {"kind": "diffusion"}}},
            "unknown decoder kind 'diffusion'; known: wavenet, harmonic_noise",
        ),
        ({"family": "composer", "settings": {"vocab_size": torch.tensor(3)}}, "settings.vocab_size is a Tensor"),
        (
            {
                "family": "autoencoder",
                "settings": {"encoder": {"kind": "wavenet", "kernel_size": 2}, "decoder": {"kind": "wavenet"}},
            },
            "wavenet encoder settings: encoder kernel_size must be odd",
        ),
    ],
)
def test_bad_specs_are_named(spec, message):
    with pytest.raises(ConfigError, match=message):
        model_from_spec(spec)


def test_hydra_configs_of_unregistered_classes_are_refused():
    config = hydra_model_config("tiny")
    config["decoder"]["_target_"] = "mypackage.MyDecoder"
    with pytest.raises(ConfigError, match="'mypackage.MyDecoder' is not a registered decoder"):
        spec_from_hydra_config(config)
    with pytest.raises(ConfigError, match="not a registered model family"):
        spec_from_hydra_config({"_target_": "os.system", "command": "true"})


def test_checkpoints_load_with_weights_only_and_refuse_pickled_objects(tmp_path):
    spec = spec_from_hydra_config(hydra_model_config("composer_tiny"))
    model = model_from_spec(spec)
    path = save_checkpoint(tmp_path / "model.pt", {"model_config": spec, "model": model.state_dict()})
    stored = torch.load(path, weights_only=True)
    assert stored["format"] == CHECKPOINT_FORMAT and stored["model_config"] == check_spec(spec)
    loaded, _ = load_model(path)
    assert isinstance(loaded, Composer)
    with pytest.raises(ConfigError, match=r"checkpoint\['artifacts'\]\['where'\] is a PosixPath"):
        save_checkpoint(tmp_path / "bad.pt", {"model_config": spec, "model": {}, "artifacts": {"where": tmp_path}})
    assert not (tmp_path / "bad.pt").exists()
    torch.save(
        {"format": CHECKPOINT_FORMAT, "model_config": spec, "model": {}, "extra": Path("x")}, tmp_path / "pickled.pt"
    )
    with pytest.raises(CheckpointError, match="pickled.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "pickled.pt")
    torch.save(
        {"format": CHECKPOINT_FORMAT, "model_config": {"family": "gan", "settings": {}}, "model": {}},
        tmp_path / "gan.pt",
    )
    with pytest.raises(CheckpointError, match="gan.pt: unknown model family 'gan'"):
        load_checkpoint(tmp_path / "gan.pt")


def test_a_hydra_config_checkpoint_loads_the_same_model_and_upgrades_in_place(tmp_path):
    config = hydra_model_config("tiny")
    torch.manual_seed(3)
    reference = instantiate(config, _convert_="all").eval()
    path = tmp_path / "old.pt"
    state = reference.state_dict()
    torch.save({"format": HYDRA_CONFIG_FORMAT, "model_config": config, "model": state, "step": 7}, path)
    model, checkpoint = load_model(path)
    assert checkpoint["model_config"] == spec_from_hydra_config(config) and checkpoint["format"] == HYDRA_CONFIG_FORMAT
    audio = torch.randn(1, 2048) * 0.3
    with torch.no_grad():
        torch.testing.assert_close(model.encode(audio), reference.encode(audio), rtol=0, atol=0)
    assert upgrade_checkpoint(path) is True
    upgraded = torch.load(path, weights_only=True)
    assert upgraded["format"] == CHECKPOINT_FORMAT and upgraded["step"] == 7
    assert "_target_" not in str(upgraded["model_config"])
    for key, tensor in state.items():
        assert torch.equal(upgraded["model"][key], tensor), key
    assert upgrade_checkpoint(path) is False  # already current


@pytest.mark.parametrize("name, family", sorted(BUNDLED.items()))
def test_bundled_checkpoints_are_plain_data_in_the_current_format(name, family):
    stored = torch.load(PRETRAINED_DIR / name / "model.pt", weights_only=True)
    assert stored["format"] == CHECKPOINT_FORMAT
    assert stored["model_config"]["family"] == family
    assert "_target_" not in str(stored["model_config"])
    model, _ = load_model(PRETRAINED_DIR / name / "model.pt")
    assert isinstance(model, Autoencoder if family == "autoencoder" else Composer)
