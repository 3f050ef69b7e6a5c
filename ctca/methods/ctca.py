"""``ctca``: the SPM-shared dual-path network trained with cross-context knowledge distillation (CCKD).

Loss: w_global·CTC(global) + w_local·CTC(local) + Σ over the switched-on terms k ∈ {l2g, g2l, rc, cmd}
of w_k·L_k (``loss.<k>`` switches, ``loss.weights.<k>`` weights). The network and every CCKD formula are
**reconstructed** from the paper's abstract and poster: docs/methods.md#ctca says what is ours.
"""

from __future__ import annotations

import torch
from torch import nn

from ctca.losses.cckd import (
    cmd_feature_kl,
    cmd_prototype_kl,
    g2l_correlation,
    l2g_infonce,
    ppmi_svd_embeddings,
    reconstruction,
)
from ctca.losses.distill import seq_kd, valid_mask
from ctca.losses.smkd import ctc_forced_align
from ctca.methods.base import Method, TrainingData
from ctca.models.dual_path import DualPathRecognizer
from ctca.models.heads import class_columns

CCKD_TERMS = ("l2g", "g2l", "rc", "cmd")


class CTCA(Method):
    name = "ctca"
    sections = ("loss", "ctca")
    ctc_heads = (("global", "ctc_global"), ("local", "ctc_local"))
    find_unused_parameters = True  # training-only modules of switched-off terms are never run

    def __init__(self, params):
        super().__init__(params)
        self.cckd = tuple(t for t in CCKD_TERMS if getattr(params.loss, t))
        self.ramp = 1.0  # the CCKD weights' share this epoch (ctca.cckd_warmup)

    def on_epoch_start(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """``ctca.cckd_warmup`` = N > 0: the CCKD weights grow linearly over the first N epochs,
        (epoch + 1) / N, while the teachers (the other path) are still untrained; a function of the
        epoch only, so a resumed run continues exactly."""
        warmup = self.params.ctca.cckd_warmup
        self.ramp = min(1.0, (epoch + 1) / warmup) if warmup > 0 else 1.0
        return {"cckd_ramp": self.ramp}

    def state_dict(self) -> dict:
        return {"ramp": self.ramp}  # a resume within an epoch does not rerun on_epoch_start

    def load_state_dict(self, state: dict) -> None:
        self.ramp = float(state.get("ramp", 1.0))

    def model_config(self, num_classes: int) -> dict:
        ctca = self.params.ctca
        return {"arch": "dual_path", "num_classes": num_classes, "spm_arch": self.params.spm.arch,
                "spm_channels": list(self.params.spm.channels), "hidden": self.params.tam.hidden,
                "dropout": self.params.tam.dropout, "local_kernels": list(ctca.local_kernels),
                "global_layers": ctca.global_layers, "downsample": ctca.downsample, "classifier": ctca.classifier,
                "inference": ctca.inference, "proj_dim": ctca.proj_dim, "rc_target": ctca.rc_target,
                "emb_dim": min(ctca.cmd_dim, num_classes - 1), "mask_padding": ctca.mask_padding,
                "global_path": ctca.global_path, "dilations": list(ctca.dilations), "cmd_target": ctca.cmd_target,
                "fusion": ctca.fusion}

    def build_model(self, num_classes: int) -> nn.Module:
        return DualPathRecognizer.from_config(self.model_config(num_classes))

    def prepare(self, model: nn.Module, data: TrainingData) -> None:
        """The linguistic prior of L_cmd: PPMI-SVD gloss embeddings of the training sentences."""
        emb = ppmi_svd_embeddings([m.gloss_ids for m in data.train_clips.metas], model.num_classes,
                                  window=self.params.ctca.cmd_window, dim=model.gloss_embeddings.shape[1])
        model.gloss_embeddings.copy_(emb)

    @property
    def forward_options(self) -> dict:
        return {"aux": frozenset(t for t in ("l2g", "rc", "cmd") if t in self.cckd)}

    def extra_terms(self, model, out, batch):
        return {term: (self.cckd_term(term, model, out, batch), self.ramp * getattr(self.weights, term))
                for term in self.cckd}

    def cckd_term(self, term: str, model: nn.Module, out, batch) -> torch.Tensor:
        feats, opts, lengths, red = out.features, self.params.ctca, out.lengths, self.params.ctca.reduction
        if term == "l2g":  # local -> global: the global path learns the local path's sign-wise context
            return l2g_infonce(feats["proj_global"], feats["proj_local"], lengths, tau=opts.tau_mi,
                               exclude=opts.exclude, mutual_information=opts.l2g_mi, negatives=opts.l2g_negatives,
                               reduction=red)
        if term == "g2l":  # global -> local: correlation among co-occurring signs
            if opts.g2l_mode == "correlation":
                return g2l_correlation(feats["global"], feats["local"], lengths, tau=opts.tau_omega,
                                       weighted=opts.g2l_omega, reduction=red, form=opts.g2l_form)
            teacher = out.heads["global"]
            weights = None
            if opts.g2l_omega:  # emphasise sign-bearing frames: max non-blank posterior of the teacher
                weights = torch.softmax(teacher.detach().float(), -1)[..., 1:].amax(-1)
            kd = seq_kd(out.heads["local"], teacher, tau=opts.tau_kd, lengths=lengths, frame_weights=weights)
            if red == "sample_sum":  # the weighted mean times the weight mass per video: a per-video sum
                mass = valid_mask(lengths.to(kd.device), teacher.shape[0]).float()
                mass = (mass * weights).sum() if weights is not None else mass.sum()
                kd = kd * mass / teacher.shape[1]
            return kd
        if term == "rc":
            if opts.rc_target == "spm":
                return reconstruction(feats["rc_global"], feats["shared"], lengths, reduction=red)
            return (reconstruction(feats["rc_global"], feats["local"], lengths, reduction=red)
                    + reconstruction(feats["rc_local"], feats["global"], lengths, reduction=red))
        if term == "cmd":
            if opts.cmd_target == "features":
                aligned = gloss_alignment(out.heads["global"], lengths, batch.labels, batch.label_lengths)
                return cmd_feature_kl(feats["proj_cmd"], model.gloss_embeddings, aligned, lengths,
                                      tau_t=opts.cmd_tau, tau_s=opts.cmd_tau, reduction=red)
            classes = torch.unique(batch.labels.to(out.logits.device))
            classes = classes[classes != 0]  # glosses present in the batch (never the blank)
            if classes.numel() == 0:
                return out.logits.new_zeros(()).float()
            return cmd_prototype_kl(class_columns(model.global_classifier), model.gloss_embeddings, classes,
                                    tau_t=opts.cmd_tau, tau_s=opts.cmd_tau)
        raise ValueError(f"unknown CCKD term {term!r}")

    def describe(self) -> list[str]:
        return [*super().describe(), *self.cckd]


def gloss_alignment(logits: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
                    label_lengths: torch.Tensor) -> torch.Tensor:
    """(T, B) gloss of every output frame: the CTC forced alignment (Viterbi) of each video's labels under
    the detached posteriors ``logits`` (T, B, C); blank (0) on blank and padded frames, and on the whole
    video when its labels do not fit (an augmented clip too short for them)."""
    aligned = torch.zeros(logits.shape[:2], dtype=torch.long)
    log_probs = torch.log_softmax(logits.detach().float(), -1).cpu()
    for b, (n, lab) in enumerate(zip(lengths.tolist(), torch.split(labels.cpu(), label_lengths.tolist()),
                                     strict=True)):
        try:
            aligned[:n, b] = torch.tensor(ctc_forced_align(log_probs[:n, b], lab.tolist()))
        except ValueError:
            continue
    return aligned.to(logits.device)
