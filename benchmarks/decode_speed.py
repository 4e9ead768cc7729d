"""Autoregressive decoding speed: naive recomputation against the cached engine (timbre.generation.engine).

Prints one table row per decoder configuration and batch size:

* naive: every sample runs the teacher-forced forward pass over one receptive field (the
  decoder's ``receptive_field`` samples) and samples from its last logits;
* cached: :func:`timbre.generation.engine.generate`, end to end (weight packing, conditioning, sampling);
* their ratio; achieved GFLOP/s of each, counted analytically (2 flops per multiply-add of the
  layer shapes, conditioning excluded) and as a fraction of this machine's float32 matmul peak,
  measured in the same run with the same thread count (a 2048x2048 ``torch.matmul``);
* peak memory: the rise of the process's peak resident set during the measurement (each
  measurement runs in a fresh subprocess).

and then the parallel decoder's real-time factor. With ``--baseline-native FILE`` (another
version of ``timbre/generation/native.py``, e.g. ``git show REV:timbre/generation/native.py >
/tmp/old_native.py``) a last table times the cached step with that binding and with the installed
kernel, alternately in the same run, and prints their ratio. Weights are random (speed does not depend on
them). A naive step whose estimated time exceeds ``--naive-budget`` seconds (NSynth-size at large
batches: minutes per sample) is not run; its row shows the batch-1 figure scaled by the batch,
marked ``~``.

    python benchmarks/decode_speed.py [--configs small nsynth] [--batches 1 8 32] [--threads 2]
                                      [--baseline-native FILE] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from timbre.generation.engine import cached_logits, generate
from timbre.models.decoder import WaveNetDecoder
from timbre.models.wavenet import class_to_input

SAMPLE_RATE = 16000
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
CONFIGS = ("small", "nsynth")  # decoders of conf/model/<name>.yaml
# Samples per note for a cached measurement, per configuration and batch (a few seconds each).
CACHED_SAMPLES = {"small": {1: 16384, 8: 8192, 32: 4096}, "nsynth": {1: 512, 8: 256, 32: 128}}


def build_decoder(config: str) -> WaveNetDecoder:
    """The decoder of ``conf/model/<config>.yaml`` with seeded random weights (speed does not depend on them)."""
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / f"{config}.yaml").decoder)
    settings.pop("_target_")
    torch.manual_seed(0)
    return WaveNetDecoder(**settings).eval()


def multiply_adds_per_sample(decoder: WaveNetDecoder) -> int:
    """Multiply-adds of one cached step (start conv, gated layers, output stack; not conditioning)."""
    step = decoder.step_weights()
    kernel, residual, skip = step.kernel_size, step.residual_channels, step.skip_channels
    per_layer = kernel * residual * 2 * residual + residual * skip
    residual_projections = sum(layer.residual_weight is not None for layer in step.layers) * residual * residual
    return (
        kernel * residual
        + residual * skip
        + len(step.layers) * per_layer
        + residual_projections
        + skip * skip
        + skip * step.classes
    )


def peak_resident_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


@torch.inference_mode()
def naive_decode(decoder: WaveNetDecoder, batch: int, steps: int, generator: torch.Generator) -> None:
    """Sample ``steps`` samples, each from a full forward pass over the last receptive field."""
    window = decoder.receptive_field
    inputs = torch.zeros(batch, window)
    z = torch.randn(batch, decoder.latent_dim, math.ceil(window / decoder.hop_length))
    pitch = torch.randint(24, 96, (batch,))
    for _ in range(steps):
        logits = decoder(inputs, z, pitch)[:, :, -1]
        picked = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator)
        inputs = torch.cat([inputs[:, 1:], class_to_input(picked)], dim=1)


def bfloat16_logit_error(decoder: WaveNetDecoder, samples: int) -> dict:
    """Largest logit change from bfloat16 weights, teacher-forced on ``samples`` random inputs (batch 1)."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(1, samples, generator=generator) * 2 - 1
    z = torch.randn(1, decoder.latent_dim, math.ceil(samples / decoder.hop_length), generator=generator)
    exact, rounded = (
        cached_logits(decoder, inputs, z, 60, weight_dtype=dtype) for dtype in (torch.float32, torch.bfloat16)
    )
    error = (rounded - exact).abs().max().item()
    return {"error": error, "relative": error / exact.std().item()}


