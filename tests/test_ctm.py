"""Tests for ctca.scoring.ctm: CTM/STM writers and readers and the plain hypothesis text reader."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ctca.scoring.ctm import (
    STM_END_TIME,
    ScoringInputError,
    StmEntry,
    read_ctm,
    read_hyp_text,
    read_hypotheses,
    read_stm,
    write_ctm,
    write_stm,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
P14_DEV = SHARED_DATA / "phoenix2014" / "phoenix2014-groundtruth-dev.stm"


# ---------------------------------------------------------------------------------------------
# CTM


def test_ctm_round_trip(tmp_path):
    hyps = {"b-utt": ["REGEN", "loc-NORD", "REGEN"], "a_utt": ["__ON__"], "c": [], "d": ["S+H", "吃饭"]}
    path = tmp_path / "hyp.ctm"
    write_ctm(path, hyps)
    assert read_ctm(path) == hyps
    assert path.read_text().splitlines() == [
        "a_utt 1 0.00 0.01 __ON__",
        "b-utt 1 0.00 0.01 REGEN",
        "b-utt 1 0.01 0.01 loc-NORD",
        "b-utt 1 0.02 0.01 REGEN",
        "c 1 0.000 0.030 [EMPTY]",
        "d 1 0.00 0.01 S+H",
        "d 1 0.01 0.01 吃饭",
    ]


@pytest.mark.parametrize("n_words", [101, 999, 1000, 1234])
def test_written_begin_times_sort_lexically_in_numeric_order(tmp_path, n_words):
    rng = random.Random(n_words)
    words = [rng.choice(["A", "B", "C"]) for _ in range(n_words)]
    path = tmp_path / "hyp.ctm"
    write_ctm(path, {"utt": words, "other": ["X"]})
    begins = [line.split()[2] for line in path.read_text().splitlines() if line.startswith("utt ")]
    assert len(begins) == n_words
    assert len(set(begins)) == n_words
    assert sorted(begins) == begins  # what `sort -k1,1 -k3,3` does
    assert sorted(begins, key=float) == begins
    assert len({len(b) for b in begins}) == 1
    assert read_ctm(path)["utt"] == words


def test_ctm_words_are_ordered_by_numeric_begin_time(tmp_path):
    path = tmp_path / "hyp.ctm"
    path.write_text(
        ";; a comment\n"
        "\n"
        "u 1 10.00 0.01 THIRD\n"
        "u 1 9.99 0.01 SECOND 0.87\n"
        "v 1 0.00 0.01 ONLY\n"
        "u 1 0.5 0.01 FIRST\n"
        "   \n"
        "u 1 10.00 0.01 FOURTH"  # tie: file order; no trailing newline
    )
    assert read_ctm(path) == {"u": ["FIRST", "SECOND", "THIRD", "FOURTH"], "v": ["ONLY"]}


def test_ctm_empty_marker_reads_as_an_empty_hypothesis(tmp_path):
    path = tmp_path / "hyp.ctm"
    path.write_text("u 1 0.000 0.030 [EMPTY]\nv 1 0.00 0.01 [EMPTY]\nv 1 0.01 0.01 REGEN\n")
    assert read_ctm(path) == {"u": [], "v": ["[EMPTY]", "REGEN"]}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("u 1 0.00 REGEN", r"hyp\.ctm:2: expected a CTM line .* got 4 field"),
        ("u 1 0.00 0.01 REGEN 0.5 extra", r"hyp\.ctm:2: expected a CTM line .* got 7 field"),
        ("u 1 abc 0.01 REGEN", r"hyp\.ctm:2: expected a number for the begin time \(field 3\), got 'abc'"),
        ("u 1 0.00 nan REGEN", r"hyp\.ctm:2: expected a number for the duration"),
        ("u 1 0.00 0.01 REGEN high", r"hyp\.ctm:2: expected a number for the confidence"),
    ],
)
def test_malformed_ctm_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "hyp.ctm"
    path.write_text(f"u 1 0.00 0.01 OK\n{line}\n")
    with pytest.raises(ScoringInputError, match=message):
        read_ctm(path)


def test_scoring_input_error_is_a_value_error():
    assert issubclass(ScoringInputError, ValueError)


def test_non_utf8_file_is_an_input_error(tmp_path):
    path = tmp_path / "hyp.ctm"
    path.write_bytes(b"u 1 0.00 0.01 \xff\xfe\n")
    with pytest.raises(ScoringInputError, match=r"hyp\.ctm: not UTF-8"):
        read_ctm(path)
    with pytest.raises(ScoringInputError, match="not UTF-8"):
        read_hypotheses(path.rename(tmp_path / "hyp.txt"))


@pytest.mark.parametrize(
    "hyps",
    [{"u": "REGEN"}, {"u": ["A B"]}, {"u": [""]}, {"a b": ["A"]}],
    ids=["str-words", "space-in-gloss", "empty-gloss", "space-in-id"],
)
def test_writers_refuse_unwritable_words(tmp_path, hyps):
    with pytest.raises((TypeError, ValueError)):
        write_ctm(tmp_path / "hyp.ctm", hyps)
    with pytest.raises((TypeError, ValueError)):
        write_stm(tmp_path / "ref.stm", hyps)


# ---------------------------------------------------------------------------------------------
# STM


def test_stm_round_trip_in_phoenix_form(tmp_path):
    refs = {"u2": ["__ON__", "REGEN", "__OFF__"], "u1": ["S+H"], "u3": []}
    signers = {"u1": "signer05", "u2": "Signer04"}
    path = tmp_path / "ref.stm"
    write_stm(path, refs, signers)
    assert path.read_text() == (
        "u1 1 signer05 0.0 1.79769e+308 S+H\n"
        "u2 1 Signer04 0.0 1.79769e+308 __ON__ REGEN __OFF__\n"
        "u3 1 unknown 0.0 1.79769e+308\n"
    )
    assert read_stm(path) == {
        "u1": StmEntry("signer05", ("S+H",)),
        "u2": StmEntry("Signer04", ("__ON__", "REGEN", "__OFF__")),
        "u3": StmEntry("unknown", ()),
    }
    assert STM_END_TIME == "1.79769e+308"


def test_stm_comments_blank_lines_label_and_no_trailing_newline(tmp_path):
    path = tmp_path / "ref.stm"
    path.write_text(
        ';; CATEGORY "0" "" ""\n'
        "\n"
        "a 1 signer01 0.0 1.79769e+308 <o,f0,male> REGEN SCHNEE\n"
        "b 1 signer02 0.0 1.79769e+308 NORD REGION"
    )
    assert read_stm(path) == {
        "a": StmEntry("signer01", ("REGEN", "SCHNEE")),
        "b": StmEntry("signer02", ("NORD", "REGION")),
    }


def test_shipped_stm_without_trailing_newline():
    if not P14_DEV.exists():
        pytest.skip(f"{P14_DEV} not present")
    assert not P14_DEV.read_bytes().endswith(b"\n")
    stm = read_stm(P14_DEV)
    assert len(stm) == 540
    assert sum(len(e.words) for e in stm.values()) == 5540
    last_line = P14_DEV.read_text().splitlines()[-1].split()
    # not truncated, unlike VAC's Python evaluator (docs/scoring.md#other-scorers)
    assert stm[last_line[0]].words[-1] == last_line[-1] == "MOEGLICH"


def test_stm_duplicate_id_is_an_error(tmp_path):
    path = tmp_path / "ref.stm"
    path.write_text("a 1 s 0.0 1.79769e+308 X\nb 1 s 0.0 1.79769e+308 Y\na 1 s 0.0 1.79769e+308 Z\n")
    with pytest.raises(ScoringInputError, match=r"ref\.stm:3: duplicate utterance id 'a' \(first on line 1\)"):
        read_stm(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a 1 s 0.0", r"ref\.stm:1: expected an STM line .* got 4 field"),
        ("a 1 s zero 1.79769e+308 X", r"ref\.stm:1: expected a number for the begin time"),
        ("a 1 s 0.0 end X", r"ref\.stm:1: expected a number for the end time"),
        ("a 1 s 0.0 1.79769e+308 { REGEN / SCHNEE }", r"ref\.stm:1: STM alternations .* not supported"),
        ("a 1 s 0.0 1.79769e+308 REGEN (SCHNEE)", r"ref\.stm:1: .*optional '\(word\)'.*'\(SCHNEE\)'"),
    ],
)
def test_malformed_stm_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "ref.stm"
    path.write_text(line + "\n")
    with pytest.raises(ScoringInputError, match=message):
        read_stm(path)


# ---------------------------------------------------------------------------------------------
# Text hypotheses and format detection


def test_hyp_text_reader(tmp_path):
    path = tmp_path / "hyp.txt"
    path.write_text(";; decoded\nu1 REGEN SCHNEE\nu2\n\nu3 [EMPTY]\nu4   NORD\tREGION  ")
    assert read_hyp_text(path) == {"u1": ["REGEN", "SCHNEE"], "u2": [], "u3": [], "u4": ["NORD", "REGION"]}


def test_hyp_text_duplicate_id_is_an_error(tmp_path):
    path = tmp_path / "hyp.txt"
    path.write_text("u1 A\nu2 B\nu1 C\n")
    with pytest.raises(ScoringInputError, match=r"hyp\.txt:3: duplicate utterance id 'u1'"):
        read_hyp_text(path)


def test_read_hypotheses_formats(tmp_path):
    hyps = {"u1": ["REGEN", "SCHNEE"], "u2": []}
    ctm = tmp_path / "hyp.ctm"
    write_ctm(ctm, hyps)
    assert read_hypotheses(ctm) == hyps
    assert read_hypotheses(ctm, fmt="ctm") == hyps
    ctm_no_suffix = tmp_path / "decoded"
    ctm_no_suffix.write_text(ctm.read_text())
    assert read_hypotheses(ctm_no_suffix) == hyps  # content parses as CTM

    text = tmp_path / "hyp.txt"
    text.write_text("u1 REGEN SCHNEE\nu2\n")
    assert read_hypotheses(text) == hyps
    assert read_hypotheses(text, fmt="text") == hyps
    with pytest.raises(ScoringInputError, match=r"hyp\.txt:1: expected a CTM line"):
        read_hypotheses(text, fmt="ctm")

    bad_ctm = tmp_path / "bad.ctm"
    bad_ctm.write_text("u1 REGEN SCHNEE\n")
    with pytest.raises(ScoringInputError, match=r"bad\.ctm:1"):
        read_hypotheses(bad_ctm)  # a .ctm file is never reread as text
    with pytest.raises(ValueError, match="unknown hypothesis format 'xml'"):
        read_hypotheses(text, fmt="xml")


def test_missing_file_raises_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_stm(tmp_path / "missing.stm")
    with pytest.raises(FileNotFoundError):
        read_hypotheses(tmp_path / "missing.ctm")
