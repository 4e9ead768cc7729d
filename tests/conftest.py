"""Fixtures shared by the test suite.

- ``note_dataset``: six real FluidR3_GM notes of 1 s in the NSynth layout (train and valid).
- ``fluidr3_soundfont``: path of FluidR3_GM.sf2 (tests using it are skipped where it is missing).
- ``fluidr3_dataset``: nine 4 s FluidR3_GM notes in all three splits (piano in train, flute in
  valid, violin in test; pitches 48/60/72, velocity 100). Session-wide, read-only.
- ``MIDI_FIXTURES``: small MIDI files written by ``tests/fixtures/make_midi.py`` (a pop band with
  drums, a solo piano piece, a primer melody, an empty file, two corrupt ones); ``SONGS`` are the
  multi-bar pieces among them, plus every MIDI file of the folder ``$TIMBRE_TEST_MIDI`` names (an
  optional extra set of real songs; the suite never needs it).
- ``nsynth_fixture_root``: a hand-made dataset in the official NSynth layout (``tests/fixtures/nsynth/``:
  an ``examples.json`` in NSynth's exact format, with wavs synthesised here as sines at each
  note's pitch). Session-wide: copy it before changing it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

# The suite's models are tiny: one thread avoids oversubscribing the 2-core CI machine, which makes
# small convolutions many times slower; `make test` uses the cores with two pytest-xdist workers
# instead (one thread each). Subprocesses inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
FIXTURES = Path(__file__).parent / "fixtures"
MIDI_FIXTURES = FIXTURES / "midi"
EXTRA_MIDI = Path(os.environ["TIMBRE_TEST_MIDI"]) if os.environ.get("TIMBRE_TEST_MIDI") else None


def readable_songs() -> list[Path]:
    """The fixture songs, then the readable files of ``$TIMBRE_TEST_MIDI`` (if set), sorted by name."""
    songs = [MIDI_FIXTURES / "band.mid", MIDI_FIXTURES / "piano.mid"]
    if EXTRA_MIDI is not None:
        from timbre.errors import MidiError
        from timbre.io.midi import is_midi_file, load_score

        for path in sorted(path for path in EXTRA_MIDI.iterdir() if is_midi_file(path)):
            try:
                load_score(path)
            except MidiError:
                continue  # the extra set may hold broken files on purpose
            songs.append(path)
    return songs


SONGS = readable_songs()

# Notes of the hand-made fixture that stop sounding early (seconds), like NSynth's percussive notes.
FIXTURE_SOUNDING_SECONDS = {"guitar_electronic_028-060-127": 0.5}


@pytest.fixture(scope="session")
def note_dataset(fluidr3_soundfont: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six real FluidR3_GM notes of 1 s in the NSynth layout: four train (piano, violin), two valid (flute)."""
    from timbre.data.soundfont import build_dataset

    root = tmp_path_factory.mktemp("notes")
    build_dataset(
        fluidr3_soundfont, root, programs=[0, 40, 73], pitches=[60, 64], velocities=[100],
        seconds=1.0, hold=0.75, valid=0.34, test=0.0, progress=False,
    )  # fmt: skip
    return root


@pytest.fixture(scope="session")
def fluidr3_soundfont() -> Path:
    if not SOUNDFONT.is_file():
        pytest.skip(f"{SOUNDFONT} is not installed (Debian package fluid-soundfont-gm)")
    return SOUNDFONT


@pytest.fixture(scope="session")
def fluidr3_dataset(fluidr3_soundfont: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from timbre.data.soundfont import build_dataset

    root = tmp_path_factory.mktemp("fluidr3") / "dataset"
    build_dataset(
        fluidr3_soundfont, root, programs=(0, 40, 73), pitches=(48, 60, 72), velocities=(100,),
        progress=False, workers=1,
    )  # fmt: skip
    return root


def fixture_note(pitch: int, velocity: int, sounding_seconds: float = 4.0, sample_rate: int = 16000) -> np.ndarray:
    """A 4 s test note ``[64000]``: a decaying sine at ``pitch``, level set by ``velocity``, then silence."""
    time = np.arange(4 * sample_rate) / sample_rate
    frequency = 440.0 * 2.0 ** ((pitch - 69) / 12)
    audio = (velocity / 127) * 0.8 * np.exp(-time) * np.sin(2 * np.pi * frequency * time)
    audio[time >= sounding_seconds] = 0.0
    return audio.astype(np.float32)


@pytest.fixture(scope="session")
def nsynth_fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from timbre.io.audio import save_wav

    root = tmp_path_factory.mktemp("nsynth")
    shutil.copytree(FIXTURES / "nsynth", root, dirs_exist_ok=True)
    for split_dir in root.iterdir():
        examples = json.loads((split_dir / "examples.json").read_text())
        for note_str, fields in examples.items():
            audio = fixture_note(fields["pitch"], fields["velocity"], FIXTURE_SOUNDING_SECONDS.get(note_str, 4.0))
            save_wav(split_dir / "audio" / f"{note_str}.wav", audio)
    return root


def _save_untrained(tmp_path_factory, model_name: str) -> Path:
    """A checkpoint of an untrained ``model=<model_name>`` autoencoder (seeded weights)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from timbre.train.app import CONFIG_DIR
    from timbre.train.checkpoint import save_checkpoint

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        config = compose("train", overrides=[f"model={model_name}"])
    model_config = OmegaConf.to_container(config.model, resolve=True)
    torch.manual_seed(0)
    model = instantiate(model_config)
    path = tmp_path_factory.mktemp(f"untrained-{model_name}") / "model.pt"
    save_checkpoint(path, {"model_config": model_config, "model": model.state_dict()})
    return path


@pytest.fixture(scope="session")
def fast_checkpoint(tmp_path_factory) -> Path:
    """An untrained parallel (``model=fast``) autoencoder checkpoint: right shapes, random sound."""
    return _save_untrained(tmp_path_factory, "fast")


@pytest.fixture(scope="session")
def wavenet_checkpoint(tmp_path_factory) -> Path:
    """An untrained autoregressive ``model=tiny`` autoencoder checkpoint."""
    return _save_untrained(tmp_path_factory, "tiny")
