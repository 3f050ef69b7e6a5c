"""Stage pretrain_spm: train the SPM under a shallow TAM (spm.pretrain_depth) and hand its weights to train.

CTCA's empirical finding: a shallow temporal module lets the spatial module be trained more thoroughly.
Pretraining always trains the plain CTC model (method ``baseline``), whatever ``model.method`` is, so all
methods start from the same SPM and changing the method does not rerun this stage.
"""

from __future__ import annotations

from ctca.config import Params
from ctca.models.recognizer import build_recognizer
from ctca.models.resnet import load_pretrained
from ctca.pipeline import CKPT_DIR, CLIPS_DIR, METRICS_DIR, SPM_WEIGHTS, stage_main, write_json
from ctca.tracking import stage_run
from ctca.train import FitSpec, atomic_save, fit, model_config, seed_everything


def run(params: Params) -> None:
    spec = FitSpec(depth=params.spm.pretrain_depth, epochs=params.spm.pretrain_epochs, lr=params.spm.pretrain_lr,
                   weight_decay=params.train.weight_decay, seed=params.train.seed)
    logged = {"spm": params.section("spm"), "loader": params.section("loader"), "train.seed": params.train.seed}
    with stage_run("pretrain_spm", logged, params.tracking.experiment) as run:
        if spec.epochs == 0:  # no pretraining: hand over the seeded initialisation
            from ctca.data.vocab import Vocabulary

            seed_everything(spec.seed)
            vocab = Vocabulary.load(CLIPS_DIR / "vocab.json")
            model = build_recognizer(model_config(params, vocab.num_classes, spec.depth, "baseline"))
            if params.spm.pretrained:  # the ImageNet initialisation, handed over as is
                load_pretrained(model.spm.backbone, params.spm.pretrained)
            atomic_save(model.spm.state_dict(), SPM_WEIGHTS)
            write_json(METRICS_DIR / "pretrain_spm.json", {"epochs": 0})
            return
        result = fit(params, CLIPS_DIR, CKPT_DIR / "pretrain_spm", spec,
                     on_epoch=lambda epoch, m: run.log_metrics(m, step=epoch))
        atomic_save(result.model.spm.state_dict(), SPM_WEIGHTS)
        metrics = {"epochs": spec.epochs, "depth": spec.depth, "best_epoch": result.best_epoch,
                   "best_dev_wer": result.best_dev_wer, "excluded_train_samples": len(result.excluded),
                   "history": result.history}
        write_json(METRICS_DIR / "pretrain_spm.json", metrics)
        run.log_metrics({"best_dev_wer": result.best_dev_wer})


if __name__ == "__main__":
    stage_main("pretrain_spm", run)
