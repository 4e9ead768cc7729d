"""Slowdown under contention: compose, render, an AR note and a training step, alone and beside a busy torch process.

Usage: python benchmarks/contention.py [--repeats 3] [--steps 3] [--bars 4] [--jobs render ar_note ...]

Each job runs in a fresh process (thread settings are read when torch loads), twice: with the
machine as it is ("idle" column), then while a contender runs: another torch process doing
matrix products on every core with its default OpenMP settings, as a second user's training
would. Each job is timed in two settings:

- ``before``: what timbre did before choosing thread counts: OpenMP's default wait policy (idle
  threads spin) and every core for the composer's token loop, the parallel decoder's synthesis
  in a render, and a single autoregressive note (``ar_note``: 0.5 s of ``wavenet``);
- ``timbre``: what the ``timbre`` and ``timbre-train`` commands do now: idle OpenMP threads sleep
  (``OMP_WAIT_POLICY=PASSIVE``); the token loop, the render's parallel synthesis and a single AR
  note run on one thread (encoding the render's timbres and training keep every core).

The table gives the median seconds per job and the contended/idle ratio (target: at most 2.5).
A machine that is already busy (a training run in the background) makes the "idle" column
slower than a truly idle machine; the ratios are still comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONTENDER = "import torch\na = torch.randn(768, 768)\nwhile True:\n    a = torch.tanh(a @ a)\n"
JOBS = ("compose", "render", "ar_note", "train_step")
SETTINGS = ("before", "timbre")


def run_job(job: str, setting: str, repeats: int, steps: int, bars: int) -> float:
    """Time ``job`` in this process (called in the child); returns the median seconds."""
    if setting == "timbre":
        from timbre.runtime import configure_openmp

        configure_openmp()
    import torch

    times = []
    if job == "compose":
        import timbre.symbolic.compose as compose_module

        if setting == "before":
            compose_module.SEQUENTIAL_STEP_THREADS = torch.get_num_threads()
        composer = compose_module.load_composer(None)
        for seed in range(repeats):
            started = time.perf_counter()
            compose_module.compose(composer, bars=bars, seed=seed)
            times.append(time.perf_counter() - started)
    elif job == "render":
        import symusic

        import timbre
        from timbre.render import render_midi, renderer

        if setting == "before":
            renderer.PARALLEL_SYNTHESIS_THREADS = torch.get_num_threads()
        model = timbre.load()
        score = symusic.Score(480)
        for program, base in ((0, 60), (40, 72), (32, 40)):
            track = symusic.Track(program=program)
            for beat in range(16):
                track.notes.append(symusic.Note(beat * 480, 440, base + (beat * 5) % 12, 90))
            score.tracks.append(track)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "song.mid"
            score.dump_midi(path)
            for _ in range(repeats):
                started = time.perf_counter()
                render_midi(path, model)
                times.append(time.perf_counter() - started)
    elif job == "ar_note":
        import timbre
        from timbre.generation import native

        if setting == "before":
            native.default_threads = lambda batch: torch.get_num_threads()
        model = timbre.load("wavenet")
        embedding = model.encode(np.sin(np.linspace(0, 2000, 16000, dtype=np.float32)) * 0.3)
        model.synthesize(embedding, pitch=60, seconds=0.1)  # warm-up: kernel load, weight layout
        for seed in range(repeats):
            started = time.perf_counter()
            model.synthesize(embedding, pitch=60, seconds=0.5, seed=seed)
            times.append(time.perf_counter() - started)
    elif job == "train_step":
        from hydra import compose, initialize_config_dir
        from hydra.utils import instantiate

        from timbre.train.app import CONFIG_DIR

        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            config = compose("train", overrides=["experiment=fast"])
        model = instantiate(config.model, _convert_="all")
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(0)
        batch = {
            "audio": 0.3 * torch.randn(config.trainer.batch_size, config.data.crop_samples, generator=generator),
            "pitch": torch.randint(40, 80, (config.trainer.batch_size,), generator=generator),
        }
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(steps):
                loss, _ = model.training_loss(batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            times.append((time.perf_counter() - started) / steps)
    return statistics.median(times)


def measure(job: str, setting: str, args: argparse.Namespace) -> float:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
    }
    command = [
        sys.executable, __file__, "--child", job, "--setting", setting, "--repeats", str(args.repeats),
        "--steps", str(args.steps), "--bars", str(args.bars),
    ]  # fmt: skip
    output = subprocess.run(command, env=environment, capture_output=True, text=True, check=True).stdout
    seconds = json.loads(output.strip().splitlines()[-1])["seconds"]
    print(f"{job} {setting}: {seconds:.2f} s", file=sys.stderr, flush=True)  # partial results if stopped
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per job, median reported (default: 3)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed run (default: 3)")
    parser.add_argument("--bars", type=int, default=4, help="bars composed per run (default: 4)")
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    parser.add_argument("--child", choices=JOBS, help=argparse.SUPPRESS)
    parser.add_argument("--setting", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        seconds = run_job(args.child, args.setting, args.repeats, args.steps, args.bars)
        print(json.dumps({"seconds": seconds}))
        return

    idle = {(job, setting): measure(job, setting, args) for job in args.jobs for setting in SETTINGS}
    environment = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
    }
    contender = subprocess.Popen([sys.executable, "-c", CONTENDER], env=environment)
    try:
        time.sleep(3)  # let it load torch and start multiplying
        contended = {(job, setting): measure(job, setting, args) for job in args.jobs for setting in SETTINGS}
    finally:
        contender.kill()
        contender.wait()

    print(f"cores: {os.cpu_count()}; compose: {args.bars} bars; ar_note: 0.5 s, batch 1; "
          f"train_step: experiment=fast, per step; median of {args.repeats}")  # fmt: skip
    print(f"{'job':<12} {'setting':<8} {'idle s':>8} {'contended s':>12} {'ratio':>6}")
    for job in args.jobs:
        for setting in SETTINGS:
            alone, busy = idle[job, setting], contended[job, setting]
            print(f"{job:<12} {setting:<8} {alone:8.2f} {busy:12.2f} {busy / alone:6.1f}")


if __name__ == "__main__":
    main()
