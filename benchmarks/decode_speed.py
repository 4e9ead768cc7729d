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

and then the parallel decoder's real-time factor, and reduced-precision weights for the cached
step at batch 1 (``weight_dtype`` bfloat16 and int8 against float32, alternately in the same run,
best of ``--repeats``, decoding alone: weight packing excluded): NSynth size on ``--threads``
threads splitting each product (the peer PyTorch port's 46 samples/s on 2 threads beside them) and
on one thread, ``small`` on one thread, also per CPU-second of the process, with each
format's logit error against float32 over a decode from the same state
(:func:`timbre.generation.engine.weight_precision_error`: largest absolute difference, its ratio to
the logits' standard deviation, mean KL) on the random NSynth-size decoder and on the bundled,
trained ``wavenet`` (wavenet-v2). ``--precision-only`` prints only that table. With ``--baseline-native FILE`` (another
version of ``timbre/generation/native.py``, e.g. ``git show REV:timbre/generation/native.py >
/tmp/old_native.py``) a last table times the cached step with that binding and with the installed
kernel, alternately in the same run, and prints their ratio. Weights are random (speed does not depend on
them). A naive step whose estimated time exceeds ``--naive-budget`` seconds (NSynth-size at large
batches: minutes per sample) is not run; its row shows the batch-1 figure scaled by the batch,
marked ``~``.

    python benchmarks/decode_speed.py [--configs small nsynth] [--batches 1 8 32] [--threads 2]
                                      [--baseline-native FILE] [--repeats 3] [--precision-only]
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

from timbre.generation.engine import WEIGHT_NAMES, generate, weight_precision_error
from timbre.models.decoder import WaveNetDecoder
from timbre.models.wavenet import class_to_input

SAMPLE_RATE = 16000
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
# Decoders of conf/model/<name>.yaml, and "clock": the one experiment=wavenet_on_default trains
# (model=small's with the pitch clock, on the default's 64-dim embedding).
CONFIGS = ("small", "nsynth", "clock")
CLOCK_EXPERIMENT = CONFIG_DIR.parent / "experiment" / "wavenet_on_default.yaml"
CLOCK_LATENT_DIM = 64  # the default model's (the experiment takes it from its base at run time)
# Samples per note for a cached measurement, per configuration and batch (a few seconds each).
CACHED_SAMPLES = {
    "small": {1: 16384, 8: 8192, 32: 4096},
    "nsynth": {1: 512, 8: 256, 32: 128},
    "clock": {1: 16384, 8: 8192, 32: 4096},
}
# The peer PyTorch port's NSynth-size batch-1 speed on this CPU, 2 threads (issue 14): samples/s.
PEER_NSYNTH_BATCH1 = 46
# Samples per note timed for the reduced-precision rows (batch 1).
PRECISION_SAMPLES = {"nsynth": 512, "small": 16384}
# Steps decoded to measure reduced-precision weights' logit error, per decoder.
ERROR_STEPS = {"nsynth": 256, "wavenet": 1024}


def build_decoder(config: str) -> WaveNetDecoder:
    """The decoder of ``config`` (see ``CONFIGS``) with seeded random weights (speed does not depend on them)."""
    from omegaconf import OmegaConf

    if config == "clock":
        settings = OmegaConf.to_container(OmegaConf.load(CLOCK_EXPERIMENT).model.decoder)
        settings["latent_dim"] = CLOCK_LATENT_DIM
    else:
        settings = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / f"{config}.yaml").decoder)
    settings.pop("_target_")
    torch.manual_seed(0)
    return WaveNetDecoder(**settings).eval()


def multiply_adds_per_sample(decoder: WaveNetDecoder) -> int:
    """Multiply-adds of one cached step (start conv, gated layers with their pitch clock, output stack;
    not the frame-rate conditioning)."""
    step = decoder.step_weights()
    kernel, residual, skip = step.kernel_size, step.residual_channels, step.skip_channels
    per_layer = kernel * residual * 2 * residual + residual * skip + 2 * step.source_harmonics * 2 * residual
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


def logit_errors(name: str) -> dict[str, dict[str, float]]:
    """Each reduced format's :func:`weight_precision_error` at batch 1, MIDI 60, temperature 1.

    ``name``: ``nsynth`` (random weights, random embedding) or ``wavenet`` (the bundled,
    trained model, on the embedding of a harmonic tone at MIDI 60).
    """
    if name == "wavenet":
        import timbre

        model = timbre.load("wavenet")
        decoder = model.autoencoder.decoder
        time = torch.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
        tone = sum(0.3 / k * torch.sin(2 * math.pi * 261.63 * k * time) for k in range(1, 6))
        z = torch.as_tensor(model.encode(tone.numpy()).tensor).T.unsqueeze(0)
    else:
        decoder = build_decoder(name)
        generator = torch.Generator().manual_seed(0)
        z = torch.randn(1, decoder.latent_dim, math.ceil(ERROR_STEPS[name] / decoder.hop_length), generator=generator)
    steps = min(ERROR_STEPS[name], z.shape[-1] * decoder.hop_length)
    return {dtype: weight_precision_error(decoder, z, 60, steps, WEIGHT_NAMES[dtype]) for dtype in ("bfloat16", "int8")}


def cached_decode(decoder: WaveNetDecoder, batch: int, samples: int, generator: torch.Generator, **options) -> None:
    z = torch.randn(batch, decoder.latent_dim, math.ceil(samples / decoder.hop_length))
    generate(decoder, z, torch.randint(24, 96, (batch,)), samples, generator=generator, **options)


