"""PyTorch DDP set-up for runs under ``torchrun`` (NCCL on CUDA, gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str) -> ProcessContext:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``); no-op otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return ProcessContext(rank=rank, world_size=world_size, local_rank=local_rank)


def barrier(context: ProcessContext) -> None:
    if context.distributed:
        dist.barrier()


def replicas_identical(model: torch.nn.Module, context: ProcessContext) -> bool:
    """True when every rank holds bit-identical parameters (checked via an all-gathered checksum)."""
    if not context.distributed:
        return True
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in model.parameters()])
        summary = torch.stack([flat.sum(), (flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64)).sum()])
    if dist.get_backend() == "nccl":  # NCCL only moves CUDA tensors
        summary = summary.cuda()
    gathered = [torch.zeros_like(summary) for _ in range(context.world_size)]
    dist.all_gather(gathered, summary)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def shutdown(context: ProcessContext) -> None:
    """Leave the process group together: a rank that tore down its gloo pairs while another was
    still finishing made that one abort ("terminate called without an active exception")."""
    if context.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
