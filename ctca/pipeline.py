"""What every DVC stage script shares: the file contracts between stages and the error convention.

A stage exits with status 2 and one line ``<stage>: error: <reason>`` on bad input (a params key, a
corpus file, unreadable videos); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path

from ctca.config import ConfigError, Params, load_params
from ctca.data.corpus import CorpusError

SYNTH_ROOT = Path("data/synthsign")
FRAMES_DIR = Path("work/frames")
CLIPS_DIR = Path("work/clips")
CKPT_DIR = Path("work/checkpoints")
EVAL_DIR = Path("work/eval")
SPM_WEIGHTS = Path("models/spm.pt")
MODEL_FILE = Path("models/model.pt")
METRICS_DIR = Path("metrics")
REPORTS_DIR = Path("reports")

# DVC metrics (`dvc exp show`): flat {name: number} files holding only the headline numbers
EVAL_METRICS = METRICS_DIR / "eval.json"  # dev_/test_ wer, del, ins (+ _<head> for every other head)
TRAIN_METRICS = METRICS_DIR / "train.json"  # parameters, epoch_seconds, best_epoch
IIW_METRICS = METRICS_DIR / "iiw.json"  # iiw_spm, iiw_tam (fisher_group estimator, final model)
# DVC plots: per-epoch rows
TRAIN_HISTORY = METRICS_DIR / "train_history.json"
IIW_CURVES = METRICS_DIR / "iiw_curves.json"
# the detail behind the metrics (ordinary outputs, read by the report)
EVAL_SUMMARY = EVAL_DIR / "summary.json"  # protocol, decoder, per split: S/D/I/N, loss, OOV, ms/video, heads
TRAIN_SUMMARY = Path("work/train/summary.json")  # method, depth, epochs, parameters by module, exclusions, ...
SNAPSHOTS_DIR = Path("work/snapshots")  # train: weights at epoch 0 (initial) and every iiw.interval epochs
IIW_DETAIL = Path("work/iiw/detail.json")  # estimators, per-group stats and parameters, n_train, cost_ratio
STAGES_DIR = Path("work/stages")  # one summary per data-preparation stage
SYNTHESIZE_SUMMARY = STAGES_DIR / "synthesize.json"
CORPUS_FINGERPRINT = STAGES_DIR / "corpus.json"  # check_corpus: what extract_frames reads, by name and size
EXTRACT_FRAMES_SUMMARY = STAGES_DIR / "extract_frames.json"
CACHE_FEATURES_SUMMARY = STAGES_DIR / "cache_features.json"
PRETRAIN_SPM_SUMMARY = STAGES_DIR / "pretrain_spm.json"
# the report stage's outputs; the chain-depth study (`ctca study report`) writes to its own folder
REPORT_FILE = REPORTS_DIR / "report.md"
FIGURES_DIR = REPORTS_DIR / "figures"
STUDY_DIR = REPORTS_DIR / "study"


class InputError(ValueError):
    """Bad input that a stage reports in one line (not a bug)."""


def input_errors() -> tuple[type[BaseException], ...]:
    from ctca.checkpoint import NotACtcaFile
    from ctca.data.frames import FrameExtractionError

    return (ConfigError, CorpusError, InputError, FrameExtractionError, FileNotFoundError, NotACtcaFile)


def corpus_root(params: Params) -> Path:
    """What the reader opens: data/synthsign, the corpus folder, or for ``manifest`` the manifest file
    (``data.root``; relative to the project root, and the manifest's relative paths to its own folder)."""
    return SYNTH_ROOT if params.data.dataset == "synthetic" else Path(params.data.root).expanduser()


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")


def _finite(obj: object) -> object:
    """JSON has no NaN/inf: write them as null (DVC metrics and other tools choke on NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def read_json(path: Path) -> object:
    if not path.is_file():
        raise InputError(f"{path}: missing (run the stage that writes it first: dvc repro)")
    return json.loads(path.read_text())


def stage_main(name: str, body: Callable[[Params], None], params_file: str = "params.yaml") -> None:
    logging.basicConfig(level=logging.INFO, format=f"{name}: %(message)s")
    try:
        params = load_params(params_file)
        body(params)
    except input_errors() as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
