"""Tests of frame extraction: video and frame-folder inputs, failure reporting, the bad-fraction threshold, and
the sharded frame store (codecs, shard rollover, checksums, crash safety)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ctca.data.corpus import PHOENIX_FEATURES, PHOENIX_HEADER, Phoenix2014Reader
from ctca.data.frames import (
    FrameExtractionError,
    extract_frames,
    load_manifest,
    read_frames,
    read_sample,
    write_frames,
)
from ctca.data.shards import ShardReader

SIZE = 24


def clip(n: int, h: int = 30, w: int = 26, seed: int = 0) -> np.ndarray:
    """A smooth (T, H, W, 3) RGB clip (codec-friendly) whose channels differ, so BGR/RGB swaps show."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [
        np.stack([(xx * 8 + t * 5) % 256, (yy * 8) % 256, np.full_like(xx, 40 + 10 * t)], axis=-1)
        for t in range(n)
    ]
    return (np.array(frames) + rng.integers(0, 3, (n, h, w, 3))).clip(0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()


def write_corpus(root: Path, rows: dict[str, list[tuple[str, str, str]]]) -> Phoenix2014Reader:
    """PHOENIX-style corpus CSVs: rows[split] = [(id, folder, annotation)]."""
    (root / "annotations" / "manual").mkdir(parents=True)
    for split, split_rows in rows.items():
        lines = ["|".join(PHOENIX_HEADER)] + [f"{i}|{folder}|Signer01|{ann}" for i, folder, ann in split_rows]
        (root / "annotations" / "manual" / f"{split}.corpus.csv").write_text("\n".join(lines) + "\n")
    return Phoenix2014Reader(root)


@pytest.fixture
def corpus(tmp_path: Path):
    """train: 2 mp4 + 1 PNG folder; dev: 1 PNG folder + 4 broken (corrupt mp4, truncated mp4, missing folder,
    missing mp4)."""
    root = tmp_path / "corpus"
    media = root / PHOENIX_FEATURES
    write_mp4(media / "train" / "v1.mp4", clip(12, seed=1))
    write_mp4(media / "train" / "v2.mp4", clip(7, seed=2))
    write_frames(clip(9, seed=3), media / "train" / "f1" / "1")
    write_frames(clip(5, seed=4), media / "dev" / "f2" / "1")
    (media / "dev").mkdir(parents=True, exist_ok=True)
    (media / "dev" / "bad.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    write_mp4(media / "dev" / "trunc.mp4", clip(10, seed=5))
    data = (media / "dev" / "trunc.mp4").read_bytes()
    (media / "dev" / "trunc.mp4").write_bytes(data[: len(data) // 2])
    reader = write_corpus(
        root,
        {
            "train": [("v1", "v1.mp4", "A B"), ("v2", "v2.mp4", "B"), ("f1", "f1/1/*.png", "A  C")],
            "dev": [
                ("f2", "f2/1/*.png", "C"),
                ("bad", "bad.mp4", "A"),
                ("trunc", "trunc.mp4", "B"),
                ("gone", "gone/1/*.png", "A"),
                ("nofile", "nofile.mp4", "C"),
            ],
        },
    )
    return [s for split in ("train", "dev") for s in reader.samples(split)]


def test_extracts_videos_and_frame_folders(corpus, tmp_path):
    out = tmp_path / "frames"
    manifest = extract_frames(corpus, out, SIZE, workers=1, max_bad_fraction=1.0, progress=False)
    ok = {s["id"]: s for s in manifest["samples"]}
    assert [s["id"] for s in manifest["samples"]] == ["v1", "v2", "f1", "f2"]  # input order
    assert {i: s["n_frames"] for i, s in ok.items()} == {"v1": 12, "v2": 7, "f1": 9, "f2": 5}
    assert ok["f1"]["glosses"] == ["A", "C"] and ok["f1"]["split"] == "train"
    # one shard per split here; each sample a run of consecutive frames
    assert [(s["shard"], s["first"]) for s in manifest["samples"]] == [
        ("train-000", 0), ("train-000", 12), ("train-000", 19), ("dev-000", 0)]
    assert sorted(p.name for p in out.iterdir()) == [
        "dev-000.frames", "dev-000.offsets.npy", "manifest.json", "train-000.frames", "train-000.offsets.npy"]
    for s in manifest["samples"]:
        frames = read_sample(out, s)
        assert frames.shape == (s["n_frames"], SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["counts"] == {"train": {"ok": 3, "failed": 0}, "dev": {"ok": 1, "failed": 4}}
    # Decoded video frames are RGB and close to the resized source (mp4v is lossy).
    src = cv2.resize(clip(12, seed=1)[0], (SIZE, SIZE), interpolation=cv2.INTER_LANCZOS4)
    assert np.abs(read_sample(out, ok["v1"])[0].astype(int) - src).mean() < 8
    # png is lossless: the f1 frames are exactly the resized source frames
    want = np.stack([cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_LANCZOS4) for f in clip(9, seed=3)])
    assert np.array_equal(read_sample(out, ok["f1"]), want)


def test_png_colours_survive_the_round_trip(tmp_path):
    """Frames are written RGB->BGR->PNG and read back RGB: the red channel must stay the red channel."""
    src = np.zeros((2, 8, 8, 3), np.uint8)
    src[..., 0] = 200  # pure red
    root = tmp_path / "c"
    write_frames(src, root / PHOENIX_FEATURES / "train" / "r" / "1")
    samples = write_corpus(root, {"train": [("r", "r/1/*.png", "A")]}).samples("train")
    manifest = extract_frames(samples, tmp_path / "out", 8, workers=1, progress=False)
    assert np.array_equal(read_sample(tmp_path / "out", manifest["samples"][0]), src)


def test_failures_are_listed_with_reasons_and_skipped(corpus, tmp_path):
    out = tmp_path / "frames"
    manifest = extract_frames(corpus, out, SIZE, workers=1, max_bad_fraction=1.0, progress=False)
    failed = {f["id"]: f for f in manifest["failed"]}
    assert set(failed) == {"bad", "trunc", "gone", "nofile"}
    assert "open" in failed["bad"]["reason"] or "0 frames" in failed["bad"]["reason"]
    assert failed["trunc"]["reason"]
    assert "frame folder not found" in failed["gone"]["reason"]
    assert failed["gone"]["source"].endswith("gone/1")
    assert failed["nofile"]["reason"] == "video file not found"
    # nothing of a failed sample is stored: the dev shard holds exactly f2's 5 frames, no partial file is left
    assert ShardReader(out, "dev-000").frames == 5
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_threshold_error_above_the_fraction_not_below(corpus, tmp_path):
    # 4 of 8 samples fail: exactly 0.5 is allowed, only a larger fraction raises.
    extract_frames(corpus, tmp_path / "a", SIZE, workers=1, max_bad_fraction=0.5, progress=False)
    with pytest.raises(FrameExtractionError) as err:
        extract_frames(corpus, tmp_path / "b", SIZE, workers=1, max_bad_fraction=0.45, progress=False)
    msg = str(err.value)
    assert "4 of 8" in msg and "50.0%" in msg and "data.max_bad_fraction=0.45" in msg
    assert "gone" in msg and "frame folder not found" in msg
    assert isinstance(err.value, ValueError)
    assert len(json.loads((tmp_path / "b" / "manifest.json").read_text())["failed"]) == 4


def test_unreadable_frame_image_fails_the_sample(tmp_path):
    root = tmp_path / "c"
    folder = root / PHOENIX_FEATURES / "train" / "x" / "1"
    write_frames(clip(3), folder)
    (folder / "000001.png").write_bytes(b"not a png")
    samples = write_corpus(root, {"train": [("x", "x/1/*.png", "A")]}).samples("train")
    manifest = extract_frames(
        samples, tmp_path / "out", SIZE, workers=1, max_bad_fraction=1.0, progress=False
    )
    assert manifest["samples"] == []
    assert "unreadable frame image" in manifest["failed"][0]["reason"]
    assert "000001.png" in manifest["failed"][0]["reason"]


def test_one_and_two_workers_give_identical_outputs(corpus, tmp_path):
    m1 = extract_frames(corpus, tmp_path / "w1", SIZE, workers=1, max_bad_fraction=1.0, progress=False)
    m2 = extract_frames(corpus, tmp_path / "w2", SIZE, workers=2, max_bad_fraction=1.0, progress=False)
    assert m1 == m2
    files1 = sorted(p.name for p in (tmp_path / "w1").iterdir())
    assert files1 == sorted(p.name for p in (tmp_path / "w2").iterdir())
    for name in files1:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    assert sum(sh["frames"] for sh in m1["shards"]) == 12 + 7 + 9 + 5


def test_jpeg_codec_is_smaller_and_close(corpus, tmp_path):
    png = extract_frames(corpus, tmp_path / "png", 64, workers=1, max_bad_fraction=1.0, progress=False)
    jpg = extract_frames(corpus, tmp_path / "jpg", 64, workers=1, max_bad_fraction=1.0, progress=False,
                         codec="jpeg", quality=90)
    assert jpg["codec"] == "jpeg" and jpg["quality"] == 90 and png["quality"] is None
    assert sum(s["bytes"] for s in jpg["shards"]) < sum(s["bytes"] for s in png["shards"])
    for a, b in zip(png["samples"], jpg["samples"], strict=True):
        exact, lossy = read_sample(tmp_path / "png", a), read_sample(tmp_path / "jpg", b)
        assert exact.shape == lossy.shape
        assert np.abs(exact.astype(int) - lossy).mean() < 4  # JPEG at quality 90 on smooth frames


def test_shards_roll_over_and_never_split_a_sample(corpus, tmp_path):
    one = extract_frames(corpus, tmp_path / "one", SIZE, workers=1, max_bad_fraction=1.0, progress=False)
    small = extract_frames(corpus, tmp_path / "many", SIZE, workers=1, max_bad_fraction=1.0, progress=False,
                           shard_bytes=1)  # every sample closes its shard
    assert [s["shard"] for s in small["samples"]] == ["train-000", "train-001", "train-002", "dev-000"]
    assert all(s["first"] == 0 for s in small["samples"])
    for a, b in zip(one["samples"], small["samples"], strict=True):
        assert np.array_equal(read_sample(tmp_path / "one", a), read_sample(tmp_path / "many", b))
    # a rerun with bigger shards removes the stale ones
    extract_frames(corpus, tmp_path / "many", SIZE, workers=1, max_bad_fraction=1.0, progress=False)
    assert not (tmp_path / "many" / "train-001.frames").exists()


def test_corrupt_and_truncated_shards_are_caught(corpus, tmp_path):
    out = tmp_path / "frames"
    manifest = extract_frames(corpus, out, SIZE, workers=1, max_bad_fraction=1.0, progress=False)
    v2 = manifest["samples"][1]
    shard = out / "train-000.frames"
    data = bytearray(shard.read_bytes())
    start = int(np.load(out / "train-000.offsets.npy")[v2["first"]])
    data[start + 40] ^= 0xFF  # one flipped byte inside v2's first frame
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="train/v2.*sha1"):
        read_sample(out, v2)
    assert read_sample(out, manifest["samples"][0]).shape[0] == 12  # v1 is intact
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(ValueError, match="train-000.frames.*truncated"):
        read_sample(out, v2)


def test_interrupted_extraction_leaves_no_manifest(corpus, tmp_path, monkeypatch):
    out = tmp_path / "frames"
    extract_frames(corpus, out, SIZE, workers=1, max_bad_fraction=1.0, progress=False)
    import ctca.data.frames as frames_mod

    real, calls = frames_mod.encode_frame, []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) > 15:
            raise KeyboardInterrupt  # not an Exception: a sample failure would be recorded instead
        return real(*args, **kwargs)

    monkeypatch.setattr(frames_mod, "encode_frame", crash)
    with pytest.raises(KeyboardInterrupt):
        extract_frames(corpus, out, SIZE, workers=1, max_bad_fraction=1.0, progress=False)
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_manifest(out)


def test_codec_and_quality_are_checked(corpus, tmp_path):
    with pytest.raises(ValueError, match="frames.codec='webp'"):
        extract_frames(corpus, tmp_path / "x", SIZE, codec="webp", progress=False)
    with pytest.raises(ValueError, match="frames.quality=0"):
        extract_frames(corpus, tmp_path / "x", SIZE, codec="jpeg", quality=0, progress=False)


def test_frames_of_an_older_layout_are_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"size": 8, "samples": [], "failed": [], "counts": {}}))
    with pytest.raises(ValueError, match="rerun extract_frames"):
        load_manifest(tmp_path)


def test_read_frames_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_frames(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        read_frames(tmp_path / "empty")
