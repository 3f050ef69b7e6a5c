"""Tests of the loader: VAC collate padding, clip-consistent augmentation, determinism, length bucketing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ctca.data.cache import ClipMeta, ClipSplit
from ctca.data.loader import (
    AugmentConfig,
    ClipDataset,
    LengthBucketSampler,
    collate,
    make_loader,
    temporal_rescale_indices,
)

SIZE, CROP = 16, 10
LENGTHS = [12, 30, 7, 21, 16, 9, 25, 14]


def coded_clip(n: int, clip_index: int) -> np.ndarray:
    """Pixels that say where they came from: R = y*16 + x, G = frame index, B = clip index."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    x = np.empty((n, SIZE, SIZE, 3), np.uint8)
    x[..., 0] = yy * SIZE + xx
    x[..., 1] = np.arange(n)[:, None, None]
    x[..., 2] = clip_index
    return x


@pytest.fixture
def split(tmp_path: Path) -> ClipSplit:
    """A ClipSplit over a hand-written shard (the store writer is tested in test_cache)."""
    clips = [coded_clip(n, i) for i, n in enumerate(LENGTHS)]
    path = tmp_path / "train.u8"
    np.concatenate(clips).tofile(path)
    offsets = np.cumsum([0, *LENGTHS[:-1]])
    metas = [
        ClipMeta(f"c{i}", "train", f"S{i % 3}", ("A",) * (i + 1), (1,) * (i + 1), (), n, int(o))
        for i, (n, o) in enumerate(zip(LENGTHS, offsets, strict=True))
    ]
    return ClipSplit("train", path, (SIZE, SIZE, 3), sum(LENGTHS), metas)


def crop_of(video: torch.Tensor) -> tuple[int, int, bool]:
    """(y, x, flipped) of a clip made by coded_clip, asserting that every frame has the same crop."""
    r = video[:, 0].long()  # (T, crop, crop): y*16 + x of the source pixel
    assert torch.equal(r, r[:1].expand_as(r)), "frames of one clip were cropped or flipped differently"
    ys, xs = r[0] // SIZE, r[0] % SIZE
    flipped = bool(xs[0, 0] > xs[0, -1])
    return int(ys[0, 0]), int(xs[0, -1] if flipped else xs[0, 0]), flipped


def item(n: int, label: list[int], name: str) -> dict:
    video = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 2, 2).clone()
    return {
        "video": video,
        "label": torch.tensor(label),
        "id": name,
        "glosses": ("G",) * len(label),
        "signer": "S",
        "index": n,
    }


def test_collate_reproduces_vac_padding():
    batch = collate([item(5, [3, 4], "short"), item(10, [1, 2, 2], "long")], pad=6, stride=4)
    assert batch.ids == ["long", "short"]  # sorted by length, descending
    # T=10: ceil(10/4)*4 + 12 = 24; T=5: ceil(5/4)*4 + 12 = 20; batch length 24
    assert batch.lengths.tolist() == [24, 20]
    assert batch.video.shape == (2, 24, 3, 2, 2) and batch.video.dtype == torch.float32
    frames = ((batch.video[:, :, 0, 0, 0] + 1) * 127.5).round().long()
    assert frames[0].tolist() == [0] * 6 + list(range(10)) + [9] * 8
    assert frames[1].tolist() == [0] * 6 + list(range(5)) + [4] * 13
    assert batch.mask.tolist() == [[True] * 24, [True] * 20 + [False] * 4]
    assert batch.labels.tolist() == [1, 2, 2, 3, 4] and batch.label_lengths.tolist() == [3, 2]
    assert batch.signers == ["S", "S"] and batch.glosses == [("G",) * 3, ("G",) * 2]
    assert batch.video.min() == -1.0  # pixel 0 -> -1
    assert torch.allclose(batch.video[0, 15], torch.full((3, 2, 2), 9 / 127.5 - 1))


