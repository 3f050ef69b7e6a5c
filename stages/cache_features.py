"""Stage cache_features: the clip store (decoded uint8 clips, or an index into the frame shards) and the train-only
vocabulary."""

from __future__ import annotations

from ctca.config import Params
from ctca.data.cache import ClipStore, write_clip_store
from ctca.data.vocab import Vocabulary
from ctca.pipeline import (
    CACHE_FEATURES_SUMMARY,
    CLIPS_DIR,
    FRAMES_DIR,
    InputError,
    read_json,
    stage_main,
    write_json,
)
from ctca.tracking import stage_run


def run(params: Params) -> None:
    manifest = read_json(FRAMES_DIR / "manifest.json")
    train = [s["glosses"] for s in manifest["samples"] if s["split"] == "train"]
    if not train:
        raise InputError(f"{FRAMES_DIR / 'manifest.json'}: no training sample; cannot build the gloss vocabulary")
    vocab = Vocabulary.build(train)
    with stage_run("cache_features", {"frames.store": params.frames.store}, params.tracking.experiment) as run:
        summary = write_clip_store(FRAMES_DIR, CLIPS_DIR, vocab, store=params.frames.store)
        bad = ClipStore(CLIPS_DIR).verify()
        if bad:
            raise InputError(f"{CLIPS_DIR}: {len(bad)} clips fail their checksum right after writing: {bad[:5]}")
        metrics = {"vocab_size": len(vocab.glosses), "store": params.frames.store,
                   "bytes": sum(s["bytes"] for s in summary["splits"].values()),
                   "oov": {split: {"glosses": o["glosses"], "types": len(o["types"])}
                           for split, o in summary["oov"].items()}}
        write_json(CACHE_FEATURES_SUMMARY, metrics)
        run.log_metrics({"vocab_size": len(vocab.glosses)})
        run.log_artifact(CLIPS_DIR / "vocab.json")
        run.log_artifact(CACHE_FEATURES_SUMMARY)


if __name__ == "__main__":
    stage_main("cache_features", run)
