"""Starting a new training run from a trained autoencoder's weights (``trainer.init_from``).

The new model may be the trained one with a wider embedding (``latent_dim``), more inputs to
the encoder's bottleneck (``bottleneck_inputs="mel"``), partial levels read by the encoder
(``partial_inputs``: its start convolution's new input columns start at zero, as do the
bottleneck's) and more synthesis controls at the end of the decoder's output convolution
(``n_subharmonics``, ``half_partial_gain_db``); everything else must match. The new model
then computes what the trained one did (exactly, but for what new controls add), and training
goes on from there instead of from scratch:

- the bottleneck's old output channels keep their weights and ignore the new inputs (zero
  weights); its new output channels keep their fresh random initialisation;
- the decoder's first convolution reads the new embedding channels with zero weights, so they
  change nothing until training gives them a use (their gradient is not zero: the new channels
  are not);
- the decoder's new output channels (its ``n_subharmonics`` half-integer partials and the gain
  on them, ``half_partial_gain_db``, and nothing else) start at zero, weights and bias; a zero
  gain control is a 0 dB gain; each new partial as loud as an untrained one, the same for
  every note, until ``trainer.fit_new_partials`` fits them to data
  (:mod:`timbre.train.fit_new_partials`) or training moves them.

Only weights are taken: the optimizer, step and schedule start afresh.
"""

from __future__ import annotations

import torch
from torch import nn

from timbre.errors import CheckpointError

_BOTTLENECK_WEIGHT = "encoder.bottleneck.weight"
_BOTTLENECK_BIAS = "encoder.bottleneck.bias"
_ENCODER_START_WEIGHT = "encoder.start.weight"
_DECODER_INPUT_WEIGHT = "decoder.input.weight"
_DECODER_OUTPUT = ("decoder.output.weight", "decoder.output.bias")


def widened_state(model: nn.Module, source: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """``model``'s state dict filled with ``source``'s weights, the embedding grown as described above.

    Args:
        model: the new autoencoder (freshly initialised; its new channels keep these weights).
        source: a trained autoencoder's state dict with at most as many embedding channels.
        origin: where ``source`` comes from, for messages.

    Raises:
        CheckpointError: naming the first weight that is missing or does not fit.
    """
    target = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    if missing or unexpected:
        raise CheckpointError(
            f"{origin}: cannot start from these weights: the models differ in more than the embedding "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    old_latent, old_inputs = source[_BOTTLENECK_WEIGHT].shape[:2] if _BOTTLENECK_WEIGHT in source else (0, 0)
    new_latent = target[_BOTTLENECK_WEIGHT].shape[0] if _BOTTLENECK_WEIGHT in target else 0
    for name, tensor in target.items():
        old = source[name]
        if old.shape == tensor.shape:
            tensor.copy_(old)
        elif name == _BOTTLENECK_WEIGHT and old.shape[2:] == tensor.shape[2:] and _grows(old.shape, tensor.shape):
            tensor[:old_latent] = 0.0
            tensor[:old_latent, :old_inputs] = old
        elif (
            name == _ENCODER_START_WEIGHT
            and tensor.shape[0] == old.shape[0]
            and tensor.shape[2:] == old.shape[2:]
            and tensor.shape[1] > old.shape[1]
        ):
            # Input channels: [mel bands, level, partial levels]: the partial levels are new, last.
            tensor.zero_()
            tensor[:, : old.shape[1]] = old
        elif name == _BOTTLENECK_BIAS and _grows(old.shape, tensor.shape):
            tensor[:old_latent] = old
        elif (
            name == _DECODER_INPUT_WEIGHT
            and old_latent
            and tensor.shape[0] == old.shape[0]
            and tensor.shape[1] - old.shape[1] == new_latent - old_latent
        ):
            # Input channels: [embedding, pitch features]; the embedding grows in the middle.
            tensor[:, :old_latent] = old[:, :old_latent]
            tensor[:, old_latent:new_latent] = 0.0
            tensor[:, new_latent:] = old[:, old_latent:]
        elif (
            name in _DECODER_OUTPUT
            and tensor.shape[1:] == old.shape[1:]
            and tensor.shape[0] - old.shape[0] in _new_control_rows(model)
        ):
            # Controls are split in order [amplitude, harmonics, noise, bend, new ...]: new ones last.
            tensor.zero_()
            tensor[: old.shape[0]] = old
        else:
            raise CheckpointError(
                f"{origin}: cannot start from these weights: {name} has shape {tuple(old.shape)} there and "
                f"{tuple(tensor.shape)} here; only the embedding width, the encoder's and the bottleneck's "
                "inputs (partial_inputs, bottleneck_inputs) and the decoder's half-integer partials "
                "(n_subharmonics) and their gain (half_partial_gain_db) may grow"
            )
    return target


def _new_control_rows(model: nn.Module) -> set[int]:
    """How many output rows a decoder may have gained: its half-integer partials, the gain on
    them (``half_partial_gain_db``), or both, in that order after the older controls."""
    decoder = getattr(model, "decoder", None)
    n_sub = getattr(decoder, "n_subharmonics", 0)
    gain = 1 if getattr(decoder, "half_partial_gain_db", 0.0) else 0
    return {rows for rows in (n_sub, gain, n_sub + gain) if rows > 0}


def _grows(old: torch.Size, new: torch.Size) -> bool:
    return len(old) == len(new) and all(o <= n for o, n in zip(old, new, strict=True))


def warm_start(model: nn.Module, source: str) -> str:
    """Load ``source``'s (EMA) weights into ``model`` as :func:`widened_state` describes.

    Args:
        model: the new autoencoder.
        source: a bundled model name or a checkpoint path / run directory.

    Returns:
        The checkpoint file read, for the run's log.

    Raises:
        CheckpointError: unreadable checkpoint, not an autoencoder, or weights that do not fit.
    """
    from timbre.train.finetune import load_base  # the same lookup as a fine-tune's base

    _, weights, path = load_base(source)
    model.load_state_dict(widened_state(model, weights, path))
    return path