def test_uint8_batches_scale_on_transfer_bit_identically():
    """collate(normalize=False) hands over uint8 frames; Batch.to() scales them to exactly what collate would."""
    rng = torch.Generator().manual_seed(0)
    samples = [dict(item(n, [1, 2], f"c{n}"), video=torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8,
                                                                   generator=rng)) for n in (5, 9, 2)]
    float_batch = collate(samples, pad=6, stride=4)
    raw = collate(samples, pad=6, stride=4, normalize=False)
    assert raw.video.dtype == torch.uint8 and raw.video.numel() == float_batch.video.numel()
    moved = raw.to("cpu")
    assert moved.video.dtype == torch.float32 and torch.equal(moved.video, float_batch.video)
    assert torch.equal(float_batch.to("cpu").video, float_batch.video)  # a float batch is left as it is
    assert torch.equal(moved.mask, float_batch.mask) and moved.ids == float_batch.ids


def test_collate_plain_padding_keeps_true_lengths():
    batch = collate([item(3, [1], "a"), item(7, [2], "b"), item(5, [3], "c")], pad=0, stride=1)
    assert batch.lengths.tolist() == [7, 5, 3] and batch.video.shape[1] == 7
    assert batch.mask.sum(1).tolist() == [7, 5, 3]
    frames = ((batch.video[:, :, 0, 0, 0] + 1) * 127.5).round().long()
    assert frames[2].tolist() == [0, 1, 2, 2, 2, 2, 2]
    assert batch.to("cpu").labels.tolist() == [2, 3, 1]


def test_train_augmentation_is_one_crop_and_flip_per_clip(split):
    ds = ClipDataset(split, AugmentConfig(crop=CROP, temporal_rescale=0.0), train=True, seed=3)
    seen_flips, seen_crops = set(), set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            it = ds[i]
            v = it["video"]
            assert v.dtype == torch.uint8 and v.shape == (LENGTHS[i], 3, CROP, CROP)
            y, x, flipped = crop_of(v)
            assert 0 <= y <= SIZE - CROP and 0 <= x <= SIZE - CROP
            assert v[:, 1, 0, 0].tolist() == list(range(LENGTHS[i]))  # no rescale: every frame, in order
            assert it["label"].tolist() == [1] * (i + 1) and it["id"] == f"c{i}" and it["index"] == i
            seen_flips.add(flipped)
            seen_crops.add((y, x))
    assert seen_flips == {True, False} and len(seen_crops) > 5


def test_temporal_rescale_lengths_and_indices():
    cfg = AugmentConfig(crop=CROP, temporal_rescale=0.2, min_frames=16, max_frames=230)
    for t in [5, 10, 17, 40, 100, 230, 299, 475]:
        lo = math.ceil(min(max(int(t * 0.8), 16), 230) / 4) * 4
        hi = math.ceil(min(max(int(t * 1.2), 16), 230) / 4) * 4
        for k in range(30):
            idx = temporal_rescale_indices(t, np.random.default_rng([t, k]), cfg)
            n = len(idx)
            assert n % 4 == 0 and 16 <= n <= 232 and lo <= n <= hi
            assert np.all(np.diff(idx) >= 0) and idx.min() >= 0 and idx.max() < t
            if n <= t:
                assert len(set(idx.tolist())) == n  # without replacement when shortening
    assert len(temporal_rescale_indices(475, np.random.default_rng(0), cfg)) == 232  # VAC: 230 rounds up


def test_rescaled_clips_in_the_dataset(split):
    ds = ClipDataset(split, AugmentConfig(crop=CROP, min_frames=8, max_frames=40), train=True)
    for i in range(len(ds)):
        v = ds[i]["video"]
        src = v[:, 1, 0, 0].tolist()  # source frame index of each output frame
        assert len(v) % 4 == 0 and 8 <= len(v) <= 40 and src == sorted(src) and max(src) < LENGTHS[i]
        crop_of(v)


