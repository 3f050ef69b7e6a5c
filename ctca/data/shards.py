"""Sharded storage of encoded frames: what ``extract_frames`` writes and an encoded clip store reads.

A shard is two files: ``<name>.frames``, the encoded images (PNG or JPEG) back to back, and
``<name>.offsets.npy``, the byte offset of every frame plus the end (int64, ``frames + 1`` values). A
sample is a run of consecutive frames of one shard. A PHOENIX-size corpus (about 1M frames) becomes a few
dozen shards instead of a million files, so DVC hashes it in seconds, and a reader maps a shard once and
slices a frame's bytes without a file open per frame.

Codecs (docs/data-formats.md#frame-store), measured on SynthSign frames at 256 px on this project's
2-core CI machine (``benchmarks/loader_throughput.py`` prints the current numbers):

- ``png``: lossless, so a clip store decoded from it holds exactly the pixels of the old per-frame PNGs
  (the small default keeps its results bit for bit). At 256 px a frame is about 94 KiB (48 % of raw) and
  decodes in about 4 ms: fine at 40 px, too big and too slow at paper scale.
- ``jpeg`` (quality 90 by default): about 13 KiB per frame (7 % of raw, PSNR about 38 dB) and about
  0.5-1.5 ms to decode. OpenCV's codec is libjpeg-turbo (bundled in the opencv-python wheels); simplejpeg,
  the same library behind another binding, decoded within 10-20 % of it and would be one more dependency.
  OpenCV also decodes straight to RGB (``IMREAD_COLOR_RGB``), with no colour conversion pass.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

CODECS = ("png", "jpeg")
FRAMES_SUFFIX = ".frames"
OFFSETS_SUFFIX = ".offsets.npy"
# A shard is closed once it holds this many bytes: PHOENIX-2014 as 256-px JPEG (about 13 GB) becomes
# about 50 shards, the 40-px default corpus one shard per split.
SHARD_BYTES = 256 * 2**20


def encode_frame(rgb: np.ndarray, codec: str, quality: int = 90) -> bytes:
    """One (H, W, 3) uint8 RGB frame encoded as ``codec`` (``png`` lossless, ``jpeg`` at ``quality``)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if codec == "png":
        ok, buf = cv2.imencode(".png", bgr)
    elif codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        raise ValueError(f"codec={codec!r}: expected one of {', '.join(CODECS)}")
    if not ok:
        raise ValueError(f"cv2.imencode could not encode a {rgb.shape} frame as {codec}")
    return buf.tobytes()


def decode_frame(buf: bytes) -> np.ndarray:
    """An encoded frame (PNG or JPEG bytes) as an (H, W, 3) uint8 RGB array; ``ValueError`` if corrupt."""
    rgb = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_COLOR_RGB)
    if rgb is None:
        raise ValueError("cv2.imdecode could not decode the frame bytes (corrupt shard?)")
    return rgb


def encoded_sha1(frames: Iterable[bytes]) -> str:
    """Checksum of a sample in a frame store: sha1 of its encoded frames' bytes, back to back."""
    digest = hashlib.sha1()
    for buf in frames:
        digest.update(buf)
    return digest.hexdigest()


def mirror_frames(clip: np.ndarray) -> np.ndarray:
    """A contiguous (T, H, W, 3) clip mirrored left-right: all frames as one (T*H, W, 3) image, since
    cv2.flip mirrors every row, i.e. every frame, about 10x faster than numpy's negative-stride copy of
    3-byte pixels."""
    return cv2.flip(clip.reshape(-1, clip.shape[2], 3), 1).reshape(clip.shape)


def shard_name(split: str, k: int) -> str:
    return f"{split}-{k:03d}"


