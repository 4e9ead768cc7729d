"""A tiny many-style composer checkpoint, built once per test session from real corpus pieces.

Two styles of music21's bundled corpus (three Bach chorales, two trecento pieces) are converted
and tokenized for real; the model is an untrained tiny transformer (what is tested is structure:
conditioning, grammar, infilling, kept bars, reports), saved in the trainer's checkpoint format.
Import the fixtures into a test module to use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from timbre.data.style_corpus import build_music21_bundle
from timbre.models.composer import Composer
from timbre.train.checkpoint import save_checkpoint

TEST_STYLES = ("bach", "trecento")
PIECES_PER_STYLE = 3


# Built once per session even when several test modules import the fixtures (an imported fixture
# is a separate fixture in each module, so pytest alone would build it once per module).
_BUILT: dict[str, Any] = {}


@pytest.fixture(scope="session")
def styled_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus cache holding the converted test pieces."""
    if "cache" not in _BUILT:
        _BUILT["cache"] = tmp_path_factory.mktemp("music21_cache")
    return _BUILT["cache"]


@pytest.fixture(scope="session")
def styled_bundle(styled_cache: Path):
    if "bundle" not in _BUILT:
        _BUILT["bundle"] = build_music21_bundle(
            styles=list(TEST_STYLES), limit_per_style=PIECES_PER_STYLE, cache_dir=str(styled_cache), max_tokens=256,
            valid=0.34, test=0.34, progress=False,
        )  # fmt: skip
    return _BUILT["bundle"]


@pytest.fixture(scope="session")
def styled_checkpoint(styled_bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "checkpoint" in _BUILT:
        return _BUILT["checkpoint"]
    config = {
        "_target_": "timbre.models.composer.Composer",
        **styled_bundle.model_overrides,
        "dim": 32,
        "layers": 2,
        "heads": 2,
        "max_context": 256,
    }
    torch.manual_seed(0)
    model = Composer(**{key: value for key, value in config.items() if key != "_target_"})
    state = model.state_dict()
    folder = tmp_path_factory.mktemp("styled_composer")
    _BUILT["checkpoint"] = save_checkpoint(
        folder / "model.pt",
        {"model_config": config, "model": state, "ema": state, "artifacts": styled_bundle.artifacts, "step": 0},
    )
    return _BUILT["checkpoint"]
