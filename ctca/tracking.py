"""The one place that talks to MLflow: a run per DVC stage execution, nested under a run per DVC experiment.

The store is SQLite at an absolute path built from ``DVC_ROOT`` (queued and ``--temp`` experiments
run in temporary clones that DVC deletes, so a relative URI would lose their runs), unless
``MLFLOW_TRACKING_URI`` points elsewhere (e.g. a shared ``mlflow server``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402


def project_root() -> Path:
    """DVC sets DVC_ROOT for every stage; for queued/--temp experiments it is the parent repo."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def _experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = (project_root() / "mlartifacts").as_uri()  # absolute: ./mlruns would die with a temp clone
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except Exception:  # lost a creation race with a parallel queue worker
        time.sleep(0.5)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _git_rev(cwd: Path) -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=cwd, text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _flat_params(params: dict) -> dict:
    from ctca.config import flatten

    return {k: (str(v) if not isinstance(v, int | float | str | bool) else v) for k, v in flatten(params).items()}


@contextmanager
def stage_run(stage: str, params: dict, experiment: str = "ctca") -> Iterator[StageRun]:
    """An MLflow run for one stage execution, nested under the DVC experiment's parent run."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    exp_id = _experiment_id(client, experiment)
    exp_name = os.environ.get("DVC_EXP_NAME", "")  # unset for plain `dvc repro`
    stage = os.environ.get("DVC_STAGE", stage)
    tags = {
        "dvc.exp_name": exp_name or "(repro)",
        "dvc.stage": stage,
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "dvc.root": str(project_root()),
        "dvc.cwd": os.getcwd(),
        "mlflow.source.git.commit": _git_rev(Path.cwd()),
        "mlflow.source.name": " ".join(sys.argv),
    }
    parent_id = None
    if exp_name:
        found = client.search_runs([exp_id], max_results=1, filter_string=(
            f"tags.`dvc.exp_name` = '{exp_name}' and tags.`dvc.role` = 'pipeline'"))
        parent_id = found[0].info.run_id if found else client.create_run(
            exp_id, run_name=exp_name, tags={**tags, "dvc.role": "pipeline", "dvc.stage": "*"}).info.run_id
    status = "FAILED"
    try:
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{exp_name}/{stage}" if exp_name else stage,
                              tags={**tags, "dvc.role": "stage"}, parent_run_id=parent_id,
                              nested=parent_id is not None) as run:
            mlflow.log_params(_flat_params(params))
            yield StageRun(run.info.run_id)
        status = "FINISHED"
    finally:
        if parent_id:  # runs made by create_run() stay RUNNING forever unless terminated
            client.set_terminated(parent_id, status=status)


class StageRun:
    """What a stage logs: metrics (per step), artifacts, tags. Numbers only; non-finite values are skipped."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def log_metrics(self, metrics: dict, step: int | None = None, prefix: str = "") -> None:
        clean = {f"{prefix}{k}": float(v) for k, v in metrics.items()
                 if isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf")}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: dict) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})
