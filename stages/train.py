"""Stage train: train the recognizer (model.method, tam.depth) from the pretrained SPM; keep the best dev epoch.

With ``train.nproc > 1`` the stage relaunches itself under torchrun (DDP); rank 0 writes every output.
"""

from __future__ import annotations

import os

from ctca.config import Params
from ctca.distributed import relaunch_under_torchrun, under_torchrun
from ctca.models.recognizer import count_parameters, inference_parameters
from ctca.pipeline import CKPT_DIR, CLIPS_DIR, METRICS_DIR, MODEL_FILE, SPM_WEIGHTS, stage_main, write_json
from ctca.tracking import stage_run
from ctca.train import fit, fit_spec, model_config, save_model

LOGGED_SECTIONS = ("model", "tam", "loss", "train", "loader", "spm", "iiw")


def run(params: Params) -> None:
    if params.train.nproc > 1 and not under_torchrun():
        relaunch_under_torchrun(params.train.nproc, "stages.train")
        return
    spec = fit_spec(params)
    kwargs = {"clips_dir": CLIPS_DIR, "ckpt_dir": CKPT_DIR / "train", "spec": spec, "init_spm": SPM_WEIGHTS}
    if int(os.environ.get("RANK", "0")) != 0:  # other DDP ranks train their shards; rank 0 reports
        fit(params, **kwargs)
        return
    logged = {s: params.section(s) for s in LOGGED_SECTIONS}
    if params.model.method in ("vac", "smkd", "ctca"):  # the method's own switches
        logged[params.model.method] = params.section(params.model.method)
    with stage_run("train", logged, params.tracking.experiment) as run:
        result = fit(params, **kwargs, on_epoch=lambda epoch, m: run.log_metrics(m, step=epoch))
        model = result.model
        groups = {name: count_parameters(m) for name, m in model.module_groups().items()}
        training_only = {name: count_parameters(m) for name, m in model.training_modules().items()}
        meta = {"best_epoch": result.best_epoch, "best_dev_wer": result.best_dev_wer, "depth": spec.depth}
        save_model(MODEL_FILE, model, model_config(params, result.vocab.num_classes, spec.depth), result.vocab, meta,
                   theta0=result.theta0)
        summary = {"method": params.model.method, "depth": spec.depth, "epochs": len(result.history),
                   "best_epoch": result.best_epoch, "best_dev_wer": result.best_dev_wer,
                   "parameters": inference_parameters(model), "parameters_by_module": groups,
                   "parameters_training_only": training_only,
                   "excluded_train_samples": result.excluded, "resumed_from_epoch": result.resumed_from}
        write_json(METRICS_DIR / "train.json", summary)
        write_json(METRICS_DIR / "train_history.json", result.history)
        run.log_metrics({"best_dev_wer": result.best_dev_wer, "best_epoch": result.best_epoch,
                         "parameters": summary["parameters"]})
        run.log_artifact(MODEL_FILE, "model")


if __name__ == "__main__":
    stage_main("train", run)
