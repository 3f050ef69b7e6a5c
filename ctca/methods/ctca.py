"""``ctca``: the SPM-shared dual-path network trained with cross-context knowledge distillation (CCKD).

Loss: w_global·CTC(global) + w_local·CTC(local) + Σ over the switched-on terms k ∈ {l2g, g2l, rc, cmd}
of w_k·L_k (``loss.<k>`` switches, ``loss.weights.<k>`` weights). The network and every CCKD formula are
**reconstructed** from the paper's abstract and poster: docs/methods.md#ctca says what is ours.
"""

from __future__ import annotations

import torch
from torch import nn

from ctca.losses.cckd import (
    cmd_prototype_kl,
    g2l_correlation,
    l2g_infonce,
    ppmi_svd_embeddings,
    reconstruction,
)
from ctca.losses.distill import seq_kd
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

    def model_config(self, num_classes: int) -> dict:
        ctca = self.params.ctca
        return {"arch": "dual_path", "num_classes": num_classes, "spm_arch": self.params.spm.arch,
                "spm_channels": list(self.params.spm.channels), "hidden": self.params.tam.hidden,
                "dropout": self.params.tam.dropout, "local_kernels": list(ctca.local_kernels),
                "global_layers": ctca.global_layers, "downsample": ctca.downsample, "classifier": ctca.classifier,
                "inference": ctca.inference, "proj_dim": ctca.proj_dim, "rc_target": ctca.rc_target,
                "emb_dim": min(ctca.cmd_dim, num_classes - 1)}

    def build_model(self, num_classes: int) -> nn.Module:
        return DualPathRecognizer.from_config(self.model_config(num_classes))

    def prepare(self, model: nn.Module, data: TrainingData) -> None:
        """The linguistic prior of L_cmd: PPMI-SVD gloss embeddings of the training sentences."""
        emb = ppmi_svd_embeddings([m.gloss_ids for m in data.train_clips.metas], model.num_classes,
                                  window=self.params.ctca.cmd_window, dim=model.gloss_embeddings.shape[1])
        model.gloss_embeddings.copy_(emb)

    @property
    def forward_options(self) -> dict:
        return {"aux": frozenset(t for t in ("l2g", "rc") if t in self.cckd)}

    def extra_terms(self, model, out, batch):
        return {term: (self.cckd_term(term, model, out, batch), getattr(self.weights, term)) for term in self.cckd}

    def cckd_term(self, term: str, model: nn.Module, out, batch) -> torch.Tensor:
        feats, opts, lengths = out.features, self.params.ctca, out.lengths
        if term == "l2g":  # local -> global: the global path learns the local path's sign-wise context
            return l2g_infonce(feats["proj_global"], feats["proj_local"], lengths, tau=opts.tau_mi,
                               exclude=opts.exclude, mutual_information=opts.l2g_mi)
        if term == "g2l":  # global -> local: correlation among co-occurring signs
            if opts.g2l_mode == "correlation":
                return g2l_correlation(feats["global"], feats["local"], lengths, tau=opts.tau_omega,
                                       weighted=opts.g2l_omega)
            teacher = out.heads["global"]
            weights = None
            if opts.g2l_omega:  # emphasise sign-bearing frames: max non-blank posterior of the teacher
                weights = torch.softmax(teacher.detach().float(), -1)[..., 1:].amax(-1)
            return seq_kd(out.heads["local"], teacher, tau=opts.tau_kd, lengths=lengths, frame_weights=weights)
        if term == "rc":
            if opts.rc_target == "spm":
                return reconstruction(feats["rc_global"], feats["spm"], lengths)
            return (reconstruction(feats["rc_global"], feats["local"], lengths)
                    + reconstruction(feats["rc_local"], feats["global"], lengths))
        if term == "cmd":
            classes = torch.unique(batch.labels.to(out.logits.device))
            classes = classes[classes != 0]  # glosses present in the batch (never the blank)
            if classes.numel() == 0:
                return out.logits.new_zeros(()).float()
            return cmd_prototype_kl(class_columns(model.global_classifier), model.gloss_embeddings, classes,
                                    tau_t=opts.cmd_tau, tau_s=opts.cmd_tau)
        raise ValueError(f"unknown CCKD term {term!r}")

    def describe(self) -> list[str]:
        return [*super().describe(), *self.cckd]
