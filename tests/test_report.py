"""The report stage: reports/report.md from the flat DVC metrics plus the detail files next to them, its figures
(IIW curves included), and a visible line when the MLflow store cannot be read."""

import json
import logging
from contextlib import contextmanager
from pathlib import Path

import pytest

from ctca import pipeline as P
from ctca.config import parse_params, to_dict
from ctca.report import build_report

SPLITS = {
    "dev": {"wer": 20.0, "del": 5.0, "ins": 2.5, "sub": 12.5, "S": 5, "D": 2, "I": 1, "N": 40, "hit": 33,
            "utterances": 4, "loss": 3.2, "oov_tokens": 1, "ms_per_video": 12.5, "head": "seq",
            "heads": {"seq": {"wer": 20.0, "del": 5.0, "ins": 2.5}, "conv": {"wer": 30.0, "del": 10.0, "ins": 0.0}}},
    "test": {"wer": 25.0, "del": 7.5, "ins": 0.0, "sub": 17.5, "S": 7, "D": 3, "I": 0, "N": 40, "hit": 30,
             "utterances": 4, "loss": 3.5, "oov_tokens": 0, "ms_per_video": 11.0, "head": "seq",
             "heads": {"seq": {"wer": 25.0, "del": 7.5, "ins": 0.0}, "conv": {"wer": 35.0, "del": 12.5, "ins": 2.5}}},
}


def write(root: Path, rel: Path, data) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(json.dumps(data))


def write_outputs(root: Path, skip: tuple[Path, ...] = ()) -> None:
    """Every file the report stage reads, as the stages write them (the contract in ctca.pipeline)."""
    from stages.evaluate import headline_metrics

    summary = {"protocol": "none", "decoder": "GreedyDecoder", "beam_width": 1, "method": "vac", "depth": 4,
               "splits": SPLITS}
    history = [{"epoch": e, "train_loss": 10.0 / e, "dev_loss": 9.0 / e, "dev_wer": 50.0 - 10 * e}
               for e in (1, 2, 3)]
    files = {
        P.EVAL_SUMMARY: summary,
        P.EVAL_METRICS: headline_metrics(summary),
        P.EVAL_DIR / "per_signer.json": {"dev": {"Signer01": {"wer": 18.0, "del": 4.0, "ins": 2.0, "N": 25}}},
        P.EVAL_DIR / "posterior_example.json": {
            "id": "dev-0000", "classes": ["<blank>", "HAUS"], "probs": [[0.9, 0.1, 0.8], [0.05, 0.85, 0.1]],
            "other": [0.05, 0.05, 0.1], "ref": ["HAUS"], "hyp": ["HAUS"], "frames_per_step": 4},
        P.TRAIN_METRICS: {"parameters": 1273403, "epoch_seconds": 31.5, "best_epoch": 3},
        P.TRAIN_SUMMARY: {"method": "vac", "depth": 4, "epochs": 3, "best_dev_wer": 20.0,
                          "parameters_by_module": {"spm": 100000, "tam": 1100000, "classifier": 73403},
                          "parameters_training_only": {"conv_head": 17000},
                          "excluded_train_samples": [{"id": "train-0007", "reason": "5 steps < 6 needed"}],
                          "resumed_from_epoch": None},
        P.TRAIN_HISTORY: history,
        P.IIW_METRICS: {"iiw_spm": 12.5, "iiw_tam": 3.25},
        P.IIW_DETAIL: {"estimators": {"fisher_group": "paper", "official": "reference code"},
                       "n_train": 600, "subset": 32, "skipped": 1, "cost_ratio": 0.125, "prior": "heldout",
                       "final": {g: {"fisher_group": v, "fisher_group_se": v / 10, "fisher_blockdiag": v,
                                     "official": v / 100, "mu": 0.1, "sigma2": 0.2, "delta_norm": 1.5}
                                 for g, v in (("spm", 12.5), ("tam", 3.25), ("classifier", 0.5))},
                       "parameters": {"spm": 100000, "tam": 1100000, "classifier": 73403}},
        P.IIW_CURVES: [{"epoch": e, **{f"iiw_{g}_{est}": float(e * k) for g, k in (("spm", 3), ("tam", 2))
                                       for est in ("fisher_group", "official")}} for e in (1, 2, 3)],
        P.SYNTHESIZE_SUMMARY: {"vocab_size": 40, "sentences": 800, "frames": 60000, "mean_frames": 75.0,
                               "minimal_pairs": 12},
        P.EXTRACT_FRAMES_SUMMARY: {"counts": {"train": {"ok": 599, "failed": 1}, "dev": {"ok": 100, "failed": 0},
                                              "test": {"ok": 100, "failed": 0}},
                                   "failed": [{"id": "train-0042", "split": "train", "reason": "no frame decoded"}]},
        P.CACHE_FEATURES_SUMMARY: {"vocab_size": 42, "oov": {"dev": {"glosses": 1, "types": 1}}},
        P.PRETRAIN_SPM_SUMMARY: {"epochs": 2, "depth": 2, "best_epoch": 2, "best_dev_wer": 60.0,
                                 "history": [{"epoch": 1, "dev_wer": 70.0}, {"epoch": 2, "dev_wer": 60.0}]},
    }
    for rel, data in files.items():
        if rel not in skip:
            write(root, rel, data)


PARAMS = to_dict(parse_params({}))


