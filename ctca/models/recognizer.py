"""Single-path recognizers: SPM -> temporal aggregation module (TAM) -> classifier(s) -> CTC logits.

:class:`Recognizer` is the network of ``baseline`` (one sequence head), ``vac`` (plus an independent
auxiliary classifier on the TAM's convolutional part, the "conv head") and ``smkd`` (the conv head
shares the sequence classifier until :meth:`Recognizer.untie`). CTCA's dual-path network is in
:mod:`ctca.models.dual_path`; ``ctca.models.io.build_recognizer`` rebuilds either from its config dict.

Every model returns a :class:`RecognizerOutput` whose ``logits`` is the head used at inference and whose
``heads`` holds every head (both are decoded and scored by ``evaluate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ctca.models.heads import make_classifier
from ctca.models.spm import SpatialPerception, build_spm
from ctca.models.tam import STRIDE, TemporalAggregation

CONV_HEADS = ("none", "separate", "shared")


@dataclass(frozen=True)
class RecognizerOutput:
    logits: torch.Tensor  # (T', B, C) the inference head
    lengths: torch.Tensor  # (B,) valid output steps
    heads: dict[str, torch.Tensor] = field(default_factory=dict)  # every head's logits, time-major
    # (T', B, D) features the losses use; "spm": the SPM output, where gradient ratios are measured
    features: dict[str, torch.Tensor] = field(default_factory=dict)


class Recognizer(nn.Module):
    """SPM -> TAM ladder -> sequence classifier, with an optional conv head.

    ``conv_head``: ``none``; ``separate`` (its own classifier, VAC); ``shared`` (the sequence classifier
    until :meth:`untie`, SMKD).
    """

    @classmethod
    def from_config(cls, cfg: dict) -> Recognizer:
        """The network of a config dict (``arch: recognizer``), as a training method writes it."""
        spm = build_spm(cfg["spm_arch"], tuple(cfg["spm_channels"]))
        tam = TemporalAggregation(spm.out_dim, cfg["depth"], cfg["hidden"], cfg["dropout"],
                                  mask_padding=cfg.get("mask_padding", False))
        return cls(spm, tam, cfg["num_classes"], cfg.get("conv_head", "none"),
                   weight_norm=cfg.get("weight_norm", False))

    def __init__(self, spm: SpatialPerception, tam: TemporalAggregation, num_classes: int,
                 conv_head: str = "none", weight_norm: bool = False):
        super().__init__()
        if conv_head not in CONV_HEADS:
            raise ValueError(f"Recognizer: conv_head={conv_head!r}; expected one of {', '.join(CONV_HEADS)}")
        self.spm = spm
        self.tam = tam
        self.classifier = make_classifier(tam.out_dim, num_classes, weight_norm)
        # separate: an independent auxiliary classifier. shared: the conv head uses ``classifier`` while
        # ``tied``; ``conv_classifier`` only receives gradients after untie() (Adam skips parameters without grad).
        self.conv_classifier = (make_classifier(tam.out_dim, num_classes, weight_norm)
                                if conv_head != "none" else None)
        self.register_buffer("tied", torch.tensor(conv_head == "shared"))
        self.num_classes = num_classes
        self.inference_head = "seq"

    @property
    def frame_padding(self) -> int:
        return self.tam.frame_padding

    @property
    def stride(self) -> int:
        return STRIDE

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.tam.output_lengths(lengths)

    def module_groups(self) -> dict[str, nn.Module]:
        """Modules used at inference, by role (IIW, parameter counts): assigned by object, not by name."""
        return {"spm": self.spm, "tam": self.tam, "classifier": self.classifier}

    def training_modules(self) -> dict[str, nn.Module]:
        """Modules that only serve training losses (not counted as inference parameters)."""
        return {"conv_classifier": self.conv_classifier} if self.conv_classifier is not None else {}

    @property
    def conv_head(self) -> nn.Module | None:
        if self.conv_classifier is None:
            return None
        return self.classifier if bool(self.tied) else self.conv_classifier

    @torch.no_grad()
    def untie(self) -> None:
        """SMKD's decouple stage: the conv head gets its own copy of the shared classifier."""
        if self.conv_classifier is None or not bool(self.tied):
            return
        self.conv_classifier.load_state_dict(self.classifier.state_dict())
        self.tied.fill_(False)

    def forward(self, video: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> RecognizerOutput:
        feats = self.spm(video, mask)
        tam = self.tam(feats, lengths)
        seq = self.classifier(tam.features)
        heads = {"seq": seq}
        conv_head = self.conv_head
        if conv_head is not None:
            heads["conv"] = conv_head(tam.conv_features)
        return RecognizerOutput(seq, tam.lengths, heads, {"seq": tam.features, "conv": tam.conv_features, "spm": feats})


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inference_parameters(model: nn.Module) -> int:
    """Parameters used at inference (shared modules counted once)."""
    seen = {id(p): p.numel() for m in model.module_groups().values() for p in m.parameters()}
    return sum(seen.values())
