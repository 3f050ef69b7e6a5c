"""The training objective of each ``model.method``: a weighted sum of small loss functions.

* ``baseline``: w_seq·CTC(seq head).
* ``vac``:      w_seq·CTC(seq) + w_conv·CTC(conv)  [VE] + w_va·SeqKD(conv ← sg(seq), τ)  [VA]   (methods.md §4.3)
* ``smkd``:     w_seq·CTC(seq) + w_conv·CTC(conv) with one shared classifier  [WS, Eq. 9 with α = 0.5 up to 2]
                + w_seg·CE_LS(conv logits, GSBA pseudo-labels) once gloss segmentation is active  (§5.2)
* ``ctca``:     w_seq·CTC(global) + w_conv·CTC(local)  [L_rec]
                + Σ over the switched-on CCKD terms w_k·L_k, k ∈ {l2g, g2l, rc, cmd}  (**reconstructed**, §6.3)

Every term's unweighted value is reported under its own name (``ctc_seq``, ``va``, ``l2g``, …) so the
MLflow run shows which terms were on. Teachers are detached inside each loss function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctca.config import Params
from ctca.losses.cckd import cmd_prototype_kl, g2l_correlation, l2g_infonce, reconstruction
from ctca.losses.ctc import ctc_loss
from ctca.losses.distill import seq_kd
from ctca.losses.smkd import label_smoothed_ce
from ctca.models.heads import class_columns
from ctca.models.recognizer import RecognizerOutput

# the CTC-trained heads of each method: (head name, weight key); the first is the primary one
CTC_HEADS = {
    "baseline": (("seq", "seq_ctc"),),
    "vac": (("seq", "seq_ctc"), ("conv", "conv_ctc")),
    "smkd": (("seq", "seq_ctc"), ("conv", "conv_ctc")),
    "ctca": (("global", "seq_ctc"), ("local", "conv_ctc")),
}
CCKD_TERMS = ("l2g", "g2l", "rc", "cmd")


@dataclass
class LossOutput:
    total: torch.Tensor
    parts: dict[str, float]  # unweighted value of every active term
    nonfinite: int  # samples whose primary CTC loss was infeasible (excluded from the mean)


class Objective:
    """Builds the loss of ``params.model.method`` for a model output and its batch."""

    def __init__(self, params: Params, model: torch.nn.Module, method: str | None = None):
        self.method = method or params.model.method
        self.w = params.loss.weights
        self.vac = params.vac
        self.smkd = params.smkd
        self.ctca = params.ctca
        self.model = model  # the unwrapped model (class vectors and gloss embeddings of L_cmd)
        self.cckd = tuple(t for t in CCKD_TERMS if getattr(params.loss, t)) if self.method == "ctca" else ()
        if hasattr(model, "active_aux"):
            model.active_aux = frozenset(t for t in ("l2g", "rc") if t in self.cckd)

    def describe(self) -> list[str]:
        """The active terms, for logs and the MLflow run."""
        terms = [f"ctc_{h}" for h, _ in CTC_HEADS[self.method]]
        if self.method == "vac":
            terms.append("va")
        if self.method == "smkd":
            terms.append("seg (from smkd.gsba_start)")
        return terms + list(self.cckd)

    def __call__(self, out: RecognizerOutput, batch, seg_targets: torch.Tensor | None = None) -> LossOutput:
        parts: dict[str, torch.Tensor] = {}
        total = out.logits.new_zeros(()).float()
        nonfinite = 0
        for i, (head, wkey) in enumerate(CTC_HEADS[self.method]):
            res = ctc_loss(out.heads[head], out.lengths, batch.labels, batch.label_lengths)
            parts[f"ctc_{head}"] = res.loss
            total = total + getattr(self.w, wkey) * res.loss
            if i == 0:
                nonfinite = res.nonfinite
        lengths = out.lengths
        if self.method == "vac":
            parts["va"] = seq_kd(out.heads["conv"], out.heads["seq"], tau=self.vac.tau,
                                 lengths=lengths if self.vac.mask_padding else None)
            total = total + self.w.va * parts["va"]
        if self.method == "smkd" and seg_targets is not None:
            parts["seg"] = label_smoothed_ce(out.heads["conv"], seg_targets, lengths, self.smkd.label_smoothing)
            total = total + self.w.seg * parts["seg"]
        if self.cckd:
            for term in self.cckd:
                parts[term] = self._cckd(term, out, batch)
                total = total + getattr(self.w, term) * parts[term]
        return LossOutput(total, {k: float(v.detach()) for k, v in parts.items()}, nonfinite)

    def _cckd(self, term: str, out: RecognizerOutput, batch) -> torch.Tensor:
        f, c, lengths = out.features, self.ctca, out.lengths
        if term == "l2g":  # local -> global: the global path learns the local path's sign-wise context
            return l2g_infonce(f["proj_global"], f["proj_local"], lengths, tau=c.tau_mi, exclude=c.exclude,
                               mutual_information=c.l2g_mi)
        if term == "g2l":  # global -> local: correlation among co-occurring signs
            if c.g2l_mode == "correlation":
                return g2l_correlation(f["global"], f["local"], lengths, tau=c.tau_omega, weighted=c.g2l_omega)
            teacher = out.heads["global"]
            weights = None
            if c.g2l_omega:  # emphasise sign-bearing frames: max non-blank posterior of the teacher
                weights = torch.softmax(teacher.detach().float(), -1)[..., 1:].amax(-1)
            return seq_kd(out.heads["local"], teacher, tau=self.vac.tau, lengths=lengths, frame_weights=weights)
        if term == "rc":
            if c.rc_target == "spm":
                return reconstruction(f["rc_global"], f["spm"], lengths)
            return reconstruction(f["rc_global"], f["local"], lengths) + reconstruction(f["rc_local"], f["global"],
                                                                                        lengths)
        if term == "cmd":
            classes = torch.unique(batch.labels.to(out.logits.device))
            classes = classes[classes != 0]  # glosses present in the batch (never the blank)
            if classes.numel() == 0:
                return out.logits.new_zeros(()).float()
            return cmd_prototype_kl(class_columns(self.model.global_classifier), self.model.gloss_embeddings,
                                    classes, tau_t=c.cmd_tau, tau_s=c.cmd_tau)
        raise ValueError(f"unknown CCKD term {term!r}")