def cached_decode(decoder: WaveNetDecoder, batch: int, samples: int, generator: torch.Generator, **options) -> None:
    z = torch.randn(batch, decoder.latent_dim, math.ceil(samples / decoder.hop_length))
    generate(decoder, z, torch.randint(24, 96, (batch,)), samples, generator=generator, **options)


def worker(task: dict) -> dict:
    """One measurement in this (fresh) process; returns seconds, samples and peak memory rise."""
    torch.set_num_threads(task["threads"])
    generator = torch.Generator().manual_seed(0)
    if task["kind"] == "peak":
        return {"gflops": matmul_peak_gflops()}
    if task["kind"] == "bfloat16-error":
        return bfloat16_logit_error(build_decoder(task["config"]), task["steps"])
    if task["kind"] == "parallel":
        from timbre.models.parallel import HarmonicNoiseDecoder

        decoder = HarmonicNoiseDecoder().eval()
        samples = 4 * SAMPLE_RATE
        z = torch.randn(task["batch"], decoder.latent_dim, samples // decoder.hop_length)
        pitch = torch.full((task["batch"],), 60)
        with torch.inference_mode():
            decoder.synthesize(z, pitch, samples, generator=generator)
            start = time.perf_counter()
            decoder.synthesize(z, pitch, samples, generator=generator)
        return {"seconds": time.perf_counter() - start, "samples": samples * task["batch"]}
    if task.get("native_module"):  # a baseline binding replaces the installed one
        from timbre.generation import engine

        spec = importlib.util.spec_from_file_location("baseline_native", task["native_module"])
        baseline = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(baseline)
        baseline_stepper = baseline.NativeStepper  # float32 only: older bindings take no weight dtype
        baseline.NativeStepper = lambda library, weights, batch, threads, weight_dtype: baseline_stepper(
            library, weights, batch, threads
        )
        engine.native = baseline
    decoder = build_decoder(task["config"])
    batch, run = task["batch"], naive_decode if task["kind"] == "naive" else cached_decode
    if task.get("weight_dtype") == "bfloat16":
        run = functools.partial(cached_decode, weight_dtype=torch.bfloat16)
    if task["kind"] == "torch-stepper":
        run = functools.partial(cached_decode, backend="torch")
    elif task["kind"] == "split-note":  # one note, threads share every product (not the default)
        run = functools.partial(cached_decode, threads=task["threads"])
    before = peak_resident_mib()
    run(decoder, batch, 1 if task["kind"] == "naive" else 64, generator)  # warm-up (and kernel build)
    start = time.perf_counter()
    run(decoder, batch, task["steps"], generator)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "samples": task["steps"] * batch,
        "memory_mib": peak_resident_mib() - before,
        "multiply_adds": multiply_adds_per_sample(decoder),
        "window": decoder.receptive_field,
    }


