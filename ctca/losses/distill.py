"""Logit distillation: VAC's visual-alignment (VA) loss (docs/methods.md#vac).

Time-major logits (T, B, C), blank = 0. The teacher is always detached inside the function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def seq_kd(
    student: torch.Tensor,
    teacher: torch.Tensor,
    tau: float = 8.0,
    use_blank: bool = False,
    lengths: torch.Tensor | None = None,
    frame_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """L = tau^2 * mean_{t,b} KL( softmax(sg(Z^teacher_{t,b,c0:}) / tau) || softmax(Z^student_{t,b,c0:} / tau) ).

    c0 = 0 if ``use_blank`` else 1 (blank column dropped *before* the softmax). With ``lengths=None``
    the mean runs over all T*B rows, padding included, as VAC's ``batchmean`` (faithful to its code);
    with ``lengths`` (B,) only valid frames count (the ``vac.mask_padding`` option, off by default:
    docs/methods.md#vac). ``frame_weights`` (T, B) turns the mean into
    sum_{t,b} w_{t,b} KL_{t,b} / sum_{t,b} w_{t,b} (restricted to valid frames when ``lengths`` is
    given): the posterior-KD fallback of g2l [reconstructed, docs/methods.md#g2l].
    """
    first = 0 if use_blank else 1
    log_q = F.log_softmax(student[..., first:].float() / tau, dim=-1)
    log_p = F.log_softmax(teacher.detach()[..., first:].float() / tau, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (T, B)
    weights = torch.ones_like(kl) if frame_weights is None else frame_weights.detach().to(kl)
    if lengths is not None:
        weights = weights * valid_mask(lengths.to(kl.device), kl.shape[0]).to(kl)
    return tau**2 * (kl * weights).sum() / weights.sum()


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """Boolean (T, B) mask, True where t < lengths[b]."""
    return torch.arange(steps, device=lengths.device)[:, None] < lengths[None, :]
