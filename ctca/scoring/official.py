"""Score a hypothesis set under a named protocol, the way the official pipeline + sclite does.

:func:`score_protocol` = the protocol's reference and hypothesis rules (:mod:`ctca.scoring.normalise`)
+ ``mergectmstm.py``'s handling of ids + sclite's alignment (:func:`ctca.scoring.wer.score_corpus`
with the ``[EMPTY]`` word) (docs/scoring.md#scoring-protocols, docs/scoring.md#the-empty-word).

Where the official pipeline is silent we are loud: a reference id with no hypothesis is scored as
``[EMPTY]`` exactly as ``mergectmstm.py`` does, but it is counted and listed (``missing_hyp``); a
hypothesis id that is not in the references is an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctca.scoring.normalise import Protocol, get_protocol
from ctca.scoring.wer import Alignment, WerResult, score_by_group, score_corpus

__all__ = ["ProtocolScore", "score_protocol"]

_SHOWN_IDS = 10


@dataclass(frozen=True)
class ProtocolScore:
    """Corpus result under one protocol.

    ``alignments`` are per utterance in reference order (the normalised words sclite saw and its op
    string); ``missing_hyp`` lists, sorted, the reference ids that had no hypothesis and were scored as
    ``[EMPTY]``; ``by_signer`` holds per-signer totals when signers were given.
    """

    protocol: str
    result: WerResult
    alignments: dict[str, Alignment]
    missing_hyp: tuple[str, ...] = ()
    by_signer: dict[str, WerResult] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        """The protocol, exact rates and counts, the missing ids and (if any) per-signer totals."""
        out: dict[str, Any] = {"protocol": self.protocol, **self.result.to_dict()}
        out["missing_hyp"] = len(self.missing_hyp)
        out["missing_hyp_ids"] = list(self.missing_hyp)
        if self.by_signer is not None:
            out["by_signer"] = {signer: res.to_dict() for signer, res in self.by_signer.items()}
        return out


def _describe(ids: Sequence[str]) -> str:
    more = f" (and {len(ids) - _SHOWN_IDS} more)" if len(ids) > _SHOWN_IDS else ""
    return ", ".join(ids[:_SHOWN_IDS]) + more


def score_protocol(
    refs: Mapping[str, Sequence[str]],
    hyps: Mapping[str, Sequence[str]],
    protocol: Protocol | str,
    signers: Mapping[str, str] | None = None,
) -> ProtocolScore:
    """Normalise ``refs`` and ``hyps`` (raw glosses per utterance id) with ``protocol`` and score them.

    Raises ``ValueError`` naming hypothesis ids that are not in ``refs``. Reference ids without a
    hypothesis are scored as an empty hypothesis (``[EMPTY]``) and reported in ``missing_hyp``.
    ``signers`` (id → signer, e.g. from the STM) adds per-signer totals.
    """
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise ValueError(f"{len(extra)} hypothesis id(s) are not in the references: {_describe(extra)}")
    missing = tuple(sorted(set(refs) - set(hyps)))

    norm_refs = {utt: proto.ref(words) for utt, words in refs.items()}
    norm_hyps = {utt: proto.hyp(hyps[utt]) if utt in hyps else [] for utt in refs}
    result, alignments = score_corpus(norm_refs, norm_hyps, empty_token=True)
    by_signer = score_by_group(alignments, signers) if signers is not None else None
    return ProtocolScore(
        protocol=proto.name,
        result=result,
        alignments=alignments,
        missing_hyp=missing,
        by_signer=by_signer,
    )
