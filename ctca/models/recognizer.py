"""Recognizer assemblies: SPM -> TAM -> classifier -> CTC logits.

``baseline`` is CTC on the sequence head (the VAC-family "ResNet18 + TConv + BiLSTM" baseline, with
the SPM and chain depth set by params). VAC, SMKD and CTCA build on the same parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ctca.models.spm import SpatialPerception, build_spm
from ctca.models.tam import STRIDE, TemporalAggregation


@dataclass(frozen=True)
class RecognizerOutput:
    logits: torch.Tensor  # (T', B, C) sequence head
    lengths: torch.Tensor  # (B,)


class Recognizer(nn.Module):
    def __init__(self, spm: SpatialPerception, tam: TemporalAggregation, num_classes: int):
        super().__init__()
        self.spm = spm
        self.tam = tam
        self.classifier = nn.Linear(tam.out_dim, num_classes)
        self.num_classes = num_classes

    @property
    def frame_padding(self) -> int:
        return self.tam.frame_padding

    @property
    def stride(self) -> int:
        return STRIDE

    def module_groups(self) -> dict[str, nn.Module]:
        """Modules by role (for IIW and parameter counts): assigned by object, not by name prefix."""
        return {"spm": self.spm, "tam": self.tam, "classifier": self.classifier}

    def forward(self, video: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> RecognizerOutput:
        feats = self.spm(video, mask)
        tam = self.tam(feats, lengths)
        return RecognizerOutput(self.classifier(tam.features), tam.lengths)


def build_recognizer(method: str, num_classes: int, spm_arch: str, spm_channels: tuple[int, ...], depth: int,
                     hidden: int, dropout: float) -> Recognizer:
    if method != "baseline":
        raise ValueError(f"model.method={method!r} is not available; allowed: 'baseline'")
    spm = build_spm(spm_arch, spm_channels)
    return Recognizer(spm, TemporalAggregation(spm.out_dim, depth, hidden, dropout), num_classes)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
