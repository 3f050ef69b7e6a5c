"""Tests of the uint8 clip store: round trip, checksums, OOV accounting, and refusing broken stores."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

import ctca.data.cache as cache
from ctca.data.cache import ClipMeta, ClipStore, write_clip_store
from ctca.data.frames import write_frames, write_json_atomic
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
    """An extracted-frames tree as extract_frames writes it (PNG folders + manifest), with one failure."""
    root = tmp_path / "frames"
    samples = []
    for split, clips in CLIPS.items():
        for i, (cid, glosses, n) in enumerate(clips):
            write_frames(frames_of(split, i, n), root / split / cid)
            samples.append(
                {
                    "id": cid,
                    "split": split,
                    "signer": f"S{i}",
                    "glosses": glosses,
                    "n_frames": n,
                    "dir": f"{split}/{cid}",
                    "source": f"/corpus/{cid}.mp4",
                }
            )
    manifest = {
        "size": SIZE,
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
    real = cache.read_frames

    def crash_on_fourth(path):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(cache, "read_frames", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        write_clip_store(frames_dir, out, vocab, progress=False)
    with pytest.raises(FileNotFoundError, match="index.json"):
        ClipStore(out)


def test_manifest_frame_count_mismatch_names_the_folder(frames_dir, vocab, tmp_path):
    (frames_dir / "train" / "t1" / "000002.png").unlink()
    with pytest.raises(ValueError, match=r"train/t1.*expected \(3, 8, 8, 3\)"):
        write_clip_store(frames_dir, tmp_path / "clips", vocab, progress=False)


def test_split_pickles_without_its_data(frames_dir, vocab, tmp_path):
    write_clip_store(frames_dir, tmp_path / "clips", vocab, progress=False)
    sp = ClipStore(tmp_path / "clips").split("train")
    _ = sp[0]  # opens the memmap
    clone = pickle.loads(pickle.dumps(sp))
    assert clone._data is None
    assert np.array_equal(clone[2], sp[2])
    sub = sp.subset([2, 0])
    assert sub.ids == ["t2", "t0"] and np.array_equal(sub[0], sp[2])
