"""Hand-computed values and properties of the distillation losses (VAC's VA loss; reconstructed CCKD)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ctca.losses.cckd import (
    cmd_prototype_kl,
    g2l_correlation,
    l2g_infonce,
    ppmi_svd_embeddings,
    reconstruction,
)
from ctca.losses.distill import seq_kd


def softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    es = [math.exp(x - m) for x in xs]
    return [e / sum(es) for e in es]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)


def pad(x: torch.Tensor, extra: int = 3) -> torch.Tensor:
    """Append ``extra`` garbage time steps (T, B, ...) -> (T + extra, B, ...)."""
    return torch.cat([x, 100 * torch.randn(extra, *x.shape[1:])], dim=0)


# ---------------------------------------------------------------- seq_kd

TEACHER = [[5.0, 1.0, 2.0], [0.0, -1.0, 3.0]]  # 2 frames x 3 classes (column 0 = blank)
STUDENT = [[-3.0, 0.5, 0.0], [2.0, 2.0, 1.0]]


def as_logits(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).unsqueeze(1)  # (T, B=1, C)


@pytest.mark.parametrize("use_blank", [False, True])
def test_seq_kd_hand_value(use_blank: bool) -> None:
    tau, first = 2.0, 0 if use_blank else 1
    rows = [kl(softmax([z / tau for z in t[first:]]), softmax([z / tau for z in s[first:]]))
            for t, s in zip(TEACHER, STUDENT, strict=True)]
    expected = tau**2 * sum(rows) / 2
    got = seq_kd(as_logits(STUDENT), as_logits(TEACHER), tau=tau, use_blank=use_blank)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_seq_kd_frame_weights_and_lengths() -> None:
    tau = 2.0
    rows = [kl(softmax([z / tau for z in t[1:]]), softmax([z / tau for z in s[1:]]))
            for t, s in zip(TEACHER, STUDENT, strict=True)]
    w = torch.tensor([[0.25], [0.75]])
    got = seq_kd(as_logits(STUDENT), as_logits(TEACHER), tau=tau, frame_weights=w)
    assert got.item() == pytest.approx(tau**2 * (0.25 * rows[0] + 0.75 * rows[1]), rel=1e-5)
    only_first = seq_kd(as_logits(STUDENT), as_logits(TEACHER), tau=tau, lengths=torch.tensor([1]))
    assert only_first.item() == pytest.approx(tau**2 * rows[0], rel=1e-5)


def test_seq_kd_padding() -> None:
    torch.manual_seed(0)
    s, t, lengths = torch.randn(4, 2, 5), torch.randn(4, 2, 5), torch.tensor([4, 2])
    s[2:, 1], t[2:, 1] = 50 * torch.randn(2, 5), 50 * torch.randn(2, 5)
    masked = seq_kd(s, t, lengths=lengths)
    assert seq_kd(pad(s), pad(t), lengths=lengths).item() == pytest.approx(masked.item(), rel=1e-5)
    w = torch.rand(4, 2)
    weighted = seq_kd(s, t, lengths=lengths, frame_weights=w)
    assert seq_kd(pad(s), pad(t), lengths=lengths, frame_weights=pad(w).abs()).item() == pytest.approx(
        weighted.item(), rel=1e-5)
    # Without lengths (VAC-faithful) padded rows count: the value is the plain mean over all T*B rows.
    per_row = torch.stack([seq_kd(s[i:i + 1, b:b + 1], t[i:i + 1, b:b + 1]) for i in range(4) for b in range(2)])
    assert seq_kd(s, t).item() == pytest.approx(per_row.mean().item(), rel=1e-5)
    assert seq_kd(s, t).item() != pytest.approx(masked.item(), rel=1e-3)


def test_seq_kd_blank_column_ignored_and_zero_and_no_teacher_grad() -> None:
    torch.manual_seed(1)
    s, t = torch.randn(3, 2, 4, requires_grad=True), torch.randn(3, 2, 4, requires_grad=True)
    base = seq_kd(s, t)
    s2, t2 = s.detach().clone(), t.detach().clone()
    s2[..., 0], t2[..., 0] = 42.0, -17.0
    assert seq_kd(s2, t2).item() == pytest.approx(base.item(), rel=1e-6)
    assert seq_kd(s2, t2, use_blank=True).item() != pytest.approx(seq_kd(s, t, use_blank=True).item(), rel=1e-3)
    base.backward()
    assert t.grad is None and s.grad is not None and s.grad[..., 0].abs().max() == 0
    assert seq_kd(t.detach(), t.detach()).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- l2g_infonce

G3 = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]  # global projections of 3 frames, one video
L3 = [[2.0, 1.0], [1.0, 1.0], [0.0, 1.0]]  # local projections (teacher)


def infonce_by_hand(gs: list[list[float]], ls: list[list[float]], negatives: list[list[int]], tau: float) -> float:
    terms = []
    for i, neg in enumerate(negatives):
        s = {j: cos(gs[i], ls[j]) / tau for j in [i, *neg]}
        terms.append(-s[i] + math.log(sum(math.exp(v) for v in s.values())))
    return sum(terms) / len(terms)


@pytest.mark.parametrize(("exclude", "negatives"), [
    (0, [[1, 2], [0, 2], [0, 1]]),
    (1, [[2], [], [0]]),  # |t' - t| > 1: only frames 0 <-> 2
    (2, [[], [], []]),  # no negatives left: loss 0
])
def test_l2g_infonce_hand_value_one_video(exclude: int, negatives: list[list[int]]) -> None:
    g, loc = torch.tensor(G3).unsqueeze(1), torch.tensor(L3).unsqueeze(1)
    got = l2g_infonce(g, loc, torch.tensor([3]), tau=0.5, exclude=exclude)
    assert got.item() == pytest.approx(infonce_by_hand(G3, L3, negatives, 0.5), rel=1e-5, abs=1e-6)


def test_l2g_infonce_hand_value_two_videos_with_padding() -> None:
    # Video 0 has frames (0,0), (1,0); video 1 has only (0,1); (1,1) is padding.
    g = torch.tensor([[[1.0, 0.0], [1.0, 3.0]], [[0.0, 1.0], [9.0, -9.0]]])
    loc = torch.tensor([[[1.0, 1.0], [2.0, -1.0]], [[-1.0, 1.0], [-9.0, 9.0]]])
    gs = [[1.0, 0.0], [0.0, 1.0], [1.0, 3.0]]  # order: (0,0), (1,0), (0,1)
    ls = [[1.0, 1.0], [-1.0, 1.0], [2.0, -1.0]]
    negatives = [[2], [2], [0, 1]]  # exclude=4 removes same-video frames; other video's valid frames stay
    got = l2g_infonce(g, loc, torch.tensor([2, 1]), tau=0.1, exclude=4)
    assert got.item() == pytest.approx(infonce_by_hand(gs, ls, negatives, 0.1), rel=1e-5)
    again = l2g_infonce(pad(g), pad(loc), torch.tensor([2, 1]), tau=0.1, exclude=4)
    assert again.item() == pytest.approx(got.item(), rel=1e-6)


def test_l2g_exclude_removes_near_neighbours() -> None:
    torch.manual_seed(2)
    g, loc, lengths = torch.randn(6, 1, 4), torch.randn(6, 1, 4), torch.tensor([6])
    assert l2g_infonce(g, loc, lengths, exclude=5).item() == pytest.approx(0.0, abs=1e-6)

    def anchor0_grad(local: torch.Tensor, exclude: int) -> torch.Tensor:
        # Only the anchor-0 term depends on g_0, through l_0 and the negatives N(0) of anchor 0.
        g0 = g.clone().requires_grad_()
        l2g_infonce(g0, local, lengths, exclude=exclude).backward()
        return g0.grad[0, 0]

    base = anchor0_grad(loc, exclude=2)
    for t, is_negative in [(1, False), (2, False), (3, True), (5, True)]:
        moved = loc.clone()
        moved[t] = torch.randn(1, 4)
        assert torch.allclose(anchor0_grad(moved, exclude=2), base, atol=1e-6) is not is_negative
    moved = loc.clone()
    moved[1] = torch.randn(1, 4)
    assert not torch.allclose(anchor0_grad(moved, exclude=0), anchor0_grad(loc, exclude=0), atol=1e-6)


def test_l2g_feature_matching_and_no_teacher_grad() -> None:
    g = torch.tensor(G3).unsqueeze(1).requires_grad_()
    loc = torch.tensor(L3).unsqueeze(1).requires_grad_()
    got = l2g_infonce(g, loc, torch.tensor([3]), mutual_information=False)
    assert got.item() == pytest.approx(sum(1 - cos(a, b) for a, b in zip(G3, L3, strict=True)) / 3, rel=1e-5)
    (got + l2g_infonce(g, loc, torch.tensor([3]), exclude=0)).backward()
    assert loc.grad is None and g.grad is not None


# ---------------------------------------------------------------- g2l_correlation

G2 = [[1.0, 0.0], [0.0, 1.0]]  # cos(G_0, G_1) = 0
L2 = [[1.0, 0.0], [1.0, 1.0]]  # cos(L_0, L_1) = 1/sqrt(2)


def test_g2l_hand_value() -> None:
    tau, c = 0.5, 1 / math.sqrt(2)
    row0 = kl(softmax([1 / tau, 0 / tau]), softmax([1 / tau, c / tau]))
    row1 = kl(softmax([0 / tau, 1 / tau]), softmax([c / tau, 1 / tau]))
    g, loc = torch.tensor(G2).unsqueeze(1), torch.tensor(L2).unsqueeze(1)
    assert g2l_correlation(g, loc, torch.tensor([2]), tau=tau).item() == pytest.approx((row0 + row1) / 2, rel=1e-5)
    # Unweighted: mean over the 4 pairs of (cosG - cosL)^2 = 2 * (0 - c)^2 / 4 = 0.25.
    assert g2l_correlation(g, loc, torch.tensor([2]), weighted=False).item() == pytest.approx(0.25, rel=1e-5)


@pytest.mark.parametrize("weighted", [True, False])
def test_g2l_properties(weighted: bool) -> None:
    torch.manual_seed(3)
    g = torch.randn(5, 2, 6, requires_grad=True)
    loc = torch.randn(5, 2, 6, requires_grad=True)
    lengths = torch.tensor([5, 3])
    base = g2l_correlation(g, loc, lengths, weighted=weighted)
    assert g2l_correlation(pad(g.detach()), pad(loc.detach()), lengths, weighted=weighted).item() == pytest.approx(
        base.item(), rel=1e-5)
    g_garbage, l_garbage = g.detach().clone(), loc.detach().clone()
    g_garbage[3:, 1], l_garbage[3:, 1] = 7.0, -3.0
    assert g2l_correlation(g_garbage, l_garbage, lengths, weighted=weighted).item() == pytest.approx(
        base.item(), rel=1e-5)
    assert g2l_correlation(g, g.detach(), lengths, weighted=weighted).item() == pytest.approx(0.0, abs=1e-6)
    base.backward()
    assert g.grad is None and loc.grad is not None


# ---------------------------------------------------------------- reconstruction

def test_reconstruction_hand_value_padding_and_grad() -> None:
    pred = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]]], requires_grad=True)
    got = reconstruction(pred, target, torch.tensor([2]))
    assert got.item() == pytest.approx(((1 + 4) / 2 + (4 + 9) / 2) / 2)
    assert reconstruction(pad(pred.detach()), pad(target.detach()), torch.tensor([2])).item() == pytest.approx(4.5)
    assert reconstruction(pred, target, torch.tensor([1])).item() == pytest.approx(2.5)
    assert reconstruction(target, target, torch.tensor([2])).item() == 0.0
    got.backward()
    assert target.grad is None and pred.grad is not None


# ---------------------------------------------------------------- ppmi_svd_embeddings

def test_ppmi_svd_hand_value() -> None:
    # window 1, sentences [1 1 2 2] and [3 3 3]:
    #   counts n11 = 2, n12 = n21 = 1, n22 = 2, n33 = 4 (each ordered pair at distance 1 counted once)
    #   N = 10, n1 = n2 = 3, n3 = 4
    #   PPMI11 = PPMI22 = log(2*10/9), PPMI12 = log(1*10/9), PPMI33 = log(4*10/16) = log 2.5
    # Non-blank PPMI = [[a, b, 0], [b, a, 0], [0, 0, log 2.5]], eigenpairs (PSD):
    #   log 2.5 on e3;  a + b = log(200/81) on (1, 1)/sqrt 2;  a - b = log 2 on (1, -1)/sqrt 2.
    sentences = [[1, 1, 2, 2], [3, 3, 3]]
    emb = ppmi_svd_embeddings(sentences, num_classes=4, window=1, dim=2)
    r = math.sqrt(math.log(200 / 81) / 2)
    expected = [[0, 0], [0, r], [0, r], [math.sqrt(math.log(2.5)), 0]]
    assert emb.shape == (4, 2) and emb.dtype == torch.float32
    np.testing.assert_allclose(emb.numpy(), expected, atol=1e-6)
    full = ppmi_svd_embeddings(sentences, num_classes=4, window=1, dim=256)
    assert full.shape == (4, 3)
    a, b = math.log(20 / 9), math.log(10 / 9)
    ppmi = np.array([[0, 0, 0, 0], [0, a, b, 0], [0, b, a, 0], [0, 0, 0, math.log(2.5)]])
    np.testing.assert_allclose((full @ full.T).numpy(), ppmi, atol=1e-6)  # PSD here, so E E^T = PPMI
    assert torch.equal(full, ppmi_svd_embeddings(sentences, num_classes=4, window=1, dim=256))
    for k in range(3):  # sign convention: the largest-|value| entry of every component is positive
        col = full[:, k]
        assert col[col.abs().argmax()] >= 0


def test_ppmi_window_zero_and_unused_classes() -> None:
    assert ppmi_svd_embeddings([[1, 2, 3]], num_classes=5, window=0).abs().max() == 0
    emb = ppmi_svd_embeddings([[1, 2, 1, 2]], num_classes=5, window=2)
    assert emb[0].abs().max() == 0 and emb[3:].abs().max() == 0 and emb[1:3].abs().max() > 0


# ---------------------------------------------------------------- cmd_prototype_kl

def test_cmd_hand_value_and_grad() -> None:
    # Classes 1..3 (column/row 0 = blank, garbage). Embedding cosines: (1,2) 0, (1,3) = (2,3) = 1/sqrt 2.
    # Weight-column cosines: (1,2) 1, (1,3) = (2,3) = 0.
    emb = torch.tensor([[5.0, -5.0], [1.0, 0.0], [0.0, 3.0], [1.0, 1.0]], requires_grad=True)
    weight = torch.tensor([[9.0, 2.0, 1.0, 0.0], [9.0, 0.0, 0.0, 4.0]], requires_grad=True)  # (D=2, C=4)
    tt, ts, c = 0.5, 1.0, 1 / math.sqrt(2)
    kl1 = kl(softmax([0 / tt, c / tt]), softmax([1 / ts, 0 / ts]))  # c = 1 over c' = (2, 3)
    kl2 = kl(softmax([0 / tt, c / tt]), softmax([1 / ts, 0 / ts]))  # c = 2 over c' = (1, 3)
    kl3 = kl(softmax([c / tt, c / tt]), softmax([0 / ts, 0 / ts]))  # c = 3 over c' = (1, 2): 0
    got = cmd_prototype_kl(weight, emb, torch.tensor([3, 1]), tau_t=tt, tau_s=ts)
    assert got.item() == pytest.approx((kl3 + kl1) / 2, rel=1e-5)
    all3 = cmd_prototype_kl(weight, emb, torch.tensor([1, 2, 3]), tau_t=tt, tau_s=ts)
    assert all3.item() == pytest.approx((kl1 + kl2 + kl3) / 3, rel=1e-5)
    got.backward()
    assert emb.grad is None and weight.grad is not None
    assert weight.grad[:, 0].abs().max() == 0 and weight.grad[:, 1].abs().max() > 0


def test_cmd_zero_when_relations_match() -> None:
    torch.manual_seed(4)
    emb = torch.randn(6, 3)
    weight = 2.5 * emb.T.clone()  # same directions, different norms
    assert cmd_prototype_kl(weight, emb, torch.tensor([1, 4, 5])).item() == pytest.approx(0.0, abs=1e-6)
