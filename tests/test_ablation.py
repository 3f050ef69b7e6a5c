"""The poster's tables: rows are found by their params (legacy runs included), differences are paired by
seed, claims are judged against two standard errors, and queueing skips what is done."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ctca import ablation
from ctca.ablation import (
    LEGACY,
    ROWS,
    TABLES,
    assign,
    expected_params,
    matches,
    paired,
    queue,
    report,
    verdict,
)
from ctca.compare import merge_records

BASE = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def logged(row: str, seed: int = 0, drop: tuple[str, ...] = (), sections: tuple[str, ...] | None = None) -> dict:
    """The params a train run of ``row`` logs: its method's sections only (as stages/train.py does)."""
    params = expected_params(row, BASE)
    method = params["model.method"]
    keep = sections or ("model", "tam", "train", "loader", "spm", "loss", *(("ctca",) if method == "ctca" else ()),
                        *((method,) if method in ("vac", "smkd") else ()))
    out = {k: v for k, v in params.items() if k.split(".")[0] in keep and k not in drop}
    out["train.seed"] = str(seed)
    return out


def experiment(row: str, seed: int, dev: float, test: float, started: int = 0, **kw) -> dict:
    return {"exp": f"{row}-s{seed}", "train.seed": str(seed), "params": logged(row, seed, **kw), "dev_wer": dev,
            "test_wer": test, "train_metrics": {}, "started": started, "commit": "abcdef0123"}


def test_every_table_row_and_claim_names_a_row() -> None:
    for table in TABLES:
        keys = {r.row for r in table.rows}
        assert keys <= set(ROWS) and table.reference in keys
        assert all(b in keys and w in keys for b, w in table.claims)


def test_each_row_matches_itself_only() -> None:
    expected = {row: expected_params(row, BASE) for row in ROWS}
    for row in ROWS:
        found = [other for other in ROWS if matches(logged(row), expected[other])]
        assert found == [row], row


def test_runs_from_before_a_key_existed_match_its_legacy_value() -> None:
    old = logged("ctca-first", drop=tuple(LEGACY))
    assert matches(old, expected_params("ctca-first", BASE))
    assert not matches(old, expected_params("ctca", BASE))
    assert not matches(logged("ctca", drop=tuple(LEGACY)), expected_params("ctca", BASE))  # revised: not legacy
    unfused = logged("ctca-vanilla", drop=("ctca.fusion",))  # logged before ctca.fusion existed: no fusion
    assert matches(unfused, expected_params("ctca-vanilla", BASE))
    assert not any(matches(unfused, expected_params(f"ctca-fuse-{m}", BASE)) for m in ("concat", "add", "attention"))


def test_assign_keeps_the_latest_experiment_per_seed() -> None:
    exps = [experiment("ctca", 0, 9.0, 9.5, started=3), experiment("ctca", 1, 12.0, 13.0, started=2),
            experiment("ctca", 0, 10.0, 11.0, started=1), experiment("vac", 0, 20.0, 21.0)]  # not in time order
    got = assign(exps, BASE)
    assert [e["dev_wer"] for e in got["ctca"]] == [9.0, 12.0] and [e["dev_wer"] for e in got["vac"]] == [20.0]
    assert got["ctca-first"] == []


def test_paired_differences_and_verdicts_by_hand() -> None:
    better = [{"train.seed": s, "dev_wer": v} for s, v in [("0", 10.0), ("1", 12.0), ("2", 11.0), ("3", 50.0)]]
    worse = [{"train.seed": s, "dev_wer": v} for s, v in [("0", 11.0), ("1", 14.0), ("2", 14.0)]]
    mean, se, n = paired(better, worse, "dev_wer")  # diffs 1, 2, 3 (seed 3 unpaired)
    assert (mean, n) == (2.0, 3) and se == pytest.approx(1.0 / math.sqrt(3))
    assert verdict(mean, se, n) == "**reproduced**"
    assert verdict(-mean, se, n) == "not reproduced (reversed)"
    assert verdict(0.5, 0.3, 3).startswith("not reproduced (difference within")
    assert verdict(5.0, math.nan, 1).startswith("inconclusive")
    assert verdict(5.0, 0.1, 2) == "inconclusive (fewer than 3 paired seeds)"  # 1 degree of freedom


