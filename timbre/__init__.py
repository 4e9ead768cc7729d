"""timbre: neural audio synthesis in the spirit of NSynth.

Encode sounds into temporal embeddings with a WaveNet-style autoencoder, blend them into new
timbres, decode them back into notes (a real-time parallel decoder or the NSynth autoregressive
WaveNet), compose MIDI with a transformer and render it through the learned timbres.

>>> import timbre
>>> model = timbre.load()                                    # the bundled default model
>>> a, b = model.encode("flute.wav"), model.encode("cello.wav")
>>> mid = timbre.interpolate.slerp(a, b, 0.5)               # [frames, dim]
>>> audio = model.synthesize(mid, pitch=60, seconds=4.0, velocity=100)
>>> timbre.save_wav("out.wav", audio, model.sample_rate)

Attributes are imported on first use, so ``import timbre`` (and ``timbre --help``) stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Embedding": "timbre.embedding",
    "SAMPLE_RATE": "timbre.constants",
    "TimbreError": "timbre.errors",
    "TimbreModel": "timbre.synthesizer",
    "load": "timbre.hub",
    "load_audio": "timbre.io.audio",
    "save_wav": "timbre.io.audio",
}
# public submodule name -> its module
_SUBMODULES = {
    "interpolate": "timbre.interpolate",
    "plots": "timbre.plots",
    "render": "timbre.render",
    "compose": "timbre.symbolic.compose",
    "audio": "timbre.io.audio",
}

__all__ = [
    "Embedding",
    "SAMPLE_RATE",
    "TimbreError",
    "TimbreModel",
    "audio",
    "compose",
    "interpolate",
    "load",
    "load_audio",
    "plots",
    "render",
    "save_wav",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    else:
        raise AttributeError(f"module 'timbre' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    """The public API (``dir(timbre)``), whether or not it has been imported yet."""
    return sorted({*__all__, "__version__"})
