"""``timbre dataset from-folder`` speed on a sound designer's folder, optionally against an older analysis.

The folder is rendered with FluidSynth from a soundfont (TimGM6mb by default) as a sample pack
holds it: 64 one-shots of four instruments (clarinet, piano, nylon guitar, violin) over three
octaves, 0.8-4 s long, as 44.1 kHz stereo 24-bit WAV, 48 kHz mono float WAV and 22.05 kHz FLAC;
four phrases of four notes in a row (one every 0.75 s); and junk: a silent file, a noise file, a
snare hit and a text file. 80 notes in all, each with the pitch it was rendered at.

    python benchmarks/from_folder_speed.py [--workers 2] [--baseline REV] [--repeats 1] [--recordings DIR]

Each build runs in a fresh Python process, as a ``timbre dataset from-folder`` command would (its
own imports before the build are not timed). For each: notes kept, how many have the rendered
pitch, wall time of the build, start-up (until the first file's analysis came back: worker
processes, their imports, PESTO), notes per second after start-up (the figure
``FolderSummary.notes_per_second`` reports, the issue's target) and end to end.
``--recordings DIR`` measures an existing folder instead (no rendered pitches to compare with),
e.g. the one ``benchmarks/finetune_own_sounds.py --out DIR`` renders (72 clarinet notes).

``--baseline REV`` also runs the analysis of ``timbre/data/from_folder.py`` as it was at git
revision ``REV`` (loaded from ``git show``, the rest of the package as it is now) on the same
folder, alternating with the current one, and compares their outputs: the same notes kept (file
and onset), the same MIDI pitches, the largest difference of the fractional pitch estimates in
cents, and the same rejection reasons. The table reports the load average: other jobs slow it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from timbre.evaluation.testset import TIMGM6MB
from timbre.io.fluidsynth import render_note

REPOSITORY = Path(__file__).resolve().parent.parent
# (program, name): clarinet, acoustic grand piano, nylon guitar, violin.
INSTRUMENTS = ((71, "clarinet"), (0, "piano"), (24, "guitar"), (40, "violin"))
ONE_SHOTS_PER_INSTRUMENT = 16
PHRASE_NOTES, PHRASE_STEP_SECONDS = 4, 0.75
# (rate, channels, subtype, suffix) in turn.
FORMATS = ((44100, 2, "PCM_24", ".wav"), (48000, 1, "FLOAT", ".wav"), (22050, 1, "PCM_16", ".flac"))


def render_folder(folder: Path, soundfont: Path) -> dict[str, list[int]]:
    """Write the recordings; returns relative path -> rendered pitches in order (empty for junk)."""
    truth: dict[str, list[int]] = {}
    rng = np.random.default_rng(0)

    def write(relative: str, audio: np.ndarray, rate: int, channels: int, subtype: str) -> None:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = np.stack([audio, 0.9 * audio], axis=1) if channels == 2 else audio
        soundfile.write(path, data, rate, subtype=subtype)

    for number, (program, name) in enumerate(INSTRUMENTS):
        for take in range(ONE_SHOTS_PER_INSTRUMENT):
            pitch = 48 + (7 * take + 3 * number) % 36
            seconds = (0.8, 1.5, 2.5, 4.0)[take % 4]
            rate, channels, subtype, suffix = FORMATS[(take + number) % len(FORMATS)]
            audio = render_note(soundfont, program, pitch, 100, seconds=seconds, hold=0.75 * seconds, sample_rate=rate)
            relative = f"{name}/{name.title()} take {take + 1:02d}{suffix}"
            write(relative, audio, rate, channels, subtype)
            truth[relative] = [pitch]
    for number, (program, name) in enumerate(INSTRUMENTS):
        pitches = [55 + 5 * number + step for step in (0, 4, 7, 12)][:PHRASE_NOTES]
        rate = 44100
        notes = [render_note(soundfont, program, p, 100, PHRASE_STEP_SECONDS, 0.6, sample_rate=rate) for p in pitches]
        relative = f"phrases/{name} arpeggio.wav"
        write(relative, np.concatenate(notes), rate, 2, "PCM_24")
        truth[relative] = pitches
    write("junk/room tone.wav", np.zeros(44100, dtype=np.float32), 44100, 1, "PCM_16")
    write("junk/noise.wav", 0.2 * rng.standard_normal(48000).astype(np.float32), 48000, 1, "PCM_16")
    snare = render_note(soundfont, 0, 38, 100, seconds=1.0, hold=0.5, sample_rate=44100, bank=128)
    write("junk/snare.wav", snare, 44100, 2, "PCM_16")
    truth["junk/room tone.wav"] = truth["junk/noise.wav"] = truth["junk/snare.wav"] = []
    (folder / "junk" / "notes.txt").write_text("recorded on a Tuesday\n")
    return truth


# One build in a fresh interpreter; argv: module, folder holding it ("": the package's), recordings, dataset, workers.
BUILD = """
import json, sys, time
if sys.argv[2]:
    sys.path.insert(0, sys.argv[2])
