"""Clip cache: every extracted clip of a split packed into one raw uint8 file, read back as a memmap.

Replaces per-frame PNG decoding at train time; ``index.json`` holds metadata, offsets and sha1 checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ctca.data.corpus import SPLITS
from ctca.data.frames import load_manifest, read_frames, write_json_atomic
from ctca.data.vocab import Vocabulary

INDEX = "index.json"
VOCAB = "vocab.json"
SHARD_SUFFIX = ".u8"


@dataclass(frozen=True)
class ClipMeta:
    """Metadata of one cached clip; ``offset`` is its first frame's row in the split's shard."""

    id: str
    split: str
    signer: str
    glosses: tuple[str, ...]
    gloss_ids: tuple[int, ...]
    oov: tuple[str, ...]
    n_frames: int
    offset: int
    sha1: str = ""


def clip_sha1(frames: np.ndarray) -> str:
    """Checksum of a clip: sha1 of its raw bytes (C order)."""
    return hashlib.sha1(np.ascontiguousarray(frames).data).hexdigest()


def _split_order(names: Iterable[str]) -> list[str]:
    """train, dev, test first, then any other split name sorted: a stable, readable index order."""
    names = set(names)
    return [s for s in SPLITS if s in names] + sorted(names - set(SPLITS))


def write_clip_store(frames_dir: Path, out_dir: Path, vocab: Vocabulary, progress: bool = True) -> dict:
    """Pack every ok sample of ``frames_dir/manifest.json`` into ``out_dir/<split>.u8`` + ``index.json``.

    Gloss ids come from ``vocab``; out-of-vocabulary glosses stay in ``glosses``, are listed per sample
    (``oov``) and counted per split in the index (never dropped). Samples that failed extraction are
    listed under ``extraction_failed`` with their signer, glosses and reason (evaluation scores them as
    empty hypotheses, as the official protocol does). Crash safety: the old ``index.json`` is removed first, shards
    are written under a temporary name and renamed, and ``index.json`` is written last, so an
    interrupted run leaves a store that :class:`ClipStore` refuses to open.

    Returns a summary for metrics (no per-clip lists): ``{"size", "frame_shape", "splits": {split:
    {"clips", "frames", "bytes"}}, "oov": {split: {"glosses", "types", "samples"}}, "extraction_failed":
    {split: n}}``.
    """
    frames_dir, out_dir = Path(frames_dir), Path(out_dir)
    manifest = load_manifest(frames_dir)
    size = int(manifest["size"])
    frame_shape = [size, size, 3]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INDEX).unlink(missing_ok=True)

    by_split: dict[str, list[dict]] = {}
    for s in manifest["samples"]:
        by_split.setdefault(s["split"], []).append(s)
    for split in manifest["counts"]:
        by_split.setdefault(split, [])  # a split whose samples all failed still appears, empty
    splits_index: dict[str, dict] = {}
    oov_index: dict[str, dict] = {}
    bar = tqdm(total=len(manifest["samples"]), desc="clip store", unit="clip", disable=not progress)
    with bar:
        for split in _split_order(by_split):
            shard = out_dir / f"{split}{SHARD_SUFFIX}"
            partial = shard.with_name(f".{shard.name}.partial")
            entries = []
            oov_tokens: list[str] = []
            offset = 0
            with partial.open("wb") as fh:
                for s in by_split[split]:
                    sample_dir = frames_dir / s["dir"]
                    frames = read_frames(sample_dir)
                    if list(frames.shape[1:]) != frame_shape or len(frames) != s["n_frames"]:
                        raise ValueError(
                            f"{sample_dir}: frames of shape {frames.shape}, expected "
                            f"({s['n_frames']}, {size}, {size}, 3) from {frames_dir / 'manifest.json'}"
                        )
                    fh.write(frames.tobytes())
                    ids, oov = vocab.encode(s["glosses"])
                    oov_tokens += oov
                    entries.append(
                        {
                            "id": s["id"],
                            "signer": s["signer"],
                            "glosses": list(s["glosses"]),
                            "gloss_ids": ids,
                            "oov": oov,
                            "n_frames": len(frames),
                            "offset": offset,
                            "sha1": clip_sha1(frames),
                        }
                    )
                    offset += len(frames)
                    bar.update()
            os.replace(partial, shard)
            splits_index[split] = {"file": shard.name, "total_frames": offset, "samples": entries}
            oov_index[split] = {
                "glosses": len(oov_tokens),
                "types": sorted(set(oov_tokens)),
                "samples": sum(1 for e in entries if e["oov"]),
            }

    failed: dict[str, list[dict]] = {}
    for f in manifest["failed"]:  # scored by evaluation as empty hypotheses (ClipStore.unreadable)
        failed.setdefault(f["split"], []).append({k: f.get(k) for k in ("id", "signer", "glosses", "reason")})
    index = {
        "size": size,
        "frame_shape": frame_shape,
        "splits": splits_index,
        "oov": oov_index,
        "extraction_failed": failed,
    }
    vocab.save(out_dir / VOCAB)
    write_json_atomic(out_dir / INDEX, index)  # last: its presence marks a complete store
    frame_bytes = size * size * 3
    return {
        "size": size,
        "frame_shape": frame_shape,
        "splits": {
            k: {
                "clips": len(v["samples"]),
                "frames": v["total_frames"],
                "bytes": v["total_frames"] * frame_bytes,
            }
            for k, v in splits_index.items()
        },
        "oov": oov_index,
        "extraction_failed": {k: len(v) for k, v in failed.items()},
    }


class ClipSplit:
    """The clips of one split: ``split[i]`` is a zero-copy (T, H, W, 3) uint8 view of the shard memmap.

    The memmap is opened lazily and not pickled, so a DataLoader worker re-opens it instead of
    receiving a copy of the whole shard.
    """

    def __init__(
        self, name: str, path: Path, frame_shape: Sequence[int], total_frames: int, metas: list[ClipMeta]
    ):
        self.name = name
        self.path = Path(path)
        self.frame_shape = tuple(int(x) for x in frame_shape)
        self.total_frames = int(total_frames)
        self.metas = list(metas)
        self._data: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.metas)

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.metas]

    @property
    def lengths(self) -> list[int]:
        return [m.n_frames for m in self.metas]

    def meta(self, i: int) -> ClipMeta:
        return self.metas[i]

    def _array(self) -> np.ndarray:
        if self._data is None:
            shape = (self.total_frames, *self.frame_shape)
            if self.total_frames == 0:
                self._data = np.empty(shape, dtype=np.uint8)  # an empty file cannot be memory-mapped
            else:
                self._data = np.memmap(self.path, dtype=np.uint8, mode="r", shape=shape)
        return self._data

    def __getitem__(self, i: int) -> np.ndarray:
        m = self.metas[i]
        return self._array()[m.offset : m.offset + m.n_frames]

    def subset(self, indices: Iterable[int]) -> ClipSplit:
        """A view on some clips of this split (same shard file), e.g. for a quick run or a benchmark."""
        return ClipSplit(
            self.name, self.path, self.frame_shape, self.total_frames, [self.metas[i] for i in indices]
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_data"] = None
        return state


class ClipStore:
    """Read side of a clip store written by :func:`write_clip_store`."""

    def __init__(self, out_dir: Path | str):
        self.root = Path(out_dir)
        index_path = self.root / INDEX
        if not index_path.is_file():
            raise FileNotFoundError(
                f"{index_path}: clip store index not found (expected a store written by write_clip_store; "
                "an interrupted write leaves no index)"
            )
        self.index: dict = json.loads(index_path.read_text())
        for key in ("size", "frame_shape", "splits", "oov"):
            if key not in self.index:
                raise ValueError(f"{index_path}: missing key {key!r} (expected a clip store index)")
        self.size = int(self.index["size"])
        self.frame_shape = tuple(int(x) for x in self.index["frame_shape"])
        self._splits: dict[str, ClipSplit] = {}
        frame_bytes = int(np.prod(self.frame_shape))
        for name, entry in self.index["splits"].items():
            path = self.root / entry["file"]
            total = int(entry["total_frames"])
            if not path.is_file():
                raise FileNotFoundError(f"{path}: shard of split {name!r} not found (listed in {index_path})")
            expected = total * frame_bytes
            actual = path.stat().st_size
            if actual != expected:
                raise ValueError(
                    f"{path}: {actual} bytes, expected {expected} ({total} frames of {self.frame_shape} "
                    f"uint8 per {index_path}); the shard is truncated or from another write"
                )
            metas = []
            for s in entry["samples"]:
                meta = ClipMeta(
                    id=s["id"],
                    split=name,
                    signer=s["signer"],
                    glosses=tuple(s["glosses"]),
                    gloss_ids=tuple(s["gloss_ids"]),
                    oov=tuple(s["oov"]),
                    n_frames=int(s["n_frames"]),
                    offset=int(s["offset"]),
                    sha1=s.get("sha1", ""),
                )
                if meta.offset < 0 or meta.offset + meta.n_frames > total:
                    raise ValueError(
                        f"{index_path}: clip {name}/{meta.id} lies outside {path} ({total} frames)"
                    )
                metas.append(meta)
            self._splits[name] = ClipSplit(name, path, self.frame_shape, total, metas)

    @property
    def splits(self) -> list[str]:
        return list(self._splits)

    def split(self, name: str) -> ClipSplit:
        try:
            return self._splits[name]
        except KeyError:
            raise KeyError(f"{self.root / INDEX}: no split {name!r}; the store has {self.splits}") from None

    def unreadable(self, name: str) -> list[dict]:
        """The samples of split ``name`` whose video could not be read: ``{"id", "signer", "glosses",
        "reason"}`` each. Not in the store, but part of the split: evaluation scores each as an empty
        hypothesis (``mergectmstm``'s rule), so a WER covers every utterance of the official set."""
        return list(self.index.get("extraction_failed", {}).get(name, []))

    @property
    def oov(self) -> dict:
        """Per split: ``{"glosses": n OOV tokens, "types": [...], "samples": n clips with an OOV gloss}``."""
        return self.index["oov"]

    @property
    def vocab(self) -> Vocabulary:
        path = self.root / VOCAB
        if not path.is_file():
            raise FileNotFoundError(f"{path}: vocabulary of the clip store not found")
        return Vocabulary.load(path)

    def verify(self, progress: bool = False) -> list[tuple[str, str]]:
        """(split, id) of every clip whose bytes no longer match the sha1 in the index; empty if all match."""
        bad = []
        total = sum(len(s) for s in self._splits.values())
        with tqdm(total=total, desc="verify clip store", unit="clip", disable=not progress) as bar:
            for name, split in self._splits.items():
                for i, meta in enumerate(split.metas):
                    if clip_sha1(split[i]) != meta.sha1:
                        bad.append((name, meta.id))
                    bar.update()
        return bad
