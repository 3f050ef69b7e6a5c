"""Training/eval data loading over the clip store: augmentation, VAC-style collate, length bucketing.

Augmentation randomness depends only on (seed, epoch, clip index), so results do not depend on workers.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ctca.data.cache import ClipSplit, center_box
from ctca.data.shards import mirror_frames

# VAC rounds the rescaled length up to a multiple of 4, the temporal stride of its K5-P2-K5-P2 TAM.
TEMPORAL_MULTIPLE = 4


@dataclass(frozen=True)
class AugmentConfig:
    """Clip augmentation (docs/data-formats.md#loading-and-augmentation): one crop and one flip per clip,
    temporal rescale ±r.

    ``crop`` is also the eval center-crop size. ``min_frames``/``max_frames`` clamp the rescaled
    length before it is rounded up to a multiple of 4, as VAC does (so 230 can become 232).
    """

    crop: int
    flip: float = 0.5
    temporal_rescale: float = 0.2
    min_frames: int = 16
    max_frames: int = 230

    def __post_init__(self):
        if self.crop < 1:
            raise ValueError(f"crop={self.crop}: expected a positive crop size in pixels")
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"flip={self.flip}: expected a probability in [0, 1]")
        if not 0.0 <= self.temporal_rescale < 1.0:
            raise ValueError(f"temporal_rescale={self.temporal_rescale}: expected a fraction in [0, 1)")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(
                f"min_frames={self.min_frames}, max_frames={self.max_frames}: expected 1 <= min_frames <= max_frames"
            )


def _channels_first(view: np.ndarray, flip: bool) -> torch.Tensor:
    """A (T, c, c, 3) view as a contiguous (T, 3, c, c) uint8 tensor, mirrored when ``flip``."""
    # Indexing time and space together copies only the kept frames' crops out of the memmap.
    clip = np.ascontiguousarray(view)
    if flip:
        clip = mirror_frames(clip)
    # A contiguous channels-first copy: collate's float scaling is ~4x slower on strided input.
    return torch.from_numpy(np.ascontiguousarray(clip.transpose(0, 3, 1, 2)))


def eval_clip(frames: np.ndarray, crop: int) -> torch.Tensor:
    """The evaluation view of a (T, H, W, 3) uint8 clip: the center ``crop`` x ``crop``, every frame, as a
    (T, 3, crop, crop) uint8 tensor (what evaluation and ``ctca predict`` feed the model)."""
    h, w = frames.shape[1:3]
    if h < crop or w < crop:
        raise ValueError(f"frames of {h}x{w} pixels are smaller than the {crop}-pixel crop")
    y, x, _ = center_box(h, w, crop)
    return _channels_first(frames[:, y : y + crop, x : x + crop], False)


def temporal_rescale_indices(n_frames: int, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Sorted frame indices of VAC's TemporalRescale: new length int(T * U(1-r, 1+r)), clamped, rounded up
    to a multiple of 4; drawn without replacement when shortening, with replacement when lengthening."""
    r = cfg.temporal_rescale
    new_len = int(n_frames * rng.uniform(1.0 - r, 1.0 + r))
    new_len = min(max(new_len, cfg.min_frames), cfg.max_frames)
    new_len = math.ceil(new_len / TEMPORAL_MULTIPLE) * TEMPORAL_MULTIPLE
    if new_len <= n_frames:
        idx = rng.choice(n_frames, size=new_len, replace=False)
    else:
        idx = rng.integers(0, n_frames, size=new_len)
    return np.sort(idx)


class ClipDataset(Dataset):
    """Clips of a :class:`ClipSplit` as ``{"video": uint8 (T, 3, crop, crop), "label", "id", ...}``.

    Train: one random crop and one horizontal flip (prob ``flip``) for the whole clip, then temporal
    rescale. Eval: center crop only. Frames stay uint8 until :func:`collate`.
    """

    def __init__(self, split: ClipSplit, augment: AugmentConfig, train: bool, seed: int = 0):
        h, w = split.frame_shape[:2]
        if augment.crop > min(h, w):
            raise ValueError(
                f"crop={augment.crop} is larger than the {h}x{w} frames of the clip store ({split.path})"
            )
        if seed < 0:
            raise ValueError(f"seed={seed}: expected a non-negative integer")
        self.split = split
        self.augment = augment
        self.train = train
        self.seed = seed
        # Shared memory, so set_epoch in the main process reaches persistent DataLoader workers.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch={epoch}: expected a non-negative integer")
        self._epoch.fill_(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    @property
    def lengths(self) -> list[int]:
        """Stored frame counts (before temporal rescale), for length bucketing."""
        return self.split.lengths

    def __len__(self) -> int:
        return len(self.split)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of clip ``index`` this epoch: a function of (seed, epoch, index) only."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def plan(self, index: int, n: int, h: int, w: int) -> tuple[np.ndarray | None, tuple[int, int, int], bool]:
        """Clip ``index``'s training augmentation: (frame indices or None for all, crop box (y, x, c), flip)."""
        c = self.augment.crop
        rng = self.rng(index)
        y = int(rng.integers(0, h - c + 1))
        x = int(rng.integers(0, w - c + 1))
        flip = bool(rng.random() < self.augment.flip)
        times = temporal_rescale_indices(n, rng, self.augment) if self.augment.temporal_rescale > 0 else None
        return times, (y, x, c), flip

    def transform(self, frames: np.ndarray, index: int) -> torch.Tensor:
        """Augment a (T, H, W, 3) uint8 clip into a contiguous (T', 3, crop, crop) uint8 tensor."""
        if not self.train:
            return eval_clip(frames, self.augment.crop)
        times, (y, x, c), flip = self.plan(index, *frames.shape[:3])
        return _channels_first(frames[slice(None) if times is None else times, y : y + c, x : x + c], flip)

    def __getitem__(self, i: int) -> dict:
        """Clip ``i``, reading only what the augmentation keeps: the kept frames' crops (an encoded store
        decodes each kept frame once)."""
        meta = self.split.meta(i)
        h, w = self.split.frame_shape[:2]
        if self.train:
            times, box, flip = self.plan(i, meta.n_frames, h, w)
            video = _channels_first(self.split.read(i, times, box, flip), False)
        else:
            video = _channels_first(self.split.read(i, None, center_box(h, w, self.augment.crop)), False)
        return self.item(i, video)

    def make_item(self, i: int, frames: np.ndarray) -> dict:
        """The item of clip ``i`` from its (T, H, W, 3) frames (from the store, or read elsewhere)."""
        return self.item(i, self.transform(frames, i))

    def item(self, i: int, video: torch.Tensor) -> dict:
        meta = self.split.meta(i)
        return {
            "video": video,
            "label": torch.tensor(meta.gloss_ids, dtype=torch.long),
            "id": meta.id,
            "glosses": meta.glosses,
            "signer": meta.signer,
            "index": i,
        }


@dataclass
class Batch:
    """A collated batch. ``video`` (B, L, 3, H, W) float32 in [-1, 1]; ``lengths`` the padded per-video
    lengths ceil(T/stride)*stride + 2*pad; ``mask`` True on each video's first ``lengths[i]`` frames."""

    video: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    label_lengths: torch.Tensor
    ids: list[str]
    glosses: list[tuple[str, ...]]
    signers: list[str]
    indices: list[int] = field(default_factory=list)

    def _map(self, fn) -> Batch:
        tensors = {f: fn(getattr(self, f)) for f in ("video", "lengths", "mask", "labels", "label_lengths")}
        return dataclasses.replace(self, **tensors)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch on ``device``; a uint8 ``video`` (``collate(normalize=False)``) is moved as uint8, 4x
        fewer bytes, and scaled to x / 127.5 - 1 there: bit-identical to scaling in the collate."""
        moved = self._map(lambda t: t.to(device, non_blocking=non_blocking))
        if moved.video.dtype == torch.uint8:
            moved.video = moved.video.float().div_(127.5).sub_(1.0)
        return moved

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) for custom batch types."""
        return self._map(lambda t: t.pin_memory())

    def __len__(self) -> int:
        return len(self.ids)


def padded_length(n_frames: int, pad: int, stride: int) -> int:
    """VAC's per-video length generalised: ceil(T/stride)*stride + 2*pad (pad 6, stride 4: T=10 -> 24)."""
    return math.ceil(n_frames / stride) * stride + 2 * pad


def collate(samples: list[dict], pad: int, stride: int, normalize: bool = True) -> Batch:
    """Sort by length (descending), pad each video with ``pad`` copies of its first frame on the left and
    copies of its last frame on the right up to :func:`padded_length`, then right-pad every video with its
    last frame to the batch maximum. Scales pixels to x/127.5 - 1. ``pad=0, stride=1``: plain padding.

    ``normalize=False`` leaves ``video`` uint8 and :meth:`Batch.to` scales it on the target device: a
    DataLoader worker then hands over a quarter of the bytes and skips the float pass (the training loader
    does this; at paper shape a batch is 120 MB of float32, 30 MB of uint8)."""
    if not samples:
        raise ValueError("collate: empty batch")
    if pad < 0 or stride < 1:
        raise ValueError(f"collate: pad={pad}, stride={stride}; expected pad >= 0 and stride >= 1")
    for s in samples:
        if len(s["video"]) == 0:
            raise ValueError(f"collate: clip {s['id']!r} has 0 frames")
    shapes = {tuple(s["video"].shape[1:]) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"collate: clips have different frame shapes {sorted(shapes)}")
    samples = sorted(samples, key=lambda s: len(s["video"]), reverse=True)  # stable: ties keep batch order
    lengths = [padded_length(len(s["video"]), pad, stride) for s in samples]
    total = max(lengths)
    video = torch.empty((len(samples), total, *shapes.pop()), dtype=torch.float32 if normalize else torch.uint8)
    for b, s in enumerate(samples):
        n = len(s["video"])
        body = video[b, pad : pad + n]
        if normalize:
            # Scale only the real frames (in place, in the output), then replicate the edge frames: fewer
            # passes over memory than scaling the padded batch, and bit-identical to x / 127.5 - 1.
            torch.div(s["video"], 127.5, out=body)
            body.sub_(1.0)
        else:
            body.copy_(s["video"])
        video[b, :pad] = body[0]
        video[b, pad + n :] = body[-1]
    lengths_t = torch.tensor(lengths, dtype=torch.long)
    labels = [s["label"] for s in samples]
    return Batch(
        video=video,
        lengths=lengths_t,
        mask=torch.arange(total)[None, :] < lengths_t[:, None],
        labels=torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
        label_lengths=torch.tensor([len(lab) for lab in labels], dtype=torch.long),
        ids=[s["id"] for s in samples],
        glosses=[tuple(s["glosses"]) for s in samples],
        signers=[s["signer"] for s in samples],
        indices=[int(s["index"]) for s in samples],
    )


class LengthBucketSampler(Sampler[list[int]]):
    """Batch sampler that groups clips of similar length, to waste little compute on padding.

    shuffle=True: seeded permutation, sort by length (descending) inside pools of
    ``batch_size * bucket_size_multiplier``, cut into batches, shuffle the batch order; all from
    (seed, epoch). shuffle=False: batches of the globally length-sorted indices, in order. Every index
    appears exactly once per epoch unless ``drop_last`` drops the one short batch. With
    ``num_replicas > 1`` (DDP) each rank takes every num_replicas-th batch; the batch list is first
    extended by repeating its first batches so that every rank gets the same number (as
    DistributedSampler does), so a few clips are then seen twice per epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        bucket_size_multiplier: int = 8,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size < 1 or bucket_size_multiplier < 1:
            raise ValueError(
                f"batch_size={batch_size}, bucket_size_multiplier={bucket_size_multiplier}: expected both >= 1"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank}, num_replicas={num_replicas}: expected 0 <= rank < num_replicas")
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.bucket_size_multiplier = bucket_size_multiplier
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0  # batches of this epoch to leave out from the front (resuming within an epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        by_length = functools.partial(sorted, key=lambda i: -self.lengths[i])  # stable
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            perm = rng.permutation(n).tolist()
            pool = bs * self.bucket_size_multiplier
            # Pools are multiples of batch_size, so only the very last batch can be short.
            batches = [
                chunk[j : j + bs]
                for p in range(0, n, pool)
                for chunk in [by_length(perm[p : p + pool])]
                for j in range(0, len(chunk), bs)
            ]
            batches = [batches[k] for k in rng.permutation(len(batches))]
        else:
            order = by_length(range(n))
            batches = [order[j : j + bs] for j in range(0, n, bs)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == bs]
        if self.num_replicas > 1 and batches:
            extra = -len(batches) % self.num_replicas
            batches = (batches + batches * math.ceil(extra / len(batches)))[: len(batches) + extra]
            batches = batches[self.rank :: self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches()[self.start :])

    def __len__(self) -> int:
        n, bs = len(self.lengths), self.batch_size
        n_batches = n // bs if self.drop_last else math.ceil(n / bs)
        return math.ceil(n_batches / self.num_replicas)


class ClipLoader(DataLoader):
    """A DataLoader whose :meth:`set_epoch` reseeds both the augmentation and the bucket sampler."""

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating each epoch (before ``iter(loader)``) for reproducible epochs."""
        self.dataset.set_epoch(epoch)
        self.batch_sampler.set_epoch(epoch)


def _seed_worker(worker_id: int) -> None:
    # Augmentation uses its own (seed, epoch, index) generator; this only guards any other library
    # randomness in a worker (VAC left numpy unseeded in workers, so forked workers repeated draws).
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def make_loader(
    dataset: ClipDataset,
    batch_size: int,
    train: bool,
    pad: int,
    stride: int,
    num_workers: int = 0,
    seed: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
    normalize: bool = True,
) -> ClipLoader:
    """DataLoader over ``dataset`` with :class:`LengthBucketSampler` (shuffled iff ``train``; this rank's
    share under DDP) and :func:`collate` (``normalize=False``: uint8 batches, scaled by ``Batch.to``).
    Call ``loader.set_epoch(epoch)`` before each epoch."""
    sampler = LengthBucketSampler(dataset.lengths, batch_size, shuffle=train, seed=seed, num_replicas=num_replicas,
                                  rank=rank)
    return ClipLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=functools.partial(collate, pad=pad, stride=stride, normalize=normalize),
        num_workers=num_workers,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
