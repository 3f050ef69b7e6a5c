"""The training loop: CTC training of a recognizer on the clip store, with resumable checkpoints.

A checkpoint (a plain dict: model, optimizer, scheduler, epoch, RNG states, history, best dev WER,
config fingerprint) is written atomically after every epoch; rerunning after an interruption resumes
from it when the fingerprint matches and starts over (saying so) when the configuration changed.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ctca.config import Params, fingerprint, to_dict
from ctca.data.cache import ClipStore
from ctca.data.loader import AugmentConfig, ClipDataset, make_loader
from ctca.data.vocab import Vocabulary
from ctca.decode import make_decoder
from ctca.device import autocast, select_device
from ctca.distributed import all_reduce_sum, barrier, init_distributed, shutdown, wrap_model
from ctca.evaluate import evaluate_split, resolve_protocol
from ctca.iiw import IIWReport, ctc_iiw, group_tensors, iiw_subset, snapshot
from ctca.losses.cckd import ppmi_svd_embeddings
from ctca.losses.ctc import ctc_loss, min_ctc_length
from ctca.losses.objective import Objective
from ctca.losses.smkd import gsba, gsba_radius, resample_labels
from ctca.models.heads import class_columns
from ctca.models.recognizer import build_recognizer
from ctca.models.resnet import load_pretrained

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitSpec:
    """What one training run does (the pretraining and the main training differ only here)."""

    depth: int
    epochs: int
    lr: float
    milestones: tuple[int, ...] = ()
    gamma: float = 0.2
    weight_decay: float = 1e-4
    seed: int = 0
    method: str = "baseline"
    iiw: bool = False  # per-epoch IIW (params.iiw.interval) of the model's module groups
    extra_epochs: int = 0  # SMKD's decouple stage: epochs after ``epochs`` at the constant ``extra_lr``
    extra_lr: float = 0.0


@dataclass
class FitResult:
    model: nn.Module
    vocab: Vocabulary
    history: list[dict]
    best_epoch: int
    best_dev_wer: float
    excluded: list[dict] = field(default_factory=list)  # train samples infeasible for CTC, with the reason
    resumed_from: int | None = None
    theta0: dict[str, torch.Tensor] = field(default_factory=dict)  # IIW prior mean: the initial weights


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: object, path: Path) -> None:
    """torch.save through a temporary file, so a kill mid-write never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def model_config(params: Params, num_classes: int, depth: int, method: str | None = None) -> dict:
    """Everything needed to rebuild the network (saved with the model)."""
    method = method or params.model.method
    cfg = {
        "method": method,
        "num_classes": num_classes,
        "spm_arch": params.spm.arch,
        "spm_channels": list(params.spm.channels),
        "depth": depth,
        "hidden": params.tam.hidden,
        "dropout": params.tam.dropout,
    }
    if method == "smkd":
        cfg["weight_norm"] = params.smkd.weight_norm
    if method == "ctca":
        c = params.ctca
        cfg["ctca"] = {"local_kernels": list(c.local_kernels), "global_layers": c.global_layers,
                       "downsample": c.downsample, "classifier": c.classifier, "inference": c.inference,
                       "proj_dim": c.proj_dim, "rc_target": c.rc_target,
                       "emb_dim": min(c.cmd_dim, num_classes - 1)}
    return cfg


def save_model(path: Path, model: nn.Module, cfg: dict, vocab: Vocabulary, meta: dict,
               theta0: dict[str, torch.Tensor] | None = None) -> None:
    """The model file: config, weights, vocabulary, metadata and (for IIW) the initial weights θ0."""
    atomic_save({"kind": "ctca.recognizer", "config": cfg, "model": model.state_dict(),
                 "vocab": list(vocab.glosses), "meta": meta, "theta0": theta0 or {}}, path)


