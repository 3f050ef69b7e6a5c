"""Stage train: train the recognizer (model.method, tam.depth) from the pretrained SPM; keep the best dev epoch."""

from __future__ import annotations

from ctca.config import Params
from ctca.models.recognizer import count_parameters
from ctca.pipeline import CKPT_DIR, CLIPS_DIR, METRICS_DIR, MODEL_FILE, SPM_WEIGHTS, stage_main, write_json
from ctca.tracking import stage_run
from ctca.train import FitSpec, fit, model_config, save_model


def run(params: Params) -> None:
    t = params.train
    spec = FitSpec(depth=params.tam.depth, epochs=t.epochs, lr=t.lr, milestones=t.milestones, gamma=t.gamma,
                   weight_decay=t.weight_decay, seed=t.seed)
    logged = {s: params.section(s) for s in ("model", "tam", "loss", "train", "loader")}
    logged["spm"] = params.section("spm")
    with stage_run("train", logged, params.tracking.experiment) as run:
        result = fit(params, CLIPS_DIR, CKPT_DIR / "train", spec, init_spm=SPM_WEIGHTS,
                     on_epoch=lambda epoch, m: run.log_metrics(m, step=epoch))
        groups = {name: count_parameters(m) for name, m in result.model.module_groups().items()}
        meta = {"best_epoch": result.best_epoch, "best_dev_wer": result.best_dev_wer, "depth": spec.depth}
        save_model(MODEL_FILE, result.model, model_config(params, result.vocab.num_classes, spec.depth),
                   result.vocab, meta)
        summary = {"method": params.model.method, "depth": spec.depth, "epochs": spec.epochs,
                   "best_epoch": result.best_epoch, "best_dev_wer": result.best_dev_wer,
                   "parameters": sum(groups.values()), "parameters_by_module": groups,
                   "excluded_train_samples": result.excluded, "resumed_from_epoch": result.resumed_from}
        write_json(METRICS_DIR / "train.json", summary)
        write_json(METRICS_DIR / "train_history.json", result.history)
        run.log_metrics({"best_dev_wer": result.best_dev_wer, "best_epoch": result.best_epoch,
                         "parameters": summary["parameters"]})
        run.log_artifact(MODEL_FILE, "model")


if __name__ == "__main__":
    stage_main("train", run)
