"""The composer: a decoder-only transformer over MIDI tokens, with a KV cache for generation.

Positions are rotary (RoPE): attention scores depend only on the distance between tokens, so the
cache can be a ring buffer. Once a generation outgrows ``max_context`` the oldest keys are
overwritten and the model keeps seeing windows like the ones it was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from timbre.constants import COMPOSER_SAMPLING_WEIGHTS
from timbre.errors import ConfigError


class GenerationControl(Protocol):
    """Steers :meth:`Composer.generate`: which tokens may come next, and when to stop."""

    def allowed(self) -> torch.Tensor | None:
        """BoolTensor ``[batch, vocab]`` of tokens allowed next, or None for all."""

    def update(self, tokens: torch.Tensor) -> None:
        """Record the tokens just sampled: LongTensor ``[batch]``."""

    def finished(self) -> bool:
        """True once every sequence of the batch is complete."""


class KVCache:
    """Keys and values of every layer for incremental decoding: a ring of ``capacity`` slots.

    ``keys[layer]`` and ``values[layer]`` are ``[batch, heads, capacity, head_dim]``; ``length``
    is the number of tokens seen so far, i.e. the absolute position of the next token.
    ``first_slot``: None, or LongTensor ``[batch]`` when the rows were filled left-padded (see
    :meth:`Composer.generate`'s ``conditions``): row ``b`` attends to slots ``first_slot[b]``
    on only, and the ring must not wrap.
    """

    def __init__(
        self,
        layers: int,
        batch: int,
        heads: int,
        capacity: int,
        head_dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        shape = (batch, heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.capacity = capacity
        self.length = 0
        self.first_slot: torch.Tensor | None = None

    def padding_mask(self, seen: int) -> torch.Tensor | None:
        """BoolTensor ``[batch, 1, 1, seen]``, True at the slots a new token may attend to, or
        None when every slot may be (no left padding)."""
        if self.first_slot is None:
            return None
        assert self.length < self.capacity, "a cache of left-padded rows must be refilled before its ring wraps"
        slots = torch.arange(seen, device=self.first_slot.device)
        return (slots[None, :] >= self.first_slot[:, None])[:, None, None, :]


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample one token per row.

    Args:
        logits: ``[batch, vocab]``.
        temperature: divides the logits; 0 picks the most likely token.
        top_k: keep only the ``top_k`` most likely tokens.
        top_p: keep the smallest set of most likely tokens whose probability reaches ``top_p``.
        generator: the random generator (seeded by the caller for reproducible output).
        allowed: BoolTensor ``[batch, vocab]``; other tokens get probability 0.

    Returns:
        LongTensor ``[batch]``.
    """
    logits = logits.float()
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        threshold = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probabilities = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens before it already reach top_p; the first is always kept.
        drop = probabilities.cumsum(dim=-1) - probabilities >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    # Inverse-CDF sampling: one uniform draw per row, several times cheaper than
    # torch.multinomial on a CPU for one token at a time. right=True never picks a token
    # of probability 0 (its cumulative sum equals its predecessor's).
    cumulative = logits.softmax(dim=-1).cumsum(dim=-1)
    draw = torch.rand(cumulative.shape[0], 1, generator=generator, device=cumulative.device) * cumulative[:, -1:]
    return torch.searchsorted(cumulative, draw, right=True).squeeze(-1).clamp(max=cumulative.shape[-1] - 1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer), in the rotate-half layout.

    Angles of the first ``table_size`` positions are precomputed (a decoding step then only
    slices them); later positions are computed on the fly in float64, so that positions in the
    tens of thousands keep their precision.
    """

    # Buffers, declared for the type checker (register_buffer sets them).
    inverse_frequency: torch.Tensor
    cos_table: torch.Tensor
    sin_table: torch.Tensor

    def __init__(self, head_dim: int, base: float = 10000.0, table_size: int = 4096) -> None:
        super().__init__()
        inverse_frequency = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inverse_frequency", inverse_frequency, persistent=False)
        cos, sin = self._angles(torch.arange(table_size))
        self.register_buffer("cos_table", cos.float(), persistent=False)
        self.register_buffer("sin_table", sin.float(), persistent=False)

    def _angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.to(torch.float64)[:, None] * self.inverse_frequency
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()

    def forward(self, start: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)``, each ``[length, head_dim]``, for positions ``start .. start + length - 1``."""
        if start + length <= len(self.cos_table):
            return self.cos_table[start : start + length].to(dtype), self.sin_table[start : start + length].to(dtype)
        cos, sin = self._angles(torch.arange(start, start + length, device=self.inverse_frequency.device))
        return cos.to(dtype), sin.to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[..., time, head_dim]`` by the angles of ``cos``/``sin`` ``[time, head_dim]``."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with rotary positions and an optional KV cache."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        assert dim % heads == 0, f"dim {dim} must be divisible by heads {heads}"
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        """``x``: ``[batch, time, dim]`` -> ``[batch, time, dim]``; ``cos``/``sin``: ``[time, head_dim]``."""
        batch, time, dim = x.shape
        qkv = self.qkv(x).view(batch, time, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        qk = apply_rotary(qkv[:2], cos, sin)  # queries and keys rotated together
        q, k, v = qk[0], qk[1], qkv[2]
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        elif time == 1:
            # One new token sees every cached slot; softmax ignores slot order, so the ring
            # buffer needs no reordering and no mask.
            slot = cache.length % cache.capacity
            cache.keys[layer][:, :, slot : slot + 1] = k
            cache.values[layer][:, :, slot : slot + 1] = v
            seen = min(cache.length + 1, cache.capacity)
            y = F.scaled_dot_product_attention(
                q, cache.keys[layer][:, :, :seen], cache.values[layer][:, :, :seen], attn_mask=cache.padding_mask(seen)
            )
        else:
            start, end = cache.length, cache.length + time
            assert end <= cache.capacity, (
                f"a {time}-token block at position {start} overflows the {cache.capacity}-slot cache"
            )
            cache.keys[layer][:, :, start:end] = k
            cache.values[layer][:, :, start:end] = v
            slots, queries = torch.arange(end, device=x.device), torch.arange(start, end, device=x.device)
            visible = slots[None, :] <= queries[:, None]  # [time, end]
            if cache.first_slot is not None:
                # Padding slots are never attended to, except by themselves: a query that sees
                # nothing would make NaN keys and values in the next layer.
                real = slots[None, :] >= cache.first_slot[:, None]  # [batch, end]
                visible = visible & (real[:, None, None, :] | (slots[None, :] == queries[:, None]))
            y = F.scaled_dot_product_attention(
                q, cache.keys[layer][:, :, :end], cache.values[layer][:, :, :end], attn_mask=visible
            )
        return self.out(y.transpose(1, 2).reshape(batch, time, dim))


class Block(nn.Module):
    """Pre-norm transformer block: attention then a GELU feed-forward, both residual."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        # LayerNorm and tanh-GELU: single fused kernels on CPU, where generation is op-bound.
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads, dropout)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward_in = nn.Linear(dim, ff_mult * dim)
        self.feed_forward_out = nn.Linear(ff_mult * dim, dim)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        """``x``: ``[batch, time, dim]`` -> ``[batch, time, dim]``."""
        attended = self.attention(self.attention_norm(x), cos, sin, cache, layer)
        x = x + F.dropout(attended, self.dropout, self.training)
        hidden = F.gelu(self.feed_forward_in(self.feed_forward_norm(x)), approximate="tanh")
        return x + F.dropout(self.feed_forward_out(hidden), self.dropout, self.training)


class Composer(nn.Module):
    """Decoder-only transformer language model over token ids.

    Args:
        vocab_size: number of token ids (the tokenizer's length).
        dim: width of the residual stream.
        layers: number of transformer blocks.
        heads: attention heads per block.
        ff_mult: feed-forward width as a multiple of ``dim``.
        dropout: dropout on attention weights and residual branches while training.
        max_context: tokens a cached generation attends to (its ring-buffer size); train on
            windows of at most this length.
        pad_id: padding token id, ignored by the loss when a batch has no ``mask``.
        rope_base: base of the rotary frequencies.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 256,
        layers: int = 4,
        heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.1,
        max_context: int = 1024,
        pad_id: int = 0,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        self.vocab_size, self.max_context, self.pad_id = vocab_size, max_context, pad_id
        self.heads, self.head_dim = heads, dim // heads
        self.embedding = nn.Embedding(vocab_size, dim)
        self.rotary = RotaryEmbedding(dim // heads, rope_base)
        blocks = [Block(dim, heads, ff_mult, dropout) for _ in range(layers)]
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.embedding.weight  # tied: fewer weights, a smaller shipped model
        self.apply(self._initialise)
        for block in blocks:  # GPT-2: scale residual projections down with depth
            for linear in (block.attention.out, block.feed_forward_out):
                nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _initialise(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def new_cache(self, batch: int) -> KVCache:
        """An empty cache for ``batch`` sequences of up to ``max_context`` attended tokens."""
        weight = self.embedding.weight
        return KVCache(
            len(self.blocks), batch, self.heads, self.max_context, self.head_dim, weight.device, weight.dtype
        )

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Next-token logits.

        Args:
            tokens: LongTensor ``[batch, time]``; with a cache, the tokens that follow the cached
                ones (one at a time once the cache is full).
            cache: filled in place and advanced by ``time``.

        Returns:
            ``[batch, time, vocab_size]``: logits of the token after each position.
        """
        x = self.embedding(tokens)
        start = cache.length if cache is not None else 0
        cos, sin = self.rotary(start, tokens.shape[1], x.dtype)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, layer)
        if cache is not None:
            cache.length += tokens.shape[1]
        return self.head(self.norm(x))

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean next-token cross-entropy (nats) over real tokens.

        Args:
            batch: ``tokens`` LongTensor ``[batch, time]`` and optionally ``mask`` BoolTensor
                ``[batch, time]`` (True at real tokens; default: tokens that are not ``pad_id``).

        Returns:
            ``(loss, {"bits_per_token", "accuracy"})``.
        """
        tokens = batch["tokens"]
        mask = batch.get("mask")
        if mask is None:
            mask = tokens != self.pad_id
        logits = self(tokens[:, :-1])
        targets, real = tokens[:, 1:], mask[:, 1:]
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        count = real.sum().clamp(min=1)
        loss = (losses * real).sum() / count
        with torch.no_grad():
            accuracy = ((logits.argmax(-1) == targets) & real).sum() / count
        return loss, {"bits_per_token": loss.item() / math.log(2), "accuracy": accuracy.item()}

    @torch.inference_mode()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        control: GenerationControl | None = None,
        unconditional: torch.Tensor | None = None,
        guidance: float = 1.0,
        conditions: int = 0,
        bar_token: int | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt`` token by token with the KV cache.

        Args:
            prompt: LongTensor ``[batch, time]`` (at least one token, e.g. BOS). Only its last
                ``max_context`` tokens are attended to (see ``conditions``).
            max_new_tokens: upper bound on new tokens (``control`` may stop earlier).
            temperature, top_k, top_p, generator: see :func:`sample_next`.
            control: grammar mask and stopping rule, or None for free sampling.
            unconditional: LongTensor ``[batch, time]``, the prompt without its condition (e.g.
                ``Style_any`` for the style), for classifier-free guidance: both continue side by
                side (one batch of ``2 * batch`` rows) with the same sampled tokens, and tokens are
                sampled from ``uncond + guidance * (cond - uncond)`` logits (Sanchez et al. 2023,
                "Stay on topic with classifier-free guidance"). None: plain sampling.
            guidance: the guidance scale; 1 samples from the conditional model alone (and then
                ``unconditional`` is not run), above 1 pushes further towards the condition, 0
                samples the unconditional rows alone.
            conditions: how many tokens open each prompt row as its conditions (``BOS Style
                Voices``), to be kept in view. 0: once ``max_context`` tokens are cached, the ring
                overwrites the oldest, conditions first. Above 0: a full cache (or a longer
                prompt) is refilled with each row's conditions followed by its latest tokens
                from a ``bar_token`` on, at most half the rest of the context (the latest tokens
                alone where no bar line is among them): the windows a many-style composer trains
                on, which always open with their conditions. Rows are left-padded to one length
                and never attend to the padding.
            bar_token: the token at which a refilled context may start (see ``conditions``).

        Raises:
            ValueError: ``unconditional`` not shaped as ``prompt``.

        Returns:
            LongTensor ``[batch, time + new]``: the prompt followed by the new tokens.
        """
        assert prompt.dim() == 2 and prompt.shape[1] >= 1, "prompt must be [batch, time] with time >= 1"
        rows, guided = prompt, False
        if unconditional is not None and guidance != 1.0:
            if unconditional.shape != prompt.shape:
                raise ValueError(
                    f"unconditional {tuple(unconditional.shape)} is not shaped as prompt {tuple(prompt.shape)}"
                )
            rows, guided = torch.cat([prompt, unconditional]), True
        batch = prompt.shape[0]
        cache = self.new_cache(rows.shape[0])
        if conditions and rows.shape[1] > self.max_context:
            logits = self._refill(rows, conditions, bar_token, cache)
        else:
            logits = self(rows[:, -self.max_context :], cache)[:, -1]
        # The C step (float32 on the CPU, built at install) where it applies, else the torch one.
        from timbre.generation.composer_native import native_step_for  # deferred, as the WaveNet's engine

        step = native_step_for(self, cache) or CachedStep(self)
        new_tokens = []
        fed = []  # the new tokens of every row (twice each when guided)
        for _ in range(max_new_tokens):
            allowed = control.allowed() if control is not None else None
            if guided:
                conditional, free = logits[:batch].float(), logits[batch:].float()
                logits = free + guidance * (conditional - free)
            token = sample_next(logits, temperature, top_k, top_p, generator, allowed)
            new_tokens.append(token)
            if control is not None:
                control.update(token)
                if control.finished():
                    break
            fed.append(torch.cat([token, token]) if guided else token)
            if conditions and cache.length >= cache.capacity:
                logits = self._refill(torch.cat([rows, torch.stack(fed, dim=1)], dim=1), conditions, bar_token, cache)
            else:
                logits = step(fed[-1], cache)
        if not new_tokens:
            return prompt
        return torch.cat([prompt, torch.stack(new_tokens, dim=1)], dim=1)

    def _refill(self, rows: torch.Tensor, conditions: int, bar_token: int | None, cache: KVCache) -> torch.Tensor:
        """Empty ``cache`` and fill it with each row's first ``conditions`` tokens followed by its
        latest tokens from a ``bar_token`` on (see :meth:`generate`), left-padded to one length.

        Args:
            rows: LongTensor ``[batch, time]``, every token of each sequence so far.

        Returns:
            ``[batch, vocab_size]``: logits of the token after each row.
        """
        room = (self.max_context - conditions) // 2
        contexts = []
        for row in rows:
            body = row[conditions:]
            start = max(len(body) - room, 0)
            if bar_token is not None:
                bar_lines = torch.nonzero(body[start:] == bar_token)
                start += int(bar_lines[0]) if len(bar_lines) else 0
            contexts.append(torch.cat([row[:conditions], body[start:]]))
        width = max(len(context) for context in contexts)
        tokens = torch.full((len(contexts), width), self.pad_id, dtype=torch.long, device=rows.device)
        for index, context in enumerate(contexts):
            tokens[index, width - len(context) :] = context
        first_slot = torch.tensor([width - len(context) for context in contexts], device=rows.device)
        cache.length = 0
        cache.first_slot = first_slot if bool(first_slot.any()) else None
        return self(tokens, cache)[:, -1]


def int8_sampling_available() -> bool:
    """Whether this PyTorch samples with int8 weights: dynamic quantization on fbgemm (x86-64)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


def check_sampling_weights(weights: str) -> None:
    """Raise :class:`ConfigError` unless this PyTorch can sample with ``weights``."""
    if weights not in COMPOSER_SAMPLING_WEIGHTS:
        raise ConfigError(f"composer weights must be one of {', '.join(COMPOSER_SAMPLING_WEIGHTS)}, not {weights!r}")
    if weights == "int8" and not int8_sampling_available():
        raise ConfigError("int8 composer weights need PyTorch's fbgemm engine (x86-64), absent here: use float32")


def with_sampling_weights(model: Composer, weights: str) -> Composer:
    """``model`` as it samples with ``weights``: itself for ``float32``; for ``int8`` an eval copy
    whose linear layers (attention, feed-forward, output head) hold int8 weights with one scale
    per output row and quantize their input on the fly, one scale per call across the batch
    (PyTorch dynamic quantization).

    One token at a time, a layer's work is a matrix-vector product that reads every weight once,
    so decoding is bound by reading the weights: int8 reads a quarter of float32's bytes. The
    embedding, layer norms and the KV cache stay float32. ``model`` itself is not changed.

    Raises:
        ConfigError: unknown ``weights``, or ``int8`` where :func:`int8_sampling_available` is False.
    """
    check_sampling_weights(weights)
    if weights == "float32":
        return model
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao's eager quantization points users to torchao, whose CPU int8 path needs
        # torch.compile; this one runs fbgemm's kernels with nothing compiled.
        warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor, torch.quantize_per_channel", UserWarning)
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


Step = Callable[[torch.Tensor], torch.Tensor]


def _linear_function(module: nn.Module) -> Step:
    """The product a linear layer computes, as one call: float32 ``nn.Linear`` or int8 dynamic."""
    if isinstance(module, nn.Linear):
        weight, bias = module.weight, module.bias
        return lambda x: F.linear(x, weight, bias)
    quantized = torch.ao.nn.quantized.dynamic.Linear
    if not isinstance(module, quantized) or module._packed_params.dtype != torch.qint8 or module.version < 4:
        raise TypeError(f"CachedStep steps float32 or int8 (with_sampling_weights) linear layers, not {module}")
    packed = module._packed_params._packed_params
    # reduce_range, as the module itself passes it: int8 products must not saturate without VNNI.
    operator = torch.ops.quantized.linear_dynamic.default  # the overload itself: no dispatch by arguments
    return lambda x: operator(x, packed, True)


def _layer_norm_function(norm: nn.LayerNorm) -> Step:
    shape, weight, bias, eps = norm.normalized_shape, norm.weight, norm.bias, norm.eps
    return lambda x: F.layer_norm(x, shape, weight, bias, eps)


class CachedStep:
    """One-token decoding steps of a :class:`Composer` over its KV cache, without module calls.

    It computes what ``model(token[:, None], cache)[:, -1]`` does in eval mode (the same
    operations in the same order), but one token's step is a few hundred small operations, and on
    a CPU core Python's per-module dispatch took a third of its time. Works on float32 and int8
    (:func:`with_sampling_weights`) composers; built once per generation.

    Raises:
        ValueError: ``model`` is in training mode (its dropout would be skipped).
        TypeError: a block or linear layer of another kind than this module's.
    """

    def __init__(self, model: Composer) -> None:
        if model.training:
            raise ValueError("a composer samples in eval mode: call model.eval() first")
        if not all(isinstance(block, Block) for block in model.blocks):
            raise TypeError("CachedStep steps the blocks of timbre.models.composer.Block only")
        self.model = model
        blocks = [block for block in model.blocks if isinstance(block, Block)]  # all of them (checked)
        # Per block: attention norm, qkv, attention output, feed-forward norm, in and out.
        self.layers: list[tuple[Step, Step, Step, Step, Step, Step]] = [
            (
                _layer_norm_function(block.attention_norm),
                _linear_function(block.attention.qkv),
                _linear_function(block.attention.out),
                _layer_norm_function(block.feed_forward_norm),
                _linear_function(block.feed_forward_in),
                _linear_function(block.feed_forward_out),
            )
            for block in blocks
        ]
        self.final_norm, self.head = _layer_norm_function(model.norm), _linear_function(model.head)

    def __call__(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """``token``: LongTensor ``[batch]`` -> next-token logits ``[batch, vocab_size]``; ``cache``
        advances by one."""
        model = self.model
        batch, heads, head_dim = token.shape[0], model.heads, model.head_dim
        x = F.embedding(token, model.embedding.weight)  # [batch, dim]
        dim = x.shape[-1]
        cos, sin = model.rotary(cache.length, 1, x.dtype)  # [1, head_dim]
        slot = cache.length % cache.capacity
        seen = min(cache.length + 1, cache.capacity)
        mask = cache.padding_mask(seen)
        for layer, (attention_norm, qkv, out, feed_forward_norm, feed_forward_in, feed_forward_out) in enumerate(
            self.layers
        ):
            # [batch, 3 * dim] -> [3, batch, heads, 1, head_dim], the layout of SelfAttention's.
            projected = qkv(attention_norm(x)).view(batch, 3, heads, 1, head_dim).transpose(0, 1)
            qk = apply_rotary(projected[:2], cos, sin)
            cache.keys[layer][:, :, slot : slot + 1] = qk[1]
            cache.values[layer][:, :, slot : slot + 1] = projected[2]
            attended = F.scaled_dot_product_attention(
                qk[0], cache.keys[layer][:, :, :seen], cache.values[layer][:, :, :seen], attn_mask=mask
            )
            x = x + out(attended.reshape(batch, dim))
            x = x + feed_forward_out(F.gelu(feed_forward_in(feed_forward_norm(x)), approximate="tanh"))
        cache.length += 1
        return self.head(self.final_norm(x))
