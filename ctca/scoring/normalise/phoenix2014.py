"""PHOENIX-2014 official normalisation: ``evaluation/evaluatePhoenix2014.sh`` of the PHOENIX-2014
release (and VAC/CorrNet's ``evaluation/slr_eval/preprocess.sh``, which is its hypothesis part).

The script rewrites the hypothesis CTM with sed/grep/perl **one CTM line at a time**, i.e. one gloss
per rule application (docs/scoring.md#phoenix2014). Its multi-word rules (``WIE AUSSEHEN`` →
``WIE-AUSSEHEN``, joining single letters with ``+``, collapsing repeated glosses) therefore never
match and are not reproduced. What remains, per gloss and in this order:

1. delete the substrings ``loc-``, ``cl-``, ``qu-``, ``poss-``, ``lh-`` anywhere in the gloss;
2. ``S0NNE`` → ``SONNE`` and ``HABEN2`` → ``HABEN`` (substring replacements);
3. delete the substrings ``__EMOTION__``, ``__PU__``, ``__LEFTHAND__``;
4. a gloss ending in ``ZEIGEN`` gets ``-BILDSCHIRM`` appended (``loc-ZEIGEN`` → ``ZEIGEN-BILDSCHIRM``);
5. two capitals followed by ``RAUM`` lose the ``RAUM``, anywhere (``NORDRAUM`` → ``NORD``; ``TRAUM``
   and ``RAUM`` stay);
6. delete ``-PLUSPLUS`` anywhere;
7. drop glosses still containing ``__LEFTHAND__``, ``__EPENTHESIS__`` or ``__EMOTION__``;
8. drop glosses left empty.

Everything else is kept, notably ``__ON__``/``__OFF__`` (scored in PHOENIX-2014), ``IX`` and ``neg-``.

Quirks kept on purpose -- do not improve these rules, or the numbers stop being comparable with
published PHOENIX-2014 results:

* prefixes are deleted as substrings, not only at the start (``neg-loc-X`` → ``neg-X``);
* a hypothesis ``WIE AUSSEHEN`` stays two words and scores S + I against ``WIE-AUSSEHEN``;
  spelled letters ``S H`` are not joined into ``S+H``;
* repeated glosses are not merged, including repeats created by a dropped gloss
  (``REGEN __EMOTION__ REGEN`` → ``REGEN REGEN``);
* deletions are single left-to-right passes (as ``sed s/…//g``), so ``__EMO__EMOTION__TION__`` leaves
  ``__EMOTION__``, which rule 7 then drops.

The reference STM shipped with PHOENIX-2014 is already cleaned and is used unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["normalise_hyp", "normalise_ref", "normalise_token"]

_DELETED_PREFIXES = ("loc-", "cl-", "qu-", "poss-", "lh-")
_TYPO_FIXES = (("S0NNE", "SONNE"), ("HABEN2", "HABEN"))
_DELETED_MARKERS = ("__EMOTION__", "__PU__", "__LEFTHAND__")
_DROP_IF_CONTAINS = ("__LEFTHAND__", "__EPENTHESIS__", "__EMOTION__")
_RAUM = re.compile(r"([A-Z][A-Z])RAUM")


def _check_tokens(tokens: Sequence[str]) -> Sequence[str]:
    """Refuse a bare string, which would otherwise be normalised character by character."""
    if isinstance(tokens, str):
        raise TypeError(f"expected a sequence of glosses, not a str: {tokens!r}")
    return tokens


@lru_cache(maxsize=65536)  # a pure function of the gloss; a corpus has a few thousand distinct ones
def normalise_token(token: str) -> str | None:
    """One hypothesis gloss as the official script leaves it; ``None`` when the gloss is dropped."""
    for prefix in _DELETED_PREFIXES:
        token = token.replace(prefix, "")
    for old, new in _TYPO_FIXES:
        token = token.replace(old, new)
    for marker in _DELETED_MARKERS:
        token = token.replace(marker, "")
    if token.endswith("ZEIGEN"):
        token += "-BILDSCHIRM"
    token = _RAUM.sub(r"\1", token)
    token = token.replace("-PLUSPLUS", "")
    if any(marker in token for marker in _DROP_IF_CONTAINS):
        return None
    token = token.rstrip()
    return token or None


def normalise_hyp(tokens: Sequence[str]) -> list[str]:
    """Apply the per-gloss hypothesis rules to one utterance; dropped glosses disappear."""
    out = []
    for token in _check_tokens(tokens):
        norm = normalise_token(token)
        if norm is not None:
            out.append(norm)
    return out


def normalise_ref(tokens: Sequence[str]) -> list[str]:
    """The shipped PHOENIX-2014 reference is used as is: return the glosses unchanged."""
    return list(_check_tokens(tokens))
