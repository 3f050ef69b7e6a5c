"""CTC recognition loss with the reference convention, and explicit handling of infeasible samples.

Per sample: CTC summed over time (not length-normalised), blank = 0; mean over the batch. A sample
whose loss is not finite (e.g. a clip too short for its gloss sequence) is excluded from the mean
and counted, never silently turned into zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CtcResult:
    loss: torch.Tensor  # scalar: mean over the finite per-sample losses (0 with grad if none)
    per_sample: torch.Tensor  # (B,) detached
    nonfinite: int  # samples excluded from the mean


def ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, label_lengths: torch.Tensor) -> CtcResult:
    """L = mean_b [ -log p(l_b | x_b) ] over the samples b whose loss is finite.

    logits (T, B, C) unnormalised; lengths (B,); labels concatenated 1-D; label_lengths (B,).
    Infeasible samples (fewer output steps than glosses + adjacent repeats) are found from the
    lengths; torch's ``zero_infinity`` then keeps their gradient at exactly zero (indexing out an
    infinite loss alone would still back-propagate NaN). Their ``per_sample`` entry is +inf.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    labels, lengths, label_lengths = labels.cpu().long(), lengths.cpu().long(), label_lengths.cpu().long()
    per = F.ctc_loss(log_probs, labels, lengths, label_lengths, blank=0, reduction="none", zero_infinity=True)
    needed = torch.tensor([min_ctc_length(t.tolist()) for t in torch.split(labels, label_lengths.tolist())])
    bad = (lengths < needed) | ~torch.isfinite(per.detach().cpu())
    n_bad = int(bad.sum())
    good = ~bad.to(per.device)
    loss = per[good].mean() if bool(good.any()) else (log_probs.sum() * 0.0)
    reported = per.detach().clone()
    reported[bad.to(per.device)] = float("inf")
    return CtcResult(loss, reported, n_bad)


def min_ctc_length(label_ids: list[int] | tuple[int, ...]) -> int:
    """Shortest output length for which CTC is feasible: glosses + adjacent repeats (a blank between)."""
    return len(label_ids) + sum(1 for a, b in zip(label_ids, label_ids[1:], strict=False) if a == b)


def feasibility(store_split, pad: int, stride: int, model: torch.nn.Module) -> tuple[list[int], list[dict]]:
    """Indices of training clips CTC can learn from, and the excluded ones with the reason.

    Rule (documented in the README): a clip is excluded when, at its own length (before temporal
    augmentation), the model's output is shorter than its glosses plus adjacent repeats, or when it has
    no in-vocabulary gloss. Augmentation can still shorten a clip; such batches are counted as
    non-finite samples in the epoch metrics. (This is the rule that removes PHOENIX-2014's broken
    training sample: 16 frames for 16 glosses.)
    """
    keep, excluded = [], []
    for i, meta in enumerate(store_split.metas):
        padded = math.ceil(meta.n_frames / stride) * stride + 2 * pad
        out_len = int(model.output_lengths(torch.tensor([padded]))[0])
        need = min_ctc_length(meta.gloss_ids)
        if not meta.gloss_ids:
            excluded.append({"id": meta.id, "reason": "no in-vocabulary gloss"})
        elif out_len < need:
            excluded.append({"id": meta.id, "reason": f"{meta.n_frames} frames give {out_len} CTC steps, "
                                                      f"{need} needed for {len(meta.gloss_ids)} glosses"})
        else:
            keep.append(i)
    return keep, excluded
