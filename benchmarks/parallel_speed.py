"""Real-time factor of the parallel autoencoder's model configurations on this machine, side by side.

For every model config named (default: ``fast_v1``, the version-1 default, as the baseline, and
``fast``, today's default), built from ``conf/model/<name>.yaml`` through the checkpoint registry
with random weights (speed does not depend on them), prints the wall time to synthesize ``batch``
notes of ``--seconds`` seconds at ``--pitch`` and the real-time factor (seconds of audio per
second of wall time, median of ``--repeats`` timed runs after one warm-up), and the same for
encode + decode. The last column is each config's real-time factor divided by the first config's,
measured in the same run.

    python benchmarks/parallel_speed.py [--configs fast_v1 fast] [--batches 1 8 32] [--seconds 4]
                                        [--pitch 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import yaml

from timbre.models.registry import model_from_spec, spec_from_hydra_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
SAMPLE_RATE = 16000


def encode_and_decode(
    model: torch.nn.Module, audio: torch.Tensor, pitch: torch.Tensor, n_samples: int, generator: torch.Generator
) -> None:
    """Encode ``audio`` [batch, samples] and decode it back: the whole resynthesis path."""
    with torch.inference_mode():
        model.decoder.synthesize(model.encode(audio, pitch), pitch, n_samples, generator=generator)


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls, after one untimed warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs", nargs="+", default=["fast_v1", "fast"], help="conf/model names; the first is the baseline"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="batch sizes to time")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each note")
    parser.add_argument("--pitch", type=int, default=60, help="MIDI pitch of every note")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} torch threads, {args.seconds:g} s notes at MIDI {args.pitch}")
    print(
        f"{'config':>8} {'weights':>9} {'batch':>5} {'decode s':>9} {'decode x RT':>12} "
        f"{'enc+dec s':>10} {'enc+dec x RT':>13} {'decode vs first':>16}"
    )
    baseline: dict[int, float] = {}
    for name in args.configs:
        torch.manual_seed(0)
        spec = spec_from_hydra_config(yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text()))
        model = model_from_spec(spec).eval()
        weights = sum(p.numel() for p in model.parameters())
        n_samples = round(args.seconds * SAMPLE_RATE / model.hop_length) * model.hop_length
        for batch in args.batches:
            audio = (torch.rand(batch, n_samples) * 2 - 1) * 0.3
            pitch = torch.full((batch,), args.pitch)
            with torch.inference_mode():
                z = model.encode(audio, pitch)
            generator = torch.Generator().manual_seed(0)
            audio_seconds = batch * n_samples / SAMPLE_RATE

            decode = partial(model.decoder.synthesize, z, pitch, n_samples, generator=generator)
            encode_decode = partial(encode_and_decode, model, audio, pitch, n_samples, generator)

            decode_factor = audio_seconds / median_seconds(decode, args.repeats)
            both_factor = audio_seconds / median_seconds(encode_decode, args.repeats)
            baseline.setdefault(batch, decode_factor)
            print(
                f"{name:>8} {weights:>9,} {batch:>5} {audio_seconds / decode_factor:>9.4f} {decode_factor:>11.0f}x "
                f"{audio_seconds / both_factor:>10.4f} {both_factor:>12.0f}x {decode_factor / baseline[batch]:>15.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
