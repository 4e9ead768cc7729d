"""Pretrained models shipped inside the package, and ``timbre.load``.

Each bundled model is a directory ``timbre/pretrained/<name>/`` holding ``model.pt`` (an
inference-only checkpoint: EMA weights and the model spec) and ``MODEL_CARD.md`` (the config,
the exact training command, data, steps, wall time and measured metrics).
"""

from __future__ import annotations

from pathlib import Path

from timbre.constants import PRETRAINED_DIR
from timbre.errors import CheckpointError, InvalidTypeError
from timbre.models.autoencoder import Autoencoder
from timbre.synthesizer import TimbreModel, check_device

# Public names of the bundled autoencoders; "default" is what timbre.load() returns.
ALIASES = {
    "default": "fast-v7-refined",
    "fast": "fast",  # the version-1 parallel model, the default until session 3
    "fast-v2": "fast-v2",  # the version-2 parallel model, the default in session 3
    "fast-v3": "fast-v3",  # the version-3 parallel model (64-dim embedding), the default in sessions 4-6
    "fast-v4": "fast-v4",  # version 3 trained on with the mel-level loss, the default in sessions 7-8
    # Version 4 with partials on the octave below, read at the pitch a sound was encoded at (the
    # default in session 9).
    "fast-v5": "fast-v5",
    # Version 5 trained on randomly equalised notes: identifies more unseen instruments, but plays
    # an unseen electronic organ's octave below too loud (its card).
    "fast-v6": "fast-v6",
    # Version 6 trained on notes that lose random half-integer partials (the default from session 10).
    "fast-v7": "fast-v7",
    # Version 7's weights with encode refining each embedding by 30 steps through the decoder
    # (timbre.models.refine) unless told otherwise, its timbre set refined ahead (the default from
    # session 12).
    "fast-v7-refined": "fast-v7-refined",
    # The NSynth autoencoder at CPU size with its own encoder; holds no pitch. Named "wavenet-small"
    # until the pitch-clock WaveNet replaced it.
    "wavenet-v1": "wavenet-v1",
    # The AR WaveNet (model=small's decoder) with a pitch clock on fast-v3's frozen encoder (the
    # default when it was trained): decodes fast-v3's embeddings (timbre decode --decoder wavenet).
    "wavenet-v2": "wavenet-v2",
    "wavenet-small": "wavenet-v2",
    "wavenet": "wavenet-v2",
}


def resolve(name_or_path: str | Path = "default") -> Path:
    """The checkpoint a bundled name or a path refers to."""
    if not isinstance(name_or_path, (str, Path)) and not hasattr(name_or_path, "__fspath__"):
        raise InvalidTypeError(
            f"a model is a bundled name ({', '.join(sorted(ALIASES))}) or a checkpoint path, got {name_or_path!r}"
        )
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
        raise CheckpointError(
            f"{name_or_path}: the bundled model {name!r} is not in this installation ({path} is missing)"
        )
    return path


def load(name_or_path: str | Path = "default", device: str = "cpu") -> TimbreModel:
    """Load a bundled autoencoder by name (``"default"`` = ``"fast-v7-refined"``, ``"fast"``, ``"fast-v2"`` ...
    ``"fast-v7"``, ``"wavenet"`` = ``"wavenet-small"`` = ``"wavenet-v2"``, ``"wavenet-v1"``), or any checkpoint
    file or run directory written by ``timbre-train``.

    Raises:
        CheckpointError: unknown name, missing or corrupt file, or not an autoencoder checkpoint.
        ConfigError: a device this machine cannot run on.
    """
    from timbre.train.checkpoint import load_model

    check_device(device)  # before the weights are read
    path = resolve(name_or_path)
    model, checkpoint = load_model(path)
    if not isinstance(model, Autoencoder):
        raise CheckpointError(f"{checkpoint['path']}: holds a {type(model).__name__}, not a timbre autoencoder")
    name = str(name_or_path) if str(name_or_path) in ALIASES else checkpoint["path"]
    info = {"path": checkpoint["path"], "step": checkpoint.get("step") or checkpoint.get("training", {}).get("step")}
    info.update(checkpoint.get("run", {}))
    sampling = checkpoint.get("sampling", {})
    info["sampling_temperature"] = sampling.get("temperature")
    info["sampling_clock_gain"] = sampling.get("clock_gain")
    info["sampling_makeup_db"] = sampling.get("makeup_db")
    info["encoding_refine"] = checkpoint.get("encoding", {}).get("refine")
    return TimbreModel(
        model, name=name, info=info, device=device, known_embeddings=checkpoint.get("known_embeddings", {})
    )
