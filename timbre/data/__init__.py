"""Datasets: NSynth-format notes, the soundfont note builder, and MIDI corpora.

Every ``data`` config of the training app instantiates to a :class:`DataBundle`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class SizedDataset(Protocol):
    """A map-style dataset that knows its length: what the trainer draws examples from.

    (torch's ``Dataset`` does not declare ``__len__``; every dataset of this package has one.)
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> Any: ...


@dataclass
class DataBundle:
    """What a data config gives the training app.

    Attributes:
        train: training examples; each item is a dict of tensors.
        valid: held-out examples for validation, or None.
        collate_fn: batches a list of items (default: torch's default collate).
        model_overrides: values merged into the model config before it is built
            (e.g. ``{"vocab_size": 518}`` from a tokenizer).
        artifacts: JSON-serialisable objects saved inside every checkpoint (e.g. tokenizer params).
    """

    train: SizedDataset
    valid: SizedDataset | None = None
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
