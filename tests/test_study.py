"""The chain-depth study report: per-depth mean ± std over seeds of IIW and WER, and its figures."""

import statistics

import ctca.study as study


def row(depth, seed, spm, tam, wer):
    return {"exp": f"depth{depth}-s{seed}", "train_run": f"r{depth}{seed}", "tam.depth": str(depth),
            "train.seed": str(seed), "model.method": "baseline", "iiw.iiw_spm_fisher_group": spm,
            "iiw.iiw_tam_fisher_group": tam, "iiw.iiw_spm_official": spm / 100, "iiw.iiw_tam_official": tam / 100,
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
