"""Checkpoints: written atomically, self-describing, and loadable without repeating the config.

A checkpoint is a ``torch.save`` dict:

- ``format``: :data:`CHECKPOINT_FORMAT`, checked on load;
- ``model_config``: the resolved Hydra config of the model (with ``_target_``), so loading never
  needs the user to repeat it;
- ``model`` / ``ema``: state dicts of the raw and the EMA weights (EMA is used for inference);
- ``artifacts``: JSON-able objects the data config provided (e.g. a tokenizer);
- ``training``: optimizer, scheduler, step and RNG state, to resume exactly (absent in exported
  inference-only files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from timbre.errors import CheckpointError
from timbre.io.files import atomic_write

CHECKPOINT_FORMAT = "timbre-checkpoint-v1"
LAST_CHECKPOINT = "last.pt"


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: a crash leaves the previous file intact."""
    path = Path(path)
    with atomic_write(path) as file:
        torch.save({"format": CHECKPOINT_FORMAT, **checkpoint}, file)
    return path


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or the latest checkpoint of a run directory (``<run>/checkpoints/last.pt``)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for candidate in (path / "checkpoints" / LAST_CHECKPOINT, path / LAST_CHECKPOINT, path / "model.pt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{path}: no checkpoint found in this directory (looked for checkpoints/{LAST_CHECKPOINT})")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file or run directory, with clear errors for missing or foreign files."""
    path = resolve_checkpoint_path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: not a timbre checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    for key in ("model_config", "model"):
        if key not in checkpoint:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    checkpoint["path"] = str(path)
    return checkpoint


def build_model(model_config: dict[str, Any], source: str = "config") -> nn.Module:
    """Instantiate a model from its stored Hydra config (``_target_`` plus plain arguments)."""
    from hydra.utils import instantiate  # deferred: hydra is only needed to build models

    try:
        return instantiate(model_config, _convert_="all")
    except Exception as error:
        raise CheckpointError(f"{source}: cannot build the model from its config: {error}") from None


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict strictly, turning shape or key mismatches into one clear message."""
    missing, unexpected = [], []
    own = model.state_dict()
    for key, tensor in own.items():
        if key not in state:
            missing.append(key)
        elif state[key].shape != tensor.shape:
            raise CheckpointError(
                f"{source}: weight {key} has shape {tuple(state[key].shape)} but the model expects "
                f"{tuple(tensor.shape)}; the checkpoint does not match this code or config"
            )
    unexpected = [key for key in state if key not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: checkpoint does not match the model code "
            f"(missing {len(missing)} weights, e.g. {missing[:3]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]})"
        )
    model.load_state_dict(state)


def load_model(path: str | Path, use_ema: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a checkpoint describes and load its (EMA by default) weights.

    Returns ``(model in eval mode on CPU, checkpoint dict)``.
    """
    checkpoint = load_checkpoint(path)
    source = checkpoint["path"]
    model = build_model(checkpoint["model_config"], source)
    weights = checkpoint.get("ema") if use_ema and checkpoint.get("ema") is not None else checkpoint["model"]
    load_state(model, weights, source)
    return model.eval(), checkpoint


def export_inference_checkpoint(source: str | Path, destination: str | Path, half: bool = False) -> Path:
    """Write an inference-only copy (EMA weights as ``model``, no optimizer state) of a checkpoint."""
    checkpoint = load_checkpoint(source)
    weights = checkpoint.get("ema") or checkpoint["model"]
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    exported = {
        "model_config": checkpoint["model_config"],
        "model": weights,
        "artifacts": checkpoint.get("artifacts", {}),
        "step": checkpoint.get("training", {}).get("step"),
        "run": checkpoint.get("run", {}),
    }
    return save_checkpoint(destination, exported)
