"""The chain-depth study report: per-depth mean ± std over seeds of IIW and WER, and its figures."""

import statistics
from pathlib import Path

import ctca.study as study


def row(depth, seed, spm, tam, wer):
    return {"exp": f"depth{depth}-s{seed}", "train_run": f"r{depth}{seed}", "iiw_run": f"i{depth}{seed}", "tam.depth": str(depth),
            "train.seed": str(seed), "model.method": "baseline", "iiw.final_iiw_spm_fisher_group": spm,
            "iiw.final_iiw_tam_fisher_group": tam, "iiw.final_iiw_spm_official": spm / 100, "iiw.final_iiw_tam_official": tam / 100,
            "dev_wer": wer, "test_wer": wer + 1}


def test_depth_report_tables_and_figures(tmp_path, monkeypatch):
    rows = [row(1, 0, 8.0, 1.0, 30.0), row(1, 1, 6.0, 3.0, 32.0), row(2, 0, 4.0, 5.0, 25.0),
            row(10, 0, 1.0, 9.0, 20.0)]
    curves = {"1": {1: [1.0, 2.0], 2: [3.0, 4.0]}, "2": {1: [0.5], 2: [0.7]}}
    monkeypatch.setattr(study, "epoch_curves", lambda rows, metric, uri=None: curves)
    out = study.depth_report(rows, tmp_path / "depth_study.md", tmp_path / "figures")
    text = out.read_text()
    lines = [line for line in text.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")
             or line.startswith("| 10 |")]
    assert [line.split("|")[1].strip() for line in lines] == ["1", "2", "10"]  # numeric order of depths
    assert f"7 ± {statistics.stdev([8.0, 6.0]):.3g}" in lines[0]  # SPM IIW over the two seeds of depth 1
    assert "31.00 ± 1.41" in lines[0]
    for f in ("depth_iiw.png", "depth_wer.png", "depth_iiw_epochs.png"):
        assert (tmp_path / "figures" / f).stat().st_size > 1000 and f"figures/{f}" in text


def test_study_report_writes_its_own_folder_that_no_stage_declares(tmp_path, monkeypatch, capsys):
    import yaml

    import ctca.compare
    from ctca.cli import main
    from ctca.pipeline import FIGURES_DIR, REPORT_FILE, STUDY_DIR

    curve = {m: [[1, 1.0], [2, 0.5]] for m in study.EPOCH_METRICS}
    rows = [{**row(1, 0, 8.0, 1.0, 30.0), "iiw_epochs": curve}, {**row(2, 0, 4.0, 5.0, 25.0), "iiw_epochs": curve}]
    monkeypatch.setattr(ctca.compare, "collect", lambda experiment, stages=(): rows)
    monkeypatch.chdir(tmp_path)
    assert main(["study", "report"]) == 0
    assert (tmp_path / STUDY_DIR / "README.md").is_file()
    # the rows are recorded next to it; without MLflow (a fresh clone) the same report comes back from them
    assert len((tmp_path / STUDY_DIR / "runs.jsonl").read_text().splitlines()) == 2
    first = (tmp_path / STUDY_DIR / "README.md").read_text()
    monkeypatch.setattr(ctca.compare, "collect", lambda experiment, stages=(): [])
    assert main(["study", "report"]) == 0
    assert (tmp_path / STUDY_DIR / "README.md").read_text() == first
    assert (tmp_path / STUDY_DIR / "figures" / "depth_iiw.png").is_file() and not (tmp_path / FIGURES_DIR).exists()
    # a folder whose figures/ is the report stage's output is refused: the next report run would delete them
    assert main(["study", "report", "--out", "reports/depth_study.md"]) == 2
    assert "report stage" in capsys.readouterr().err
    # and no stage of the pipeline declares the study's folder
    stages = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for s in stages.values()
            for key in ("outs", "metrics", "plots") for o in s.get(key, [])]
    assert REPORT_FILE.as_posix() in outs
    assert not [o for o in outs if Path(o) == STUDY_DIR or STUDY_DIR in Path(o).parents or Path(o) in STUDY_DIR.parents]


def test_epoch_curves_come_from_the_iiw_runs_per_epoch_history(tmp_path, monkeypatch):
    import mlflow

    from ctca import tracking
    from ctca.compare import collect

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "depth2-s0")
    with tracking.stage_run("train", {"model": {"method": "baseline"}, "tam": {"depth": 2}}) as r:
        r.log_metrics({"parameters": 10})
    with tracking.stage_run("iiw", {}) as r:
        for epoch, value in ((1, 2.0), (2, 3.0)):  # the snapshots, then the selected model (the iiw stage's names)
            r.log_metrics({"iiw_spm_fisher_group": value}, step=epoch)
        r.log_metrics({"final_iiw_spm_fisher_group": 2.5})
    with tracking.stage_run("evaluate", {"protocol": "none"}) as r:
        r.log_metrics({"dev_wer": 10.0})
    (row,) = collect(stages=("iiw",))
    assert row["iiw_run"] and row["iiw.final_iiw_spm_fisher_group"] == 2.5  # the selected model, not the last epoch
    (row,) = study.with_iiw_epochs([row], mlflow.get_tracking_uri())
    assert row["iiw_epochs"]["iiw_spm_fisher_group"] == [[1, 2.0], [2, 3.0]]
    assert study.epoch_curves([row], "iiw_spm_fisher_group") == {"2": {1: [2.0], 2: [3.0]}}


def test_the_study_is_the_latest_run_per_depth_and_seed_that_measured_iiw_per_epoch():
    runs = [{**row(2, 0, 4.0, 5.0, 25.0), "started": 1, "params": {"iiw.interval": "1"}},
            {**row(2, 0, 3.0, 5.0, 21.0), "train_run": "rerun", "started": 2},
            {**row(2, 1, 4.0, 5.0, 25.0), "train_run": "table", "started": 3, "params": {"iiw.interval": "0"}},
            {**row(3, 1, 4.0, 5.0, 25.0), "model.method": "vac", "started": 4},
            {k: v for k, v in row(4, 0, 4.0, 5.0, 25.0).items() if not k.startswith("iiw.")}]
    assert [r["train_run"] for r in study.study_rows(runs)] == ["rerun"]