def test_queue_skips_done_seeds_and_passes_the_row_params(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(ablation.subprocess, "run", lambda cmd, **kw: calls.append(cmd)
                        or subprocess.CompletedProcess(cmd, 0))
    done = {"ctca-f5f5": [{"train.seed": "0"}]}
    names = queue(["table78"], [0, 1], done)
    assert names == ["ctca-s0", "ctca-s1", "ctca-f5f5-s1", "ctca-dilated-s0", "ctca-dilated-s1"]
    f5 = calls[2]
    assert f5[:6] == ["dvc", "exp", "run", "--queue", "-n", "ctca-f5f5-s1"]
    sets = {f5[i + 1] for i, a in enumerate(f5) if a == "-S"}
    assert {"train.seed=1", "ctca.local_kernels=[5,5]", "model.method=ctca", "loss.l2g=true", "iiw.interval=0"} <= sets


def test_report_gives_means_paired_differences_and_verdicts() -> None:
    assigned = {r: [] for r in ROWS}
    assigned["ctca"] = [{"train.seed": str(s), "dev_wer": d, "test_wer": d + 1, "train_metrics": {}, "commit": c}
                        for s, d, c in [(0, 10.0, "0123456789"), (1, 11.0, "fedcba9876"), (2, 12.0, "0123456789")]]
    assigned["ctca-f5f5"] = [{"train.seed": str(s), "dev_wer": d, "test_wer": d, "train_metrics": {}}
                             for s, d in [(0, 13.0), (1, 13.5), (2, 15.0)]]
    text = report(assigned, ["table78"], ratios=False, command="ctca ablation report --tables table78")
    assert "| F3-F3-F3 + BLSTM (CTCA) | `ctca` | 0, 1, 2 | **11.00 ± 1.00** |" in text
    # f5f5 - ctca per seed: 3, 2.5, 3 -> mean 2.83, se 0.17: reproduced on dev; test: 2, 1.5, 2
    assert "| F5-F5 local path | `ctca-f5f5` | 0, 1, 2 | **13.83 ± 1.04** |" in text
    assert "| F3-F3-F3 + BLSTM (CTCA) beats F5-F5 local path | +2.83 ± 0.17 (3) | **reproduced** |" in text
    assert "beats dilated-convolution global path | – (0) | inconclusive" in text
    assert "Rerun: `ctca ablation report --tables table78`" in text
    ctca_line = next(line for line in text.splitlines() if line.startswith("| F3-F3-F3 + BLSTM (CTCA) |"))
    assert ctca_line.endswith("| 0123456, fedcba9 |")  # the commits the row's experiments ran from, once each


def test_grad_ratios_are_averaged_over_every_logged_epoch_of_every_seed(tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from ctca import tracking
    from ctca.compare import collect

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    for seed, epochs in [(0, [0.1, 0.3]), (1, [0.5])]:
        monkeypatch.setenv("DVC_EXP_NAME", f"ctca-s{seed}")
        with tracking.stage_run("train", {"model": {"method": "ctca"}, "train": {"seed": seed}}) as r:
            for epoch, value in enumerate(epochs, start=1):
                r.log_metrics({"grad_ratio_l2g": value, "grad_ratio_ctc_local": 1.0}, step=epoch)
        with tracking.stage_run("evaluate", {"protocol": "none"}) as r:
            r.log_metrics({"dev_wer": 10.0, "test_wer": 11.0})
    exps = collect()
    assert sorted(e["train_metrics"]["grad_ratio_l2g"] for e in exps) == [0.3, 0.5]  # latest value per run
    exps = ablation.with_grad_ratios(exps)
    assert sorted(e["grad_ratios"]["l2g"] for e in exps) == [[0.1, 0.3], [0.5]]  # every epoch, in order
    assert ablation.grad_ratio_means(exps) == {"ctc_local": 1.0, "l2g": pytest.approx(0.3)}  # (0.1 + 0.3 + 0.5) / 3
    # recorded runs keep their histories: the means come back without MLflow
    ablation.save_records({"ctca": exps}, tmp_path / "runs.jsonl")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "elsewhere"))  # an empty MLflow
    back = ablation.with_grad_ratios(ablation.load_records(tmp_path / "runs.jsonl"))
    assert ablation.grad_ratio_means(back) == {"ctc_local": 1.0, "l2g": pytest.approx(0.3)}


def recorded(row: str, seed: int, dev: float, run: str, started: int) -> dict:
    return {**experiment(row, seed, dev, dev + 2, started=started), "train_run": run}


