"""sclite's input files for PHOENIX-style scoring: CTM (hypothesis) and STM (reference) writers and
readers, plus a plain ``id gloss gloss …`` hypothesis text reader (docs/scoring.md#ctm-and-stm-files).

* STM: ``<id> 1 <signer> 0.0 1.79769e+308 <gloss> …``, one line per utterance. The segment spans
  0 … DBL_MAX, so every CTM word of that id falls inside it.
* CTM: ``<id> 1 <begin> <dur> <gloss> [conf]``, one line per word; the times only order the words.

Errors in input files raise :class:`ScoringInputError` naming ``file:line`` and what was expected;
nothing is skipped silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ctca.scoring.wer import EMPTY

__all__ = [
    "STM_END_TIME",
    "ScoringInputError",
    "StmEntry",
    "read_ctm",
    "read_hyp_text",
    "read_hypotheses",
    "read_stm",
    "write_ctm",
    "write_stm",
]

STM_END_TIME = "1.79769e+308"
"""The end time of every PHOENIX STM segment (DBL_MAX as printed by the release's tools)."""

EMPTY_CTM_TIMES = "0.000 0.030"  # what mergectmstm.py writes for an id without CTM words
_WORD_DURATION = "0.01"


class ScoringInputError(ValueError):
    """A hypothesis or reference file that cannot be scored; the message names ``file:line``."""


@dataclass(frozen=True)
class StmEntry:
    """One STM segment: the speaker field (the signer in PHOENIX) and the reference words."""

    signer: str
    words: tuple[str, ...]


def _check_field(value: str, what: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} must be a non-empty string without whitespace, got {value!r}")
    return value


def _check_words(utt_id: str, words: Sequence[str]) -> list[str]:
    if isinstance(words, str):
        raise TypeError(f"words of {utt_id!r} must be a sequence of glosses, not a str: {words!r}")
    return [_check_field(w, f"a gloss of {utt_id!r}") for w in words]


def _begin_times(n_words: int) -> list[str]:
    """Begin times j/100 for j < n_words, all of one width so that lexical order is numeric order.

    Below 1000 words this is VAC's ``%.2f`` (``0.00`` … ``9.99``); longer utterances are zero-padded
    (``00.00`` … ``10.00``), because the official script sorts the CTM with ``sort -k1,1 -k3,3``,
    a lexical sort on the begin time.
    """
    width = len(f"{max(n_words - 1, 0) / 100:.2f}")
    return [f"{j / 100:0{width}.2f}" for j in range(n_words)]


def write_ctm(path: str | Path, hyps: Mapping[str, Sequence[str]]) -> None:
    """Write one CTM line per hypothesis gloss, ids sorted, words in order.

    An utterance without words gets the line ``<id> 1 0.000 0.030 [EMPTY]``, as ``mergectmstm.py``
    writes it, so sclite scores ``[EMPTY]`` as a word (docs/scoring.md#the-empty-word).
    """
    lines = []
    for utt_id in sorted(hyps):
        _check_field(utt_id, "an utterance id")
        words = _check_words(utt_id, hyps[utt_id])
        if not words:
            lines.append(f"{utt_id} 1 {EMPTY_CTM_TIMES} {EMPTY}")
            continue
        for begin, word in zip(_begin_times(len(words)), words, strict=True):
            lines.append(f"{utt_id} 1 {begin} {_WORD_DURATION} {word}")
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_stm(
    path: str | Path,
    refs: Mapping[str, Sequence[str]],
    signers: Mapping[str, str] | None = None,
    default_signer: str = "unknown",
) -> None:
    """Write a PHOENIX-form STM: ``<id> 1 <signer> 0.0 1.79769e+308 <glosses>``, ids sorted.

    sclite walks the STM and the CTM in step, so both must list the ids in the same order; this
    writer and :func:`write_ctm` both sort by code point (the shipped STMs are not sorted, which is
    why the official scripts run ``sort -k1,1`` on them first).

    ``signers`` maps id to signer; ids it lacks (or all, when it is ``None``) get ``default_signer``.
    """
    lines = []
    for utt_id in sorted(refs):
        _check_field(utt_id, "an utterance id")
        signer = _check_field((signers or {}).get(utt_id, default_signer), f"the signer of {utt_id!r}")
        words = _check_words(utt_id, refs[utt_id])
        lines.append(" ".join([utt_id, "1", signer, "0.0", STM_END_TIME, *words]))
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` for every line that is not blank or a ``;;`` comment."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScoringInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith(";;"):
            yield number, stripped.split()


def _number(value: str, path: Path, number: int, what: str) -> float:
    try:
        out = float(value)
    except ValueError:
        out = math.nan
    if not math.isfinite(out):
        raise ScoringInputError(f"{path}:{number}: expected a number for {what}, got {value!r}")
    return out


def _collapse_empty(words: list[str]) -> list[str]:
    """An utterance whose only word is ``[EMPTY]`` has no hypothesis words (our writer's convention)."""
    return [] if words == [EMPTY] else words


def read_ctm(path: str | Path) -> dict[str, list[str]]:
    """Hypothesis words per utterance id from a CTM, ordered by numeric begin time (file order on ties).

    Lines are ``<id> <channel> <begin> <dur> <word> [<conf>]``; blank lines and ``;;`` comments are
    ignored. An utterance whose only word is ``[EMPTY]`` reads as an empty hypothesis.
    """
    path = Path(path)
    timed: dict[str, list[tuple[float, int, str]]] = {}
    for number, fields in _lines(path):
        if len(fields) not in (5, 6):
            raise ScoringInputError(
                f"{path}:{number}: expected a CTM line '<id> <channel> <begin> <dur> <word> [<conf>]', "
                f"got {len(fields)} field(s)"
            )
        begin = _number(fields[2], path, number, "the begin time (field 3)")
        _number(fields[3], path, number, "the duration (field 4)")
        if len(fields) == 6:
            _number(fields[5], path, number, "the confidence (field 6)")
        timed.setdefault(fields[0], []).append((begin, number, fields[4]))
    return {utt: _collapse_empty([w for _, _, w in sorted(words)]) for utt, words in timed.items()}


def _check_stm_words(words: list[str], path: Path, number: int) -> None:
    for word in words:
        if word in ("{", "}", "/", "@") or word.startswith(("{", "(")) or word.endswith((")", "}")):
            raise ScoringInputError(
                f"{path}:{number}: STM alternations '{{ a / b }}' and optional '(word)' are not "
                f"supported (PHOENIX uses neither), got {word!r}"
            )


def read_stm(path: str | Path) -> dict[str, StmEntry]:
    """Reference segments per utterance id from a PHOENIX-style STM.

    Lines are ``<id> <channel> <speaker> <begin> <end> [<label>] <words…>``; blank lines and ``;;``
    comments are ignored, a missing final newline is fine, a ``<…>`` label field is skipped. Duplicate
    ids, malformed lines and sclite's alternation/optional-word syntax raise :class:`ScoringInputError`.
    """
    path = Path(path)
    entries: dict[str, StmEntry] = {}
    first_line: dict[str, int] = {}
    for number, fields in _lines(path):
        if len(fields) < 5:
            raise ScoringInputError(
                f"{path}:{number}: expected an STM line '<id> <channel> <signer> <begin> <end> <words…>', "
                f"got {len(fields)} field(s)"
            )
        utt_id, _, signer = fields[:3]
        _number(fields[3], path, number, "the begin time (field 4)")
        _number(fields[4], path, number, "the end time (field 5)")
        words = fields[5:]
        if words and words[0].startswith("<") and words[0].endswith(">"):
            words = words[1:]
        _check_stm_words(words, path, number)
        if utt_id in entries:
            raise ScoringInputError(
                f"{path}:{number}: duplicate utterance id {utt_id!r} (first on line {first_line[utt_id]})"
            )
        entries[utt_id] = StmEntry(signer=signer, words=tuple(words))
        first_line[utt_id] = number
    return entries


def read_hyp_text(path: str | Path) -> dict[str, list[str]]:
    """Hypotheses from lines ``<id> <gloss> <gloss> …`` (an id alone is an empty hypothesis).

    Blank lines and ``;;`` comments are ignored; a repeated id raises :class:`ScoringInputError`.
    """
    path = Path(path)
    hyps: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for number, fields in _lines(path):
        utt_id = fields[0]
        if utt_id in hyps:
            raise ScoringInputError(
                f"{path}:{number}: duplicate utterance id {utt_id!r} (first on line {first_line[utt_id]})"
            )
        hyps[utt_id] = _collapse_empty(fields[1:])
        first_line[utt_id] = number
    return hyps


def read_hypotheses(path: str | Path, fmt: str = "auto") -> dict[str, list[str]]:
    """Read a hypothesis file as ``ctm``, ``text`` or ``auto``.

    ``auto`` reads a ``.ctm`` file, or any file whose content parses as CTM, as CTM; anything else as
    text (``id gloss gloss …``).
    """
    path = Path(path)
    if fmt == "ctm":
        return read_ctm(path)
    if fmt == "text":
        return read_hyp_text(path)
    if fmt != "auto":
        raise ValueError(f"unknown hypothesis format {fmt!r}; allowed: auto, ctm, text")
    if path.suffix.lower() == ".ctm":
        return read_ctm(path)
    try:
        return read_ctm(path)
    except ScoringInputError as exc:
        if "not UTF-8" in str(exc):
            raise
        return read_hyp_text(path)
