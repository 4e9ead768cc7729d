"""Exporting a run as a bundled model: inference-only checkpoint plus a model card."""

from __future__ import annotations

import torch
from test_train import compose_config, tiny_overrides

import timbre
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


def test_a_model_exported_with_a_temperature_samples_at_it_unless_told_otherwise(note_dataset, tmp_path):
    result = train(compose_config(tiny_overrides(note_dataset, 2)), run_dir=tmp_path / "run")
    destination = export_run(result.run_dir, "greedy-test", destination=tmp_path / "bundle", temperature=0.0)
    model = timbre.load(destination / "model.pt")
    assert model.default_temperature == 0.0
    assert "- Sampling temperature by default: 0 " in (destination / "MODEL_CARD.md").read_text()
    z = torch.randn(8, model.autoencoder.latent_dim)
    by_default = model.synthesize(z, pitch=60)
    assert (by_default == model.synthesize(z, pitch=60, temperature=0.0)).all()
    assert not (by_default == model.synthesize(z, pitch=60, temperature=1.0)).all()