def test_records_reproduce_the_tables_without_mlflow(tmp_path) -> None:
    runs = [recorded(row, s, 10.0 + s + (row == "ctca-first") * (3 + s / 2), f"{row}{s}", s)
            for row in ("ctca", "ctca-first") for s in (0, 1, 2)]
    assigned = assign(runs, BASE)
    path = tmp_path / "reports" / "runs.jsonl"
    assert ablation.save_records(assigned, path) == 6
    lines = path.read_text().splitlines()
    assert [json.loads(line)["row"] for line in lines] == ["ctca"] * 3 + ["ctca-first"] * 3  # ROWS order, by seed
    again = assign(merge_records(ablation.load_records(path), []), BASE)
    for row in ("ctca", "ctca-first"):
        assert [{k: v for k, v in e.items() if k != "row"} for e in again[row]] == assigned[row]
    text = report(again, ["methods"], ratios=False)
    # first - revised per seed: 3, 3.5, 4 -> mean 3.50, se 0.29
    assert "| CTCA, revised reconstruction beats CTCA, first reconstruction | +3.50 ± 0.29 (3) | **reproduced** |" in text
    assert text == report(assigned, ["methods"], ratios=False)


def test_a_new_run_of_a_recorded_seed_replaces_it_and_mlflow_wins_for_the_same_run() -> None:
    old = [recorded("ctca", s, 10.0, f"old{s}", started=s) for s in (0, 1)]
    tracked = [recorded("ctca", 1, 7.0, "new1", started=10), recorded("ctca", 2, 8.0, "new2", started=11),
               {**recorded("ctca", 0, 10.0, "old0", started=0), "test_wer": 99.0}]  # the same run, as MLflow has it
    merged = merge_records(old, tracked)
    assert sorted(e["train_run"] for e in merged) == ["new1", "new2", "old0", "old1"]
    rows = assign(merged, BASE)["ctca"]
    assert [(e["train.seed"], e["dev_wer"], e["test_wer"]) for e in rows] == [("0", 10.0, 99.0), ("1", 7.0, 9.0),
                                                                              ("2", 8.0, 10.0)]


@pytest.mark.parametrize("line, message", [
    ("{not json", "runs.jsonl:2: not JSON"),
    ('{"train_run": "a", "params": {}}', "runs.jsonl:2: a run record needs train_run, train.seed, params, dev_wer, "
                                        "test_wer; missing train.seed, dev_wer, test_wer"),
    ("[1, 2]", "runs.jsonl:2: a run record needs"),
])
def test_a_bad_record_line_is_refused_with_its_file_and_line(tmp_path, line, message) -> None:
    good = json.dumps(recorded("ctca", 0, 10.0, "r0", 0))
    (tmp_path / "runs.jsonl").write_text(f"{good}\n{line}\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        ablation.load_records(tmp_path / "runs.jsonl")
    assert ablation.load_records(tmp_path / "absent.jsonl") == []


def test_the_report_command_rebuilds_the_tables_from_the_records_alone(tmp_path, monkeypatch, capsys) -> None:
    """A fresh clone has the committed records and no MLflow database: the command gives the same tables,
    and a corrupt record file is an error naming it, with nothing rewritten."""
    pytest.importorskip("mlflow")
    from ctca.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(BASE))
    runs = [recorded(row, s, 10.0 + s + (row == "ctca-first") * (3 + s / 2), f"{row}{s}", s)
            for row in ("ctca", "ctca-first") for s in (0, 1, 2)]
    ablation.save_records(assign(runs, BASE), tmp_path / "reports" / "ctca-runs.jsonl")
    before = (tmp_path / "reports" / "ctca-runs.jsonl").read_text()
    assert main(["ablation", "report", "--tables", "methods"]) == 0
    text = (tmp_path / "reports" / "ctca-tables.md").read_text()
    assert "| CTCA, revised reconstruction beats CTCA, first reconstruction | +3.50 ± 0.29 (3) | **reproduced** |" in text
    assert (tmp_path / "reports" / "ctca-runs.jsonl").read_text() == before
    (tmp_path / "reports" / "ctca-runs.jsonl").write_text(before + "{oops\n")
    capsys.readouterr()
    assert main(["ablation", "report"]) == 2
    assert "reports/ctca-runs.jsonl:7: not JSON" in capsys.readouterr().err
    assert (tmp_path / "reports" / "ctca-tables.md").read_text() == text
