"""The cached step as torch operations: the CUDA path, and the CPU fallback without the native kernel."""

from __future__ import annotations

import math

import torch

from timbre.generation.folded import FoldedWeights
from timbre.models.wavenet import class_to_input, pitch_source


class TorchStepper:
    """The cached step as torch operations on static buffers (CUDA-graph capturable).

    Past layer inputs of all layers share one ring buffer ``[batch, slots, R]``; layer ``l`` owns
    ``(K-1) * dilation_l`` slots and time ``t`` lives in slot ``t mod`` that. All past taps of all
    layers are known when a step starts, so their contribution is one batched matmul; each layer
    then adds only its current tap. The position is a tensor so a captured graph can advance it.
    """

    def __init__(self, weights: FoldedWeights, batch: int, chunk: int) -> None:
        device = weights.start_bias.device
        kernel, residual = weights.kernel_size, weights.residual_channels
        self.weights = weights
        self.past_taps = kernel - 1
        lengths = [self.past_taps * d for d in weights.dilations]
        bases = [sum(lengths[:i]) for i in range(len(lengths))]

        def index(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long, device=device)

        # tap k < K-1 of layer l reads time t - (K-1-k) * d_l
        self.read_offsets = index([(self.past_taps - k) * d for d in weights.dilations for k in range(self.past_taps)])
        self.read_lengths = index([n for n in lengths for _ in range(self.past_taps)])
        self.read_bases = index([b for b in bases for _ in range(self.past_taps)])
        self.write_lengths, self.write_bases = index(lengths), index(bases)
        self.input_offsets = index(list(range(self.past_taps, 0, -1)))
        layers = len(weights.dilations)
        self.past_weight = weights.dilated_weight[:, : self.past_taps * residual]  # [layers, (K-1)R, 2R]
        self.current_weight = weights.dilated_weight[:, self.past_taps * residual :]  # [layers, R, 2R]
        # skip_start and every layer's skip projection as one matrix over [x0, gated_0, gated_1, ...]
        self.all_skip_weight = torch.cat([weights.skip_start_weight, weights.skip_weight.flatten(0, 1)])

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, device=device, dtype=torch.float32)

        self.ring = zeros(batch, sum(lengths), residual)
        self.input_ring = zeros(batch, self.past_taps)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.source_cycles = torch.zeros(batch, dtype=torch.float64, device=device)  # the pitch clock's, per note
        self.inputs = zeros(batch)  # network input of the next step
        self.layer_biases = zeros(layers, batch, 2 * residual)
        self.output_bias = zeros(batch, weights.skip_channels)
        self.logits = zeros(batch, weights.classes)
        self.uniforms = zeros(chunk, batch)
        self.classes = torch.zeros(chunk, batch, dtype=torch.long, device=device)
        self.chunk = chunk

    def reset(self) -> None:
        """Back to time 0: empty (zero) history, input 0.0."""
        for buffer in (self.ring, self.input_ring, self.position, self.inputs):
            buffer.zero_()

    def step(self) -> None:
        """Logits for ``self.inputs`` at the current position into ``self.logits``; advance."""
        w = self.weights
        batch, residual = self.inputs.shape[0], w.residual_channels
        biases = self.layer_biases
        if w.source_harmonics:
            clock = pitch_source(self.source_cycles, self.position, w.source_harmonics)[:, :, 0]  # [batch, 2H]
            biases = biases + torch.matmul(clock, w.source_weight)
        if self.past_taps:
            read = (self.position - self.read_offsets).remainder_(self.read_lengths).add_(self.read_bases)
            past = self.ring.index_select(1, read).view(batch, -1, self.past_taps * residual).transpose(0, 1)
            pre_activations = torch.baddbmm(biases, past, self.past_weight).unbind(0)
            input_read = (self.position - self.input_offsets).remainder_(self.past_taps)
            start_inputs = torch.cat([self.input_ring.index_select(1, input_read), self.inputs.unsqueeze(1)], dim=1)
        else:
            pre_activations = biases.unbind(0)
            start_inputs = self.inputs.unsqueeze(1)
        x = torch.addmm(w.start_bias, start_inputs, w.start_weight)
        layer_inputs, skip_inputs = [], [x]
        last = len(pre_activations) - 1
        for layer, pre_activation in enumerate(pre_activations):
            layer_inputs.append(x)
            filter_part, gate_part = torch.addmm(pre_activation, x, self.current_weight[layer]).tanh_().chunk(2, dim=1)
            gated = torch.addcmul(filter_part, filter_part, gate_part)
            skip_inputs.append(gated)
            if layer < last:
                x = torch.addmm(w.residual_bias[layer], gated, w.residual_weight[layer]).add_(x)
        if self.past_taps:
            write = self.position.remainder(self.write_lengths).add_(self.write_bases)
            self.ring.index_copy_(1, write, torch.stack(layer_inputs, dim=1))
            self.input_ring.index_copy_(1, self.position.remainder(self.past_taps), self.inputs.unsqueeze(1))
        skip = torch.addmm(w.skip_bias, torch.cat(skip_inputs, dim=1), self.all_skip_weight).relu_()
        hidden = torch.addmm(self.output_bias, skip, w.hidden_weight).relu_()
        torch.addmm(w.logits_bias, hidden, w.logits_weight, out=self.logits)
        self.position.add_(1)

    def sample_step(self, inverse_temperature: float) -> None:
        """:meth:`step`, then pick each note's class into ``self.classes`` and feed it back.

        Uses ``self.uniforms[t % chunk]`` (inverse-CDF sampling) or argmax if the temperature is 0.
        """
        slot = self.position.remainder(self.chunk)
        self.step()
        if inverse_temperature == math.inf:
            picked = self.logits.argmax(dim=1)
        else:
            top = self.logits.max(dim=1, keepdim=True).values
            cdf = ((self.logits - top) * inverse_temperature).exp_().cumsum_(dim=1)
            target = self.uniforms.index_select(0, slot).view(-1, 1) * cdf[:, -1:]
            picked = torch.searchsorted(cdf, target, right=True).view(-1).clamp_(max=self.weights.classes - 1)
        self.classes.index_copy_(0, slot, picked.view(1, -1))
        self.inputs.copy_(class_to_input(picked))
