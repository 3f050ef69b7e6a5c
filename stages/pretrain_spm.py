"""Stage pretrain_spm: train the SPM under a shallow TAM (spm.pretrain_depth) and hand its weights to train.

CTCA's empirical finding: a shallow temporal module lets the spatial module be trained more thoroughly.
Pretraining is ``fit`` on params derived from ``params.yaml`` (``ctca.train.pretraining_params``): always
the plain CTC model (``baseline``), whatever ``model.method`` is, so all methods start from the same SPM
and changing the method does not rerun this stage.
"""

from __future__ import annotations

from ctca.checkpoint import atomic_save
from ctca.config import Params
from ctca.data.vocab import Vocabulary
from ctca.methods import make_method
from ctca.models.resnet import load_pretrained
from ctca.pipeline import CKPT_DIR, CLIPS_DIR, PRETRAIN_SPM_SUMMARY, SPM_WEIGHTS, stage_main, write_json
from ctca.tracking import stage_run
from ctca.train import fit, pretraining_params, seed_everything


def run(params: Params) -> None:
    pre = pretraining_params(params)
    logged = {"spm": params.section("spm"), "loader": params.section("loader"), "train.seed": params.train.seed}
    # resumable: fit opens the MLflow run (run.start), continuing the one kept with the checkpoint it resumes
    with stage_run("pretrain_spm", logged, params.tracking.experiment, resumable=True) as run:
        if pre.train.epochs == 0:  # no pretraining: hand over the seeded initialisation
            seed_everything(pre.train.seed)
            model = make_method(pre).build_model(Vocabulary.load(CLIPS_DIR / "vocab.json").num_classes)
            if params.spm.pretrained:  # the ImageNet initialisation, handed over as is
                load_pretrained(model.spm.backbone, params.spm.pretrained)
            atomic_save(model.spm.state_dict(), SPM_WEIGHTS)
            write_json(PRETRAIN_SPM_SUMMARY, {"epochs": 0})
            return
        result = fit(pre, CLIPS_DIR, CKPT_DIR / "pretrain_spm", on_start=run.start,
                     on_epoch=lambda epoch, m: run.log_metrics(m, step=epoch))
        run.log_history(result.history)  # epochs checkpointed but not logged before a kill, if any
        atomic_save(result.model.spm.state_dict(), SPM_WEIGHTS)
        write_json(PRETRAIN_SPM_SUMMARY, {"epochs": pre.train.epochs, "depth": pre.tam.depth,
                                          "best_epoch": result.best_epoch, "best_dev_wer": result.best_dev_wer,
                                          "excluded_train_samples": len(result.excluded), "history": result.history})
        run.log_metrics({"best_dev_wer": result.best_dev_wer})


if __name__ == "__main__":
    stage_main("pretrain_spm", run)
