"""Cost of one IIW evaluation relative to one training epoch, at the params.yaml settings.

Trains one epoch of the configured method on the clip store (the same code path as the train stage,
timed without the dev evaluation), then times one ``ctc_iiw`` evaluation on the fixed subset
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
from ctca.iiw import group_tensors, snapshot
from ctca.losses.objective import Objective
from ctca.models.recognizer import build_recognizer
from ctca.train import measure_iiw, model_config


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
    model = build_recognizer(model_config(params, vocab.num_classes, params.tam.depth))
    theta0 = snapshot(group_tensors(model.module_groups(), params.iiw.tensor_filter))
    lc = params.loader
    train = store.split("train")
    dataset = ClipDataset(train, AugmentConfig(crop=lc.crop, flip=lc.flip, temporal_rescale=lc.temporal_rescale),
                          train=True)
    loader = make_loader(dataset, lc.batch_size, train=True, pad=model.frame_padding, stride=model.stride)
    loader.set_epoch(0)
    objective = Objective(params, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.train.lr)
    model.train()
    start = time.perf_counter()
    for batch in loader:
        loss = objective(model(batch.video, batch.mask, batch.lengths), batch).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    epoch = time.perf_counter() - start
    times = [measure_iiw(model, train, theta0, params).seconds for _ in range(args.repeats)]
    iiw = statistics.median(times)
    print(f"{params.model.method}, tam.depth {params.tam.depth}: one epoch ({len(train.metas)} videos, batch "
          f"{lc.batch_size}) {epoch:.1f} s; one IIW evaluation ({min(params.iiw.subset, len(train.metas))} videos) {iiw:.1f} s "
          f"(median of {args.repeats})")
    print(f"ratio IIW / epoch: {100 * iiw / epoch:.1f} %  (budget 20 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
