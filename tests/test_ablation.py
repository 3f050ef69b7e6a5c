"""The poster's tables: rows are found by their params (legacy runs included), differences are paired by
seed, claims are judged against two standard errors, and queueing skips what is done."""

from __future__ import annotations

import math
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
    assert ablation.grad_ratio_means(exps) == {"ctc_local": 1.0, "l2g": pytest.approx(0.3)}  # (0.1 + 0.3 + 0.5) / 3
