"""Multi-process training through ``torchrun``: DDP with SyncBatchNorm, one process per GPU.

No home-made launcher: ``torchrun`` (``torch.distributed.run``) starts the processes and sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; this module only reads them. On CUDA the backend is NCCL and
BatchNorm becomes SyncBatchNorm (statistics over the global batch, as VAC's SyncBN fix); on CPU the
backend is gloo and BatchNorm stays per process (SyncBatchNorm needs an accelerator), which is what
the two-process CPU test exercises.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ctca.models.norm import convert_sync_batchnorm


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun set up (if any); returns the context and this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
        device = torch.device("cuda", ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ctx, device


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device, find_unused: bool) -> nn.Module:
    """DDP-wrap ``model`` (SyncBatchNorm first on CUDA); the model itself when not distributed."""
    if not ctx.enabled:
        return model
    if device.type == "cuda":
        model = convert_sync_batchnorm(model)  # masked BatchNorms stay masked
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Sum per-process counters (losses, frames) over all ranks."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def relaunch_under_torchrun(nproc: int, module: str) -> None:
    """Run ``python -m <module>`` as ``nproc`` processes under torchrun and wait; raise if it fails.

    Lets a DVC stage (``python -m stages.train``) scale out with ``train.nproc`` and no other change.
    """
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", module]
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        raise RuntimeError(f"torchrun with {nproc} processes exited with status {rc}: {' '.join(cmd)}")


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ
