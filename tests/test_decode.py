"""Tests for ctca.decode: greedy hand cases, beam search against brute-force enumeration and a
dictionary-based reference prefix search, batching and lengths."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import pytest
import torch

from ctca.decode import (
    BLANK,
    BeamSearchDecoder,
    GreedyDecoder,
    make_decoder,
    merge_repeated_glosses,
)


def _log_probs_from_frames(frames: list[list[float]]) -> torch.Tensor:
    """(1, T, C) log-probabilities from per-frame probabilities."""
    return torch.tensor(frames, dtype=torch.float64).log()[None]


def _one_hot_frames(ids: list[int], c: int, sharp: float = 8.0) -> torch.Tensor:
    logits = torch.zeros(len(ids), c, dtype=torch.float64)
    logits[torch.arange(len(ids)), torch.tensor(ids)] = sharp
    return logits.log_softmax(-1)


def _random_log_probs(gen, n, t, c, scale, dtype=torch.float64):
    return (torch.randn(n, t, c, generator=gen, dtype=dtype) * scale).log_softmax(-1)


def _brute_force(lp: torch.Tensor) -> dict[tuple[int, ...], float]:
    """log p(labelling) for every labelling reachable in T frames, by enumerating all C^T paths."""
    t, c = lp.shape
    lp = lp.tolist()
    path_scores: dict[tuple[int, ...], list[float]] = defaultdict(list)
    for path in itertools.product(range(c), repeat=t):
        labelling, prev = [], None
        for p in path:
            if p != prev and p != BLANK:
                labelling.append(p)
            prev = p
        path_scores[tuple(labelling)].append(sum(lp[i][p] for i, p in enumerate(path)))
    return {
        lab: torch.logsumexp(torch.tensor(s, dtype=torch.float64), 0).item() for lab, s in path_scores.items()
    }


def _reference_prefix_search(lp: torch.Tensor, beam: int, top_k: int | None, compat: bool):
    """Textbook dictionary prefix beam search (the semantics of ctcdecode when ``compat``)."""
    lae = torch.logaddexp
    neg = torch.tensor(-math.inf, dtype=torch.float64)
    beams = {(): (torch.tensor(0.0, dtype=torch.float64), neg)}
    for frame in lp:
        allowed = (
            set(range(len(frame)))
            if top_k is None
            else set(frame.topk(min(top_k, len(frame))).indices.tolist())
        )
        nxt: dict[tuple[int, ...], list[torch.Tensor]] = defaultdict(lambda: [neg, neg])
        for prefix, (pb, pnb) in beams.items():
            ptot = lae(pb, pnb)
            if not compat or BLANK in allowed:
                nxt[prefix][0] = lae(nxt[prefix][0], ptot + frame[BLANK])
            if prefix and (not compat or prefix[-1] in allowed):
                nxt[prefix][1] = lae(nxt[prefix][1], pnb + frame[prefix[-1]])
            for k in allowed - {BLANK}:
                src = pb if prefix and prefix[-1] == k else ptot
                nxt[prefix + (k,)][1] = lae(nxt[prefix + (k,)][1], src + frame[k])
        ranked = sorted(nxt.items(), key=lambda kv: lae(*kv[1]).item(), reverse=True)
        beams = dict((p, tuple(v)) for p, v in ranked[:beam])
    prefix, (pb, pnb) = max(beams.items(), key=lambda kv: lae(*kv[1]).item())
    return list(prefix), lae(pb, pnb).item()


# ---------------------------------------------------------------------------------------------
# Greedy


def test_merge_repeated_glosses():
    assert merge_repeated_glosses([]) == []
    assert merge_repeated_glosses([3, 3, 5, 3, 3, 3]) == [3, 5, 3]


def test_greedy_hand_case():
    frames = [1, 1, 0, 1, 2, 2, 0, 0, 3, 3, 0, 3]  # argmax path
    lp = _one_hot_frames(frames, c=4)[None]
    lengths = torch.tensor([len(frames)])
    # collapse → 1 0 1 2 0 3 0 3; drop blank → 1 1 2 3 3; merge repeated glosses → 1 2 3
    assert GreedyDecoder()(lp, lengths) == [[1, 2, 3]]
    assert GreedyDecoder(merge_repeats=False)(lp, lengths) == [[1, 1, 2, 3, 3]]


def test_greedy_lengths_and_batch():
    a = _one_hot_frames([0, 2, 2, 0, 1, 1], c=3)
    b = _one_hot_frames([1, 0, 2, 2, 2, 2], c=3)
    lp = torch.stack([a, b])
    assert GreedyDecoder()(lp, torch.tensor([6, 3])) == [[2, 1], [1, 2]]
    assert GreedyDecoder()(lp, torch.tensor([0, 1])) == [[], [1]]
    assert GreedyDecoder()(lp[:, :0], torch.tensor([0, 0])) == [[], []]


# ---------------------------------------------------------------------------------------------
# Beam search


@pytest.mark.parametrize("scale", [0.5, 1.5, 6.0], ids=["flat", "medium", "sharp"])
def test_beam_matches_brute_force(scale):
    gen = torch.Generator().manual_seed(int(scale * 100))
    for _ in range(25):
        t = int(torch.randint(1, 6, (1,), generator=gen))
        c = int(torch.randint(2, 5, (1,), generator=gen))
        lp = _random_log_probs(gen, 1, t, c, scale)
        exact = _brute_force(lp[0])
        decoder = BeamSearchDecoder(beam_width=len(exact), top_k=None, merge_repeats=False)
        seqs, scores = decoder.decode_with_scores(lp, torch.tensor([t]))
        found = tuple(seqs[0])
        assert exact[found] >= max(exact.values()) - 1e-9, (t, c, found)
        assert scores[0].item() == pytest.approx(exact[found], abs=1e-5)


def test_beam_score_is_labelling_probability_before_merge():
    # Best labelling is (1, 1) (paths "1 ␣ 1"); the returned ids merge it to [1], the score stays p(1 1).
    frames = [[0.05, 0.9, 0.05], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]]
    lp = _log_probs_from_frames(frames)
    exact = _brute_force(lp[0])
    assert max(exact, key=exact.get) == (1, 1)
    seqs, scores = BeamSearchDecoder(beam_width=16, top_k=None).decode_with_scores(lp, torch.tensor([3]))
    assert seqs == [[1]]
    assert scores[0].item() == pytest.approx(exact[(1, 1)], abs=1e-9)
    unmerged = BeamSearchDecoder(beam_width=16, top_k=None, merge_repeats=False)
    assert unmerged(lp, torch.tensor([3])) == [[1, 1]]


def test_beam_prefers_summed_paths_over_best_path():
    # Best single path is "␣ ␣" (empty, 0.36); the labelling "1" sums 3 paths to 0.64 (0.4·0.4 + 2·0.6·0.4).
    lp = _log_probs_from_frames([[0.6, 0.4], [0.6, 0.4]])
    assert GreedyDecoder()(lp, torch.tensor([2])) == [[]]
    seqs, scores = BeamSearchDecoder(beam_width=4, top_k=None).decode_with_scores(lp, torch.tensor([2]))
    assert seqs == [[1]]
    assert scores[0].item() == pytest.approx(math.log(0.64))


@pytest.mark.parametrize("compat", [False, True], ids=["blank-always", "ctcdecode-compat"])
def test_beam_matches_reference_prefix_search_with_pruning(compat):
    gen = torch.Generator().manual_seed(7 + compat)
    for trial in range(30):
        lp = _random_log_probs(gen, 1, 8, 6, scale=[0.7, 2.0, 4.0][trial % 3])
        beam, top_k = 1 + trial % 4, [2, 3, None][trial % 3]
        expected, expected_score = _reference_prefix_search(lp[0], beam, top_k, compat)
        decoder = BeamSearchDecoder(
            beam_width=beam, top_k=top_k, ctcdecode_compat=compat, merge_repeats=False
        )
        seqs, scores = decoder.decode_with_scores(lp, torch.tensor([8]))
        assert seqs == [expected], (trial, beam, top_k)
        assert scores[0].item() == pytest.approx(expected_score, abs=1e-9)


def test_ctcdecode_compat_prunes_blank():
    # top_k = 1: blank is never a frame's top class. Default mode still lets "A" absorb the blank and
    # repeat transitions on frame 2 (p = 0.6·0.32 + 0.6·0.33 = 0.39 > "AB" 0.21); ctcdecode semantics
    # drop them because neither blank nor A is in frame 2's top-1, leaving "AB".
    lp = _log_probs_from_frames([[0.4, 0.6, 0.0], [0.32, 0.33, 0.35]])
    lengths = torch.tensor([2])
    seqs, scores = BeamSearchDecoder(beam_width=10, top_k=1).decode_with_scores(lp, lengths)
    assert seqs == [[1]]
    assert scores[0].item() == pytest.approx(math.log(0.39))
    compat = BeamSearchDecoder(beam_width=10, top_k=1, ctcdecode_compat=True)
    seqs, scores = compat.decode_with_scores(lp, lengths)
    assert seqs == [[1, 2]]
    assert scores[0].item() == pytest.approx(math.log(0.21))


def test_batched_equals_per_utterance_and_lengths_respected():
    gen = torch.Generator().manual_seed(3)
    n, t, c = 6, 30, 12
    lp = _random_log_probs(gen, n, t, c, scale=2.5, dtype=torch.float32)
    lengths = torch.tensor([30, 1, 17, 0, 25, 9])
    # Frames past each length shout a gloss; a decoder that reads them would emit it.
    garbage = _one_hot_frames([5] * t, c, sharp=30.0).float()
    for i, length in enumerate(lengths.tolist()):
        lp[i, length:] = garbage[length:]
    decoder = BeamSearchDecoder(beam_width=5, top_k=4)
    seqs, scores = decoder.decode_with_scores(lp, lengths)
    for i, length in enumerate(lengths.tolist()):
        one_seqs, one_scores = decoder.decode_with_scores(lp[i : i + 1, :length], torch.tensor([length]))
        assert seqs[i] == one_seqs[0]
        assert scores[i].item() == pytest.approx(one_scores[0].item(), abs=1e-4)
    assert seqs[3] == [] and scores[3].item() == 0.0  # zero frames: the empty labelling, p = 1


def test_beam_equals_greedy_on_peaky_posteriors():
    gen = torch.Generator().manual_seed(11)
    n, t, c = 8, 80, 60
    lp = torch.empty(n, t, c)
    for i in range(n):
        glosses = torch.randint(1, c, (t // 4,), generator=gen)
        path = torch.zeros(t, dtype=torch.long)
        path[1::4], path[2::4] = glosses[: len(path[1::4])], glosses[: len(path[2::4])]
        logits = torch.randn(t, c, generator=gen)
        logits[torch.arange(t), path] += 8.0
        lp[i] = logits.log_softmax(-1)
    lengths = torch.randint(40, t + 1, (n,), generator=gen)
    greedy = GreedyDecoder()(lp, lengths)
    assert BeamSearchDecoder(beam_width=10, top_k=40)(lp, lengths) == greedy
    assert BeamSearchDecoder(beam_width=10, top_k=40, ctcdecode_compat=True)(lp, lengths) == greedy
    assert all(len(s) > 5 for s in greedy)


def test_beam_width_one_is_not_worse_than_nothing():
    # Beam 1 keeps one prefix per frame; it must still produce a valid labelling and score.
    lp = _random_log_probs(torch.Generator().manual_seed(5), 2, 10, 5, scale=3.0)
    seqs, scores = BeamSearchDecoder(beam_width=1, top_k=None).decode_with_scores(lp, torch.tensor([10, 4]))
    assert len(seqs) == 2 and torch.isfinite(scores).all()


# ---------------------------------------------------------------------------------------------
# Construction and input checks


def test_make_decoder():
    assert make_decoder(1) == GreedyDecoder()
    assert make_decoder(10) == BeamSearchDecoder(beam_width=10, top_k=40)
    with pytest.raises(ValueError, match="beam_width"):
        make_decoder(0)
    with pytest.raises(ValueError, match="top_k"):
        BeamSearchDecoder(top_k=0)


@pytest.mark.parametrize("decoder", [GreedyDecoder(), BeamSearchDecoder()], ids=["greedy", "beam"])
def test_bad_inputs(decoder):
    lp = torch.zeros(2, 5, 4).log_softmax(-1)
    with pytest.raises(ValueError, match=r"\(N, T, C\)"):
        decoder(lp[0], torch.tensor([5]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        decoder(lp, torch.tensor([5]))
    with pytest.raises(ValueError, match="lengths must lie in"):
        decoder(lp, torch.tensor([5, 6]))
    with pytest.raises(ValueError, match="integers"):
        decoder(lp, torch.tensor([5.0, 5.0]))
