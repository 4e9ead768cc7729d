"""Fast autoregressive sampling from a decoder that describes its per-sample step.

The queue method of Fast WaveNet (Paine et al., 2016): every layer keeps a ring buffer of its
last ``(kernel_size - 1) * dilation`` inputs, so producing one sample costs one matrix-vector
product per layer instead of a forward pass over the whole receptive field. All notes of a batch
are generated together, each with its own embedding and pitch.

The engine reads a decoder only through ``step_weights()`` (the step layout of
:mod:`timbre.models.decoder_step`, which :class:`~timbre.models.decoder.WaveNetDecoder` owns) and
its frame-rate ``conditioning(z, pitch)``. Two interchangeable steppers run the step:

* ``native`` (CPU, the default there): the C kernel ``fastgen.c``, built when the package is
  installed (see :mod:`timbre.generation.native`), which removes the per-layer Python/dispatch
  overhead that dominates a step at small batch sizes. If the package was installed without it,
  the engine falls back to ``torch`` with a warning.
* ``torch``: the step as a few batched torch operations per layer. Its state and indices live in
  tensors, so on CUDA the whole step is captured once in a CUDA graph and replayed per sample.

Both compute exactly what the teacher-forced ``WaveNetDecoder.forward`` computes (up to
float32 rounding; :func:`cached_logits` exposes the step's logits to check it). Sampling draws
one uniform number per note and sample from the given ``torch.Generator`` and inverts the CDF of
``softmax(logits / temperature)``, so the same seed gives the same audio; temperature 0 is greedy.

The gate ``tanh(f) * sigmoid(g)`` is evaluated as ``tanh(f) * (1 + tanh(g / 2)) / 2`` with the
halvings folded into the weights (exact: powers of two), which needs one transcendental op.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from tqdm.auto import tqdm

from timbre.generation import native
from timbre.io.audio import mu_law_decode
from timbre.models.decoder_step import DecoderStepWeights
from timbre.models.wavenet import class_to_input

Backend = Literal["auto", "native", "torch"]


class SteppableDecoder(Protocol):
    """What the engine needs of a decoder (:class:`~timbre.models.decoder.WaveNetDecoder` has it)."""

    hop_length: int

    def step_weights(self) -> DecoderStepWeights: ...

    def conditioning(self, z: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor: ...


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

    @classmethod
    def from_step(cls, step: DecoderStepWeights) -> FoldedWeights:
        residual = step.residual_channels
        # Gate half of every pre-activation: sigmoid(x) = (1 + tanh(x / 2)) / 2.
        gate_scale = torch.cat([torch.ones(residual), torch.full((residual,), 0.5)]).to(step.start_weight)
        zeros = step.start_weight.new_zeros(residual, residual)

        def stacked(tensors: list[torch.Tensor], *empty_shape: int) -> torch.Tensor:
            if not tensors:  # a single layer has no residual projection
                return step.start_weight.new_zeros(0, *empty_shape)
            return torch.stack(tensors).float().contiguous()

        layers, residual_layers = step.layers, step.layers[:-1]
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
                    [(zeros if layer.residual_weight is None else layer.residual_weight) * 0.5 for layer in residual_layers],
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
            )

    @property
    def residual_channels(self) -> int:
        return self.start_weight.shape[1]

    @property
    def skip_channels(self) -> int:
        return self.skip_start_weight.shape[1]

    @property
    def classes(self) -> int:
        return self.logits_bias.shape[0]


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
        zeros = dict(device=device, dtype=torch.float32)
        self.ring = torch.zeros(batch, sum(lengths), residual, **zeros)
        self.input_ring = torch.zeros(batch, self.past_taps, **zeros)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.inputs = torch.zeros(batch, **zeros)  # network input of the next step
        self.layer_biases = torch.zeros(layers, batch, 2 * residual, **zeros)
        self.output_bias = torch.zeros(batch, weights.skip_channels, **zeros)
        self.logits = torch.zeros(batch, weights.classes, **zeros)
        self.uniforms = torch.zeros(chunk, batch, **zeros)
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
        if self.past_taps:
            read = (self.position - self.read_offsets).remainder_(self.read_lengths).add_(self.read_bases)
            past = self.ring.index_select(1, read).view(batch, -1, self.past_taps * residual).transpose(0, 1)
            pre_activations = torch.baddbmm(self.layer_biases, past, self.past_weight).unbind(0)
            input_read = (self.position - self.input_offsets).remainder_(self.past_taps)
            start_inputs = torch.cat([self.input_ring.index_select(1, input_read), self.inputs.unsqueeze(1)], dim=1)
        else:
            pre_activations = self.layer_biases.unbind(0)
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


def _inverse_temperature(temperature: float) -> float:
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    return math.inf if temperature == 0.0 else 1.0 / temperature


class _Stepper:
    """Runs chunks of steps (all within one conditioning frame) on the native kernel or a TorchStepper."""

    def __init__(self, weights: FoldedWeights, batch: int, backend: Backend, threads: int | None) -> None:
        device = weights.start_bias.device
        if backend == "native" and device.type != "cpu":
            raise ValueError(f"the native backend runs on CPU only, the decoder is on {device}")
        self.native: native.NativeStepper | None = None
        if backend in ("auto", "native") and device.type == "cpu":
            library = native.load_library()
            if library is not None:
                self.native = native.NativeStepper(library, weights, batch, threads)
            elif backend == "native":
                raise RuntimeError(f"the native decoding kernel is unavailable: {native.unavailable_reason()}")
            else:
                warnings.warn(
                    f"timbre: native decoding kernel unavailable ({native.unavailable_reason()}); "
                    "using the slower torch stepper",
                    RuntimeWarning,
                    stacklevel=3,
                )
        self.torch_stepper = None if self.native else TorchStepper(weights, batch, weights.hop_length)
        self.graph: torch.cuda.CUDAGraph | None = None
        # Only the conditioning maps are kept: the native stepper has its own copy of the rest.
        self.conditioning = weights.conditioning

    def set_frame(self, condition: torch.Tensor) -> None:
        """Use the conditioning frame ``[batch, C]`` for the following steps."""
        layer_biases, output_bias = self.conditioning.frame_biases(condition)
        if self.native:
            self.native.set_frame(layer_biases, output_bias)
        else:
            self.torch_stepper.layer_biases.copy_(layer_biases)
            self.torch_stepper.output_bias.copy_(output_bias)

    def capture_cuda_graph(self, inverse_temperature: float) -> None:
        """Record one sampling step in a CUDA graph; later chunks replay it once per sample."""
        stepper = self.torch_stepper
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (lazy allocations, kernel selection) off the graph
            for _ in range(3):
                stepper.sample_step(inverse_temperature)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            stepper.sample_step(inverse_temperature)
        stepper.reset()  # capture does not run the step, but the warm-up did

    def sample(self, start: int, uniforms: torch.Tensor | None, steps: int, inverse_temperature: float) -> torch.Tensor:
        """Generate ``steps`` samples from time ``start``; returns classes ``[steps, batch]``."""
        if self.native:
            return self.native.run(start, steps, uniforms=uniforms, inverse_temperature=inverse_temperature)
        stepper = self.torch_stepper
        if uniforms is not None:
            stepper.uniforms[:steps].copy_(uniforms)
        for _ in range(steps):
            if self.graph is not None:
                self.graph.replay()
            else:
                stepper.sample_step(inverse_temperature)
        return stepper.classes[:steps].clone()

    def teacher_forced(self, start: int, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``[steps, batch, classes]`` of the steps fed ``inputs [steps, batch]``."""
        if self.native:
            return self.native.run(start, inputs.shape[0], teacher=inputs)
        stepper, logits = self.torch_stepper, []
        for step_inputs in inputs:
            stepper.inputs.copy_(step_inputs)
            stepper.step()
            logits.append(stepper.logits.clone())
        return torch.stack(logits)


