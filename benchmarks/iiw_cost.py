"""Cost of one IIW evaluation relative to one training epoch, at the params.yaml settings.

Trains one epoch of the configured method on the clip store (the training step of ``fit``: the method's
hooks, forward options and loss, timed without the dev evaluation), then times one IIW measurement as
the iiw stage makes it (``measure_iiw``) on the fixed subset
(``iiw.subset`` videos, per-sample backward) of that model, in the same run, and prints the ratio.
The issue's budget is 20 % of an epoch.

    python -m benchmarks.iiw_cost [--clips work/clips] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from ctca.config import load_params
from ctca.data.cache import ClipStore
from ctca.data.loader import AugmentConfig, ClipDataset, make_loader
from ctca.data.vocab import Vocabulary
from ctca.iiw import group_tensors, measure_iiw, snapshot
from ctca.methods import make_method
from ctca.methods.base import TrainingData


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default="work/clips")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeats", type=int, default=3, help="IIW evaluations timed (median)")
    args = ap.parse_args()
    if not (Path(args.clips) / "index.json").is_file():
        print(f"error: {args.clips}/index.json not found: run `dvc repro cache_features` first", file=sys.stderr)
        return 2
    params = load_params(args.params)
    store, vocab = ClipStore(Path(args.clips)), Vocabulary.load(Path(args.clips) / "vocab.json")
    torch.manual_seed(0)
    method = make_method(params)
    model = method.build_model(vocab.num_classes)
    loader_cfg = params.loader
    train = store.split("train")
    augment = AugmentConfig(crop=loader_cfg.crop, flip=loader_cfg.flip, temporal_rescale=loader_cfg.temporal_rescale)
    method.prepare(model, TrainingData(train, augment, torch.device("cpu"), "off", params.evaluate.batch_size))
    theta0 = snapshot(group_tensors(model.module_groups(), params.iiw.tensor_filter))
    dataset = ClipDataset(train, augment, train=True)
    loader = make_loader(dataset, loader_cfg.batch_size, train=True, pad=model.frame_padding, stride=model.stride)
    loader.set_epoch(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=method.lr_at(0))
    model.train()
    start = time.perf_counter()
    method.on_epoch_start(model, 0)
    for batch in loader:
        out = model(batch.video, batch.mask, batch.lengths, **method.forward_options)
        loss = method.loss(model, out, batch).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    epoch = time.perf_counter() - start
    times = [measure_iiw(model, train, theta0, params).seconds for _ in range(args.repeats)]
    iiw = statistics.median(times)
    print(f"{params.model.method}, tam.depth {params.tam.depth}: one epoch ({len(train.metas)} videos, batch "
          f"{loader_cfg.batch_size}) {epoch:.1f} s; one IIW evaluation ({min(params.iiw.subset, len(train.metas))} videos) {iiw:.1f} s "
          f"(median of {args.repeats})")
    print(f"ratio IIW / epoch: {100 * iiw / epoch:.1f} %  (budget 20 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