def test_augmentation_is_a_function_of_seed_epoch_index(split):
    aug = AugmentConfig(crop=CROP)
    a, b = ClipDataset(split, aug, train=True, seed=7), ClipDataset(split, aug, train=True, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    for i in reversed(range(len(a))):  # access order does not matter
        assert torch.equal(a[i]["video"], b[i]["video"])
    b.set_epoch(3)
    assert any(not torch.equal(a[i]["video"], b[i]["video"]) for i in range(len(a)))
    c = ClipDataset(split, aug, train=True, seed=8)
    c.set_epoch(2)
    assert any(not torch.equal(a[i]["video"], c[i]["video"]) for i in range(len(a)))


def test_eval_is_a_deterministic_center_crop(split):
    ds = ClipDataset(split, AugmentConfig(crop=CROP), train=False, seed=1)
    first = [ds[i]["video"] for i in range(len(ds))]
    ds.set_epoch(5)
    for i, v in enumerate(first):
        assert crop_of(v) == ((SIZE - CROP) // 2, (SIZE - CROP) // 2, False)
        assert v[:, 1, 0, 0].tolist() == list(range(LENGTHS[i]))
        assert torch.equal(ds[i]["video"], v)


def test_crop_larger_than_frames_is_an_error(split):
    with pytest.raises(ValueError, match="crop=20 is larger than the 16x16"):
        ClipDataset(split, AugmentConfig(crop=20), train=True)
    with pytest.raises(ValueError, match="flip"):
        AugmentConfig(crop=4, flip=1.5)


def test_sampler_covers_every_index_once_with_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 300, 203).tolist()
    sampler = LengthBucketSampler(lengths, batch_size=4, shuffle=True, seed=1)
    spreads = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(203)) and len(batches) == len(sampler) == 51
        assert sum(len(b) < 4 for b in batches) == 1
        spreads.append(np.mean([np.ptp([lengths[i] for i in b]) for b in batches]))
    random_spread = np.mean([np.ptp(rng.choice(lengths, 4)) for _ in range(500)])
    assert max(spreads) < random_spread / 3
    sampler.set_epoch(1)
    again = LengthBucketSampler(lengths, batch_size=4, shuffle=True, seed=1)
    again.set_epoch(1)
    assert list(sampler) == list(again)
    again.set_epoch(2)
    assert list(sampler) != list(again)


def test_sampler_eval_order_drop_last_and_replicas():
    lengths = [5, 9, 1, 7, 3]
    assert list(LengthBucketSampler(lengths, 2, shuffle=False)) == [[1, 3], [0, 4], [2]]
    dropped = LengthBucketSampler(lengths, 2, shuffle=True, drop_last=True)
    assert len(dropped) == 2 and all(len(b) == 2 for b in dropped)
    ranks = [list(LengthBucketSampler(lengths, 2, shuffle=True, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    assert set(i for r in ranks for b in r for i in b) == set(range(5))


def test_make_loader_same_batches_with_and_without_workers(split):
    aug = AugmentConfig(crop=CROP, min_frames=8, max_frames=40)
    runs = []
    for workers in (0, 2):
        loader = make_loader(
            ClipDataset(split, aug, train=True, seed=5), 3, True, pad=6, stride=4, num_workers=workers, seed=5
        )
        epochs = []
        for epoch in (0, 1):
            loader.set_epoch(epoch)  # must reach the persistent workers too
            epochs.append([(b.ids, b.video.clone(), b.lengths) for b in loader])
        runs.append(epochs)
        del loader
    for e0, e2 in zip(runs[0], runs[1], strict=True):
        assert [b[0] for b in e0] == [b[0] for b in e2]
        for (_, v0, l0), (_, v2, l2) in zip(e0, e2, strict=True):
            assert torch.equal(v0, v2) and torch.equal(l0, l2)
    assert sorted(i for b in runs[0][0] for i in b[0]) == sorted(f"c{i}" for i in range(len(LENGTHS)))
    first = {i: v for ids, v, _ in runs[0][0] for i, v in zip(ids, v, strict=False)}
    second = {i: v for ids, v, _ in runs[0][1] for i, v in zip(ids, v, strict=False)}
    assert any(first[k].shape != second[k].shape or not torch.equal(first[k], second[k]) for k in first)
