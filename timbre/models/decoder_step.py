"""The WaveNet decoder's per-sample step, stated as plain matrices: what a cached engine computes.

:meth:`timbre.models.decoder.WaveNetDecoder.step_weights` fills these structures; the decoding
engine (:mod:`timbre.generation`) reads nothing else of the model. Every map is ``y = x @ weight +
bias`` with ``weight [inputs, outputs]``. With ``c`` one frame of the conditioning
(``WaveNetDecoder.conditioning``, ``C`` channels), ``u(t)`` the network input at time ``t`` and
``K`` the kernel size, one step at time ``t`` is::

    x = sum_k u(t - (K-1-k)) * start_weight[k] + start_bias                       # [R]
    skip = x @ skip_start_weight + skip_start_bias                                 # [S]
    for layer in layers (dilation d):
        pre = sum_k x_layer(t - (K-1-k) d) @ dilated_weight[k] + dilated_bias
              + c @ condition_weight + condition_bias                              # [2R]
              + s(t) @ source_weight                 # only with a pitch clock (below)
        gated = tanh(pre[:R]) * sigmoid(pre[R:])                                   # [R]
        skip += gated @ skip_weight + skip_bias
        x = x + gated @ residual_weight + residual_bias      # absent in the last layer
    hidden = relu(skip) @ hidden_weight + hidden_bias + c @ output_condition_weight + output_condition_bias
    logits = relu(hidden) @ logits_weight + logits_bias                            # [classes]

where ``x_layer(t)`` is the layer's input ``x`` at time ``t`` (zero before time 0). Shapes use
K = kernel, R = residual, S = skip and C = condition channels.

A decoder with a pitch clock (``source_harmonics = H > 0``) gives every layer a ``source_weight
[2H, 2R]``; ``s(t)`` is :func:`timbre.models.wavenet.pitch_source` of the note's MIDI pitch at
``sample_rate`` (:func:`~timbre.models.wavenet.source_cycles`), phase 0 at time 0: a function of
the pitch and the time only, which the engine computes itself.

This module holds data only, so the engine can depend on it without depending on the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _expect(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != shape:
        raise ValueError(f"decoder step layout: {name} has shape {tuple(tensor.shape)}, expected {shape}")


@dataclass(frozen=True)
class LayerStepWeights:
    """One gated residual layer of the step (see the module docstring)."""

    dilation: int
    dilated_weight: torch.Tensor  # [K, R, 2R]; outputs: filter half, then gate half
    dilated_bias: torch.Tensor  # [2R]
    condition_weight: torch.Tensor  # [C, 2R]
    condition_bias: torch.Tensor  # [2R]
    skip_weight: torch.Tensor  # [R, S]
    skip_bias: torch.Tensor  # [S]
    residual_weight: torch.Tensor | None  # [R, R]; None: the layer's residual output feeds nothing
    residual_bias: torch.Tensor | None  # [R]
    source_weight: torch.Tensor | None = None  # [2H, 2R]; None: no pitch clock


@dataclass(frozen=True)
class DecoderStepWeights:
    """The whole step (see the module docstring): float tensors, all on one device.

    Raises ValueError on construction if the shapes disagree with each other.
    """

    hop_length: int  # samples per conditioning frame
    start_weight: torch.Tensor  # [K, R]
    start_bias: torch.Tensor  # [R]
    skip_start_weight: torch.Tensor  # [R, S]
    skip_start_bias: torch.Tensor  # [S]
    layers: tuple[LayerStepWeights, ...]
    hidden_weight: torch.Tensor  # [S, S]
    hidden_bias: torch.Tensor  # [S]
    output_condition_weight: torch.Tensor  # [C, S]
    output_condition_bias: torch.Tensor  # [S]
    logits_weight: torch.Tensor  # [S, classes]
    logits_bias: torch.Tensor  # [classes]
    sample_rate: int = 16000  # turns a MIDI pitch into the pitch clock's cycles per sample

    def __post_init__(self) -> None:
        kernel, residual = self.start_weight.shape
        skip, condition, classes = self.skip_channels, self.condition_channels, self.classes
        if not self.layers:
            raise ValueError("decoder step layout: no layers")
        source = self.layers[0].source_weight
        source_channels = 0 if source is None else source.shape[0]
        _expect("start_bias", self.start_bias, (residual,))
        _expect("skip_start_weight", self.skip_start_weight, (residual, skip))
        _expect("skip_start_bias", self.skip_start_bias, (skip,))
        _expect("hidden_weight", self.hidden_weight, (skip, skip))
        _expect("hidden_bias", self.hidden_bias, (skip,))
        _expect("output_condition_weight", self.output_condition_weight, (condition, skip))
        _expect("output_condition_bias", self.output_condition_bias, (skip,))
        _expect("logits_weight", self.logits_weight, (skip, classes))
        for index, layer in enumerate(self.layers):
            name = f"layers[{index}]."
            if layer.dilation < 1:
                raise ValueError(f"decoder step layout: {name}dilation is {layer.dilation}, expected >= 1")
            _expect(name + "dilated_weight", layer.dilated_weight, (kernel, residual, 2 * residual))
            _expect(name + "dilated_bias", layer.dilated_bias, (2 * residual,))
            _expect(name + "condition_weight", layer.condition_weight, (condition, 2 * residual))
            _expect(name + "condition_bias", layer.condition_bias, (2 * residual,))
            _expect(name + "skip_weight", layer.skip_weight, (residual, skip))
            _expect(name + "skip_bias", layer.skip_bias, (skip,))
            if (layer.residual_weight is None) != (layer.residual_bias is None):
                raise ValueError(f"decoder step layout: {name}residual_weight and residual_bias must both be set")
            if layer.residual_weight is not None and layer.residual_bias is not None:
                _expect(name + "residual_weight", layer.residual_weight, (residual, residual))
                _expect(name + "residual_bias", layer.residual_bias, (residual,))
            if (layer.source_weight is None) != (source is None):
                raise ValueError("decoder step layout: either every layer has a source_weight or none has")
            if layer.source_weight is not None:
                _expect(name + "source_weight", layer.source_weight, (source_channels, 2 * residual))
        if source_channels % 2:
            raise ValueError(f"decoder step layout: source_weight has {source_channels} rows, expected 2 per harmonic")

    @property
    def kernel_size(self) -> int:
        return self.start_weight.shape[0]

    @property
    def residual_channels(self) -> int:
        return self.start_weight.shape[1]

    @property
    def skip_channels(self) -> int:
        return self.skip_start_weight.shape[1]

    @property
    def condition_channels(self) -> int:
        return self.output_condition_weight.shape[0]

    @property
    def classes(self) -> int:
        return self.logits_bias.shape[0]

    @property
    def source_harmonics(self) -> int:
        """``H`` of the pitch clock (0: none)."""
        source = self.layers[0].source_weight
        return 0 if source is None else source.shape[0] // 2

    @property
    def dilations(self) -> list[int]:
        return [layer.dilation for layer in self.layers]
