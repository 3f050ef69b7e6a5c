"""Tests for ctca.losses.smkd: forced alignment against brute-force path enumeration, GSBA on hand-built
cases, label-smoothed CE against a hand computation and torch's cross_entropy, radius and resampling."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F

from ctca.losses.smkd import ctc_forced_align, gsba, gsba_radius, label_smoothed_ce, resample_labels


def _collapse(path: tuple[int, ...]) -> list[int]:
    out: list[int] = []
    prev = None
    for c in path:
        if c != prev and c != 0:
            out.append(c)
        prev = c
    return out


def _brute_force_align(log_probs: torch.Tensor, labels: list[int]) -> tuple[list[int], float]:
    """Max-score frame path over {blank} ∪ labels that collapses to ``labels``, by enumeration."""
    t_len = log_probs.shape[0]
    symbols = sorted({0, *labels})
    best_path, best_score = None, -math.inf
    for path in itertools.product(symbols, repeat=t_len):
        if _collapse(path) != labels:
            continue
        score = sum(float(log_probs[t, c]) for t, c in enumerate(path))
        if score > best_score:
            best_path, best_score = list(path), score
    assert best_path is not None
    return best_path, best_score


def _needed(labels: list[int]) -> int:
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:], strict=False))


def test_forced_align_matches_brute_force() -> None:
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)
    n_cases, n_repeat_cases = 0, 0
    while n_cases < 80:
        n_cls = rng.randint(2, 4)
        t_len = rng.randint(1, 6)
        labels = [rng.randint(1, n_cls - 1) for _ in range(rng.randint(1, 3))]
        if _needed(labels) > t_len:
            continue
        log_probs = F.log_softmax(3.0 * torch.randn(t_len, n_cls, generator=gen, dtype=torch.float64), -1)
        path = ctc_forced_align(log_probs, labels)
        ref_path, ref_score = _brute_force_align(log_probs, labels)
        assert path == ref_path, (labels, log_probs)
        assert _collapse(tuple(path)) == labels
        assert sum(float(log_probs[t, c]) for t, c in enumerate(path)) == pytest.approx(ref_score)
        n_cases += 1
        n_repeat_cases += _needed(labels) > len(labels)
    assert n_repeat_cases >= 5


def test_forced_align_hand_case_and_edges() -> None:
    # frame 1 strongly gloss 2, frame 3 strongly gloss 1, the rest blank: path is exactly that
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    assert ctc_forced_align(probs.log(), [2, 1]) == [0, 2, 0, 1]
    # repeated gloss needs a blank between, even where blank is unlikely
    probs = torch.tensor([[0.1, 0.9], [0.1, 0.9], [0.1, 0.9]])
    assert ctc_forced_align(probs.log(), [1, 1]) == [1, 0, 1]
    assert ctc_forced_align(probs.log(), []) == [0, 0, 0]


def test_forced_align_infeasible_raises() -> None:
    lp = torch.zeros(2, 3).log_softmax(-1)
    with pytest.raises(ValueError, match="infeasible"):
        ctc_forced_align(lp, [1, 1])  # needs 3 frames
    with pytest.raises(ValueError, match="infeasible"):
        ctc_forced_align(lp, [1, 2, 1])
    with pytest.raises(ValueError, match="blank"):
        ctc_forced_align(lp, [0, 1])


# GSBA hand case: D = 2, classes (blank, 1, 2). Column norms differ so that an un-normalised dot
# product would pick class 1 for the class-2 feature (0.3·10 = 3 > 2·0.5 = 1); cosine picks 2.
_W = torch.tensor([[-1.0, 10.0, 0.0], [-1.0, 0.0, 0.5]])
_F1, _F2 = [2.0, 0.3], [0.3, 2.0]  # best = 1, best = 2


def _spikes(t_len: int, spikes: dict[int, int], n_cls: int = 3) -> torch.Tensor:
    """Log-probs: blank-dominant frames except the given (frame -> class) spikes."""
    probs = torch.full((t_len, n_cls), 0.05)
    probs[:, 0] = 0.9
    for t, c in spikes.items():
        probs[t] = 0.05
        probs[t, c] = 0.9
    return probs.log()


def _feats(best: list[int]) -> torch.Tensor:
    return torch.tensor([_F1 if b == 1 else _F2 for b in best])


@pytest.mark.parametrize(("radius", "expected"), [
    (0, [0, 0, 1, 0, 0, 2, 0, 0]),
    (1, [0, 0, 1, 0, 2, 2, 0, 0]),  # anchor 1 blocked both ways by best = 2; anchor 2 stopped forward
    (2, [0, 0, 1, 2, 2, 2, 0, 0]),
    (5, [0, 0, 1, 2, 2, 2, 0, 0]),  # frame 0 (best 1) and 7 (best 2) lie past a mismatch: stay blank
])
def test_gsba_radius_and_stop(radius: int, expected: list[int]) -> None:
    best = [1, 2, 1, 2, 2, 2, 1, 2]
    seg = gsba(_feats(best), _W, [1, 2], radius, log_probs=_spikes(8, {2: 1, 5: 2}))
    assert seg.dtype == torch.long
    assert seg.tolist() == expected


def test_gsba_anchors_of_different_classes_not_overwritten() -> None:
    # anchor 1 at t=2, anchor 2 at t=4 whose own best is 1: anchor 1's forward expansion claims t=3,
    # stops at t=4 (claimed by class 2), and does not run on to t=5 although best[5] = 1.
    best = [1, 1, 1, 1, 1, 1, 2, 2]
    seg = gsba(_feats(best), _W, [1, 2], 3, log_probs=_spikes(8, {2: 1, 4: 2}))
    assert seg.tolist() == [1, 1, 1, 1, 2, 0, 0, 0]


def test_gsba_best_restricted_to_sentence_classes() -> None:
    # class 3 = (1, 1) is the most similar class to every frame but absent from the labels; within
    # {1, 2}, (1, 0.8) is closest to class 1 and (0.8, 1) to class 2 (cosine, after normalisation)
    w = torch.cat([_W, torch.tensor([[1.0], [1.0]])], dim=1)
    gcf = torch.tensor([[1.0, 0.8], [1.0, 0.8], [0.8, 1.0], [0.8, 1.0]])
    seg = gsba(gcf, w, [1, 2], 2, log_probs=_spikes(4, {0: 1, 3: 2}, n_cls=4))
    assert seg.tolist() == [1, 1, 2, 2]


def test_gsba_default_log_probs_from_features() -> None:
    # D = 3 with a blank direction; the forced alignment of log_softmax(gcf @ ŵ) is [0,1,0,0,2,0]
    w = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [4.0, 0.0, 0.0]])  # columns: blank, 1, 2
    gcf = torch.tensor([[0.5, 0, 5], [5, 0, 0], [0.5, 0, 5], [0, 0.5, 5], [0, 5, 0], [0, 0.5, 5]])
    assert gsba(gcf, w, [1, 2], 0).tolist() == [0, 1, 0, 0, 2, 0]
    assert gsba(gcf, w, [1, 2], 1).tolist() == [1, 1, 1, 2, 2, 2]
    assert gsba(gcf, w, [], 1).tolist() == [0] * 6
    with pytest.raises(ValueError):
        gsba(gcf, w, [1, 2], -1)


def test_label_smoothed_ce_hand_case() -> None:
    eps = 0.2
    logits = torch.tensor([[[0.0, 0.0, 0.0]], [[0.0, math.log(2.0), 0.0]]])  # (T=2, B=1, C=3)
    targets = torch.tensor([[0], [1]])
    # frame 0: uniform -> ln 3; frame 1: p = (1/4, 1/2, 1/4), y = 1:
    # 0.8·ln 2 + (0.2/3)(ln 4 + ln 2 + ln 4) = (0.8 + 1/3)·ln 2
    expected = (math.log(3.0) + (0.8 + 1.0 / 3.0) * math.log(2.0)) / 2
    got = label_smoothed_ce(logits, targets, torch.tensor([2]), smoothing=eps)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_label_smoothed_ce_matches_torch_on_valid_frames() -> None:
    gen = torch.Generator().manual_seed(1)
    t_len, batch, n_cls, eps = 7, 3, 5, 0.2
    logits = torch.randn(t_len, batch, n_cls, generator=gen, requires_grad=True)
    targets = torch.randint(0, n_cls, (t_len, batch), generator=gen)
    targets[1, 0] = -100  # ignored frame inside the valid range
    lengths = torch.tensor([7, 4, 2])
    loss = label_smoothed_ce(logits, targets, lengths, smoothing=eps)

    rows = [(t, b) for b in range(batch) for t in range(int(lengths[b])) if int(targets[t, b]) != -100]
    ref = F.cross_entropy(torch.stack([logits[t, b] for t, b in rows]),
                          torch.stack([targets[t, b] for t, b in rows]), label_smoothing=eps)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)

    loss.backward()
    grad = logits.grad
    assert grad is not None
    assert torch.all(grad[4:, 1] == 0) and torch.all(grad[2:, 2] == 0) and torch.all(grad[1, 0] == 0)
    assert torch.all(grad[:4, 1].abs().sum(-1) > 0)


def test_label_smoothed_ce_padding_content_irrelevant_and_empty() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 2, 4, generator=gen)
    targets = torch.randint(0, 4, (5, 2), generator=gen)
    lengths = torch.tensor([3, 5])
    base = label_smoothed_ce(logits, targets, lengths)
    changed_logits, changed_targets = logits.clone(), targets.clone()
    changed_logits[3:, 0] = 50.0
    changed_targets[3:, 0] = 2
    assert float(label_smoothed_ce(changed_logits, changed_targets, lengths)) == pytest.approx(float(base))

    x = torch.randn(3, 1, 4, requires_grad=True)
    empty = label_smoothed_ce(x, torch.full((3, 1), -100), torch.tensor([3]))
    assert empty.item() == 0.0 and empty.requires_grad
    empty.backward()
    assert x.grad is not None and torch.all(x.grad == 0)


def test_gsba_radius_schedule() -> None:
    assert [gsba_radius(e, 30, 20) for e in (0, 29, 30, 49, 50, 69, 70, 90, 99)] == [0, 0, 1, 1, 2, 2, 3, 4, 4]
    assert [gsba_radius(e, 3, 2) for e in range(8)] == [0, 0, 0, 1, 1, 2, 2, 3]
    with pytest.raises(ValueError):
        gsba_radius(5, 0, 0)


def test_resample_labels() -> None:
    lab = torch.tensor([1, 2, 3, 4])
    assert resample_labels(lab, 4).tolist() == [1, 2, 3, 4]
    assert resample_labels(lab, 8).tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    # new centres (0.5, 1.5)·4/2 = 1, 3 -> old frames 1 and 3
    assert resample_labels(lab, 2).tolist() == [2, 4]
    # floor((2i + 1)·4 / 6) = 0, 2, 3
    assert resample_labels(lab, 3).tolist() == [1, 3, 4]
    assert resample_labels(lab, 0).tolist() == []
    assert resample_labels(lab, 5).dtype == lab.dtype
