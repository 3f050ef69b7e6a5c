"""ctca compare: experiments joined from their MLflow train/evaluate runs and aggregated over seeds."""

import statistics

import pytest

pytest.importorskip("mlflow")

from ctca import tracking  # noqa: E402
from ctca.cli import main  # noqa: E402
from ctca.compare import collect, markdown_table, mean_std  # noqa: E402


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    return tmp_path


def experiment(monkeypatch, name, method, seed, dev, test, params=1000, finish_eval=True):
    monkeypatch.setenv("DVC_EXP_NAME", name)
    with tracking.stage_run("train", {"model": {"method": method}, "train": {"seed": seed}, "tam": {"depth": 4}}) as r:
        r.log_metrics({"parameters": params})
    if finish_eval:
        with tracking.stage_run("evaluate", {"protocol": "none"}) as r:
            r.log_metrics({"dev_wer": dev, "test_wer": test, "dev_del": 1.0, "dev_ins": 0.5})


def test_experiments_are_joined_and_grouped_with_mean_and_std(store, monkeypatch, capsys):
    experiment(monkeypatch, "vac-s0", "vac", 0, 20.0, 22.0)
    experiment(monkeypatch, "vac-s1", "vac", 1, 18.0, 21.0)
    experiment(monkeypatch, "ctca-s0", "ctca", 0, 15.0, 16.0, params=800)
    experiment(monkeypatch, "ctca-s1", "ctca", 1, 0.0, 0.0, finish_eval=False)  # no evaluate run: left out
    monkeypatch.delenv("DVC_EXP_NAME")
    with tracking.stage_run("evaluate", {"protocol": "none"}) as r:  # a plain `dvc repro`: no experiment
        r.log_metrics({"dev_wer": 99.0})

    rows = collect()
    assert sorted(r["exp"] for r in rows) == ["ctca-s0", "vac-s0", "vac-s1"]
    vac = [r for r in rows if r["model.method"] == "vac"]
    assert sorted(r["train.seed"] for r in vac) == ["0", "1"]
    table = "\n".join(markdown_table(rows))
    assert f"**19.00 ± {statistics.stdev([20.0, 18.0]):.2f}**" in table  # dev WER of the two vac seeds
    assert "| ctca | 1 (0) | **15.00** |" in table

    assert main(["compare", "--out", str(store / "m.md"), "--where", "model.method=vac"]) == 0
    assert "vac-s1" in (store / "m.md").read_text() and "ctca-s0" not in (store / "m.md").read_text()
    assert main(["compare", "--out", str(store / "m.md"), "--where", "model.method=smkd"]) == 2
    capsys.readouterr()
    assert main(["compare", "--where", "model.method=vac"]) == 0  # no --out: the table is printed only
    assert "| vac-s1 |" in capsys.readouterr().out


def test_rerun_experiment_uses_its_latest_runs(store, monkeypatch):
    experiment(monkeypatch, "vac-s0", "vac", 0, 30.0, 30.0)
    experiment(monkeypatch, "vac-s0", "vac", 0, 10.0, 12.0)  # same name again: the same parent run
    (row,) = collect()
    assert row["dev_wer"] == 10.0


def test_mean_std_ignores_missing_values():
    assert mean_std([1.0, None, 3.0, float("nan")]) == (2.0, statistics.stdev([1.0, 3.0]), 2)
    assert mean_std([None])[2] == 0
