"""The binding of the composer's native one-token step (``composer_step.c``, built into the same
library as the WaveNet kernel, :mod:`timbre.generation.native`).

:class:`NativeComposerStep` is a drop-in for :class:`timbre.models.composer.CachedStep` on a
float32 composer on the CPU: the same call, the same KV cache (the torch tensors, written in
place), logits equal within float32 rounding. :func:`native_step_for` returns it where it
applies and None elsewhere (no compiled kernel, int8 weights, another device or dtype), so that
generation falls back to the torch step.

The ctypes structures mirror the C ones field by field; the library's ABI version and structure
sizes are checked when it is first used.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable

import torch
from torch import nn

from timbre.generation.native import library_path
from timbre.models.composer import Block, Composer, KVCache

# Must match TIMBRE_COMPOSER_ABI in composer_step.c.
ABI_VERSION = 2

_STATUS_MESSAGES = {
    1: "the native composer step could not allocate its scratch memory",
    2: "the native composer step was given sizes or tokens out of range",
    3: "the native composer step was given a missing buffer",
}

_float_pointer = ctypes.POINTER(ctypes.c_float)


class _Block(ctypes.Structure):
    """``timbre_composer_block``."""

    _fields_ = [
        (name, _float_pointer)
        for name in (
            "attention_norm_weight", "attention_norm_bias", "qkv", "out",
            "feed_forward_norm_weight", "feed_forward_norm_bias",
            "feed_forward_in", "feed_forward_in_bias", "feed_forward_out", "feed_forward_out_bias",
            "keys", "values",
        )
    ]  # fmt: skip


class _Composer(ctypes.Structure):
    """``timbre_composer``."""

    _fields_ = [
        ("vocab", ctypes.c_int64),
        ("dim", ctypes.c_int64),
        ("heads", ctypes.c_int64),
        ("hidden", ctypes.c_int64),
        ("layers", ctypes.c_int64),
        ("capacity", ctypes.c_int64),
        ("norm_eps", ctypes.c_float),
        ("embedding", _float_pointer),
        ("final_norm_weight", _float_pointer),
        ("final_norm_bias", _float_pointer),
        ("head", _float_pointer),
        ("block", ctypes.POINTER(_Block)),
    ]


_lock = threading.Lock()
_step_function: Callable[..., int] | None = None
_tried = False


def load_step_function() -> Callable[..., int] | None:
    """``timbre_composer_step`` of the library built at install, or None (none built, or another ABI)."""
    global _step_function, _tried
    with _lock:
        if not _tried:
            _tried = True
            path = library_path()
            if path is not None:
                try:
                    library = ctypes.CDLL(str(path))
                    sizes = library.timbre_composer_sizes
                except (OSError, AttributeError):  # AttributeError: a library built before this kernel
                    return None
                sizes.restype = ctypes.c_int
                sizes.argtypes = [ctypes.POINTER(ctypes.c_int64)] * 2
                block, composer = ctypes.c_int64(), ctypes.c_int64()
                version = sizes(ctypes.byref(block), ctypes.byref(composer))
                if (version, block.value, composer.value) == (
                    ABI_VERSION, ctypes.sizeof(_Block), ctypes.sizeof(_Composer)
                ):  # fmt: skip
                    step = library.timbre_composer_step
                    step.restype = ctypes.c_int
                    step.argtypes = [
                        ctypes.POINTER(_Composer), ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                    ]  # fmt: skip
                    _step_function = step
        return _step_function


def _pointer(tensor: torch.Tensor) -> ctypes._Pointer:
    return ctypes.cast(tensor.data_ptr(), _float_pointer)


def _plain_float32(module: nn.Module) -> bool:
    """True for modules whose parameters are float32 CPU tensors (nn.Linear / nn.LayerNorm / nn.Embedding)."""
    return all(p.dtype == torch.float32 and p.device.type == "cpu" for p in module.parameters(recurse=False))


# The kernel's limits (composer_step.c's MAX_BATCH, MAX_WIDTH, MAX_CAPACITY).
MAX_BATCH, MAX_WIDTH, MAX_CAPACITY = 4096, 65536, 1 << 20


def native_step_for(model: Composer, cache: KVCache) -> NativeComposerStep | None:
    """The native step for ``model`` and ``cache``, or None where it does not apply: no kernel
    built, a model in training mode, weights that are not float32 ``nn.Linear`` on the CPU
    (int8 sampling weights step in torch), a layout other than Composer's own (biases where it has
    none, LayerNorms without bias or of unequal eps), sizes past the kernel's limits, or a cache
    that is not this model's contiguous float32 one."""
    step = load_step_function()
    if step is None or model.training:
        return None
    blocks = [block for block in model.blocks if isinstance(block, Block)]
    if len(blocks) != len(model.blocks) or not blocks:
        return None
    linears = [model.head, *(m for b in blocks for m in _block_linears(b))]
    norms = [model.norm, *(n for b in blocks for n in (b.attention_norm, b.feed_forward_norm))]
    if not all(type(m) is nn.Linear for m in linears):
        return None
    if not all(_plain_float32(m) for m in [*linears, *norms, model.embedding]):
        return None
    if len({norm.eps for norm in norms}) != 1 or any(norm.weight is None or norm.bias is None for norm in norms):
        return None
    vocab, dim = model.embedding.weight.shape
    hidden = blocks[0].feed_forward_in.out_features
    unbiased = [model.head, *(m for b in blocks for m in (b.attention.qkv, b.attention.out))]
    shapes = {
        (m.in_features, m.out_features) for b in blocks for m in (b.attention.qkv, b.attention.out, b.feed_forward_in)
    } | {(b.feed_forward_out.in_features, b.feed_forward_out.out_features) for b in blocks}
    if any(m.bias is not None for m in unbiased):
        return None
    if shapes != {(dim, 3 * dim), (dim, dim), (dim, hidden), (hidden, dim)}:
        return None
    if tuple(model.head.weight.shape) != (vocab, dim) or model.head_dim % 2 or max(dim, hidden) > MAX_WIDTH:
        return None
    expected = (cache.keys[0].shape[0], model.heads, cache.capacity, model.head_dim) if cache.keys else None
    tensors = [*cache.keys, *cache.values]
    if expected is None or len(cache.keys) != len(blocks) or len(cache.values) != len(blocks):
        return None
    if not 1 <= expected[0] <= MAX_BATCH or cache.capacity > MAX_CAPACITY:
        return None
    if not all(
        tuple(t.shape) == expected and t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()
        for t in tensors
    ):
        return None
    return NativeComposerStep(model, cache, step)


