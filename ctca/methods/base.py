"""The interface every training method implements, and the plain CTC behaviour the methods share.

The training loop (:func:`ctca.train.fit`) builds the network with :meth:`Method.model_config`, calls
:meth:`Method.prepare` once, runs :meth:`Method.epochs` epochs at :meth:`Method.lr_at`, calls
:meth:`Method.on_epoch_start` before each, computes :meth:`Method.loss` on every batch and stores
:meth:`Method.state_dict` in the checkpoint. It never branches on the method's name. A method is a plain
object, not an ``nn.Module``: model files hold only the network (``ctca.models``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ctca.config import ConfigError, Params
from ctca.data.cache import ClipSplit
from ctca.data.loader import AugmentConfig, Batch
from ctca.losses.ctc import ctc_loss
from ctca.models.recognizer import Recognizer, RecognizerOutput


@dataclass
class LossOutput:
    total: torch.Tensor
    parts: dict[str, float]  # unweighted value of every active term, by name (logged as loss_<name>)
    nonfinite: int  # samples whose primary CTC loss was infeasible (excluded from the mean)
    weighted: dict[str, torch.Tensor] = field(default_factory=dict)  # weight x term, still in the graph


def gradient_ratios(anchor: torch.Tensor, res: LossOutput) -> dict[str, float]:
    """How hard each loss term pulls on ``anchor`` (the SPM output) next to the recognition loss:
    ‖∂(w_k·L_k)/∂anchor‖ / ‖∂(Σ_ctc w·CTC)/∂anchor‖ for every term k of ``res.weighted`` (the CTC heads
    included, as their share). A term whose gradient never reaches the anchor (e.g. L_cmd on the class
    vectors) gets 0. One backward per term, to ``anchor`` only (the CTC gradient is their sum); the graph
    is kept for the step's own backward and nothing accumulates into ``.grad``.
    """
    grads = {}
    for k, v in res.weighted.items():
        grad = (torch.autograd.grad(v, anchor, retain_graph=True, allow_unused=True)[0]
                if v.requires_grad else None)
        grads[k] = torch.zeros_like(anchor) if grad is None else grad.float()
    ctc = [g for k, g in grads.items() if k.startswith("ctc_")]
    base = float(sum(ctc).norm()) if ctc else 0.0
    return {k: (float(g.norm()) / base if base > 0 else float("nan")) for k, g in grads.items()}


@dataclass(frozen=True)
class TrainingData:
    """What a method may use to prepare itself: the CTC-feasible training clips and how training reads them."""

    train_clips: ClipSplit
    augment: AugmentConfig
    device: torch.device
    amp: str
    eval_batch_size: int


def require_conv_head(params: Params) -> None:
    """A conv head sits on the TAM's convolutional part: a distinct sequence head needs depth >= 3."""
    if params.tam.depth < 3:
        raise ConfigError(f"tam.depth={params.tam.depth!r} is invalid; allowed: >= 3 with "
                          f"model.method={params.model.method} (its conv head and sequence head must differ)")


class Method:
    """Plain CTC training of a single-path recognizer (``baseline``); the other methods extend it.

    Class attributes: ``name`` (the ``model.method`` value); ``sections`` (the params sections the method
    reads besides ``tam``, ``spm``, ``loader`` and ``train``: logged with the run and part of the resume
    fingerprint); ``ctc_heads`` (``(head, loss.weights key)`` pairs trained with CTC, the first being
    the one whose infeasible samples are counted); ``find_unused_parameters`` (DDP: some parameters get
    no gradient in some steps).
    """

    name: ClassVar[str] = "baseline"
    sections: ClassVar[tuple[str, ...]] = ("loss",)
    ctc_heads: ClassVar[tuple[tuple[str, str], ...]] = (("seq", "ctc_seq"),)
    find_unused_parameters: ClassVar[bool] = False

    def __init__(self, params: Params):
        self.params = params
        self.weights = params.loss.weights

    @classmethod
    def check_params(cls, params: Params) -> None:
        """Rules across params sections that this method needs; raise ConfigError naming the key."""

    # -- the network -------------------------------------------------------------------------------
    def model_config(self, num_classes: int) -> dict[str, Any]:
        """Everything needed to rebuild the network (saved in the model file): ``ctca.models.recognizer``."""
        return {"arch": "recognizer", "num_classes": num_classes, "spm_arch": self.params.spm.arch,
                "spm_channels": list(self.params.spm.channels), "depth": self.params.tam.depth,
                "hidden": self.params.tam.hidden, "dropout": self.params.tam.dropout,
                "conv_head": "none", "weight_norm": False, "mask_padding": self.params.tam.mask_padding}

    def build_model(self, num_classes: int) -> nn.Module:
        """The network, built from :meth:`model_config` (so the model file rebuilds it exactly)."""
        return Recognizer.from_config(self.model_config(num_classes))

    # -- once, before training ---------------------------------------------------------------------
    def prepare(self, model: nn.Module, data: TrainingData) -> None:
        """Set up anything derived from the training data (no RNG may be consumed here)."""

    # -- the schedule ------------------------------------------------------------------------------
    def epochs(self) -> int:
        return self.params.train.epochs

    def lr_at(self, epoch: int) -> float:
        """Multistep: lr·γ^#{milestones ≤ epoch}; a pure function of the epoch, so resume is exact."""
        t = self.params.train
        return t.lr * t.gamma ** sum(1 for m in t.milestones if m <= epoch)

    def on_epoch_start(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Per-epoch work before the epoch's batches (``model`` unwrapped); returns metrics to log."""
        return {}

    # -- every step --------------------------------------------------------------------------------
    @property
    def forward_options(self) -> dict[str, Any]:
        """Keyword arguments of the network's forward in training (which training-only outputs to compute)."""
        return {}

    def loss(self, model: nn.Module, out: RecognizerOutput, batch: Batch) -> LossOutput:
        """Σ over ``ctc_heads`` of w·CTC(head), plus :meth:`extra_terms` each times its weight."""
        parts: dict[str, torch.Tensor] = {}
        weighted: dict[str, torch.Tensor] = {}
        total = out.logits.new_zeros(()).float()
        nonfinite = 0
        for i, (head, weight_key) in enumerate(self.ctc_heads):
            res = ctc_loss(out.heads[head], out.lengths, batch.labels, batch.label_lengths)
            parts[f"ctc_{head}"] = res.loss
            weighted[f"ctc_{head}"] = getattr(self.weights, weight_key) * res.loss
            total = total + weighted[f"ctc_{head}"]
            if i == 0:
                nonfinite = res.nonfinite
        for term, (value, weight) in self.extra_terms(model, out, batch).items():
            parts[term] = value
            weighted[term] = weight * value
            total = total + weighted[term]
        return LossOutput(total, {k: float(v.detach()) for k, v in parts.items()}, nonfinite, weighted)

    def extra_terms(self, model: nn.Module, out: RecognizerOutput,
                    batch: Batch) -> dict[str, tuple[torch.Tensor, float]]:
        """The method's terms beyond CTC: name -> (unweighted value, weight)."""
        return {}

    def describe(self) -> list[str]:
        """The loss terms, for the log."""
        return [f"ctc_{head}" for head, _ in self.ctc_heads]

    # -- the checkpoint ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Method state that must survive a resume (tensors, numbers, strings, lists and dicts only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def params_read(self) -> dict[str, Any]:
        """The params sections this method reads, by name (logged with the run; part of the fingerprint)."""
        return {s: self.params.section(s) for s in self.sections}
