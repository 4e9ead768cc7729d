"""Fitting a warm-started decoder's new half-integer partials to data (``trainer.fit_new_partials``).

A decoder that gains half-integer partials (``n_subharmonics``) from a trained one starts with
their output rows at zero: every note gets them at one level. Trained on from there, they did not
survive: version 4 with the STFT, mel and partial losses, the rows starting anywhere from 100 dB
under partial 1 to as loud as it, the many notes without an octave below pushed them down through
the network's shared features within 250 steps, the drawbar organs' with them (to 80-100 dB under
partial 1), and there, under the noise, no loss brought them back. Here they are fitted in
closed form before the first step instead: on training crops, each half-integer partial's level
relative to the crop's whole partials (measured on the audio) gives the control value that would
reproduce it; a ridge regression on the decoder's own features finds the rows that produce those
values; they replace the zero rows. Training then starts with each note's octave below about right.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from timbre.data import SizedDataset
from timbre.errors import ConfigError
from timbre.models import dsp
from timbre.models.autoencoder import Autoencoder
from timbre.models.parallel import HarmonicNoiseDecoder
from timbre.models.partial_levels import FLOOR_LEVEL, partial_levels

# Control values are fitted within these bounds: exp_sigmoid(-4) is ~80 dB under a control of 0,
# where the octave below is absent; +4 is near the control's ceiling.
_QUIETEST, _LOUDEST = -4.0, 4.0
# Frames whose whole partials together read under -60 dBFS are silence: not fitted.
_SOUNDING = 1e-3


def inverse_exp_sigmoid(value: Tensor) -> Tensor:
    """The control ``x`` with ``dsp.exp_sigmoid(x) == value`` (values within its range)."""
    share = ((value - 1e-7) / 2.0).clamp(1e-12, 1.0 - 1e-7) ** (1.0 / math.log(10.0))
    return torch.logit(share)


@torch.no_grad()
def fit_half_integer_partials(
    model: nn.Module, dataset: SizedDataset, n_examples: int, seed: int = 0, batch_size: int = 8, ridge: float = 1e-3
) -> str:
    """Set ``model.decoder``'s half-integer partial rows by ridge regression on ``n_examples`` crops.

    Args:
        model: an autoencoder whose decoder is a :class:`HarmonicNoiseDecoder` with ``n_subharmonics > 0``.
        dataset: training items, each ``{"audio": [samples], "pitch": MIDI pitch}``.
        n_examples: crops drawn (without replacement, seeded) from ``dataset``.
        seed: seed of the draw.
        batch_size: crops encoded at once.
        ridge: the regression's L2 penalty, relative to the mean feature energy.

    Returns:
        One line for the run's log: crops and frames used, and how much of the targets' variance
        the fitted rows explain.

    Raises:
        ConfigError: when the decoder has no half-integer partials, or their rows are not the
            zeros a warm start leaves (they would be trained ones, overwritten).
    """
    if not (
        isinstance(model, Autoencoder)
        and isinstance(model.decoder, HarmonicNoiseDecoder)
        and model.decoder.n_subharmonics
    ):
        raise ConfigError("trainer.fit_new_partials needs a harmonic-plus-noise decoder with n_subharmonics > 0")
    decoder = model.decoder
    n_sub = decoder.n_subharmonics
    rows = decoder.subharmonic_channels
    new_rows = decoder.output.weight[rows]
    if new_rows.abs().amax() > 0 or (decoder.output.bias is not None and decoder.output.bias[rows].abs().amax() > 0):
        raise ConfigError(
            "trainer.fit_new_partials: the half-integer partials' output rows are not the zeros a warm start "
            "leaves new rows at (trainer.init_from has them already?): drop trainer.fit_new_partials"
        )
    is_half = dsp.partial_numbers(decoder.n_harmonics, n_sub) % 1 != 0
    was_training = model.training
    model.eval()
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n_examples].tolist()
    features, targets = [], []
    for start in range(0, len(order), batch_size):
        items = [dataset[index] for index in order[start : start + batch_size]]
        audio = torch.stack([item["audio"] for item in items]).float()
        pitch = torch.stack([torch.as_tensor(item["pitch"]) for item in items]).long()
        z = model.encode(audio, pitch)
        feature, _ = decoder.control_features(z, pitch)  # [batch, channels, frames]
        distribution = decoder.controls(z, pitch)["harmonic_distribution"]  # [batch, frames, partials]
        half_share, sounding = _half_integer_shares(decoder, audio, pitch, feature.shape[-1])
        # Each half-integer partial's present control, scaled so that its weight against the whole
        # partials' sum becomes the audio's; partials above Nyquist (weight 0) are fitted as quiet.
        present = distribution[..., is_half]
        whole_total = distribution[..., ~is_half].sum(-1, keepdim=True)
        current = dsp.exp_sigmoid(decoder.output(feature)[:, rows].transpose(1, 2))
        wanted = torch.where(present > 0, current * half_share * whole_total / present.clamp(min=1e-12), 0.0)
        features.append(feature.transpose(1, 2)[sounding])
        targets.append(inverse_exp_sigmoid(wanted).clamp(_QUIETEST, _LOUDEST)[sounding])
    model.train(was_training)
    x = torch.cat(features).double()
    y = torch.cat(targets).double()
    if len(x) == 0:
        raise ConfigError(f"trainer.fit_new_partials: none of the {len(order)} crops drawn has a sounding frame")
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)
    gram = design.T @ design
    penalty = ridge * gram.diagonal()[:-1].mean() * torch.eye(len(gram), dtype=x.dtype, device=x.device)
    penalty[-1, -1] = 0.0  # the bias is not penalised
    solution = torch.linalg.solve(gram + penalty, design.T @ y)  # [channels + 1, n_sub]
    explained = 1.0 - ((design @ solution - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum().clamp(min=1e-12)
    decoder.output.weight[rows, :, 0] = solution[:-1].T.to(decoder.output.weight.dtype)
    bias = decoder.output.bias
    assert bias is not None  # a Conv1d made with its bias
    bias[rows] = solution[-1].to(bias.dtype)
    return (
        f"half-integer partials fitted on {len(order)} crops ({len(x):,} sounding frames): "
        f"the rows explain {100 * float(explained):.0f}% of the wanted controls' variance"
    )


def _half_integer_shares(
    decoder: HarmonicNoiseDecoder, audio: Tensor, pitch: Tensor, n_frames: int
) -> tuple[Tensor, Tensor]:
    """Each half-integer partial's amplitude over the sum of the whole partials' in the audio.

    Returns:
        ``[batch, n_frames, n_subharmonics]`` shares and a ``[batch, n_frames]`` mask of the frames
        where the whole partials sound.
    """
    f0 = dsp.midi_to_hz(pitch).to(audio.dtype)[:, None, None].expand(-1, n_frames, 1)
    whole_hz = f0 * dsp.harmonic_ratios(decoder.n_harmonics, None).to(audio.dtype)
    half_hz = f0 * dsp.harmonic_ratios(0, None, n_subharmonics=decoder.n_subharmonics).to(audio.dtype)
    whole = _amplitudes(partial_levels(audio, whole_hz, decoder.control_hop, decoder.sample_rate))
    half = _amplitudes(partial_levels(audio, half_hz, decoder.control_hop, decoder.sample_rate))
    total = whole.sum(-1, keepdim=True)
    return half / total.clamp(min=1e-12), total[..., 0] > _SOUNDING


def _amplitudes(levels: Tensor) -> Tensor:
    """Linear amplitudes of :func:`partial_levels`' log10 levels; the floor (silence, partials
    above Nyquist) reads 0, not 1e-4, or 64 silent partials would add up to a sounding frame."""
    return torch.where(levels > FLOOR_LEVEL, 10.0**levels, torch.zeros_like(levels))
