"""The composer's native one-token step (composer_step.c): the torch step's logits and cache, where
it applies; the torch step elsewhere."""

from __future__ import annotations

import pytest
import torch

from timbre.generation import composer_native
from timbre.generation.composer_native import NativeComposerStep, native_step_for
from timbre.models.composer import CachedStep, Composer, int8_sampling_available, with_sampling_weights

pytestmark = pytest.mark.skipif(
    composer_native.load_step_function() is None, reason="timbre was installed without its native kernel"
)


def tiny_model(**overrides: object) -> Composer:
    torch.manual_seed(0)
    settings = dict(vocab_size=50, dim=32, layers=2, heads=4, ff_mult=2, dropout=0.0, max_context=16)
    settings.update(overrides)
    model = Composer(**settings).eval()
    with torch.no_grad():  # non-zero biases and norms, so that the kernel's use of each is checked
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


# Head dims 8 and 20, widths 32 and 40: the kernel's 16-lane loops and their leftover loops both run.
@pytest.mark.parametrize("batch,sizes", [(1, {}), (3, {}), (2, dict(dim=40, heads=2, ff_mult=3))])
def test_native_step_gives_the_torch_steps_logits_and_cache_past_the_ring_wrap(batch: int, sizes: dict) -> None:
    model = tiny_model(**sizes)
    tokens = torch.randint(50, (batch, 40))
    with torch.inference_mode():
        reference, native = model.new_cache(batch), model.new_cache(batch)
        model(tokens[:, :5], reference)
        model(tokens[:, :5], native)
        torch_step, native_step = CachedStep(model), native_step_for(model, native)
        assert isinstance(native_step, NativeComposerStep)
        for i in range(5, 40):  # the 16-slot ring wraps after 16 tokens
            expected = torch_step(tokens[:, i], reference)
            assert torch.allclose(native_step(tokens[:, i], native), expected, atol=2e-5, rtol=1e-5), f"token {i}"
    assert native.length == reference.length == 40
    for got, expected in zip([*native.keys, *native.values], [*reference.keys, *reference.values]):
        assert torch.allclose(got, expected, atol=1e-5)


def test_generate_uses_the_native_step_and_samples_what_the_torch_step_samples() -> None:
    model = tiny_model(max_context=64)
    prompt = torch.randint(50, (2, 4))
    original, chosen = composer_native.native_step_for, []

    def recording(model, cache):
        chosen.append(original(model, cache))
        return chosen[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(composer_native, "native_step_for", recording)
        native = model.generate(prompt, 30, temperature=0.0)
        patch.setattr(composer_native, "native_step_for", lambda model, cache: None)  # the torch step only
        in_torch = model.generate(prompt, 30, temperature=0.0)
    assert len(chosen) == 1 and isinstance(chosen[0], NativeComposerStep)
    assert torch.equal(native, in_torch)


def test_the_native_step_applies_to_float32_eval_models_only() -> None:
    model = tiny_model()
    assert native_step_for(model, model.new_cache(1)) is not None
    assert native_step_for(tiny_model().train(), model.new_cache(1)) is None
    assert native_step_for(tiny_model().double(), tiny_model().double().new_cache(1)) is None
    if int8_sampling_available():
        quantized = with_sampling_weights(model, "int8")
        assert native_step_for(quantized, quantized.new_cache(1)) is None
    # Caches it cannot write: another model's shape, not contiguous, not float32.
    assert native_step_for(model, tiny_model(heads=2).new_cache(1)) is None
    assert native_step_for(model, tiny_model(layers=3).new_cache(1)) is None
    strided = model.new_cache(1)
    strided.keys[0] = torch.zeros(1, 4, 8, 16).transpose(2, 3)  # [1, 4, 16, 8], strided
    assert native_step_for(model, strided) is None
    double = model.new_cache(1)
    double.values[1] = double.values[1].double()
    assert native_step_for(model, double) is None
    unbiased = tiny_model()
    unbiased.norm = torch.nn.LayerNorm(32, bias=False)
    assert native_step_for(unbiased, unbiased.new_cache(1)) is None


def test_a_token_out_of_the_vocabulary_is_refused_by_the_kernel() -> None:
    model = tiny_model()
    cache = model.new_cache(1)
    with torch.inference_mode():
        model(torch.tensor([[1, 2]]), cache)
        step = native_step_for(model, cache)
        assert step is not None
        with pytest.raises(RuntimeError, match="sizes or tokens out of range"):
            step(torch.tensor([50]), cache)
        with pytest.raises(ValueError, match=r"one token per sequence of the cache \(1\), not \(2,\)"):
            step(torch.tensor([3, 4]), cache)
        with pytest.raises(ValueError, match="the cache it was built for"):
            step(torch.tensor([3]), model.new_cache(1))
    assert cache.length == 2  # nothing advanced
