"""Sampler export speed and file sizes (``timbre export``, ``timbre export-grid``).

Cases (the targets of the export issue, on a 2-core CPU with the bundled default model):

* ``sf2-4``: one SF2 of 4 presets (three bundled timbres and a blend), 3 velocity layers, a sample
  every 3 semitones over MIDI 24-96 (25 roots: 300 notes of 3 s). Target: under 30 s.
* ``sfz-4``: the same 4 instruments as an SFZ folder (size comparison).
* ``grid-5``: a 5x5 grid pack (25 presets, the same sampling: 1,875 notes) as one SF2 plus its
  JSON map. Target: under 2 minutes.

Each row gives the wall time of the whole export (encoding the sources, synthesis, loop search,
writing), the CPU time of this process (all its threads; on an otherwise idle machine with 2
threads the wall time approaches half of it), the notes of the instruments (keys x layers x
presets), the distinct samples stored (velocity layers that come out identical share one sample
and are synthesized once), the size on disk and the one-minute load average when the case ended
(other processes on the machine slow the wall times down: read the load with them).

    python benchmarks/export_speed.py [--model default] [--threads 2] [--cases sf2-4 sfz-4 grid-5] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

import timbre
from timbre.export import export_grid, export_instruments, sampling_plan

PRESETS = [("Piano", "gm:0"), ("Violin", "gm:40"), ("Flute", "gm:73"), ("Brass pad", "blend:gm:56,gm:89:0.6,0.4")]
GRID_CORNERS = ["gm:0", "gm:40", "gm:73", "gm:89"]
TARGETS = {"sf2-4": 30.0, "grid-5": 120.0}
CASES = ("sf2-4", "sfz-4", "grid-5")


def run_case(case: str, model: timbre.TimbreModel, out: Path):
    plan = sampling_plan(24, 96, step=3, velocity_layers=3)
    if case == "sf2-4":
        return export_instruments(model, PRESETS, out / "four.sf2", format="sf2", plan=plan), len(PRESETS) * plan.notes
    if case == "sfz-4":
        return export_instruments(model, PRESETS, out / "four_sfz", format="sfz", plan=plan), len(PRESETS) * plan.notes
    if case == "grid-5":
        return export_grid(model, GRID_CORNERS, out / "grid.sf2", size=5, format="sf2", plan=plan), 25 * plan.notes
    raise ValueError(f"unknown case {case!r}; cases: {', '.join(CASES)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="bundled model name or checkpoint (default: default)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--out", help="where to write the packs (default: a temporary folder, removed after)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = timbre.load(args.model)

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or scratch)
        rows = []
        for case in args.cases:
            started, cpu_started = time.perf_counter(), time.process_time()
            result, notes = run_case(case, model, out)
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            target = TARGETS.get(case)
            verdict = "-" if target is None else ("yes" if seconds < target else "NO")
            rows.append(
                (case, len(result.instruments), notes, result.samples, f"{result.bytes / 1e6:.1f}", f"{seconds:.1f}",
                 f"{cpu_seconds:.1f}", f"{notes / seconds:.0f}", "-" if target is None else f"< {target:.0f}", verdict,
                 f"{os.getloadavg()[0]:.1f}")
            )  # fmt: skip

    header = ("case", "presets", "notes", "samples", "MB", "wall s", "cpu s", "notes/s", "target s", "met", "load")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"model {model.name} ({model.decoder_kind} decoder), {args.threads} torch threads, {os.cpu_count()} CPUs")
    for row in [header, *rows]:
        print("  ".join(str(value).rjust(width) for value, width in zip(row, widths)))


if __name__ == "__main__":
    main()