def test_the_report_reads_the_detail_files_and_draws_every_figure(tmp_path):
    write_outputs(tmp_path)
    text = build_report(tmp_path, PARAMS, methods=[]).read_text()
    assert "method **vac**, chain depth **4**" in text and "scoring protocol **none**" in text
    assert "| dev | **20.00** | 5.00 | 2.50 | 12.50 | 5 | 2 | 1 | 40 | 4 |" in text  # WER with S/D/I/N
    assert "| test | conv | 35.00 | 12.50 | 2.50 |" in text and "inference uses **seq**" in text  # every head
    # model: parameters (headline metric) with the per-module detail, best epoch, s/epoch, ms/video
    assert "| vac | 4 | 1,273,403 | 100,000 | 1,100,000 | 73,403 | 17,000 | 3 of 3 | 31.50 | dev 12.5 ms" in text
    assert "| spm | 100,000 | 12.5 | 1.2 | 0.125 | 1.5 |" in text  # IIW from work/iiw/detail.json
    assert "held-out dev clips" in text and "32 fixed training videos of n = 600 (1 skipped" in text and "12.5 % of a training epoch" in text
    assert "## Methods compared" in text and "No finished DVC experiment at `tam.depth` 4" in text
    assert "| train | 599 | 1 | – |" in text and "| dev | 100 | 0 | 1 |" in text  # OOV from the eval summary
    assert "`train-0042` (train): no frame decoded" in text and "`train-0007`: 5 steps < 6 needed" in text
    assert "800 sentences, 40 glosses" in text and "Gloss vocabulary (training split only): 42" in text
    assert "| dev | Signer01 | 18.00 | 4.00 | 2.00 | 25 |" in text
    assert "Inputs not found" not in text
    for f in ("training_loss.png", "dev_wer.png", "iiw_curves.png", "ctc_posteriors.png"):
        assert (tmp_path / P.FIGURES_DIR / f).stat().st_size > 1000 and f"figures/{f}" in text


def test_a_missing_input_is_named_and_the_rest_is_reported(tmp_path):
    write_outputs(tmp_path, skip=(P.IIW_DETAIL, P.TRAIN_SUMMARY))
    text = build_report(tmp_path, PARAMS).read_text()
    assert "Inputs not found" in text and "`work/iiw/detail.json`" in text and "`work/train/summary.json`" in text
    assert "iiw_spm 12.5, iiw_tam 3.25" in text  # the headline IIW still shows
    assert "| vac | 4 | 1,273,403 | – |" in text  # the headline parameters still show
    write_outputs(tmp_path)
    (tmp_path / P.EVAL_SUMMARY).unlink()
    with pytest.raises(FileNotFoundError, match="summary.json"):
        build_report(tmp_path, PARAMS)


def test_eval_metrics_are_flat_headline_numbers_of_every_head():
    from stages.evaluate import headline_metrics

    flat = headline_metrics({"splits": SPLITS})
    assert list(flat) == ["dev_wer", "dev_del", "dev_ins", "test_wer", "test_del", "test_ins",
                          "dev_wer_conv", "dev_del_conv", "dev_ins_conv", "test_wer_conv", "test_del_conv",
                          "test_ins_conv"]
    assert flat["dev_wer"] == 20.0 and flat["test_ins_conv"] == 2.5
    assert all(isinstance(v, int | float) for v in flat.values())


def test_an_unreadable_mlflow_store_is_said_in_the_report_and_the_log(tmp_path, monkeypatch, caplog):
    import stages.report as stage

    write_outputs(tmp_path)
    store = tmp_path / "store.db"
    store.write_text("this is not an SQLite database\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")

    class NoRun:
        def log_artifact(self, *args, **kwargs):
            pass

    @contextmanager
    def no_tracking(*args, **kwargs):  # the report's own MLflow run would hit the same store
        yield NoRun()

    monkeypatch.setattr(stage, "stage_run", no_tracking)
    with caplog.at_level(logging.WARNING):
        stage.run(parse_params({}))
    text = (tmp_path / P.REPORT_FILE).read_text()
    section = text.split("## Methods compared")[1].split("##")[0]
    assert "**Not available:**" in section and str(store) in section and "could not be read" in section
    assert "not a database" in section  # the reason, not just the fact
    assert any("methods not compared" in r.getMessage() and str(store) in r.getMessage() for r in caplog.records)


def test_the_report_has_an_environment_section_and_notes_a_different_training_environment(tmp_path):
    from ctca.environment import KEYS, fingerprint

    write_outputs(tmp_path)
    text = build_report(tmp_path, PARAMS).read_text()  # no environment in the train summary: this machine's
    section = text.split("## Environment")[1]
    env = fingerprint()
    assert set(KEYS) <= set(env) and "| key | value |" in section
    assert f"| torch | {env['torch']} |" in section and f"| python | {env['python']} |" in section

    here = {"python": "3.11.7", "torch": "2.13.0+cpu", "gpus": "none"}
    summary = json.loads((tmp_path / P.TRAIN_SUMMARY).read_text())
    write(tmp_path, P.TRAIN_SUMMARY, {**summary, "environment": here})
    section = build_report(tmp_path, PARAMS, environment=here).read_text().split("## Environment")[1]
    assert "the train stage ran in the same environment" in section and "| gpus | none |" in section

    write(tmp_path, P.TRAIN_SUMMARY, {**summary, "environment": {**here, "torch": "2.13.0+cu128",
                                                                  "gpus": "NVIDIA H200 | x"}})
    section = build_report(tmp_path, PARAMS, environment=here).read_text().split("## Environment")[1]
    assert "ran in a different environment" in section and "`torch`, `gpus` differ" in section
    assert "| key | this report | training |" in section and "| python | 3.11.7 | 3.11.7 |" in section
    assert "| **torch** | **2.13.0+cpu** | **2.13.0+cu128** |" in section
    assert "| **gpus** | **none** | **NVIDIA H200 \\| x** |" in section  # a "|" does not break the table
