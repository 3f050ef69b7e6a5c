"""Benchmark: clips/s of the cached loader (uint8 clip store) vs the reference per-frame PNG loader.

Run: python benchmarks/loader_throughput.py [--pipeline | --frames-dir D --cache-dir D] [--n-clips N]
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
from ctca.config import Params  # noqa: E402
from ctca.data.cache import ClipStore, write_clip_store  # noqa: E402
from ctca.data.corpus import PHOENIX_FEATURES, PHOENIX_HEADER, Phoenix2014Reader  # noqa: E402
from ctca.data.frames import extract_frames, load_manifest, write_frames  # noqa: E402
from ctca.data.loader import AugmentConfig, ClipDataset, ClipLoader, make_loader  # noqa: E402
from ctca.data.vocab import Vocabulary  # noqa: E402
from ctca.pipeline import CLIPS_DIR, FRAMES_DIR  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class PngClipDataset(torch.utils.data.Dataset):
    """The reference (VAC) way: every item globs its frame folder and decodes each PNG, then the same
    augmentation as the cached dataset. Duck-types ClipDataset (lengths, set_epoch) for make_loader."""

    def __init__(self, cached: ClipDataset, dirs: list[Path]):
        self.cached = cached
        self.dirs = [str(d) for d in dirs]

    @property
    def lengths(self) -> list[int]:
        return self.cached.lengths

    def set_epoch(self, epoch: int) -> None:
        self.cached.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dirs)

    def __getitem__(self, i: int) -> dict:
        paths = sorted(glob.glob(os.path.join(self.dirs[i], "*.png")))
        frames = np.stack([cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths])
        return self.cached.make_item(i, frames)


def build_corpus(root: Path, n_clips: int, n_frames: int, size: int) -> tuple[Path, Path]:
    """A temporary PHOENIX-layout corpus of PNG folders, extracted to ``size`` and packed: (frames, clips)."""
    rng = np.random.default_rng(0)
    h, w = size * 13 // 10, size * 21 // 20  # a 210x260-like portrait source, resized to a square
    yy, xx = np.mgrid[0:h, 0:w]
    rows = ["|".join(PHOENIX_HEADER)]
    for k in range(n_clips):
        t = int(n_frames * rng.uniform(0.75, 1.25))
        # Smooth moving gradients plus mild noise: compresses like video frames, not like white noise.
        base = np.stack([(xx * 5 + k * 7) % 256, (yy * 4) % 256, (xx + yy + k) % 256], -1)
        clip = np.stack([base + 3 * i for i in range(t)]) + rng.integers(0, 8, (t, h, w, 3))
        write_frames((clip % 256).astype(np.uint8), root / PHOENIX_FEATURES / "train" / f"clip{k:04d}" / "1")
        glosses = " ".join(f"G{g}" for g in rng.integers(0, 20, rng.integers(2, 8)))
        rows.append(f"clip{k:04d}|clip{k:04d}/1/*.png|Signer0{k % 9 + 1}|{glosses}")
    (root / "annotations" / "manual").mkdir(parents=True)
    (root / "annotations" / "manual" / "train.corpus.csv").write_text("\n".join(rows) + "\n")
    samples = Phoenix2014Reader(root).samples("train")
    frames_dir, clips_dir = root / "frames", root / "clips"
    extract_frames(samples, frames_dir, size, workers=2, progress=False)
    write_clip_store(frames_dir, clips_dir, Vocabulary.build(s.glosses for s in samples), progress=False)
    return frames_dir, clips_dir


def time_epoch(loader: ClipLoader, epoch: int) -> float:
    """Seconds to iterate one epoch of batches."""
    loader.set_epoch(epoch)
    t0 = time.perf_counter()
    for batch in loader:
        float(batch.video[:, 0].sum())  # make sure the batch is materialised
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--pipeline", action="store_true", help=f"use the pipeline's {FRAMES_DIR} and {CLIPS_DIR}"
    )
    ap.add_argument("--frames-dir", type=Path, help="extracted frames (manifest.json), e.g. work/frames")
    ap.add_argument("--cache-dir", type=Path, help="clip store of the same frames, e.g. work/clips")
    ap.add_argument("--split", default="train")
    ap.add_argument("--n-clips", type=int, default=60, help="clips per epoch (and clips built if no dirs)")
    ap.add_argument("--n-frames", type=int, default=80, help="mean frames per built clip")
    ap.add_argument("--size", type=int, default=40, help="frame size of the built corpus")
    ap.add_argument("--crop", type=int, help="crop size (default: params.yaml loader.crop)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: params.yaml loader.batch_size")
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads in this process (DataLoader workers always use 1)",
    )
    args = ap.parse_args(argv)
    defaults = Params()  # the pipeline's default loader settings (params.yaml documents the same values)
    args.batch_size = args.batch_size or defaults.loader.batch_size
    # Loading runs single-threaded inside DataLoader workers; in-process (workers 0) the default
    # intra-op pool spin-waits on a busy machine and makes collate's few small ops 100x slower.
    torch.set_num_threads(args.torch_threads)
    if args.pipeline:
        args.frames_dir, args.cache_dir = REPO / FRAMES_DIR, REPO / CLIPS_DIR
    if (args.frames_dir is None) != (args.cache_dir is None):
        ap.error("give both --frames-dir and --cache-dir, or neither (then a temporary corpus is built)")

    with tempfile.TemporaryDirectory(prefix="ctca-bench-") as tmp:
        if args.frames_dir is None:
            print(
                f"building a temporary corpus: {args.n_clips} clips x ~{args.n_frames} frames at {args.size}px"
            )
            frames_dir, cache_dir = build_corpus(Path(tmp), args.n_clips, args.n_frames, args.size)
        else:
            frames_dir, cache_dir = args.frames_dir, args.cache_dir
        store = ClipStore(cache_dir)
        if args.split not in store.splits:
            print(f"{cache_dir}: no split {args.split!r} (the store has {store.splits})", file=sys.stderr)
            return 1
        split = store.split(args.split)
        split = split.subset(range(min(args.n_clips, len(split))))
        dirs_by_id = {
            s["id"]: frames_dir / s["dir"]
            for s in load_manifest(frames_dir)["samples"]
            if s["split"] == args.split
        }
        missing = [i for i in split.ids if i not in dirs_by_id]
        if missing:
            print(
                f"{frames_dir}/manifest.json lacks {len(missing)} clips of the store, e.g. {missing[:3]}",
                file=sys.stderr,
            )
            return 1
        crop = args.crop or min(defaults.loader.crop, store.size)  # the pipeline's own setting
        cached = ClipDataset(split, AugmentConfig(crop=crop), train=True, seed=0)
        png = PngClipDataset(
            ClipDataset(split, AugmentConfig(crop=crop), train=True, seed=0),
            [dirs_by_id[i] for i in split.ids],
        )
        loaders = {
            name: make_loader(ds, args.batch_size, True, pad=6, stride=4, num_workers=args.num_workers)
            for name, ds in (("cached", cached), ("png", png))
        }
        n = len(split)
        print(
            f"{n} clips, {sum(split.lengths)} frames of {store.size}x{store.size}, crop {crop}, "
            f"batch {args.batch_size}, workers {args.num_workers}, {args.repeats} repeats (+1 warm-up)"
        )
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        for loader in loaders.values():
            time_epoch(loader, 0)  # warm-up: page cache, worker start, allocator
        for r in range(1, args.repeats + 1):
            for name, loader in loaders.items():  # interleaved, so drift hits both alike
                rates[name].append(n / time_epoch(loader, r))
        med = {name: statistics.median(v) for name, v in rates.items()}
        for name in loaders:
            print(
                f"{name:>6}: {med[name]:10.1f} clips/s (median; runs {', '.join(f'{x:.0f}' for x in rates[name])})"
            )
        print(f"cached / png = {med['cached'] / med['png']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
