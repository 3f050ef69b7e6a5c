"""Temporal aggregation module (TAM) as a ladder of chain depths.

The chain depth is the number of trainable temporal blocks between the SPM output and the CTC
classifier, i.e. how many layers the recognition gradient crosses before it reaches the SPM:

    depth 1: K5-P2 (+ a parameter-free P2, so the output rate stays T/4)
    depth 2: K5-P2-K5-P2                      (VAC's 1D-CNN alone)
    depth 3: K5-P2-K5-P2 + 1 BiLSTM layer
    depth 4: K5-P2-K5-P2 + 2 BiLSTM layers    (the VAC / SMKD network: the default)
    depth d > 4: K5-P2-K5-P2 + (d - 2) BiLSTM layers

K5 = Conv1d(kernel 5, stride 1, no padding) -> BN -> ReLU; P2 = MaxPool1d(2). Every depth has the
same 4x temporal downsampling, so CTC feasibility and decoding are comparable across the ladder.

As in the VAC reference code, the convolutions run on the padded batch, so the padding of shorter
videos enters the BatchNorm statistics of the K5 blocks in training (``tam.mask_padding: false``, the
default); ``tam.mask_padding: true`` keeps it out (:class:`~ctca.models.norm.MaskedBatchNorm1d` over each
block's valid output frames), and then no valid output depends on the padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ctca.models.norm import MaskedBatchNorm1d

KERNEL = 5
POOL = 2
STRIDE = 4  # total temporal downsampling of every ladder rung


@dataclass(frozen=True)
class TamOutput:
    features: torch.Tensor  # (T', B, hidden) time-major, as the reference code
    lengths: torch.Tensor  # (B,) valid output steps
    conv_features: torch.Tensor  # (T', B, hidden) output of the convolutional part (VAC's "conv head" input)


class TemporalAggregation(nn.Module):
    def __init__(self, in_dim: int, depth: int, hidden: int = 256, dropout: float = 0.3, mask_padding: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"tam.depth={depth} is invalid; allowed: >= 1")
        self.depth = depth
        n_conv = min(depth, 2)
        convs: list[nn.Module] = []
        c_in = in_dim
        for _ in range(n_conv):
            norm = MaskedBatchNorm1d(hidden) if mask_padding else nn.BatchNorm1d(hidden)  # same parameters
            convs += [nn.Conv1d(c_in, hidden, KERNEL), norm, nn.ReLU(inplace=True), nn.MaxPool1d(POOL)]
            c_in = hidden
        if n_conv == 1:
            convs.append(nn.MaxPool1d(POOL))
        self.conv = nn.Sequential(*convs)
        self.n_conv = n_conv
        self.mask_padding = mask_padding
        n_lstm = max(depth - 2, 0)
        self.lstm = (
            nn.LSTM(hidden, hidden // 2, num_layers=n_lstm, bidirectional=True,
                    dropout=dropout if n_lstm > 1 else 0.0)
            if n_lstm else None
        )
        self.out_dim = hidden

    @property
    def frame_padding(self) -> int:
        """Frames of context the valid convolutions eat on each side (VAC: 6 for K5-P2-K5-P2)."""
        pad, scale = 0, 1
        for _ in range(self.n_conv):
            pad += (KERNEL - 1) // 2 * scale
            scale *= POOL
        return pad

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        out = lengths
        for _ in range(self.n_conv):
            out = torch.div(out - (KERNEL - 1), POOL, rounding_mode="floor")
        if self.n_conv == 1:
            out = torch.div(out, POOL, rounding_mode="floor")
        return out

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> TamOutput:
        """x (B, L, D) SPM features, lengths (B,) -> time-major features (T', B, hidden)."""
        out_len = self.output_lengths(lengths)
        if self.mask_padding:
            h, valid_len = x.transpose(1, 2), lengths.to(x.device)
            for i in range(self.n_conv):
                conv_, norm, act, pool = self.conv[4 * i:4 * i + 4]
                h = conv_(h)
                valid_len = valid_len - (KERNEL - 1)  # each valid output frame reads valid input frames only
                valid = torch.arange(h.shape[2], device=h.device)[None, :] < valid_len[:, None]
                h = pool(act(norm(h, valid)))
                valid_len = torch.div(valid_len, POOL, rounding_mode="floor")
            conv = self.conv[4 * self.n_conv:](h).permute(2, 0, 1)  # depth 1: the extra P2
        else:
            conv = self.conv(x.transpose(1, 2)).permute(2, 0, 1)  # (T', B, hidden)
        feats = conv
        if self.lstm is not None:
            packed = pack_padded_sequence(conv, out_len.cpu(), enforce_sorted=False)
            out, _ = self.lstm(packed)
            feats, _ = pad_packed_sequence(out, total_length=conv.shape[0])
        return TamOutput(feats, out_len, conv)