def measure(task: dict) -> dict:
    """Run :func:`worker` in a fresh interpreter so peak memory and caches are its own."""
    result = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(task)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"benchmark worker {task} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare_with_baseline(args: argparse.Namespace) -> None:
    """Cached decoding with ``args.baseline_native`` and the installed kernel (float32, bfloat16), alternately.

    Each side's best of ``args.repeats`` runs is shown: other processes only ever slow a run down.
    The bfloat16 error is the largest logit change against float32 weights over 256 teacher-forced
    samples, absolute and relative to the logits' standard deviation.
    """
    baseline = str(args.baseline_native.resolve())
    print(f"native kernel against {args.baseline_native} (best of {args.repeats} alternating runs each):")
    header = (
        f"{'config':>7} {'batch':>5} | {'baseline samp/s':>15} | {'installed samp/s':>16} {'ratio':>6} | "
        f"{'bf16 samp/s':>11} {'ratio':>6} {'max logit err':>13} {'rel':>6}"
    )
    print(header)
    print("-" * len(header))
    sides = {"baseline": {"native_module": baseline}, "float32": {}, "bfloat16": {"weight_dtype": "bfloat16"}}
    for config in args.configs:
        error = measure({"kind": "bfloat16-error", "config": config, "threads": args.threads, "steps": 256})
        for batch in args.batches:
            task = {"config": config, "batch": batch, "threads": args.threads, "kind": "cached"}
            task["steps"] = CACHED_SAMPLES[config].get(batch, 256)
            rates: dict[str, list[float]] = {side: [] for side in sides}
            for _ in range(args.repeats):
                for side, options in sides.items():
                    result = measure({**task, **options})
                    rates[side].append(result["samples"] / result["seconds"])
            old, new, half = (max(rates[side]) for side in sides)
            print(
                f"{config:>7} {batch:>5} | {old:>15.0f} | {new:>16.0f} {new / old:>5.2f}x | "
                f"{half:>11.0f} {half / old:>5.2f}x {error['error']:>13.2g} {100 * error['relative']:>5.1f}%",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=2, help="torch (and native kernel) threads")
    parser.add_argument("--naive-steps", type=int, default=2, help="naive samples per note to time")
    parser.add_argument("--naive-budget", type=float, default=30.0, help="seconds a naive measurement may take")
    parser.add_argument("--baseline-native", type=Path, help="another native.py to compare the kernel with")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per side of the baseline table")
    parser.add_argument("--baseline-only", action="store_true", help="print only the --baseline-native table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.2f} (1 min) at start", flush=True)
    if args.baseline_only:
        if not args.baseline_native:
            parser.error("--baseline-only needs --baseline-native")
        compare_with_baseline(args)
        return
    peak = measure({"kind": "peak", "threads": args.threads})["gflops"]
    print(f"float32 matmul peak (2048x2048 torch.matmul): {peak:.1f} GFLOP/s", flush=True)
    header = (
        f"{'config':>7} {'batch':>5} | {'naive samp/s':>12} {'GFLOP/s':>8} {'%peak':>6} {'MiB':>6} | "
        f"{'cached samp/s':>13} {'GFLOP/s':>8} {'%peak':>6} {'MiB':>6} | {'speed-up':>9}"
    )
    print(header)
    print("-" * len(header))
    for config in args.configs:
        naive_batch1_seconds_per_step = None
        for batch in args.batches:
            base = {"config": config, "batch": batch, "threads": args.threads}
            estimate = None if naive_batch1_seconds_per_step is None else naive_batch1_seconds_per_step * batch
            if estimate is None or estimate * args.naive_steps <= args.naive_budget:
                naive = measure({**base, "kind": "naive", "steps": args.naive_steps})
                naive_rate, naive_mark = naive["samples"] / naive["seconds"], " "
                naive_memory = f"{naive['memory_mib']:>6.0f}"
                if naive_batch1_seconds_per_step is None:
                    naive_batch1_seconds_per_step = naive["seconds"] / args.naive_steps / batch
            else:  # compute-bound: scale the measured per-note rate (marked ~)
                naive_rate, naive_mark, naive_memory = 1 / naive_batch1_seconds_per_step, "~", f"{'-':>6}"
            cached = measure({**base, "kind": "cached", "steps": CACHED_SAMPLES[config].get(batch, 256)})
            cached_rate = cached["samples"] / cached["seconds"]
            flops = 2 * cached["multiply_adds"]
            naive_gflops = naive_rate * flops * cached["window"] / 1e9
            cached_gflops = cached_rate * flops / 1e9
            print(
                f"{config:>7} {batch:>5} | {naive_mark}{naive_rate:>11.3g} {naive_gflops:>8.1f} "
                f"{100 * naive_gflops / peak:>5.0f}% {naive_memory} | "
                f"{cached_rate:>13.0f} {cached_gflops:>8.1f} {100 * cached_gflops / peak:>5.0f}% "
                f"{cached['memory_mib']:>6.0f} | {cached_rate / naive_rate:>8.0f}x",
                flush=True,
            )
    print("batch 1, other routes for the cached step:")
    for config in args.configs:
        base = {"config": config, "batch": 1, "threads": args.threads}
        steps = {"small": 2048, "nsynth": 128}[config]
        result = measure({**base, "kind": "torch-stepper", "steps": steps})
        print(f"  {config:>6}: as torch ops (backend='torch'): {result['samples'] / result['seconds']:8.0f} samples/s")
        if args.threads > 1:
            result = measure({**base, "kind": "split-note", "steps": CACHED_SAMPLES[config][1]})
            print(
                f"  {config:>6}: native kernel, {args.threads} threads splitting each product: "
                f"{result['samples'] / result['seconds']:8.0f} samples/s"
            )
    try:
        parallel = measure({"kind": "parallel", "batch": 1, "threads": args.threads})
        factor = parallel["samples"] / SAMPLE_RATE / parallel["seconds"]
        print(f"parallel decoder (model=fast), one 4 s note: {parallel['seconds']:.3f} s, {factor:.0f}x real time")
    except RuntimeError as error:
        print(f"parallel decoder: not measured ({error})")
    if args.baseline_native:
        compare_with_baseline(args)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at end; real time is {SAMPLE_RATE} samples/s per note")


if __name__ == "__main__":
    main()
