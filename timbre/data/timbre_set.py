"""The bundled timbre set: one reference note per instrument, so the demo and ``timbre render``
work without any files of the user's.

Each note follows the NSynth protocol (4 s, key held 3 s, pitch 60, velocity 100, 16 kHz) and is
rendered from a General MIDI soundfont. ``index.json`` lists ``{program, name, family, file}``.

Rebuild (the command that made the shipped set)::

    python -m timbre.data.timbre_set --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from timbre.constants import TIMBRE_SET_DIR
from timbre.data.families import gm_program
from timbre.data.soundfont import render_note
from timbre.io.audio import save_wav
from timbre.io.files import atomic_write

# Contrasting instruments covering every NSynth family the demo and renders need.
DEFAULT_TIMBRE_PROGRAMS = (0, 11, 19, 24, 32, 40, 42, 48, 52, 56, 60, 65, 71, 73, 80, 89)
REFERENCE_PITCH = 60
REFERENCE_VELOCITY = 100


def timbre_file_name(program: int) -> str:
    """``program-040-violin.wav`` style names."""
    slug = re.sub(r"[^a-z0-9]+", "_", gm_program(program).name.lower()).strip("_")
    return f"program-{program:03d}-{slug}.wav"


def build_timbre_set(soundfont: str | Path, out: str | Path = TIMBRE_SET_DIR, programs=DEFAULT_TIMBRE_PROGRAMS) -> Path:
    """Render the reference notes and their ``index.json`` into ``out``; returns the index path."""
    out = Path(out)
    entries = []
    for program in programs:
        audio = render_note(soundfont, program, REFERENCE_PITCH, REFERENCE_VELOCITY, seconds=4.0, hold=3.0)
        name = timbre_file_name(program)
        save_wav(out / name, audio)
        entry = gm_program(program)
        entries.append(
            {
                "program": program,
                "name": entry.name,
                "family": entry.family,
                "file": name,
                "pitch": REFERENCE_PITCH,
                "velocity": REFERENCE_VELOCITY,
            }
        )
    index = out / "index.json"
    with atomic_write(index, mode="w") as handle:
        json.dump({"soundfont": Path(soundfont).name, "notes": entries}, handle, indent=2)
    return index


def load_timbre_index(directory: str | Path = TIMBRE_SET_DIR) -> list[dict]:
    """The entries of a timbre set's ``index.json`` (with ``path`` added)."""
    directory = Path(directory)
    index = json.loads((directory / "index.json").read_text())
    return [{**entry, "path": directory / entry["file"]} for entry in index["notes"]]


def main() -> None:
    parser = argparse.ArgumentParser(description="Render the bundled timbre set.")
    parser.add_argument("--soundfont", required=True)
    parser.add_argument("--out", default=str(TIMBRE_SET_DIR))
    args = parser.parse_args()
    print(f"wrote {build_timbre_set(args.soundfont, args.out)}")


if __name__ == "__main__":
    main()
