"""Exporting a run as a bundled model: inference-only checkpoint plus a model card."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train import compose_config, tiny_overrides

import timbre
from timbre.errors import ConfigError
from timbre.train.app import train
from timbre.train.checkpoint import load_checkpoint
from timbre.train.export import export_run


def test_export_writes_a_loadable_model_and_a_card(note_dataset, tmp_path):
    result = train(compose_config(tiny_overrides(note_dataset, 3)), run_dir=tmp_path / "run")
    report = tmp_path / "report.md"
    report.write_text(
        "# Autoencoder evaluation: x\n\n| metric | value |\n|---|---|\n| spectral distance | 1.234 |\n![p](p.png)\n"
    )
    destination = export_run(
        result.run_dir, "tiny-test", "A test model.", "timbre dataset build ...", report, tmp_path / "bundle"
    )
    exported = load_checkpoint(destination / "model.pt")
    assert "training" not in exported  # no optimizer state in a shipped file
    original = load_checkpoint(result.last_checkpoint)
    for key, tensor in original["ema"].items():
        assert torch.equal(exported["model"][key], tensor)
    model = timbre.load(destination / "model.pt")
    assert model.info["step"] == 3
    card = (destination / "MODEL_CARD.md").read_text()
    assert "# tiny-test" in card and "Training steps: 3" in card and "| spectral distance | 1.234 |" in card
    assert "timbre dataset build ..." in card and "![p]" not in card
    assert "- Model: autoencoder (wavenet encoder, wavenet decoder), " in card
    assert model.default_temperature == 1.0 and "Sampling temperature" not in card


def test_a_model_exported_with_sampling_defaults_decodes_with_them_unless_told_otherwise(note_dataset, tmp_path):
    clocked = tiny_overrides(note_dataset, 2, **{"+model.decoder.source_harmonics": 3})
    result = train(compose_config(clocked), run_dir=tmp_path / "run")
    sampling = {"temperature": 0.0, "clock_gain": 2.0, "makeup_db": 6.0}
    destination = export_run(result.run_dir, "greedy-test", destination=tmp_path / "bundle", sampling=sampling)
    model = timbre.load(destination / "model.pt")
    assert model.has_pitch_clock and model.default_temperature == 0.0 and model.default_clock_gain == 2.0
    card = (destination / "MODEL_CARD.md").read_text()
    assert "- Sampling temperature by default: 0 " in card and "- Pitch clock gain by default: 2 " in card
    assert "- Make-up gain after decoding (dB) by default: 6 " in card
    z = torch.randn(8, model.autoencoder.latent_dim)
    by_default = model.synthesize(z, pitch=60)
    assert (by_default == model.synthesize(z, pitch=60, temperature=0.0, clock_gain=2.0)).all()
    assert not (by_default == model.synthesize(z, pitch=60, temperature=1.0)).all()
    assert not (by_default == model.synthesize(z, pitch=60, clock_gain=1.0)).all()
    # The make-up gain is a level change at the default clock gain, nothing else.
    sampling.pop("makeup_db")
    plain_bundle = export_run(result.run_dir, "plain", destination=tmp_path / "plain", sampling=sampling)
    plain = timbre.load(plain_bundle / "model.pt")
    assert plain.makeup_db == 0.0 and model.makeup_db == 6.0
    assert np.allclose(by_default, np.clip(plain.synthesize(z, pitch=60) * 10 ** (6 / 20), -1, 1), atol=1e-6)
    for wrong, message in [
        ({"temprature": 0.5}, "unknown sampling settings"),
        ({"clock_gain": -1.0}, "sampling clock_gain must be a finite number >= 0, got -1.0"),
        ({"makeup_db": float("nan")}, "sampling makeup_db must be between -60 and 60 dB, got nan"),
    ]:
        with pytest.raises(ConfigError, match=message):
            export_run(result.run_dir, "x", destination=tmp_path / "other", sampling=wrong)
    assert not (tmp_path / "other" / "model.pt").exists()


def test_a_clock_gain_is_refused_for_a_model_without_a_pitch_clock(note_dataset, tmp_path):
    result = train(compose_config(tiny_overrides(note_dataset, 1)), run_dir=tmp_path / "run")
    model = timbre.load(result.last_checkpoint)
    assert not model.has_pitch_clock and model.default_clock_gain == 1.0
    with pytest.raises(ConfigError, match="clock_gain applies to WaveNet decoders with a pitch clock only"):
        model.synthesize(torch.randn(4, model.autoencoder.latent_dim), pitch=60, clock_gain=2.0)
    with pytest.raises(ConfigError, match="clock_gain must be a finite number >= 0, got nan"):
        model.synthesize(torch.randn(4, model.autoencoder.latent_dim), pitch=60, clock_gain=float("nan"))
    with pytest.raises(ConfigError, match="a clock gain applies to WaveNet decoders with a pitch clock only"):
        export_run(result.run_dir, "x", destination=tmp_path / "bundle", sampling={"clock_gain": 2.0})
