"""Does a model hold the pitch when a note's embedding is played at other pitches?

For every note of a test set at ``--source-pitch`` (one per instrument), encodes it and
synthesizes 1 s at each ``--pitches`` value, then scores the pitch with PESTO as
``timbre evaluate`` does (median of the sounding frames within 50 cents). Prints, per model,
the fraction of correct notes at each target pitch and overall: the musician's use (encode one
sound, play it anywhere) rather than the autoencoder's (decode at the note's own pitch). Notes are
encoded without their pitch, as a musician's file would be: a model with partials on the octave
below estimates it (PESTO) and reads that octave at it (``TimbreModel.reads_source_pitch``).

    python benchmarks/transposed_pitch.py MODEL... [--data data/eval-timgm6mb] [--source-pitch 60]
                                          [--pitches 48 67 72 79 84]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import timbre
from timbre.evaluation.metrics import pitch_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="bundled model names, checkpoints or run directories")
    parser.add_argument("--data", default="data/eval-timgm6mb", help="a test set (timbre evaluate build-testset)")
    parser.add_argument("--source-pitch", type=int, default=60)
    parser.add_argument("--pitches", type=int, nargs="+", default=[48, 67, 72, 79, 84])
    args = parser.parse_args()
    torch.set_num_threads(1)
    examples = json.loads((Path(args.data) / "examples.json").read_text())
    notes = sorted(name for name, example in examples.items() if example["pitch"] == args.source_pitch)
    print(f"{len(notes)} notes at MIDI {args.source_pitch} from {args.data}, each played at {args.pitches}")
    print(f"{'model':>12} " + " ".join(f"{pitch:>6}" for pitch in args.pitches) + f" {'all':>6}")
    for name in args.models:
        model = timbre.load(name)
        correct = np.zeros((len(notes), len(args.pitches)), dtype=bool)
        for row, note in enumerate(notes):
            embedding = model.encode(Path(args.data) / "audio" / f"{note}.wav")
            audio = np.stack([model.synthesize(embedding, pitch=p, seconds=1.0, seed=0) for p in args.pitches])
            correct[row] = [score.correct for score in pitch_scores(audio, args.pitches, 16000)]
        cells = " ".join(f"{100 * column.mean():>5.0f}%" for column in correct.T)
        print(f"{name:>12} {cells} {100 * correct.mean():>5.1f}%", flush=True)


if __name__ == "__main__":
    main()
