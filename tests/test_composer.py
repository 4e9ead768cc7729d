"""The composer transformer: KV cache equals the full pass, causality, sampling, and training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from timbre.data.midi import build_datasets
from timbre.models.composer import Composer, sample_next


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


def test_generation_continues_past_the_context_with_a_ring_buffer() -> None:
    model = tiny_model(max_context=16)
    generated = model.generate(torch.zeros(1, 30, dtype=torch.long), 40, generator=torch.Generator().manual_seed(0))
    assert generated.shape == (1, 70)
    assert ((generated >= 0) & (generated < 50)).all()


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
    data = build_datasets(corpus="chorales", cache_dir=str(tmp_path), limit=4, velocities=0, max_tokens=128, valid=0.0, test=0.0)
    model = Composer(data.model_overrides["vocab_size"], dim=48, layers=2, heads=4, ff_mult=2, dropout=0.0, max_context=128)
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
