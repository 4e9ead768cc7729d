"""``timbre demo`` end to end on the bundled models: every file it promises, each one usable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import symusic

from timbre.cli import main

NOTE_SAMPLES = 4 * 16000  # every demo note lasts 4 s
RECONSTRUCTED = ["program-073-flute", "program-056-trumpet", "program-042-cello", "program-019-church_organ",
                 "program-000-acoustic_grand_piano"]  # fmt: skip
SWEEP_MIXES = [f"{index:02d}_mix_{mix:.2f}" for index, mix in enumerate(np.linspace(0, 1, 7))]


def expected_files() -> set[str]:
    """The demo's outputs, relative to ``--out``."""
    files = {f"reconstructions/{name}.wav" for name in RECONSTRUCTED} | {"reconstructions/original_vs_decoded.png"}
    for method in ("slerp", "crossfade"):
        files |= {f"sweep/{method}_{mix}.wav" for mix in SWEEP_MIXES} | {f"sweep/sweep_{method}.png"}
    files |= {f"grid/grid_r{row}_c{col}.wav" for row in range(3) for col in range(3)} | {"grid/grid.png"}
    files |= {"morph.wav", "morph.png", "chorale.mid", "chorale.wav", "chorale_morph.wav", "chorale.png"}
    return files | {f"{style}.{suffix}" for style in ("palestrina", "irish") for suffix in ("mid", "wav")}


def read_wav(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000 and audio.ndim == 1, f"{path}: {rate} Hz, shape {audio.shape}"
    return audio


@pytest.mark.slow
def test_demo_writes_every_promised_file_and_each_is_usable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--bars", "2", "--seed", "0"]) == 0
    written = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    assert written == expected_files()  # nothing missing, no stray temporary file
    printed = capsys.readouterr().out
    assert f"wrote {len(written)} files under {out}" in printed
    assert all(str(out / name) in printed for name in written)

    audio = {name: read_wav(out / name) for name in written if name.endswith(".wav")}
    for name, samples in audio.items():
        assert np.isfinite(samples).all(), name
        assert 0.01 < np.abs(samples).max() < 1.0, f"{name}: peak {np.abs(samples).max():.4f}"
        assert np.sqrt(np.mean(samples**2)) > 1e-3, f"{name} is nearly silent"
    notes = [name for name in audio if "/" in name or name.startswith("morph")]
    assert {audio[name].shape[0] for name in notes} == {NOTE_SAMPLES}
    # The sweep's ends are different instruments; the crossfade's middle is the mean of its ends.
    assert not np.allclose(audio["sweep/slerp_00_mix_0.00.wav"], audio["sweep/slerp_06_mix_1.00.wav"], atol=1e-3)
    ends = 0.5 * (audio["sweep/crossfade_00_mix_0.00.wav"] + audio["sweep/crossfade_06_mix_1.00.wav"])
    np.testing.assert_allclose(audio["sweep/crossfade_03_mix_0.50.wav"], ends, atol=2e-4)  # 16-bit rounding

    score = symusic.Score(str(out / "chorale.mid"))
    assert sorted(track.program for track in score.tracks if len(track.notes)) == [40, 41, 42, 43]
    music_seconds = score.to("second").end()
    assert music_seconds < audio["chorale.wav"].shape[0] / 16000 < music_seconds + 3.0  # plus the release
    assert audio["chorale.wav"].shape == audio["chorale_morph.wav"].shape
    assert not np.allclose(audio["chorale.wav"], audio["chorale_morph.wav"], atol=1e-3)  # the top voice morphs
    # The other styles, each in its own voices (choir and organ; fiddle).
    palestrina, irish = (symusic.Score(str(out / f"{style}.mid")) for style in ("palestrina", "irish"))
    assert {track.program for track in palestrina.tracks if len(track.notes)} <= {52, 53, 54, 19}
    assert [track.program for track in irish.tracks if len(track.notes)] == [110]

    for name in written:
        if name.endswith(".png"):
            data = (out / name).read_bytes()
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000, name
