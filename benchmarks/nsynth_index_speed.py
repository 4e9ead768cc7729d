"""Time to index an NSynth split: opening ``NoteDataset`` on splits of growing size.

Opening a split reads ``examples.json``, checks every note's fields, lists the audio folder once
to find missing wav files, and applies the filters; no audio is read. NSynth's train split has
289,205 notes, so this is what every training run and evaluation pays before its first batch.

For each size the script writes a synthetic split in the official layout (``examples.json`` with
NSynth's exact fields, and an empty wav file per note: indexing never opens them) into a
temporary folder, then opens it ``--repeats`` times and prints the best time, the rate, and the
same with a pitch filter (NSynth's 21-108 piano range, as the training configs use).

    python benchmarks/nsynth_index_speed.py [--sizes 1000 10000 100000 289205] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from functools import partial
from pathlib import Path

from timbre.data.nsynth import NoteDataset

NOTES_PER_INSTRUMENT = 440  # 88 pitches at 5 velocities, as in NSynth
VELOCITIES = (25, 50, 75, 100, 127)


def write_split(root: Path, notes: int) -> Path:
    """A synthetic ``nsynth-train`` split of ``notes`` notes (empty wav files) under ``root``."""
    split_dir = root / "nsynth-train"
    audio_dir = split_dir / "audio"
    audio_dir.mkdir(parents=True)
    examples = {}
    for number in range(notes):
        instrument = number // NOTES_PER_INSTRUMENT
        instrument_str = f"string_acoustic_{instrument:03d}"
        pitch, velocity = 21 + number % 88, VELOCITIES[number // 88 % 5]
        note_str = f"{instrument_str}-{pitch:03d}-{velocity:03d}"
        examples[note_str] = {
            "note": number, "note_str": note_str, "instrument": instrument, "instrument_str": instrument_str,
            "pitch": pitch, "velocity": velocity, "sample_rate": 16000, "qualities": [0] * 10,
            "qualities_str": [], "instrument_family": 8, "instrument_family_str": "string",
            "instrument_source": 0, "instrument_source_str": "acoustic",
        }  # fmt: skip
        (audio_dir / f"{note_str}.wav").touch()
    (split_dir / "examples.json").write_text(json.dumps(examples))
    return split_dir


def best_seconds(repeats: int, open_split) -> float:
    """The shortest of ``repeats`` wall times of ``open_split()`` (the least disturbed run)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        open_split()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000], help="notes per split")
    parser.add_argument("--repeats", type=int, default=3, help="timed openings per size (best is shown)")
    args = parser.parse_args()

    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at start")
    header = f"{'notes':>8} {'json MB':>8} | {'index s':>8} {'notes/s':>10} | {'pitch 21-108 s':>14} {'notes/s':>10}"
    print(header)
    print("-" * len(header))
    for notes in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            split_dir = write_split(root, notes)
            megabytes = (split_dir / "examples.json").stat().st_size / 1e6
            plain = best_seconds(args.repeats, partial(NoteDataset, root, "train"))
            filtered = best_seconds(args.repeats, partial(NoteDataset, root, "train", pitch_range=(21, 108)))
            dataset = NoteDataset(root, "train")
            assert len(dataset) == notes, f"indexed {len(dataset)} of {notes} notes"
        print(
            f"{notes:>8} {megabytes:>8.1f} | {plain:>8.3f} {notes / plain:>10.0f} | "
            f"{filtered:>14.3f} {notes / filtered:>10.0f}"
        )
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at end")


if __name__ == "__main__":
    main()