class ShardWriter:
    """Appends the encoded frames of one split's samples to ``<split>-NNN`` shards in ``out_dir``.

    Each shard is written under a temporary name and renamed when closed, so an interrupted write never
    leaves a shard that looks finished. :meth:`add` returns where the sample landed.
    """

    def __init__(self, out_dir: Path, split: str, shard_bytes: int = SHARD_BYTES):
        self.out_dir, self.split, self.shard_bytes = Path(out_dir), split, int(shard_bytes)
        self.written: list[dict] = []  # closed shards: {"name", "frames", "bytes"}
        self._fh = None
        self._offsets: list[int] = []
        self._k = 0

    def _open(self) -> None:
        self._name = shard_name(self.split, self._k)
        self._partial = self.out_dir / f".{self._name}{FRAMES_SUFFIX}.partial"
        self._fh = self._partial.open("wb")
        self._offsets = [0]

    def add(self, frames: Iterable[bytes]) -> tuple[str, int]:
        """Append one sample's encoded frames; returns ``(shard name, row of its first frame)``.

        A sample never straddles two shards."""
        if self._fh is None:
            self._open()
        first = len(self._offsets) - 1
        for buf in frames:
            self._fh.write(buf)
            self._offsets.append(self._offsets[-1] + len(buf))
        name = self._name
        if self._offsets[-1] >= self.shard_bytes:
            self._close()
        return name, first

    def _close(self) -> None:
        if self._fh is None:
            return
        self._fh.close()
        offsets_tmp = self.out_dir / f".{self._name}{OFFSETS_SUFFIX}.partial"
        with offsets_tmp.open("wb") as fh:
            np.save(fh, np.asarray(self._offsets, dtype=np.int64))
        os.replace(offsets_tmp, self.out_dir / f"{self._name}{OFFSETS_SUFFIX}")
        os.replace(self._partial, self.out_dir / f"{self._name}{FRAMES_SUFFIX}")
        self.written.append({"name": self._name, "frames": len(self._offsets) - 1, "bytes": self._offsets[-1]})
        self._fh = None
        self._k += 1

    def close(self) -> list[dict]:
        """Close the open shard; returns every shard written."""
        self._close()
        return self.written


def remove_shards(folder: Path) -> None:
    """Delete every shard (and leftover partial file) in ``folder``: before a rewrite, so no stale shard
    of a bigger earlier corpus survives next to the new ones."""
    for p in Path(folder).glob("*"):
        if p.is_file() and (p.name.endswith((FRAMES_SUFFIX, OFFSETS_SUFFIX)) or p.name.endswith(".partial")):
            p.unlink()


class ShardReader:
    """Read side of one shard: ``reader.frame(row)`` decodes a frame, ``reader.sha1(first, n)`` checksums
    ``n`` consecutive frames.

    Frames are read with ``os.pread`` on a file descriptor opened lazily and not pickled, so DataLoader
    worker processes each open their own. Not a memory map: mapped pages count as the process's resident
    memory, and checking a PHOENIX-size store through maps showed 11 GB resident.
    """

    def __init__(self, folder: Path, name: str):
        self.path = Path(folder) / f"{name}{FRAMES_SUFFIX}"
        self.offsets_path = Path(folder) / f"{name}{OFFSETS_SUFFIX}"
        for p in (self.path, self.offsets_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: frame shard file not found (expected a store written by extract_frames)")
        self.offsets = np.load(self.offsets_path)
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or np.any(np.diff(self.offsets) < 0):
            raise ValueError(f"{self.offsets_path}: expected a non-decreasing 1-D array of byte offsets")
        size = self.path.stat().st_size
        if int(self.offsets[-1]) != size:
            raise ValueError(f"{self.path}: {size} bytes, but {self.offsets_path} ends at {int(self.offsets[-1])}; "
                             "the shard is truncated or from another write")
        self._fd: int | None = None

    @property
    def frames(self) -> int:
        return len(self.offsets) - 1

    def check_rows(self, first: int, n: int, what: str) -> None:
        if first < 0 or n < 0 or first + n > self.frames:
            raise ValueError(f"{what}: frames {first}..{first + n} lie outside {self.path} ({self.frames} frames)")

    def _read(self, a: int, b: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        data = os.pread(self._fd, b - a, a)
        if len(data) != b - a:
            raise ValueError(f"{self.path}: read {len(data)} of {b - a} bytes at {a} (the shard shrank?)")
        return data

    def frame(self, row: int) -> np.ndarray:
        return decode_frame(self._read(int(self.offsets[row]), int(self.offsets[row + 1])))

    def sha1(self, first: int, n: int) -> str:
        """:func:`encoded_sha1` of ``n`` consecutive frames, read in one call."""
        return encoded_sha1([self._read(int(self.offsets[first]), int(self.offsets[first + n]))])

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:  # __init__ may have failed before setting it
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fd"] = None
        return state
