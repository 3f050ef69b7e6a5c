"""The training loop: CTC training of a recognizer on the clip store, with resumable checkpoints.

A checkpoint (a plain dict: model, optimizer, scheduler, epoch, RNG states, history, best dev WER,
config fingerprint) is written atomically after every epoch; rerunning after an interruption resumes
from it when the fingerprint matches and starts over (saying so) when the configuration changed.
"""

from __future__ import annotations

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
from tqdm import tqdm

from ctca.config import Params, fingerprint, to_dict
from ctca.data.cache import ClipStore
from ctca.data.loader import AugmentConfig, ClipDataset, make_loader
from ctca.data.vocab import Vocabulary
from ctca.decode import make_decoder
from ctca.device import autocast, select_device
from ctca.evaluate import evaluate_split
from ctca.losses.ctc import ctc_loss, min_ctc_length
from ctca.models.recognizer import Recognizer, build_recognizer

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


@dataclass
class FitResult:
    model: Recognizer
    vocab: Vocabulary
    history: list[dict]
    best_epoch: int
    best_dev_wer: float
    excluded: list[dict] = field(default_factory=list)  # train samples infeasible for CTC, with the reason
    resumed_from: int | None = None


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


def model_config(params: Params, num_classes: int, depth: int) -> dict:
    return {
        "method": params.model.method,
        "num_classes": num_classes,
        "spm_arch": params.spm.arch,
        "spm_channels": list(params.spm.channels),
        "depth": depth,
        "hidden": params.tam.hidden,
        "dropout": params.tam.dropout,
    }


def recognizer_from_config(cfg: dict) -> Recognizer:
    return build_recognizer(cfg["method"], cfg["num_classes"], cfg["spm_arch"], tuple(cfg["spm_channels"]),
                            cfg["depth"], cfg["hidden"], cfg["dropout"])


def save_model(path: Path, model: Recognizer, cfg: dict, vocab: Vocabulary, meta: dict) -> None:
    atomic_save({"kind": "ctca.recognizer", "config": cfg, "model": model.state_dict(),
                 "vocab": list(vocab.glosses), "meta": meta}, path)