def worker(task: dict) -> dict:
    """One measurement in this (fresh) process; returns seconds, samples and peak memory rise."""
    torch.set_num_threads(task["threads"])
    generator = torch.Generator().manual_seed(0)
    if task["kind"] == "peak":
        return {"gflops": matmul_peak_gflops()}
    if task["kind"] == "logit-error":
        return logit_errors(task["config"])
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
    if task["kind"] == "torch-stepper":
        run = functools.partial(cached_decode, backend="torch")
    elif task["kind"] == "split-note":  # one note, threads share every product (not the default)
        run = functools.partial(cached_decode, threads=task["threads"])
    if task.get("weight_dtype", "float32") != "float32":
        run = functools.partial(run, weight_dtype=WEIGHT_NAMES[task["weight_dtype"]])

    def timed(steps: int) -> tuple[float, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        run(decoder, batch, steps, generator)
        return time.perf_counter() - start, time.process_time() - cpu_start

    before = peak_resident_mib()
    short = 1 if task["kind"] == "naive" else 64
    short_seconds, short_cpu_seconds = timed(short)  # also the warm-up
    seconds, cpu_seconds = timed(task["steps"])
    samples = task["steps"]
    if task.get("marginal"):  # decoding alone: the short run's fixed costs (weight packing) subtracted
        seconds, cpu_seconds, samples = seconds - short_seconds, cpu_seconds - short_cpu_seconds, samples - short
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "samples": samples * batch,
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
    The bfloat16 error is the largest logit change against float32 weights over a decode of 256
    samples from the same state (see :func:`logit_errors`), absolute and relative to the logits'
    standard deviation.
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
        error = measure({"kind": "logit-error", "config": "nsynth", "threads": args.threads})["bfloat16"]
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
                f"{half:>11.0f} {half / old:>5.2f}x {error['max_abs']:>13.2g} {100 * error['relative']:>5.1f}%",
                flush=True,
            )


def compare_weight_precision(args: argparse.Namespace) -> None:
    """Batch-1 cached decoding with float32, bfloat16 and int8 weights, alternately; best of ``args.repeats``.

    Rates are of decoding alone (a short decode's time, weight packing included, subtracted from a
    long one's). NSynth size runs on ``args.threads`` threads splitting each product (``threads``
    given explicitly) and on one thread (the default for one note), ``small`` on one thread. Ratios are
    to float32 in the same run, which hold on a busy machine better than the absolute figures;
    so does the rate per CPU-second of the process (all its threads, barrier waits included),
    which other processes' time slices do not lower.
    """
    rows = [("nsynth", args.threads), ("nsynth", 1), ("small", 1)]
    if args.threads == 1:
        rows = rows[1:]
    print(f"reduced-precision weights, batch 1 (best of {args.repeats} alternating runs, ratio to float32 of the run):")
    header = (
        f"{'config':>7} {'threads':>7} {'weights':>8} | {'samples/s':>9} {'ratio':>6} {'per CPU-s':>9} | "
        f"{'max logit err':>13} {'rel':>6} {'mean KL':>8} | {'peer port':>9}"
    )
    print(header)
    print("-" * len(header))
    errors = {"nsynth": measure({"kind": "logit-error", "config": "nsynth", "threads": args.threads})}
    for config, threads in rows:
        task = {"config": config, "batch": 1, "threads": threads, "steps": PRECISION_SAMPLES[config], "marginal": True}
        task["kind"] = "split-note" if threads > 1 else "cached"
        rates: dict[str, list[float]] = {name: [] for name in WEIGHT_NAMES}
        cpu_rates: dict[str, list[float]] = {name: [] for name in WEIGHT_NAMES}
        for _ in range(args.repeats):
            for name in WEIGHT_NAMES:
                result = measure({**task, "weight_dtype": name})
                rates[name].append(result["samples"] / result["seconds"])
                cpu_rates[name].append(result["samples"] / result["cpu_seconds"])
        base = max(rates["float32"])
        for name in WEIGHT_NAMES:
            rate, error = max(rates[name]), errors.get(config, {}).get(name)
            error_columns = (
                f"{error['max_abs']:>13.2g} {100 * error['relative']:>5.1f}% {error['mean_kl']:>8.1e}"
                if error
                else f"{'-':>13} {'-':>6} {'-':>8}"
            )
            peer = f"{PEER_NSYNTH_BATCH1:>9}" if config == "nsynth" and threads == 2 else f"{'-':>9}"
            cpu_rate = max(cpu_rates[name])
            print(
                f"{config:>7} {threads:>7} {name:>8} | {rate:>9.0f} {rate / base:>5.2f}x {cpu_rate:>9.0f} | "
                f"{error_columns} | {peer}",
                flush=True,
            )
    try:
        trained = measure({"kind": "logit-error", "config": "wavenet", "threads": 1})
        for name, error in trained.items():
            print(
                f"trained wavenet, {name}: max logit error {error['max_abs']:.2g} "
                f"({100 * error['relative']:.1f}% of the logits' std), mean KL {error['mean_kl']:.1e} nats, "
                f"max KL {error['max_kl']:.1e} over {ERROR_STEPS['wavenet']} samples",
                flush=True,
            )
    except RuntimeError as error:
        print(f"trained wavenet: error not measured ({error})")


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
    parser.add_argument("--precision-only", action="store_true", help="print only the reduced-precision table")
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
    if args.precision_only:
        compare_weight_precision(args)
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
        steps = {"small": 2048, "nsynth": 128, "clock": 2048}[config]
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
    compare_weight_precision(args)
    if args.baseline_native:
        compare_with_baseline(args)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at end; real time is {SAMPLE_RATE} samples/s per note")


if __name__ == "__main__":
    main()
