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


class InputError(ValueError):
    """Bad input that a stage reports in one line (not a bug)."""


def input_errors() -> tuple[type[BaseException], ...]:
    from ctca.data.frames import FrameExtractionError

    return (ConfigError, CorpusError, InputError, FrameExtractionError, FileNotFoundError)


def corpus_root(params: Params) -> Path:
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
