"""Frame extraction: decode each corpus sample (video or frame folder), resize to a square, store the
frames encoded (PNG or JPEG) in a few large shards (:mod:`ctca.data.shards`).

The shards plus ``manifest.json`` (ok and failed samples, with reasons and checksums) are the input of
the clip cache. ``read_frames``/``write_frames`` handle folders of per-frame PNGs, the layout corpora
such as PHOENIX ship in.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ctca.data.corpus import Sample
from ctca.data.shards import (
    CODECS,
    SHARD_BYTES,
    ShardReader,
    ShardWriter,
    encode_frame,
    encoded_sha1,
    remove_shards,
)

MANIFEST = "manifest.json"
FRAMES_FORMAT = "ctca.frames/2"  # 1 was a folder of PNGs per sample
FRAME_PATTERN = "*.png"
# Reported in the error message so the user knows which knob relaxes the failure threshold.
MAX_BAD_KEY = "data.max_bad_fraction"


class FrameExtractionError(ValueError):
    """Too many samples failed to extract; the message names the threshold key and the first failures."""


class UnreadableInput(ValueError):
    """One video or frame folder cannot be decoded; the message is the reason (recorded in the manifest)."""


def resize_frame(rgb: np.ndarray, size: int) -> np.ndarray:
    """The pipeline's spatial preprocessing of one RGB frame: INTER_LANCZOS4 to ``size`` x ``size``
    (a square, distorting the aspect ratio, as the reference 256x256 preprocessing)."""
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LANCZOS4)


def video_fps(path: Path) -> float:
    """The frame rate a video container declares (0.0 when it does not say or cannot be opened)."""
    cap = cv2.VideoCapture(str(path))
    try:
        return float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if cap.isOpened() else 0.0
    finally:
        cap.release()


def frame_name(t: int) -> str:
    """File name of frame ``t``; zero-padded so that a lexicographic sort is temporal order."""
    return f"{t:06d}.png"


def write_frame(path: Path, rgb: np.ndarray) -> None:
    """Write one RGB uint8 frame as PNG (OpenCV writes BGR, hence the conversion)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: cv2.imwrite failed (expected a writable .png path)")


def write_frames(frames: np.ndarray, sample_dir: Path) -> None:
    """Write a (T, H, W, 3) RGB uint8 clip as ``sample_dir/%06d.png`` (the layout :func:`read_frames` reads)."""
    sample_dir.mkdir(parents=True, exist_ok=True)
    for t, rgb in enumerate(frames):
        write_frame(sample_dir / frame_name(t), rgb)


def read_frames(sample_dir: Path | str) -> np.ndarray:
    """All frames of an extracted sample folder as a (T, H, W, 3) uint8 RGB array, in sorted file order."""
    sample_dir = Path(sample_dir)
    if not sample_dir.is_dir():
        raise FileNotFoundError(f"{sample_dir}: frame folder not found (expected %06d.png frames)")
    paths = sorted(sample_dir.glob(FRAME_PATTERN))
    if not paths:
        raise FileNotFoundError(f"{sample_dir}: no {FRAME_PATTERN} frames in the folder")
    frames = []
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{p}: unreadable frame image (expected a PNG)")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if len({f.shape for f in frames}) != 1:
        raise ValueError(f"{sample_dir}: frames have different shapes {sorted({f.shape for f in frames})}")
    return np.stack(frames)


def iter_video(path: Path, info: dict[str, Any] | None = None) -> Iterator[np.ndarray]:
    """RGB frames of a video file, decoded one at a time so a long video never sits in memory.

    Sets ``info["declared_frames"]`` to the container's frame count (0 when it does not say). Raises
    :class:`UnreadableInput` for a missing, unopenable or empty video.
    """
    info = {} if info is None else info
    if not path.is_file():
        raise UnreadableInput("video file not found")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise UnreadableInput(
                "cannot open video (OpenCV VideoCapture failed: corrupt file or unsupported codec)"
            )
        info["declared_frames"] = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        n = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            n += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if n == 0:
            raise UnreadableInput("video decodes to 0 frames (corrupt or truncated file)")
    finally:
        cap.release()


def _iter_frame_folder(sample: Sample) -> Iterator[np.ndarray]:
    """RGB frames of a frame-folder sample (PNG or JPEG, per ``sample.pattern``), in sorted file order."""
    if not sample.source.is_dir():
        # the reader's reason names every folder it tried (PHOENIX-2014-T: with and without 1/)
        raise UnreadableInput(sample.missing_reason or "frame folder not found")
    paths = sample.frame_paths()
    if not paths:
        raise UnreadableInput(f"no frames matching {sample.pattern!r} in the frame folder")
    return iter_images(paths)


