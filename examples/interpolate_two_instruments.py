"""Blend two instruments: a slerp sweep between their embeddings, beside the crossfade baseline.

The embedding sweep changes the *timbre* step by step while keeping one pitch; the crossfade
mixes the two decoded waveforms, so you hear two instruments at once instead of a new one.

Writes under ``--out`` (default ``out/interpolate_two_instruments``): one WAV per step for each
method and a rainbowgram sheet per method.

    python examples/interpolate_two_instruments.py [--a FILE] [--b FILE] [--pitch 60] [--steps 7]
        [--model default] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timbre
from timbre.data.timbre_set import TIMBRE_SET_DIR, timbre_file_name
from timbre.sound_design import interpolation_sweep, write_notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--a", default=str(TIMBRE_SET_DIR / timbre_file_name(73)), help="first sound (default: bundled flute)"
    )
    parser.add_argument(
        "--b", default=str(TIMBRE_SET_DIR / timbre_file_name(42)), help="second sound (default: bundled cello)"
    )
    parser.add_argument("--pitch", type=int, default=60)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", default="out/interpolate_two_instruments")
    args = parser.parse_args()

    model = timbre.load(args.model)
    a, b = model.encode(args.a), model.encode(args.b)  # encode once, reuse for both methods
    for method in ("slerp", "crossfade"):
        audio, mixes = interpolation_sweep(model, a, b, steps=args.steps, pitch=args.pitch, seconds=4.0, method=method)
        names = [f"{method}_{i:02d}_mix_{mix:.2f}" for i, mix in enumerate(mixes)]
        labels = [f"{method} {mix:.2f}" for mix in mixes]
        for path in write_notes(Path(args.out), audio, names, model.sample_rate, f"{method}.png", labels):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
