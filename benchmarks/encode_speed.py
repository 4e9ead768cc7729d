"""What refining an encoding costs: ``model.encode(note, refine=N)`` against the one-pass encoder.

Prints one row per step count: seconds per 4 s note (best of ``--repeats``), and the ratio to the
one-pass encoding (``refine=0``, the baseline) measured in the same run on the same note. The note
is a bundled timbre-set note with its stored refined encoding set aside, so that every row does
the work a user's own sound costs. Then the same for the stored lookup (the bundled notes).

    python benchmarks/encode_speed.py [--model default] [--steps 0 10 20 30] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

import timbre
from timbre.io.audio import load_audio
from timbre.render.timbres import TimbreSet


def seconds_per_encode(model: timbre.TimbreModel, audio, pitch: int, refine: int, repeats: int) -> float:
    """Best wall time of ``repeats`` encodings of ``audio`` at ``pitch`` with ``refine`` steps."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        model.encode(audio, pitch=pitch, refine=refine)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 10, 20, 30])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = timbre.load(args.model)
    entry = TimbreSet().entries[0]
    audio = load_audio(entry.path, model.sample_rate)[: 4 * model.sample_rate]
    known = dict(model.known_embeddings)
    model.known_embeddings.clear()
    print(f"model {model.name} (default refine {model.default_refine}), note {entry.path.name}, "
          f"{len(audio) / model.sample_rate:.1f} s, {args.threads} threads")  # fmt: skip
    baseline = seconds_per_encode(model, audio, entry.pitch, 0, args.repeats)
    print("| refine steps | s per note | ratio to one pass |")
    print("|---|---|---|")
    for steps in args.steps:
        took = baseline if steps == 0 else seconds_per_encode(model, audio, entry.pitch, steps, args.repeats)
        print(f"| {steps} | {took:.4f} | {took / baseline:.1f}x |")
    if model.default_refine and known:
        model.known_embeddings.update(known)
        full = load_audio(entry.path, model.sample_rate)
        took = seconds_per_encode(model, full, entry.pitch, model.default_refine, args.repeats)
        print(f"| {model.default_refine}, stored (bundled note) | {took:.4f} | {took / baseline:.2f}x |")


if __name__ == "__main__":
    main()
