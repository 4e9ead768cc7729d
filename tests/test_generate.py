"""The cached autoregressive engine: exactness against the teacher-forced decoder, sampling, batching.

The native kernel's loading and packaging are tested in test_generation_native.py.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import timbre
from timbre.errors import ConfigError, InvalidTypeError
from timbre.generation import native
from timbre.generation.engine import cached_logits, generate, weight_precision_error
from timbre.generation.folded import quantize_int8
from timbre.io.audio import mu_law_decode, mu_law_encode
from timbre.models.autoencoder import Autoencoder
from timbre.models.decoder import WaveNetDecoder
from timbre.models.encoder import WaveNetEncoder
from timbre.models.wavenet import class_to_input

HOP = 16  # short frames so a few hundred samples cross many conditioning frames

CONFIGS = {
    "kernel3": dict(residual_channels=8, skip_channels=8, layers=6, stages=3, kernel_size=3, pitch_embedding_dim=4),
    "kernel2": dict(residual_channels=8, skip_channels=12, layers=5, stages=3, kernel_size=2, pitch_embedding_dim=4),
    # channels that are not multiples of the native kernel's 64-column panels, no pitch embedding
    "wide": dict(residual_channels=70, skip_channels=66, layers=3, stages=3, kernel_size=3, pitch_embedding_dim=0),
    # dilations up to 512 like NSynth's: receptive field 2049 samples
    "deep": dict(residual_channels=8, skip_channels=8, layers=10, stages=10, kernel_size=3, pitch_embedding_dim=4),
    # the sample-rate pitch clock in every layer; MIDI 100 (2.6 kHz at 16 kHz) loses harmonics 4-5 to Nyquist
    "clock": dict(
        residual_channels=8,
        skip_channels=8,
        layers=6,
        stages=3,
        kernel_size=3,
        pitch_embedding_dim=4,
        source_harmonics=5,
    ),
}

native_available = native.load_library() is not None
BACKENDS = [
    pytest.param(dict(backend="torch"), id="torch"),
    pytest.param(
        dict(backend="native", threads=1),
        id="native",
        marks=pytest.mark.skipif(not native_available, reason="timbre was installed without its native kernel"),
    ),
    pytest.param(
        dict(backend="native", threads=2),
        id="native-2-threads",
        marks=pytest.mark.skipif(not native_available, reason="timbre was installed without its native kernel"),
    ),
]


def make_decoder(name: str = "kernel3", seed: int = 0) -> WaveNetDecoder:
    torch.manual_seed(seed)
    return WaveNetDecoder(**CONFIGS[name], hop_length=HOP).eval()


def note_inputs(decoder: WaveNetDecoder, batch: int, samples: int, seed: int = 1):
    """Random embeddings covering ``samples`` and distinct pitches for ``batch`` notes."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, decoder.latent_dim, math.ceil(samples / HOP), generator=generator)
    pitch = torch.tensor([36, 60, 84, 100][:batch])
    return z, pitch


def naive_greedy(decoder: WaveNetDecoder, z: torch.Tensor, pitch: torch.Tensor, samples: int) -> torch.Tensor:
    """Reference decoding: the full teacher-forced forward pass for every sample, argmax."""
    inputs = torch.zeros(z.shape[0], samples)
    classes = torch.empty(z.shape[0], samples, dtype=torch.long)
    with torch.inference_mode():
        for t in range(samples):
            classes[:, t] = decoder(inputs[:, : t + 1], z, pitch)[:, :, -1].argmax(dim=1)
            if t + 1 < samples:
                inputs[:, t + 1] = class_to_input(classes[:, t])
    return classes


