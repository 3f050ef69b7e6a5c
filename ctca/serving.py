"""The trained model as an MLflow model: a pyfunc that takes video paths (or frame arrays) and returns glosses.

The train stage logs the model file as the pyfunc's artifact, registers it under ``tracking.registered_model``
and points the alias ``tracking.model_alias`` (and, in a DVC experiment, the experiment's name) at the new
version, so ``mlflow.pyfunc.load_model("models:/<name>@<alias>")`` predicts with it. Aliases, not the
deprecated stages. It also logs the corpus the run trained on as an MLflow dataset input. Next to
``ctca.tracking`` (runs), this is the other module that talks to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

ARTIFACT = "model"  # the pyfunc's path inside the run
INPUT_COLUMN = "path"  # a video file or a folder of frame images
OUTPUT_COLUMN = "glosses"  # the recognised glosses, space-separated


# MLflow's PythonModel.__init_subclass__ forces (filter "once") a UserWarning asking for type hints on
# ``predict``; ours takes paths or frame arrays, which no one hint describes (the logged signature describes
# the paths). Not shown, so that a stage's error stays one line.
_showwarning, warnings.showwarning = warnings.showwarning, lambda *args, **kwargs: None
try:
    class GlossRecognizer(mlflow.pyfunc.PythonModel):
        """pyfunc of a ctca model file: ``predict`` takes a DataFrame with a ``path`` column (or a list of paths,
        or a list of (T, H, W, 3) uint8 RGB frame arrays) and returns a DataFrame with ``glosses``."""

        def load_context(self, context) -> None:
            from ctca.predict import Predictor

            self.predictor = Predictor(context.artifacts["model_file"])

        def predict(self, context, model_input, params=None):
            from ctca.predict import expand_inputs

            if isinstance(model_input, pd.DataFrame):
                items = list(model_input[INPUT_COLUMN])
            elif isinstance(model_input, np.ndarray) and model_input.ndim == 4:
                items = [model_input]
            else:
                items = list(model_input)
            glosses = []
            for i, item in enumerate(items):
                if isinstance(item, np.ndarray):
                    glosses.append(self.predictor.predict_array(item, f"input {i}").glosses)
                else:
                    (expanded,) = expand_inputs([item])  # one path, one prediction (a folder of videos is refused)
                    glosses.append(self.predictor.predict(expanded).glosses)
            return pd.DataFrame({OUTPUT_COLUMN: [" ".join(g) for g in glosses]})

finally:
    warnings.showwarning = _showwarning

def log_model(model_file: Path, example_input: Path | None, registered_model: str,
              aliases: list[str]) -> int:
    """Log ``model_file`` as the active run's pyfunc, register it and set ``aliases``; returns the version."""
    from mlflow.models import infer_signature

    example = pd.DataFrame({INPUT_COLUMN: [str(example_input) if example_input else "video.mp4"]})
    signature = infer_signature(example, pd.DataFrame({OUTPUT_COLUMN: ["GLOSS GLOSS"]}))
    info = mlflow.pyfunc.log_model(name=ARTIFACT, python_model=GlossRecognizer(),
                                   artifacts={"model_file": str(model_file)}, signature=signature,
                                   input_example=example if example_input else None,
                                   code_paths=[str(Path(__file__).resolve().parent)],  # ctca travels with it
                                   pip_requirements=requirements(), registered_model_name=registered_model)
    version = int(info.registered_model_version)
    client = MlflowClient()
    for alias in aliases:
        client.set_registered_model_alias(registered_model, alias_name(alias), str(version))
    return version


def requirements() -> list[str]:
    """The packages the pyfunc imports, pinned to this environment's versions (ctca itself is in code_paths)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("torch", "numpy", "opencv-python-headless", "pandas", "pyyaml", "tqdm"):
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return out


def alias_name(text: str) -> str:
    """An MLflow alias from free text (letters, digits, '_' and '-'; not 'latest' nor v<number>, which
    MLflow reserves)."""
    alias = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "model"
    return f"exp-{alias}" if alias == "latest" or re.fullmatch(r"v\d+", alias) else alias


def log_corpus(name: str, source: Path, index_file: Path) -> None:
    """The corpus as the active run's dataset input: its name, a digest of the clip index (what the
    run trained on, clip by clip) and where it came from."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    digest = hashlib.sha1(Path(index_file).read_bytes()).hexdigest()[:10]
    dataset = MetaDataset(resolve_dataset_source(Path(source).resolve().as_uri()), name=name, digest=digest)
    mlflow.log_input(dataset, context="training")


def register_model(params, model_file: Path, corpus: Path, clips_dir: Path,
                   frames_dir: Path) -> tuple[str, int, list[str]]:
    """The train stage's registration, in its active run: the corpus as a dataset input, the model file as
    a registered pyfunc (input example: an extracted corpus video) with ``tracking.model_alias`` and the
    DVC experiment's name as aliases. Returns (registered name, version, aliases)."""
    log_corpus(params.data.dataset, corpus, clips_dir / "index.json")
    manifest = frames_dir / "manifest.json"
    samples = json.loads(manifest.read_text())["samples"] if manifest.is_file() else []
    example = next((Path(s["source"]) for s in samples if s.get("ok") and Path(s["source"]).exists()), None)
    aliases = [params.tracking.model_alias] + ([os.environ["DVC_EXP_NAME"]] if os.environ.get("DVC_EXP_NAME") else [])
    name = params.tracking.model_name(params.data.dataset, params.model.method)
    return name, log_model(model_file, example, name, aliases), [alias_name(a) for a in aliases]
