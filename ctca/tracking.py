"""The one place that talks to MLflow: a run per DVC stage execution, nested under a run per DVC experiment.

The store is SQLite at an absolute path built from ``DVC_ROOT`` (queued and ``--temp`` experiments
run in temporary clones that DVC deletes, so a relative URI would lose their runs), unless
``MLFLOW_TRACKING_URI`` points elsewhere (e.g. a shared ``mlflow server``).

Every stage run carries tags saying where it ran: the environment fingerprint (ctca.environment) as
``env.<key>`` tags (tags rather than an artifact: they show in the UI's run page and columns and can be
searched, ``tags.`env.torch` = '2.13.0'``), and the host and process (``ctca.host``, ``ctca.pid``,
``ctca.pid_start``). A run whose process died (SIGKILL, power loss) would stay RUNNING forever: when the
same stage of the same DVC experiment starts again on the same host, its RUNNING runs whose process is gone
are closed as KILLED. A resumable stage (train, pretrain_spm) continues the run of the checkpoint it resumes
from instead of opening a second one (``stage_run(..., resumable=True)`` and ``StageRun.start``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from ctca.environment import fingerprint, git_commit  # noqa: E402

log = logging.getLogger(__name__)
RUN_ID_KEY = "mlflow_run_id"  # where a resumable stage's run id is kept with its checkpoint (StageRun.start)


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


def _flat_params(params: dict) -> dict:
    from ctca.config import flatten

    return {k: (str(v) if not isinstance(v, int | float | str | bool) else v) for k, v in flatten(params).items()}


@contextmanager
def stage_run(stage: str, params: dict, experiment: str = "ctca", resumable: bool = False) -> Iterator[StageRun]:
    """An MLflow run for one stage execution, nested under the DVC experiment's parent run.

    ``resumable=False``: the run is open when the body starts. ``resumable=True`` (stages that resume from a
    checkpoint): the body opens it with :meth:`StageRun.start` (``fit(..., on_start=run.start)``), which
    continues the checkpoint's run, if any, or opens a new one; a body that never calls it gets a new run
    at its end (or, if it fails first, a FAILED one recording the failure). Either way the run ends FINISHED,
    or FAILED when the body raises, and so does the DVC experiment's parent run.
    """
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
        "mlflow.source.git.commit": git_commit(),
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
        with ExitStack() as stack:  # holds the stage's MLflow run once it is started
            run = StageRun(client, stack, exp_id=exp_id, stage=stage, tags=tags, parent_id=parent_id,
                           params=_flat_params(params),
                           run_name=f"{exp_name}/{stage}" if exp_name else stage)
            if not resumable:
                run.start()
            try:
                yield run
            except BaseException:
                if run.run_id is None:  # failed before the run was opened: record the failure anyway
                    try:
                        run.start()
                    except Exception as exc:
                        log.warning("could not record the failure in MLflow: %s", exc)
                raise
            if run.run_id is None:
                run.start()
        status = "FINISHED"
    finally:
        if parent_id:  # runs made by create_run() stay RUNNING forever unless terminated
            client.set_terminated(parent_id, status=status)


def process_tags() -> dict[str, str]:
    """The host and process of this stage execution, to tell a RUNNING run of a dead process from a live one."""
    return {"ctca.host": socket.gethostname(), "ctca.pid": str(os.getpid()),
            "ctca.pid_start": _process_start(os.getpid()) or ""}


def _process_start(pid: int) -> str | None:
    """The process's start time (clock ticks after boot, from /proc): tells a reused PID from the original."""
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3, starttime field 22
    return (fields[0], fields[19]) if len(fields) > 19 else None


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie does not; with ``started``, a process that
    reuses the PID of one started at another time does not either). When unsure, alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's process
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, start = stat
    return state not in ("Z", "X") and not (started and start != started)