module = __import__(sys.argv[1], fromlist=["build_from_folder"])
started = time.perf_counter()
workers = int(sys.argv[5])
summary = module.build_from_folder(sys.argv[3], sys.argv[4], instrument="pack", progress=False, workers=workers)
print(json.dumps({"wall": time.perf_counter() - started, "startup": summary.startup_seconds,
                  "rate": summary.notes_per_second}))
"""


def baseline_source(revision: str, where: Path) -> None:
    """Write ``timbre/data/from_folder.py`` at git ``revision`` to ``where/from_folder_baseline.py``."""
    source = subprocess.run(
        ["git", "show", f"{revision}:timbre/data/from_folder.py"],
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (where / "from_folder_baseline.py").write_text(source)


def build(module: str, module_folder: str, recordings: Path, dataset: Path, workers: int) -> dict[str, float]:
    """Wall time, start-up and notes per second of one build in a fresh process."""
    command = [sys.executable, "-c", BUILD, module, module_folder, str(recordings), str(dataset), str(workers)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def outcome(dataset: Path) -> tuple[dict[tuple[str, float], dict[str, Any]], dict[str, list[str]]]:
    """Kept notes by (file, onset) and every file's rejection reasons (first word, in order)."""
    notes = {}
    for split in ("train", "valid"):
        for fields in json.loads((dataset / f"nsynth-{split}" / "examples.json").read_text()).values():
            notes[(fields["source_file"], fields["source_seconds"])] = fields
    detail = json.loads((dataset / "report.json").read_text())["files_detail"]
    reasons = {file: [r["reason"].split(" (")[0] for r in entry["rejected"]] for file, entry in detail.items()}
    return notes, reasons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soundfont", default=str(TIMGM6MB))
    parser.add_argument("--workers", type=int, default=2, help="from-folder processes (default: 2)")
    parser.add_argument("--baseline", metavar="REV", help="also run from_folder.py of this git revision")
    parser.add_argument("--repeats", type=int, default=1, help="builds of each analysis (default: 1)")
    parser.add_argument("--recordings", default=None, help="measure this folder (default: render one)")
    parser.add_argument("--out", default=None, help="keep the recordings and datasets here (default: a temp dir)")
    args = parser.parse_args()

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="from-folder-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.recordings:
        recordings, truth = Path(args.recordings), None
        print(f"folder {recordings}; workers {args.workers}")
    else:
        recordings = work / "recordings"
        shutil.rmtree(recordings, ignore_errors=True)
        truth = render_folder(recordings, Path(args.soundfont))
        print(f"{sum(map(len, truth.values()))} rendered notes in {len(truth)} audio files; workers {args.workers}")
    analyses = {"current": ("timbre.data.from_folder", "")}
    if args.baseline:
        baseline_source(args.baseline, work)
        analyses = {f"at {args.baseline}": ("from_folder_baseline", str(work)), **analyses}
    print(f"load average at start: {os.getloadavg()[0]:.1f}\n")
    header = f"{'analysis':>16} {'run':>3} | {'kept':>4} {'right':>5} | {'wall s':>6} {'start s':>7} | "
    header += f"{'notes/s after start':>19} {'end to end':>10}"
    print(header)
    print("-" * len(header))
    outcomes = {}
    for repeat in range(args.repeats):
        for label, (module, module_folder) in analyses.items():
            dataset = work / f"dataset-{label.replace(' ', '-')}-{repeat}"
            shutil.rmtree(dataset, ignore_errors=True)
            timing = build(module, module_folder, recordings, dataset, args.workers)
            notes, reasons = outcome(dataset)
            outcomes[label] = notes, reasons
            right = sum(f["pitch"] in truth[f["source_file"]] for f in notes.values()) if truth else "-"
            print(
                f"{label:>16} {repeat + 1:>3} | {len(notes):>4} {right:>5} | {timing['wall']:>6.1f} "
                f"{timing['startup']:>7.1f} | {timing['rate']:>19.1f} {len(notes) / timing['wall']:>10.1f}"
            )
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    if args.baseline:
        (old_notes, old_reasons), (new_notes, new_reasons) = outcomes.values()
        both = old_notes.keys() & new_notes.keys()
        cents = [100 * abs(old_notes[k]["pitch_estimate"] - new_notes[k]["pitch_estimate"]) for k in both]
        print(f"same notes kept (file, onset): {old_notes.keys() == new_notes.keys()}", end="")
        print(f" (only before: {sorted(old_notes.keys() - both)}, only now: {sorted(new_notes.keys() - both)})")
        print(f"same MIDI pitches: {all(old_notes[k]['pitch'] == new_notes[k]['pitch'] for k in both)}")
        if cents:
            print(f"pitch estimate difference: median {np.median(cents):.1f}, largest {max(cents):.1f} cents")
        print(f"same rejection reasons: {old_reasons == new_reasons}")
        for file in sorted(old_reasons.keys() | new_reasons.keys()):
            if old_reasons.get(file) != new_reasons.get(file):
                print(f"  {file}: {old_reasons.get(file)} -> {new_reasons.get(file)}")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
