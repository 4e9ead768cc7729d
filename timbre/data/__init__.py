"""Datasets: NSynth-format notes, the soundfont note builder, and MIDI corpora.

Every ``data`` config of the training app instantiates to a :class:`DataBundle`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing torch just for an annotation would make `import timbre.data` slow
    from torch.utils.data import Dataset


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

    train: Dataset
    valid: Dataset | None = None
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
