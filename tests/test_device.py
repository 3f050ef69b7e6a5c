"""Device selection and the AMP rule (bf16 on CUDA, full precision on CPU unless asked)."""

import pytest
import torch

from ctca.device import autocast, select_device


def test_auto_is_cpu_without_cuda_and_cuda_is_refused_clearly():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the CPU-only rule cannot be observed here")
    assert select_device("auto").type == "cpu"
    with pytest.raises(RuntimeError, match="device cuda requested"):
        select_device("cuda")


def test_amp_auto_keeps_cpu_in_float32_and_bf16_is_honoured():
    x = torch.randn(4, 4)
    with autocast(torch.device("cpu"), "auto"):
        assert (x @ x).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "off"):
        assert (x @ x).dtype == torch.float32
