"""Stage check_corpus: fingerprint the corpus at ``data.root`` (sample list, media file names and sizes).

Runs on every ``dvc repro`` (``always_changed``) and takes seconds even for PHOENIX-2014; its output changes
only when the corpus does, so ``extract_frames`` reruns exactly then. The corpus itself is never a DVC
dependency or output: DVC would hash a million frames and, for an output, copy them into its cache.
"""

from __future__ import annotations

import logging
import time

from ctca.config import Params
from ctca.data.corpus import corpus_fingerprint, open_corpus
from ctca.pipeline import CORPUS_FINGERPRINT, corpus_root, stage_main, write_json


def run(params: Params) -> None:
    t0 = time.perf_counter()
    fingerprint = corpus_fingerprint(open_corpus(params.data.dataset, corpus_root(params)))
    write_json(CORPUS_FINGERPRINT, fingerprint)  # nothing time- or machine-dependent in it
    logging.info("%d media files, %.2f GB, %d missing: listed in %.1f s", fingerprint["media_files"],
                 fingerprint["media_bytes"] / 1e9, fingerprint["missing"], time.perf_counter() - t0)


if __name__ == "__main__":
    stage_main("check_corpus", run)
