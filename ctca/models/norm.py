"""Batch normalisation over the valid frames of a padded batch."""

from __future__ import annotations

import torch
from torch import nn


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over the valid frames only: (B, C, T) with ``valid`` (B, T). Padded frames neither enter
    the batch statistics nor are normalised (they come out zero). Same parameters and buffers as
    ``nn.BatchNorm1d``; hand-written because torch has no masked batch norm."""

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is None:
            return super().forward(x)
        rows = x.transpose(1, 2)[valid]  # (N_valid, C): the statistics run over these only
        out = x.new_zeros(x.shape[0], x.shape[2], x.shape[1])
        out[valid] = super().forward(rows)
        return out.transpose(1, 2)
