"""Morph within one note: the timbre glides from one instrument to another while the note sounds.

Writes one 6 s note per morph curve (linear, ease, sigmoid) with its rainbowgram, plus the two
endpoint notes for comparison, under ``--out`` (default ``out/morph_over_time``).

    python examples/morph_over_time.py [--a FILE] [--b FILE] [--pitch 55] [--seconds 6] [--model default]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timbre
from timbre.data.timbre_set import TIMBRE_SET_DIR, timbre_file_name
from timbre.plots import plot_rainbowgram
from timbre.sound_design import morph_note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--a", default=str(TIMBRE_SET_DIR / timbre_file_name(71)), help="start (default: bundled clarinet)"
    )
    parser.add_argument(
        "--b", default=str(TIMBRE_SET_DIR / timbre_file_name(56)), help="end (default: bundled trumpet)"
    )
    parser.add_argument("--pitch", type=int, default=55)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", default="out/morph_over_time")
    args = parser.parse_args()

    model = timbre.load(args.model)
    a, b = model.encode(args.a), model.encode(args.b)
    out = Path(args.out)
    notes = {
        f"endpoint_{name}": model.synthesize(e, pitch=args.pitch, seconds=args.seconds)
        for name, e in (("a", a), ("b", b))
    }
    for curve in ("linear", "ease", "sigmoid"):
        notes[f"morph_{curve}"] = morph_note(model, a, b, pitch=args.pitch, seconds=args.seconds, curve=curve)
    for name, audio in notes.items():
        print(f"wrote {timbre.save_wav(out / f'{name}.wav', audio, model.sample_rate)}")
        plot_rainbowgram(audio, out / f"{name}.png", title=name.replace("_", " "), sample_rate=model.sample_rate)
        print(f"wrote {out / f'{name}.png'}")


if __name__ == "__main__":
    main()
