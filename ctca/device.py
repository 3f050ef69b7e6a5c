"""Device selection and mixed precision: one rule for training and evaluation.

bf16 autocast on CUDA (``train.amp`` auto or bf16); full precision on CPU unless bf16 is asked for. With several
GPUs visible and none assigned, a process takes the one the fewest ctca processes use (``ctca.cores.claim_gpu``),
so experiments run at once (``dvc queue start -j N``) spread over the GPUs.
"""

from __future__ import annotations

import contextlib

import torch

from ctca.cores import claim_gpu


def select_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device cuda requested (train.device or --device) but no CUDA device is available")
        index = claim_gpu()
        if index is None:  # one GPU visible, or torchrun assigns it (ctca.distributed)
            return torch.device("cuda")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def autocast(device: torch.device, amp: str):
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
