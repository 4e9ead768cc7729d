"""Fast autoregressive sampling from a decoder that describes its per-sample step.

The queue method of Fast WaveNet (Paine et al., 2016): every layer keeps a ring buffer of its
last ``(kernel_size - 1) * dilation`` inputs, so producing one sample costs one matrix-vector
product per layer instead of a forward pass over the whole receptive field. All notes of a batch
are generated together, each with its own embedding and pitch.

The engine reads a decoder only through ``step_weights()`` (the step layout of
:mod:`timbre.models.decoder_step`, which :class:`~timbre.models.decoder.WaveNetDecoder` owns) and
its frame-rate ``conditioning(z, pitch)``; a decoder with a pitch clock gets it from the pitch,
the time and the layout's ``sample_rate`` (:func:`timbre.models.wavenet.pitch_source`). Two
interchangeable steppers run the step:

* ``native`` (CPU, the default there): the C kernel ``fastgen.c``, built when the package is
  installed (see :mod:`timbre.generation.native`), which removes the per-layer Python/dispatch
  overhead that dominates a step at small batch sizes. If the package was installed without it,
  the engine falls back to ``torch`` with a warning.
* ``torch``: the step as a few batched torch operations per layer (:class:`TorchStepper`). Its state and indices live in
  tensors, so on CUDA the whole step is captured once in a CUDA graph and replayed per sample.

Both compute exactly what the teacher-forced ``WaveNetDecoder.forward`` computes (up to
float32 rounding; :func:`cached_logits` exposes the step's logits to check it). Sampling draws
one uniform number per note and sample from the given ``torch.Generator`` and inverts the CDF of
``softmax(logits / temperature)``, so the same seed gives the same audio; temperature 0 is greedy.

``clock_gain`` scales a pitch clock's share of every layer's pre-activation at decoding time (its
1x1 maps, so it costs nothing per sample): teacher forcing trains the decoder to follow the clock
*and* its own past samples, and when sampling, the past drifts; a stronger clock pulls the note
back to its pitch. On the bundled ``wavenet-v2`` (step 3,164), 120 notes of held-out instruments
at temperature 0.3: pitch within 50 cents 78% at gain 1, 100% at gain 2, spectral distance 2.15
and 1.75, the notes 8 dB quieter at gain 2 (a model's make-up gain restores the level: see
:attr:`timbre.TimbreModel.makeup_db`; the README has the tables).

Weights can be stored in reduced precision: every matrix of the step except the start
convolution is rounded to bfloat16 (``weight_dtype=torch.bfloat16``) or quantized to int8 with a
float32 scale per output column (``weight_dtype=torch.int8``, see
:func:`timbre.generation.folded.quantize_int8`); inputs, biases and accumulation stay float32
(except that the native kernel's int8 product of a single note quantizes its inputs to 14 bits,
an error far below the weights' own: see ``fastgen.c``). At batch 1 the native step streams all
its weights per sample (236 MB at NSynth size), so halving or quartering them is what speeds it
up; the logits then differ from float32's by the rounding of the weights
(``benchmarks/decode_speed.py`` states the error at NSynth size and on a trained decoder;
``tests/test_generate.py`` bounds it). The torch stepper rounds the same matrices, so both
steppers compute the same step (for int8, up to those 14-bit inputs). ``WEIGHT_NAMES`` maps the
names users pass (``"float32"``, ``"bfloat16"``, ``"int8"``) to these dtypes.

Both steppers take the layout folded by :mod:`timbre.generation.folded` (gate halvings, summed
biases); the torch one lives in :mod:`timbre.generation.torch_stepper`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator
from typing import Literal, Protocol

import torch
from tqdm.auto import tqdm

from timbre import runtime
from timbre.generation import native
from timbre.generation.folded import REDUCED_DTYPES, FoldedWeights
from timbre.generation.torch_stepper import TorchStepper
from timbre.io.audio import mu_law_decode, mu_law_encode
from timbre.models.decoder_step import DecoderStepWeights
from timbre.models.wavenet import class_to_input, source_cycles

Backend = Literal["auto", "native", "torch"]
# How the step's matrices can be stored (see the module docstring), and the names users give them.
WEIGHT_DTYPES = (torch.float32, *REDUCED_DTYPES)
WEIGHT_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}


class SteppableDecoder(Protocol):
    """What the engine needs of a decoder (:class:`~timbre.models.decoder.WaveNetDecoder` has it)."""

    hop_length: int

    def step_weights(self) -> DecoderStepWeights: ...

    def conditioning(self, z: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor: ...


def _inverse_temperature(temperature: float) -> float:
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    return math.inf if temperature == 0.0 else 1.0 / temperature


class _Stepper:
    """Runs chunks of steps (all within one conditioning frame) on the native kernel or a TorchStepper."""

    def __init__(
        self,
        weights: FoldedWeights,
        cycles: torch.Tensor,
        backend: Backend,
        threads: int | None,
        weight_dtype: torch.dtype,
    ) -> None:
        """``cycles``: the pitch clock's cycles per sample of each note, ``float64 [batch]``."""
        batch = cycles.shape[0]
        if weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weights are stored as torch.float32, torch.bfloat16 or torch.int8, not {weight_dtype}")
        device = weights.start_bias.device
        if backend == "native" and device.type != "cpu":
            raise ValueError(f"the native backend runs on CPU only, the decoder is on {device}")
        self.native: native.NativeStepper | None = None
        if backend in ("auto", "native") and device.type == "cpu":
            library = native.load_library()
            if library is not None:
                self.native = native.NativeStepper(library, weights, batch, threads, weight_dtype)
                self.native.source_cycles.copy_(cycles)
            elif backend == "native":
                raise RuntimeError(f"the native decoding kernel is unavailable: {native.unavailable_reason()}")
            else:
                warnings.warn(
                    f"timbre: native decoding kernel unavailable ({native.unavailable_reason()}); "
                    "using the slower torch stepper",
                    RuntimeWarning,
                    stacklevel=3,
                )
        self.torch_stepper: TorchStepper | None = None
        if self.native is None:
            if weight_dtype != torch.float32:
                weights = weights.with_matrices_rounded_to(weight_dtype)
            self.torch_stepper = TorchStepper(weights, batch, weights.hop_length)
            self.torch_stepper.source_cycles.copy_(cycles)
        self.graph: torch.cuda.CUDAGraph | None = None
        # Only the conditioning maps are kept: the native stepper has its own copy of the rest.
        self.conditioning = weights.conditioning

    def _torch(self) -> TorchStepper:
        if self.torch_stepper is None:
            raise RuntimeError("the torch stepper is not in use: decoding runs on the native kernel")
        return self.torch_stepper

    def set_frame(self, condition: torch.Tensor) -> None:
        """Use the conditioning frame ``[batch, C]`` for the following steps."""
        layer_biases, output_bias = self.conditioning.frame_biases(condition)
        if self.native is not None:
            self.native.set_frame(layer_biases, output_bias)
        else:
            self._torch().layer_biases.copy_(layer_biases)
            self._torch().output_bias.copy_(output_bias)

    def capture_cuda_graph(self, inverse_temperature: float) -> None:
        """Record one sampling step in a CUDA graph; later chunks replay it once per sample."""
        stepper = self._torch()
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
        if self.native is not None:
            return self.native.run(start, steps, uniforms=uniforms, inverse_temperature=inverse_temperature)
        stepper = self._torch()
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
        if self.native is not None:
            return self.native.run(start, inputs.shape[0], teacher=inputs)
        stepper, logits = self._torch(), []
        for step_inputs in inputs:
            stepper.inputs.copy_(step_inputs)
            stepper.step()
            logits.append(stepper.logits.clone())
        return torch.stack(logits)


