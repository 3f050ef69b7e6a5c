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


def l2g_infonce(
    g: torch.Tensor,
    l: torch.Tensor,  # noqa: E741 - name fixed by the spec (local projection)
    lengths: torch.Tensor,
    tau: float = 0.1,
    exclude: int = 4,
    mutual_information: bool = True,
) -> torch.Tensor:
    """Local -> global guidance [reconstructed, docs/methods.md#l2g].

    g = phi_g(G), l = phi_l(L), (T, B, D). With s(i, j) = <g^_i, sg(l^_j)> / tau over valid frames:
        L = mean_i [ -s(i, i) + log sum_{j in {i} ∪ N(i)} exp s(i, j) ],
    N(i) = frames of the same video with |t_j - t_i| > ``exclude`` plus all valid frames of the other
    videos. ``mutual_information=False`` (the poster's Table 5 ablation "A - I(.,.)"):
        L = mean_i [1 - cos(g_i, sg(l_i))].
    """
    mask = valid_mask(lengths.to(g.device), g.shape[0])
    gv = F.normalize(g[mask].float(), dim=-1)  # (N, D), valid frames in (t, b) order
    lv = F.normalize(l.detach()[mask].float(), dim=-1)
    if not mutual_information:
        return (1.0 - (gv * lv).sum(-1)).mean()
    t_idx, b_idx = mask.nonzero(as_tuple=True)
    sim = gv @ lv.T / tau  # (N, N)
    allowed = (b_idx[:, None] != b_idx[None, :]) | ((t_idx[:, None] - t_idx[None, :]).abs() > exclude)
    allowed |= torch.eye(len(t_idx), dtype=torch.bool, device=g.device)
    return (sim.masked_fill(~allowed, float("-inf")).logsumexp(-1) - sim.diagonal()).mean()


def g2l_correlation(
    g: torch.Tensor,
    l: torch.Tensor,  # noqa: E741
    lengths: torch.Tensor,
    tau: float = 0.1,
    weighted: bool = True,
) -> torch.Tensor:
    """Global -> local correlation transfer [reconstructed, docs/methods.md#g2l].

    Per video, over its valid frames: w(X_i, .) = softmax_j(<x^_i, x^_j> / tau);
        L = mean over valid frames i of KL( w(sg(G)_i, .) || w(L_i, .) ).
    ``weighted=False`` (the poster's Table 5 ablation "D - w(.,.)"; our reading: uniform weights over
    frame pairs):
        L = mean over valid pairs (i, j) of (<G^_i, G^_j> - <L^_i, L^_j>)^2, G detached.
    """
    total = g.new_zeros((), dtype=torch.float32)
    count = 0
    for b, n in enumerate(lengths.tolist()):
        gh = F.normalize(g.detach()[:n, b].float(), dim=-1)
        lh = F.normalize(l[:n, b].float(), dim=-1)
        cos_g, cos_l = gh @ gh.T, lh @ lh.T
        if weighted:
            log_p = F.log_softmax(cos_g / tau, dim=-1)
            log_q = F.log_softmax(cos_l / tau, dim=-1)
            total = total + (log_p.exp() * (log_p - log_q)).sum()
            count += n
        else:
            total = total + (cos_g - cos_l).pow(2).sum()
            count += n * n
    return total / max(count, 1)


def reconstruction(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """L_rc = mean over valid frames t of ||pred_t - sg(target_t)||^2 / dim [reconstructed, docs/methods.md#rc].

    pred (T, B, D) = D(G) (or any decoder output), target (T, B, D) = S (SPM features) or sg(L).
    """
    mask = valid_mask(lengths.to(pred.device), pred.shape[0])
    diff = pred[mask].float() - target.detach()[mask].float()
    return diff.pow(2).mean()


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
