"""``smkd``: a classifier shared by both heads, gloss segmentation on GSBA pseudo-labels, three stages.

Stage 1, epochs [0, ``smkd.gsba_start``): CTC on the sequence and conv heads, which share one classifier
(NormLinear by default). Stage 2, up to ``train.epochs``: plus w_seg·CE_LS(conv logits, pseudo-labels),
the labels recomputed every ``smkd.gsba_every`` epochs with a radius growing every ``smkd.radius_every``.
Stage 3: ``smkd.decouple_epochs`` more epochs with the classifiers untied, at the constant
``smkd.decouple_lr``. GSBA and the schedule are our reading of the paper's prose (docs/methods.md#smkd).
"""

from __future__ import annotations

import torch
from torch import nn

from ctca.config import ConfigError
from ctca.data.loader import ClipDataset, make_loader
from ctca.device import autocast
from ctca.losses.smkd import gsba, gsba_radius, label_smoothed_ce, resample_labels
from ctca.methods.base import Method, TrainingData, require_conv_head
from ctca.models.heads import class_columns


class SMKD(Method):
    name = "smkd"
    sections = ("loss", "smkd")
    ctc_heads = (("seq", "ctc_seq"), ("conv", "ctc_conv"))
    find_unused_parameters = True  # the conv classifier gets gradients only once untied

    def __init__(self, params):
        super().__init__(params)
        self.labels: dict[int, torch.Tensor] = {}  # GSBA pseudo-labels by training-clip index
        self.data: TrainingData | None = None

    @classmethod
    def check_params(cls, params) -> None:
        require_conv_head(params)
        if params.smkd.gsba_start >= params.train.epochs:
            raise ConfigError(f"smkd.gsba_start={params.smkd.gsba_start!r} is invalid; allowed: "
                              f"< train.epochs ({params.train.epochs})")

    def model_config(self, num_classes: int) -> dict:
        return {**super().model_config(num_classes), "conv_head": "shared",
                "weight_norm": self.params.smkd.weight_norm}

    def prepare(self, model: nn.Module, data: TrainingData) -> None:
        self.data = data

    def epochs(self) -> int:
        return self.params.train.epochs + self.params.smkd.decouple_epochs

    def lr_at(self, epoch: int) -> float:
        """The multistep schedule, then the decouple stage's constant lr."""
        if epoch >= self.params.train.epochs:
            return self.params.smkd.decouple_lr
        return super().lr_at(epoch)

    def on_epoch_start(self, model: nn.Module, epoch: int) -> dict[str, float]:
        smkd, main_epochs = self.params.smkd, self.params.train.epochs
        if epoch == main_epochs:
            model.untie()  # stage 3: decouple the classifiers
        radius = gsba_radius(epoch, smkd.gsba_start, smkd.radius_every) if epoch < main_epochs else 0
        if not radius or (epoch - smkd.gsba_start) % smkd.gsba_every:
            return {}
        self.labels, failed = self.pseudo_labels(model, radius)
        return {"gsba_radius": radius, "gsba_failed": failed}

    @torch.no_grad()
    def pseudo_labels(self, model: nn.Module, radius: int) -> tuple[dict[int, torch.Tensor], int]:
        """GSBA pseudo-labels of every training clip (eval mode, no augmentation), keyed by dataset index.

        Clips where the forced alignment is infeasible get none (counted). Returns (labels, failures).
        """
        data = self.data
        assert data is not None, "SMKD.prepare was not called"
        dataset = ClipDataset(data.train_clips, data.augment, train=False)
        was_training = model.training
        model.eval()
        loader = make_loader(dataset, data.eval_batch_size, train=False, pad=model.frame_padding, stride=model.stride)
        weight = class_columns(model.classifier).detach().float()
        labels: dict[int, torch.Tensor] = {}
        failures = 0
        for batch in loader:
            batch = batch.to(data.device)
            with autocast(data.device, data.amp):
                out = model(batch.video, batch.mask, batch.lengths)
            feats = out.features["seq"].float()
            log_probs = torch.log_softmax(out.heads["seq"].float(), -1)
            targets = torch.split(batch.labels.cpu(), batch.label_lengths.cpu().tolist())
            for b, idx in enumerate(batch.indices):
                n = int(out.lengths[b])
                try:
                    labels[idx] = gsba(feats[:n, b], weight, targets[b].tolist(), radius,
                                       log_probs=log_probs[:n, b]).cpu()
                except ValueError:
                    failures += 1
        model.train(was_training)
        return labels, failures

    def segmentation_targets(self, batch, lengths: torch.Tensor) -> torch.Tensor:
        """(T', B) frame targets of the gloss-segmentation loss; -100 where nothing is known."""
        t_max = int(lengths.max()) if len(lengths) else 0
        out = torch.full((t_max, len(batch.indices)), -100, dtype=torch.long)
        for b, idx in enumerate(batch.indices):
            if idx in self.labels:
                lab = resample_labels(self.labels[idx], int(lengths[b]))
                if self.params.smkd.unlabelled == "ignore":
                    lab = torch.where(lab == 0, torch.full_like(lab, -100), lab)
                out[:int(lengths[b]), b] = lab
        return out.to(lengths.device)

    def extra_terms(self, model, out, batch):
        if not self.labels:  # stage 1
            return {}
        targets = self.segmentation_targets(batch, out.lengths)
        seg = label_smoothed_ce(out.heads["conv"], targets, out.lengths, self.params.smkd.label_smoothing)
        return {"seg": (seg, self.weights.seg)}

    def describe(self) -> list[str]:
        return [*super().describe(), f"seg (from epoch {self.params.smkd.gsba_start + 1})"]

    def state_dict(self) -> dict:
        return {"seg_labels": dict(self.labels)}

    def load_state_dict(self, state: dict) -> None:
        self.labels = dict(state.get("seg_labels", {}))
