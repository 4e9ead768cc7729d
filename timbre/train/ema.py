"""Exponential moving average of model weights (NSynth evaluates with EMA 0.9999 weights)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ExponentialMovingAverage:
    """A shadow copy of a model whose weights track ``decay * shadow + (1 - decay) * live``.

    The effective decay warms up as ``min(decay, (1 + updates) / (10 + updates))`` so that short
    runs are not dominated by the random initialisation. Buffers are copied, not averaged.

    Args:
        model: the live model (its structure is deep-copied once).
        decay: the asymptotic decay, e.g. 0.9999.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow weights one step towards ``model``'s."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        shadow_params: list[torch.Tensor] = list(self.model.parameters())
        live_params: list[torch.Tensor] = list(model.parameters())
        torch._foreach_lerp_(shadow_params, live_params, 1.0 - decay)
        for shadow, live in zip(self.model.buffers(), model.buffers()):
            shadow.copy_(live)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.updates = state["updates"]
        self.model.load_state_dict(state["model"])
