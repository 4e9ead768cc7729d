"""A decoder's step layout folded for the steppers: gate halvings and summed biases.

The gate ``tanh(f) * sigmoid(g)`` is evaluated as ``tanh(f) * (1 + tanh(g / 2)) / 2``: the gate
half of every pre-activation is halved and the skip/residual projections absorb the final
halving (exact: powers of two), so each gate needs one transcendental op.

Reduced-precision weights (:meth:`FoldedWeights.with_matrices_rounded_to`) change the matrices the
native kernel streams per sample: bfloat16 rounds each weight to 8 significant bits; int8 keeps
one float32 scale per output column (its largest magnitude / 127) and each weight as the nearest
integer multiple of it (:func:`quantize_int8`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from timbre.models.decoder_step import DecoderStepWeights

# What a reduced-precision matrix may be stored as (besides float32).
REDUCED_DTYPES = (torch.bfloat16, torch.int8)


def quantize_int8(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization with one scale per output column.

    Args: matrix ``[..., inputs, outputs]`` float.
    Returns: ``(weights [..., inputs, outputs] int8 in [-127, 127], scales [..., outputs] float32)``
    with ``weights * scales`` the nearest such approximation of ``matrix``; an all-zero column
    has scale 0.
    """
    largest = matrix.abs().amax(dim=-2).float()
    scales = largest / 127
    divisor = torch.where(scales > 0, scales, torch.ones_like(scales)).unsqueeze(-2)
    weights = torch.round(matrix.float() / divisor).clamp_(-127, 127).to(torch.int8)
    return weights, scales


