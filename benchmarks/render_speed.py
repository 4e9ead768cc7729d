"""MIDI render time against the music's duration, for each decoder (and FluidSynth for scale).

Renders a window of a multitrack song (default: 60 s of What_a_Fool_Believes.mid from
``../shared/midi``, eight pitched tracks and drums, when that folder is beside the repository; else
the band fixture of the tests, ``tests/fixtures/midi/band.mid``) through the
bundled timbre set and prints one row per decoder: notes played and synthesized (the note cache),
time spent encoding the timbres and planning, synthesizing and mixing, and the real-time factor:
seconds of music (the window up to its last key up; the audio is longer by the release) per second
of wall time, above 1 being faster than real time; ``cpu s`` is the process's CPU time, which shows
how much of the wall time other processes took on a shared machine. The autoregressive decoder is
timed on a shorter window (``--wavenet-seconds``). FluidSynth rendering the same notes is timed
for scale.

Models: a bundled name or checkpoint path, or ``untrained:CONFIG`` (random weights from
``conf/model/CONFIG.yaml``, e.g. ``untrained:fast`` or ``untrained:small``); speed does not depend
on the weights.

    python benchmarks/render_speed.py [--midi FILE] [--start 30] [--seconds 60] [--wavenet-seconds 5]
        [--fast-model default] [--wavenet-model wavenet] [--release SECONDS] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch

import timbre
from timbre.render import DEFAULT_TIMBRE_SET, plan_render, render_fluidsynth, render_plan

SHARED_SONG = Path(__file__).resolve().parents[2] / "shared" / "midi" / "What_a_Fool_Believes.mid"
FIXTURE_SONG = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "midi" / "band.mid"


def load_model(name: str) -> timbre.TimbreModel:
    """A bundled model or checkpoint, or ``untrained:CONFIG`` built from the repository's Hydra config."""
    if not name.startswith("untrained:"):
        return timbre.load(name)
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from timbre.train.app import CONFIG_DIR

    config_name = name.split(":", 1)[1]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        config = compose("train", overrides=[f"model={config_name}"])
    torch.manual_seed(0)
    return timbre.TimbreModel(instantiate(config.model), name=name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--midi", type=Path, default=SHARED_SONG if SHARED_SONG.is_file() else FIXTURE_SONG, help="MIDI file"
    )
    parser.add_argument("--start", type=float, default=30.0, help="window start in seconds (default: 30)")
    parser.add_argument("--seconds", type=float, default=60.0, help="window length for the fast decoder (default: 60)")
    parser.add_argument(
        "--wavenet-seconds", type=float, default=5.0, help="window length for the wavenet decoder (0: skip)"
    )
    parser.add_argument("--fast-model", default="default", help="parallel model (default: bundled 'default')")
    parser.add_argument("--wavenet-model", default="wavenet", help="autoregressive model (default: bundled 'wavenet')")
    parser.add_argument("--timbre-set", type=Path, default=DEFAULT_TIMBRE_SET, help="timbre set (default: bundled)")
    parser.add_argument("--batch-size", type=int, default=32, help="notes per decoder call (default: 32)")
    parser.add_argument("--release", type=float, help="cap on each note's release in seconds (default: full release)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("timbre.render").setLevel(logging.ERROR)  # no drum-track notices in the table

    print(
        f"{args.midi.name}, from {args.start:g} s, release {'full' if args.release is None else args.release}; "
        f"{torch.get_num_threads()} torch threads, "
        f"load average {os.getloadavg()[0]:.2f} (1 min) at start"
    )
    header = (
        f"{'decoder':<11} {'model':<20} {'window s':>8} {'audio s':>8} {'notes':>6} {'synth.':>6} "
        f"{'cached':>6} {'plan s':>7} {'synth s':>8} {'wall s':>7} {'cpu s':>6} {'x real time':>11}"
    )
    print(header)
    print("-" * len(header))
    runs = [("fast", args.fast_model, args.seconds), ("wavenet", args.wavenet_model, args.wavenet_seconds)]
    for decoder, model_name, seconds in runs:
        if seconds <= 0:
            continue
        model = load_model(model_name)
        if model.decoder_kind != decoder:
            raise SystemExit(f"{model_name} has a {model.decoder_kind} decoder, expected {decoder}")
        end = args.start + seconds
        cpu = time.process_time()
        plan = plan_render(
            args.midi, model, timbre_set_dir=args.timbre_set, start=args.start, end=end, release=args.release
        )
        result = render_plan(plan, model, batch_size=args.batch_size)
        cpu = time.process_time() - cpu
        print(
            f"{decoder:<11} {model_name[-20:]:<20} {seconds:8.1f} {result.seconds:8.1f} {plan.notes:6d} "
            f"{plan.unique_notes:6d} {plan.cache_hits:6d} {plan.plan_seconds:7.2f} "
            f"{result.wall_seconds - plan.plan_seconds:8.2f} {result.wall_seconds:7.2f} {cpu:6.2f} "
            f"{result.realtime_factor:11.2f}"
        )
    began, cpu = time.perf_counter(), time.process_time()
    reference = render_fluidsynth(args.midi, start=args.start, end=args.start + args.seconds)
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    audio_seconds = reference.shape[0] / timbre.SAMPLE_RATE
    print(
        f"{'fluidsynth':<11} {'FluidR3_GM (ref.)':<20} {args.seconds:8.1f} {audio_seconds:8.1f} {'':>6} {'':>6} "
        f"{'':>6} {'':>7} {'':>8} {wall:7.2f} {cpu:6.2f} {args.seconds / wall:11.2f}"
    )
    print(
        f"load average {os.getloadavg()[0]:.2f} (1 min) at end; x real time = music seconds / wall seconds "
        "(cpu s: this process's CPU time; far below wall s means other processes held the cores)"
    )


if __name__ == "__main__":
    main()
