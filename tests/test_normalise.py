"""Tests for ctca.scoring.normalise: the official PHOENIX-2014 / PHOENIX-2014-T rules, the VAC-compatible
and identity protocols, and the perfect-hypothesis floors on the shipped STMs (docs/scoring.md#scoring-protocols)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ctca.scoring.ctm import read_stm
from ctca.scoring.normalise import PROTOCOLS, Protocol, get_protocol
from ctca.scoring.normalise import phoenix2014 as p14
from ctca.scoring.normalise import phoenix2014t as p14t
from ctca.scoring.official import score_protocol

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VECTORS = SHARED_DATA / "wer_vectors.json"
STM = {
    ("phoenix2014", "dev"): SHARED_DATA / "phoenix2014" / "phoenix2014-groundtruth-dev.stm",
    ("phoenix2014", "test"): SHARED_DATA / "phoenix2014" / "phoenix2014-groundtruth-test.stm",
    ("phoenix2014t", "dev"): SHARED_DATA / "phoenix2014-T" / "phoenix2014-T-groundtruth-dev.stm",
    ("phoenix2014t", "test"): SHARED_DATA / "phoenix2014-T" / "phoenix2014-T-groundtruth-test.stm",
}


def _stm_refs(dataset: str, split: str) -> dict[str, tuple[str, ...]]:
    path = STM[dataset, split]
    if not path.exists():
        pytest.skip(f"{path} not present")
    return {utt: entry.words for utt, entry in read_stm(path).items()}


def _merge_repeats(words):
    out = []
    for w in words:
        if not out or out[-1] != w:
            out.append(w)
    return out


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_names_and_lookup():
    assert PROTOCOLS == ("phoenix2014", "phoenix2014t", "vac-compat", "none")
    for name in PROTOCOLS:
        proto = get_protocol(name)
        assert isinstance(proto, Protocol)
        assert proto.name == name
        assert proto.description


def test_unknown_protocol_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'phoenix'.*phoenix2014, phoenix2014t, vac-compat, none"):
        get_protocol("phoenix")


def test_protocol_is_frozen():
    with pytest.raises(AttributeError):
        get_protocol("none").name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("name", PROTOCOLS)
def test_a_bare_string_is_refused(name):
    proto = get_protocol(name)
    with pytest.raises(TypeError, match="not a str"):
        proto.hyp("REGEN SCHNEE")
    with pytest.raises(TypeError, match="not a str"):
        proto.ref("REGEN SCHNEE")


# ---------------------------------------------------------------------------------------------
# raw token -> normalised token, both official protocols (docs/scoring.md#phoenix2014, #phoenix2014t)

# (raw hypothesis, PHOENIX-2014 hyp, PHOENIX-2014-T hyp)
TABLE_5_4 = [
    (["__ON__"], ["__ON__"], []),
    (["__OFF__"], ["__OFF__"], []),
    (["__PU__"], [], []),
    (["__EMOTION__"], [], []),
    (["__LEFTHAND__"], [], []),
    (["__EPENTHESIS__"], [], []),
    (["loc-REGION"], ["REGION"], ["REGION"]),
    (["cl-KOMMEN-PLUSPLUS"], ["KOMMEN"], ["KOMMEN"]),
    (["loc-AUFLOESEN-PLUSPLUS"], ["AUFLOESEN"], ["AUFLOESEN"]),
    (["qu-DU"], ["DU"], ["qu-DU"]),
    (["poss-EUCH"], ["EUCH"], ["poss-EUCH"]),
    (["lh-HOCH"], ["HOCH"], ["lh-HOCH"]),
    (["neg-HABEN"], ["neg-HABEN"], ["neg-HABEN"]),
    (["negalp-KEIN"], ["negalp-KEIN"], ["negalp-KEIN"]),
    (["IX"], ["IX"], ["IX"]),
    (["S+H"], ["S+H"], ["S+H"]),
    (["WIE-AUSSEHEN"], ["WIE-AUSSEHEN"], ["WIE-AUSSEHEN"]),
    (["HABEN2"], ["HABEN"], ["HABEN2"]),
    (["S0NNE"], ["SONNE"], ["S0NNE"]),
    (["NORDRAUM"], ["NORD"], ["NORD"]),
    (["DEUTSCHLANDRAUM"], ["DEUTSCHLAND"], ["DEUTSCHLAND"]),
    (["TRAUM"], ["TRAUM"], ["T"]),
    (["RAUM"], ["RAUM"], ["RAUM"]),
    (["ZEIGEN"], ["ZEIGEN-BILDSCHIRM"], ["ZEIGEN"]),
    (["loc-ZEIGEN"], ["ZEIGEN-BILDSCHIRM"], ["ZEIGEN"]),
    (["REGEN", "__EMOTION__", "REGEN"], ["REGEN", "REGEN"], ["REGEN"]),
    (["WIE", "AUSSEHEN"], ["WIE", "AUSSEHEN"], ["WIE", "AUSSEHEN"]),
    (["A", "S"], ["A", "S"], ["A", "S"]),
]


@pytest.mark.parametrize(("raw", "official_2014", "official_2014t"), TABLE_5_4, ids=lambda v: " ".join(v))
def test_table_5_4(raw, official_2014, official_2014t):
    assert get_protocol("phoenix2014").hyp(raw) == official_2014
    assert get_protocol("phoenix2014t").hyp(raw) == official_2014t
    assert get_protocol("vac-compat").hyp(raw) == official_2014
    assert get_protocol("none").hyp(raw) == raw


def test_the_2014_reference_side_is_untouched_and_14t_joins_only_the_reference():
    raw = ["WIE", "AUSSEHEN", "A", "S", "REGEN", "REGEN"]
    assert get_protocol("phoenix2014").ref(raw) == raw
    assert get_protocol("vac-compat").ref(raw) == raw
    assert get_protocol("phoenix2014t").ref(raw) == ["WIE-AUSSEHEN", "A+S", "REGEN"]
    assert get_protocol("phoenix2014t").hyp(raw) == ["WIE", "AUSSEHEN", "A", "S", "REGEN"]


# ---------------------------------------------------------------------------------------------
# PHOENIX-2014 hypothesis rules in detail (docs/scoring.md#phoenix2014)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("neg-loc-REGION", "neg-REGION"),  # prefixes are deleted anywhere, not only at the start
        ("REGIONloc-", "REGION"),
        ("cl-loc-X", "X"),
        ("NORDRAUMRAUM", "NORDRAUM"),  # one left-to-right pass
        ("ZEIGEN-PLUSPLUS", "ZEIGEN"),  # -PLUSPLUS goes after the ZEIGEN rule has looked
        ("ZEIGEN__PU__", "ZEIGEN-BILDSCHIRM"),
        ("HABEN2-PLUSPLUS", "HABEN"),
        ("__EMO__EMOTION__TION__", None),  # the deletion leaves __EMOTION__, which drops the gloss
        ("X__EPENTHESIS__", None),
        ("-PLUSPLUS", None),
        ("loc-", None),
        ("regen", "regen"),  # case is sclite's business
    ],
)
def test_phoenix2014_token_rules(raw, expected):
    assert p14.normalise_token(raw) == expected


# ---------------------------------------------------------------------------------------------
# PHOENIX-2014-T rules in detail (docs/scoring.md#phoenix2014t)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("loc-cl-X", "X"),
        ("cl-loc-X", "loc-X"),  # loc- is stripped before cl-, once
        ("X-PLUSPLUS-PLUSPLUS", "X-PLUSPLUS"),
        ("neg-loc-X", "neg-loc-X"),  # only as a prefix
        ("KOMMEN-NORDRAUM", "KOMMEN-NORD"),
        ("xNORDRAUM", "xNORDRAUM"),  # the capitals must start at a word boundary
        ("__X_Y__", "__X_Y__"),  # an underscore inside: not an __X__ token
        ("____", None),
        ("loc-__ON__", "__ON__"),  # the __X__ filter ran before the prefix was stripped
        ("loc-", None),
        ("ÄNORDRAUM", "ÄNORDRAUM"),  # sed in a UTF-8 locale: Ä is a word character, no boundary
    ],
)
def test_phoenix2014t_hyp_token_rules(raw, expected):
    assert p14t.normalise_hyp_token(raw) == expected


def test_phoenix2014t_hyp_merges_any_repeat_after_dropping():
    raw = ["NICHT-VIEL", "NICHT-VIEL", "__PU__", "loc-NICHT-VIEL", "A", "A", "IX", "__ON__", "IX", "IX"]
    assert p14t.normalise_hyp(raw) == ["NICHT-VIEL", "A", "IX"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A S REGEN REGEN", "A+S REGEN"),
        ("X A B Y Z", "X+A+B+Y+Z"),
        ("A __ON__ S", "A S"),  # the removed word leaves two spaces behind: no join across it
        ("A __EMOTION__ S", "A+S"),  # removed with its space: the letters join
        ("NN A", "NN A"),
        ("NN A X", "NN+A+X"),
        ("A NN X", "A+NN X"),
        ("SCH A X", "SCH+A+X"),
        ("A+B A+B", "A+B+A+B"),
        ("NICHT-VIEL NICHT-VIEL", "NICHT-VIEL NICHT-VIEL"),
        ("REGEN REGEN REGEN REGEN REGEN", "REGEN"),
        (" ".join(["REGEN"] * 17), "REGEN REGEN"),  # 4 halving passes
        ("HABEN2 HABEN2", "HABEN2 HABEN2"),  # digits: not a plain capital word
        ("ZWIE AUSSEHENX", "ZWIE-AUSSEHENX"),
        ("ÄNORDRAUM ÄREGEN REGEN", "ÄNORDRAUM ÄREGEN"),  # sed: Unicode word chars; perl: ASCII
        ("loc-REGION-PLUSPLUS cl-KOMMEN NORDRAUM poss-EUCH neg-HABEN", "REGION KOMMEN NORD poss-EUCH neg-HABEN"),
        ("__ON__ __OFF__ __PU__", ""),
    ],
)
def test_phoenix2014t_reference_rules(raw, expected):
    assert get_protocol("phoenix2014t").ref(raw.split()) == expected.split()


@pytest.mark.parametrize("split", ["dev", "test"])
def test_phoenix2014t_reference_cleaning_is_a_no_op_on_the_shipped_stms(split):
    refs = _stm_refs("phoenix2014t", split)
    ref = get_protocol("phoenix2014t").ref
    changed = [utt for utt, words in refs.items() if ref(words) != list(words)]
    assert changed == []


# ---------------------------------------------------------------------------------------------
# Pipeline vectors of wer_vectors.json (docs/scoring.md#verification)

_NORMALISATION = {"phoenix2014_hyp": "phoenix2014", "phoenix2014T_hyp+ref": "phoenix2014t"}


def _pipeline_vectors():
    if not VECTORS.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{VECTORS} not present"), id="no-vectors")]
    cases = [c for c in json.loads(VECTORS.read_text()) if "normalisation" in c]
    return [pytest.param(c, id=c["id"]) for c in cases]


@pytest.mark.parametrize("case", _pipeline_vectors())
def test_pipeline_vectors(case):
    proto = get_protocol(_NORMALISATION[case["normalisation"]])
    assert proto.hyp(case["hyp_raw"]) == case["hyp"]
    ref_raw = case.get("ref_raw", case["ref"])
    assert proto.ref(ref_raw) == case["ref"]
    score = score_protocol({"u": ref_raw}, {"u": case["hyp_raw"]}, proto)
    expected = case["sclite"]
    assert score.alignments["u"].ops == expected["ops"]
    assert (score.result.sub, score.result.dele, score.result.ins, score.result.n) == (
        expected["sub"], expected["del"], expected["ins"], expected["n"]
    )


def test_there_are_pipeline_vectors_for_both_datasets():
    if not VECTORS.exists():
        pytest.skip(f"{VECTORS} not present")
    kinds = [c["normalisation"] for c in json.loads(VECTORS.read_text()) if "normalisation" in c]
    assert kinds.count("phoenix2014_hyp") == 4
    assert kinds.count("phoenix2014T_hyp+ref") == 3


# ---------------------------------------------------------------------------------------------
# vac-compat and none


_RAW_POOL = [
    "__ON__", "__OFF__", "__PU__", "__EMOTION__", "__LEFTHAND__", "__EPENTHESIS__", "loc-REGION",
    "cl-KOMMEN-PLUSPLUS", "qu-DU", "poss-EUCH", "lh-HOCH", "neg-HABEN", "HABEN2", "S0NNE", "NORDRAUM",
    "TRAUM", "RAUM", "ZEIGEN", "loc-ZEIGEN", "WIE", "AUSSEHEN", "A", "S", "SCH", "NN", "S+H", "IX",
    "REGEN", "NICHT-VIEL", "-PLUSPLUS", "loc-", "____", "__EMO__EMOTION__TION__", "吃饭", "Ärger",
]


def _random_utterances(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    utts = []
    for _ in range(n):
        words: list[str] = []
        for _ in range(rng.randint(0, 12)):
            words.append(words[-1] if words and rng.random() < 0.2 else rng.choice(_RAW_POOL))
        utts.append(words)
    return utts


def test_vac_compat_is_phoenix2014_hyp_with_a_raw_reference():
    vac, p2014 = get_protocol("vac-compat"), get_protocol("phoenix2014")
    for words in _random_utterances(500, seed=7):
        assert vac.hyp(words) == p2014.hyp(words)
        assert vac.ref(words) == words


def test_none_is_the_identity():
    none = get_protocol("none")
    for words in _random_utterances(200, seed=8):
        assert none.hyp(words) == words
        assert none.ref(words) == words
        assert none.hyp(tuple(words)) == words


@pytest.mark.parametrize("name", PROTOCOLS)
def test_never_an_empty_or_split_token(name):
    proto = get_protocol(name)
    for words in _random_utterances(1000, seed=9):
        for out in (proto.hyp(words), proto.ref(words)):
            assert all(w and not any(c.isspace() for c in w) for w in out), (words, out)


# ---------------------------------------------------------------------------------------------
# Perfect-hypothesis floors on the shipped STMs (docs/scoring.md#perfect-hypothesis-floors): (S, D, I)

FLOORS = [
    # dataset, split, protocol, merge repeats in the hypothesis, expected (S, D, I)
    ("phoenix2014", "dev", "phoenix2014", False, (0, 0, 0)),
    ("phoenix2014", "dev", "phoenix2014", True, (0, 5, 0)),
    ("phoenix2014", "test", "phoenix2014", False, (0, 0, 0)),
    ("phoenix2014", "test", "phoenix2014", True, (0, 10, 0)),
    ("phoenix2014", "dev", "vac-compat", False, (0, 0, 0)),
    ("phoenix2014", "dev", "vac-compat", True, (0, 5, 0)),
    ("phoenix2014", "test", "vac-compat", False, (0, 0, 0)),
    ("phoenix2014", "test", "vac-compat", True, (0, 10, 0)),
    ("phoenix2014t", "dev", "phoenix2014t", False, (0, 1, 0)),
    ("phoenix2014t", "dev", "phoenix2014t", True, (0, 1, 0)),
    ("phoenix2014t", "test", "phoenix2014t", False, (0, 5, 0)),
    ("phoenix2014t", "test", "phoenix2014t", True, (0, 5, 0)),
    ("phoenix2014t", "dev", "vac-compat", False, (13, 0, 0)),
    ("phoenix2014t", "dev", "vac-compat", True, (13, 1, 0)),
    ("phoenix2014t", "test", "vac-compat", False, (9, 0, 0)),
    ("phoenix2014t", "test", "vac-compat", True, (9, 5, 0)),
]


@pytest.mark.parametrize(
    ("dataset", "split", "protocol", "merged", "expected"),
    FLOORS,
    ids=[f"{d}-{s}-{p}{'-merged' if m else ''}" for d, s, p, m, _ in FLOORS],
)
def test_perfect_hypothesis_floor(dataset, split, protocol, merged, expected):
    refs = _stm_refs(dataset, split)
    hyps = {utt: (_merge_repeats(words) if merged else list(words)) for utt, words in refs.items()}
    score = score_protocol(refs, hyps, protocol)
    assert (score.result.sub, score.result.dele, score.result.ins) == expected
    assert score.result.n == {"phoenix2014": {"dev": 5540, "test": 6504},
                              "phoenix2014t": {"dev": 3748, "test": 4264}}[dataset][split]
    assert score.missing_hyp == ()