def iter_images(paths: list[Path]) -> Iterator[np.ndarray]:
    """RGB frames of image files, in the given order; an unreadable image raises :class:`UnreadableInput`."""
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UnreadableInput(f"unreadable frame image {p}")
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _extract_one(job: tuple[int, Sample, int, str, int]) -> dict[str, Any]:
    """Pool worker: decode, resize and encode one sample. Never raises; a failure comes back as a record
    with a reason. The encoded frames travel back to the parent, which alone writes the shards (in input
    order, so the store is the same whatever the number of workers)."""
    index, sample, size, codec, quality = job
    record: dict[str, Any] = {
        "index": index,
        "id": sample.id,
        "split": sample.split,
        "source": str(sample.source),
        "signer": sample.signer,
        "glosses": list(sample.glosses),
    }
    info: dict[str, Any] = {}
    try:
        frames = iter_video(sample.source, info) if sample.kind == "video" else _iter_frame_folder(sample)
        encoded = [encode_frame(resize_frame(rgb, size), codec, quality) for rgb in frames]
    except Exception as exc:  # noqa: BLE001 - every failure is recorded in the manifest, never lost
        reason = str(exc) if isinstance(exc, UnreadableInput) else f"{type(exc).__name__}: {exc}"
        return {**record, "ok": False, "reason": reason}
    declared = info.get("declared_frames", 0)
    if declared > len(encoded):
        # The container's count is an estimate for some formats, so this is reported, not a failure:
        # a truncated file that still decodes shows up here.
        record["warning"] = f"decoded {len(encoded)} of the {declared} frames the container declares"
    return {**record, "ok": True, "n_frames": len(encoded), "encoded": encoded}


def _init_worker() -> None:
    # One OpenCV thread per process: the pool already uses every core it was given.
    cv2.setNumThreads(1)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


def _in_order(jobs: list, workers: int) -> Iterator[dict[str, Any]]:
    """Results of :func:`_extract_one` over ``jobs``, yielded in job order.

    At most ``4 * workers`` jobs are in flight, so the encoded frames held in memory stay bounded (a
    PHOENIX-size corpus is about 13 GB of JPEG) while a slow sample does not stall the other workers.
    """
    if workers <= 1:
        yield from map(_extract_one, jobs)
        return
    # spawn, not fork: forking a process whose OpenCV/torch thread pools are live can deadlock.
    # An executor, not multiprocessing.Pool: a worker that dies (codec segfault, out of memory)
    # raises BrokenProcessPool here instead of being respawned forever.
    ctx = mp.get_context("spawn")
    done: dict[int, dict[str, Any]] = {}
    following, submitted = 0, 0
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker) as ex:
        pending: set = set()
        try:
            while following < len(jobs):
                while submitted < len(jobs) and len(pending) + len(done) < 4 * workers:
                    pending.add(ex.submit(_extract_one, jobs[submitted]))
                    submitted += 1
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    r = fut.result()
                    done[r["index"]] = r
                while following in done:
                    yield done.pop(following)
                    following += 1
        except BrokenProcessPool as exc:
            raise RuntimeError(
                f"a frame extraction worker died after {following} of {len(jobs)} samples: a crash or "
                "out of memory (rerun with workers=1, frames.workers, to see which sample), or it could "
                "not start (spawned workers re-import the main script: guard it with "
                "`if __name__ == '__main__'`; stdin/-c scripts cannot be re-imported)"
            ) from exc


