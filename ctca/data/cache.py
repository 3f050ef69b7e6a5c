"""Clip store: the extracted clips of each split with their labels, read by training and evaluation.

Two layouts (``frames.store``; docs/data-formats.md#clip-store):

- ``raw``: every clip of a split decoded into one uint8 file, read back as a memmap (no decoding at
  train time; the default for small frames, 0.35 GB for the default corpus);
- ``encoded``: no pixel copy at all; the index points into the frame shards of ``extract_frames`` and
  clips are decoded when loaded, in DataLoader worker processes. At paper scale (1M frames at 256 px) the
  raw layout would need about 190 GB; JPEG shards need about 7 % of that.

``index.json`` holds the metadata, the gloss ids, where each clip lies and its sha1 checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ctca.data.corpus import SPLITS
from ctca.data.frames import MANIFEST, load_manifest, read_sample, write_json_atomic
from ctca.data.shards import ShardReader, mirror_frames
from ctca.data.vocab import Vocabulary

INDEX = "index.json"
VOCAB = "vocab.json"
SHARD_SUFFIX = ".u8"
STORES = ("raw", "encoded")


@dataclass(frozen=True)
class ClipMeta:
    """Metadata of one cached clip; ``offset`` is its first frame's row in its shard (``shard``: the frame
    shard's name in an encoded store, empty in a raw one, whose split is one file)."""

    id: str
    split: str
    signer: str
    glosses: tuple[str, ...]
    gloss_ids: tuple[int, ...]
    oov: tuple[str, ...]
    n_frames: int
    offset: int
    sha1: str = ""
    shard: str = ""


def clip_sha1(frames: np.ndarray) -> str:
    """Checksum of a clip: sha1 of its raw bytes (C order)."""
    return hashlib.sha1(np.ascontiguousarray(frames).data).hexdigest()


def _split_order(names: Iterable[str]) -> list[str]:
    """train, dev, test first, then any other split name sorted: a stable, readable index order."""
    names = set(names)
    return [s for s in SPLITS if s in names] + sorted(names - set(SPLITS))


def write_clip_store(frames_dir: Path, out_dir: Path, vocab: Vocabulary, progress: bool = True,
                     store: str = "raw") -> dict:
    """The clip store of every ok sample of ``frames_dir/manifest.json``: ``out_dir/index.json`` plus, for
    ``store="raw"``, the decoded clips in ``out_dir/<split>.u8``; for ``store="encoded"``, nothing but the
    index, which points into the frame shards (by a path relative to ``out_dir``).

    Gloss ids come from ``vocab``; out-of-vocabulary glosses stay in ``glosses``, are listed per sample
    (``oov``) and counted per split in the index (never dropped). Samples that failed extraction are
    listed under ``extraction_failed`` with their signer, glosses and reason (evaluation scores them as
    empty hypotheses, as the official protocol does). Crash safety: the old ``index.json`` is removed first, shards
    are written under a temporary name and renamed, and ``index.json`` is written last, so an
    interrupted run leaves a store that :class:`ClipStore` refuses to open.

    Returns a summary for metrics (no per-clip lists): ``{"size", "frame_shape", "store", "splits": {split:
    {"clips", "frames", "bytes"}}, "oov": {split: {"glosses", "types", "samples"}}, "extraction_failed":
    {split: n}}``; ``bytes`` is what the store occupies (raw pixels, or the encoded frames it points to).
    """
    if store not in STORES:
        raise ValueError(f"frames.store={store!r}: expected one of {', '.join(STORES)}")
    frames_dir, out_dir = Path(frames_dir), Path(out_dir)
    manifest = load_manifest(frames_dir)
    size = int(manifest["size"])
    frame_shape = [size, size, 3]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INDEX).unlink(missing_ok=True)
    for old in out_dir.glob(f"*{SHARD_SUFFIX}"):
        old.unlink()

    by_split: dict[str, list[dict]] = {}
    for s in manifest["samples"]:
        by_split.setdefault(s["split"], []).append(s)
    for split in manifest["counts"]:
        by_split.setdefault(split, [])  # a split whose samples all failed still appears, empty
    splits_index: dict[str, dict] = {}
    oov_index: dict[str, dict] = {}
    bytes_per_split: dict[str, int] = {}
    shard_bytes = {sh["name"]: sh["bytes"] for sh in manifest["shards"]}
    bar = tqdm(total=len(manifest["samples"]), desc=f"clip store ({store})", unit="clip", disable=not progress)
    with bar:
        for split in _split_order(by_split):
            entries = []
            oov_tokens: list[str] = []
            offset = 0
            if store == "raw":
                shard = out_dir / f"{split}{SHARD_SUFFIX}"
                partial = shard.with_name(f".{shard.name}.partial")
                fh = partial.open("wb")
            for s in by_split[split]:
                ids, oov = vocab.encode(s["glosses"])
                oov_tokens += oov
                entry = {"id": s["id"], "signer": s["signer"], "glosses": list(s["glosses"]), "gloss_ids": ids,
                         "oov": oov, "n_frames": s["n_frames"]}
                if store == "raw":
                    frames = read_sample(frames_dir, s)  # checks the sample's sha1
                    if list(frames.shape[1:]) != frame_shape:
                        raise ValueError(f"{frames_dir / MANIFEST}: sample {split}/{s['id']} has frames of shape "
                                         f"{frames.shape[1:]}, expected {frame_shape}")
                    fh.write(frames.tobytes())
                    entry.update(offset=offset, sha1=clip_sha1(frames))
                    offset += len(frames)
                else:
                    entry.update(shard=s["shard"], offset=s["first"], sha1=s["sha1"])
                entries.append(entry)
                bar.update()
            if store == "raw":
                fh.close()
                os.replace(partial, shard)
                splits_index[split] = {"store": "raw", "file": shard.name, "total_frames": offset, "samples": entries}
                bytes_per_split[split] = offset * size * size * 3
            else:
                rel = os.path.relpath(frames_dir.resolve(), out_dir.resolve())
                splits_index[split] = {"store": "encoded", "frames_dir": rel, "samples": entries}
                bytes_per_split[split] = sum(shard_bytes[n] for n in {e["shard"] for e in entries})
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
        "codec": manifest["codec"],
        "splits": splits_index,
        "oov": oov_index,
        "extraction_failed": failed,
    }
    vocab.save(out_dir / VOCAB)
    write_json_atomic(out_dir / INDEX, index)  # last: its presence marks a complete store
    return {
        "size": size,
        "frame_shape": frame_shape,
        "store": store,
        "splits": {
            k: {"clips": len(v["samples"]), "frames": sum(e["n_frames"] for e in v["samples"]),
                "bytes": bytes_per_split[k]}
            for k, v in splits_index.items()
        },
        "oov": oov_index,
        "extraction_failed": {k: len(v) for k, v in failed.items()},
    }


