"""An NSynth Super style grid: four instruments at the corners, blends everywhere between.

NSynth Super precomputed a grid of sounds between four corner instruments, weighting each corner
by its distance to the grid point. This writes such a grid at a few pitches, so the WAVs can be
loaded into a sampler: ``<out>/pitch_<p>/grid_r<row>_c<col>.wav`` and a rainbowgram sheet each.

    python examples/nsynth_super_grid.py [--size 5] [--pitches 48,60,72] [--weighting distance]
        [--corners A B C D] [--model default] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timbre
from timbre.data.timbre_set import TIMBRE_SET_DIR, timbre_file_name
from timbre.plots import plot_grid
from timbre.sound_design import timbre_grid

DEFAULT_CORNERS = [str(TIMBRE_SET_DIR / timbre_file_name(p)) for p in (73, 56, 42, 19)]  # flute, trumpet, cello, organ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corners", nargs=4, default=DEFAULT_CORNERS, metavar="SOUND")
    parser.add_argument("--size", type=int, default=5)
    parser.add_argument("--pitches", default="48,60,72")
    parser.add_argument("--weighting", choices=("bilinear", "distance"), default="distance")
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", default="out/nsynth_super_grid")
    args = parser.parse_args()

    model = timbre.load(args.model)
    corners = [model.encode(corner) for corner in args.corners]
    for pitch in (int(p) for p in args.pitches.split(",")):
        grid = timbre_grid(model, corners, size=args.size, pitch=pitch, seconds=4.0, weighting=args.weighting)
        directory = Path(args.out) / f"pitch_{pitch}"
        for row in range(args.size):
            for col in range(args.size):
                print(
                    f"wrote {timbre.save_wav(directory / f'grid_r{row}_c{col}.wav', grid[row, col], model.sample_rate)}"
                )
        print(f"wrote {plot_grid([list(r) for r in grid], directory / 'grid.png', sample_rate=model.sample_rate)}")


if __name__ == "__main__":
    main()
