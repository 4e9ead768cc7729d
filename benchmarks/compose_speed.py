"""Composer generation speed: KV-cached decoding against recomputing the whole prefix per token.

Usage: python benchmarks/compose_speed.py [--tokens 1024] [--threads 1] [--model PATH] [--pieces 20]
    [--style-guidance 2]

Every greedy row decodes from the model's opening tokens with the same weights. The float32 torch
rows must produce the same tokens (checked): recomputing the prefix, the cache stepped through the
model's modules (version 1's step), and the cache stepped by the torch ``CachedStep``. The native
C step (``composer_step.c``, what ``generate`` uses where it was built) sums in another order, so
its tokens are reported, not required, to agree. The int8 row steps int8 weights in torch
(``--weights int8``); the last rows time what ``timbre compose`` does (cached float32 sampling
under the grammar masks), for a many-style composer also with ``--style-guidance`` (two sequences
stepped a token: the style's and the "any" style's) and at the model's own context, where the ring
buffer drops the conditions or ``timbre compose`` refills the cache to keep them. For a many-style
composer the held-out bits per token of float32 and int8 weights follow, on the first ``--pieces``
test pieces, each token scored through the ring buffer (the corpus is converted first if not cached).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from timbre.generation.composer_native import native_step_for
from timbre.models.composer import CachedStep, Composer, KVCache, with_sampling_weights
from timbre.symbolic.compose import CompositionControl, LoadedComposer, load_composer
from timbre.symbolic.tokens import TokenGrammar


@torch.inference_mode()
def recompute_generate(model: Composer, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding without a cache: a full forward pass over the prefix for every token."""
    tokens = prompt
    for _ in range(new_tokens):
        next_token = model(tokens)[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, next_token], dim=1)
    return tokens


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024, help="tokens to generate (default: 1024)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument(
        "--model", help="composer checkpoint or bundled name (default: the bundled default, composer-styles)"
    )
    parser.add_argument("--pieces", type=int, default=20, help="held-out pieces for bits per token (default: 20)")
    parser.add_argument(
        "--style-guidance", type=float, default=2.0, help="guidance scale of the guided row (default: 2)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    composer = load_composer(args.model, weights="float32")
    trained = composer.model
    # BOS, and for a many-style model the "any" style and voice-count tokens after it.
    head = composer.head()
    settings = dict(
        vocab_size=trained.vocab_size,
        dim=trained.embedding.embedding_dim,
        layers=len(trained.blocks),
        heads=trained.heads,
        ff_mult=trained.blocks[0].feed_forward_in.out_features // trained.embedding.embedding_dim,
        dropout=0.0,
        # The opening tokens and every new one (the sampled row's 8 to finish a note too) fit in the
        # cache: no ring wrap-around, so that the cached rows must equal recomputing the prefix.
        max_context=len(head) + args.tokens + 8,
        pad_id=trained.pad_id,
    )
    model = Composer(**settings).eval()
    model.load_state_dict(trained.state_dict())
    prompt = torch.tensor([head])
    parameters = sum(p.numel() for p in model.parameters())

    quantized = with_sampling_weights(model, "int8")

    def through_modules(model: Composer, cache: KVCache):
        return lambda token, cache: model(token[:, None], cache)[:, -1]

    def torch_step(model: Composer, cache: KVCache):
        return CachedStep(model)

    def native_step(model: Composer, cache: KVCache):
        return native_step_for(model, cache)

    native = native_step_for(model, model.new_cache(1)) is not None
    for step in (through_modules, torch_step, native_step):  # warm-up
        if step is not native_step or native:
            stepped_generate(model, prompt, 16, step)
    recompute_seconds, recomputed = timed(recompute_generate, model, prompt, args.tokens)
    greedy = {"module": through_modules, "torch": torch_step}
    if native:
        greedy["native"] = native_step
    seconds, outputs = {}, {}
    for name, step in greedy.items():
        seconds[name], outputs[name] = timed(stepped_generate, model, prompt, args.tokens, step)
    int8_seconds, _ = timed(stepped_generate, quantized, prompt, args.tokens, torch_step)
    identical = torch.equal(outputs["module"], recomputed) and torch.equal(outputs["torch"], recomputed)
    native_agrees = native and torch.equal(outputs["native"], recomputed)

    grammar = TokenGrammar(composer.tokenizer, composer.voice_programs(None, None) or None, composer.conditions)
    control = CompositionControl(grammar, [head], bars=None, tokens=args.tokens, finish_after=args.tokens)
    generator = torch.Generator().manual_seed(0)
    sampled_seconds, sampled = timed(
        model.generate, prompt, args.tokens + 8, temperature=1.0, generator=generator, control=control
    )
    sampled_tokens = sampled.shape[1] - len(head)
    guided_row = guided_compose(model, composer, args.tokens, args.style_guidance) if composer.conditions else None
    own_context_rows = own_context_compose(composer, args.tokens) if composer.conditions else []

    print(
        f"composer: {parameters:,} weights ({settings['layers']} layers, dim {settings['dim']}), "
        f"{args.tokens} tokens after {len(head)} opening token(s), torch threads {args.threads}, "
        f"native step {'built' if native else 'NOT built: torch steps only'}"
    )
    print()
    print("| method | weights | tokens | seconds | tokens/s | vs recompute | vs module step |")
    print("|---|---|---|---|---|---|---|")
    rows = [
        ("recompute prefix every token (greedy)", "float32", args.tokens, recompute_seconds),
        ("KV cache, step through the modules (greedy)", "float32", args.tokens, seconds["module"]),
        ("KV cache, CachedStep in torch (greedy)", "float32", args.tokens, seconds["torch"]),
        ("KV cache, CachedStep in torch (greedy)", "int8", args.tokens, int8_seconds),
    ]
    if native:
        rows.append(("KV cache, native C step (greedy)", "float32", args.tokens, seconds["native"]))
    rows.append(("KV cache + grammar masks + sampling (timbre compose)", "float32", sampled_tokens, sampled_seconds))
    if guided_row is not None:
        rows.append(guided_row)
    rows += own_context_rows
    for method, weights, tokens, took in rows:
        print(
            f"| {method} | {weights} | {tokens} | {took:.2f} | {tokens / took:.0f} | "
            f"{recompute_seconds * tokens / args.tokens / took:.1f}x | "
            f"{seconds['module'] * tokens / args.tokens / took:.2f}x |"
        )
    print()
    print(f"float32 greedy tokens identical across recompute, module step and torch CachedStep: {identical}")
    if native:
        print(f"native step's greedy tokens identical too (its sums round differently): {native_agrees}")
    if composer.conditions is not None and args.pieces:
        print_held_out_bits(composer, args.pieces)


def guided_compose(
    model: Composer, composer: LoadedComposer, tokens: int, guidance: float
) -> tuple[str, str, int, float]:
    """A table row: sampling the composer's first style under its grammar with style guidance."""
    style = composer.conditions.styles[0]  # type: ignore[union-attr]
    styled, free = composer.head(style), composer.head("any")
    grammar = TokenGrammar(composer.tokenizer, composer.voice_programs(style), composer.conditions)
    control = CompositionControl(grammar, [styled], bars=None, tokens=tokens, finish_after=tokens)
    seconds, sampled = timed(
        model.generate, torch.tensor([styled]), tokens + 8, temperature=1.0, generator=torch.Generator().manual_seed(0),
        control=control, unconditional=torch.tensor([free]), guidance=guidance,
    )  # fmt: skip
    method = f"... with style guidance {guidance:g} ({style}; timbre compose --style-guidance)"
    return method, "float32", sampled.shape[1] - len(styled), seconds


def own_context_compose(composer: LoadedComposer, tokens: int) -> list[tuple[str, str, int, float]]:
    """Table rows: sampling the first style at the model's own context, past which the ring
    overwrites the oldest tokens, and with its conditions kept in view (what ``timbre compose``
    does: the cache refilled from a bar line each time it is full)."""
    model, style = composer.model, composer.conditions.styles[0]  # type: ignore[union-attr]
    styled = composer.head(style)
    bar = composer.tokenizer.vocab["Bar_None"]
    rows = []
    for conditions, method in ((0, "ring buffer"), (len(styled), "conditions kept, refilled at bar lines")):
        grammar = TokenGrammar(composer.tokenizer, composer.voice_programs(style), composer.conditions)
        control = CompositionControl(grammar, [styled], bars=None, tokens=tokens, finish_after=tokens)
        seconds, sampled = timed(
            model.generate, torch.tensor([styled]), tokens + 8, temperature=1.0,
            generator=torch.Generator().manual_seed(0), control=control, conditions=conditions, bar_token=bar,
        )  # fmt: skip
        rows.append((f"... at its own {model.max_context}-token context, {method} ({style})", "float32",
                     sampled.shape[1] - len(styled), seconds))  # fmt: skip
    return rows


@torch.inference_mode()
def stepped_generate(model: Composer, prompt: torch.Tensor, new_tokens: int, make_step) -> torch.Tensor:
    """Greedy decoding with the KV cache, each token's step by ``make_step(model, cache)``."""
    cache = model.new_cache(prompt.shape[0])
    logits = model(prompt, cache)[:, -1]
    step = make_step(model, cache)
    tokens = [prompt]
    for _ in range(new_tokens):
        next_token = logits.argmax(-1)
        tokens.append(next_token[:, None])
        logits = step(next_token, cache)
    return torch.cat(tokens, dim=1)


@torch.inference_mode()
def stepped_bits(model: Composer, sequences: list[list[int]], skip: int) -> float:
    """Mean -log2 P of every token from index ``skip`` on, each scored through the model's own
    context as a ring buffer, one ``CachedStep`` at a time, batch 1."""
    bits, count = 0.0, 0
    for sequence in sequences:
        cache = model.new_cache(1)
        step = CachedStep(model)
        logits = model(torch.tensor([sequence[:skip]]), cache)[:, -1]
        for token in sequence[skip:]:
            bits -= float(torch.log_softmax(logits[0], -1)[token]) / math.log(2)
            count += 1
            logits = step(torch.tensor([token]), cache)
    return bits / count


def print_held_out_bits(composer: LoadedComposer, pieces: int) -> None:
    """Bits per token of float32 and int8 weights on the first ``pieces`` held-out pieces."""
    from timbre.evaluation.style_judge import conditioned_sequence, style_splits_of
    from timbre.symbolic.tokens import special_token_id

    assert composer.conditions is not None, "a many-style composer"
    test = style_splits_of(composer).test[:pieces]
    bos, eos = special_token_id(composer.tokenizer, "BOS"), special_token_id(composer.tokenizer, "EOS")
    sequences = [conditioned_sequence(piece, composer.conditions, bos, eos).tolist() for piece in test]
    head = len(composer.head())
    full = stepped_bits(composer.model, sequences, head)
    reduced = stepped_bits(with_sampling_weights(composer.model, "int8"), sequences, head)
    tokens = sum(len(sequence) - head for sequence in sequences)
    print(
        f"held-out bits per token as sampled (the model's {composer.model.max_context}-token context, one step "
        f"at a time), {len(test)} test pieces ({tokens:,} tokens): float32 {full:.4f}, int8 {reduced:.4f} "
        f"({(reduced / full - 1) * 100:+.2f}%)"
    )


if __name__ == "__main__":
    main()