def center_box(h: int, w: int, c: int) -> tuple[int, int, int]:
    """The centred ``c`` x ``c`` crop of an ``h`` x ``w`` frame as ``(y, x, c)`` (the evaluation view)."""
    return (h - c) // 2, (w - c) // 2, c


def _read(clip: np.ndarray, times: np.ndarray | None, box: tuple[int, int, int] | None) -> np.ndarray:
    """``clip[times, y:y+c, x:x+c]`` for ``box=(y, x, c)``; all frames / the whole frame when None."""
    t = slice(None) if times is None else times
    if box is None:
        return clip[t]
    y, x, c = box
    # Indexing time and space together copies only the kept frames' crops out of a memmap.
    return clip[t, y : y + c, x : x + c]


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

    def read(self, i: int, times: np.ndarray | None = None, box: tuple[int, int, int] | None = None,
             flip: bool = False) -> np.ndarray:
        """Frames ``times`` (all when None; repeats allowed) of clip ``i``, cropped to ``box=(y, x, c)`` and
        mirrored left-right when ``flip``: a new contiguous (T', c, c, 3) array."""
        clip = np.ascontiguousarray(_read(self[i], times, box))
        return mirror_frames(clip) if flip else clip

    def checksum_ok(self, i: int) -> bool:
        return clip_sha1(self[i]) == self.metas[i].sha1

    def subset(self, indices: Iterable[int]) -> ClipSplit:
        """A view on some clips of this split (same shard file), e.g. for a quick run or a benchmark."""
        return ClipSplit(
            self.name, self.path, self.frame_shape, self.total_frames, [self.metas[i] for i in indices]
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_data"] = None
        return state


class EncodedClipSplit(ClipSplit):
    """The clips of one split of an encoded store: ``split[i]`` decodes clip ``i``'s frames from its frame
    shard; :meth:`read` decodes only the frames asked for (each distinct frame once).

    Shard readers open their files lazily and do not pickle the descriptors (:class:`ShardReader`), so each
    DataLoader worker opens the shards itself and the decoding happens in the workers.
    """

    def __init__(self, name: str, frames_dir: Path, frame_shape: Sequence[int], metas: list[ClipMeta]):
        super().__init__(name, frames_dir, frame_shape, sum(m.n_frames for m in metas), metas)
        self._readers: dict[str, ShardReader] = {}

    def reader(self, shard: str) -> ShardReader:
        if shard not in self._readers:
            self._readers[shard] = ShardReader(self.path, shard)
        return self._readers[shard]

    def __getitem__(self, i: int) -> np.ndarray:
        return self.read(i)

    def read(self, i: int, times: np.ndarray | None = None, box: tuple[int, int, int] | None = None,
             flip: bool = False) -> np.ndarray:
        m = self.metas[i]
        reader = self.reader(m.shard)
        wanted = np.arange(m.n_frames) if times is None else np.asarray(times)
        h, w = self.frame_shape[:2]
        y, x, c = (0, 0, h) if box is None else box
        out = np.empty((len(wanted), c, w if box is None else c, 3), dtype=np.uint8)
        first: dict[int, int] = {}
        # One pass per output frame: each distinct frame is decoded once and cropped (and mirrored) straight
        # into the output; a repeat copies the row already made.
        for j, t in enumerate(wanted.tolist()):
            if t in first:
                out[j] = out[first[t]]
                continue
            first[t] = j
            frame = reader.frame(m.offset + t)
            if frame.shape != (h, w, 3):
                raise ValueError(f"{reader.path}: clip {self.name}/{m.id} frame {t} decodes to shape {frame.shape}, "
                                 f"expected {self.frame_shape}")
            view = frame[y : y + c, x : x + out.shape[2]]
            if flip:
                cv2.flip(view, 1, dst=out[j])
            else:
                out[j] = view
        return out

    def checksum_ok(self, i: int) -> bool:
        m = self.metas[i]
        return self.reader(m.shard).sha1(m.offset, m.n_frames) == m.sha1

    def subset(self, indices: Iterable[int]) -> EncodedClipSplit:
        sub = EncodedClipSplit(self.name, self.path, self.frame_shape, [self.metas[i] for i in indices])
        sub._readers = self._readers
        return sub


class ClipStore:
    """Read side of a clip store written by :func:`write_clip_store` (either layout)."""

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
        for name, entry in self.index["splits"].items():
            metas = [
                ClipMeta(id=s["id"], split=name, signer=s["signer"], glosses=tuple(s["glosses"]),
                         gloss_ids=tuple(s["gloss_ids"]), oov=tuple(s["oov"]), n_frames=int(s["n_frames"]),
                         offset=int(s["offset"]), sha1=s.get("sha1", ""), shard=s.get("shard", ""))
                for s in entry["samples"]
            ]
            if entry.get("store", "raw") == "encoded":
                self._splits[name] = self._encoded_split(index_path, name, entry, metas)
            else:
                self._splits[name] = self._raw_split(index_path, name, entry, metas)

    def _raw_split(self, index_path: Path, name: str, entry: dict, metas: list[ClipMeta]) -> ClipSplit:
        path = self.root / entry["file"]
        total = int(entry["total_frames"])
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard of split {name!r} not found (listed in {index_path})")
        expected = total * int(np.prod(self.frame_shape))
        actual = path.stat().st_size
        if actual != expected:
            raise ValueError(
                f"{path}: {actual} bytes, expected {expected} ({total} frames of {self.frame_shape} "
                f"uint8 per {index_path}); the shard is truncated or from another write"
            )
        for meta in metas:
            if meta.offset < 0 or meta.offset + meta.n_frames > total:
                raise ValueError(f"{index_path}: clip {name}/{meta.id} lies outside {path} ({total} frames)")
        return ClipSplit(name, path, self.frame_shape, total, metas)

    def _encoded_split(self, index_path: Path, name: str, entry: dict, metas: list[ClipMeta]) -> EncodedClipSplit:
        frames_dir = (self.root / entry["frames_dir"]).resolve()
        if not frames_dir.is_dir():
            raise FileNotFoundError(f"{frames_dir}: frame shards of split {name!r} not found (the encoded store "
                                    f"{index_path} points there: rerun extract_frames)")
        split = EncodedClipSplit(name, frames_dir, self.frame_shape, metas)
        for meta in metas:  # opens (and size-checks) every shard once; maps nothing yet
            split.reader(meta.shard).check_rows(meta.offset, meta.n_frames, f"{index_path}: clip {name}/{meta.id}")
        return split

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
                    if not split.checksum_ok(i):
                        bad.append((name, meta.id))
                    bar.update()
        return bad