def _prepare(
    decoder: SteppableDecoder, z: torch.Tensor, pitch: torch.Tensor | int, samples: int
) -> tuple[FoldedWeights, torch.Tensor, torch.Tensor]:
    """The decoder's folded step, its validated frame-rate conditioning ``[batch, C, frames]`` and
    the pitch clock's cycles per sample of each note (``float64 [batch]``)."""
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
    condition = decoder.conditioning(z, pitch)  # validates the pitch
    return FoldedWeights.from_step(step), condition, source_cycles(pitch, step.sample_rate)


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
    weight_dtype: torch.dtype = torch.float32,
    clock_gain: float = 1.0,
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
        weight_dtype: ``torch.float32``, ``torch.bfloat16`` or ``torch.int8``: how the step's
            matrices are stored (faster batch-1 decoding of large decoders; see the module docstring).
        clock_gain: multiplies the pitch clock's maps (decoders with a clock; see the module docstring).
    Returns:
        audio ``[batch, n_samples]`` float32 in [-1, 1] on ``z``'s device.
    """
    inverse_temperature = _inverse_temperature(temperature)
    if not 0.0 <= clock_gain < math.inf:
        raise ValueError(f"clock_gain must be a finite number >= 0, got {clock_gain}")
    weights, condition, cycles = _prepare(decoder, z, pitch, n_samples)
    if clock_gain != 1.0:
        if not weights.source_harmonics:
            raise ValueError("clock_gain applies to a decoder with a pitch clock (source_harmonics > 0)")
        weights = dataclasses.replace(weights, source_weight=weights.source_weight * clock_gain)
    batch = z.shape[0]
    stepper = _Stepper(weights, cycles, backend, threads, weight_dtype)
    if cuda_graph and z.is_cuda and stepper.torch_stepper is not None:
        stepper.capture_cuda_graph(inverse_temperature)
    random_device = generator.device if generator is not None else torch.device("cpu")
    classes = torch.empty(batch, n_samples, dtype=torch.long, device=z.device)
    # Torch-side work per step (the torch stepper, frame biases, noise) gets the threads the native
    # kernel takes: one per note group. A batch-1 step is too small to split: on 2 cores a second
    # thread made it slower, idle or beside other work (benchmarks/contention.py, job ar_note).
    with (
        runtime.threads(native.default_threads(batch)),
        tqdm(total=n_samples, disable=not progress, unit="sample", unit_scale=True, desc="decoding") as bar,
    ):
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
    weight_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Teacher-forced logits computed step by step by the cached engine.

    Same contract as ``WaveNetDecoder.forward`` (``inputs [batch, samples]`` at network scale,
    ``inputs[:, 0]`` normally 0.0); returns logits ``[batch, 256, samples]``, which must match
    the decoder's up to float32 rounding (with ``weight_dtype=torch.float32``; the other
    ``weight_dtype`` values give the logits of the rounded weights, see :func:`generate`).
    """
    if inputs.dim() != 2 or inputs.shape[0] != z.shape[0]:
        raise ValueError(f"inputs must be [batch={z.shape[0]}, samples], got shape {tuple(inputs.shape)}")
    weights, condition, cycles = _prepare(decoder, z, pitch, inputs.shape[-1])
    stepper = _Stepper(weights, cycles, backend, threads, weight_dtype)
    inputs = inputs.to(torch.float32)
    chunks = []
    for frame, start, steps in _frames(inputs.shape[-1], weights.hop_length):
        stepper.set_frame(condition[:, :, frame])
        chunks.append(stepper.teacher_forced(start, inputs[:, start : start + steps].t().contiguous()))
    return torch.cat(chunks).permute(1, 2, 0)


