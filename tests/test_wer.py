"""Tests for ctca.scoring.wer: sclite's reference vectors, hand cases, corpus/group totals, and parity
with the real sclite binary when it is installed."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
from itertools import permutations
from pathlib import Path

import pytest

from ctca.scoring.wer import (
    EMPTY,
    Alignment,
    WerResult,
    align,
    format_alignment,
    score_by_group,
    score_corpus,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VECTORS = SHARED_DATA / "wer_vectors.json"
SCLITE = Path("/usr/lib/sctk/bin/sclite")


def _vector_params():
    if not VECTORS.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{VECTORS} not present"), id="no-vectors")]
    return [pytest.param(case, id=case["id"]) for case in json.loads(VECTORS.read_text())]


def _counts(al: Alignment | WerResult) -> dict[str, int]:
    return {"sub": al.sub, "del": al.dele, "ins": al.ins, "n": al.n, "hit": al.hit}


# ---------------------------------------------------------------------------------------------
# Reference vectors scored by real sclite (docs/scoring.md#verification)


@pytest.mark.parametrize("case", _vector_params())
def test_sclite_vector(case):
    expected = case["sclite"]
    _, als = score_corpus({"u": case["ref"]}, {"u": case["hyp"]})
    al = als["u"]
    assert al.ops == expected["ops"]
    assert _counts(al) == {k: expected[k] for k in ("sub", "del", "ins", "n", "hit")}
    # The words sclite actually saw: `[EMPTY]` for an empty hypothesis, otherwise `hyp` as given.
    assert list(al.hyp) == case.get("sclite_hyp_scored", case["hyp"])
    assert align(case["ref"], al.hyp).ops == expected["ops"]

    if "sclite_without_empty_token" in case:
        without = case["sclite_without_empty_token"]
        _, als = score_corpus({"u": case["ref"]}, {"u": case["hyp"]}, empty_token=False)
        assert als["u"].ops == without["ops"]
        assert _counts(als["u"]) == {k: without[k] for k in ("sub", "del", "ins", "n", "hit")}


def test_all_vectors_present():
    if not VECTORS.exists():
        pytest.skip(f"{VECTORS} not present")
    cases = json.loads(VECTORS.read_text())
    assert len(cases) == 39
    assert len({c["id"] for c in cases}) == len(cases)


# ---------------------------------------------------------------------------------------------
# Hand-computable cases


@pytest.mark.parametrize(
    ("ref", "hyp", "ops"),
    [
        ([], [], ""),
        (["A"], ["A"], "C"),
        (["A"], ["B"], "S"),
        (["A"], [], "D"),
        ([], ["A"], "I"),
        (["A", "B"], ["B", "C"], "DCI"),  # D + I (cost 6) beats 2 S (cost 8)
        (["A", "B"], ["B"], "DC"),
        (["A", "A"], ["A"], "DC"),  # the deletion lands on the leftmost copy
        (["A"], ["A", "A"], "IC"),
        (["A"], ["B", "C"], "IS"),  # del/ins tie: insertion preferred, so it comes out first
        (["A", "B"], ["C"], "DS"),
        (["x", "Y"], ["X", "y"], "CC"),  # ASCII case folding
        (["Ä"], ["ä"], "S"),  # no folding outside ASCII
    ],
)
def test_hand_cases(ref, hyp, ops):
    al = align(ref, hyp)
    assert al.ops == ops
    assert al.n == len(ref)
    assert al.hit + al.sub + al.dele == len(ref)
    assert al.hit + al.sub + al.ins == len(hyp)


def test_weighted_cost_beats_levenshtein():
    # Levenshtein: 5 substitutions. sclite: 3 D + 3 I (cost 18 < 20), i.e. 6 errors.
    al = align(["A", "B", "C", "D", "E"], ["D", "E", "F", "G", "H"])
    assert (al.sub, al.dele, al.ins) == (0, 3, 3)
    assert al.ops == "DDDCCIII"


def test_alignment_columns_and_format():
    al = align(["MORGEN", "REGEN", "loc-NORD"], ["MORGEN", "SCHNEE", "LOC-NORD", "IX"])
    assert al.ops == "CSCI"
    assert al.columns() == [
        ("MORGEN", "MORGEN", "C"),
        ("REGEN", "SCHNEE", "S"),
        ("loc-NORD", "LOC-NORD", "C"),
        (None, "IX", "I"),
    ]
    text = format_alignment(al, utt_id="utt1")
    assert text.splitlines() == [
        "id: utt1",
        "Scores: (#C #S #D #I) 2 1 0 1",
        "REF:  MORGEN REGEN  loc-NORD ***",
        "HYP:  MORGEN SCHNEE LOC-NORD IX",
        "Eval:        S               I",
    ]
    deletion = format_alignment(align(["A", "LANG"], ["A"]))
    assert deletion.splitlines()[1:] == ["REF:  A LANG", "HYP:  A ***", "Eval:   D"]


def test_invalid_words_are_rejected():
    with pytest.raises(TypeError, match="not a str"):
        align("A B", ["A"])
    with pytest.raises(ValueError, match="invalid word"):
        align(["A", ""], ["A"])
    with pytest.raises(ValueError, match="invalid word"):
        align(["A"], ["A B"])


# ---------------------------------------------------------------------------------------------
# Corpus totals, [EMPTY], ids, groups


def test_corpus_totals_are_summed_counts_not_mean_of_rates():
    refs = {"a": ["X", "Y", "Z", "W"], "b": ["X"], "c": ["P", "Q"]}
    hyps = {"a": ["X", "Y", "Z", "W"], "b": ["Q"], "c": ["P", "Q", "R"]}
    result, als = score_corpus(refs, hyps)
    assert list(als) == ["a", "b", "c"]
    assert result == WerResult(n=7, sub=1, dele=0, ins=1, hit=6, utterances=3)
    assert result.wer == pytest.approx(100 * 2 / 7)  # per-utterance mean would be (0 + 100 + 50) / 3
    assert result.sub_rate == pytest.approx(100 / 7)
    assert result.ins_rate == pytest.approx(100 / 7)
    assert result.del_rate == 0.0
    assert result.to_dict() == {
        "wer": pytest.approx(200 / 7),
        "del": 0.0,
        "ins": pytest.approx(100 / 7),
        "sub": pytest.approx(100 / 7),
        "S": 1,
        "D": 0,
        "I": 1,
        "N": 7,
        "hit": 6,
        "utterances": 3,
    }


def test_empty_hypothesis_scores_empty_word():
    refs = {"a": ["X", "Y", "Z"], "b": []}
    hyps = {"a": [], "b": []}
    result, als = score_corpus(refs, hyps)
    assert als["a"].hyp == (EMPTY,)
    assert als["a"].ops == "DDS"
    assert als["b"].ops == "I"
    assert (result.sub, result.dele, result.ins, result.n) == (1, 2, 1, 3)

    result, als = score_corpus(refs, hyps, empty_token=False)
    assert als["a"].ops == "DDD"
    assert als["b"].ops == ""
    assert (result.sub, result.dele, result.ins, result.n) == (0, 3, 0, 3)


def test_empty_token_only_when_hypothesis_is_empty():
    _, als = score_corpus({"a": ["X"]}, {"a": ["X"]})
    assert als["a"].hyp == ("X",)


def test_zero_reference_words():
    result, _ = score_corpus({"a": []}, {"a": []}, empty_token=False)
    assert result.wer == 0.0
    result, _ = score_corpus({"a": []}, {"a": ["X"]})
    assert math.isinf(result.wer)


def test_missing_and_extra_ids_raise_naming_them():
    refs = {"a": ["X"], "b": ["Y"]}
    with pytest.raises(ValueError, match=r"1 reference id\(s\) have no hypothesis: b"):
        score_corpus(refs, {"a": ["X"]})
    with pytest.raises(ValueError, match=r"hypothesis id\(s\) are not in the references: zz"):
        score_corpus(refs, {"a": ["X"], "b": ["Y"], "zz": ["Z"]})
    with pytest.raises(ValueError, match=r"no hypothesis: b.*not in the references: c"):
        score_corpus(refs, {"a": ["X"], "c": ["Y"]})


def test_string_hypothesis_is_an_error():
    with pytest.raises(TypeError, match="hyp\\['a'\\]"):
        score_corpus({"a": ["X"]}, {"a": "X"})


def test_score_by_group():
    refs = {"u1": ["A", "B"], "u2": ["A"], "u3": ["C", "D", "E"]}
    hyps = {"u1": ["A", "B"], "u2": [], "u3": ["C", "E"]}
    total, als = score_corpus(refs, hyps)
    groups = {"u1": "signer01", "u2": "signer02", "u3": "signer01", "unscored": "signer09"}
    by = score_by_group(als, groups)
    assert list(by) == ["signer01", "signer02"]
    assert by["signer01"] == WerResult(n=5, sub=0, dele=1, ins=0, hit=4, utterances=2)
    assert by["signer02"] == WerResult(n=1, sub=1, dele=0, ins=0, hit=0, utterances=1)
    assert sum(r.errors for r in by.values()) == total.errors
    with pytest.raises(ValueError, match="no group: u2"):
        score_by_group(als, {"u1": "s", "u3": "s"})


# ---------------------------------------------------------------------------------------------
# Parity with the real sclite binary (docs/scoring.md#alignment)

_POOL = ["A", "B", "C", "D", "E", "F", "a", "b", "c"]  # lower-case twins exercise case folding
_PRIORITY = {"diag": 0, "del": 1, "ins": 2}


def _random_cases(n_cases: int, seed: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    cases = []
    for _ in range(n_cases):
        alphabet = rng.sample(_POOL, rng.randint(2, 6))
        ref = [rng.choice(alphabet) for _ in range(rng.randint(0, 9))]
        hyp = [rng.choice(alphabet) for _ in range(rng.randint(0, 9))]
        cases.append((ref, hyp))
    return cases


def _run_sclite(cases, workdir: Path) -> dict[str, str]:
    """Score the cases with sclite via PHOENIX-style STM/CTM; return op strings by utterance id."""
    stm, ctm = [], []
    for k, (ref, hyp) in enumerate(cases):
        utt = f"utt{k:05d}"
        stm.append(f"{utt} 1 signer{k % 7:02d} 0.0 1.79769e+308 {' '.join(ref)}".rstrip())
        if hyp:
            ctm.extend(f"{utt} 1 {j / 100:.2f} 0.01 {w}" for j, w in enumerate(hyp))
        else:
            ctm.append(f"{utt} 1 0.000 0.030 {EMPTY}")
    (workdir / "ref.stm").write_text("\n".join(stm) + "\n")
    (workdir / "hyp.ctm").write_text("\n".join(ctm) + "\n")
    proc = subprocess.run(
        [str(SCLITE), "-h", "hyp.ctm", "ctm", "-r", "ref.stm", "stm", "-f", "0", "-o", "sgml", "stdout"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    paths = re.findall(r'<PATH [^>]*\bfile="([^"]+)"[^>]*>\n(.*?)</PATH>', proc.stdout, flags=re.S)
    return {utt: "".join(item[0] for item in body.strip().split(":") if item) for utt, body in paths}


def _ops_with_tie_priority(ref, hyp, priority: tuple[str, ...]) -> str:
    """Independent oracle: the same weighted DP, breaking ties among minimal moves by `priority`.

    sclite's rule (diag if diag ≤ del and ≤ ins, else del if del < ins, else ins) is the priority
    diag > ins > del."""
    r = [w.lower() for w in ref]  # ASCII-only data here
    h = [w.lower() for w in hyp]
    rank = {m: priority.index(m) for m in _PRIORITY}
    cost = {(0, 0): (0, None)}
    for i in range(len(r) + 1):
        for j in range(len(h) + 1):
            if i == j == 0:
                continue
            cands = []
            if i and j:
                cands.append((cost[i - 1, j - 1][0] + (0 if r[i - 1] == h[j - 1] else 4), "diag"))
            if i:
                cands.append((cost[i - 1, j][0] + 3, "del"))
            if j:
                cands.append((cost[i, j - 1][0] + 3, "ins"))
            cost[i, j] = min(cands, key=lambda c: (c[0], rank[c[1]]))
    ops, i, j = [], len(r), len(h)
    while i or j:
        move = cost[i, j][1]
        if move == "diag":
            ops.append("C" if r[i - 1] == h[j - 1] else "S")
            i, j = i - 1, j - 1
        elif move == "del":
            ops.append("D")
            i -= 1
        else:
            ops.append("I")
            j -= 1
    return "".join(reversed(ops))


@pytest.mark.skipif(not SCLITE.exists(), reason=f"{SCLITE} not installed (apt-get install sctk)")
def test_parity_with_sclite_binary(tmp_path):
    cases = _random_cases(300, seed=20240521)
    sclite_ops = _run_sclite(cases, tmp_path)
    assert len(sclite_ops) == len(cases)

    refs = {f"utt{k:05d}": ref for k, (ref, _) in enumerate(cases)}
    hyps = {f"utt{k:05d}": hyp for k, (_, hyp) in enumerate(cases)}
    _, als = score_corpus(refs, hyps)
    mismatches = {utt: (al.ops, sclite_ops[utt]) for utt, al in als.items() if al.ops != sclite_ops[utt]}
    assert not mismatches, (
        f"{len(mismatches)} of {len(cases)} differ from sclite, e.g. {list(mismatches.items())[:5]}"
    )

    # The cases must be able to tell tie orders apart, else the parity above proves little.
    scored = [(ref, list(als[f"utt{k:05d}"].hyp)) for k, (ref, _) in enumerate(cases)]
    for priority in permutations(_PRIORITY):
        disagreements = sum(
            _ops_with_tie_priority(ref, hyp, priority) != sclite_ops[f"utt{k:05d}"]
            for k, (ref, hyp) in enumerate(scored)
        )
        if priority == ("diag", "ins", "del"):
            assert disagreements == 0
        else:
            assert disagreements > 0, f"tie order {priority} is indistinguishable on these cases"
