"""Checkpoints: written atomically, self-describing, loadable with ``torch.load(weights_only=True)``.

A checkpoint is a ``torch.save`` dict of plain Python values and tensors only:

- ``format``: :data:`CHECKPOINT_FORMAT`, checked on load;
- ``model_config``: the model spec (a family name and plain settings, see
  :mod:`timbre.models.registry`), so loading never needs the user to repeat the config and never
  imports a path stored in the file;
- ``model`` / ``ema``: state dicts of the raw and the EMA weights (EMA is used for inference);
- ``artifacts``: JSON-able objects the data config provided (e.g. a tokenizer);
- ``training``: optimizer, scheduler, step and RNG state, to resume exactly (absent in exported
  inference-only files).

Files of the previous format (``timbre-checkpoint-v1``, whose model was a Hydra config with
``_target_`` import paths) are read and upgraded in memory; ``python -m timbre.train.checkpoint
FILE...`` rewrites them in the current format.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from timbre.errors import CheckpointError, ConfigError
from timbre.io.files import atomic_write
from timbre.models.registry import check_spec, model_from_spec, spec_from_hydra_config

CHECKPOINT_FORMAT = "timbre-checkpoint-v2"
# Stored the model as a Hydra config; upgraded on load.
HYDRA_CONFIG_FORMAT = "timbre-checkpoint-v1"
LAST_CHECKPOINT = "last.pt"
# The checkpoint of the best validation, kept by runs with early stopping.
BEST_CHECKPOINT = "best.pt"
# How an exported model's autoregressive decoder samples when told nothing else (checkpoint key
# "sampling"; see timbre.TimbreModel.default_temperature, default_clock_gain and makeup_db).
SAMPLING_DEFAULTS = {"temperature": 1.0, "clock_gain": 1.0, "makeup_db": 0.0}


def model_spec(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The registry spec of a model description: a spec (checked) or a Hydra config (converted).

    Raises:
        ConfigError: neither a valid spec nor a Hydra config of a registered model.
    """
    if isinstance(model_config, Mapping) and "_target_" in model_config:
        return spec_from_hydra_config(model_config)
    return check_spec(model_config)


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: a crash leaves the previous file intact.

    ``checkpoint["model_config"]`` is stored as a model spec (a Hydra model config is converted).

    Raises:
        ConfigError: the model is not a registered family, or an entry is neither a tensor nor a
            plain value (it could not be loaded with ``weights_only=True``).
    """
    path = Path(path)
    if "model_config" not in checkpoint:
        raise ConfigError(f"{path}: a checkpoint needs a 'model_config' entry")
    checkpoint = {**checkpoint, "model_config": model_spec(checkpoint["model_config"])}
    _check_weights_only(checkpoint, "checkpoint")
    with atomic_write(path) as file:
        torch.save({"format": CHECKPOINT_FORMAT, **checkpoint}, file)
    return path


def _check_weights_only(value: Any, where: str) -> None:
    """Raise :class:`ConfigError` at the first entry ``torch.load(weights_only=True)`` would refuse."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_weights_only(item, f"{where}[{index}]")
    elif isinstance(value, dict):  # OrderedDict (state dicts) included
        for key, item in value.items():
            _check_weights_only(key, f"{where} key")
            _check_weights_only(item, f"{where}[{key!r}]")
    else:
        raise ConfigError(f"{where} is a {type(value).__name__}: checkpoints hold only tensors and plain Python values")


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or the latest checkpoint of a run directory (``<run>/checkpoints/last.pt``)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for candidate in (path / "checkpoints" / LAST_CHECKPOINT, path / LAST_CHECKPOINT, path / "model.pt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"{path}: no checkpoint found in this directory (looked for checkpoints/{LAST_CHECKPOINT})"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file or run directory, with clear errors for missing or foreign files.

    Returns the stored dict with ``model_config`` as a model spec (a v1 Hydra config is converted),
    ``format`` as written in the file, and ``path``, the file read.
    """
    path = resolve_checkpoint_path(path)
    try:
        # weights_only: a checkpoint is data; unpickling it must never run code.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated, foreign or unsafe files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
    if found not in (CHECKPOINT_FORMAT, HYDRA_CONFIG_FORMAT):
        raise CheckpointError(f"{path}: not a timbre checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    for key in ("model_config", "model"):
        if key not in checkpoint:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    try:
        checkpoint["model_config"] = model_spec(checkpoint["model_config"])
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}") from None
    checkpoint["path"] = str(path)
    return checkpoint


def build_model(model_config: Mapping[str, Any], source: str = "config") -> nn.Module:
    """A freshly initialised model of a checkpoint's ``model_config`` (a model spec).

    Raises:
        CheckpointError: naming ``source``, when the spec names no registered model or its
            settings do not fit the model's classes.
    """
    try:
        return model_from_spec(model_config)
    except ConfigError as error:
        raise CheckpointError(f"{source}: cannot build the model: {error}") from None


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
    ema = checkpoint.get("ema")
    load_state(model, ema if use_ema and ema is not None else checkpoint["model"], source)
    return model.eval(), checkpoint


def export_inference_checkpoint(
    source: str | Path,
    destination: str | Path,
    sampling: Mapping[str, float] | None = None,
    refine_steps: int = 0,
    half: bool = False,
) -> Path:
    """Write an inference-only copy (EMA weights as ``model``, no optimizer state) of a checkpoint.

    ``sampling``: how :meth:`timbre.TimbreModel.synthesize` decodes an autoregressive decoder when
    told nothing else (:data:`SAMPLING_DEFAULTS`: ``temperature``, ``clock_gain``, ``makeup_db``),
    stored as ``sampling``. ``refine_steps``: the refinement steps :meth:`timbre.TimbreModel.encode`
    takes when told nothing else, stored as ``encoding`` (``{"refine": steps}``) when not 0.
    ``half``: store floating-point weights in float16 (half the bytes of a bundled model; they
    load back into the model's float32 parameters, so only float16's rounding remains).
    """
    check_sampling(sampling or {})
    if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or refine_steps < 0:
        raise ConfigError(f"refine_steps must be a whole number >= 0, got {refine_steps!r}")
    checkpoint = load_checkpoint(source)
    weights = checkpoint.get("ema") or checkpoint["model"]
    if half:
        weights = _half_weights(weights, checkpoint["path"])
    exported = {
        "model_config": checkpoint["model_config"],
        "model": weights,
        "artifacts": checkpoint.get("artifacts", {}),
        "step": checkpoint.get("training", {}).get("step"),
        "run": checkpoint.get("run", {}),
    }
    if sampling:
        exported["sampling"] = {key: float(value) for key, value in sampling.items()}
    if refine_steps:
        exported["encoding"] = {"refine": refine_steps}
    return save_checkpoint(destination, exported)


def _half_weights(weights: Mapping[str, torch.Tensor], source: str | Path) -> dict[str, torch.Tensor]:
    """Floating-point ``weights`` in float16; tensors that shared storage (tied weights) still do.

    Raises:
        ConfigError: a weight beyond float16's range (it would become inf).
    """
    halves: dict[tuple, torch.Tensor] = {}
    converted = {}
    for key, value in weights.items():
        if not value.is_floating_point():
            converted[key] = value
            continue
        view = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.stride())
        if view not in halves:
            halves[view] = value.half()
            if not torch.isfinite(halves[view]).all():
                raise ConfigError(f"{source}: weight {key} exceeds float16's range; export it without half")
        converted[key] = halves[view]
    return converted


def check_sampling(sampling: Mapping[str, float]) -> None:
    """Raise ConfigError unless ``sampling`` holds known settings with usable values: a temperature
    and a clock gain that are finite and >= 0, a make-up gain within +-60 dB."""
    unknown = sorted(set(sampling) - set(SAMPLING_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown sampling settings {unknown}; known: {list(SAMPLING_DEFAULTS)}")
    for key, value in sampling.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"sampling {key} must be a number, got {value!r}")
        usable = -60.0 <= value <= 60.0 if key == "makeup_db" else 0.0 <= value < math.inf
        if not usable:
            bounds = "between -60 and 60 dB" if key == "makeup_db" else "a finite number >= 0"
            raise ConfigError(f"sampling {key} must be {bounds}, got {value}")


def upgrade_checkpoint(path: str | Path) -> bool:
    """Rewrite a checkpoint file in the current format (weights untouched); False if it already was."""
    checkpoint = load_checkpoint(path)
    if checkpoint.pop("format") == CHECKPOINT_FORMAT:
        return False
    save_checkpoint(checkpoint.pop("path"), checkpoint)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Rewrite timbre checkpoints of an older format in the current one (weights untouched)."
    )
    parser.add_argument("paths", nargs="+", help="checkpoint files or run directories")
    for path in parser.parse_args().paths:
        try:
            print(f"{path}: {'upgraded' if upgrade_checkpoint(path) else 'already current'}")
        except CheckpointError as error:
            raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
