"""The package's paths and fixed numbers, defined once.

Imports nothing but the standard library, so any module (and ``timbre --help``) may use it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

# ----------------------------------------------------------------------------- audio

# NSynth's rate: every bundled model, dataset and timbre set is 16 kHz mono.
SAMPLE_RATE = 16000
# 8-bit mu-law, as in WaveNet and NSynth: the autoregressive decoder's softmax has this many classes.
MU_LAW_LEVELS = 256
# MIDI pitches 0-127.
MIDI_PITCHES = 128
# Pitches the bundled autoencoders were trained on (FluidR3 notes); outside it they extrapolate.
DEFAULT_PITCH_RANGE = (24, 96)

# ----------------------------------------------------------------------------- paths

PACKAGE_DIR = Path(__file__).resolve().parent
# Bundled models (``<name>/model.pt`` + ``MODEL_CARD.md``) and the bundled timbre set.
PRETRAINED_DIR = PACKAGE_DIR / "pretrained"
TIMBRE_SET_DIR = PRETRAINED_DIR / "timbres"
# Bundled composers by name, and the other names they answer to (``--model chorales``).
BUNDLED_COMPOSERS = ("composer-styles", "composer-chorales")
COMPOSER_ALIASES = {"default": "composer-styles", "styles": "composer-styles", "chorales": "composer-chorales"}
DEFAULT_COMPOSER_DIR = PRETRAINED_DIR / COMPOSER_ALIASES["default"]
# Weight formats a composer samples with (float32 by default); likelihoods are measured in float32.
COMPOSER_SAMPLING_WEIGHTS = ("float32", "int8")
# General MIDI soundfont of the Debian package fluid-soundfont-gm (reference renders, datasets).
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")

# The one environment variable that moves the cache (converted MIDI corpora and the like).
CACHE_ENV = "TIMBRE_CACHE"
# Older name of CACHE_ENV, still read with a DeprecationWarning.
DEPRECATED_CACHE_ENV = "TIMBRE_CACHE_DIR"


def cache_dir() -> Path:
    """Where timbre caches what it derives once: ``$TIMBRE_CACHE``, else ``$XDG_CACHE_HOME/timbre``
    or ``~/.cache/timbre``. The folder is not created here."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get(DEPRECATED_CACHE_ENV):
        warnings.warn(
            f"${DEPRECATED_CACHE_ENV} is deprecated; set ${CACHE_ENV} instead", DeprecationWarning, stacklevel=2
        )
        return Path(os.environ[DEPRECATED_CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "timbre"
