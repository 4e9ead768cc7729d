"""The composer transformer: KV cache equals the full pass (and, past the context, the sliding
window), causality, sampling, and training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import timbre.models.composer as composer_module
from timbre.data.midi import build_midi_bundle
from timbre.errors import ConfigError
from timbre.models.composer import CachedStep, Composer, int8_sampling_available, sample_next, with_sampling_weights


def tiny_model(**overrides: object) -> Composer:
    torch.manual_seed(0)
    settings = dict(vocab_size=50, dim=32, layers=2, heads=4, ff_mult=2, dropout=0.0, max_context=64)
    settings.update(overrides)
    return Composer(**settings).eval()


def test_cached_generation_gives_the_logits_of_the_uncached_pass() -> None:
    model = tiny_model()
    tokens = torch.randint(50, (3, 64))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(3)
        prefix = model(tokens[:, :20], cache)  # a primer in one block
        steps = [model(tokens[:, i : i + 1], cache) for i in range(20, 64)]  # then one token at a time
    cached = torch.cat([prefix, *steps], dim=1)
    assert (cached - full).abs().max() < 1e-4
    assert cache.length == 64


def test_generate_matches_step_by_step_argmax_of_the_full_pass() -> None:
    model = tiny_model()
    prompt = torch.randint(50, (2, 5))
    generated = model.generate(prompt, 20, temperature=0.0)
    with torch.no_grad():
        logits = model(generated[:, :-1])
    assert torch.equal(logits[:, 4:].argmax(-1), generated[:, 5:])


def test_guided_generation_takes_the_argmax_of_the_guided_logits_of_the_full_pass() -> None:
    model = tiny_model()
    torch.manual_seed(0)
    prompt, unconditional = torch.randint(50, (2, 5)), torch.randint(50, (2, 5))
    scale = 8.0  # the untrained model repeats itself; a smaller scale changes no greedy token
    generated = model.generate(prompt, 20, temperature=0.0, unconditional=unconditional, guidance=scale)
    new = generated[:, 5:]
    with torch.no_grad():
        conditional = model(generated[:, :-1])[:, 4:]
        free = model(torch.cat([unconditional, new[:, :-1]], dim=1))[:, 4:]
    guided = free + scale * (conditional - free)
    assert torch.equal(guided.argmax(-1), new)
    # Here guidance changes the samples: the test would catch a generate that ignores it.
    assert not torch.equal(model.generate(prompt, 20, temperature=0.0), generated)


def test_guidance_towards_the_prompt_itself_or_at_scale_one_is_plain_sampling() -> None:
    model = tiny_model()
    prompt = torch.randint(50, (3, 4))
    plain = model.generate(prompt, 30, generator=torch.Generator().manual_seed(3))
    for unconditional, scale in ((prompt, 4.0), (torch.randint(50, (3, 4)), 1.0)):
        guided = model.generate(
            prompt, 30, generator=torch.Generator().manual_seed(3), unconditional=unconditional, guidance=scale
        )
        assert torch.equal(plain, guided)
    with pytest.raises(ValueError, match="not shaped as prompt"):
        model.generate(prompt, 2, unconditional=prompt[:2], guidance=2.0)


needs_int8 = pytest.mark.skipif(not int8_sampling_available(), reason="PyTorch has no fbgemm int8 engine here")


@pytest.mark.parametrize("weights", ["float32", pytest.param("int8", marks=needs_int8)])
def test_cached_step_computes_what_the_model_computes_past_the_ring_wrap(weights: str) -> None:
    model = with_sampling_weights(tiny_model(max_context=16), weights)
    tokens = torch.randint(50, (2, 40))
    with torch.inference_mode():
        through_modules, stepped = model.new_cache(2), model.new_cache(2)
        model(tokens[:, :5], through_modules)
        model(tokens[:, :5], stepped)
        step = CachedStep(model)
        for i in range(5, 40):  # past 16 tokens the ring buffer overwrites its oldest slots
            expected = model(tokens[:, i : i + 1], through_modules)[:, -1]
            assert torch.equal(step(tokens[:, i], stepped), expected), f"token {i}"
    assert stepped.length == through_modules.length == 40
    for kept, expected in ((stepped.keys, through_modules.keys), (stepped.values, through_modules.values)):
        assert all(torch.equal(a, b) for a, b in zip(kept, expected))


def test_cached_step_refuses_a_model_in_training_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        CachedStep(tiny_model().train())


@needs_int8
def test_int8_sampling_weights_keep_the_next_token_distribution() -> None:
    model = tiny_model(dim=64)
    with torch.no_grad():  # logits with a real spread, as a trained model's (random ones are near uniform)
        model.embedding.weight.mul_(30)
    quantized = with_sampling_weights(model, "int8")
    linears = [m for m in quantized.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(linears) == 4 * 2 + 1  # every block's four products and the output head
    assert isinstance(model.head, nn.Linear) and with_sampling_weights(model, "float32") is model  # unchanged
    tokens = torch.randint(50, (4, 48))
    with torch.inference_mode():
        exact, reduced = F.log_softmax(model(tokens), -1), F.log_softmax(quantized(tokens), -1)
    uniform = torch.full_like(exact, -math.log(50))
    spread = (exact.exp() * (exact - uniform)).sum(-1).mean()  # how far from uniform the model is
    kl = (exact.exp() * (exact - reduced)).sum(-1).mean()
    assert spread > 0.5 and 0 < kl < 0.01 * spread  # changed (int8), but the distribution is kept
    with pytest.raises(ConfigError, match="not 'int4'"):
        with_sampling_weights(model, "int4")


def sliding_window_logits(model: Composer, tokens: torch.Tensor, window: int) -> torch.Tensor:
    """Logits of an uncached pass in which every position, in every layer, attends only to itself
    and the ``window - 1`` positions before it: what a ring buffer of ``window`` slots computes.

    The model's causal attention gets a banded mask instead of ``is_causal``; nothing else changes.
    """
    attention = F.scaled_dot_product_attention
    positions = torch.arange(tokens.shape[1])
    band = (positions[None, :] <= positions[:, None]) & (positions[None, :] > positions[:, None] - window)

    def banded(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
        assert is_causal and attn_mask is None, "expected the uncached pass's causal attention"
        return attention(query, key, value, attn_mask=band, dropout_p=dropout_p, **kwargs)

    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(F, "scaled_dot_product_attention", banded)
        return model(tokens)


def test_one_layer_ring_buffer_equals_recomputing_the_last_window_at_every_step() -> None:
    # With one layer a cached key depends on its token and position only, and rotary scores on
    # distances only, so past the window each step must equal a fresh pass over the last
    # max_context tokens (started at position 0).
    window = 16
    model = tiny_model(max_context=window, layers=1)
    tokens = torch.randint(50, (2, 3 * window + 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cache = model.new_cache(2)
        model(tokens[:, :10], cache)  # a primer shorter than the window
        for end in range(11, tokens.shape[1] + 1):
            cached = model(tokens[:, end - 1 : end], cache)[:, -1]
            recomputed = model(tokens[:, max(0, end - window) : end])[:, -1]
            assert (cached - recomputed).abs().max() < 1e-4, f"step {end}: the cache differs from the window"
    assert cache.length == tokens.shape[1]


def test_ring_buffer_equals_sliding_window_attention_in_every_layer() -> None:
    # Deeper layers cache states that saw their own earlier window, so the reference is a full
    # pass with banded attention, not a recomputation of the last window alone.
    window = 12
    model = tiny_model(max_context=window, layers=3)
    tokens = torch.randint(50, (2, 4 * window + 3), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cache = model.new_cache(2)
        prefix = model(tokens[:, :7], cache)
        steps = [model(tokens[:, i : i + 1], cache) for i in range(7, tokens.shape[1])]
    cached = torch.cat([prefix, *steps], dim=1)
    reference = sliding_window_logits(model, tokens, window)
    assert (cached - reference).abs().max() < 1e-4
    # The band matters once the window is full: the plain causal pass differs from there on.
    with torch.no_grad():
        causal = model(tokens)
    assert (cached[:, :window] - causal[:, :window]).abs().max() < 1e-4
    assert (cached[:, window:] - causal[:, window:]).abs().amax(dim=-1).min() > 1e-3


@pytest.fixture
def sampled_logits(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """The logits ``[batch, vocab]`` that each step of ``Composer.generate`` samples from, in order."""
    seen: list[torch.Tensor] = []

    def recording_sample_next(logits: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        seen.append(logits.clone())
        return sample_next(logits, *args, **kwargs)

    monkeypatch.setattr(composer_module, "sample_next", recording_sample_next)
    return seen


def test_generate_samples_from_the_sliding_window_logits(sampled_logits: list[torch.Tensor]) -> None:
    window = 16
    model = tiny_model(max_context=window)
    prompt = torch.randint(50, (2, 10), generator=torch.Generator().manual_seed(3))
    generated = model.generate(prompt, 3 * window, generator=torch.Generator().manual_seed(5))
    assert generated.shape == (2, 10 + 3 * window) and len(sampled_logits) == 3 * window
    reference = sliding_window_logits(model, generated[:, :-1], window)[:, 9:]
    assert (torch.stack(sampled_logits, dim=1) - reference).abs().max() < 1e-4


def test_a_prompt_longer_than_the_context_is_cut_to_its_last_window(sampled_logits: list[torch.Tensor]) -> None:
    window = 16
    model = tiny_model(max_context=window)
    prompt = torch.randint(50, (1, 40), generator=torch.Generator().manual_seed(4))
    generated = model.generate(prompt, 8, generator=torch.Generator().manual_seed(6))
    assert torch.equal(generated[:, :40], prompt)
    with torch.no_grad():
        expected = model(prompt[:, -window:])[:, -1]  # the first token's logits: the last window only
    assert (sampled_logits[0] - expected).abs().max() < 1e-4
    reference = sliding_window_logits(model, generated[:, 40 - window : -1], window)[:, window - 1 :]
    assert (torch.stack(sampled_logits, dim=1) - reference).abs().max() < 1e-4


class ScriptedTokens:
    """A generation control that allows one token at each step: row ``b``'s next scripted token."""

    def __init__(self, script: torch.Tensor) -> None:
        self.script, self.step = script, 0

    def allowed(self) -> torch.Tensor:
        return F.one_hot(self.script[:, self.step], 50).bool()

    def update(self, tokens: torch.Tensor) -> None:
        assert torch.equal(tokens, self.script[:, self.step])
        self.step += 1

    def finished(self) -> bool:
        return self.step == self.script.shape[1]


