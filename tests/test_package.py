"""The package surface: the public names, one place for paths and constants, and what inference imports."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import warnings

import pytest

import timbre
from timbre import constants
from timbre.models.composer import Composer
from timbre.sound_design import interpolation_sweep, morph_note, timbre_grid
from timbre.symbolic.compose import compose, compose_many
from timbre.synthesizer import TimbreModel

PUBLIC_API = [
    "Embedding", "SAMPLE_RATE", "TimbreError", "TimbreModel", "audio", "compose", "interpolate", "load",
    "load_audio", "plots", "render", "save_wav",
]  # fmt: skip

# Inference (load, encode, synthesize, render, compose) must not need the training stack.
INFERENCE_SCRIPT = """
import json, sys
import numpy as np
import timbre
from timbre.render import render_midi
from timbre.symbolic.compose import compose, load_composer

model = timbre.load()
note = (0.3 * np.sin(np.linspace(0, 2000, 16000))).astype(np.float32)
audio = model.synthesize(model.encode(note), pitch=60, seconds=0.5)
score = compose(load_composer(), bars=1, seed=0)
rendered = render_midi(score, model, progress=False)
training = sorted(name for name in sys.modules if name.split(".")[0] in ("hydra", "omegaconf", "auraloss"))
print(json.dumps({"training_modules": training, "samples": len(audio), "rendered": len(rendered.audio)}))
"""


def test_dir_lists_the_public_api_and_every_name_resolves():
    assert sorted(timbre.__all__) == sorted(PUBLIC_API)
    assert [name for name in dir(timbre) if not name.startswith("_")] == sorted(PUBLIC_API)
    for name in PUBLIC_API:
        assert getattr(timbre, name) is not None, name
    assert timbre.SAMPLE_RATE == constants.SAMPLE_RATE == 16000
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        timbre.nope  # noqa: B018


def test_inference_does_not_import_hydra_omegaconf_or_auraloss():
    result = subprocess.run([sys.executable, "-c", INFERENCE_SCRIPT], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["samples"] == 8000 and report["rendered"] > 0
    assert report["training_modules"] == [], report["training_modules"]


@pytest.mark.parametrize(
    "function, positional",
    [
        (TimbreModel.synthesize, ["self", "embedding"]),
        (TimbreModel.synthesize_batch, ["self", "embeddings", "pitches"]),
        (compose, ["composer"]),
        (compose_many, ["composer", "count"]),
        (Composer.generate, ["self", "prompt", "max_new_tokens"]),
        (interpolation_sweep, ["model", "a", "b"]),
        (timbre_grid, ["model", "corners"]),
        (morph_note, ["model", "a", "b"]),
    ],
)
def test_sampling_and_synthesis_settings_are_keyword_only(function, positional):
    parameters = inspect.signature(function).parameters.values()
    assert [p.name for p in parameters if p.kind is not p.KEYWORD_ONLY] == positional


def test_one_cache_variable_and_its_deprecated_alias(monkeypatch, tmp_path):
    monkeypatch.delenv("TIMBRE_CACHE", raising=False)
    monkeypatch.delenv("TIMBRE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert constants.cache_dir() == tmp_path / "xdg" / "timbre"
    monkeypatch.setenv("TIMBRE_CACHE_DIR", str(tmp_path / "old"))
    with pytest.warns(DeprecationWarning, match=r"\$TIMBRE_CACHE_DIR is deprecated; set \$TIMBRE_CACHE"):
        assert constants.cache_dir() == tmp_path / "old"
    monkeypatch.setenv("TIMBRE_CACHE", str(tmp_path / "new"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the current name wins, silently
        assert constants.cache_dir() == tmp_path / "new"


def test_the_bundled_files_are_where_the_constants_say():
    for name in ("fast", "fast-v2", "fast-v3", "fast-v4", "fast-v5", "fast-v6", "fast-v7", "fast-v7-refined",
                 "wavenet-v1", "wavenet-v2"):  # fmt: skip
        assert (constants.PRETRAINED_DIR / name / "model.pt").is_file()
    assert (constants.DEFAULT_COMPOSER_DIR / "model.pt").is_file()
    assert (constants.TIMBRE_SET_DIR / "index.json").is_file()
