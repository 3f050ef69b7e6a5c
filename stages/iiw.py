"""Stage iiw: information in weights (IIW) of the trained model's SPM, TAM and classifier, per epoch and final.

Measured on the weight snapshots the train stage published (the initial weights and every
``iiw.interval`` epochs) and on the selected model, all on the same fixed seeded training subset, with
θ0 from ``iiw.prior`` (docs/iiw.md). Only this stage reads the measurement keys of ``iiw``, so changing
them never retrains. Writes the headline numbers (DVC metrics), the per-epoch curves (DVC plots) and
the detail the report reads.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from ctca.config import Params
from ctca.cores import share_cores
from ctca.data.cache import ClipStore
from ctca.device import select_device
from ctca.iiw import IIW_GROUPS, iiw_prior, measure_iiw
from ctca.losses.ctc import feasibility
from ctca.models.io import build_recognizer, load_model
from ctca.models.recognizer import count_parameters
from ctca.pipeline import (
    CLIPS_DIR,
    IIW_CURVES,
    IIW_DETAIL,
    IIW_METRICS,
    MODEL_FILE,
    SNAPSHOTS_DIR,
    TRAIN_HISTORY,
    InputError,
    read_json,
    stage_main,
    write_json,
)
from ctca.tracking import stage_run

ESTIMATORS = {"fisher_group": "the paper's estimator: n * mean_i (dtheta . grad l_i)^2, per-sample Fisher",
              "official": "the reference code's: (sum_k dtheta . mean batch gradient / M)^2 per tensor"}


def snapshot_paths() -> list[Path]:
    """The published snapshots, epoch 0 (the initial weights) first."""
    paths = sorted(SNAPSHOTS_DIR.glob("epoch_*.pt"))
    if not paths or paths[0].name != "epoch_000.pt":
        raise InputError(f"{SNAPSHOTS_DIR}: no initial weights (epoch_000.pt); rerun the train stage")
    return paths


def load_snapshot(config: dict, path: Path) -> torch.nn.Module:
    """One snapshot's network (loaded one at a time: at paper scale they do not all fit in memory)."""
    model = build_recognizer(config)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def run(params: Params) -> None:
    share_cores(params.train.threads)  # 0 = share the cores with the ctca runs going on
    device = select_device(params.train.device)
    model, _, ckpt = load_model(MODEL_FILE, map_location="cpu")
    snapshots = snapshot_paths()
    store = ClipStore(CLIPS_DIR)
    train_split = store.split("train")
    keep, _ = feasibility(train_split, model.frame_padding, model.stride, model)  # the clips training used
    train_clips = train_split.subset(keep)
    theta0 = iiw_prior(load_snapshot(ckpt["config"], snapshots[0]), store.split("dev") if "dev" in store.splits
                       else None, params, device)
    with stage_run("iiw", {"iiw": params.section("iiw")}, params.tracking.experiment) as run:
        rows = []
        for path in snapshots[1:]:
            epoch = int(path.stem.split("_")[1])
            rep = measure_iiw(load_snapshot(ckpt["config"], path).to(device), train_clips, theta0, params, device)
            rows.append({"epoch": epoch, **rep.flat(), "iiw_seconds": rep.seconds})
            run.log_metrics(rep.flat(), step=epoch)
        rep = measure_iiw(model.to(device), train_clips, theta0, params, device)
        history = read_json(TRAIN_HISTORY)
        epoch_s = [h["epoch_seconds"] for h in history if "epoch_seconds" in h]
        iiw_s = [r["iiw_seconds"] for r in rows] or [rep.seconds]
        detail = {"estimators": ESTIMATORS, "prior": params.iiw.prior, "n_train": rep.n, "subset": rep.subset,
                  "skipped": rep.skipped,
                  "final": {g: rep.groups[g] for g in IIW_GROUPS if g in rep.groups},
                  "parameters": {g: count_parameters(m) for g, m in model.module_groups().items()},
                  "cost_ratio": statistics.fmean(iiw_s) / statistics.fmean(epoch_s) if epoch_s else None}
        write_json(IIW_METRICS, {f"iiw_{g}": rep.groups[g]["fisher_group"] for g in ("spm", "tam")})
        write_json(IIW_DETAIL, detail)
        write_json(IIW_CURVES, rows)
        run.log_metrics(rep.flat("final_iiw_"))  # not iiw_*: those hold the per-epoch curves (step = epoch)
        if detail["cost_ratio"] is not None:
            run.log_metrics({"iiw_cost_ratio": detail["cost_ratio"]})


if __name__ == "__main__":
    stage_main("iiw", run)