def _block_linears(block: Block) -> list[nn.Linear]:
    return [block.attention.qkv, block.attention.out, block.feed_forward_in, block.feed_forward_out]


class NativeComposerStep:
    """One-token steps of a float32 composer by the C kernel, over one KV cache.

    Build it with :func:`native_step_for` (which checks that it applies); then call it like
    :class:`timbre.models.composer.CachedStep`, with the cache it was built for.
    """

    def __init__(self, model: Composer, cache: KVCache, step: Callable[..., int]) -> None:
        self.model, self.cache, self.step = model, cache, step
        # Contiguous views of every weight (no copies for a module's own contiguous tensors),
        # held here so that the pointers below stay valid.
        self.held: list[torch.Tensor] = []

        def pointer(tensor: torch.Tensor | None) -> ctypes._Pointer:
            if tensor is None:  # no bias: the kernel skips NULL biases of these products only
                return _float_pointer()
            plain = tensor.detach().contiguous()
            self.held.append(plain)
            return _pointer(plain)

        layers = [block for block in model.blocks if isinstance(block, Block)]  # all (native_step_for checks)
        blocks = (_Block * len(layers))()
        for index, block in enumerate(layers):
            attention = block.attention
            blocks[index] = _Block(
                pointer(block.attention_norm.weight), pointer(block.attention_norm.bias),
                pointer(attention.qkv.weight), pointer(attention.out.weight),
                pointer(block.feed_forward_norm.weight), pointer(block.feed_forward_norm.bias),
                pointer(block.feed_forward_in.weight), pointer(block.feed_forward_in.bias),
                pointer(block.feed_forward_out.weight), pointer(block.feed_forward_out.bias),
                pointer(cache.keys[index]), pointer(cache.values[index]),  # contiguous: the cache itself
            )  # fmt: skip
        self.blocks = blocks
        embedding = model.embedding.weight
        self.composer = _Composer(
            embedding.shape[0], embedding.shape[1], model.heads, layers[0].feed_forward_in.out_features,
            len(layers), cache.capacity, model.norm.eps,
            pointer(embedding), pointer(model.norm.weight), pointer(model.norm.bias), pointer(model.head.weight),
            ctypes.cast(blocks, ctypes.POINTER(_Block)),
        )  # fmt: skip

    def __call__(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """``token``: LongTensor ``[batch]`` -> next-token logits ``[batch, vocab_size]``; ``cache``
        (the one this step was built for) advances by one."""
        if cache is not self.cache:
            raise ValueError("a native step writes the cache it was built for")
        if tuple(token.shape) != (cache.keys[0].shape[0],):
            sequences = cache.keys[0].shape[0]
            raise ValueError(f"one token per sequence of the cache ({sequences}), not {tuple(token.shape)}")
        tokens = token.to(device="cpu", dtype=torch.int64).contiguous()
        cos, sin = self.model.rotary(cache.length, 1, torch.float32)
        cos, sin = cos[0].contiguous(), sin[0].contiguous()
        logits = torch.empty(tokens.shape[0], self.composer.vocab, dtype=torch.float32, device="cpu")
        first = None if cache.first_slot is None else cache.first_slot.to(device="cpu", dtype=torch.int64).contiguous()
        status = self.step(
            ctypes.byref(self.composer), tokens.shape[0], tokens.data_ptr(), cache.length,
            None if first is None else first.data_ptr(), cos.data_ptr(), sin.data_ptr(), logits.data_ptr(),
        )  # fmt: skip
        if status:
            raise RuntimeError(_STATUS_MESSAGES.get(status, f"the native composer step failed ({status})"))
        cache.length += 1
        return logits
