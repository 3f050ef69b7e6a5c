"""Training throughput of each method on the synthetic configuration, relative to ``baseline``.

For every ``model.method`` (baseline first, as the reference), the same training batches of the clip
store are run through the training step of ``fit``: the method's forward options, its loss, backward and
an Adam step (after its ``prepare`` and first ``on_epoch_start`` hooks), and the script
prints training frames per second, the ratio to baseline measured in the same run, and inference ms
per video (eval mode, batch 1, the inference branch only) with the inference parameter count.

    python -m benchmarks.train_throughput [--clips work/clips] [--batches 20] [--threads 0]

Needs the clip store of the pipeline (``dvc repro`` up to ``cache_features``); uses ``params.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

from ctca.config import load_params
from ctca.data.cache import ClipStore
from ctca.data.loader import AugmentConfig, ClipDataset, collate, make_loader
from ctca.data.vocab import Vocabulary
from ctca.methods import make_method, method_names
from ctca.methods.base import TrainingData
from ctca.models.recognizer import inference_parameters


def measure(params, method_name: str, store: ClipStore, vocab: Vocabulary, batches: int, warmup: int = 2) -> dict:
    params = dataclasses.replace(params, model=dataclasses.replace(params.model, method=method_name))
    torch.manual_seed(0)
    method = make_method(params)
    model = method.build_model(vocab.num_classes)
    loader_cfg = params.loader
    augment = AugmentConfig(crop=loader_cfg.crop, flip=loader_cfg.flip, temporal_rescale=loader_cfg.temporal_rescale)
    train = store.split("train")
    method.prepare(model, TrainingData(train, augment, torch.device("cpu"), "off", params.evaluate.batch_size))
    dataset = ClipDataset(train, augment, train=True)
    loader = make_loader(dataset, loader_cfg.batch_size, train=True, pad=model.frame_padding, stride=model.stride)
    loader.set_epoch(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=method.lr_at(0))
    method.on_epoch_start(model, 0)
    model.train()
    frames, seconds = 0, 0.0
    for i, batch in enumerate(loader):
        if i >= warmup + batches:
            break
        t0 = time.perf_counter()
        out = model(batch.video, batch.mask, batch.lengths, **method.forward_options)
        loss = method.loss(model, out, batch).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            seconds += time.perf_counter() - t0
            frames += int(batch.mask.sum())
    model.eval()
    dev = ClipDataset(store.split("dev"), AugmentConfig(crop=loader_cfg.crop), train=False)
    times = []
    with torch.no_grad():
        for i in range(min(20, len(dev))):
            b = collate([dev[i]], model.frame_padding, model.stride)
            t0 = time.perf_counter()
            model(b.video, b.mask, b.lengths)
            times.append(time.perf_counter() - t0)
    return {"frames_per_s": frames / seconds, "infer_ms": 1000 * statistics.median(times),
            "params": inference_parameters(model)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default="work/clips")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="methods are measured in interleaved rounds; medians")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args()
    if not (Path(args.clips) / "index.json").is_file():
        print(f"error: {args.clips}/index.json not found: run `dvc repro cache_features` first", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    store, vocab = ClipStore(Path(args.clips)), Vocabulary.load(Path(args.clips) / "vocab.json")
    print(f"{args.clips}: batch {params.loader.batch_size}, crop {params.loader.crop}, tam.depth {params.tam.depth}, "
          f"ctca.downsample {params.ctca.downsample}, {torch.get_num_threads()} threads, {args.batches} batches")
    methods = method_names()
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for _ in range(args.rounds):  # interleaved, so a change in machine load hits every method alike
        for method in methods:
            results[method].append(measure(params, method, store, vocab, args.batches))
    base = statistics.median(r["frames_per_s"] for r in results["baseline"])
    for method in methods:
        r = {k: statistics.median(x[k] for x in results[method]) for k in results[method][0]}
        print(f"{method:9s} train {r['frames_per_s']:8.0f} frames/s  ({r['frames_per_s'] / base:4.2f}x baseline)   "
              f"inference {r['infer_ms']:6.1f} ms/video   {int(r['params']):,} inference parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
