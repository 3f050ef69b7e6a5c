"""sclite-exact word error rate: weighted alignment, corpus totals and per-group breakdowns.

The official CSLR numbers come from NIST sclite (docs/scoring.md#wer-as-sclite-computes-it); this
module reproduces its alignment in process so that S/D/I and the op sequence match sclite, not just
the total.

Why the alignment is hand-written and not taken from a library:

* sclite minimises ``4·S + 3·(D + I)`` (costs correct 0, substitution 4, deletion 3, insertion 3),
  compares words after ASCII-only lower-casing, and breaks ties in a fixed order (diagonal, then
  deletion, then insertion, backtracing from the end). It can therefore report *more* errors than
  the Levenshtein minimum (3 D + 3 I at cost 18 beats 5 S at cost 20).
* jiwer uses unit costs, is case-sensitive and aligns via rapidfuzz opcodes: equal totals on
  realistic corpora but a different S/D/I split (del % and ins % off by 0.2–0.35 points).
* rapidfuzz can compute the weighted *distance* but its ``editops``/``opcodes`` take no weights, so
  it cannot give sclite's op sequence.

The O(N·M) dynamic programme below is ~20 ms for a whole PHOENIX test set in pure Python.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "EMPTY",
    "Alignment",
    "WerResult",
    "align",
    "format_alignment",
    "score_by_group",
    "score_corpus",
]

EMPTY = "[EMPTY]"
"""The word the official pipeline writes for an utterance with no hypothesis words
(docs/scoring.md#the-empty-word)."""

COST_CORRECT = 0
COST_SUB = 4
COST_DEL = 3
COST_INS = 3

# sclite folds case byte-wise in its default 8-bit mode: only A-Z, never Ä/É/… (vector `non_ascii`).
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

_DIAG, _DEL, _INS = 0, 1, 2
_WHITESPACE = re.compile(r"\s")


def _fold(word: str) -> str:
    return word.translate(_ASCII_LOWER)


def _check_words(words: Sequence[str], side: str) -> tuple[str, ...]:
    # A bare string would silently be scored character by character.
    if isinstance(words, str):
        raise TypeError(f"{side} must be a sequence of words, not a str: {words!r}")
    out = tuple(words)
    for w in out:
        if not isinstance(w, str) or not w or _WHITESPACE.search(w):
            raise ValueError(
                f"{side} contains an invalid word {w!r} (words must be non-empty, no whitespace)"
            )
    return out


@dataclass(frozen=True)
class Alignment:
    """One utterance aligned as sclite aligns it.

    ``ops`` holds one letter per alignment column, left to right: ``C`` correct, ``S`` substitution,
    ``D`` deletion (reference word missing from the hypothesis), ``I`` insertion.
    ``ref``/``hyp`` are the words actually scored (``hyp`` is ``("[EMPTY]",)`` for an empty hypothesis
    under the official convention).
    """

    ref: tuple[str, ...]
    hyp: tuple[str, ...]
    ops: str

    @property
    def sub(self) -> int:
        return self.ops.count("S")

    @property
    def dele(self) -> int:
        return self.ops.count("D")

    @property
    def ins(self) -> int:
        return self.ops.count("I")

    @property
    def hit(self) -> int:
        return self.ops.count("C")

    @property
    def n(self) -> int:
        """Number of reference words."""
        return len(self.ref)

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    def columns(self) -> list[tuple[str | None, str | None, str]]:
        """Aligned ``(ref_word, hyp_word, op)`` columns; the missing side of a D/I is ``None``."""
        cols: list[tuple[str | None, str | None, str]] = []
        i = j = 0
        for op in self.ops:
            if op in "CS":
                cols.append((self.ref[i], self.hyp[j], op))
                i += 1
                j += 1
            elif op == "D":
                cols.append((self.ref[i], None, op))
                i += 1
            else:
                cols.append((None, self.hyp[j], op))
                j += 1
        return cols


def align(ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
    """Align ``hyp`` to ``ref`` with sclite's weights, word equality and tie order (docs/scoring.md#alignment).

    No ``[EMPTY]`` substitution happens here: an empty ``hyp`` gives all deletions. Use
    :func:`score_corpus` for the official empty-hypothesis convention.
    """
    ref_t = _check_words(ref, "ref")
    hyp_t = _check_words(hyp, "hyp")
    r = [_fold(w) for w in ref_t]
    h = [_fold(w) for w in hyp_t]
    # A common suffix is aligned as correct words whatever precedes it: when r[n-1] == h[m-1], the diagonal
    # costs D[n-1][m-1], which is never more than the deletion D[n-1][m] + 3 or the insertion D[n][m-1] + 3
    # (dropping one word from an alignment changes its cost by at most 3), and diagonal wins ties. So the
    # backtrace takes it, and the rest is the DP of the prefixes. (A common *prefix* may not be trimmed: ties
    # can place a deletion before it.) This makes identical and mostly-correct utterances cheap.
    suffix = 0
    while suffix < min(len(r), len(h)) and r[len(r) - 1 - suffix] == h[len(h) - 1 - suffix]:
        suffix += 1
    if suffix:
        r, h = r[: len(r) - suffix], h[: len(h) - suffix]
    n, m = len(r), len(h)

    # cost[i][j]: best weighted cost aligning r[:i] with h[:j]; move[i][j]: the step that reached it.
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    move = [[_DIAG] * (m + 1) for _ in range(n + 1)]
    for j in range(1, m + 1):
        cost[0][j] = COST_INS * j
        move[0][j] = _INS
    for i in range(1, n + 1):
        cost[i][0] = COST_DEL * i
        move[i][0] = _DEL
        prev, row, mrow, ri = cost[i - 1], cost[i], move[i], r[i - 1]
        for j in range(1, m + 1):
            diag = prev[j - 1] + (COST_CORRECT if ri == h[j - 1] else COST_SUB)
            dele = prev[j] + COST_DEL
            ins = row[j - 1] + COST_INS
            # sclite's order (net_dp.c): diagonal on ties with either, then deletion only if strictly
            # cheaper than insertion, else insertion.
            if diag <= dele and diag <= ins:
                row[j], mrow[j] = diag, _DIAG
            elif dele < ins:
                row[j], mrow[j] = dele, _DEL
            else:
                row[j], mrow[j] = ins, _INS

    ops: list[str] = []
    i, j = n, m
    while i > 0 or j > 0:
        step = move[i][j]
        if step == _DIAG:
            ops.append("C" if r[i - 1] == h[j - 1] else "S")
            i -= 1
            j -= 1
        elif step == _DEL:
            ops.append("D")
            i -= 1
        else:
            ops.append("I")
            j -= 1
    return Alignment(ref=ref_t, hyp=hyp_t, ops="".join(reversed(ops)) + "C" * suffix)


def _rate(count: int, n: int) -> float:
    # A set with no reference words: 0 errors is 0 %, any error is an unbounded rate.
    if n == 0:
        return 0.0 if count == 0 else math.inf
    return 100.0 * count / n


@dataclass(frozen=True)
class WerResult:
    """Corpus-level counts. Rates are percentages of ``n`` (reference words), unrounded."""

    n: int
    sub: int
    dele: int
    ins: int
    hit: int
    utterances: int

    @classmethod
    def from_alignments(cls, alignments: Iterable[Alignment]) -> WerResult:
        n = sub = dele = ins = hit = utts = 0
        for al in alignments:
            n += al.n
            sub += al.sub
            dele += al.dele
            ins += al.ins
            hit += al.hit
            utts += 1
        return cls(n=n, sub=sub, dele=dele, ins=ins, hit=hit, utterances=utts)

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def wer(self) -> float:
        """(ΣS + ΣD + ΣI) / ΣN in percent: sclite's "Percent Total Error", unrounded."""
        return _rate(self.errors, self.n)

    @property
    def sub_rate(self) -> float:
        return _rate(self.sub, self.n)

    @property
    def del_rate(self) -> float:
        return _rate(self.dele, self.n)

    @property
    def ins_rate(self) -> float:
        return _rate(self.ins, self.n)

    def to_dict(self) -> dict[str, float | int]:
        """Rates (``wer``, ``del``, ``ins``, ``sub``, percent) and counts (``S``, ``D``, ``I``, ``N``, …)."""
        return {
            "wer": self.wer,
            "del": self.del_rate,
            "ins": self.ins_rate,
            "sub": self.sub_rate,
            "S": self.sub,
            "D": self.dele,
            "I": self.ins,
            "N": self.n,
            "hit": self.hit,
            "utterances": self.utterances,
        }


def _describe_ids(ids: set[str], limit: int = 10) -> str:
    shown = sorted(ids)[:limit]
    more = f" (and {len(ids) - limit} more)" if len(ids) > limit else ""
    return ", ".join(shown) + more


def score_corpus(
    refs: Mapping[str, Sequence[str]],
    hyps: Mapping[str, Sequence[str]],
    empty_token: bool = True,
) -> tuple[WerResult, dict[str, Alignment]]:
    """Score a whole set the way the official pipeline + sclite does.

    ``refs`` and ``hyps`` map utterance id to already-normalised words and must hold the same ids;
    otherwise a ``ValueError`` names the offending ids (nothing is dropped silently).

    With ``empty_token=True`` (the official convention, docs/scoring.md#the-empty-word) an empty
    hypothesis is scored as the single word ``[EMPTY]``: 1 S + (N−1) D against N reference words, 1 I
    against an empty reference. ``empty_token=False`` gives what sclite reports when the id has no CTM
    words at all (N deletions).

    Returns the corpus totals and the per-utterance alignments in ``refs`` order.
    """
    missing = set(refs) - set(hyps)
    extra = set(hyps) - set(refs)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} reference id(s) have no hypothesis: {_describe_ids(missing)}")
        if extra:
            parts.append(f"{len(extra)} hypothesis id(s) are not in the references: {_describe_ids(extra)}")
        raise ValueError("; ".join(parts))

    alignments: dict[str, Alignment] = {}
    for utt_id, ref in refs.items():
        hyp = _check_words(hyps[utt_id], f"hyp[{utt_id!r}]")
        if not hyp and empty_token:
            hyp = (EMPTY,)
        alignments[utt_id] = align(ref, hyp)
    return WerResult.from_alignments(alignments.values()), alignments


def score_by_group(alignments: Mapping[str, Alignment], groups: Mapping[str, str]) -> dict[str, WerResult]:
    """Totals per group (e.g. per signer), keyed by group name in sorted order.

    Every utterance in ``alignments`` must have a group; ids only in ``groups`` are ignored (the
    mapping may cover a larger set than was scored).
    """
    ungrouped = set(alignments) - set(groups)
    if ungrouped:
        raise ValueError(f"{len(ungrouped)} utterance id(s) have no group: {_describe_ids(ungrouped)}")
    members: dict[str, list[Alignment]] = {}
    for utt_id, al in alignments.items():
        members.setdefault(groups[utt_id], []).append(al)
    return {g: WerResult.from_alignments(members[g]) for g in sorted(members)}


def format_alignment(al: Alignment, utt_id: str | None = None) -> str:
    """REF / HYP / Eval lines in the style of sclite's ``pra`` report.

    Gaps are ``***``; the Eval line marks S, D and I. Unlike sclite, words keep their case (gloss case
    is meaningful, e.g. ``loc-REGION``); equality is still case-insensitive.
    """
    ref_cells, hyp_cells, eval_cells = [], [], []
    for r, h, op in al.columns():
        rw = r if r is not None else "*" * 3
        hw = h if h is not None else "*" * 3
        width = max(len(rw), len(hw))
        ref_cells.append(rw.ljust(width))
        hyp_cells.append(hw.ljust(width))
        eval_cells.append(("" if op == "C" else op).ljust(width))
    lines = []
    if utt_id is not None:
        lines.append(f"id: {utt_id}")
    lines.append(f"Scores: (#C #S #D #I) {al.hit} {al.sub} {al.dele} {al.ins}")
    lines.append(("REF:  " + " ".join(ref_cells)).rstrip())
    lines.append(("HYP:  " + " ".join(hyp_cells)).rstrip())
    lines.append(("Eval: " + " ".join(eval_cells)).rstrip())
    return "\n".join(lines)
