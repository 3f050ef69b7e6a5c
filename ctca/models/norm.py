"""Batch normalisation over the valid frames of a padded batch, and its SyncBatchNorm form for DDP."""

from __future__ import annotations

import torch
from torch import nn


def _masked(bn_forward, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``bn_forward`` over the valid frames of x (B, C, T) only; padded frames come out zero."""
    if valid is None:
        return bn_forward(x)
    rows = x.transpose(1, 2)[valid]  # (N_valid, C): the statistics run over these only
    out = x.new_zeros(x.shape[0], x.shape[2], x.shape[1])
    out[valid] = bn_forward(rows)
    return out.transpose(1, 2)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over the valid frames only: (B, C, T) with ``valid`` (B, T). Padded frames neither enter
    the batch statistics nor are normalised (they come out zero). Same parameters and buffers as
    ``nn.BatchNorm1d``; hand-written because torch has no masked batch norm."""

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return _masked(super().forward, x, valid)


class MaskedSyncBatchNorm(nn.SyncBatchNorm):
    """:class:`MaskedBatchNorm1d` with its statistics over the valid frames of every DDP process."""

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return _masked(super().forward, x, valid)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``nn.SyncBatchNorm.convert_sync_batchnorm``, except that a :class:`MaskedBatchNorm1d` becomes a
    :class:`MaskedSyncBatchNorm` (torch's would make it a plain SyncBatchNorm, which takes no mask).
    Parameters, buffers and state-dict keys are kept."""
    if isinstance(module, MaskedBatchNorm1d):
        out = MaskedSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        for name, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
            setattr(out, name, tensor)  # the same objects, as torch's conversion keeps them
        out.train(module.training)
        return out
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child))
    return module
