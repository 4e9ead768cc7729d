"""The standard timbre test set: 24 General MIDI programs x 5 pitches rendered from one soundfont.

The programs span the twelve melodic GM families that hold sustained or struck notes, two each
(piano, chromatic percussion, organ, guitar, bass, strings, ensemble, brass, reed, pipe, synth
lead, synth pad), so plucked, struck, bowed, blown and synthetic notes are all judged. Every
program plays the same five pitches (C3, G3, C4, G4, C5: inside the range of all 24), so each
reconstruction can be compared with all 24 instruments at its pitch (timbre identification,
chance 1/24). Notes follow NSynth's protocol: 4 s, key held 3 s, velocity 100, 16 kHz mono.

The default soundfont is TimGM6mb (Debian ``timgm6mb-soundfont``), which timbre never trains on.
The folder holds ``examples.json`` and ``audio/*.wav`` directly (an NSynth split directory), plus
``testset.json`` recording how it was built.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from timbre.errors import DatasetError
from timbre.io.files import atomic_write

TIMGM6MB = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
# Two programs per family: piano 0 4 | chromatic percussion 11 12 | organ 16 19 | guitar 24 27 |
# bass 32 38 | strings 40 42 | ensemble 48 52 | brass 56 60 | reed 65 71 | pipe 73 75 |
# synth lead 80 81 | synth pad 89 90.
TESTSET_PROGRAMS = (0, 4, 11, 12, 16, 19, 24, 27, 32, 38, 40, 42, 48, 52, 56, 60, 65, 71, 73, 75, 80, 81, 89, 90)
TESTSET_PITCHES = (48, 55, 60, 67, 72)
TESTSET_VELOCITY = 100
RECIPE_FILE = "testset.json"
_STAGING_DIR = ".rendering"


def build_testset(
    soundfont: str | os.PathLike = TIMGM6MB,
    out: str | os.PathLike = "data/eval-timgm6mb",
    programs: Sequence[int] = TESTSET_PROGRAMS,
    pitches: Sequence[int] = TESTSET_PITCHES,
    seconds: float = 4.0,
    hold: float = 3.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Render the test set into ``out`` (an NSynth split directory); returns its recipe.

    A folder already holding the same recipe is left as it is; an interrupted build resumes.

    Args:
        soundfont: SF2 file to render with.
        out: destination folder (created).
        programs: General MIDI programs, one instrument each.
        pitches: MIDI pitches every program plays.
        seconds, hold: note length and how long the key is held.
        progress: show a progress bar.

    Raises:
        DatasetError: ``out`` holds a test set built with another recipe, or the soundfont lacks notes.
    """
    # Imported here: the FluidSynth binding is only needed to render.
    from timbre.data.soundfont import build_dataset

    out = Path(out)
    program_list, pitch_list = sorted(int(p) for p in programs), sorted(int(p) for p in pitches)
    recipe: dict[str, Any] = {
        "soundfont": str(Path(soundfont).resolve()),
        "programs": program_list,
        "pitches": pitch_list,
        "velocity": TESTSET_VELOCITY,
        "seconds": seconds,
        "hold": hold,
    }
    recipe_path = out / RECIPE_FILE
    if recipe_path.is_file():
        existing = json.loads(recipe_path.read_text())
        if {key: existing.get(key) for key in recipe} == recipe:
            return existing
        raise DatasetError(f"{out}: holds a test set built with another recipe ({recipe_path}); choose another folder")
    if (out / "examples.json").exists():
        raise DatasetError(f"{out}: already holds notes (examples.json) but no {RECIPE_FILE}; choose another folder")
    # build_dataset writes a dataset root; every instrument goes to its train split, which is then
    # moved up so that ``out`` itself is the split directory.
    staging = out / _STAGING_DIR
    summary = build_dataset(
        soundfont, staging, programs=program_list, pitches=pitch_list, velocities=[TESTSET_VELOCITY],
        seconds=seconds, hold=hold, valid=0.0, test=0.0, progress=progress,
    )  # fmt: skip
    expected = len(program_list) * len(pitch_list)
    if summary.notes["train"] != expected:
        raise DatasetError(
            f"{soundfont}: only {summary.notes['train']} of the {expected} test notes sound "
            f"(programs without samples: {summary.missing_programs or 'none'})"
        )
    split_dir = staging / "nsynth-train"
    os.replace(split_dir / "audio", out / "audio")
    os.replace(split_dir / "examples.json", out / "examples.json")
    shutil.rmtree(staging)
    recipe["notes"] = expected
    recipe["instruments"] = summary.instruments["train"]
    with atomic_write(recipe_path, "w") as file:
        json.dump(recipe, file, indent=2)
    return recipe