def _prepare(
    decoder: SteppableDecoder, z: torch.Tensor, pitch: torch.Tensor | int, samples: int
) -> tuple[FoldedWeights, torch.Tensor]:
    """The decoder's folded step and its validated frame-rate conditioning ``[batch, C, frames]``."""
    if z.dim() != 3:
        raise ValueError(f"z must be [batch, latent, frames], got shape {tuple(z.shape)}")
    step = decoder.step_weights()
    if z.shape[-1] * step.hop_length < samples:
        raise ValueError(
            f"{z.shape[-1]} frames at hop {step.hop_length} cover {z.shape[-1] * step.hop_length} samples, "
            f"need {samples}"
        )
    if step.start_weight.device != z.device:
        raise ValueError(f"decoder is on {step.start_weight.device} but z is on {z.device}")
    pitch = torch.as_tensor(pitch, dtype=torch.long, device=z.device)
    if pitch.dim() == 0:
        pitch = pitch.expand(z.shape[0])
    return FoldedWeights.from_step(step), decoder.conditioning(z, pitch)


def _frames(samples: int, hop: int) -> Iterator[tuple[int, int, int]]:
    """``(frame, first sample, samples in it)`` for each conditioning frame up to ``samples``."""
    for frame in range(math.ceil(samples / hop)):
        start = frame * hop
        yield frame, start, min(hop, samples - start)