def extract_frames(
    samples: list[Sample],
    out_dir: Path,
    size: int,
    workers: int = 2,
    max_bad_fraction: float = 0.05,
    progress: bool = True,
    codec: str = "png",
    quality: int = 90,
    shard_bytes: int = SHARD_BYTES,
) -> dict:
    """Decode every sample, resize it to ``size`` x ``size`` RGB and store the frames encoded as ``codec``
    in shards ``out_dir/<split>-NNN.frames`` (:mod:`ctca.data.shards`), listed in ``out_dir/manifest.json``.

    Videos are decoded with OpenCV, frame folders are read in sorted order; each frame is resized with
    Lanczos to a square (aspect ratio distorted, as the reference preprocessing does). ``codec``: ``png``
    (lossless) or ``jpeg`` at ``quality``; the params keys are ``frames.codec`` and ``frames.quality``.

    Skip rule: a sample whose video file is missing, cannot be opened or decodes to 0 frames, whose frame
    folder is missing or empty, or which has an unreadable frame image is *skipped*: nothing of it is
    stored and it is listed under ``failed`` in the manifest with the reason. The manifest is always
    written. Then, if more than ``max_bad_fraction`` of all samples failed, a
    :class:`FrameExtractionError` is raised (the params key is ``data.max_bad_fraction``).

    A video that decodes to fewer frames than its container declares is kept, with a ``warning`` on its
    manifest entry (the declared count is only an estimate for some containers).

    Crash safety: the old manifest and shards are removed first, shards are renamed into place when
    complete, and the manifest is written last, so an interrupted run leaves no manifest.

    Returns the manifest: ``{"format", "size", "codec", "quality", "shards": [{name, frames, bytes}],
    "samples": [{id, split, signer, glosses, n_frames, shard, first, sha1, source}], "failed": [{id,
    split, source, reason, signer, glosses}], "counts": {split: {"ok", "failed"}}}``. ``sha1`` is the
    checksum of the sample's encoded bytes. Sample order is the input order, whatever the number of workers.
    """
    if size <= 0:
        raise ValueError(f"size={size}: expected a positive frame size in pixels")
    if codec not in CODECS:
        raise ValueError(f"frames.codec={codec!r}: expected one of {', '.join(CODECS)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"frames.quality={quality}: expected a JPEG quality in 1..100")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"{MAX_BAD_KEY}={max_bad_fraction}: expected a fraction in [0, 1]")
    if not samples:
        raise ValueError("extract_frames: no samples given (expected at least one corpus sample)")
    keys = [(s.split, s.id) for s in samples]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"duplicate sample {dup[0]}/{dup[1]}: ids must be unique within a split")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST
    manifest_path.unlink(missing_ok=True)
    remove_shards(out_dir)
    writers: dict[str, ShardWriter] = {}
    jobs = [(i, s, size, codec, quality) for i, s in enumerate(samples)]
    ok: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    counts: dict[str, dict[str, int]] = {}
    with tqdm(total=len(jobs), desc=f"extract frames {size}px {codec}", unit="clip", disable=not progress) as bar:
        for r in _in_order(jobs, workers):
            c = counts.setdefault(r["split"], {"ok": 0, "failed": 0})
            if r["ok"]:
                c["ok"] += 1
                encoded = r.pop("encoded")
                writer = writers.setdefault(r["split"], ShardWriter(out_dir, r["split"], shard_bytes))
                shard, first = writer.add(encoded)
                ok.append({**{k: r[k] for k in ("id", "split", "signer", "glosses", "n_frames") },
                           "shard": shard, "first": first, "sha1": encoded_sha1(encoded), "source": r["source"],
                           **({"warning": r["warning"]} if "warning" in r else {})})
            else:
                c["failed"] += 1
                # a failed sample keeps its signer and glosses: its reference is still scored (as an
                # empty hypothesis)
                failed.append({k: r[k] for k in ("id", "split", "source", "reason", "signer", "glosses")})
            bar.update()
    shards = [s for w in writers.values() for s in w.close()]
    manifest = {"format": FRAMES_FORMAT, "size": size, "codec": codec, "quality": quality if codec == "jpeg" else None,
                "shards": shards, "samples": ok, "failed": failed, "counts": counts}
    write_json_atomic(manifest_path, manifest)

    fraction = len(failed) / len(jobs)
    if fraction > max_bad_fraction:
        shown = "; ".join(f"{f['split']}/{f['id']}: {f['reason']}" for f in failed[:5])
        more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
        raise FrameExtractionError(
            f"{len(failed)} of {len(jobs)} samples failed frame extraction ({fraction:.1%}), above "
            f"{MAX_BAD_KEY}={max_bad_fraction} ({math.floor(max_bad_fraction * len(jobs))} allowed); "
            f"see {manifest_path}. First failures: {shown}{more}"
        )
    return manifest


def load_manifest(frames_dir: Path | str) -> dict:
    """The ``manifest.json`` of an extracted frames tree, checked for the keys the cache needs."""
    path = Path(frames_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: frames manifest not found (run frame extraction first)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FRAMES_FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FRAMES_FORMAT!r} (frames extracted by "
                         "an older ctca as PNG folders: rerun extract_frames)")
    for key in ("size", "codec", "shards", "samples", "failed", "counts"):
        if key not in manifest:
            raise ValueError(f"{path}: missing key {key!r} (expected a manifest written by extract_frames)")
    return manifest


def read_sample(frames_dir: Path | str, sample: dict) -> np.ndarray:
    """All frames of one manifest sample as a (T, H, W, 3) uint8 RGB array, checked against its sha1."""
    reader = ShardReader(Path(frames_dir), sample["shard"])
    what = f"{Path(frames_dir) / MANIFEST}: sample {sample['split']}/{sample['id']}"
    reader.check_rows(sample["first"], sample["n_frames"], what)
    if reader.sha1(sample["first"], sample["n_frames"]) != sample["sha1"]:
        raise ValueError(f"{what}: its bytes in {reader.path} do not match the sha1 in the manifest (corrupt shard)")
    return np.stack([reader.frame(sample["first"] + t) for t in range(sample["n_frames"])])
