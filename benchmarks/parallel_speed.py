"""Real-time factor of the parallel decoder (``model=fast``) on this machine.

Prints a table: for each batch size, the wall time to synthesize ``batch`` notes of ``--seconds``
seconds and the real-time factor, seconds of audio produced per second of wall time (median of
``--repeats`` timed runs after one warm-up). ``--encoder`` also times encode + decode with the
reduced WaveNet encoder of the ``fast`` configuration. Weights are random: speed does not depend
on them.

    python benchmarks/parallel_speed.py [--batches 1 8 32] [--seconds 4] [--threads 2] [--encoder]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from timbre.models.encoder import WaveNetEncoder
from timbre.models.parallel import HarmonicNoiseDecoder

SAMPLE_RATE = 16000


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
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="batch sizes to time")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each note")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per batch size")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--encoder", action="store_true", help="also time encoding (64 channels, 10 layers)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    decoder = HarmonicNoiseDecoder().eval()
    encoder = WaveNetEncoder(channels=64, layers=10, stages=10).eval()
    frames = round(args.seconds * SAMPLE_RATE / decoder.hop_length)
    n_samples = frames * decoder.hop_length
    parameters = sum(p.numel() for p in decoder.parameters())
    print(
        f"parallel decoder: {parameters:,} parameters, {n_samples / SAMPLE_RATE:.3f} s notes, "
        f"{torch.get_num_threads()} torch threads"
    )
    header = f"{'batch':>5} {'audio s':>8} {'decode s':>9} {'decode x RT':>12}"
    if args.encoder:
        header += f" {'enc+dec s':>10} {'enc+dec x RT':>13}"
    print(header)
    for batch in args.batches:
        z = torch.randn(batch, decoder.latent_dim, frames)
        pitch = torch.randint(24, 96, (batch,))
        audio = torch.rand(batch, n_samples) * 2 - 1
        generator = torch.Generator().manual_seed(0)
        audio_seconds = batch * n_samples / SAMPLE_RATE
        decode = median_seconds(lambda: decoder.synthesize(z, pitch, n_samples, generator=generator), args.repeats)
        row = f"{batch:>5} {audio_seconds:>8.1f} {decode:>9.4f} {audio_seconds / decode:>11.0f}x"
        if args.encoder:

            def encode_decode() -> None:
                with torch.inference_mode():
                    decoder.synthesize(encoder(audio), pitch, n_samples, generator=generator)

            both = median_seconds(encode_decode, max(1, args.repeats // 2))
            row += f" {both:>10.3f} {audio_seconds / both:>12.1f}x"
        print(row, flush=True)


if __name__ == "__main__":
    main()