@dataclass
class ConditioningMaps:
    """Every layer's 1x1 map of the frame-rate conditioning (C channels), stacked."""

    layer_weight: torch.Tensor  # [layers, C, 2R], gate half halved
    layer_bias: torch.Tensor  # [layers, 2R], conditioning plus dilated conv bias, gate half halved
    output_weight: torch.Tensor  # [C, S]
    output_bias: torch.Tensor  # [S], output conditioning plus output_hidden bias

    def frame_biases(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-layer and output biases of one conditioning frame.

        Args: condition ``[batch, C]`` (one frame of the decoder's conditioning).
        Returns: ``(layer biases [layers, batch, 2R], output bias [batch, S])``.
        """
        condition = condition.float()
        layer_biases = torch.matmul(condition, self.layer_weight) + self.layer_bias.unsqueeze(1)
        return layer_biases, torch.addmm(self.output_bias, condition, self.output_weight)


@dataclass
class FoldedWeights:
    """A step layout folded for the steppers (float32, on the layout's device).

    Matrices are ``[inputs, outputs]``. The gate half of every pre-activation is halved and the
    skip/residual projections are halved (see the module docstring); all skip biases are summed
    into ``skip_bias``; a missing residual projection is a zero one. Shapes use K = kernel,
    R = residual, S = skip, C = condition channels.
    """

    kernel_size: int
    dilations: list[int]
    hop_length: int
    start_weight: torch.Tensor  # [K, R], tap k multiplies the input at t - (K-1-k)
    start_bias: torch.Tensor  # [R]
    skip_start_weight: torch.Tensor  # [R, S]
    skip_bias: torch.Tensor  # [S], skip_start's bias plus every layer's skip bias
    dilated_weight: torch.Tensor  # [layers, K*R, 2R], rows tap-major like start_weight
    residual_weight: torch.Tensor  # [layers - 1, R, R]: the last layer's residual output feeds nothing
    residual_bias: torch.Tensor  # [layers - 1, R]
    skip_weight: torch.Tensor  # [layers, R, S]
    conditioning: ConditioningMaps
    hidden_weight: torch.Tensor  # [S, S]
    logits_weight: torch.Tensor  # [S, classes]
    logits_bias: torch.Tensor  # [classes]
    # The pitch clock's map of every layer, gate half halved: [layers, 2H, 2R] ([layers, 0, 2R]
    # without a clock); stored in the weight format like the other matrices.
    source_weight: torch.Tensor
    sample_rate: int

    @classmethod
    def from_step(cls, step: DecoderStepWeights) -> FoldedWeights:
        residual = step.residual_channels
        # Gate half of every pre-activation: sigmoid(x) = (1 + tanh(x / 2)) / 2.
        gate_scale = torch.cat([torch.ones(residual), torch.full((residual,), 0.5)]).to(step.start_weight)
        zeros = step.start_weight.new_zeros(residual, residual)
        no_clock = step.start_weight.new_zeros(0, 2 * residual)  # a layer's clock map without a clock

        def stacked(tensors: list[torch.Tensor], *empty_shape: int) -> torch.Tensor:
            if not tensors:  # a single layer has no residual projection
                return step.start_weight.new_zeros(0, *empty_shape)
            return torch.stack(tensors).float().contiguous()

        layers, residual_layers = step.layers, step.layers[:-1]
        source_weights = [layer.source_weight for layer in layers]
        with torch.no_grad():
            return cls(
                kernel_size=step.kernel_size,
                dilations=step.dilations,
                hop_length=step.hop_length,
                start_weight=step.start_weight.float().contiguous(),
                start_bias=step.start_bias.float(),
                skip_start_weight=step.skip_start_weight.float().contiguous(),
                skip_bias=(step.skip_start_bias + sum(layer.skip_bias for layer in layers)).float(),
                dilated_weight=stacked([layer.dilated_weight.flatten(0, 1) * gate_scale for layer in layers]),
                residual_weight=stacked(
                    [
                        (zeros if layer.residual_weight is None else layer.residual_weight) * 0.5
                        for layer in residual_layers
                    ],
                    residual,
                    residual,
                ),
                residual_bias=stacked(
                    [zeros[0] if layer.residual_bias is None else layer.residual_bias for layer in residual_layers],
                    residual,
                ),
                skip_weight=stacked([layer.skip_weight * 0.5 for layer in layers]),
                conditioning=ConditioningMaps(
                    layer_weight=stacked([layer.condition_weight * gate_scale for layer in layers]),
                    layer_bias=stacked([(layer.condition_bias + layer.dilated_bias) * gate_scale for layer in layers]),
                    output_weight=step.output_condition_weight.float().contiguous(),
                    output_bias=(step.output_condition_bias + step.hidden_bias).float(),
                ),
                hidden_weight=step.hidden_weight.float().contiguous(),
                logits_weight=step.logits_weight.float().contiguous(),
                logits_bias=step.logits_bias.float(),
                source_weight=stacked([(no_clock if w is None else w) * gate_scale for w in source_weights]),
                sample_rate=step.sample_rate,
            )

    def with_matrices_rounded_to(self, dtype: torch.dtype) -> FoldedWeights:
        """These weights with the matrices the native kernel stores as ``dtype`` rounded to it (kept float32).

        ``dtype`` is ``torch.bfloat16`` or ``torch.int8`` (per-column scales, see :func:`quantize_int8`):
        what the native kernel computes with when it stores the matrices that way.
        """
        if dtype not in REDUCED_DTYPES:
            raise ValueError(f"matrices are rounded to torch.bfloat16 or torch.int8, not {dtype}")

        def rounded(tensor: torch.Tensor) -> torch.Tensor:
            if dtype == torch.int8:
                weights, scales = quantize_int8(tensor)
                return weights.float() * scales.unsqueeze(-2)
            return tensor.to(dtype).float()

        return dataclasses.replace(
            self,
            skip_start_weight=rounded(self.skip_start_weight),
            dilated_weight=rounded(self.dilated_weight),
            residual_weight=rounded(self.residual_weight),
            skip_weight=rounded(self.skip_weight),
            hidden_weight=rounded(self.hidden_weight),
            logits_weight=rounded(self.logits_weight),
            source_weight=rounded(self.source_weight) if self.source_weight.shape[1] else self.source_weight,
        )

    @property
    def residual_channels(self) -> int:
        return self.start_weight.shape[1]

    @property
    def source_harmonics(self) -> int:
        """``H`` of the pitch clock (0: none)."""
        return self.source_weight.shape[1] // 2

    @property
    def skip_channels(self) -> int:
        return self.skip_start_weight.shape[1]

    @property
    def classes(self) -> int:
        return self.logits_bias.shape[0]
