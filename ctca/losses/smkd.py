"""SMKD pieces (Hao, Min, Chen, ICCV 2021): CTC forced alignment, Gloss Segment Boundary Assignment
(GSBA), the label-smoothed frame-wise CE on its pseudo-labels, the radius schedule and label resampling.

The SMKD paper's equations were images and its GSBA code was never published, so everything here
beyond the paper's prose is our reconstruction (docs/methods.md#smkd-reconstruction-choices); each
docstring says which part.
Conventions: blank = 0; batched tensors are time-major ``(T, B, ·)`` with ``lengths`` (B,).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ctca.losses.ctc import min_ctc_length


def ctc_forced_align(log_probs: torch.Tensor, labels: Sequence[int], blank: int = 0) -> list[int]:
    """Viterbi best path of one sequence over the CTC topology: argmax_{π ∈ B⁻¹(ℓ)} Σ_t log y_t^{π_t}.

    Extended sequence ℓ' = (blank, ℓ_1, blank, ℓ_2, …, ℓ_L, blank), S = 2L + 1 states. With
    δ_t(s) the best log-score of a prefix ending in state s at frame t:
        δ_0(0) = y_0(blank), δ_0(1) = y_0(ℓ_1), δ_0(s ≥ 2) = −∞
        δ_t(s) = log y_t(ℓ'_s) + max(δ_{t−1}(s), δ_{t−1}(s−1), δ_{t−1}(s−2) if ℓ'_s ≠ blank and ℓ'_s ≠ ℓ'_{s−2})
    and the path ends in state S−1 or S−2. Returns the label of every frame (blank for blank frames).
    Vectorised over the states; loops over T only. Ties go to the lowest predecessor/end index.

    log_probs (T, C): per-frame log-posteriors of one sequence (detached, computed in float64).
    Raises ValueError when T < len(ℓ) + adjacent repeats, or when no path has finite score.

    Hand-written because ``torchaudio.functional.forced_align`` has no build for this project's torch
    (2.13). It is the standard CTC Viterbi, not an algorithm from the SMKD paper; using it for the
    anchors is our choice (docs/methods.md#smkd-reconstruction-choices).
    """
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, C), got shape {tuple(log_probs.shape)}")
    lab = [int(c) for c in labels]
    if blank in lab:
        raise ValueError(f"labels must not contain the blank id {blank}: {lab}")
    t_len = log_probs.shape[0]
    needed = min_ctc_length(lab)
    if t_len < needed:
        raise ValueError(f"CTC alignment infeasible: T = {t_len} frames < {needed} needed for "
                         f"{len(lab)} labels with {needed - len(lab)} adjacent repeat(s)")
    if not lab:
        return [blank] * t_len
    lp = log_probs.detach().to("cpu", torch.float64)
    ext = torch.full((2 * len(lab) + 1,), blank, dtype=torch.long)
    ext[1::2] = torch.tensor(lab)
    n_states = ext.numel()
    skip_ok = torch.zeros(n_states, dtype=torch.bool)
    skip_ok[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    neg_inf = torch.tensor(float("-inf"), dtype=torch.float64)

    emit = lp[:, ext]  # (T, S)
    score = torch.full((n_states,), float("-inf"), dtype=torch.float64)
    score[:2] = emit[0, :2]
    back = torch.zeros(t_len, n_states, dtype=torch.long)  # 0 = stay, 1 = from s−1, 2 = from s−2
    for t in range(1, t_len):
        prev1 = torch.cat([neg_inf.view(1), score[:-1]])
        prev2 = torch.where(skip_ok, torch.cat([neg_inf.expand(2), score[:-2]]), neg_inf)
        best, arg = torch.stack([score, prev1, prev2]).max(dim=0)
        back[t] = arg
        score = best + emit[t]

    end_scores = score[-2:]
    if not bool(torch.isfinite(end_scores).any()):
        raise ValueError("CTC alignment infeasible: no path with finite log-probability")
    s = n_states - 2 + int(end_scores.argmax())
    states = [0] * t_len
    for t in range(t_len - 1, -1, -1):
        states[t] = s
        s -= int(back[t, s])
    return [int(ext[s]) for s in states]


def gsba(gcf: torch.Tensor, weight: torch.Tensor, labels: Sequence[int], radius: int,
         log_probs: torch.Tensor | None = None, blank: int = 0) -> torch.Tensor:
    """Gloss Segment Boundary Assignment for one video: frame-level pseudo-labels (T,) long.

    With ŵ_c = w_c / ‖w_c‖ and the sentence's classes K = set(ℓ):
        best[t] = argmax_{c ∈ K} cos(f_t, ŵ_c)
        anchors = {(t, c_t) : c_t ≠ blank}, c = ctc_forced_align(log_probs, ℓ)
        log_probs defaults to log_softmax(f_t · ŵ) (the contextual posteriors).
    Every anchor frame gets its class; then each anchor a expands backward and forward separately,
    k = 1 … radius, labelling frame t_a ± k with c_a while best[t_a ± k] = c_a and the frame is not
    claimed by another class, stopping at the first failure. Unreached frames stay blank.

    From the paper's GSBA section: anchors are CTC spikes, cosine of the GCF with the class weight,
    maximal among the sentence's classes, per-direction expansion up to a growing radius d, stop on
    failure. Ours (docs/methods.md#smkd-reconstruction-choices): forced-alignment anchors, unreached
    frames = blank, and all anchors are placed before any expansion, so an expansion never passes
    through or overwrites the spike of another class (placing anchors in turn would let an earlier
    anchor's expansion run through a later one of a different class).

    gcf (T, D) contextual features; weight (D, C) classifier with one column per class (normalised
    here); log_probs (T, C) optional. Computed without gradient; returned on gcf's device.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    t_len = gcf.shape[0]
    seg = [blank] * t_len
    lab = [int(c) for c in labels]
    if lab:
        with torch.no_grad():
            w_hat = F.normalize(weight.detach().float(), dim=0)
            feats = gcf.detach().float()
            classes = torch.tensor(sorted(set(lab)), device=w_hat.device)
            sim = F.normalize(feats, dim=-1) @ w_hat[:, classes]
            best = classes[sim.argmax(dim=-1)].tolist()
            if log_probs is None:
                log_probs = F.log_softmax(feats @ w_hat, dim=-1)
            path = ctc_forced_align(log_probs, lab, blank=blank)
        anchors = [(t, c) for t, c in enumerate(path) if c != blank]
        for t_a, c_a in anchors:
            seg[t_a] = c_a
        for t_a, c_a in anchors:
            for step in (-1, 1):
                for k in range(1, radius + 1):
                    t = t_a + step * k
                    if t < 0 or t >= t_len or best[t] != c_a or seg[t] not in (blank, c_a):
                        break
                    seg[t] = c_a
    return torch.tensor(seg, dtype=torch.long, device=gcf.device)


def label_smoothed_ce(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                      smoothing: float = 0.2, ignore_index: int = -100) -> torch.Tensor:
    """Frame-wise softmax CE with label smoothing, mean over the valid frames (SMKD Eq. 10's L_CE-LS).

    For a valid frame (t < length_b, target ≠ ignore_index), with p = softmax(z_{t,b}) and C classes:
        ℓ_{t,b} = −(1 − ε) log p_y − (ε / C) Σ_c log p_c
    i.e. CE against (1 − ε)·onehot(y) + ε/C, the semantics of ``F.cross_entropy(label_smoothing=ε)``.
    L = mean over valid frames; 0 (keeping the graph) when there is none. ε = 0.2 is the paper's; the
    averaging over frames (rather than a per-video sum) is our choice.

    logits (T, B, C); targets (T, B) long; lengths (B,).
    """
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
    t_len, _, n_cls = logits.shape
    steps = torch.arange(t_len, device=logits.device)[:, None]
    valid = (steps < lengths.to(logits.device)[None, :]) & (targets != ignore_index)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    logp = F.log_softmax(logits.float(), dim=-1)[valid]  # (N, C): invalid frames get zero gradient
    y = targets[valid].long()
    nll = -logp.gather(1, y[:, None]).squeeze(1)
    uniform = -logp.sum(dim=-1) / n_cls
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()


def gsba_radius(epoch: int, start: int, every: int) -> int:
    """Expansion radius d at ``epoch``: 0 (GSBA off) before ``start``, else 1 + ⌊(epoch − start) / every⌋.

    The paper says only that d starts at 1 and grows during training; the step form (start 30, every
    20 at the paper's 100-epoch scale) is ours (docs/methods.md#three-stage-schedule); the caller
    scales start/every.
    """
    if every <= 0:
        raise ValueError(f"every must be > 0, got {every}")
    return 0 if epoch < start else 1 + (epoch - start) // every


def resample_labels(labels: torch.Tensor, new_len: int) -> torch.Tensor:
    """Nearest-neighbour re-indexing of frame labels to ``new_len`` steps by relative position.

    out[i] = labels[⌊(i + ½) · T_old / new_len⌋] (the old frame containing new frame i's centre).
    Our approximation (docs/methods.md#smkd-reconstruction-choices): the exact rule re-indexes stored
    labels with the temporal augmentation's sampled frame indices; this maps pseudo-labels computed on
    the un-augmented clip onto a uniformly rescaled one without needing those indices.
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if new_len < 0:
        raise ValueError(f"new_len must be >= 0, got {new_len}")
    old_len = labels.numel()
    if old_len == 0 and new_len > 0:
        raise ValueError("cannot resample an empty label sequence to a non-empty one")
    idx = ((2 * torch.arange(new_len, device=labels.device) + 1) * old_len) // (2 * max(new_len, 1))
    return labels[idx]
