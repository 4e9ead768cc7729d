"""How many CPU threads each job uses, and how idle OpenMP threads wait.

Two kinds of work run here: big batched tensor work (a training step, the parallel decoder over a
batch of notes), which scales with cores, and long loops of tiny steps (the composer's token loop,
one autoregressive sample at a time), where every step is too small to split and extra threads
only add synchronisation. On a shared machine the second kind suffers most: OpenMP threads that
spin while waiting for work compete with the other process's threads for the same cores, so a
0.2 s composition took half a minute beside a training run. Hence:

- :func:`configure_openmp`, called by the command-line entry points before torch is imported,
  makes idle OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``) unless the user
  chose a policy;
- :func:`threads` runs a block with a chosen thread count (1 for per-step loops).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# Thread count for loops of small sequential steps: splitting such a step costs more than it saves.
SEQUENTIAL_STEP_THREADS = 1


def configure_openmp() -> None:
    """Make idle OpenMP threads sleep instead of busy-wait; no effect once torch is imported.

    Respects a policy the user set in ``OMP_WAIT_POLICY``.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op torch threads (never more than already allowed)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, min(count, previous)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# CPU flags of native bfloat16 arithmetic (x86: AVX-512 BF16 dot products, AMX tiles).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bfloat16 natively (x86 Linux: its flags say so).

    Without such units bf16 matrix products are emulated and slower than float32; elsewhere
    (another OS or architecture) the answer is False: float32 is never the wrong choice.
    """
    try:
        with open(cpuinfo, encoding="utf-8") as file:
            for line in file:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in NATIVE_BF16_FLAGS)
    except OSError:
        pass
    return False
