"""Stage iiw: information in weights (IIW) of the trained model's SPM, TAM and classifier, and its curves.

The final IIW is measured on the fixed seeded training subset that training used for its per-epoch
curves, with θ0 = the initial weights saved in the model file; the curves come from the training
history. Writes metrics/iiw.json (DVC metrics), metrics/iiw_curves.json (DVC plots) and PNG figures.
"""

from __future__ import annotations

import statistics

from ctca.config import Params
from ctca.data.cache import ClipStore
from ctca.device import select_device
from ctca.models.recognizer import count_parameters
from ctca.pipeline import (
    CLIPS_DIR,
    METRICS_DIR,
    MODEL_FILE,
    REPORTS_DIR,
    InputError,
    read_json,
    stage_main,
    write_json,
)
from ctca.report import IIW_GROUPS, plot_iiw_curves
from ctca.tracking import stage_run
from ctca.train import feasibility, load_model, measure_iiw


def curves(history: list[dict]) -> list[dict]:
    """Per-epoch IIW rows (epoch + every ``iiw_*`` value) from the training history."""
    return [{"epoch": h["epoch"], **{k: v for k, v in h.items() if k.startswith("iiw_")}}
            for h in history if any(k.startswith("iiw_") for k in h)]


def run(params: Params) -> None:
    device = select_device(params.train.device)
    model, vocab, ckpt = load_model(MODEL_FILE, map_location="cpu")
    theta0 = ckpt.get("theta0") or {}
    if not theta0:
        raise InputError(f"{MODEL_FILE}: no initial weights (theta0) saved; rerun the train stage")
    model.to(device)
    train_split = ClipStore(CLIPS_DIR).split("train")
    keep, _ = feasibility(train_split, model.frame_padding, model.stride, model)  # the clips training used
    history = read_json(METRICS_DIR / "train_history.json")
    rows = curves(history)
    with stage_run("iiw", {"iiw": params.section("iiw")}, params.tracking.experiment) as run:
        rep = measure_iiw(model, train_split.subset(keep), theta0, params, device)
        epoch_s = [h["epoch_seconds"] for h in history if "epoch_seconds" in h]
        iiw_s = [h["iiw_seconds"] for h in history if "iiw_seconds" in h]
        final = {g: {k: rep.groups[g][k] for k in ("fisher_group", "fisher_group_se", "fisher_blockdiag",
                                                     "official", "mu", "sigma2", "delta_norm") if k in rep.groups[g]}
                 for g in IIW_GROUPS if g in rep.groups}
        out = {"estimators": {"fisher_group": "paper Eq. 15: n * mean_i (dtheta . grad l_i)^2, per-sample Fisher",
                              "official": "reference code: (sum_k dtheta . mean batch gradient / M)^2 per tensor"},
               "n_train": rep.n, "subset": rep.subset, "skipped": rep.skipped, "final": final,
               "parameters": {g: count_parameters(m) for g, m in model.module_groups().items()},
               "cost_ratio": statistics.fmean(iiw_s) / statistics.fmean(epoch_s) if iiw_s and epoch_s else None}
        write_json(METRICS_DIR / "iiw.json", out)
        write_json(METRICS_DIR / "iiw_curves.json", rows)
        figures = plot_iiw_curves(rows, REPORTS_DIR / "figures")
        run.log_metrics(rep.flat())
        if out["cost_ratio"] is not None:
            run.log_metrics({"iiw_cost_ratio": out["cost_ratio"]})
        for f in figures:
            run.log_artifact(REPORTS_DIR / "figures" / f, "figures")


if __name__ == "__main__":
    stage_main("iiw", run)
