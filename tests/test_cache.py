"""Tests of the clip store, raw (uint8) and encoded (an index into the frame shards): round trip, reads of
frame subsets and crops, checksums, OOV accounting, and refusing broken stores."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import ctca.data.cache as cache
from ctca.data.cache import ClipMeta, ClipStore, write_clip_store
from ctca.data.frames import FRAMES_FORMAT, write_json_atomic
from ctca.data.shards import ShardWriter, encode_frame
from ctca.data.vocab import Vocabulary

SIZE = 8
# split -> [(id, glosses, n_frames)]
CLIPS = {
    "train": [("t0", ["A", "B"], 5), ("t1", ["B"], 3), ("t2", ["A", "C", "A"], 7)],
    "dev": [("d0", ["A", "X"], 4), ("d1", ["Y", "C", "X"], 6)],
}


def frames_of(split: str, i: int, n: int) -> np.ndarray:
    return np.random.default_rng([len(split), i]).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture
def frames_dir(tmp_path: Path) -> Path:
    """A frame store as extract_frames writes it (PNG shards, two shards for train, + manifest), with one
    failure; written here with the shard writer, not by extract_frames."""
    root = tmp_path / "frames"
    root.mkdir()
    samples, shards = [], []
    for split, clips in CLIPS.items():
        writer = ShardWriter(root, split, shard_bytes=1500)
        for i, (cid, glosses, n) in enumerate(clips):
            encoded = [encode_frame(f, "png") for f in frames_of(split, i, n)]
            shard, first = writer.add(encoded)
            samples.append(
                {
                    "id": cid,
                    "split": split,
                    "signer": f"S{i}",
                    "glosses": glosses,
                    "n_frames": n,
                    "shard": shard,
                    "first": first,
                    "sha1": hashlib.sha1(b"".join(encoded)).hexdigest(),
                    "source": f"/corpus/{cid}.mp4",
                }
            )
        shards += writer.close()
    manifest = {
        "format": FRAMES_FORMAT,
        "size": SIZE,
        "codec": "png",
        "quality": None,
        "shards": shards,
        "samples": samples,
        "failed": [
            {"id": "d9", "split": "dev", "source": "/corpus/d9.mp4", "reason": "video file not found",
             "signer": "S2", "glosses": ["A", "Q"]}
        ],
        "counts": {"train": {"ok": 3, "failed": 0}, "dev": {"ok": 2, "failed": 1}},
    }
    write_json_atomic(root / "manifest.json", manifest)
    return root


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary.build(g for _, g, _ in CLIPS["train"])


def test_round_trip(frames_dir, vocab, tmp_path):
    out = tmp_path / "clips"
    write_clip_store(frames_dir, out, vocab, progress=False)
    store = ClipStore(out)
    assert store.splits == ["train", "dev"]
    assert store.vocab == vocab
    for split, clips in CLIPS.items():
        sp = store.split(split)
        assert len(sp) == len(clips) and sp.ids == [c[0] for c in clips]
        offset = 0
        for i, (cid, glosses, n) in enumerate(clips):
            x = sp[i]
            assert x.dtype == np.uint8 and x.shape == (n, SIZE, SIZE, 3)
            assert np.array_equal(x, frames_of(split, i, n))
            assert isinstance(x, np.memmap) and not x.flags.writeable  # a read-only view, not a copy
            m = sp.meta(i)
            assert m == ClipMeta(
                id=cid,
                split=split,
                signer=f"S{i}",
                glosses=tuple(glosses),
                gloss_ids=tuple(vocab.encode(glosses)[0]),
                oov=tuple(vocab.encode(glosses)[1]),
                n_frames=n,
                offset=offset,
                sha1=m.sha1,
            )
            offset += n
        assert sp.total_frames == offset
        assert (out / f"{split}.u8").stat().st_size == offset * SIZE * SIZE * 3
    assert store.verify() == []
    # the unreadable dev video stays part of its split, with what scoring its reference needs
    assert store.unreadable("dev") == [{"id": "d9", "signer": "S2", "glosses": ["A", "Q"],
                                        "reason": "video file not found"}]
    assert store.unreadable("train") == []


def test_oov_glosses_are_kept_listed_and_counted(frames_dir, vocab, tmp_path):
    summary = write_clip_store(frames_dir, tmp_path / "clips", vocab, progress=False)
    assert summary["oov"]["train"] == {"glosses": 0, "types": [], "samples": 0}
    assert summary["oov"]["dev"] == {"glosses": 3, "types": ["X", "Y"], "samples": 2}
    assert ClipStore(tmp_path / "clips").oov == summary["oov"]
    assert summary["splits"]["dev"] == {"clips": 2, "frames": 10, "bytes": 10 * SIZE * SIZE * 3}
    assert summary["extraction_failed"] == {"dev": 1}
    d1 = ClipStore(tmp_path / "clips").split("dev").meta(1)
    assert d1.glosses == ("Y", "C", "X")  # references keep every gloss
    assert d1.gloss_ids == (vocab.encode(["C"])[0][0],) and d1.oov == ("Y", "X")


def test_verify_detects_a_flipped_byte(frames_dir, vocab, tmp_path):
    out = tmp_path / "clips"
    write_clip_store(frames_dir, out, vocab, progress=False)
    meta = ClipStore(out).split("train").meta(2)
    with (out / "train.u8").open("r+b") as fh:
        pos = (meta.offset + 1) * SIZE * SIZE * 3 + 17
        fh.seek(pos)
        b = fh.read(1)[0]
        fh.seek(pos)
        fh.write(bytes([b ^ 0x01]))
    assert ClipStore(out).verify() == [("train", "t2")]


def test_missing_index_and_wrong_shard_size_are_clear_errors(frames_dir, vocab, tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json"):
        ClipStore(tmp_path / "nothing")
    out = tmp_path / "clips"
    write_clip_store(frames_dir, out, vocab, progress=False)
    data = (out / "dev.u8").read_bytes()
    (out / "dev.u8").write_bytes(data[:-5])
    with pytest.raises(ValueError, match=r"dev\.u8.*bytes, expected"):
        ClipStore(out)
    (out / "dev.u8").unlink()
    with pytest.raises(FileNotFoundError, match=r"dev\.u8"):
        ClipStore(out)
    (out / "dev.u8").write_bytes(data)
    with pytest.raises(KeyError, match="no split 'test'"):
        ClipStore(out).split("test")


def test_interrupted_write_leaves_no_valid_store(frames_dir, vocab, tmp_path, monkeypatch):
    out = tmp_path / "clips"
    write_clip_store(frames_dir, out, vocab, progress=False)
    calls = {"n": 0}
    real = cache.read_sample

    def crash_on_fourth(folder, sample):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(folder, sample)

    monkeypatch.setattr(cache, "read_sample", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        write_clip_store(frames_dir, out, vocab, progress=False)
    with pytest.raises(FileNotFoundError, match="index.json"):
        ClipStore(out)


def test_manifest_frame_count_mismatch_names_the_sample(frames_dir, vocab, tmp_path):
    manifest = json.loads((frames_dir / "manifest.json").read_text())
    manifest["samples"][1]["n_frames"] = 2  # t1 has 3 frames
    write_json_atomic(frames_dir / "manifest.json", manifest)
    with pytest.raises(ValueError, match=r"train/t1.*sha1"):
        write_clip_store(frames_dir, tmp_path / "clips", vocab, progress=False)
    manifest["samples"][1]["n_frames"] = 300
    write_json_atomic(frames_dir / "manifest.json", manifest)
    with pytest.raises(ValueError, match=r"train/t1.*outside"):
        write_clip_store(frames_dir, tmp_path / "clips", vocab, progress=False)
    write_clip_store(frames_dir, tmp_path / "enc", vocab, progress=False, store="encoded")
    with pytest.raises(ValueError, match=r"train/t1.*outside"):
        ClipStore(tmp_path / "enc")


def test_split_pickles_without_its_data(frames_dir, vocab, tmp_path):
    write_clip_store(frames_dir, tmp_path / "clips", vocab, progress=False)
    sp = ClipStore(tmp_path / "clips").split("train")
    _ = sp[0]  # opens the memmap
    clone = pickle.loads(pickle.dumps(sp))
    assert clone._data is None
    assert np.array_equal(clone[2], sp[2])
    sub = sp.subset([2, 0])
    assert sub.ids == ["t2", "t0"] and np.array_equal(sub[0], sp[2])


def test_encoded_store_round_trip_without_copying_pixels(frames_dir, vocab, tmp_path):
    out = tmp_path / "clips"
    summary = write_clip_store(frames_dir, out, vocab, progress=False, store="encoded")
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "vocab.json"]
    assert summary["store"] == "encoded"
    assert sorted(p.name for p in frames_dir.glob("dev-*.frames")) == ["dev-000.frames"]  # dev fits one shard
    assert summary["splits"]["dev"]["bytes"] == (frames_dir / "dev-000.frames").stat().st_size
    assert summary["splits"]["dev"]["frames"] == 10
    store = ClipStore(out)
    assert store.splits == ["train", "dev"] and store.vocab == vocab
    assert {m.shard for m in store.split("train").metas} == {"train-000", "train-001"}  # rolled over
    for split, clips in CLIPS.items():
        sp = store.split(split)
        for i, (_cid, glosses, n) in enumerate(clips):
            assert np.array_equal(sp[i], frames_of(split, i, n))  # png is lossless
            assert sp.meta(i).gloss_ids == tuple(vocab.encode(glosses)[0])
    assert store.verify() == []
    assert store.unreadable("dev")[0]["id"] == "d9"


@pytest.mark.parametrize("store_kind", ["raw", "encoded"])
def test_read_gives_the_asked_frames_and_crop(frames_dir, vocab, tmp_path, store_kind):
    write_clip_store(frames_dir, tmp_path / "clips", vocab, progress=False, store=store_kind)
    sp = ClipStore(tmp_path / "clips").split("train")
    full = frames_of("train", 2, 7)
    times = np.array([0, 0, 3, 6, 6, 6])  # repeats, as a lengthening temporal rescale draws
    got = sp.read(2, times, (1, 2, 5))
    assert got.shape == (6, 5, 5, 3)
    assert np.array_equal(got, full[times, 1:6, 2:7])
    assert np.array_equal(sp.read(2), full)


def test_encoded_store_detects_corruption_and_missing_frames(frames_dir, vocab, tmp_path):
    out = tmp_path / "clips"
    write_clip_store(frames_dir, out, vocab, progress=False, store="encoded")
    store = ClipStore(out)
    meta = store.split("dev").meta(1)
    offsets = np.load(frames_dir / f"{meta.shard}.offsets.npy")
    shard = frames_dir / f"{meta.shard}.frames"
    data = bytearray(shard.read_bytes())
    data[int(offsets[meta.offset]) + 60] ^= 0x01
    shard.write_bytes(bytes(data))
    assert ClipStore(out).verify() == [("dev", "d1")]
    shard.write_bytes(bytes(data[:-3]))
    with pytest.raises(ValueError, match=r"dev-000\.frames.*truncated"):
        ClipStore(out)
    for p in frames_dir.iterdir():
        p.unlink()
    frames_dir.rmdir()
    with pytest.raises(FileNotFoundError, match="frame shards of split 'train' not found"):
        ClipStore(out)


def test_encoded_split_pickles_without_its_file_descriptors(frames_dir, vocab, tmp_path):
    write_clip_store(frames_dir, tmp_path / "clips", vocab, progress=False, store="encoded")
    sp = ClipStore(tmp_path / "clips").split("train")
    _ = sp[0]  # opens a shard
    clone = pickle.loads(pickle.dumps(sp))
    assert all(r._fd is None for r in clone._readers.values())
    assert np.array_equal(clone[2], sp[2])
    sub = sp.subset([2, 0])
    assert sub.ids == ["t2", "t0"] and np.array_equal(sub[0], sp[2])


def test_loader_items_are_identical_on_both_stores(frames_dir, vocab, tmp_path):
    """A lossless encoded store feeds training exactly what the raw store does (same crops, frames, flips)."""
    from ctca.data.loader import AugmentConfig, ClipDataset

    write_clip_store(frames_dir, tmp_path / "raw", vocab, progress=False, store="raw")
    write_clip_store(frames_dir, tmp_path / "enc", vocab, progress=False, store="encoded")
    aug = AugmentConfig(crop=6, flip=0.5, temporal_rescale=0.5, min_frames=1, max_frames=20)
    for train in (True, False):
        raw = ClipDataset(ClipStore(tmp_path / "raw").split("train"), aug, train=train, seed=3)
        enc = ClipDataset(ClipStore(tmp_path / "enc").split("train"), aug, train=train, seed=3)
        for epoch in (0, 1):
            raw.set_epoch(epoch)
            enc.set_epoch(epoch)
            for i in range(len(raw)):
                a, b = raw[i], enc[i]
                assert torch.equal(a["video"], b["video"]) and torch.equal(a["label"], b["label"])
                # and the same as augmenting the whole clip in memory (the path ctca predict uses)
                assert torch.equal(a["video"], raw.make_item(i, frames_of("train", i, CLIPS["train"][i][2]))["video"])
