"""The scripts in examples/ run end to end and write what they promise (untrained model, small sizes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, arguments, expected",
    [
        ("interpolate_two_instruments.py", ["--steps", "3"], ["slerp_01_mix_0.50.wav", "slerp.png", "crossfade.png"]),
        ("nsynth_super_grid.py", ["--size", "2", "--pitches", "60"], ["pitch_60/grid_r1_c1.wav", "pitch_60/grid.png"]),
        ("morph_over_time.py", ["--seconds", "2"], ["morph_ease.wav", "morph_ease.png", "endpoint_b.wav"]),
    ],
)
def test_example_writes_its_outputs(script, arguments, expected, fast_checkpoint, tmp_path):
    command = [
        sys.executable,
        str(EXAMPLES / script),
        "--model",
        str(fast_checkpoint),
        "--out",
        str(tmp_path),
        *arguments,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in expected:
        assert (tmp_path / name).stat().st_size > 1000, name
        assert f"wrote {tmp_path / name}" in result.stdout