@torch.inference_mode()
def generate(
    decoder: SteppableDecoder,
    z: torch.Tensor,
    pitch: torch.Tensor | int,
    n_samples: int,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    backend: Backend = "auto",
    threads: int | None = None,
    cuda_graph: bool = True,
) -> torch.Tensor:
    """Sample waveforms autoregressively, one batch of notes at once.

    Args:
        decoder: the AR decoder (any configuration); its device decides where decoding runs.
        z: embeddings ``[batch, latent_dim, frames]`` with ``frames * hop_length >= n_samples``.
        pitch: MIDI pitch per note ``[batch]`` (or one int for all).
        n_samples: samples to generate per note.
        temperature: softmax temperature; 0 picks the most likely class (greedy).
        generator: source of the sampling noise; the same seed gives the same audio.
        progress: show a progress bar over samples.
        backend: ``"auto"`` (the native kernel on CPU when installed, torch otherwise), ``"native"``
            or ``"torch"``.
        threads: CPU threads of the native kernel (default: up to ``torch.get_num_threads()``, see
            :func:`timbre.generation.native.default_threads`).
        cuda_graph: on CUDA, replay the step from a captured CUDA graph.
    Returns:
        audio ``[batch, n_samples]`` float32 in [-1, 1] on ``z``'s device.
    """
    inverse_temperature = _inverse_temperature(temperature)
    weights, condition = _prepare(decoder, z, pitch, n_samples)
    batch = z.shape[0]
    stepper = _Stepper(weights, batch, backend, threads)
    if cuda_graph and z.is_cuda and stepper.torch_stepper is not None:
        stepper.capture_cuda_graph(inverse_temperature)
    random_device = generator.device if generator is not None else torch.device("cpu")
    classes = torch.empty(batch, n_samples, dtype=torch.long, device=z.device)
    with tqdm(total=n_samples, disable=not progress, unit="sample", unit_scale=True, desc="decoding") as bar:
        for frame, start, steps in _frames(n_samples, weights.hop_length):
            stepper.set_frame(condition[:, :, frame])
            uniforms = None
            if inverse_temperature != math.inf:
                uniforms = torch.rand(steps, batch, generator=generator, device=random_device).to(z.device)
            classes[:, start : start + steps] = stepper.sample(start, uniforms, steps, inverse_temperature).t()
            bar.update(steps)
    return mu_law_decode(classes).to(torch.float32)


@torch.inference_mode()
def cached_logits(
    decoder: SteppableDecoder,
    inputs: torch.Tensor,
    z: torch.Tensor,
    pitch: torch.Tensor | int,
    *,
    backend: Backend = "auto",
    threads: int | None = None,
) -> torch.Tensor:
    """Teacher-forced logits computed step by step by the cached engine.

    Same contract as ``WaveNetDecoder.forward`` (``inputs [batch, samples]`` at network scale,
    ``inputs[:, 0]`` normally 0.0); returns logits ``[batch, 256, samples]``, which must match
    the decoder's up to float32 rounding.
    """
    if inputs.dim() != 2 or inputs.shape[0] != z.shape[0]:
        raise ValueError(f"inputs must be [batch={z.shape[0]}, samples], got shape {tuple(inputs.shape)}")
    weights, condition = _prepare(decoder, z, pitch, inputs.shape[-1])
    stepper = _Stepper(weights, inputs.shape[0], backend, threads)
    inputs = inputs.to(torch.float32)
    chunks = []
    for frame, start, steps in _frames(inputs.shape[-1], weights.hop_length):
        stepper.set_frame(condition[:, :, frame])
        chunks.append(stepper.teacher_forced(start, inputs[:, start : start + steps].t().contiguous()))
    return torch.cat(chunks).permute(1, 2, 0)