def load_model(path: Path, map_location: str | torch.device = "cpu") -> tuple[Recognizer, Vocabulary, dict]:
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "ctca.recognizer":
        raise ValueError(f"{path}: not a ctca model file (expected the output of the train stage)")
    model = recognizer_from_config(ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model, Vocabulary(tuple(ckpt["vocab"])), ckpt


def feasibility(store_split, pad: int, stride: int, model: Recognizer) -> tuple[list[int], list[dict]]:
    """Indices of training clips CTC can learn from, and the excluded ones with the reason.

    Rule (documented in the README): a clip is excluded when, at its own length (before temporal
    augmentation), the TAM output is shorter than its glosses plus adjacent repeats, or when it has
    no in-vocabulary gloss. Augmentation can still shorten a clip; such batches are counted as
    non-finite samples in the epoch metrics.
    """
    keep, excluded = [], []
    for i, meta in enumerate(store_split.metas):
        padded = math.ceil(meta.n_frames / stride) * stride + 2 * pad
        out_len = int(model.tam.output_lengths(torch.tensor([padded]))[0])
        need = min_ctc_length(meta.gloss_ids)
        if not meta.gloss_ids:
            excluded.append({"id": meta.id, "reason": "no in-vocabulary gloss"})
        elif out_len < need:
            excluded.append({"id": meta.id, "reason": f"{meta.n_frames} frames give {out_len} CTC steps, "
                                                      f"{need} needed for {len(meta.gloss_ids)} glosses"})
        else:
            keep.append(i)
    return keep, excluded


def fit(
    params: Params,
    clips_dir: Path,
    ckpt_dir: Path,
    spec: FitSpec,
    init_spm: Path | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train a recognizer with CTC; checkpoint every epoch in ``ckpt_dir``; select the best dev WER."""
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    device = select_device(params.train.device)
    store = ClipStore(clips_dir)
    vocab = Vocabulary.load(clips_dir / "vocab.json")
    seed_everything(spec.seed)
    cfg = model_config(params, vocab.num_classes, spec.depth)
    model = recognizer_from_config(cfg)
    if init_spm is not None:
        model.spm.load_state_dict(torch.load(init_spm, map_location="cpu", weights_only=True))
    model.to(device)
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
    train_set = ClipDataset(train_split.subset(keep), augment, train=True, seed=spec.seed)
    train_loader = make_loader(train_set, lc.batch_size, train=True, pad=pad, stride=stride,
                               num_workers=lc.num_workers, seed=spec.seed)
    dev_split = store.split("dev") if "dev" in store.splits else None
    decoder = make_decoder(1)  # greedy for model selection; the evaluate stage uses decode.beam_width

    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(spec.milestones), gamma=spec.gamma)

    # what the weights depend on: a checkpoint written under anything else is not resumed
    fp = fingerprint(cfg, params.loader, params.loss, params.train.amp, spec, code_digest(),
                     _file_digest(clips_dir / "index.json"), _file_digest(init_spm) if init_spm else "")
    last = ckpt_dir / "last.pt"
    history: list[dict] = []
    best = {"epoch": -1, "wer": float("inf"), "state": None}
    start_epoch, resumed_from = 0, None
    if last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        if ckpt.get("fingerprint") == fp:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            _set_rng_state(ckpt["rng"])
            history = ckpt["history"]
            best = ckpt["best"]
            start_epoch = resumed_from = ckpt["epoch"] + 1
            log.warning("resuming from %s: %d of %d epochs done", last, start_epoch, spec.epochs)
        else:
            log.warning("%s was written under another configuration; starting over", last)

    for epoch in range(start_epoch, spec.epochs):
        t0 = time.time()
        model.train()
        train_loader.set_epoch(epoch)  # augmentation and batch order depend only on (seed, epoch)
        total, n_samples, nonfinite, frames, skipped = 0.0, 0, 0, 0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{spec.epochs}", disable=not progress, leave=False)
        for batch in bar:
            batch = batch.to(device)
            with autocast(device, params.train.amp):
                out = model(batch.video, batch.mask, batch.lengths)
            res = ctc_loss(out.logits, out.lengths, batch.labels, batch.label_lengths)
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(res.loss):  # e.g. NaN activations: counted and reported, not stepped on
                skipped += 1
                nonfinite += len(batch.ids)
                continue
            res.loss.backward()
            optimizer.step()
            good = len(batch.ids) - res.nonfinite
            total += float(res.loss.detach()) * good
            n_samples += good
            nonfinite += res.nonfinite
            frames += int(batch.mask.sum())
            bar.set_postfix(loss=f"{float(res.loss.detach()):.3f}")
        scheduler.step()
        metrics = {"train_loss": total / max(n_samples, 1), "nonfinite_samples": nonfinite,
                   "skipped_batches": skipped,
                   "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": time.time() - t0,
                   "train_frames_per_second": frames / max(time.time() - t0, 1e-9)}
        if nonfinite:
            log.warning("epoch %d: %d samples had a non-finite CTC loss (excluded from the mean); %d batches "
                        "without any finite loss were not stepped on", epoch + 1, nonfinite, skipped)
        if dev_split is not None:
            dev = evaluate_split(model, dev_split, vocab, decoder, batch_size=params.evaluate.batch_size,
                                 pad=pad, stride=stride, crop=lc.crop, device=device, amp=params.train.amp)
            metrics.update({"dev_wer": dev.result.wer, "dev_del": dev.result.del_rate,
                            "dev_ins": dev.result.ins_rate, "dev_loss": dev.loss})
            if dev.result.wer < best["wer"]:
                best = {"epoch": epoch, "wer": dev.result.wer,
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        else:  # no dev split: the last epoch is the selected one
            best = {"epoch": epoch, "wer": float("nan"),
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        metrics["epoch"] = epoch + 1
        history.append(metrics)
        atomic_save({"fingerprint": fp, "epoch": epoch, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "rng": _rng_state(), "history": history, "best": best, "spec": asdict(spec),
                     "params": to_dict(params)}, last)
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics)
        log.info("epoch %d/%d %s", epoch + 1, spec.epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))

    model.load_state_dict(best["state"])
    return FitResult(model=model.cpu(), vocab=vocab, history=history, best_epoch=best["epoch"] + 1,
                     best_dev_wer=best["wer"], excluded=excluded, resumed_from=resumed_from)


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
