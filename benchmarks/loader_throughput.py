"""Benchmark: training-loader frames/s at paper shape, sharded JPEG clip store vs per-frame PNGs.

Paper shape: 224-px random crops of 256-px frames, batches of 2 clips of about 200 frames, temporal rescale
±20 % and horizontal flip, as in the reference code. Three loaders over the same clips, in the same run:

- ``png``: the reference code's way. Its preprocessing stores every frame as a 256-px PNG; each item
  globs the clip's folder and decodes every PNG, then augments (crop, flip, temporal rescale).
- ``jpeg-shards``: this pipeline's paper-scale store (``frames.codec: jpeg``, ``frames.store: encoded``):
  an index into a few JPEG shards; an item decodes only the frames the temporal rescale keeps.
- ``raw`` (with ``--raw``): the decoded uint8 store (``frames.store: raw``), the upper bound; it needs
  196 KB per frame on disk (190 GB for PHOENIX-2014).

Each is timed with 1 DataLoader worker process (the per-worker rate) and with ``--workers`` processes,
interleaved over repeats so drift hits all alike. Prints frames/s and the ratio against ``png``.

The clips come from a PHOENIX-2014-layout corpus (``--corpus``: ``annotations/manual/train.corpus.csv``
plus ``features/fullFrame-210x260px/train/<id>/1/*.png``), e.g. SynthSign rendered with
``synth.layout: png`` (docs/data-formats.md#synthsign). Without ``--corpus`` a temporary SynthSign one
is rendered.

Run: python benchmarks/loader_throughput.py [--corpus DIR] [--n-clips 24] [--workers 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

# Runnable from a checkout without `pip install -e .`: the repository root holds the ctca package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ctca.data.cache import ClipStore, write_clip_store  # noqa: E402
from ctca.data.corpus import Phoenix2014Reader, Sample  # noqa: E402
from ctca.data.frames import extract_frames, read_sample, write_frames  # noqa: E402
from ctca.data.loader import AugmentConfig, ClipDataset, ClipLoader, make_loader  # noqa: E402
from ctca.data.vocab import Vocabulary  # noqa: E402


class PngClipDataset(torch.utils.data.Dataset):
    """The reference (VAC) loader: every item globs its folder of 256-px PNGs and decodes each one, then
    the same augmentation as the pipeline's dataset. Duck-types ClipDataset for make_loader."""

    def __init__(self, like: ClipDataset, dirs: list[Path]):
        self.like = like
        self.dirs = [str(d) for d in dirs]

    @property
    def lengths(self) -> list[int]:
        return self.like.lengths

    def set_epoch(self, epoch: int) -> None:
        self.like.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dirs)

    def __getitem__(self, i: int) -> dict:
        paths = sorted(glob.glob(os.path.join(self.dirs[i], "*.png")))
        frames = np.stack([cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths])
        return self.like.make_item(i, frames)


def render_corpus(root: Path, n_clips: int) -> Path:
    """A temporary SynthSign corpus in the PHOENIX-2014 PNG-folder layout (sentences ~200 frames)."""
    from ctca.data.synthetic import SynthConfig, generate

    cfg = SynthConfig(n_train=n_clips, n_dev=1, n_test=1, min_len=12, max_len=16, sign_frames=12, layout="png")
    generate(cfg, root, workers=2, progress=False)
    return root


def build_stores(samples: list[Sample], tmp: Path, size: int, raw: bool) -> dict[str, Path]:
    """The three layouts of the same clips at ``size`` px: PNG folders, JPEG shards (+ raw store)."""
    frames_dir = tmp / "frames"
    t0 = time.perf_counter()
    manifest = extract_frames(samples, frames_dir, size, workers=2, progress=False, codec="jpeg")
    print(f"  jpeg shards: {time.perf_counter() - t0:.1f} s")
    vocab = Vocabulary.build(s.glosses for s in samples)
    write_clip_store(frames_dir, tmp / "enc", vocab, progress=False, store="encoded")
    out = {"jpeg-shards": tmp / "enc"}
    # the reference preprocessing: every frame resized to 256 px and written as a PNG
    png_manifest = extract_frames(samples, tmp / "png-src", size, workers=2, progress=False, codec="png")
    t0 = time.perf_counter()
    for s in png_manifest["samples"]:
        write_frames(read_sample(tmp / "png-src", s), tmp / "png" / s["id"])
    print(f"  png folders: {time.perf_counter() - t0:.1f} s")
    out["png"] = tmp / "png"
    if raw:
        write_clip_store(tmp / "png-src", tmp / "raw", vocab, progress=False, store="raw")
        out["raw"] = tmp / "raw"
    jpeg = sum(sh["bytes"] for sh in manifest["shards"])
    png = sum(p.stat().st_size for p in (tmp / "png").rglob("*.png"))
    n = sum(s["n_frames"] for s in manifest["samples"])
    print(f"  {n} frames: jpeg shards {jpeg / n / 1024:.1f} KiB/frame ({jpeg / (n * size * size * 3):.1%} of raw), "
          f"png {png / n / 1024:.1f} KiB/frame ({png / (n * size * size * 3):.1%} of raw)")
    return out


