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
