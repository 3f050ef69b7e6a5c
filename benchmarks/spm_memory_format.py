"""The SPM's frame CNN on contiguous (NCHW) against channels-last (NHWC) frames, on this machine's CPU.

For each backbone (the compact CNN of the synthetic configuration at its 32-px crops, and ResNet-18 at
``--resnet-size`` px), times a training step (forward, backward) and an eval forward on both memory
formats, alternating them ``--repeats`` times, and prints the median seconds and the ratio
contiguous / channels-last measured in the same run (> 1: channels-last is faster). ``SpatialPerception``
uses channels-last on a CPU only for backbones that declare ``channels_last_on_cpu``.

    python benchmarks/spm_memory_format.py [--threads 1] [--frames 480] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ctca.models.spm import build_spm  # noqa: E402


def step_seconds(net: torch.nn.Module, x: torch.Tensor, train: bool) -> float:
    net.train(train)
    t0 = time.perf_counter()
    if train:
        net(x).sum().backward()
    else:
        with torch.no_grad():
            net(x)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=480, help="compact CNN: frames per batch (8 clips x 60)")
    ap.add_argument("--resnet-frames", type=int, default=8)
    ap.add_argument("--resnet-size", type=int, default=112)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = [("compact", build_spm("compact", (16, 32, 64, 64)).backbone, torch.randn(args.frames, 3, 32, 32)),
             ("resnet18", build_spm("resnet18", ()).backbone,
              torch.randn(args.resnet_frames, 3, args.resnet_size, args.resnet_size))]
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print("| backbone | declares channels_last_on_cpu | step | NCHW s | NHWC s | NCHW / NHWC |")
    print("|---|---|---|---|---|---|")
    for name, net, x in cases:
        nhwc = x.contiguous(memory_format=torch.channels_last)
        for train in (True, False):
            step_seconds(net, x, train)  # warm-up of both
            step_seconds(net, nhwc, train)
            times: dict[str, list[float]] = {"nchw": [], "nhwc": []}
            for _ in range(args.repeats):
                times["nchw"].append(step_seconds(net, x, train))
                times["nhwc"].append(step_seconds(net, nhwc, train))
            a, b = statistics.median(times["nchw"]), statistics.median(times["nhwc"])
            print(f"| {name} | {getattr(net, 'channels_last_on_cpu', False)} | {'train' if train else 'eval'} "
                  f"| {a:.3f} | {b:.3f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
