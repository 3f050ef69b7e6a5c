"""The training loop: CTC training of a recognizer on the clip store, with resumable checkpoints.

``fit`` knows no method: the method object of ``model.method`` (ctca.methods) builds the network, owns
the loss, the schedule and the per-epoch hooks, and keeps its own state in the checkpoint. A checkpoint
(ctca.checkpoint) is written atomically after every epoch; rerunning after an interruption resumes
from it when the fingerprint of what the weights depend on matches, and starts over (saying so) when
the configuration or the code the run uses changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ctca.checkpoint import atomic_save, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ctca.codebase import code_digest, ctca_imports
from ctca.config import Params, fingerprint, to_dict
from ctca.cores import share_cores
from ctca.data.cache import ClipStore
from ctca.data.loader import AugmentConfig, ClipDataset, make_loader
from ctca.data.vocab import Vocabulary
from ctca.decode import make_decoder
from ctca.device import autocast, select_device
from ctca.distributed import all_reduce_sum, barrier, init_distributed, shutdown, wrap_model
from ctca.evaluate import evaluate_split, resolve_protocol
from ctca.losses.ctc import feasibility
from ctca.methods import make_method
from ctca.methods.base import Method, TrainingData, gradient_ratios
from ctca.models.resnet import load_pretrained

log = logging.getLogger(__name__)
# train.* keys that decide where and how fast a run goes, not what it learns: not part of the fingerprint
RUNTIME_KEYS = ("threads", "nproc", "device", "checkpoint_steps")
# every N-th step of an epoch (the first included), each loss term's gradient at the SPM output is measured
# against CTC's (methods.base.gradient_ratios) and logged per epoch as grad_ratio_<term>; single-process runs
# of methods with more than one term only
GRAD_RATIO_EVERY = 10


@dataclass
class FitResult:
    model: nn.Module
    config: dict  # the network's config (ctca.models.io.build_recognizer)
    vocab: Vocabulary
    history: list[dict]
    best_epoch: int
    best_dev_wer: float
    excluded: list[dict] = field(default_factory=list)  # train samples infeasible for CTC, with the reason
    resumed_from: int | None = None
    snapshots: list[Path] = field(default_factory=list)  # weight snapshots, epoch 0 (the initial weights) first


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pretraining_params(params: Params) -> Params:
    """The params of the SPM pretraining run, derived from ``params.yaml`` (one source of truth).

    A plain CTC model (``baseline``) at chain depth ``spm.pretrain_depth`` (``tam.mask_padding`` off, so that
    the switch does not rerun it), ``spm.pretrain_epochs`` epochs at the constant ``spm.pretrain_lr``;
    everything else (seed, weight decay, loader, AMP) as in training.
    """
    return dataclasses.replace(
        params, model=dataclasses.replace(params.model, method="baseline"),
        tam=dataclasses.replace(params.tam, depth=params.spm.pretrain_depth, mask_padding=False),
        train=dataclasses.replace(params.train, epochs=params.spm.pretrain_epochs, lr=params.spm.pretrain_lr,
                                  milestones=()))


def snapshot_path(ckpt_dir: Path, epoch: int) -> Path:
    return ckpt_dir / "snapshots" / f"epoch_{epoch:03d}.pt"


def run_code(method: Method) -> list[Path]:
    """The library files a training run executes: the loop's imports and the method's module with its imports."""
    return sorted(ctca_imports(Path(__file__)) | ctca_imports(Path(inspect.getfile(type(method)))))


def fit(
    params: Params,
    clips_dir: Path,
    ckpt_dir: Path,
    init_spm: Path | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    snapshot_every: int | None = None,
    on_start: Callable[[dict | None], dict] | None = None,
) -> FitResult:
    """Train ``params.model.method`` for its epochs; checkpoint every epoch in ``ckpt_dir``; keep the best dev WER.

    ``snapshot_every``: None writes no weight snapshots; 0 only the initial weights
    (``ckpt_dir/snapshots/epoch_000.pt``); N also the weights after every N-th epoch (the IIW curves are
    measured on them by the iiw stage). Under ``torchrun`` every process trains its shard of each epoch
    (DDP); rank 0 alone evaluates, checkpoints, snapshots and calls ``on_epoch`` and ``on_start``.

    ``on_start(extras)`` is called once fit knows whether it resumes, before the first new epoch: with the
    ``extras`` dict kept in the checkpoint it resumes from, or None when it starts over; the dict it returns
    is kept in every checkpoint written from then on (plain data only: strings, numbers, lists, dicts), so
    the caller can continue what it started before an interruption (the train stage: its MLflow run).
    ``on_epoch(epoch, metrics)`` is called for the epochs trained by this call only, never again for the
    epochs of the checkpoint it resumed from.
    """
    share_cores(params.train.threads)  # 0: share the cores with the ctca runs going on (ctca.cores)
    ctx, device = init_distributed(select_device(params.train.device))
    store = ClipStore(clips_dir)
    vocab = Vocabulary.load(clips_dir / "vocab.json")
    method = make_method(params)
    seed_everything(params.train.seed)
    cfg = method.model_config(vocab.num_classes)
    model = method.build_model(vocab.num_classes)
    if init_spm is not None:
        model.spm.load_state_dict(torch.load(init_spm, map_location="cpu", weights_only=True))
    elif params.spm.pretrained:
        load_pretrained(model.spm.backbone, params.spm.pretrained)
    pad, stride = model.frame_padding, model.stride

    loader_cfg = params.loader
    augment = AugmentConfig(crop=loader_cfg.crop, flip=loader_cfg.flip, temporal_rescale=loader_cfg.temporal_rescale,
                            min_frames=loader_cfg.min_frames, max_frames=loader_cfg.max_frames)
    train_split = store.split("train")
    keep, excluded = feasibility(train_split, pad, stride, model)
    for e in excluded:
        log.warning("excluded from training: %s (%s)", e["id"], e["reason"])
    if not keep:
        raise RuntimeError(f"{clips_dir}: no training clip is usable for CTC ({len(excluded)} excluded)")
    train_clips = train_split.subset(keep)
    method.prepare(model, TrainingData(train_clips, augment, device, params.train.amp, params.evaluate.batch_size))
    train_set = ClipDataset(train_clips, augment, train=True, seed=params.train.seed)
    train_loader = make_loader(train_set, loader_cfg.batch_size, train=True, pad=pad, stride=stride,
                               num_workers=loader_cfg.num_workers, seed=params.train.seed,
                               num_replicas=ctx.world_size, rank=ctx.rank, normalize=False)  # scaled by batch.to
    dev_split = store.split("dev") if "dev" in store.splits else None
    decoder = make_decoder(1)  # greedy for model selection; the evaluate stage uses decode.beam_width
    snapshots: list[Path] = []
    if snapshot_every is not None and ctx.is_main:
        snapshots.append(snapshot_path(ckpt_dir, 0))
        atomic_save(model.state_dict(), snapshots[0])

    model.to(device)
    net = wrap_model(model, ctx, device, find_unused=method.find_unused_parameters)
    optimizer = torch.optim.Adam(model.parameters(), lr=method.lr_at(0), weight_decay=params.train.weight_decay)
    total_epochs = method.epochs()

    # what the weights depend on: a checkpoint written under anything else is not resumed
    train_section = {k: v for k, v in params.section("train").items() if k not in RUNTIME_KEYS}
    fp = fingerprint(cfg, method.name, method.params_read(), params.loader, train_section, params.evaluate.batch_size,
                     code_digest(run_code(method)), _file_digest(clips_dir / "index.json"),
                     _file_digest(init_spm) if init_spm else "", params.spm.pretrained if init_spm is None else "",
                     ctx.world_size, snapshot_every)
    last = ckpt_dir / "last.pt"
    history: list[dict] = []
    best = {"epoch": -1, "wer": float("inf"), "state": None}
    start_epoch, resumed_from, partial = 0, None, None
    if last.is_file():
        ckpt = load_checkpoint(last)
        if ckpt.get("fingerprint") == fp:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            set_rng_state(ckpt["rng"])
            history = ckpt["history"]
            best = ckpt["best"]
            method.load_state_dict(ckpt["method_state"])
            start_epoch = resumed_from = ckpt["epoch"] + 1
            partial = ckpt.get("partial")  # written within an epoch (train.checkpoint_steps)
            if snapshot_every:
                snapshots += [snapshot_path(ckpt_dir, e) for e in range(1, start_epoch + 1) if e % snapshot_every == 0]
            log.warning("resuming from %s: %d of %d epochs done%s", last, start_epoch, total_epochs,
                        f", and {partial['step']} steps of the next" if partial else "")
        else:
            log.warning("%s was written under another configuration; starting over", last)
    extras = ckpt.get("extras", {}) if resumed_from is not None else {}
    if on_start is not None and ctx.is_main:
        extras = _plain_data(on_start(extras if resumed_from is not None else None) or {})
    log.info("training %s: %s", method.name, ", ".join(method.describe()))

    every = params.train.checkpoint_steps
    for epoch in range(start_epoch, total_epochs):
        t0 = time.time()
        for group in optimizer.param_groups:
            group["lr"] = method.lr_at(epoch)
        threads = share_cores(params.train.threads)  # a run left alone gets the cores back
        if partial is None:
            hook_metrics = method.on_epoch_start(model, epoch)
            sums: dict[str, float] = {}
            ratios: dict[str, list[float]] = {}  # term -> [sum of gradient ratios, measured steps]
            total, n_samples, nonfinite, frames, skipped, done = 0.0, 0, 0, 0, 0, 0
        else:  # resumed within this epoch: its start hook ran before (its state is in the checkpoint)
            hook_metrics, sums, ratios = partial["hook_metrics"], partial["sums"], partial.get("ratios", {})
            total, n_samples, nonfinite, frames, skipped = partial["counters"]
            if not ctx.is_main:  # the counters are all ranks' sums: counted once, on rank 0
                sums, (total, n_samples, nonfinite, frames, skipped) = {k: 0.0 for k in sums}, (0.0, 0, 0, 0, 0)
            done = partial["step"]
            t0 -= partial["seconds"]
            partial = None
        model.train()
        train_loader.set_epoch(epoch)  # augmentation and batch order depend only on (seed, epoch)
        train_loader.batch_sampler.start = done  # the batches a step checkpoint already covered are not loaded
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{total_epochs}", disable=not progress or not ctx.is_main,
                   leave=False, initial=done, total=len(train_loader))
        for step, batch in enumerate(bar, start=done + 1):
            if every and (step - 1) % every == 0 and step - 1 > done:
                # every N completed steps, before the next: a resume loads this and goes on from batch `step`
                counters = all_reduce_sum([total, n_samples, nonfinite, frames, skipped]
                                          + [sums[k] for k in sorted(sums)], ctx, device)
                if ctx.is_main:
                    save_checkpoint(last, fingerprint=fp, epoch=epoch - 1, model=model.state_dict(),
                                    optimizer=optimizer.state_dict(), rng=rng_state(), history=history, best=best,
                                    method_state=method.state_dict(), params=to_dict(params), extras=extras,
                                    partial={"step": step - 1, "seconds": time.time() - t0,
                                             "hook_metrics": hook_metrics, "counters": counters[:5], "ratios": ratios,
                                             "sums": dict(zip(sorted(sums), counters[5:], strict=True))})
                if ctx.enabled:  # rank 0 now holds every rank's sums, as a resume would: the others go on from 0
                    if ctx.is_main:
                        sums = dict(zip(sorted(sums), counters[5:], strict=True))
                        total, n_samples, nonfinite, frames, skipped = counters[:5]
                    else:
                        sums, (total, n_samples, nonfinite, frames, skipped) = {k: 0.0 for k in sums}, (0.0, 0, 0, 0, 0)
            batch = batch.to(device)
            with autocast(device, params.train.amp):
                out = net(batch.video, batch.mask, batch.lengths, **method.forward_options)
            res = method.loss(model, out, batch)
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(res.total):  # e.g. NaN activations: counted and reported, not stepped on
                skipped += 1
                nonfinite += len(batch.ids)
                if ctx.enabled:  # every rank must join the gradient all-reduce: step on a zero loss
                    (res.total.nan_to_num(0.0, 0.0, 0.0) * 0.0).backward()
                continue
            if (not ctx.enabled and (step - 1) % GRAD_RATIO_EVERY == 0 and len(res.weighted) > 1
                    and out.features.get("spm") is not None):  # one term alone (plain CTC) has nothing to compare
                for k, r in gradient_ratios(out.features["spm"], res).items():
                    if not math.isnan(r):  # NaN when no CTC gradient reaches the SPM: nothing to compare with
                        total_r, n_r = ratios.get(k, (0.0, 0))
                        ratios[k] = [total_r + r, n_r + 1]
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
                   "train_frames_per_second": frames / max(seconds, 1e-9), "torch_threads": threads, **hook_metrics}
        metrics.update({f"loss_{k}": v / max(n_samples, 1) for k, v in zip(keys, reduced[5:], strict=True)})
        metrics.update({f"grad_ratio_{k}": total_ratio / n for k, (total_ratio, n) in sorted(ratios.items()) if n})
        if nonfinite and ctx.is_main:
            log.warning("epoch %d: %d samples had a non-finite CTC loss (excluded from the mean); %d batches "
                        "without any finite loss were not stepped on", epoch + 1, nonfinite, skipped)
        if ctx.is_main:
            if dev_split is not None:
                dev = evaluate_split(model, dev_split, vocab, decoder, batch_size=params.evaluate.batch_size,
                                     pad=pad, stride=stride, crop=loader_cfg.crop, device=device,
                                     amp=params.train.amp, protocol=resolve_protocol(params),
                                     unreadable=store.unreadable("dev"))
                metrics.update({"dev_wer": dev.result.wer, "dev_del": dev.result.del_rate,
                                "dev_ins": dev.result.ins_rate, "dev_loss": dev.loss})
                metrics.update({f"dev_wer_{h}": r.wer for h, r in dev.heads.items()})
                if dev.result.wer < best["wer"]:
                    best = {"epoch": epoch, "wer": dev.result.wer,
                            "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            else:  # no dev split: the last epoch is the selected one
                best = {"epoch": epoch, "wer": float("nan"),
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            metrics["epoch"] = epoch + 1
            history.append(metrics)
            if snapshot_every and (epoch + 1) % snapshot_every == 0:
                snapshots.append(snapshot_path(ckpt_dir, epoch + 1))
                atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, snapshots[-1])
            save_checkpoint(last, fingerprint=fp, epoch=epoch, model=model.state_dict(),
                            optimizer=optimizer.state_dict(), rng=rng_state(), history=history, best=best,
                            method_state=method.state_dict(), params=to_dict(params), extras=extras)
            if on_epoch is not None:
                on_epoch(epoch + 1, metrics)
            log.info("epoch %d/%d %s", epoch + 1, total_epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
        barrier(ctx)

    if ctx.is_main:
        model.load_state_dict(best["state"])
    shutdown(ctx)
    return FitResult(model=model.cpu(), config=cfg, vocab=vocab, history=history, best_epoch=best["epoch"] + 1,
                     best_dev_wer=best["wer"], excluded=excluded, resumed_from=resumed_from, snapshots=snapshots)


def _plain_data(obj: object) -> object:
    """``obj`` if it is plain data that ``torch.load(..., weights_only=True)`` reads back; TypeError otherwise."""
    if isinstance(obj, dict):
        return {_plain_data(k): _plain_data(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain_data(v) for v in obj]
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise TypeError(f"checkpoint extras must be plain data (str, numbers, lists, dicts), not {type(obj).__name__}")


def _file_digest(path: Path | None) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest() if path else ""
