"""Composer generation speed: KV-cached decoding against recomputing the whole prefix per token.

Usage: python benchmarks/compose_speed.py [--tokens 1024] [--threads 1] [--model PATH]

Both methods decode greedily from BOS with the same weights, so they must produce the same
tokens (checked). The cached method runs with a cache that holds all ``--tokens`` tokens; the
recomputing one runs the full causal forward over the prefix at every step. A third row times
what ``timbre compose`` does: cached sampling under the grammar masks.
"""

from __future__ import annotations

import argparse
import time

import torch

from timbre.models.composer import Composer
from timbre.symbolic.compose import CompositionControl, load_composer
from timbre.symbolic.tokens import TokenGrammar, special_token_id


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
    parser.add_argument("--model", help="composer checkpoint (default: the bundled chorale model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    composer = load_composer(args.model)
    trained = composer.model
    settings = dict(
        vocab_size=trained.vocab_size,
        dim=trained.embedding.embedding_dim,
        layers=len(trained.blocks),
        heads=trained.heads,
        ff_mult=trained.blocks[0].feed_forward_in.out_features // trained.embedding.embedding_dim,
        dropout=0.0,
        max_context=args.tokens + 1,  # the whole generation fits in the cache: no ring wrap-around
        pad_id=trained.pad_id,
    )
    model = Composer(**settings).eval()
    model.load_state_dict(trained.state_dict())
    bos = special_token_id(composer.tokenizer, "BOS")
    prompt = torch.tensor([[bos]])
    parameters = sum(p.numel() for p in model.parameters())

    model.generate(prompt, 16, temperature=0.0)  # warm-up
    cached_seconds, cached = timed(model.generate, prompt, args.tokens, temperature=0.0)
    recompute_seconds, recomputed = timed(recompute_generate, model, prompt, args.tokens)
    identical = torch.equal(cached, recomputed)

    grammar = TokenGrammar(composer.tokenizer, composer.programs or None)
    control = CompositionControl(grammar, [[bos]], bars=None, tokens=args.tokens, finish_after=args.tokens)
    generator = torch.Generator().manual_seed(0)
    sampled_seconds, sampled = timed(model.generate, prompt, args.tokens + 8, 1.0, None, None, generator, control)
    sampled_tokens = sampled.shape[1] - 1

    print(
        f"composer: {parameters:,} weights ({settings['layers']} layers, dim {settings['dim']}), "
        f"{args.tokens} tokens from BOS, torch threads {args.threads}"
    )
    print()
    print("| method | tokens | seconds | tokens/s | speed-up |")
    print("|---|---|---|---|---|")
    print(
        f"| recompute prefix every token (greedy) | {args.tokens} | {recompute_seconds:.2f} | "
        f"{args.tokens / recompute_seconds:.0f} | 1.0x |"
    )
    print(
        f"| KV cache (greedy) | {args.tokens} | {cached_seconds:.2f} | {args.tokens / cached_seconds:.0f} | "
        f"{recompute_seconds / cached_seconds:.1f}x |"
    )
    print(
        f"| KV cache + grammar masks + sampling (timbre compose) | {sampled_tokens} | {sampled_seconds:.2f} | "
        f"{sampled_tokens / sampled_seconds:.0f} | - |"
    )
    print()
    print(f"cached and recomputed greedy tokens identical: {identical}")


if __name__ == "__main__":
    main()
