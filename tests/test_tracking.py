"""MLflow tracking: one SQLite store under DVC_ROOT, a parent run per DVC experiment, a nested run per stage."""

import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

from ctca import tracking  # noqa: E402


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "project"
    root.mkdir()
    work = tmp_path / "elsewhere"  # a queued experiment runs in a temporary clone, not in DVC_ROOT
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    return root


def runs(root, name="ctca"):
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    return client, exp, client.search_runs([exp.experiment_id])


def test_store_lives_in_dvc_root_not_in_the_working_directory(store, tmp_path):
    with tracking.stage_run("train", {"tam": {"depth": 2}}) as run:
        run.log_metrics({"dev_wer": 12.5, "nan": float("nan"), "flag": True}, step=1)
    assert (store / "mlflow.db").is_file()
    assert not (tmp_path / "elsewhere" / "mlflow.db").exists()
    assert not (tmp_path / "elsewhere" / "mlruns").exists()
    client, exp, found = runs(store)
    assert exp.artifact_location == (store / "mlartifacts").as_uri()
    (r,) = found
    assert r.data.params["tam.depth"] == "2"
    assert r.data.metrics == {"dev_wer": 12.5}  # NaN and booleans are not logged as metrics
    assert r.data.tags["dvc.exp_name"] == "(repro)" and r.data.tags["dvc.stage"] == "train"


def test_experiment_runs_nest_under_one_parent_which_is_terminated(store, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "deep-exp")
    for stage in ("train", "evaluate"):
        monkeypatch.setenv("DVC_STAGE", stage)
        with tracking.stage_run(stage, {"x": 1}):
            pass
    client, exp, found = runs(store)
    parents = [r for r in found if r.data.tags.get("dvc.role") == "pipeline"]
    stages = [r for r in found if r.data.tags.get("dvc.role") == "stage"]
    assert len(parents) == 1 and len(stages) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in stages} == {parents[0].info.run_id}
    assert all(r.data.tags["dvc.exp_name"] == "deep-exp" for r in found)
    assert parents[0].info.status == "FINISHED"


def test_a_failing_stage_marks_its_runs_failed(store, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "broken")
    with pytest.raises(RuntimeError), tracking.stage_run("train", {}):
        raise RuntimeError("boom")
    _, _, found = runs(store)
    assert {r.info.status for r in found} == {"FAILED"}


def test_artifacts_are_logged(store, tmp_path):
    f = tmp_path / "report.md"
    f.write_text("# hi\n")
    with tracking.stage_run("report", {}) as run:
        run.log_artifact(f, "report")
        run.log_artifact(tmp_path / "missing.md")  # nothing to log: no error
    client, _, (r,) = runs(store)
    assert [a.path for a in client.list_artifacts(r.info.run_id, "report")] == ["report/report.md"]


# --- environment fingerprint and process tags on every stage run ---

def test_the_environment_fingerprint_has_every_key_without_cuda(monkeypatch):
    import torch

    from ctca import environment

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    env = environment.fingerprint()
    assert tuple(env) == environment.KEYS and all(isinstance(v, str) and v for v in env.values())
    assert env["cuda_available"] == "False" and env["gpus"] == env["cuda"] == env["cudnn"] == "none"
    assert env["torch"] == torch.__version__ and env["torch_threads"] == str(torch.get_num_threads())
    assert env["deterministic_algorithms"] == str(torch.are_deterministic_algorithms_enabled())
    assert env["mlflow"] == mlflow.__version__ and env["cpu_count"].isdigit()


def test_a_failing_probe_gives_unknown_not_an_exception(monkeypatch):
    import torch

    from ctca import environment

    def boom(*args, **kwargs):
        raise RuntimeError("driver wedged")

    monkeypatch.setattr(environment.metadata, "version", boom)  # dvc, mlflow, ctca versions
    monkeypatch.setattr(environment, "_opencv", boom)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # CUDA "present", but every query fails
    monkeypatch.setattr(torch.cuda, "device_count", boom)
    monkeypatch.setattr(torch.backends.cudnn, "version", boom)
    env = environment.fingerprint()
    assert env["dvc"] == env["mlflow"] == env["ctca"] == env["opencv"] == "unknown"
    assert env["gpus"] == env["cudnn"] == "unknown" and set(env) == set(environment.KEYS)
    assert environment.git_commit("/") == "unknown"


def test_git_commit_is_read_from_the_git_files(tmp_path):
    from ctca import environment

    sha = "0123456789abcdef0123456789abcdef01234567"
    (tmp_path / ".git" / "refs" / "heads").mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / ".git" / "packed-refs").write_text(f"# pack-refs\n{sha} refs/heads/main\n")
    (tmp_path / "sub").mkdir()
    assert environment.git_commit(tmp_path / "sub") == sha
    (tmp_path / ".git" / "refs" / "heads" / "main").write_text(sha[::-1] + "\n")
    assert environment.git_commit(tmp_path) == sha[::-1]


def test_every_stage_run_carries_the_environment_and_its_process(store):
    import os
    import socket

    from ctca.environment import fingerprint

    with tracking.stage_run("cache_features", {}):
        pass
    _, _, (r,) = runs(store)
    env = fingerprint()
    assert {k[len("env."):]: v for k, v in r.data.tags.items() if k.startswith("env.")}.keys() == env.keys()
    assert r.data.tags["env.torch"] == env["torch"] and r.data.tags["env.python"] == env["python"]
    assert r.data.tags["ctca.host"] == socket.gethostname() and r.data.tags["ctca.pid"] == str(os.getpid())


