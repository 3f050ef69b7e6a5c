"""CTC decoding with blank = 0: greedy and a batched, vectorised prefix beam search in torch.

Both decoders take log-probabilities (N, T, C) plus valid lengths (N,) and return gloss id lists with
no blanks and, like the reference CSLR code (VAC/CorrNet), consecutive identical glosses merged
again after decoding (docs/scoring.md#decoding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

__all__ = [
    "BLANK",
    "BeamSearchDecoder",
    "Decoder",
    "GreedyDecoder",
    "make_decoder",
    "merge_repeated_glosses",
]

BLANK = 0

# Prefix hash h' = h * _HASH_MUL + token + 1, wrapping in int64 (FNV-1a 64-bit prime). Prefixes are
# never materialised during the search, so identical prefixes are found by equal hashes; collisions
# in a 64-bit space among a few hundred candidates per frame are negligible.
_HASH_MUL = 0x100000001B3


class Decoder(Protocol):
    """Log-probabilities (N, T, C) + lengths (N,) → one list of gloss ids (no blanks) per utterance."""

    def __call__(self, log_probs: Tensor, lengths: Tensor) -> list[list[int]]: ...


def merge_repeated_glosses(seq: Sequence[int]) -> list[int]:
    """Merge runs of the same gloss: ``[3, 3, 5, 3]`` → ``[3, 5, 3]`` (the reference code's group-by)."""
    out: list[int] = []
    for s in seq:
        if not out or out[-1] != s:
            out.append(s)
    return out


def _check_inputs(log_probs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (N, T, C), got shape {tuple(log_probs.shape)}")
    if not log_probs.is_floating_point():
        raise ValueError(f"log_probs must be a float tensor, got {log_probs.dtype}")
    n, t, c = log_probs.shape
    if c < 2:
        raise ValueError(f"log_probs needs at least 2 classes (blank + one gloss), got C = {c}")
    lengths = torch.as_tensor(lengths)
    if lengths.shape != (n,):
        raise ValueError(f"lengths must have shape ({n},), got {tuple(lengths.shape)}")
    if lengths.is_floating_point() or lengths.is_complex():
        raise ValueError(f"lengths must be integers, got {lengths.dtype}")
    if n and (int(lengths.min()) < 0 or int(lengths.max()) > t):
        raise ValueError(
            f"lengths must lie in [0, T = {t}], got min {int(lengths.min())}, max {int(lengths.max())}"
        )
    log_probs = log_probs.detach()
    if log_probs.dtype not in (torch.float32, torch.float64):
        log_probs = log_probs.float()  # half precision is too coarse for summed path scores
    return log_probs, lengths.to(device=log_probs.device, dtype=torch.long)


@dataclass(frozen=True)
class GreedyDecoder:
    """Best path: per-frame argmax → collapse repeats → drop blank → merge repeated glosses.

    The final merge (``merge_repeats``) turns ``A ␣ A`` into ``A`` as VAC's "max" mode does.
    """

    merge_repeats: bool = True

    def __call__(self, log_probs: Tensor, lengths: Tensor) -> list[list[int]]:
        log_probs, lengths = _check_inputs(log_probs, lengths)
        n, t, _ = log_probs.shape
        best = log_probs.argmax(dim=-1)  # (N, T)
        prev = torch.nn.functional.pad(best[:, :-1], (1, 0), value=-1)
        frame = torch.arange(t, device=best.device)
        keep = (best != prev) & (best != BLANK) & (frame[None, :] < lengths[:, None])
        best, keep = best.cpu(), keep.cpu()
        out = [best[i][keep[i]].tolist() for i in range(n)]
        return [merge_repeated_glosses(s) for s in out] if self.merge_repeats else out


@dataclass(frozen=True)
class BeamSearchDecoder:
    """CTC prefix beam search, vectorised over the whole batch in torch (docs/scoring.md#decoding).

    State per utterance × beam: log p of blank-ending (``pb``) and label-ending (``pnb``) paths, the
    last label, a rolling prefix hash, and per-frame back-pointers (parent beam, emitted token).
    Each frame forms B "stay" candidates (blank, or repeat of the last label) and B·K "extension"
    candidates over the top-K classes, merges candidates with identical prefixes (sort by hash +
    segment log-sum-exp), and keeps the best ``beam_width``. Utterances past their length take an
    identity step, so one loop over max T serves the batch. Sequences are recovered by a backtrace
    at the end; no Python objects per prefix.

    ``top_k`` prunes the classes a prefix may be *extended* with on each frame (ctcdecode's
    ``cutoff_top_n = 40``); ``None`` considers all classes. By default the stay transitions (blank,
    and repeating the last label) are always considered. ctcdecode, which VAC/CorrNet use, only
    considers them when blank / that label is itself in the frame's top-K, i.e. it prunes blank too;
    ``ctcdecode_compat=True`` reproduces that for parity with their tables, at a small cost in
    likelihood of the result (docs/scoring.md#decoding).

    No language model. Input must be log-probabilities (log-softmax), blank at index 0. With a beam at
    least as wide as the number of reachable prefixes and ``top_k=None`` the search is exact.

    Cost is ~40 small tensor ops per frame whatever N is, so decode large batches (or on GPU). On a
    busy CPU prefer ``torch.set_num_threads(1)``: these tensors are too small to gain from intra-op
    threads, and oversubscribed OpenMP threads made it 5–20x slower in benchmarks/decode_speed.py.
    """

    beam_width: int = 10
    top_k: int | None = 40
    ctcdecode_compat: bool = False
    merge_repeats: bool = True

    def __post_init__(self) -> None:
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {self.beam_width}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")

    def __call__(self, log_probs: Tensor, lengths: Tensor) -> list[list[int]]:
        return self.decode_with_scores(log_probs, lengths)[0]

    def decode_with_scores(self, log_probs: Tensor, lengths: Tensor) -> tuple[list[list[int]], Tensor]:
        """Best labelling per utterance and its log-probability, a (N,) CPU tensor.

        The score is log p(prefix | x) of the best prefix found, i.e. the summed probability of all
        its CTC paths (over the transitions the pruning allowed), *before* the repeated-gloss merge:
        with ``merge_repeats=True`` the returned ids may be shorter than the scored prefix.
        """
        log_probs, lengths = _check_inputs(log_probs, lengths)
        with torch.no_grad():
            tokens, parents, best, scores = self._search(log_probs, lengths)
        seqs = _backtrace(tokens.cpu(), parents.cpu(), best.cpu())
        if self.merge_repeats:
            seqs = [merge_repeated_glosses(s) for s in seqs]
        return seqs, scores.cpu()

    def _search(self, log_probs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        n, t_max, c = log_probs.shape
        b = self.beam_width
        k = c if self.top_k is None else min(self.top_k, c)
        m = b + b * k  # candidates per utterance and frame: B stays + B·K extensions
        dev, dt = log_probs.device, log_probs.dtype
        neg_inf = float("-inf")

        pb = torch.full((n, b), neg_inf, device=dev, dtype=dt)
        pb[:, 0] = 0.0  # the empty prefix; other slots are unused (-inf) until filled
        pnb = torch.full((n, b), neg_inf, device=dev, dtype=dt)
        last = torch.full((n, b), BLANK, device=dev, dtype=torch.long)  # BLANK = "no label yet"
        hsh = torch.zeros((n, b), device=dev, dtype=torch.long)
        tokens = torch.full((t_max, n, b), -1, device=dev, dtype=torch.long)
        parents = torch.empty((t_max, n, b), device=dev, dtype=torch.long)

        identity = torch.arange(b, device=dev).expand(n, b)
        positions = torch.arange(m, device=dev).expand(n, m)
        ext_pb = torch.full((n, b * k), neg_inf, device=dev, dtype=dt)
        all_classes = torch.arange(c, device=dev).expand(n, c)

        for t in range(t_max):
            frame = log_probs[:, t]  # (N, C)
            active = (lengths > t)[:, None]
            if k < c:
                top_v, top_i = frame.topk(k, dim=1, sorted=False)
            else:
                top_v, top_i = frame, all_classes

            ptot = torch.logaddexp(pb, pnb)
            stay_pb = ptot + frame[:, BLANK : BLANK + 1]
            stay_pnb = pnb + frame.gather(1, last)
            if self.ctcdecode_compat:
                in_top = torch.zeros((n, c), device=dev, dtype=torch.bool).scatter_(1, top_i, True)
                stay_pb = stay_pb.masked_fill(~in_top[:, BLANK : BLANK + 1], neg_inf)
                stay_pnb = stay_pnb.masked_fill(~in_top.gather(1, last), neg_inf)

            # Extending by the last label needs a blank in between, so only pb carries over.
            repeat = top_i[:, None, :] == last[:, :, None]  # (N, B, K)
            ext_v = top_v.masked_fill(top_i == BLANK, neg_inf)  # blank is never an extension
            ext_pnb = torch.where(repeat, pb[:, :, None], ptot[:, :, None]) + ext_v[:, None, :]
            ext_hash = hsh[:, :, None] * _HASH_MUL + top_i[:, None, :] + 1

            cand_pb = torch.cat([stay_pb, ext_pb], dim=1)  # (N, M)
            cand_pnb = torch.cat([stay_pnb, ext_pnb.reshape(n, b * k)], dim=1)
            cand_hash = torch.cat([hsh, ext_hash.reshape(n, b * k)], dim=1)

            # Group identical prefixes by sorting on the hash. Every beam slot, even an unused -inf
            # one, carries a hash, last label and back-pointer chain that describe the same prefix,
            # so any member of a group is a valid back-pointer for it (hence no stable sort).
            sorted_hash, order = cand_hash.sort(dim=1)
            starts = torch.ones((n, m), device=dev, dtype=torch.bool)
            starts[:, 1:] = sorted_hash[:, 1:] != sorted_hash[:, :-1]
            group = starts.cumsum(dim=1) - 1

            g_pb = _segment_logsumexp(cand_pb.gather(1, order), group, m)
            g_pnb = _segment_logsumexp(cand_pnb.gather(1, order), group, m)
            # Unused group slots keep position m - 1: a valid index whose group score is -inf.
            first = torch.full((n, m), m - 1, device=dev, dtype=torch.long)
            first = first.scatter_reduce(1, group, positions, reduce="amin")

            keep = torch.logaddexp(g_pb, g_pnb).topk(b, dim=1, sorted=False).indices  # (N, B) group ids
            cand = order.gather(1, first.gather(1, keep))  # representative candidate per kept group
            is_stay = cand < b
            ext_idx = (cand - b).clamp(min=0)
            parent = torch.where(is_stay, cand, ext_idx // k)
            token = torch.where(is_stay, -1, top_i.gather(1, ext_idx % k))

            pb = torch.where(active, g_pb.gather(1, keep), pb)
            pnb = torch.where(active, g_pnb.gather(1, keep), pnb)
            last = torch.where(active, torch.where(is_stay, last.gather(1, parent), token), last)
            hsh = torch.where(active, cand_hash.gather(1, cand), hsh)
            parents[t] = torch.where(active, parent, identity)
            tokens[t] = torch.where(active, token, -1)

        scores, best = torch.logaddexp(pb, pnb).max(dim=1)
        return tokens, parents, best, scores


def _segment_logsumexp(x: Tensor, group: Tensor, num_groups: int) -> Tensor:
    """log Σ exp(x) over entries sharing a group id, per row; empty groups give -inf."""
    peak = torch.full((x.shape[0], num_groups), float("-inf"), device=x.device, dtype=x.dtype)
    peak = peak.scatter_reduce(1, group, x, reduce="amax")
    peak = peak.clamp(min=torch.finfo(x.dtype).min)  # all -inf groups: avoid (-inf) - (-inf)
    total = torch.zeros_like(peak).scatter_add_(1, group, (x - peak.gather(1, group)).exp())
    return peak + total.log()


def _backtrace(tokens: Tensor, parents: Tensor, best: Tensor) -> list[list[int]]:
    """Follow back-pointers (T, N, B) from each utterance's best final beam; collect emitted tokens."""
    t_max, n, _ = tokens.shape
    rows = torch.arange(n)
    beam = best
    emitted = torch.empty((t_max, n), dtype=torch.long)
    for t in range(t_max - 1, -1, -1):
        emitted[t] = tokens[t, rows, beam]
        beam = parents[t, rows, beam]
    return [[tok for tok in emitted[:, i].tolist() if tok >= 0] for i in range(n)]


def make_decoder(beam_width: int) -> Decoder:
    """Greedy for ``beam_width == 1``, else the prefix beam search with the reference defaults."""
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    return GreedyDecoder() if beam_width == 1 else BeamSearchDecoder(beam_width=beam_width)
