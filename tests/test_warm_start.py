"""``trainer.init_from``: a wider model starts computing exactly what the trained one did, then learns."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from timbre.errors import CheckpointError, ConfigError
from timbre.models.autoencoder import Autoencoder
from timbre.models.encoder import WaveNetEncoder
from timbre.models.parallel import HarmonicNoiseDecoder
from timbre.train.app import CONFIG_DIR, train
from timbre.train.checkpoint import load_checkpoint, load_model
from timbre.train.warm_start import widened_state


def small_autoencoder(
    latent_dim: int,
    bottleneck_inputs: str = "level",
    hidden: int = 24,
    n_subharmonics: int = 0,
    partial_inputs: int = 0,
    octave_down_probability: float = 0.0,
    half_partial_gain_db: float = 0.0,
) -> Autoencoder:
    """A small mel-encoder / harmonic-plus-noise autoencoder with every optional decoder part on."""
    encoder = WaveNetEncoder(
        channels=16, layers=2, stages=2, latent_dim=latent_dim, hop_length=512, downsample=128,
        frontend="mel", n_mels=20, n_fft=512, bottleneck_inputs=bottleneck_inputs,
        partial_inputs=partial_inputs, octave_down_probability=octave_down_probability,
    )  # fmt: skip
    decoder = HarmonicNoiseDecoder(
        latent_dim=latent_dim, hidden_channels=hidden, n_harmonics=16, n_noise_bands=17, n_frame_blocks=2,
        n_control_blocks=1, fft_sizes=(512, 128), pitch_deviation_cents=50.0, loudness_loss_weight=1.0,
        partial_loss_weight=1.0, max_inharmonicity=0.01, reverb_seconds=0.05, n_subharmonics=n_subharmonics,
        half_partial_gain_db=half_partial_gain_db,
    )  # fmt: skip
    return Autoencoder(encoder, decoder)


def trained_like(latent_dim: int) -> Autoencoder:
    """A small model whose weights are all non-trivial (as a trained one's are)."""
    torch.manual_seed(1)
    model = small_autoencoder(latent_dim)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def test_a_widened_model_computes_exactly_what_the_trained_one_did():
    trained = trained_like(latent_dim=4)
    torch.manual_seed(2)
    wide = small_autoencoder(latent_dim=12, bottleneck_inputs="mel").eval()
    wide.load_state_dict(widened_state(wide, trained.state_dict(), "trained.pt"))

    audio = 0.3 * torch.randn(2, 4096)
    pitch = torch.tensor([57, 70])
    with torch.no_grad():
        z_trained, z_wide = trained.encode(audio), wide.encode(audio)
        assert z_wide.shape == (2, 12, 8)
        # The old channels are the trained model's; the new ones carry something (random rows).
        assert torch.equal(z_wide[:, :4], z_trained)
        assert z_wide[:, 4:].abs().amax() > 1e-3
        before = trained.decoder(z_trained, pitch, 4096, generator=torch.Generator().manual_seed(3))
        after = wide.decoder(z_wide, pitch, 4096, generator=torch.Generator().manual_seed(3))
    assert before.abs().amax() > 1e-3
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_the_new_channels_receive_gradient_from_the_first_step():
    wide = small_autoencoder(latent_dim=12, bottleneck_inputs="mel")
    wide.load_state_dict(widened_state(wide, trained_like(latent_dim=4).state_dict(), "trained.pt"))
    wide.train()
    loss, _ = wide.training_loss({"audio": 0.3 * torch.randn(2, 4096), "pitch": torch.tensor([57, 70])})
    loss.backward()
    decoder_input = wide.decoder.input.weight
    assert decoder_input.grad is not None
    # The decoder's zero weights on the new embedding channels move: the new channels get a use.
    assert decoder_input.grad[:, 4:12].abs().amax() > 0
    assert torch.equal(decoder_input[:, 4:12], torch.zeros_like(decoder_input[:, 4:12]))


def test_a_decoder_gaining_subharmonics_keeps_its_partials_and_learns_the_new_ones():
    trained = trained_like(latent_dim=4)
    torch.manual_seed(2)
    grown = small_autoencoder(latent_dim=4, n_subharmonics=6).eval()
    grown.load_state_dict(widened_state(grown, trained.state_dict(), "trained.pt"))
    assert grown.decoder.output.weight.shape[0] == trained.decoder.output.weight.shape[0] + 6

    audio = 0.3 * torch.randn(2, 4096)
    pitch = torch.tensor([40, 70])
    with torch.no_grad():
        z = trained.encode(audio)
        before = trained.decoder.controls(z, pitch)
        after = grown.decoder.controls(z, pitch)
    # Every other control is the trained one's; the whole-number partials keep their proportions.
    for name in ("amplitude", "noise_magnitudes", "deviation_cents", "inharmonicity", "reverb_gain"):
        torch.testing.assert_close(after[name], before[name])
    whole = after["harmonic_distribution"][..., 1::2][..., :6]  # 0.5, 1, 1.5, 2, ...: 1 to 6
    old = before["harmonic_distribution"][..., :6]
    torch.testing.assert_close(whole / whole.sum(-1, keepdim=True), old / old.sum(-1, keepdim=True))
    new = after["harmonic_distribution"][..., 0::2][..., :6]  # 0.5 to 5.5: untrained controls, all alike
    torch.testing.assert_close(new, new[..., :1].expand_as(new))

    grown.train()
    loss, _ = grown.training_loss({"audio": audio, "pitch": pitch})
    loss.backward()
    new_rows = grown.decoder.output.weight.grad
    assert new_rows is not None and new_rows[-6:].abs().amax() > 0


def test_a_model_that_differs_in_more_than_the_embedding_is_refused():
    narrow_hidden = small_autoencoder(latent_dim=12, bottleneck_inputs="mel", hidden=32)
    with pytest.raises(CheckpointError, match=r"trained\.pt: .*decoder\.\S+ has shape .*only the embedding"):
        widened_state(narrow_hidden, trained_like(latent_dim=4).state_dict(), "trained.pt")
    more_harmonics = small_autoencoder(latent_dim=4)
    more_harmonics.decoder = HarmonicNoiseDecoder(
        latent_dim=4, hidden_channels=24, n_harmonics=20, n_noise_bands=17, n_frame_blocks=2, n_control_blocks=1,
        pitch_deviation_cents=50.0, max_inharmonicity=0.01, reverb_seconds=0.05,
    )  # fmt: skip
    # Its output grows too, but by harmonics, not half-integer partials: the rows would land wrong.
    with pytest.raises(CheckpointError, match=r"decoder\.output\.weight has shape"):
        widened_state(more_harmonics, trained_like(latent_dim=4).state_dict(), "trained.pt")
    with pytest.raises(CheckpointError, match="differ in more than the embedding"):
        widened_state(small_autoencoder(latent_dim=4), {"decoder.input.weight": torch.zeros(1)}, "other.pt")


def small_run(root: Path, run: Path, latent_dim: int, bottleneck_inputs: str, **extra: object):
    settings = {
        "model": "fast_v3",
        "model.encoder.channels": 16,
        "model.encoder.layers": 2,
        "model.encoder.stages": 2,
        "model.encoder.latent_dim": latent_dim,
        "model.encoder.bottleneck_inputs": bottleneck_inputs,
        "model.decoder.latent_dim": latent_dim,
        "model.decoder.hidden_channels": 16,
        "model.decoder.n_frame_blocks": 1,
        "model.decoder.n_control_blocks": 1,
        "data.root": str(root),
        "data.crop_samples": 4096,
        "data.valid_crop_samples": 4096,
        "trainer.max_steps": 2,
        "trainer.batch_size": 2,
        "trainer.valid_every": 2,
        "trainer.valid_batches": 1,
        "trainer.checkpoint_every": 2,
        "trainer.progress": False,
        **extra,
    }
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        config = compose("train", overrides=[f"{key}={value}" for key, value in settings.items()])
    return train(config, run_dir=run)


def test_init_from_starts_a_wider_run_from_a_trained_run(note_dataset, tmp_path, capsys):
    trained = small_run(note_dataset, tmp_path / "narrow", latent_dim=4, bottleneck_inputs="level")
    narrow, _ = load_model(trained.last_checkpoint)

    wide_run = small_run(
        note_dataset, tmp_path / "wide", latent_dim=8, bottleneck_inputs="mel",
        **{"trainer.init_from": str(tmp_path / "narrow"), "trainer.max_steps": 1, "trainer.valid_every": 1},
    )  # fmt: skip
    assert f"weights from {trained.last_checkpoint}" in capsys.readouterr().out
    # Its first validation (after one step at lr 2e-4) is the narrow model's, give or take a step.
    assert wide_run.valid_losses[0][1] == pytest.approx(trained.valid_losses[-1][1], rel=0.05)
    wide = load_checkpoint(wide_run.last_checkpoint)
    assert wide["model_config"]["settings"]["encoder"]["latent_dim"] == 8
    assert wide["training"]["step"] == 1  # the step count starts afresh
    # The trained channels of the bottleneck started from the narrow run's (EMA) weights.
    started = wide["ema"]["encoder.bottleneck.weight"][:4, : narrow.encoder.bottleneck.weight.shape[1]]
    torch.testing.assert_close(started, narrow.encoder.bottleneck.weight.detach(), atol=2e-3, rtol=0)


def test_init_from_a_missing_checkpoint_is_one_clear_error(note_dataset, tmp_path):
    with pytest.raises(CheckpointError, match="nowhere"):
        small_run(
            note_dataset, tmp_path / "run", latent_dim=4, bottleneck_inputs="level",
            **{"trainer.init_from": str(tmp_path / "nowhere")},
        )  # fmt: skip


def test_a_gain_on_the_half_integer_partials_starts_at_0_db_and_lifts_them_past_the_ceiling():
    torch.manual_seed(1)
    trained = small_autoencoder(latent_dim=4, n_subharmonics=4)
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    trained.eval()
    grown = small_autoencoder(latent_dim=4, n_subharmonics=4, half_partial_gain_db=24.0).eval()
    grown.load_state_dict(widened_state(grown, trained.state_dict(), "trained.pt"))
    audio, pitch = 0.3 * torch.randn(2, 4096), torch.tensor([57, 70])
    with torch.no_grad():
        z = trained.encode(audio)
        before = trained.decoder.controls(z, pitch)["harmonic_distribution"]
        torch.testing.assert_close(grown.decoder.controls(z, pitch)["harmonic_distribution"], before)
        # A gain control of atanh(0.5) is +12 dB: each half-integer partial 12 dB up on the whole ones.
        grown.decoder.output.bias[-1] = math.atanh(0.5)
        after = grown.decoder.controls(z, pitch)["harmonic_distribution"]
    half = grown.decoder.half_integer_partials
    change_db = 20 * torch.log10(after / before)
    lift = change_db[..., half] - change_db[..., ~half].mean(-1, keepdim=True)
    torch.testing.assert_close(lift, torch.full_like(lift, 12.0), atol=1e-3, rtol=0)
    with pytest.raises(ConfigError, match="needs n_subharmonics > 0"):
        small_autoencoder(latent_dim=4, half_partial_gain_db=12.0)