BAR = 7


def scripted_rows(length: int, bar_every: tuple[int, ...], seed: int) -> torch.Tensor:
    """LongTensor ``[len(bar_every), length]``: tokens other than BAR, with BAR every few tokens
    (a different bar length in each row, so that their bar lines fall apart)."""
    rows = torch.randint(8, 50, (len(bar_every), length), generator=torch.Generator().manual_seed(seed))
    for row, every in enumerate(bar_every):
        rows[row, ::every] = BAR
    return rows


STEPS = {
    "native": None,  # generate's own choice: the C step where it was built
    "torch": lambda model, cache: CachedStep(model),
    "module": lambda model, cache: lambda token, cache: model(token[:, None], cache)[:, -1],
}


@pytest.mark.parametrize("step", STEPS)
def test_conditions_stay_in_view_with_the_latest_bars_past_the_context(
    step: str, sampled_logits: list[torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every sampled token must see exactly: the row's three condition tokens, then the row's
    # latest tokens from one of its bar lines on, within the context; no padding, no other row.
    if STEPS[step] is not None:
        monkeypatch.setattr("timbre.generation.composer_native.native_step_for", STEPS[step])
    window, conditions = 16, 3
    model = tiny_model(max_context=window)
    head = torch.tensor([[1, 2, 3], [1, 4, 5]])
    primer = scripted_rows(30, (5, 3), seed=7)  # already past the context
    script = scripted_rows(50, (4, 6), seed=8)
    prompt = torch.cat([head, primer], dim=1)
    generated = model.generate(
        prompt, script.shape[1], control=ScriptedTokens(script), conditions=conditions, bar_token=BAR
    )
    assert torch.equal(generated, torch.cat([prompt, script], dim=1)) and len(sampled_logits) == script.shape[1]
    starts_seen = [set(), set()]
    for step, logits in enumerate(sampled_logits):
        for row in range(2):
            body = generated[row, conditions : prompt.shape[1] + step]
            candidates = [start for start in range(len(body)) if body[start] == BAR and len(body) - start <= window - 3]
            with torch.no_grad():
                matches = [
                    start for start in candidates
                    if (model(torch.cat([head[row], body[start:]])[None])[0, -1] - logits[row]).abs().max() < 1e-4
                ]  # fmt: skip
            assert len(matches) == 1, f"step {step}, row {row}: no context of conditions and latest bars matches"
            starts_seen[row].add(matches[0] + conditions)
    # The context moved on several times, at each row's own bar lines.
    assert min(len(starts) for starts in starts_seen) >= 3 and starts_seen[0] != starts_seen[1]


def test_without_conditions_a_long_generation_slides_past_them(sampled_logits: list[torch.Tensor]) -> None:
    window = 16
    model = tiny_model(max_context=window)
    prompt = torch.randint(50, (1, 10), generator=torch.Generator().manual_seed(9))
    generated = model.generate(prompt, 2 * window, generator=torch.Generator().manual_seed(2), bar_token=BAR)
    reference = sliding_window_logits(model, generated[:, :-1], window)[:, 9:]
    assert (torch.stack(sampled_logits, dim=1) - reference).abs().max() < 1e-4


def test_later_tokens_do_not_change_earlier_logits() -> None:
    model = tiny_model()
    tokens = torch.randint(50, (1, 30))
    changed = tokens.clone()
    changed[0, 20:] = (changed[0, 20:] + 1) % 50
    with torch.no_grad():
        assert torch.allclose(model(tokens)[:, :20], model(changed)[:, :20], atol=1e-6)


def test_sampling_options() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(500, 1)
    generator = torch.Generator().manual_seed(0)
    assert (sample_next(logits, temperature=0.0) == 1).all()
    assert (sample_next(logits, top_k=1, generator=generator) == 1).all()
    assert (sample_next(logits, top_p=0.01, generator=generator) == 1).all()
    assert set(sample_next(logits, top_k=2, generator=generator).tolist()) == {1, 3}
    # top-p 0.9 keeps 1 (0.64), 3 (0.24) and 2 (0.09): together 0.97 >= 0.9; never token 0.
    assert set(sample_next(logits, top_p=0.9, generator=generator).tolist()) == {1, 2, 3}
    allowed = torch.tensor([[True, False, True, False]]).repeat(500, 1)
    assert set(sample_next(logits, allowed=allowed, generator=generator).tolist()) == {0, 2}
    counts = torch.bincount(sample_next(logits.repeat(20, 1), generator=generator), minlength=4) / 10000
    assert torch.allclose(counts, logits[0].softmax(-1), atol=0.02)  # samples follow the softmax
    first = sample_next(logits, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, sample_next(logits, generator=torch.Generator().manual_seed(7)))


def test_padding_does_not_change_the_loss() -> None:
    model = tiny_model()
    tokens = torch.randint(1, 50, (1, 12))
    padded = torch.cat([tokens, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    mask = torch.zeros_like(padded, dtype=torch.bool)
    mask[:, :12] = True
    loss, metrics = model.training_loss({"tokens": tokens})
    padded_loss, _ = model.training_loss({"tokens": padded, "mask": mask})
    assert torch.allclose(loss, padded_loss, atol=1e-6)
    assert metrics["bits_per_token"] == pytest.approx(loss.item() / 0.6931471805599453)


def test_a_tiny_training_run_lowers_the_loss(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = build_midi_bundle(
        corpus="chorales", cache_dir=str(tmp_path), limit=4, velocities=0, max_tokens=128, valid=0.0, test=0.0
    )
    model = Composer(
        data.model_overrides["vocab_size"], dim=48, layers=2, heads=4, ff_mult=2, dropout=0.0, max_context=128
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = data.collate_fn([data.train[i] for i in range(len(data.train))])
    losses = []
    for _ in range(40):
        loss, _ = model.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_rotary_angles_past_the_table_match_the_table() -> None:
    model = tiny_model()
    from_table = model.rotary(4000, 96, torch.float32)  # the precomputed 4,096 positions
    computed = model.rotary(4000, 200, torch.float32)  # runs past them: computed on the fly
    assert torch.allclose(from_table[0], computed[0][:96], atol=1e-6)
    assert torch.allclose(from_table[1], computed[1][:96], atol=1e-6)
