"""Frame extraction: decode each corpus sample (video or frame folder), resize to a square, write PNGs.

The output tree plus ``manifest.json`` (ok and failed samples, with reasons) is the input of the clip cache.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ctca.data.corpus import Sample

MANIFEST = "manifest.json"
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


def _extract_one(job: tuple[int, Sample, str, int]) -> dict[str, Any]:
    """Pool worker: extract one sample. Never raises; a failure comes back as a record with a reason."""
    index, sample, out_dir, size = job
    rel = f"{sample.split}/{sample.id}"
    final = Path(out_dir) / rel
    # Written under a hidden temporary name and renamed at the end, so an interrupted run never leaves
    # a half-written folder that looks like a finished sample.
    partial = final.parent / f".{sample.id}.partial"
    for stale in (final, partial):
        if stale.exists():
            shutil.rmtree(stale)
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
        partial.mkdir(parents=True)
        n = 0
        for rgb in frames:
            write_frame(partial / frame_name(n), resize_frame(rgb, size))
            n += 1
        partial.rename(final)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded in the manifest, never lost
        shutil.rmtree(partial, ignore_errors=True)
        reason = str(exc) if isinstance(exc, UnreadableInput) else f"{type(exc).__name__}: {exc}"
        return {**record, "ok": False, "reason": reason}
    declared = info.get("declared_frames", 0)
    if declared > n:
        # The container's count is an estimate for some formats, so this is reported, not a failure:
        # a truncated file that still decodes shows up here.
        record["warning"] = f"decoded {n} of the {declared} frames the container declares"
    return {
        **record,
        "ok": True,
        "signer": sample.signer,
        "glosses": list(sample.glosses),
        "n_frames": n,
        "dir": rel,
    }


def _init_worker() -> None:
    # One OpenCV thread per process: the pool already uses every core it was given.
    cv2.setNumThreads(1)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


def extract_frames(
    samples: list[Sample],
    out_dir: Path,
    size: int,
    workers: int = 2,
    max_bad_fraction: float = 0.05,
    progress: bool = True,
) -> dict:
    """Decode and resize every sample to ``size`` x ``size`` RGB PNGs under ``out_dir/<split>/<id>/%06d.png``.

    Videos are decoded with OpenCV, frame folders are read in sorted order; each frame is resized with
    Lanczos to a square (aspect ratio distorted, as the reference preprocessing does).

    Skip rule: a sample whose video file is missing, cannot be opened or decodes to 0 frames, whose frame
    folder is missing or empty, or which has an unreadable frame image is *skipped*: its partial output
    is removed and it is listed under ``failed`` in ``out_dir/manifest.json`` with the reason. The
    manifest is always written. Then, if more than ``max_bad_fraction`` of all samples failed, a
    :class:`FrameExtractionError` is raised (the params key is ``data.max_bad_fraction``).

    A video that decodes to fewer frames than its container declares is kept, with a ``warning`` on its
    manifest entry (the declared count is only an estimate for some containers).

    Returns the manifest: ``{"size", "samples": [{id, split, signer, glosses, n_frames, dir, source}],
    "failed": [{id, split, source, reason, signer, glosses}], "counts": {split: {"ok", "failed"}}}``. Sample order is the
    input order, whatever the number of workers.
    """
    if size <= 0:
        raise ValueError(f"size={size}: expected a positive frame size in pixels")
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
    for split in {s.split for s in samples}:
        (out_dir / split).mkdir(exist_ok=True)
    jobs = [(i, s, str(out_dir), size) for i, s in enumerate(samples)]
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc=f"extract frames {size}px", unit="clip", disable=not progress)
    with bar:
        if workers <= 1:
            for job in jobs:
                results.append(_extract_one(job))
                bar.update()
        else:
            # spawn, not fork: forking a process whose OpenCV/torch thread pools are live can deadlock.
            # An executor, not multiprocessing.Pool: a worker that dies (codec segfault, out of memory)
            # raises BrokenProcessPool here instead of being respawned forever.
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker) as ex:
                futures = [ex.submit(_extract_one, job) for job in jobs]
                try:
                    for fut in as_completed(futures):
                        results.append(fut.result())
                        bar.update()
                except BrokenProcessPool as exc:
                    raise RuntimeError(
                        f"a frame extraction worker died after {len(results)} of {len(jobs)} samples: a crash or "
                        "out of memory (rerun with workers=1, frames.workers, to see which sample), or it could "
                        "not start (spawned workers re-import the main script: guard it with "
                        "`if __name__ == '__main__'`; stdin/-c scripts cannot be re-imported)"
                    ) from exc
    results.sort(key=lambda r: r["index"])

    sample_keys = ("id", "split", "signer", "glosses", "n_frames", "dir", "source", "warning")
    ok = [{k: r[k] for k in sample_keys if k in r} for r in results if r["ok"]]
    # a failed sample keeps its signer and glosses: its reference is still scored (as an empty hypothesis)
    failed = [{k: r[k] for k in ("id", "split", "source", "reason", "signer", "glosses")} for r in results
              if not r["ok"]]
    counts: dict[str, dict[str, int]] = {}
    for r in results:
        c = counts.setdefault(r["split"], {"ok": 0, "failed": 0})
        c["ok" if r["ok"] else "failed"] += 1
    manifest = {"size": size, "samples": ok, "failed": failed, "counts": counts}
    manifest_path = out_dir / MANIFEST
    write_json_atomic(manifest_path, manifest)

    fraction = len(failed) / len(results)
    if fraction > max_bad_fraction:
        shown = "; ".join(f"{f['split']}/{f['id']}: {f['reason']}" for f in failed[:5])
        more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
        raise FrameExtractionError(
            f"{len(failed)} of {len(results)} samples failed frame extraction ({fraction:.1%}), above "
            f"{MAX_BAD_KEY}={max_bad_fraction} ({math.floor(max_bad_fraction * len(results))} allowed); "
            f"see {manifest_path}. First failures: {shown}{more}"
        )
    return manifest


def load_manifest(frames_dir: Path | str) -> dict:
    """The ``manifest.json`` of an extracted frames tree, checked for the keys the cache needs."""
    path = Path(frames_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: frames manifest not found (run frame extraction first)")
    manifest = json.loads(path.read_text())
    for key in ("size", "samples", "failed", "counts"):
        if key not in manifest:
            raise ValueError(f"{path}: missing key {key!r} (expected a manifest written by extract_frames)")
    return manifest
