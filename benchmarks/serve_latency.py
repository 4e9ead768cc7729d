"""Note latency of ``timbre serve``: one player alone, and 8 playing at once.

Starts ``timbre serve`` in a subprocess on a free localhost port, then times ``POST /api/v1/note``
for 2 s notes at random pad positions and pitches (every request distinct, so every one is
synthesized), from one client and from ``--clients`` concurrent clients (threads, each with its own
keep-alive connection, each sending its next request as soon as the previous answer arrives), and
finally identical requests served from the cache. For each it prints p50/p95 of:

- server: request to WAV bytes inside the server (its ``Server-Timing`` header: validation, blend,
  the wait for and the decoder pass, WAV encoding);
- round trip: the client's view over localhost (adds HTTP and the client's own Python).

how many notes the decoder thread put in one pass on average, and the decoder thread's CPU time per
note (what the latency would be on an idle core: wall times here include waiting for a core that
other processes hold, so quote the load average printed with them).

    python benchmarks/serve_latency.py [--model default] [--seconds 2] [--requests 60] [--clients 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time

import httpx


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def start_server(model: str, threads: int) -> tuple[subprocess.Popen, str]:
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "timbre.cli", "serve", "--port", "0", "--model", model]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)
    line = server.stdout.readline()
    match = re.search(r"open (http://\S+/)", line)
    if not match:
        server.kill()
        raise SystemExit(f"timbre serve did not start: {line!r}")
    return server, match.group(1)


def play(base: str, bodies: list[dict], server_ms: list[float], round_trip_ms: list[float]) -> None:
    """Send ``bodies`` one after the other, recording both latencies of each."""
    with httpx.Client(base_url=base, timeout=60) as client:
        for body in bodies:
            start = time.perf_counter()
            response = client.post("api/v1/note", json=body)
            round_trip_ms.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
            server_ms.append(float(response.headers["server-timing"].split("dur=")[1]))


def scenario(base: str, clients: int, bodies: list[dict]) -> tuple[list[float], list[float], str, str]:
    """Latencies (server, round trip) of ``bodies`` split across ``clients`` concurrent clients, and
    the mean number of notes per decoder pass and of decoder CPU time per note meanwhile."""
    before = httpx.get(base + "api/v1/status").json()["decoder"]
    server_ms: list[float] = []
    round_trip_ms: list[float] = []
    shares = [bodies[i::clients] for i in range(clients)]
    workers = [threading.Thread(target=play, args=(base, share, server_ms, round_trip_ms)) for share in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    after = httpx.get(base + "api/v1/status").json()["decoder"]
    passes = after["passes"] - before["passes"]
    notes = after["notes"] - before["notes"]
    if not passes:
        return server_ms, round_trip_ms, "-", "-"
    cpu_per_note = (after["cpu_seconds"] - before["cpu_seconds"]) * 1000 / notes
    return server_ms, round_trip_ms, f"{notes / passes:.2f}", f"{cpu_per_note:.1f}ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="model to serve (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=2.0, help="note length (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=60, help="timed requests per scenario (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server (default: %(default)s)")
    args = parser.parse_args()

    rng = random.Random(0)

    def distinct_notes(count: int) -> list[dict]:
        return [
            {"x": rng.random(), "y": rng.random(), "pitch": rng.randint(36, 84), "seconds": args.seconds}
            for _ in range(count)
        ]

    print(
        f"load average {os.getloadavg()[0]:.2f} (1 min) at start, {os.cpu_count()} CPUs; "
        f"server: {args.threads} torch thread(s)"
    )
    server, base = start_server(args.model, args.threads)
    try:
        # Warm-up outside the timings: the first requests of a fresh connection and note length.
        scenario(base, 1, distinct_notes(5))
        scenario(base, args.clients, distinct_notes(2 * args.clients))
        repeated = distinct_notes(1) * args.requests
        scenario(base, 1, repeated[:1])  # now in the cache
        rows = [
            ("alone, synthesized", 1, *scenario(base, 1, distinct_notes(args.requests))),
            (
                f"{args.clients} clients, synthesized",
                args.clients,
                *scenario(base, args.clients, distinct_notes(args.requests * 2)),
            ),
            ("alone, from the cache", 1, *scenario(base, 1, repeated)),
        ]
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"\n{args.seconds:g} s notes (16 kHz), model {args.model}, {base}")
    header = (
        f"{'scenario':<24} {'requests':>8} | {'server p50':>10} {'p95':>7} | "
        f"{'round trip p50':>14} {'p95':>7} | {'notes/pass':>10} {'CPU/note':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, _clients, server_ms, round_trip_ms, per_pass, cpu in rows:
        print(
            f"{name:<24} {len(server_ms):>8} | "
            f"{statistics.median(server_ms):>8.1f}ms {percentile(server_ms, 95):>5.1f}ms | "
            f"{statistics.median(round_trip_ms):>12.1f}ms {percentile(round_trip_ms, 95):>5.1f}ms | "
            f"{per_pass:>10} {cpu:>9}"
        )
    print("targets: server p95 <= 30 ms alone, <= 100 ms with 8 clients (2 s notes, 2-core CPU)")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at end")


if __name__ == "__main__":
    main()