def load_model(path: Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, Vocabulary, dict]:
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "ctca.recognizer":
        raise ValueError(f"{path}: not a ctca model file (expected the output of the train stage)")
    model = build_recognizer(ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model, Vocabulary(tuple(ckpt["vocab"])), ckpt


def feasibility(store_split, pad: int, stride: int, model: nn.Module) -> tuple[list[int], list[dict]]:
    """Indices of training clips CTC can learn from, and the excluded ones with the reason.

    Rule (documented in the README): a clip is excluded when, at its own length (before temporal
    augmentation), the model's output is shorter than its glosses plus adjacent repeats, or when it has
    no in-vocabulary gloss. Augmentation can still shorten a clip; such batches are counted as
    non-finite samples in the epoch metrics. (This is the rule that removes PHOENIX-2014's broken
    training sample: 16 frames for 16 glosses.)
    """
    keep, excluded = [], []
    for i, meta in enumerate(store_split.metas):
        padded = math.ceil(meta.n_frames / stride) * stride + 2 * pad
        out_len = int(model.output_lengths(torch.tensor([padded]))[0])
        need = min_ctc_length(meta.gloss_ids)
        if not meta.gloss_ids:
            excluded.append({"id": meta.id, "reason": "no in-vocabulary gloss"})
        elif out_len < need:
            excluded.append({"id": meta.id, "reason": f"{meta.n_frames} frames give {out_len} CTC steps, "
                                                      f"{need} needed for {len(meta.gloss_ids)} glosses"})
        else:
            keep.append(i)
    return keep, excluded


def fit_spec(params: Params) -> FitSpec:
    """The main training run of ``params`` (SMKD adds its decouple epochs)."""
    t, method = params.train, params.model.method
    extra = params.smkd.decouple_epochs if method == "smkd" else 0
    return FitSpec(depth=params.tam.depth, epochs=t.epochs, lr=t.lr, milestones=t.milestones, gamma=t.gamma,
                   weight_decay=t.weight_decay, seed=t.seed, method=method, iiw=True, extra_epochs=extra,
                   extra_lr=params.smkd.decouple_lr if extra else 0.0)


def lr_at(epoch: int, spec: FitSpec) -> float:
    """Multistep schedule (lr·γ^#{milestones ≤ epoch}); SMKD's decouple epochs run at a constant lr."""
    if epoch >= spec.epochs:
        return spec.extra_lr
    return spec.lr * spec.gamma ** sum(1 for m in spec.milestones if m <= epoch)


@torch.no_grad()
def smkd_pseudo_labels(model: nn.Module, dataset: ClipDataset, radius: int, batch_size: int, device: torch.device,
                       amp: str) -> tuple[dict[int, torch.Tensor], int]:
    """GSBA pseudo-labels of every training clip (eval mode, no augmentation), keyed by dataset index.

    Clips where the forced alignment is infeasible get none (counted). Returns (labels, failures).
    """
    was_training = model.training
    model.eval()
    loader = make_loader(dataset, batch_size, train=False, pad=model.frame_padding, stride=model.stride)
    weight = class_columns(model.classifier).detach().float()
    labels_out: dict[int, torch.Tensor] = {}
    failures = 0
    for batch in loader:
        batch = batch.to(device)
        with autocast(device, amp):
            out = model(batch.video, batch.mask, batch.lengths)
        feats = out.features["seq"].float()
        log_probs = torch.log_softmax(out.heads["seq"].float(), -1)
        targets = torch.split(batch.labels.cpu(), batch.label_lengths.cpu().tolist())
        for b, idx in enumerate(batch.indices):
            n = int(out.lengths[b])
            try:
                labels_out[idx] = gsba(feats[:n, b], weight, targets[b].tolist(), radius,
                                       log_probs=log_probs[:n, b]).cpu()
            except ValueError:
                failures += 1
    model.train(was_training)
    return labels_out, failures


def seg_targets_for(batch, lengths: torch.Tensor, labels: dict[int, torch.Tensor], unlabelled: str) -> torch.Tensor:
    """(T', B) frame targets for the gloss-segmentation loss; -100 where nothing is known."""
    t_max = int(lengths.max()) if len(lengths) else 0
    out = torch.full((t_max, len(batch.indices)), -100, dtype=torch.long)
    for b, idx in enumerate(batch.indices):
        if idx in labels:
            n = int(lengths[b])
            lab = resample_labels(labels[idx], n)
            if unlabelled == "ignore":
                lab = torch.where(lab == 0, torch.full_like(lab, -100), lab)
            out[:n, b] = lab
    return out.to(lengths.device)


def measure_iiw(model: nn.Module, train_clips, theta0: dict[str, torch.Tensor], params: Params,
                device: torch.device | str = "cpu") -> IIWReport:
    """IIW of ``model`` on the fixed seeded subset (``iiw.*``) of its CTC-feasible training clips, un-augmented.

    The one definition shared by the per-epoch curves (``fit``) and the ``iiw`` stage, so both use the
    same videos; n = the number of training clips.
    """
    ic = params.iiw
    n = len(train_clips.metas)
    return ctc_iiw(model, ClipDataset(train_clips, AugmentConfig(crop=params.loader.crop), train=False),
                   iiw_subset(n, ic.subset, ic.seed), theta0, n_train=n, tensor_filter=ic.tensor_filter,
                   official_batch=ic.official_batch, official_k=ic.official_k, seed=ic.seed, device=device)


def heldout_prior(model: nn.Module, held_out, params: Params, seed: int,
                  device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """IIW prior mean θ0 by the PIB recipe: a copy of the initial model trained briefly (``iiw.prior_epochs``,
    CTC on its inference head) on held-out clips, snapshotted, then discarded. The global RNG is untouched,
    so training (and its exact resume) is the same as with the default prior."""
    prior = copy.deepcopy(model).to(device)
    lc = params.loader
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 7919)
        data = ClipDataset(held_out, AugmentConfig(crop=lc.crop, flip=lc.flip, temporal_rescale=lc.temporal_rescale,
                                                   min_frames=lc.min_frames, max_frames=lc.max_frames),
                           train=True, seed=seed + 7919)
        loader = make_loader(data, lc.batch_size, train=True, pad=prior.frame_padding, stride=prior.stride,
                             seed=seed + 7919)
        optimizer = torch.optim.Adam(prior.parameters(), lr=params.train.lr, weight_decay=params.train.weight_decay)
        prior.train()
        for epoch in range(params.iiw.prior_epochs):
            loader.set_epoch(epoch)
            for batch in loader:
                batch = batch.to(device)
                out = prior(batch.video, batch.mask, batch.lengths)
                loss = ctc_loss(out.logits, out.lengths, batch.labels, batch.label_lengths).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return {k: v.cpu() for k, v in snapshot(group_tensors(prior.module_groups(), params.iiw.tensor_filter)).items()}


def fit(
    params: Params,
    clips_dir: Path,
    ckpt_dir: Path,
    spec: FitSpec,
    init_spm: Path | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train a recognizer (``spec.method``); checkpoint every epoch in ``ckpt_dir``; select the best dev WER.

    Under ``torchrun`` every process trains its shard of each epoch (DDP); rank 0 alone evaluates,
    checkpoints and calls ``on_epoch``.
    """
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    ctx, device = init_distributed(select_device(params.train.device))
    store = ClipStore(clips_dir)
    vocab = Vocabulary.load(clips_dir / "vocab.json")
    seed_everything(spec.seed)
    cfg = model_config(params, vocab.num_classes, spec.depth, spec.method)
    model = build_recognizer(cfg)
    if init_spm is not None:
        model.spm.load_state_dict(torch.load(init_spm, map_location="cpu", weights_only=True))
    elif params.spm.pretrained:
        load_pretrained(model.spm.backbone, params.spm.pretrained)
    pad, stride = model.frame_padding, model.stride

    lc = params.loader
    augment = AugmentConfig(crop=lc.crop, flip=lc.flip, temporal_rescale=lc.temporal_rescale,
                            min_frames=lc.min_frames, max_frames=lc.max_frames)
    train_split = store.split("train")
    keep, excluded = feasibility(train_split, pad, stride, model)
    for e in excluded:
        log.warning("excluded from training: %s (%s)", e["id"], e["reason"])
    if not keep:
        raise RuntimeError(f"{clips_dir}: no training clip is usable for CTC ({len(excluded)} excluded)")
    train_clips = train_split.subset(keep)
    if spec.method == "ctca":  # the linguistic prior of L_cmd: PPMI-SVD gloss embeddings of the train sentences
        emb = ppmi_svd_embeddings([m.gloss_ids for m in train_clips.metas], vocab.num_classes,
                                  window=params.ctca.cmd_window, dim=cfg["ctca"]["emb_dim"])
        model.gloss_embeddings.copy_(emb)
    train_set = ClipDataset(train_clips, augment, train=True, seed=spec.seed)
    # IIW prior mean θ0 = the initial weights (pretrained SPM + seeded TAM init), identical across resumes
    ic = params.iiw
    if spec.iiw and ic.prior == "heldout" and "dev" in store.splits and ctx.is_main:
        theta0 = heldout_prior(model, store.split("dev"), params, spec.seed, device)
    else:
        theta0 = snapshot(group_tensors(model.module_groups(), ic.tensor_filter))
    iiw_on = spec.iiw and ic.interval > 0 and ctx.is_main
    train_loader = make_loader(train_set, lc.batch_size, train=True, pad=pad, stride=stride,
                               num_workers=lc.num_workers, seed=spec.seed, num_replicas=ctx.world_size, rank=ctx.rank)
    dev_split = store.split("dev") if "dev" in store.splits else None
    decoder = make_decoder(1)  # greedy for model selection; the evaluate stage uses decode.beam_width

    model.to(device)
    objective = Objective(params, model, method=spec.method)
    net = wrap_model(model, ctx, device, find_unused=spec.method in ("smkd", "ctca"))
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    total_epochs = spec.epochs + spec.extra_epochs

    # what the weights depend on: a checkpoint written under anything else is not resumed
    method_params = {s: params.section(s) for s in ("vac", "smkd", "ctca")}
    fp = fingerprint(cfg, params.loader, params.loss, method_params, params.iiw, params.train.amp, spec, code_digest(),
                     _file_digest(clips_dir / "index.json"), _file_digest(init_spm) if init_spm else "",
                     params.spm.pretrained if init_spm is None else "", ctx.world_size)
    last = ckpt_dir / "last.pt"
    history: list[dict] = []
    best = {"epoch": -1, "wer": float("inf"), "state": None}
    start_epoch, resumed_from = 0, None
    seg_labels: dict[int, torch.Tensor] = {}
    if last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        if ckpt.get("fingerprint") == fp:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            _set_rng_state(ckpt["rng"])
            history = ckpt["history"]
            best = ckpt["best"]
            seg_labels = ckpt.get("seg_labels", {})
            start_epoch = resumed_from = ckpt["epoch"] + 1
            log.warning("resuming from %s: %d of %d epochs done", last, start_epoch, total_epochs)
        else:
            log.warning("%s was written under another configuration; starting over", last)
    log.info("training %s: %s", spec.method, ", ".join(objective.describe()))

    sm = params.smkd
    for epoch in range(start_epoch, total_epochs):
        t0 = time.time()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch, spec)
        extra: dict[str, float] = {}
        if spec.method == "smkd":
            if epoch == spec.epochs:
                model.untie()  # stage 3: decouple the classifiers
            radius = gsba_radius(epoch, sm.gsba_start, sm.radius_every) if epoch < spec.epochs else 0
            if radius and (epoch - sm.gsba_start) % sm.gsba_every == 0:
                seg_labels, failed = smkd_pseudo_labels(model, ClipDataset(train_clips, augment, train=False),
                                                        radius, params.evaluate.batch_size, device, params.train.amp)
                extra.update({"gsba_radius": radius, "gsba_failed": failed})
        model.train()
        train_loader.set_epoch(epoch)  # augmentation and batch order depend only on (seed, epoch)
        sums: dict[str, float] = {}
        total, n_samples, nonfinite, frames, skipped = 0.0, 0, 0, 0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{total_epochs}", disable=not progress or not ctx.is_main,
                   leave=False)
        for batch in bar:
            batch = batch.to(device)
            with autocast(device, params.train.amp):
                out = net(batch.video, batch.mask, batch.lengths)
            seg = seg_targets_for(batch, out.lengths, seg_labels, sm.unlabelled) if seg_labels else None
            res = objective(out, batch, seg)
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(res.total):  # e.g. NaN activations: counted and reported, not stepped on
                skipped += 1
                nonfinite += len(batch.ids)
                if ctx.enabled:  # every rank must join the gradient all-reduce: step on a zero loss
                    (res.total.nan_to_num(0.0, 0.0, 0.0) * 0.0).backward()
                continue
            res.total.backward()
            optimizer.step()
            good = len(batch.ids) - res.nonfinite
            total += float(res.total.detach()) * good
            for k, v in res.parts.items():
                sums[k] = sums.get(k, 0.0) + v * good
            n_samples += good
            nonfinite += res.nonfinite
            frames += int(batch.mask.sum())
            bar.set_postfix(loss=f"{float(res.total.detach()):.3f}")
        keys = sorted(sums)
        reduced = all_reduce_sum([total, n_samples, nonfinite, frames, skipped] + [sums[k] for k in keys], ctx, device)
        total, n_samples, nonfinite, frames, skipped = reduced[:5]
        seconds = time.time() - t0
        metrics = {"train_loss": total / max(n_samples, 1), "nonfinite_samples": int(nonfinite),
                   "skipped_batches": int(skipped), "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": seconds,
                   "train_frames_per_second": frames / max(seconds, 1e-9), **extra}
        metrics.update({f"loss_{k}": v / max(n_samples, 1) for k, v in zip(keys, reduced[5:], strict=True)})
        if nonfinite and ctx.is_main:
            log.warning("epoch %d: %d samples had a non-finite CTC loss (excluded from the mean); %d batches "
                        "without any finite loss were not stepped on", epoch + 1, nonfinite, skipped)
        if ctx.is_main:
            if dev_split is not None:
                dev = evaluate_split(model, dev_split, vocab, decoder, batch_size=params.evaluate.batch_size,
                                     pad=pad, stride=stride, crop=lc.crop, device=device, amp=params.train.amp,
                                     protocol=resolve_protocol(params))
                metrics.update({"dev_wer": dev.result.wer, "dev_del": dev.result.del_rate,
                                "dev_ins": dev.result.ins_rate, "dev_loss": dev.loss})
                metrics.update({f"dev_wer_{h}": r.wer for h, r in dev.heads.items()})
                if dev.result.wer < best["wer"]:
                    best = {"epoch": epoch, "wer": dev.result.wer,
                            "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            else:  # no dev split: the last epoch is the selected one
                best = {"epoch": epoch, "wer": float("nan"),
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            if iiw_on and (epoch + 1) % ic.interval == 0:
                rep = measure_iiw(model, train_clips, theta0, params, device)
                metrics.update(rep.flat())
                metrics["iiw_seconds"] = rep.seconds
            metrics["epoch"] = epoch + 1
            history.append(metrics)
            atomic_save({"fingerprint": fp, "epoch": epoch, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "rng": _rng_state(), "history": history,
                         "best": best, "seg_labels": seg_labels, "spec": asdict(spec), "params": to_dict(params)},
                        last)
            if on_epoch is not None:
                on_epoch(epoch + 1, metrics)
            log.info("epoch %d/%d %s", epoch + 1, total_epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
        barrier(ctx)

    if ctx.is_main:
        model.load_state_dict(best["state"])
    shutdown(ctx)
    return FitResult(model=model.cpu(), vocab=vocab, history=history, best_epoch=best["epoch"] + 1,
                     best_dev_wer=best["wer"], excluded=excluded, resumed_from=resumed_from,
                     theta0=theta0)


def _file_digest(path: Path | None) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest() if path else ""


def code_digest() -> str:
    """Digest of the library's sources: a checkpoint written by other code (a fixed bug) is not resumed."""
    h = hashlib.sha1()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()