class StageRun:
    """What a stage logs: metrics (per step), artifacts, tags. Numbers only; non-finite values are skipped.

    ``run_id`` is None until :meth:`start` opened the MLflow run (at once unless the stage is resumable).
    """

    def __init__(self, client: MlflowClient, stack: ExitStack, *, exp_id: str, stage: str, tags: dict,
                 parent_id: str | None, params: dict, run_name: str):
        self.run_id: str | None = None
        self._client, self._stack = client, stack
        self._exp_id, self._stage, self._tags, self._parent_id = exp_id, stage, tags, parent_id
        self._params, self._run_name = params, run_name

    def start(self, resume: dict | None = None) -> dict:
        """Open the stage's run and return what to keep with a checkpoint to continue it: ``{RUN_ID_KEY: id}``.

        ``resume``: what an earlier call returned (kept in the checkpoint being resumed), or None. Its run is
        continued when it is a run of this stage of this DVC experiment in this store: its earlier params stay
        (a param whose value changed is not logged again; its new value goes to the tag
        ``ctca.resume_changed.<key>``, with a warning), its tags are refreshed and ``ctca.resumes`` counts the
        resumptions. Otherwise (and when ``resume`` is None) a new run is opened; the log says which. First,
        RUNNING runs of this stage and DVC experiment on this host whose process is gone are closed as KILLED
        (not the one continued). Fits ``fit(..., on_start=run.start)``.
        """
        if self.run_id is not None:
            raise RuntimeError(f"the MLflow run of stage {self._stage} is already started ({self.run_id})")
        previous = self._continuable((resume or {}).get(RUN_ID_KEY))
        self._close_dead_runs(keep=previous.info.run_id if previous else None)
        tags = {**self._tags, "dvc.role": "stage", **process_tags(),
                **{f"env.{k}": v for k, v in fingerprint().items()}}
        if previous is None:
            active = self._stack.enter_context(mlflow.start_run(
                experiment_id=self._exp_id, run_name=self._run_name, tags=tags, parent_run_id=self._parent_id,
                nested=self._parent_id is not None))
            mlflow.log_params(self._params)
            log.info("%s: new MLflow run %s", self._stage, active.info.run_id)
        else:
            active = self._stack.enter_context(mlflow.start_run(run_id=previous.info.run_id))
            old = previous.data.params
            changed = {k: v for k, v in self._params.items() if k in old and old[k] != str(v)}
            new = {k: v for k, v in self._params.items() if k not in old}
            if new:
                mlflow.log_params(new)
            if changed:
                log.warning("%s: params changed since MLflow run %s started (kept there as logged, the new values "
                            "are tagged ctca.resume_changed.<key>): %s", self._stage, previous.info.run_id,
                            ", ".join(f"{k}: {old[k]} -> {v}" for k, v in changed.items()))
            env_changed = sorted(k for k, v in tags.items() if k.startswith("env.")
                                 and k in previous.data.tags and previous.data.tags[k] != v)
            if env_changed:
                log.warning("%s: the environment changed since MLflow run %s started: %s", self._stage,
                            previous.info.run_id, ", ".join(f"{k} {previous.data.tags[k]} -> {tags[k]}"
                                                             for k in env_changed))
            tags |= {f"ctca.resume_changed.{k}": v for k, v in changed.items()}
            tags["ctca.resumes"] = str(int(previous.data.tags.get("ctca.resumes", "0") or 0) + 1)
            mlflow.set_tags({k: str(v) for k, v in tags.items()})
            log.warning("%s: continuing MLflow run %s (status was %s)", self._stage, previous.info.run_id,
                        previous.info.status)
        self.run_id = active.info.run_id
        return {RUN_ID_KEY: self.run_id}

    def _continuable(self, run_id: str | None):
        """The run ``run_id`` if this stage execution may continue it, else None (with the reason logged)."""
        if not run_id:
            return None
        try:
            run = self._client.get_run(run_id)
        except MlflowException:
            log.warning("%s: the checkpoint's MLflow run %s is not in %s; opening a new run", self._stage,
                        run_id, tracking_uri())
            return None
        t = run.data.tags
        reasons = [(run.info.lifecycle_stage != "active", "it is deleted"),
                   (run.info.experiment_id != self._exp_id, "it is in another MLflow experiment"),
                   ((t.get("dvc.role"), t.get("dvc.stage")) != ("stage", self._stage), "it is not a run of this stage"),
                   ((t.get("dvc.exp_name"), t.get("mlflow.parentRunId")) != (self._tags["dvc.exp_name"], self._parent_id),
                    f"it belongs to DVC experiment {t.get('dvc.exp_name')}")]
        why = next((reason for failed, reason in reasons if failed), None)
        if why:
            log.warning("%s: not continuing the checkpoint's MLflow run %s (%s); opening a new run", self._stage,
                        run_id, why)
            return None
        return run

    def _close_dead_runs(self, keep: str | None) -> None:
        host = socket.gethostname()
        found = self._client.search_runs([self._exp_id], max_results=1000, filter_string=(
            f"tags.`dvc.stage` = '{self._stage}' and tags.`dvc.exp_name` = '{self._tags['dvc.exp_name']}' "
            f"and tags.`ctca.host` = '{host}' and attributes.status = 'RUNNING'"))
        for r in found:
            pid = r.data.tags.get("ctca.pid", "")
            if r.info.run_id == keep or not pid.isdigit() or process_alive(int(pid), r.data.tags.get("ctca.pid_start")):
                continue
            self._client.set_terminated(r.info.run_id, status="KILLED")
            log.warning("%s: closed MLflow run %s as KILLED: left RUNNING by process %s on %s, which is gone",
                        self._stage, r.info.run_id, pid, host)

    def _require_started(self) -> None:
        if self.run_id is None:
            raise RuntimeError(f"stage {self._stage}: nothing can be logged before the MLflow run is started "
                               "(StageRun.start; fit calls it as on_start)")

    def log_metrics(self, metrics: dict, step: int | None = None, prefix: str = "") -> None:
        self._require_started()
        clean = {f"{prefix}{k}": float(v) for k, v in metrics.items()
                 if isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf")}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def log_history(self, rows: list[dict], step_key: str = "epoch") -> int:
        """Log the rows (one dict of metrics per step, the step in ``row[step_key]``) whose step the run lacks.

        A continued run lacks the epoch(s) its killed process checkpointed but had not logged yet; a new run
        opened on a checkpoint whose run cannot be continued lacks all epochs before the resumed one. Returns
        the number of rows logged."""
        self._require_started()
        done = {m.step for m in self._client.get_metric_history(self.run_id, step_key)}
        missing = [r for r in rows if step_key in r and int(r[step_key]) not in done]
        for row in missing:
            self.log_metrics(row, step=int(row[step_key]))
        return len(missing)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        self._require_started()
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: dict) -> None:
        self._require_started()
        mlflow.set_tags({k: str(v) for k, v in tags.items()})
