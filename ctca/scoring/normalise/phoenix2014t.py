"""PHOENIX-2014-T official normalisation: ``evaluatePHOENIX-2014-T-signrecognition.sh`` in the
release's ``evaluation/sign-recognition/`` folder (its Python twin is ``clean_phoenix_2014_trans`` in
neccam/slt, but that one runs on whole sentences on both sides and differs; see docs/scoring.md#phoenix2014t).

Unlike PHOENIX-2014, **both sides** are rewritten:

Hypothesis, per CTM line (one gloss at a time), in this order:

1. drop glosses containing ``__LEFTHAND__``, ``__EPENTHESIS__`` or ``__EMOTION__``;
2. drop glosses that are a whole ``__X__`` token, X without ``_`` or space (``__ON__``, ``__OFF__``,
   ``__PU__``, …);
3. strip a leading ``loc-``; 4. strip a trailing ``-PLUSPLUS``; 5. strip a leading ``cl-``
   (once each, in this order, so ``cl-loc-X`` keeps ``loc-X``);
6. capitals followed by a final ``RAUM`` lose it when at least one capital precedes it and the
   capitals start at a word boundary (``NORDRAUM`` → ``NORD``, and also ``TRAUM`` → ``T``);
7. glosses left empty are dropped;
8. a gloss equal to the previous surviving gloss of the same utterance is dropped: consecutive
   repeats of *any* gloss merge, hyphenated ones included (``REGEN __EMOTION__ REGEN`` → ``REGEN``).

Kept: ``qu-``, ``poss-``, ``lh-``, ``neg-``, ``negalp-``, ``HABEN2``, ``S0NNE``, ``ZEIGEN``.

Reference, as one line of text per utterance (the script runs sed/perl on whole STM lines, so the
multi-word rules do fire here, and only here):

1. remove ``__LEFTHAND__``, ``__EPENTHESIS__``, ``__EMOTION__`` together with one adjacent space;
2. remove every ``__X__`` word (X without ``_`` or space), leaving its spaces behind;
3. ``loc-X`` → ``X``, 4. ``cl-X`` → ``X``, 5. ``X-PLUSPLUS`` → ``X``, 6. ``XRAUM`` → ``X`` (word-boundary
   anchored, one per word);
7. ``WIE AUSSEHEN`` → ``WIE-AUSSEHEN`` (plain substring);
8. finger-spelling compounds: single capitals (and the pieces ``SCH``/``NN``) separated by one space
   are joined with ``+`` by a fixed cascade of single-pass substitutions (the official scripts'
   letter-compounding rules, shared with the PHOENIX-2014 script, where they never fire);
9. immediate repetitions of a plain all-capital alphabetic word collapse, in 4 single passes
   (``REGEN REGEN`` → ``REGEN``; hyphenated or digit words such as ``NICHT-VIEL NICHT-VIEL`` stay).

On the shipped dev/test STMs the reference cleaning changes nothing.

Quirks kept on purpose -- do not improve these rules, or the numbers stop being comparable with the
official PHOENIX-2014-T results:

* the hypothesis side never joins ``WIE AUSSEHEN`` or spelled letters, but the reference side does,
  so a hypothesis ``A S`` scores S + I against the reference ``A S`` (cleaned to ``A+S``);
* removing an ``__X__`` reference word leaves two spaces, which stops the letter and ``WIE AUSSEHEN``
  rules from joining across it (``A __ON__ S`` stays ``A S``);
* the letter joins are a fixed cascade of single-pass substitutions that only know single capitals,
  ``SCH`` and ``NN``, not "join every run": ``NN A`` at the end of a line stays two words while
  ``NN A X`` becomes ``NN+A+X``, ``A NN X`` becomes ``A+NN X``, and ``A+B A+B`` becomes ``A+B+A+B``
  (its letters are single capitals), so it is reproduced substitution by substitution;
* ``TRAUM`` → ``T`` (no 14-T gloss is affected);
* word boundaries are those of sed in a UTF-8 locale (``Ä`` is a word character, so ``ÄNORDRAUM``
  keeps its ``RAUM``), while the repeat collapse, a perl one-liner reading bytes, only knows ASCII
  word characters (``ÄREGEN REGEN`` → ``ÄREGEN``); PHOENIX glosses are ASCII, so this never matters
  there;
* the repeat collapse halves a run per pass (left-to-right, non-overlapping), so a run of more than
  16 copies survives as more than one word.

The STM line starts with the utterance id and header fields, so the first gloss is always preceded by
a space and the start-of-line letter rule can never fire; we model the line as ``" " + glosses``
without trailing whitespace (the shipped STMs have none).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["normalise_hyp", "normalise_hyp_token", "normalise_ref", "normalise_ref_line"]

_HYP_DROP_IF_CONTAINS = ("__LEFTHAND__", "__EPENTHESIS__", "__EMOTION__")
_HYP_MARKER = re.compile(r"__[^_ ]*__")
_HYP_RAUM = re.compile(r"\b([A-Z]+)RAUM\Z")

# Word boundaries: the sed rules see the text in the (UTF-8) locale, where ``Ä`` is a word character,
# so they use Python's Unicode ``\b``; the perl repeat collapse sees bytes, so it is ASCII-only.

# Reference rules: (pattern, replacement) pairs applied in order, each as one global single pass.
_REF_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"__LEFTHAND__ "), ""),
    (re.compile(r" __LEFTHAND__"), ""),
    (re.compile(r" __EPENTHESIS__"), ""),
    (re.compile(r"__EPENTHESIS__ "), ""),
    (re.compile(r" __EMOTION__"), ""),
    (re.compile(r"__EMOTION__ "), ""),
    (re.compile(r"\b__[^_ ]*__\b"), ""),
    (re.compile(r"\bloc-([^ ]*)\b"), r"\1"),
    (re.compile(r"\bcl-([^ ]*)\b"), r"\1"),
    (re.compile(r"\b([^ ]*)-PLUSPLUS\b"), r"\1"),
    (re.compile(r"\b([A-Z][A-Z]*)RAUM\b"), r"\1"),
    (re.compile(r"WIE AUSSEHEN"), "WIE-AUSSEHEN"),
    # Letter compounding (the official scripts' cascade). Its first rule is anchored at the start of the
    # STM line, i.e. at the utterance id, so it cannot fire on glosses and is omitted.
    (re.compile(r"[ +]([A-Z]) ([A-Z]) "), r" \1+\2 "),
    (re.compile(r"([ +][A-Z]) ([A-Z][ +])"), r"\1+\2"),
    (re.compile(r"([ +][A-Z]) ([A-Z][ +])"), r"\1+\2"),
    (re.compile(r"([ +][A-Z]) ([A-Z][ +])"), r"\1+\2"),
    (re.compile(r"([ +]SCH) ([A-Z][ +])"), r"\1+\2"),
    (re.compile(r"([ +]NN) ([A-Z][ +])"), r"\1+\2"),
    (re.compile(r"([ +][A-Z]) (NN[ +])"), r"\1+\2"),
    (re.compile(r"([ +][A-Z]) ([A-Z])\Z"), r"\1+\2"),
)
_REPEAT = re.compile(r"(?<![\w-])(\b[A-Z]+(?![\w-])) \1(?![\w-])", re.ASCII)
_REPEAT_PASSES = 4


def _check_tokens(tokens: Sequence[str]) -> Sequence[str]:
    """Refuse a bare string, which would otherwise be normalised character by character."""
    if isinstance(tokens, str):
        raise TypeError(f"expected a sequence of glosses, not a str: {tokens!r}")
    return tokens


@lru_cache(maxsize=65536)  # pure function of the gloss
def normalise_hyp_token(token: str) -> str | None:
    """Hypothesis rules 1–7 for one gloss; ``None`` when the gloss is dropped (no repeat merge)."""
    if any(marker in token for marker in _HYP_DROP_IF_CONTAINS) or _HYP_MARKER.fullmatch(token):
        return None
    token = token.removeprefix("loc-")
    token = token.removesuffix("-PLUSPLUS")
    token = token.removeprefix("cl-")
    token = _HYP_RAUM.sub(r"\1", token)
    token = token.rstrip()
    return token or None


def normalise_hyp(tokens: Sequence[str]) -> list[str]:
    """Hypothesis rules for one utterance, ending with the merge of consecutive identical glosses."""
    out: list[str] = []
    for token in _check_tokens(tokens):
        norm = normalise_hyp_token(token)
        if norm is not None and (not out or out[-1] != norm):
            out.append(norm)
    return out


def normalise_ref_line(line: str) -> str:
    """The reference rules on one line of glosses (modelled as ``" " + " ".join(glosses)``)."""
    for pattern, replacement in _REF_RULES:
        line = pattern.sub(replacement, line)
    for _ in range(_REPEAT_PASSES):
        line = _REPEAT.sub(r"\1", line)
    return line


def normalise_ref(tokens: Sequence[str]) -> list[str]:
    """Reference rules for one utterance: clean the gloss line, then split it on whitespace."""
    return normalise_ref_line(" " + " ".join(_check_tokens(tokens))).split()