@pytest.mark.parametrize("options", BACKENDS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_cached_step_logits_equal_teacher_forced_forward(config, options):
    """Over >= 2 receptive fields and many frames, the step's logits are the forward pass's."""
    decoder = make_decoder(config)
    samples = max(2 * decoder.receptive_field + 37, 120)
    # One note on two threads: they split every product's panels (wide and clock: across panels).
    batch = 1 if options.get("threads") == 2 and config in ("kernel3", "wide", "clock") else 2
    z, pitch = note_inputs(decoder, batch, samples)
    inputs = torch.rand(batch, samples, generator=torch.Generator().manual_seed(2)) * 2 - 1
    inputs[:, 0] = 0.0  # what reconstruction_loss feeds first

    with torch.inference_mode():
        expected = decoder(inputs, z, pitch)
    cached = cached_logits(decoder, inputs, z, pitch, **options)

    assert cached.shape == expected.shape == (batch, 256, samples)
    assert expected.std() > 0.01  # a degenerate (constant) network would prove nothing
    assert (cached - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("options", BACKENDS)
def test_the_pitch_clock_of_each_note_follows_its_own_pitch(options):
    """Four notes (MIDI 100 loses two harmonics to Nyquist), one thread or two splitting them."""
    decoder = make_decoder("clock")
    samples = 2 * decoder.receptive_field + 37
    z, pitch = note_inputs(decoder, 4, samples)
    inputs = torch.rand(4, samples, generator=torch.Generator().manual_seed(2)) * 2 - 1
    inputs[:, 0] = 0.0
    with torch.inference_mode():
        expected = decoder(inputs, z, pitch)
    assert (cached_logits(decoder, inputs, z, pitch, **options) - expected).abs().max().item() < 1e-4
    with torch.no_grad():  # the clock's share is not lost on the way: without it the logits move
        for layer in decoder.gated_layers:
            layer.source.weight.zero_()
    assert (cached_logits(decoder, inputs, z, pitch, **options) - expected).abs().max().item() > 0.01


@pytest.mark.parametrize("options", BACKENDS)
def test_a_clock_gain_decodes_as_a_decoder_whose_clock_maps_are_scaled(options):
    """``clock_gain`` acts on the clock's maps only: the same audio as scaling them in the model."""
    decoder = make_decoder("clock")
    z, pitch = note_inputs(decoder, 2, 300)

    def decoded(model: WaveNetDecoder, **gain: float) -> torch.Tensor:
        generator = torch.Generator().manual_seed(3)
        return generate(model, z, pitch, 300, temperature=1.0, generator=generator, **gain, **options)

    stronger = make_decoder("clock")
    with torch.no_grad():
        for layer in stronger.gated_layers:
            layer.source.weight.mul_(2.5)
    as_trained = decoded(decoder)
    assert torch.equal(decoded(decoder, clock_gain=2.5), decoded(stronger))
    assert not torch.equal(decoded(decoder, clock_gain=2.5), as_trained)
    assert torch.equal(decoded(decoder, clock_gain=1.0), as_trained)
    with pytest.raises(ValueError, match="clock_gain must be a finite number >= 0, got -1"):
        decoded(decoder, clock_gain=-1.0)
    with pytest.raises(ValueError, match="clock_gain applies to a decoder with a pitch clock"):
        decoded(make_decoder("kernel3"), clock_gain=2.0)


@pytest.mark.parametrize("options", BACKENDS)
def test_greedy_decoding_equals_naive_recomputation(options):
    """Feeding back each argmax, the engine produces exactly the naive loop's classes."""
    decoder = make_decoder("kernel2")
    z, pitch = note_inputs(decoder, 2, 120)
    expected = naive_greedy(decoder, z, pitch, 120)
    audio = generate(decoder, z, pitch, 120, temperature=0.0, **options)
    assert torch.equal(audio, mu_law_decode(expected))
    assert audio.unique().numel() > 3  # not stuck on one class


@pytest.mark.parametrize("options", BACKENDS)
def test_batch_of_notes_equals_each_note_alone(options):
    decoder = make_decoder()
    z, pitch = note_inputs(decoder, 3, 120)
    together = generate(decoder, z, pitch, 120, temperature=0.0, **options)
    for note in range(3):
        alone = generate(decoder, z[note : note + 1], pitch[note : note + 1], 120, temperature=0.0, **options)
        assert torch.equal(together[note], alone[0])
    assert not torch.equal(together[0], together[1])  # pitch and embedding matter


@pytest.mark.parametrize("options", BACKENDS)
def test_seed_decides_the_audio(options):
    decoder = make_decoder()
    z, pitch = note_inputs(decoder, 2, 150)

    def sample(seed: int) -> torch.Tensor:
        return generate(decoder, z, pitch, 150, generator=torch.Generator().manual_seed(seed), **options)

    first = sample(0)
    assert first.shape == (2, 150) and first.dtype == torch.float32
    assert first.abs().max() <= 1.0
    assert torch.equal(first, sample(0))
    assert not torch.equal(first, sample(1))


def test_native_and_torch_steppers_sample_the_same_audio():
    if not native_available:
        pytest.skip("timbre was installed without its native kernel")
    decoder = make_decoder("kernel2")
    z, pitch = note_inputs(decoder, 2, 300)
    audio = [
        generate(decoder, z, pitch, 300, generator=torch.Generator().manual_seed(5), backend=backend)
        for backend in ("torch", "native")
    ]
    assert torch.equal(audio[0], audio[1])


@pytest.mark.parametrize("options", BACKENDS)
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampled_classes_follow_the_tempered_softmax(options, temperature):
    """With the logits fixed by their bias, class frequencies match softmax(bias / temperature)."""
    decoder = make_decoder()
    probabilities = torch.zeros(256)
    probabilities[[10, 128, 200, 201]] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    with torch.no_grad():
        decoder.logits.weight.zero_()
        decoder.logits.bias.copy_(probabilities.clamp_min(1e-30).log())
    z, pitch = note_inputs(decoder, 2, 3000)
    generator = torch.Generator().manual_seed(0)
    audio = generate(decoder, z, pitch, 3000, temperature=temperature, generator=generator, **options)
    counts = torch.bincount(mu_law_encode(audio).flatten(), minlength=256).float()
    expected = torch.softmax(probabilities.clamp_min(1e-30).log() / temperature, dim=0)
    assert counts.sum() == 6000
    assert counts[expected == 0].sum() == 0
    assert torch.allclose(counts / 6000, expected, atol=0.025)  # about 4 standard deviations


def test_frames_decide_the_conditioning_and_validation():
    decoder = make_decoder()
    z, pitch = note_inputs(decoder, 1, 64)
    with pytest.raises(ValueError, match="cover 64 samples, need 65"):
        generate(decoder, z, pitch, 65)
    with pytest.raises(ValueError, match="temperature"):
        generate(decoder, z, pitch, 10, temperature=-1.0)
    assert generate(decoder, z, 60, 0).shape == (1, 0)
    # one int pitch is broadcast to every note
    z2 = z.expand(2, -1, -1)
    broadcast = generate(decoder, z2, 60, 40, temperature=0.0)
    assert torch.equal(broadcast, generate(decoder, z2, torch.tensor([60, 60]), 40, temperature=0.0))


def test_the_autoencoder_decodes_through_the_engine_and_shows_progress(capsys):
    decoder = make_decoder()
    autoencoder = Autoencoder(WaveNetEncoder(channels=8, layers=2, stages=2, hop_length=decoder.hop_length), decoder)
    z, pitch = note_inputs(decoder, 2, 100)
    audio = autoencoder.decode(z, pitch, 100, generator=torch.Generator().manual_seed(3), progress=True)
    assert "100/100" in capsys.readouterr().err
    assert torch.equal(audio, generate(decoder, z, pitch, 100, generator=torch.Generator().manual_seed(3)))
    assert not hasattr(decoder, "synthesize")  # the model owns its layout; the engine owns decoding


def test_without_the_native_kernel_the_torch_stepper_takes_over(monkeypatch):
    """An install without the compiled kernel decodes the same audio with the torch stepper."""
    monkeypatch.setattr(native, "library_path", lambda: None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_loaded", None)
    decoder = make_decoder()
    z, pitch = note_inputs(decoder, 2, 80)
    with pytest.warns(RuntimeWarning, match="installed without its compiled kernel"):
        audio = generate(decoder, z, pitch, 80, temperature=0.0)
    assert torch.equal(audio, generate(decoder, z, pitch, 80, temperature=0.0, backend="torch"))
    with pytest.raises(RuntimeError, match="native decoding kernel is unavailable"):
        generate(decoder, z, pitch, 80, backend="native")


# Largest logit change from reduced-precision weights, over the float32 logits' standard deviation
# (measured: bfloat16 0.5-0.9%, int8 0.9-1.9%), and mean KL(float32 || reduced) per step in nats
# (measured: bfloat16 < 2e-6, int8 < 5e-6). A kernel reading a scale or a weight wrongly moves the
# logits by about their whole spread.
REDUCED_PRECISION_BOUNDS = {torch.bfloat16: (0.012, 1e-5), torch.int8: (0.03, 3e-5)}
REDUCED_DTYPES = [pytest.param(dtype, id=str(dtype).removeprefix("torch.")) for dtype in REDUCED_PRECISION_BOUNDS]
# Largest difference between the native kernel and the torch stepper on the same rounded weights,
# over the largest logit: float32 rounding for bfloat16; for int8 also the 14-bit inputs of the
# kernel's one-note path (measured 8e-5). Broken packings measured 0.06-1.2.
NATIVE_TOLERANCE = {torch.bfloat16: 2e-6, torch.int8: 5e-4}


@pytest.mark.parametrize("dtype", REDUCED_DTYPES)
@pytest.mark.parametrize("options", BACKENDS)
@pytest.mark.parametrize("config", ["kernel3", "wide", "deep", "clock"])
def test_reduced_precision_weights_stay_close_to_float32(config, options, dtype):
    """bfloat16 and int8 weights move the teacher-forced logits by a percent or two of their spread."""
    decoder = make_decoder(config)
    samples = 2 * decoder.receptive_field + 37
    z, pitch = note_inputs(decoder, 2, samples)
    inputs = torch.rand(2, samples, generator=torch.Generator().manual_seed(2)) * 2 - 1
    inputs[:, 0] = 0.0
    with torch.inference_mode():
        expected = decoder(inputs, z, pitch)
    rounded = cached_logits(decoder, inputs, z, pitch, weight_dtype=dtype, **options)
    error = (rounded - expected).abs().max().item()
    relative_bound, _ = REDUCED_PRECISION_BOUNDS[dtype]
    assert 1e-5 < error < relative_bound * expected.std().item()  # rounded (not float32), yet close


@pytest.mark.parametrize("dtype", REDUCED_DTYPES)
def test_reduced_precision_error_over_a_decode_from_the_same_state(dtype):
    """weight_precision_error feeds both precisions the float32 decode: they agree within the bounds."""
    decoder = make_decoder("deep")
    z, pitch = note_inputs(decoder, 2, 300)
    relative_bound, kl_bound = REDUCED_PRECISION_BOUNDS[dtype]
    error = weight_precision_error(decoder, z, pitch, 300, dtype)
    assert 0 < error["mean_kl"] <= error["max_kl"] and error["mean_kl"] < kl_bound
    assert 0 < error["max_abs"] and error["relative"] < relative_bound


def _scales_of_the_neighbouring_column(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    weights, scales = quantize_int8(matrix)
    return weights, scales.roll(1, dims=-1)


def _halves_of_each_pair_swapped(matrix, segments, panel, weight_dtype):
    return native_packed_matrix(matrix, segments, panel, weight_dtype).view(-1, 2).flip(1).reshape(-1)


def _taps_in_reverse_order(matrix, segments, panel, weight_dtype):
    taps = matrix.reshape(segments, -1, matrix.shape[1]).flip(0).reshape(matrix.shape)
    return native_packed_matrix(taps, segments, panel, weight_dtype)


native_packed_matrix = native.packed_matrix
BROKEN_KERNELS = {
    "int8-wrong-scales": (torch.int8, "quantize_int8", _scales_of_the_neighbouring_column),
    "int8-taps-reversed": (torch.int8, "packed_matrix", _taps_in_reverse_order),
    "bfloat16-pair-halves-swapped": (torch.bfloat16, "packed_matrix", _halves_of_each_pair_swapped),
}


def native_against_torch(dtype: torch.dtype, batch: int, threads: int, clock: int = 0) -> tuple[float, float]:
    """Teacher-forced logits of the native kernel and of the torch stepper, both on ``dtype`` weights:
    their largest difference over the largest logit, and the native logits' distance from float32.
    ``clock``: the decoder's pitch clock harmonics (0 for none)."""
    torch.manual_seed(3)
    decoder = WaveNetDecoder(
        residual_channels=9,
        skip_channels=67,
        layers=4,
        stages=2,
        kernel_size=3,
        pitch_embedding_dim=4,
        hop_length=HOP,
        source_harmonics=clock,
    ).eval()
    z, pitch = (torch.randn(batch, decoder.latent_dim, 13), torch.arange(40, 40 + batch))
    inputs = torch.rand(batch, 200, generator=torch.Generator().manual_seed(2)) * 2 - 1
    logits = [
        cached_logits(decoder, inputs, z, pitch, backend=backend, threads=threads, weight_dtype=dtype)
        for backend in ("torch", "native")
    ]
    with torch.inference_mode():
        exact = decoder(inputs, z, pitch)
    difference = (logits[0] - logits[1]).abs().max().item() / logits[0].abs().max().item()
    return difference, (logits[1] - exact).abs().max().item()


@pytest.mark.skipif(not native_available, reason="timbre was installed without its native kernel")
@pytest.mark.parametrize("dtype", REDUCED_DTYPES)
@pytest.mark.parametrize("batch", [1, 5], ids=["one-note", "block-of-4-and-one"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("clock", [0, 5], ids=["no-clock", "clock"])
def test_native_reduced_precision_step_equals_the_torch_stepper_with_the_same_rounding(dtype, batch, threads, clock):
    """The native kernel's bfloat16 pairs and int8 panels (with their scales) compute the torch
    stepper's step on the same rounded matrices (the pitch clock's too): odd widths, one note and
    blocks of notes."""
    difference, from_float32 = native_against_torch(dtype, batch, threads, clock)
    assert difference < NATIVE_TOLERANCE[dtype]
    assert from_float32 > 1e-5  # the rounding did happen


@pytest.mark.skipif(not native_available, reason="timbre was installed without its native kernel")
@pytest.mark.parametrize("breakage", list(BROKEN_KERNELS))
def test_the_checks_catch_a_broken_kernel(monkeypatch, breakage):
    """Weights packed wrongly for the native kernel fail the comparison with the torch stepper by
    orders of magnitude, and where the error reaches the logits, the bounds against float32 too."""
    dtype, name, broken = BROKEN_KERNELS[breakage]
    monkeypatch.setattr(native, name, broken)
    difference, _ = native_against_torch(dtype, 1, 1)
    assert difference > 50 * NATIVE_TOLERANCE[dtype]
    if breakage != "int8-taps-reversed":  # random small decoders barely listen to their past inputs
        decoder = make_decoder("deep")
        z, pitch = note_inputs(decoder, 2, 300)
        relative_bound, kl_bound = REDUCED_PRECISION_BOUNDS[dtype]
        error = weight_precision_error(decoder, z, pitch, 300, dtype, backend="native")
        assert error["relative"] > 20 * relative_bound and error["mean_kl"] > 100 * kl_bound


def test_int8_quantization_keeps_one_scale_per_output_column():
    matrix = torch.tensor([[1.0, -0.5, 0.0], [-2.54, 0.25, 0.0]])
    weights, scales = quantize_int8(matrix)
    assert weights.dtype == torch.int8 and torch.equal(scales, torch.tensor([0.02, 0.5 / 127, 0.0]))
    assert weights.tolist() == [[50, -127, 0], [-127, 64, 0]]
    assert (weights.float() * scales - matrix).abs().max().item() <= 0.5 * scales.max().item()


def test_an_unknown_weight_dtype_is_refused():
    decoder = make_decoder()
    z, pitch = note_inputs(decoder, 2, 10)
    with pytest.raises(ValueError, match="torch.float32, torch.bfloat16 or torch.int8, not torch.float16"):
        generate(decoder, z, pitch, 10, weight_dtype=torch.float16)


class OnlyTheStepLayout:
    """A decoder seen only through what the engine may use: its step layout and conditioning."""

    def __init__(self, decoder: WaveNetDecoder) -> None:
        self.hop_length = decoder.hop_length
        self.step_weights = decoder.step_weights
        self.conditioning = decoder.conditioning


@pytest.mark.parametrize("options", BACKENDS)
def test_the_engine_reads_the_decoder_only_through_its_step_layout(options):
    decoder = make_decoder("kernel2")
    z, pitch = note_inputs(decoder, 2, 90)
    expected = generate(decoder, z, pitch, 90, generator=torch.Generator().manual_seed(4), **options)
    wrapped = generate(OnlyTheStepLayout(decoder), z, pitch, 90, generator=torch.Generator().manual_seed(4), **options)
    assert torch.equal(wrapped, expected)


def test_the_step_layout_refuses_inconsistent_shapes():
    step = make_decoder("kernel3").step_weights()
    assert step.dilations == [1, 2, 4, 1, 2, 4] and step.kernel_size == 3 and step.residual_channels == 8
    assert step.layers[-1].residual_weight is None and step.layers[0].residual_weight is not None
    with pytest.raises(ValueError, match=r"layers\[1\]\.skip_weight has shape \(8, 7\), expected \(8, 8\)"):
        dataclasses.replace(
            step, layers=(step.layers[0], dataclasses.replace(step.layers[1], skip_weight=torch.zeros(8, 7)))
        )
    one_clock = dataclasses.replace(step.layers[1], source_weight=torch.zeros(4, 16))
    with pytest.raises(ValueError, match="every layer has a source_weight or none has"):
        dataclasses.replace(step, layers=(step.layers[0], one_clock))
    clocked = make_decoder("clock").step_weights()
    assert clocked.source_harmonics == 5 and clocked.sample_rate == 16000
    with pytest.raises(ValueError, match=r"layers\[0\]\.source_weight has shape \(10, 15\), expected \(10, 16\)"):
        dataclasses.replace(
            clocked,
            layers=(dataclasses.replace(clocked.layers[0], source_weight=torch.zeros(10, 15)), *clocked.layers[1:]),
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_decoding_matches_cpu():
    decoder = make_decoder()
    z, pitch = note_inputs(decoder, 2, 200)
    cpu = generate(decoder, z, pitch, 200, temperature=0.0, backend="torch")
    decoder.cuda()
    graphed = generate(decoder, z.cuda(), pitch.cuda(), 200, temperature=0.0)
    eager = generate(decoder, z.cuda(), pitch.cuda(), 200, temperature=0.0, cuda_graph=False)
    assert torch.equal(graphed.cpu(), eager.cpu())
    assert (graphed.cpu() == cpu).float().mean() > 0.9  # GPU rounding may flip a rare near-tie
    logits = cached_logits(decoder, torch.zeros(2, 200, device="cuda"), z.cuda(), pitch.cuda())
    with torch.inference_mode():
        expected = decoder(torch.zeros(2, 200, device="cuda"), z.cuda(), pitch.cuda())
    assert (logits - expected).abs().max().item() < 1e-3  # TF32 may be on


def test_synthesize_takes_the_weight_format_by_name():
    """timbre.load(...).synthesize(..., weights=...) decodes the wavenet model with reduced-precision weights."""
    model = timbre.load("wavenet")
    time = torch.arange(4096) / model.sample_rate
    embedding = model.encode(0.5 * torch.sin(2 * math.pi * 261.63 * time).numpy())
    audio = {weights: model.synthesize(embedding, weights=weights) for weights in ("float32", "bfloat16", "int8")}
    assert all(a.shape == (4096,) and np.isfinite(a).all() and np.abs(a).max() > 0 for a in audio.values())
    assert not np.array_equal(audio["float32"], audio["int8"])  # other weights, another sampled decode
    with pytest.raises(ConfigError, match="weights must be one of 'float32', 'bfloat16', 'int8', got 'float16'"):
        model.synthesize(embedding, weights="float16")
    with pytest.raises(InvalidTypeError, match="weights must be a name"):
        model.synthesize(embedding, weights=torch.int8)
    with pytest.raises(ConfigError, match="apply to autoregressive"):
        timbre.load("default").synthesize(embedding.tensor, weights="int8")
