"""Dataset-specific gloss normalisation applied before scoring (docs/scoring.md#scoring-protocols).

The official WER of each dataset is sclite run on a hypothesis (and, for PHOENIX-2014-T, a
reference) rewritten by that dataset's evaluation script. Each protocol here reproduces one of those
scripts, quirks included, so that our in-process numbers equal the published ones:

* ``phoenix2014``: PHOENIX-2014 ``evaluation/evaluatePhoenix2014.sh`` (hypothesis rules per CTM line;
  the shipped reference is already clean and used as is).
* ``phoenix2014t``: PHOENIX-2014-T ``evaluatePHOENIX-2014-T-signrecognition.sh`` (hypothesis rules
  per CTM line with a repeat merge; reference cleaned as whole lines at evaluation time).
* ``vac-compat``: what VAC/CorrNet-family code does on every dataset: the PHOENIX-2014 hypothesis
  rules (VAC's ``evaluation/slr_eval/preprocess.sh``, byte-identical in CorrNet and TLP) against a raw
  reference. On PHOENIX-2014 it equals ``phoenix2014``; on PHOENIX-2014-T a correct ``poss-EUCH`` or
  ``HABEN2`` is rewritten on the hypothesis side only and scored as a substitution, 12 extra errors on
  dev and 4 on test for a perfect hypothesis (docs/scoring.md#perfect-hypothesis-floors). That is the
  point of the mode: do not improve it.
* ``none``: identity on both sides (CSL-Daily, which no official script normalises).

Record the protocol with every number: the same system scores differently under each.

The ``[EMPTY]`` word for an utterance left without hypothesis words is not added here; it is part of
scoring (:func:`ctca.scoring.wer.score_corpus`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ctca.scoring.normalise import phoenix2014, phoenix2014t

__all__ = ["PROTOCOLS", "Protocol", "get_protocol"]

Normaliser = Callable[[Sequence[str]], list[str]]


def _identity(tokens: Sequence[str]) -> list[str]:
    """Return the tokens unchanged (as a new list)."""
    if isinstance(tokens, str):
        raise TypeError(f"expected a sequence of glosses, not a str: {tokens!r}")
    return list(tokens)


@dataclass(frozen=True)
class Protocol:
    """A named scoring protocol: how hypothesis and reference glosses are rewritten before sclite.

    ``hyp`` and ``ref`` take one utterance's glosses (in order) and return the glosses sclite would
    see; neither ever returns an empty-string token.
    """

    name: str
    description: str
    hyp: Normaliser
    ref: Normaliser


_REGISTRY: dict[str, Protocol] = {
    "phoenix2014": Protocol(
        name="phoenix2014",
        description="official PHOENIX-2014 (evaluatePhoenix2014.sh): hypothesis rules per gloss, "
        "reference as shipped",
        hyp=phoenix2014.normalise_hyp,
        ref=phoenix2014.normalise_ref,
    ),
    "phoenix2014t": Protocol(
        name="phoenix2014t",
        description="official PHOENIX-2014-T (evaluatePHOENIX-2014-T-signrecognition.sh): hypothesis "
        "rules per gloss with repeat merge, reference cleaned as whole lines",
        hyp=phoenix2014t.normalise_hyp,
        ref=phoenix2014t.normalise_ref,
    ),
    "vac-compat": Protocol(
        name="vac-compat",
        description="VAC/CorrNet family: PHOENIX-2014 hypothesis rules (preprocess.sh) on every "
        "dataset, raw reference",
        hyp=phoenix2014.normalise_hyp,
        ref=_identity,
    ),
    "none": Protocol(
        name="none",
        description="no normalisation on either side (CSL-Daily)",
        hyp=_identity,
        ref=_identity,
    ),
}

PROTOCOLS: tuple[str, ...] = tuple(_REGISTRY)
"""Protocol names accepted by :func:`get_protocol`."""


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; ``ValueError`` naming the allowed names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown scoring protocol {name!r}; allowed: {', '.join(PROTOCOLS)}"
        ) from None