@torch.inference_mode()
def weight_precision_error(
    decoder: SteppableDecoder,
    z: torch.Tensor,
    pitch: torch.Tensor | int,
    n_samples: int,
    weight_dtype: torch.dtype,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    backend: Backend = "auto",
) -> dict[str, float]:
    """How far reduced-precision weights move the step's output distribution from float32's.

    Decodes ``n_samples`` with float32 weights (sampled at ``temperature`` with ``seed``), then
    feeds that decode to the step with float32 and with ``weight_dtype`` weights, so both see the
    same state at every step.

    Returns:
        ``max_abs``: the largest logit difference; ``relative``: it over the float32 logits'
        standard deviation; ``mean_kl`` and ``max_kl``: KL(float32 || reduced) of the softmax
        distributions (nats), averaged over and maximal among all notes and steps.
    """
    generator = torch.Generator().manual_seed(seed)
    audio = generate(decoder, z, pitch, n_samples, temperature=temperature, generator=generator, backend=backend)
    # The network input at each step: 0.0, then the previous sample's class (mu-law round trips exactly).
    previous = class_to_input(mu_law_encode(audio[:, :-1]))
    inputs = torch.cat([torch.zeros_like(previous[:, :1]), previous], dim=1)
    exact, reduced = (
        cached_logits(decoder, inputs, z, pitch, backend=backend, weight_dtype=dtype)
        for dtype in (torch.float32, weight_dtype)
    )
    log_exact, log_reduced = exact.log_softmax(dim=1), reduced.log_softmax(dim=1)
    kl = (log_exact.exp() * (log_exact - log_reduced)).sum(dim=1)  # [batch, samples]
    error = (reduced - exact).abs().max().item()
    return {
        "max_abs": error,
        "relative": error / exact.std().item(),
        "mean_kl": kl.mean().item(),
        "max_kl": kl.max().item(),
    }
