"""Stage train: train the recognizer (model.method) from the pretrained SPM; keep the best dev epoch.

Also publishes the weight snapshots the iiw stage measures (the initial weights and every
``iiw.interval`` epochs), and registers the model in MLflow as a pyfunc (``ctca.serving``). With ``train.nproc > 1`` the stage relaunches itself under torchrun (DDP);
rank 0 writes every output.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics

from ctca.config import Params
from ctca.distributed import relaunch_under_torchrun, under_torchrun
from ctca.environment import fingerprint
from ctca.methods import method_class
from ctca.models.io import model_metadata, save_model
from ctca.models.recognizer import count_parameters, inference_parameters
from ctca.pipeline import (
    CKPT_DIR,
    CLIPS_DIR,
    FRAMES_DIR,
    MODEL_FILE,
    SNAPSHOTS_DIR,
    SPM_WEIGHTS,
    TRAIN_HISTORY,
    TRAIN_METRICS,
    TRAIN_SUMMARY,
    corpus_root,
    stage_main,
    write_json,
)
from ctca.serving import register_model
from ctca.tracking import stage_run
from ctca.train import fit

SHARED_SECTIONS = ("model", "tam", "train", "loader", "spm")
log = logging.getLogger(__name__)


def publish_snapshots(snapshots) -> None:
    """The checkpoint folder's snapshots become the stage's output (hard links where possible)."""
    shutil.rmtree(SNAPSHOTS_DIR, ignore_errors=True)
    SNAPSHOTS_DIR.mkdir(parents=True)
    for path in snapshots:
        try:
            os.link(path, SNAPSHOTS_DIR / path.name)
        except OSError:
            shutil.copy2(path, SNAPSHOTS_DIR / path.name)


def run(params: Params) -> None:
    if params.train.nproc > 1 and not under_torchrun():
        relaunch_under_torchrun(params.train.nproc, "stages.train")
        return
    kwargs = {"clips_dir": CLIPS_DIR, "ckpt_dir": CKPT_DIR / "train", "init_spm": SPM_WEIGHTS,
              "snapshot_every": params.iiw.interval}
    if int(os.environ.get("RANK", "0")) != 0:  # other DDP ranks train their shards; rank 0 reports
        fit(params, **kwargs)
        return
    method = method_class(params.model.method)
    logged = {s: params.section(s) for s in dict.fromkeys((*SHARED_SECTIONS, *method.sections))}
    logged["iiw.interval"] = params.iiw.interval
    # one MLflow run per training, even across a kill: fit opens it (run.start) once it knows whether it
    # resumes, continuing the run kept with the checkpoint; `run` is open from then on
    with stage_run("train", logged, params.tracking.experiment, resumable=True) as run:
        result = fit(params, **kwargs, on_start=run.start, on_epoch=lambda epoch, m: run.log_metrics(m, step=epoch))
        run.log_history(result.history)  # epochs checkpointed but not logged before a kill, if any
        model = result.model
        save_model(MODEL_FILE, model, result.config, result.vocab,
                   model_metadata(params, method=params.model.method, best_epoch=result.best_epoch,
                                  best_dev_wer=result.best_dev_wer, depth=params.tam.depth))
        publish_snapshots(result.snapshots)
        epoch_seconds = [h["epoch_seconds"] for h in result.history]
        metrics = {"parameters": inference_parameters(model), "best_epoch": result.best_epoch,
                   "epoch_seconds": statistics.fmean(epoch_seconds) if epoch_seconds else None}
        summary = {"method": params.model.method, "depth": params.tam.depth, "epochs": len(result.history),
                   "best_epoch": result.best_epoch, "best_dev_wer": result.best_dev_wer,
                   "parameters": metrics["parameters"],
                   "parameters_by_module": {n: count_parameters(m) for n, m in model.module_groups().items()},
                   "parameters_training_only": {n: count_parameters(m) for n, m in model.training_modules().items()},
                   "excluded_train_samples": result.excluded, "resumed_from_epoch": result.resumed_from,
                   "environment": fingerprint()}  # the report notes it when it differs from the report's
        write_json(TRAIN_METRICS, metrics)
        write_json(TRAIN_SUMMARY, summary)
        write_json(TRAIN_HISTORY, result.history)
        run.log_metrics({"best_dev_wer": result.best_dev_wer, "best_epoch": result.best_epoch,
                         "parameters": metrics["parameters"]})
        run.log_artifact(MODEL_FILE, "model")
        name, version, aliases = register_model(params, MODEL_FILE, corpus_root(params), CLIPS_DIR, FRAMES_DIR)
        log.info("registered %s version %d (aliases: %s)", name, version, ", ".join(aliases))


if __name__ == "__main__":
    stage_main("train", run)