def time_epoch(loader: ClipLoader, epoch: int) -> tuple[float, int]:
    """(seconds, frames delivered) of one epoch."""
    loader.set_epoch(epoch)
    frames = 0
    t0 = time.perf_counter()
    for batch in loader:
        frames += int(batch.mask.sum()) - 12 * len(batch)  # real frames (the collate pads 6 + 6 per clip)
        int(batch.video[:, 0, 0, 0, 0].sum())
    return time.perf_counter() - t0, frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, help="a PHOENIX-2014-layout corpus (PNG folders); default: render one")
    ap.add_argument("--n-clips", type=int, default=24, help="training clips used (rendered if no --corpus)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the second measurement")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--raw", action="store_true", help="also time the decoded uint8 store")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory(prefix="ctca-loader-bench-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = args.corpus
        if corpus is None:
            print(f"rendering a temporary SynthSign corpus in the PHOENIX-2014 PNG layout ({args.n_clips} clips)")
            corpus = render_corpus(tmp / "corpus", args.n_clips)
        samples = Phoenix2014Reader(corpus).samples("train")[: args.n_clips]
        print(f"building the stores of {len(samples)} clips from {corpus}")
        stores = build_stores(samples, tmp, args.size, args.raw)
        aug = AugmentConfig(crop=args.crop, flip=0.5, temporal_rescale=0.2, min_frames=16, max_frames=400)
        enc = ClipStore(stores["jpeg-shards"]).split("train")
        datasets = {"png": PngClipDataset(ClipDataset(enc, aug, train=True), [stores["png"] / i for i in enc.ids]),
                    "jpeg-shards": ClipDataset(enc, aug, train=True)}
        if args.raw:
            datasets["raw"] = ClipDataset(ClipStore(stores["raw"]).split("train"), aug, train=True)
        print(f"{len(enc)} clips, {sum(enc.lengths)} frames ({statistics.mean(enc.lengths):.0f} per clip) of "
              f"{args.size} px, crop {args.crop}, batch {args.batch_size}, temporal rescale ±20 %, flip; "
              f"{args.repeats} repeats after a warm-up epoch")
        rates: dict[tuple[str, int], list[float]] = {}
        for workers in (1, args.workers):
            # uint8 batches, as training loads them (scaled to [-1, 1] by batch.to(device), on the GPU)
            loaders = {name: make_loader(ds, args.batch_size, True, pad=6, stride=4, num_workers=workers,
                                         normalize=False)
                       for name, ds in datasets.items()}
            for loader in loaders.values():
                time_epoch(loader, 0)  # worker start-up, page cache
            for r in range(1, args.repeats + 1):
                for name, loader in loaders.items():  # interleaved
                    seconds, frames = time_epoch(loader, r)
                    rates.setdefault((name, workers), []).append(frames / seconds)
            del loaders
        print(f"\n{'loader':>12} {'workers':>7} {'frames/s':>9} {'per worker':>10} {'vs png':>7}")
        for (name, workers), runs in rates.items():
            med = statistics.median(runs)
            ref = statistics.median(rates[("png", workers)])
            print(f"{name:>12} {workers:>7} {med:9.0f} {med / workers:10.0f} {med / ref:6.1f}x")
        ratio = statistics.median(rates[("jpeg-shards", 1)]) / statistics.median(rates[("png", 1)])
        per_worker = statistics.median(rates[("jpeg-shards", 1)])
        print(f"\njpeg-shards / png (1 worker) = {ratio:.1f}x (target >= 3x); jpeg-shards per worker "
              f"{per_worker:.0f} frames/s (target >= 700)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
