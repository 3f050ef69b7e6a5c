"""Stage extract_frames: decode every corpus video (or frame folder), resize, store the encoded frames in shards."""

from __future__ import annotations

from ctca.config import Params
from ctca.data.corpus import SPLITS, open_corpus
from ctca.data.frames import extract_frames
from ctca.pipeline import EXTRACT_FRAMES_SUMMARY, FRAMES_DIR, corpus_root, stage_main, write_json
from ctca.tracking import stage_run


def run(params: Params) -> None:
    reader = open_corpus(params.data.dataset, corpus_root(params))
    samples = [s for split in SPLITS for s in reader.samples(split)]
    with stage_run("extract_frames", {"data": params.section("data"), "frames": params.section("frames")},
                   params.tracking.experiment) as run:
        frames = params.frames
        try:
            summary = extract_frames(samples, FRAMES_DIR, frames.size, workers=frames.workers,
                                     max_bad_fraction=params.data.max_bad_fraction, codec=frames.codec,
                                     quality=frames.quality)
        finally:  # the manifest lists the failures even when the stage fails on too many of them
            manifest = FRAMES_DIR / "manifest.json"
            if manifest.is_file():
                run.log_artifact(manifest)
        counts, shards = summary["counts"], summary["shards"]
        stored = {"shards": len(shards), "frames": sum(s["frames"] for s in shards),
                  "bytes": sum(s["bytes"] for s in shards)}
        write_json(EXTRACT_FRAMES_SUMMARY, {"counts": counts, "failed": summary.get("failed", []), "stored": stored})
        for split, c in counts.items():
            run.log_metrics(c, prefix=f"{split}_")
        run.log_metrics(stored, prefix="stored_")


if __name__ == "__main__":
    stage_main("extract_frames", run)
