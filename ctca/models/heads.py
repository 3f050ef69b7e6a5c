"""Classifier heads: plain Linear, and SMKD's weight-normalised NormLinear (docs/methods.md#classifiers)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class NormLinear(nn.Module):
    """z = x · W_norm, with W ∈ R^{D×C} whose class columns are L2-normalised; no bias, no feature scaling.

    So z_c = ‖x‖ cos θ_c (SMKD Eq. 3). Xavier-uniform init with ReLU gain √2, as the VAC code's NormLinear.
    """

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_dim, num_classes))
        nn.init.xavier_uniform_(self.weight, gain=nn.init.calculate_gain("relu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ F.normalize(self.weight, dim=0)


def make_classifier(in_dim: int, num_classes: int, weight_norm: bool) -> nn.Module:
    return NormLinear(in_dim, num_classes) if weight_norm else nn.Linear(in_dim, num_classes)


def class_columns(classifier: nn.Module) -> torch.Tensor:
    """The classifier's class vectors as a (D, C) matrix (NormLinear: its weight; Linear: weight transposed)."""
    if isinstance(classifier, NormLinear):
        return classifier.weight
    if isinstance(classifier, nn.Linear):
        return classifier.weight.t()
    raise TypeError(f"no class vectors for {type(classifier).__name__}")
