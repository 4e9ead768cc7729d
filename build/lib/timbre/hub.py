"""Pretrained models shipped inside the package, and ``timbre.load``.

Each bundled model is a directory ``timbre/pretrained/<name>/`` holding ``model.pt`` (an
inference-only checkpoint: EMA weights and the model config) and ``MODEL_CARD.md`` (the config,
the exact training command, data, steps, wall time and measured metrics).
"""

from __future__ import annotations

from pathlib import Path

from timbre.errors import CheckpointError
from timbre.models.autoencoder import Autoencoder
from timbre.synthesizer import TimbreModel

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
# Public names of the bundled autoencoders; "default" is what timbre.load() returns.
ALIASES = {"default": "fast", "fast": "fast", "wavenet-small": "wavenet-small", "wavenet": "wavenet-small"}


def bundled_models() -> list[str]:
    """Names of the bundled models present in this installation."""
    return sorted(path.name for path in PRETRAINED_DIR.glob("*/model.pt") for path in [path.parent])


def resolve(name_or_path: str | Path = "default") -> Path:
    """The checkpoint a bundled name or a path refers to."""
    candidate = Path(name_or_path).expanduser()
    if candidate.exists():
        return candidate
    name = ALIASES.get(str(name_or_path))
    if name is None:
        raise CheckpointError(
            f"{name_or_path}: no such file, and not a bundled model (bundled: {', '.join(sorted(ALIASES))})"
        )
    path = PRETRAINED_DIR / name / "model.pt"
    if not path.is_file():
        raise CheckpointError(f"{name_or_path}: the bundled model {name!r} is not in this installation ({path} is missing)")
    return path


def model_card(name_or_path: str | Path = "default") -> str:
    """The MODEL_CARD.md text of a bundled model (or of a checkpoint's directory), or ''."""
    path = resolve(name_or_path)
    card = (path if path.is_dir() else path.parent) / "MODEL_CARD.md"
    return card.read_text() if card.is_file() else ""


def load(name_or_path: str | Path = "default", device: str = "cpu") -> TimbreModel:
    """Load a bundled autoencoder by name (``"default"``, ``"fast"``, ``"wavenet-small"``), or any
    checkpoint file or run directory written by ``timbre-train``.

    Raises:
        CheckpointError: unknown name, missing or corrupt file, or not an autoencoder checkpoint.
    """
    from timbre.train.checkpoint import load_model

    path = resolve(name_or_path)
    model, checkpoint = load_model(path)
    if not isinstance(model, Autoencoder):
        raise CheckpointError(f"{checkpoint['path']}: holds a {type(model).__name__}, not a timbre autoencoder")
    name = str(name_or_path) if str(name_or_path) in ALIASES else checkpoint["path"]
    info = {"path": checkpoint["path"], "step": checkpoint.get("step") or checkpoint.get("training", {}).get("step")}
    info.update(checkpoint.get("run", {}))
    return TimbreModel(model, name=name, info=info, device=device)
