"""Cross-context knowledge distillation (CCKD) losses of CTCA: l2g, g2l, rc, cmd.

All formulas here are OUR RECONSTRUCTION (docs/methods.md#cckd-losses; the switches that replace them:
docs/methods.md#ctca-switches): the CTCA paper body was unavailable, only the loss names and one-line
descriptions are known. Features are time-major (T, B, D) with ``lengths`` (B,); every "mean over
frames" runs over valid frames only and teachers are always detached inside the functions. Blank = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ctca.losses.distill import valid_mask

REDUCTIONS = ("sample_sum", "frame_mean")


def reduce_frames(per_frame: torch.Tensor, batch: int, reduction: str) -> torch.Tensor:
    """One CCKD term's per-frame values (N,) over the valid frames of ``batch`` videos, as one scalar.

    ``sample_sum`` (the calibrated scale, docs/methods.md#cckd-scale): summed over each video's frames,
    then averaged over the ``batch`` videos, as CTC is (a per-sample sum over time, mean over the batch),
    so a term's gradient per frame is commensurate with CTC's whatever the clip length.
    ``frame_mean`` (the first reconstruction): the mean over all valid frames of the batch.
    """
    if reduction == "frame_mean":
        return per_frame.mean() if per_frame.numel() else per_frame.sum()
    if reduction == "sample_sum":
        return per_frame.sum() / max(batch, 1)
    raise ValueError(f"unknown CCKD reduction {reduction!r}; expected one of {REDUCTIONS}")


def l2g_infonce(
    g: torch.Tensor,
    l: torch.Tensor,  # noqa: E741 - name fixed by the spec (local projection)
    lengths: torch.Tensor,
    tau: float = 0.1,
    exclude: int = 4,
    mutual_information: bool = True,
    negatives: str = "batch",
    reduction: str = "frame_mean",
) -> torch.Tensor:
    """Local -> global guidance [reconstructed, docs/methods.md#l2g].

    g = phi_g(G), l = phi_l(L), (T, B, D). With s(i, j) = <g^_i, sg(l^_j)> / tau over valid frames, the
    per-frame value at anchor i is
        -s(i, i) + log sum_{j in {i} ∪ N(i)} exp s(i, j),
    N(i) = frames of the same video with |t_j - t_i| > ``exclude``, plus (``negatives="batch"``) all
    valid frames of the other videos; ``negatives="video"`` keeps the same video's frames only, so the
    negatives never differ by signer. ``mutual_information=False`` (the poster's Table 5 ablation
    "A - I(.,.)") drops the contrastive log-sum-exp and keeps the positive term, -s(i, i) + 1/tau =
    (1 - cos(g_i, sg(l_i))) / tau: the same alignment, at the same temperature and reduction
    (``frame_mean``: the first reconstruction's 1 - cos, without the temperature). Frames are combined
    by ``reduction`` (:func:`reduce_frames`).
    """
    if negatives not in ("batch", "video"):
        raise ValueError(f"unknown L_l2g negatives {negatives!r}; expected 'batch' or 'video'")
    mask = valid_mask(lengths.to(g.device), g.shape[0])
    t_idx, b_idx = mask.nonzero(as_tuple=True)
    gv = F.normalize(g[mask].float(), dim=-1)  # (N, D), valid frames in (t, b) order
    lv = F.normalize(l.detach()[mask].float(), dim=-1)
    if not mutual_information:  # the positive term alone, -s(i, i) + 1/tau (frame_mean: the first version's)
        scale = 1.0 if reduction == "frame_mean" else 1.0 / tau
        return reduce_frames(scale * (1.0 - (gv * lv).sum(-1)), g.shape[1], reduction)
    sim = gv @ lv.T / tau  # (N, N)
    same = b_idx[:, None] == b_idx[None, :]
    allowed = same & ((t_idx[:, None] - t_idx[None, :]).abs() > exclude)
    if negatives == "batch":
        allowed |= ~same
    allowed |= torch.eye(len(t_idx), dtype=torch.bool, device=g.device)
    per_frame = sim.masked_fill(~allowed, float("-inf")).logsumexp(-1) - sim.diagonal()
    return reduce_frames(per_frame, g.shape[1], reduction)


def g2l_correlation(
    g: torch.Tensor,
    l: torch.Tensor,  # noqa: E741
    lengths: torch.Tensor,
    tau: float = 0.1,
    weighted: bool = True,
    reduction: str = "frame_mean",
    form: str = "kl",
) -> torch.Tensor:
    """Global -> local correlation transfer [reconstructed, docs/methods.md#g2l].

    ``form="pairwise"`` (the revision): the per-frame value is
        sum_j ω_ij (<G^_i, G^_j> - <L^_i, L^_j>)^2,  ω_ij = softmax_j(<sg(G)^_i, sg(G)^_j> / tau),
    the squared difference of the two paths' frame correlations, weighted towards the frames the global
    path finds correlated (co-occurring signs); ``weighted=False`` makes ω_ij = 1/n, so the switch changes
    the weights only. ``form="kl"`` (the first reconstruction) follows.

    Per video, over its valid frames: w(X_i, .) = softmax_j(<x^_i, x^_j> / tau); the per-frame value is
        KL( w(sg(G)_i, .) || w(L_i, .) ).
    ``weighted=False`` (the poster's Table 5 ablation "D - w(.,.)"; our reading: uniform weights over
    frame pairs) replaces it by mean_j (<G^_i, G^_j> - <L^_i, L^_j>)^2, G detached. Frames are combined
    by ``reduction`` (:func:`reduce_frames`), except that ``frame_mean`` without ω keeps the first
    reconstruction's mean over all valid pairs of the batch, the 8x-rescaling switch the revision fixed.
    """
    rows = []
    pair_total, pairs = g.new_zeros((), dtype=torch.float32), 0
    for b, n in enumerate(lengths.tolist()):
        gh = F.normalize(g.detach()[:n, b].float(), dim=-1)
        lh = F.normalize(l[:n, b].float(), dim=-1)
        cos_g, cos_l = gh @ gh.T, lh @ lh.T
        if form == "pairwise":
            omega = F.softmax(cos_g / tau, dim=-1) if weighted else torch.full_like(cos_g, 1.0 / n)
            rows.append((omega * (cos_g - cos_l).pow(2)).sum(-1))
            continue
        if form != "kl":
            raise ValueError(f"unknown L_g2l form {form!r}; expected 'kl' or 'pairwise'")
        if weighted:
            log_p = F.log_softmax(cos_g / tau, dim=-1)
            log_q = F.log_softmax(cos_l / tau, dim=-1)
            pair_values = log_p.exp() * (log_p - log_q)  # row i: the terms of KL_i
        else:
            pair_values = (cos_g - cos_l).pow(2) / n  # row i sums to mean_j
        if reduction == "frame_mean":  # the first reconstruction's sums, in its order (its runs reproduce)
            pair_total = pair_total + (pair_values.sum() if weighted else (cos_g - cos_l).pow(2).sum())
            pairs += n if weighted else n * n
            continue
        rows.append(pair_values.sum(-1))
    if reduction == "frame_mean" and form == "kl":
        return pair_total / max(pairs, 1)
    if not rows:
        return g.new_zeros((), dtype=torch.float32)
    return reduce_frames(torch.cat(rows), g.shape[1], reduction)


def reconstruction(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor,
                   reduction: str = "frame_mean") -> torch.Tensor:
    """L_rc [reconstructed, docs/methods.md#rc]: per frame ||pred_t - sg(target_t)||^2 / dim, combined by
    ``reduction`` (:func:`reduce_frames`).

    pred (T, B, D) = D(G) (or any decoder output), target (T, B, D) = S (SPM features) or sg(L).
    """
    mask = valid_mask(lengths.to(pred.device), pred.shape[0])
    diff = pred[mask].float() - target.detach()[mask].float()
    if reduction == "frame_mean":
        return diff.pow(2).mean()
    return reduce_frames(diff.pow(2).mean(-1), pred.shape[1], reduction)


def ppmi_svd_embeddings(
    sentences: Sequence[Sequence[int]],
    num_classes: int,
    window: int = 2,
    dim: int = 256,
    blank: int = 0,
) -> torch.Tensor:
    """Gloss embeddings from PPMI + truncated SVD [reconstructed, docs/methods.md#cmd].

    n_{ij} = #(gloss j within ±``window`` positions of gloss i) over the sentences (symmetric);
    PPMI_{ij} = max(0, log(n_{ij} N / (n_i n_j))), N = sum n, n_i = sum_j n_{ij}, 0 where n_{ij} = 0.
    The blank row/column is removed, PPMI = U S V^T, E = U_{:, :k} sqrt(S_{:k}), k = min(dim, C - 1);
    each component's largest-|value| entry is made positive (deterministic). Returns (C, k) float32,
    blank row zero.
    """
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    for sent in sentences:
        ids = [int(x) for x in sent]
        for i, a in enumerate(ids):
            for j in range(max(0, i - window), min(len(ids), i + window + 1)):
                if j != i:
                    counts[a, ids[j]] += 1.0
    keep = np.array([c for c in range(num_classes) if c != blank])
    n = counts[np.ix_(keep, keep)]
    ppmi = np.zeros_like(n)
    total, rows, cols = n.sum(), n.sum(1), n.sum(0)
    nz = n > 0
    if total > 0:
        ppmi[nz] = np.maximum(0.0, np.log(n[nz] * total / np.outer(rows, cols)[nz]))
    k = min(dim, num_classes - 1)
    u, s, _ = np.linalg.svd(ppmi)
    emb = u[:, :k] * np.sqrt(s[:k])
    signs = np.sign(emb[np.abs(emb).argmax(0), np.arange(k)])
    emb = emb * np.where(signs == 0, 1.0, signs)
    out = np.zeros((num_classes, k), dtype=np.float32)
    out[keep] = emb
    return torch.from_numpy(out)


def cmd_prototype_kl(
    weight: torch.Tensor,
    emb: torch.Tensor,
    classes: torch.Tensor,
    tau_t: float = 0.1,
    tau_s: float = 0.1,
    blank: int = 0,
) -> torch.Tensor:
    """Cross-modality prototype-relation distillation [reconstructed, docs/methods.md#cmd].

    weight (D, C) classifier class columns w_c, emb (C, E) gloss embeddings e_c, classes (K,) glosses
    of the batch (blank excluded by the caller). Over the non-blank c' != c:
        A_{cc'} = softmax_{c'}(<e^_c, e^_{c'}> / tau_t),  B_{cc'} = softmax_{c'}(<w^_c, w^_{c'}> / tau_s),
        L = mean_{c in classes} KL(A_c || B_c).  Gradient flows only into ``weight``.
    """
    nonblank = torch.tensor([c for c in range(weight.shape[1]) if c != blank], device=weight.device)
    if len(nonblank) < 2:
        raise ValueError("cmd_prototype_kl needs at least two non-blank classes")
    pos = torch.searchsorted(nonblank, classes.to(weight.device).long())  # row of c among non-blank
    others = torch.arange(len(nonblank) - 1, device=weight.device)[None, :]
    others = others + (others >= pos[:, None]).long()  # (K, M - 1): columns c' != c

    def relation_log_probs(x: torch.Tensor, tau: float) -> torch.Tensor:
        xh = F.normalize(x.float(), dim=-1)  # (M, dim)
        sim = (xh[pos] @ xh.T / tau).gather(1, others)
        return F.log_softmax(sim, dim=-1)

    log_a = relation_log_probs(emb.detach()[nonblank], tau_t)
    log_b = relation_log_probs(weight.T[nonblank], tau_s)
    return (log_a.exp() * (log_a - log_b)).sum(-1).mean()


def cmd_feature_kl(
    z: torch.Tensor,
    emb: torch.Tensor,
    aligned: torch.Tensor,
    lengths: torch.Tensor,
    tau_t: float = 0.1,
    tau_s: float = 0.1,
    reduction: str = "sample_sum",
    blank: int = 0,
) -> torch.Tensor:
    """Cross-modality distillation into the global features [reconstructed, docs/methods.md#cmd].

    z (T, B, E) = φ_e(G), the global features projected to the embedding space; emb (C, E) the gloss
    embeddings e_c; aligned (T, B) the gloss of each frame (a CTC forced alignment; ``blank`` where the
    frame carries no gloss). Over every valid frame t with c = aligned_t != blank, and the non-blank c':
        A_{c c'} = softmax_{c'}(<e^_c, e^_{c'}> / tau_t),  B_{t c'} = softmax_{c'}(<z^_t, e^_{c'}> / tau_s),
    per-frame value KL(A_c || B_t), combined by ``reduction`` (:func:`reduce_frames`). The teacher row
    peaks at c itself and spreads over the glosses the linguistic prior relates to it, so the features
    learn which glosses to tell apart (inter-gloss discrimination) from the text modality. Gradient flows
    only into ``z``.
    """
    nonblank = torch.tensor([c for c in range(emb.shape[0]) if c != blank], device=z.device)
    valid = valid_mask(lengths.to(z.device), z.shape[0]) & (aligned.to(z.device) != blank)
    t_idx, b_idx = valid.nonzero(as_tuple=True)
    eh = F.normalize(emb.detach()[nonblank].float(), dim=-1)  # (M, E)
    rows = torch.searchsorted(nonblank, aligned.to(z.device)[valid].long())  # row of c among the non-blank
    log_a = F.log_softmax(eh[rows] @ eh.T / tau_t, dim=-1)  # (N, M)
    log_b = F.log_softmax(F.normalize(z[valid].float(), dim=-1) @ eh.T / tau_s, dim=-1)
    per_frame = (log_a.exp() * (log_a - log_b)).sum(-1)
    return reduce_frames(per_frame, z.shape[1], reduction)