# --- runs left RUNNING by dead processes; resumable stages continue their run ---

def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _orphan(client, exp_id, stage, pid, host=None, exp_name="(repro)"):
    """A run as a killed process leaves it: RUNNING, tagged with its host and PID."""
    import socket

    return client.create_run(exp_id, tags={"dvc.role": "stage", "dvc.stage": stage, "dvc.exp_name": exp_name,
                                           "ctca.host": host or socket.gethostname(),
                                           "ctca.pid": str(pid)}).info.run_id


def test_runs_left_running_by_a_dead_process_are_closed_as_killed(store):
    import subprocess
    import sys

    with tracking.stage_run("train", {}):  # creates the experiment
        pass
    client, exp, _ = runs(store)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _orphan(client, exp.experiment_id, "train", _dead_pid())
        live = _orphan(client, exp.experiment_id, "train", alive.pid)
        elsewhere = _orphan(client, exp.experiment_id, "train", _dead_pid(), host="another-host")
        other_stage = _orphan(client, exp.experiment_id, "evaluate", _dead_pid())
        other_exp = _orphan(client, exp.experiment_id, "train", _dead_pid(), exp_name="some-exp")
        with tracking.stage_run("train", {}):
            pass
    finally:
        alive.kill()
        alive.wait()
    status = {r: client.get_run(r).info.status for r in (dead, live, elsewhere, other_stage, other_exp)}
    assert status == {dead: "KILLED", live: "RUNNING", elsewhere: "RUNNING", other_stage: "RUNNING",
                      other_exp: "RUNNING"}
    assert not tracking.process_alive(_dead_pid())


def test_a_resumed_stage_continues_its_run_and_keeps_its_first_params(store, monkeypatch, caplog):
    import logging

    monkeypatch.setenv("DVC_EXP_NAME", "resumed-exp")
    with pytest.raises(KeyboardInterrupt), tracking.stage_run("train", {"train": {"lr": 0.1}}, resumable=True) as run:
        extras = run.start(None)
        run.log_metrics({"train_loss": 2.0, "epoch": 1}, step=1)
        raise KeyboardInterrupt  # interrupted in epoch 2
    with caplog.at_level(logging.WARNING), \
            tracking.stage_run("train", {"train": {"lr": 0.2, "threads": 1}}, resumable=True) as run:
        assert run.run_id is None
        assert run.start(extras) == extras  # the same run, so the same extras
        run.log_metrics({"train_loss": 1.0, "epoch": 2}, step=2)
        assert run.log_history([{"train_loss": 2.0, "epoch": 1}, {"train_loss": 1.0, "epoch": 2},
                                {"train_loss": 0.5, "epoch": 3}]) == 1  # only the step the run lacks
    client, _, found = runs(store)
    (stage,) = [r for r in found if r.data.tags["dvc.role"] == "stage"]
    (parent,) = [r for r in found if r.data.tags["dvc.role"] == "pipeline"]
    assert stage.info.run_id == extras[tracking.RUN_ID_KEY] and stage.info.status == "FINISHED"
    assert parent.info.status == "FINISHED"
    assert stage.data.params == {"train.lr": "0.1", "train.threads": "1"}  # first value kept, new key added
    assert stage.data.tags["ctca.resume_changed.train.lr"] == "0.2" and stage.data.tags["ctca.resumes"] == "1"
    assert [(m.step, m.value) for m in client.get_metric_history(stage.info.run_id, "train_loss")] == [
        (1, 2.0), (2, 1.0), (3, 0.5)]
    assert any("continuing MLflow run" in r.getMessage() for r in caplog.records)
    assert any("train.lr: 0.1 -> 0.2" in r.getMessage() for r in caplog.records)


def test_a_run_of_another_experiment_or_stage_is_not_continued(store, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "first")
    with tracking.stage_run("train", {}, resumable=True) as run:
        extras = run.start(None)
    monkeypatch.setenv("DVC_EXP_NAME", "second")  # e.g. a completed checkpoint of experiment "first"
    with tracking.stage_run("train", {}, resumable=True) as run:
        assert run.start(extras) != extras
    monkeypatch.setenv("DVC_EXP_NAME", "first")
    with tracking.stage_run("pretrain_spm", {}, resumable=True) as run:
        assert run.start(extras) != extras
    with tracking.stage_run("train", {}, resumable=True) as run:
        assert run.start({tracking.RUN_ID_KEY: "0" * 32}) != extras  # not in this store
    _, _, found = runs(store)
    assert len([r for r in found if r.data.tags["dvc.role"] == "stage"]) == 4


def test_a_resumable_stage_that_never_starts_its_run_still_gets_one(store):
    with tracking.stage_run("pretrain_spm", {"x": 1}, resumable=True) as run:
        with pytest.raises(RuntimeError, match="before the MLflow run is started"):
            run.log_metrics({"a": 1.0})
    with pytest.raises(ValueError), tracking.stage_run("pretrain_spm", {"x": 1}, resumable=True):
        raise ValueError("failed in the setup, before fit's on_start")
    _, _, found = runs(store)
    assert sorted(r.info.status for r in found) == ["FAILED", "FINISHED"]
    assert all(r.data.params == {"x": "1"} for r in found)
