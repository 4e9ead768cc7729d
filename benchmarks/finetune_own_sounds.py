"""Train on your own sounds: from-folder speed, and what a fine-tune of at most 10 minutes buys.

The case of the "own sounds" issue: 48 notes of one instrument the default model never heard
(train) and 24 other notes of it (held out). The notes are rendered from TimGM6mb (a soundfont
timbre never trains on: fine-tuning on it here measures adaptation to a new instrument, on notes
held out from that fine-tune) as a sound designer's folder would hold them: one WAV per note,
44.1 kHz stereo, names without pitches. Then, end to end:

1. ``timbre dataset from-folder`` on the folder (``--valid 1/3``: every third note in pitch order
   is held out): notes per second, and how many pitches PESTO got right against the rendered ones;
2. ``timbre-train experiment=finetune data.root=DS finetune.max_minutes=...``: the held-out notes'
   multi-scale spectral distance by the base model and by the fine-tuned one (the model card's
   figures), their ratio and the improvement (target: at least 20%), and the wall time.

    python benchmarks/finetune_own_sounds.py [--program 71] [--max-seconds 600] [--base default] [--out DIR]

``--max-seconds`` caps the training part (the target is 10 minutes); a short value (20) checks that
the pipeline runs. The table reports the load average: other jobs on the machine slow it down.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from timbre.data.from_folder import build_from_folder
from timbre.evaluation.testset import TIMGM6MB
from timbre.io.audio import resample
from timbre.io.fluidsynth import render_note

TRAIN_NOTES, HELD_OUT_NOTES = 48, 24
VELOCITIES = (80, 110)
TARGET_IMPROVEMENT = 0.20


def render_recordings(folder: Path, soundfont: Path, program: int, lowest: int) -> dict[str, int]:
    """72 notes (36 pitches from ``lowest`` x 2 velocities) as 44.1 kHz stereo WAVs; returns name -> pitch."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    pitches = range(lowest, lowest + (TRAIN_NOTES + HELD_OUT_NOTES) // len(VELOCITIES))
    for number, (pitch, velocity) in enumerate((p, v) for p in pitches for v in VELOCITIES):
        audio = resample(render_note(soundfont, program, pitch, velocity, seconds=4.0, hold=3.0), 16000, 44100)
        name = f"take {number:03d}.wav"
        soundfile.write(folder / name, np.stack([audio, audio], axis=1), 44100, subtype="PCM_24")
        truth[name] = pitch
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soundfont", default=str(TIMGM6MB))
    parser.add_argument("--program", type=int, default=71, help="General MIDI program (default: 71, clarinet)")
    parser.add_argument("--lowest", type=int, default=50, help="lowest of the 36 pitches (default: 50)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="cap of the fine-tune's training part")
    parser.add_argument("--from-folder-only", action="store_true", help="measure from-folder, skip the fine-tune")
    parser.add_argument("--base", default="default", help="model to fine-tune (default: the bundled default)")
    parser.add_argument("--workers", type=int, default=2, help="from-folder processes (default: 2)")
    parser.add_argument("--out", default=None, help="keep the recordings, dataset and run here (default: a temp dir)")
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir

    from timbre.train.app import CONFIG_DIR, train

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    recordings, dataset, run = work / "recordings", work / "dataset", work / "run"
    for path in (dataset, run):
        shutil.rmtree(path, ignore_errors=True)
    truth = render_recordings(recordings, Path(args.soundfont), args.program, args.lowest)

    summary = build_from_folder(
        recordings, dataset, instrument=f"gm{args.program}", valid=1 / 3, progress=False, workers=args.workers
    )
    examples = {}
    for split in ("train", "valid"):
        examples.update(json.loads((dataset / f"nsynth-{split}" / "examples.json").read_text()))
    right = sum(fields["pitch"] == truth[fields["source_file"]] for fields in examples.values())

    print(f"from-folder: {summary.describe()}\n  pitch = rendered pitch: {right} / {len(examples)}")
    if args.from_folder_only:
        return
    overrides = [
        "experiment=finetune",
        f"data.root={dataset}",
        f"finetune.base={args.base}",
        f"finetune.max_minutes={args.max_seconds / 60}",
        "trainer.progress=false",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        config = compose("train", overrides=overrides)
    started = time.perf_counter()
    result = train(config, run_dir=run)
    seconds = time.perf_counter() - started
    comparison = json.loads((run / "model" / "evaluation" / "report.json").read_text())["systems"]
    before, after = comparison["base"]["spectral_distance"], comparison["fine-tuned"]["spectral_distance"]
    improvement = 1.0 - after / before

    print(f"\nfine-tuning {args.base} on TimGM6mb program {args.program} (pitches {args.lowest}-{args.lowest + 35})")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}\n")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| from-folder: notes kept / files | {sum(summary.notes.values())} / {summary.files} | |")
    print(f"| from-folder: notes per second ({args.workers} workers) | {summary.notes_per_second:.1f} | >= 20 |")
    print(f"| from-folder: start-up (loading PESTO, workers) (s) | {summary.startup_seconds:.1f} | |")
    print(f"| from-folder: pitch = rendered pitch | {right} / {len(examples)} | |")
    print(f"| notes: train / held out | {summary.notes['train']} / {summary.notes['valid']} | 48 / 24 |")
    print(f"| fine-tune: steps ({result.finished_early or 'max_steps'}) | {result.step} | |")
    print(f"| fine-tune: wall time incl. scoring (min) | {seconds / 60:.1f} | training <= 10 |")
    print(f"| held-out spectral distance, base | {before:.3f} | |")
    print(f"| held-out spectral distance, fine-tuned | {after:.3f} | |")
    print(f"| fine-tuned / base | {after / before:.3f} | <= {1 - TARGET_IMPROVEMENT:.2f} |")
    print(f"| improvement | {100 * improvement:.1f}% | >= {100 * TARGET_IMPROVEMENT:.0f}% |")
    for system in ("base", "fine-tuned", "original"):
        if "pitch_accuracy" in comparison.get(system, {}):
            print(f"| held-out pitch accuracy, {system} | {100 * comparison[system]['pitch_accuracy']:.0f}% | |")
    print(f"\nmodel: {run / 'model'} (work folder {work})")


if __name__ == "__main__":
    main()
