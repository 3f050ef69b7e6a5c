"""Tests for ctca.scoring.official and the ``ctca score`` command, including whole-corpus parity with
Debian's sclite on perturbed PHOENIX-2014 / PHOENIX-2014-T hypotheses (docs/scoring.md)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ctca.cli import main
from ctca.scoring.ctm import read_stm, write_ctm, write_stm
from ctca.scoring.normalise import get_protocol
from ctca.scoring.official import ProtocolScore, score_protocol
from ctca.scoring.wer import EMPTY, WerResult

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SCLITE = Path("/usr/lib/sctk/bin/sclite")
STM = {
    "phoenix2014-dev": SHARED_DATA / "phoenix2014" / "phoenix2014-groundtruth-dev.stm",
    "phoenix2014-test": SHARED_DATA / "phoenix2014" / "phoenix2014-groundtruth-test.stm",
    "phoenix2014t-dev": SHARED_DATA / "phoenix2014-T" / "phoenix2014-T-groundtruth-dev.stm",
    "phoenix2014t-test": SHARED_DATA / "phoenix2014-T" / "phoenix2014-T-groundtruth-test.stm",
}


def _stm(corpus: str) -> Path:
    path = STM[corpus]
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


# ---------------------------------------------------------------------------------------------
# score_protocol


def test_score_protocol_normalises_both_sides_and_scores_with_empty():
    refs = {"a": ["WIE", "AUSSEHEN", "REGEN"], "b": ["NORD", "SUED"], "c": ["X"]}
    hyps = {"a": ["WIE", "AUSSEHEN", "__ON__", "REGEN", "REGEN"], "b": ["__PU__"]}
    score = score_protocol(refs, hyps, "phoenix2014t", signers={"a": "s1", "b": "s2", "c": "s1"})
    assert isinstance(score, ProtocolScore)
    assert score.protocol == "phoenix2014t"
    assert score.missing_hyp == ("c",)
    assert score.alignments["a"].ref == ("WIE-AUSSEHEN", "REGEN")
    assert score.alignments["a"].hyp == ("WIE", "AUSSEHEN", "REGEN")
    assert score.alignments["b"].hyp == (EMPTY,)
    assert score.alignments["c"].hyp == (EMPTY,)
    assert list(score.alignments) == ["a", "b", "c"]
    assert score.result == WerResult(n=5, sub=3, dele=1, ins=1, hit=1, utterances=3)
    assert score.by_signer == {
        "s1": WerResult(n=3, sub=2, dele=0, ins=1, hit=1, utterances=2),
        "s2": WerResult(n=2, sub=1, dele=1, ins=0, hit=0, utterances=1),
    }
    d = score.to_dict()
    assert d["protocol"] == "phoenix2014t"
    assert d["missing_hyp"] == 1 and d["missing_hyp_ids"] == ["c"]
    assert d["S"] == 3 and d["wer"] == pytest.approx(100.0)
    assert d["by_signer"]["s2"]["D"] == 1
    json.dumps(d)


def test_score_protocol_accepts_a_protocol_object_and_no_signers():
    score = score_protocol({"a": ["HABEN"]}, {"a": ["HABEN2"]}, get_protocol("vac-compat"))
    assert score.protocol == "vac-compat"
    assert score.result.errors == 0
    assert score.by_signer is None
    assert "by_signer" not in score.to_dict()
    assert score_protocol({"a": ["HABEN"]}, {"a": ["HABEN2"]}, "none").result.sub == 1


def test_hypothesis_ids_not_in_the_references_are_an_error():
    with pytest.raises(ValueError, match=r"2 hypothesis id\(s\) are not in the references: x, y"):
        score_protocol({"a": ["A"]}, {"a": ["A"], "y": ["B"], "x": []}, "none")


def test_unknown_protocol_name():
    with pytest.raises(ValueError, match="unknown scoring protocol 'phoenix'"):
        score_protocol({"a": ["A"]}, {"a": ["A"]}, "phoenix")


def test_missing_hypothesis_counts_as_empty_like_mergectmstm():
    refs = {"a": ["A", "B", "C"], "b": ["D"]}
    score = score_protocol(refs, {"b": ["D"]}, "phoenix2014")
    assert score.missing_hyp == ("a",)
    assert (score.result.sub, score.result.dele, score.result.ins) == (1, 2, 0)  # [EMPTY]: 1 S + 2 D


# ---------------------------------------------------------------------------------------------
# Perturbed raw-style hypotheses (shared by the CLI and the sclite parity tests)

_RAW_EXTRAS = [
    "loc-REGION", "loc-NORD", "cl-KOMMEN", "cl-KOMMEN-PLUSPLUS", "KOMMEN-PLUSPLUS", "loc-AUFLOESEN-PLUSPLUS",
    "__EMOTION__", "__PU__", "__LEFTHAND__", "__EPENTHESIS__", "__ON__", "__OFF__", "HABEN2", "S0NNE",
    "NORDRAUM", "DEUTSCHLANDRAUM", "SUEDRAUM", "TRAUM", "ZEIGEN", "loc-ZEIGEN", "poss-EUCH", "qu-DU",
    "lh-HOCH", "neg-HABEN", "WIE", "AUSSEHEN", "A", "S", "SCH", "NN",
]
_DECORATIONS = (lambda w: f"loc-{w}", lambda w: f"cl-{w}", lambda w: f"{w}-PLUSPLUS")


def _perturb(refs: dict[str, tuple[str, ...]], seed: int) -> tuple[dict[str, list[str]], set[str]]:
    """Raw-style hypotheses: ~8 % deletions, 8 % substitutions, 5 % insertions, decorated and repeated
    glosses, dropped-only and empty utterances; a few ids are left out. Returns (hyps, left-out ids)."""
    rng = random.Random(seed)
    vocab = sorted({w for words in refs.values() for w in words})
    left_out: set[str] = set()
    hyps: dict[str, list[str]] = {}

    def other() -> str:
        return rng.choice(_RAW_EXTRAS) if rng.random() < 0.3 else rng.choice(vocab)

    for utt in sorted(refs):
        r = rng.random()
        if r < 0.01:
            left_out.add(utt)
            continue
        if r < 0.02:
            hyps[utt] = []
            continue
        if r < 0.03:
            hyps[utt] = ["__PU__", "__EMOTION__"]
            continue
        words: list[str] = []
        for w in refs[utt]:
            x = rng.random()
            if x < 0.08:
                pass
            elif x < 0.16:
                words.append(other())
            else:
                words.append(rng.choice(_DECORATIONS)(w) if rng.random() < 0.05 else w)
                if rng.random() < 0.04:
                    words.extend(["__EMOTION__", w] if rng.random() < 0.3 else [w])
            if rng.random() < 0.05:
                words.append(other())
        hyps[utt] = words
    return hyps, left_out


# ---------------------------------------------------------------------------------------------
# The `ctca score` command

_PERFECT = [
    # protocol, corpus, expected (S, D, I) of a perfect raw hypothesis (docs/scoring.md#perfect-hypothesis-floors)
    ("phoenix2014", "phoenix2014-dev", (0, 0, 0)),
    ("phoenix2014t", "phoenix2014t-dev", (0, 1, 0)),
    ("vac-compat", "phoenix2014t-dev", (13, 0, 0)),
    ("none", "phoenix2014t-test", (0, 0, 0)),
]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctca.cli", "score", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("protocol", "corpus", "expected"), _PERFECT, ids=[p for p, _, _ in _PERFECT])
def test_cli_json_on_the_official_stms(tmp_path, protocol, corpus, expected):
    stm_path = _stm(corpus)
    stm = read_stm(stm_path)
    refs = {utt: e.words for utt, e in stm.items()}
    ctm = tmp_path / "perfect.ctm"
    write_ctm(ctm, refs)
    proc = _cli(str(ctm), str(stm_path), "--protocol", protocol, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["protocol"] == protocol
    assert (out["S"], out["D"], out["I"]) == expected
    assert out["N"] == sum(len(get_protocol(protocol).ref(w)) for w in refs.values())
    assert out["utterances"] == len(refs)
    assert out["missing_hyp"] == 0

    # A perturbed text hypothesis with ids left out: same numbers as the library, exactly.
    hyps, left_out = _perturb(refs, seed=len(protocol))
    text = tmp_path / "hyp.txt"
    text.write_text("".join(" ".join([utt, *words]) + "\n" for utt, words in hyps.items()))
    proc = _cli(str(text), str(stm_path), "--protocol", protocol, "--json", "--format", "text")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    signers = {utt: e.signer for utt, e in stm.items()}
    assert out == json.loads(json.dumps(score_protocol(refs, hyps, protocol, signers).to_dict()))
    assert out["missing_hyp"] == len(left_out) > 0
    assert set(out["missing_hyp_ids"]) == left_out
    assert set(out["by_signer"]) == set(signers.values())


@pytest.mark.parametrize(("protocol", "corpus", "expected"), _PERFECT, ids=[p for p, _, _ in _PERFECT])
def test_cli_text_output(tmp_path, capsys, protocol, corpus, expected):
    stm_path = _stm(corpus)
    refs = {utt: e.words for utt, e in read_stm(stm_path).items()}
    ctm = tmp_path / "perfect.ctm"
    write_ctm(ctm, refs)
    assert main(["score", str(ctm), str(stm_path), "--protocol", protocol]) == 0
    lines = capsys.readouterr().out.splitlines()
    score = score_protocol(refs, refs, protocol).result
    s, d, i = expected
    assert lines == [
        f"protocol: {protocol}",
        f"WER {score.wer:.2f}  del {score.del_rate:.2f}  ins {score.ins_rate:.2f}  sub {score.sub_rate:.2f}",
        f"S {s}  D {d}  I {i}  N {score.n}  utterances {len(refs)}",
        "references without hypothesis (scored as [EMPTY]): 0",
    ]


def test_cli_text_output_by_subprocess_with_missing_hypotheses(tmp_path):
    stm_path = _stm("phoenix2014t-dev")
    refs = {utt: e.words for utt, e in read_stm(stm_path).items()}
    kept = dict(list(refs.items())[3:])
    ctm = tmp_path / "hyp.ctm"
    write_ctm(ctm, kept)
    proc = _cli(str(ctm), str(stm_path), "--protocol", "phoenix2014t")
    assert proc.returncode == 0, proc.stderr
    score = score_protocol(refs, kept, "phoenix2014t").result
    assert proc.stdout.splitlines() == [
        "protocol: phoenix2014t",
        f"WER {score.wer:.2f}  del {score.del_rate:.2f}  ins {score.ins_rate:.2f}  sub {score.sub_rate:.2f}",
        f"S {score.sub}  D {score.dele}  I {score.ins}  N {score.n}  utterances {len(refs)}",
        "references without hypothesis (scored as [EMPTY]): 3",
    ]
    assert score.sub == 3  # one [EMPTY] substitution per missing utterance


def _write_small_stm(path: Path) -> None:
    write_stm(path, {"u1": ["REGEN", "SCHNEE"], "u2": ["NORD"]}, {"u1": "s1", "u2": "s2"})


@pytest.mark.parametrize(
    ("hyp_text", "ref_is_bad", "message"),
    [
        ("u1 1 0.00 0.01 REGEN\nu1 1 zero 0.01 SCHNEE\n", False, r"hyp\.ctm:2: expected a number for the begin time"),
        ("u1 1 0.00 0.01 REGEN\nzz 1 0.00 0.01 NORD\n", False, r"hyp\.ctm does not match .*ref\.stm.*: zz"),
        ("u1 1 0.00 0.01 REGEN\n", True, r"ref\.stm:3: duplicate utterance id 'u1' \(first on line 1\)"),
    ],
    ids=["malformed-ctm", "unknown-id", "duplicate-ref-id"],
)
def test_cli_bad_files_exit_2_with_one_line(tmp_path, hyp_text, ref_is_bad, message):
    import re

    ref, hyp = tmp_path / "ref.stm", tmp_path / "hyp.ctm"
    _write_small_stm(ref)
    if ref_is_bad:
        ref.write_text(ref.read_text() + "u1 1 s1 0.0 1.79769e+308 X\n")
    hyp.write_text(hyp_text)
    proc = _cli(str(hyp), str(ref), "--protocol", "phoenix2014")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert re.search(message, proc.stderr), proc.stderr


def test_cli_missing_file_exits_2(tmp_path, capsys):
    ref = tmp_path / "ref.stm"
    _write_small_stm(ref)
    missing = tmp_path / "nothing.ctm"
    assert main(["score", str(missing), str(ref), "--protocol", "none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "No such file" in err
    assert main(["score", str(ref), str(tmp_path / "nothing.stm"), "--protocol", "none"]) == 2
    assert "nothing.stm" in capsys.readouterr().err


def test_cli_protocol_is_required_and_checked(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["score", "h.ctm", "r.stm"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["score", "h.ctm", "r.stm", "--protocol", "phoenix"])
    assert exc.value.code == 2


# ---------------------------------------------------------------------------------------------
# Whole-corpus parity with Debian's sclite run as the official scripts run it (docs/scoring.md#verification)

_PARITY = [
    ("phoenix2014-dev", "phoenix2014"),
    ("phoenix2014-dev", "vac-compat"),
    ("phoenix2014-dev", "none"),
    ("phoenix2014-test", "phoenix2014"),
    ("phoenix2014-test", "vac-compat"),
    ("phoenix2014-test", "none"),
    ("phoenix2014t-dev", "phoenix2014t"),
    ("phoenix2014t-dev", "vac-compat"),
    ("phoenix2014t-dev", "none"),
    ("phoenix2014t-test", "phoenix2014t"),
    ("phoenix2014t-test", "vac-compat"),
    ("phoenix2014t-test", "none"),
]


def _run_official_sclite(workdir: Path) -> tuple[dict[str, list[tuple[str, str, str]]], dict[str, tuple[int, ...]]]:
    """sclite as the official scripts call it on ``hyp.ctm`` / ``ref.stm`` in ``workdir``.

    Returns the per-utterance ``(op, ref word, hyp word)`` lists from the sgml report (words lower case,
    as sclite writes them) and the ``rsum`` rows by speaker (and ``Sum``): (#Snt, #Wrd, Corr, Sub, Del,
    Ins)."""
    import re

    subprocess.run(
        [str(SCLITE), "-h", "hyp.ctm", "ctm", "-r", "ref.stm", "stm", "-f", "0", "-o", "sgml", "sum", "rsum", "pra"],
        cwd=workdir, capture_output=True, text=True, check=True, timeout=300,
    )
    sgml = (workdir / "hyp.ctm.sgml").read_text()
    paths: dict[str, list[tuple[str, str, str]]] = {}
    for utt, body in re.findall(r'<PATH [^>]*\bfile="([^"]+)"[^>]*>\n(.*?)</PATH>', sgml, flags=re.S):
        items = [item.split(",") for item in body.strip().split(":") if item]
        paths[utt] = [(f[0], f[1].strip('"'), f[2].strip('"')) for f in items]
    rows = {}
    row = re.compile(r"^\s*\|\s*(\S+)\s*\|\s*(\d+)\s+(\d+)\s*\|\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+\d+\s*\|")
    for line in (workdir / "hyp.ctm.raw").read_text().splitlines():
        m = row.match(line)
        if m:
            rows[m.group(1)] = tuple(int(v) for v in m.groups()[1:])
    return paths, rows


def _our_columns(al) -> list[tuple[str, str, str]]:
    return [(op, (r or "").lower(), (h or "").lower()) for r, h, op in al.columns()]


@pytest.mark.skipif(not SCLITE.exists(), reason=f"{SCLITE} not installed (apt-get install sctk)")
@pytest.mark.parametrize(("corpus", "protocol"), _PARITY, ids=[f"{c}-{p}" for c, p in _PARITY])
def test_whole_corpus_parity_with_sclite(tmp_path, corpus, protocol):
    stm = read_stm(_stm(corpus))
    refs = {utt: e.words for utt, e in stm.items()}
    signers = {utt: e.signer for utt, e in stm.items()}
    seed = sum(map(ord, corpus + protocol))
    hyps, left_out = _perturb(refs, seed)

    ours = score_protocol(refs, hyps, protocol, signers)
    assert set(ours.missing_hyp) == left_out

    # What the official pipeline hands to sclite: normalised STM and CTM, [EMPTY] for no words.
    proto = get_protocol(protocol)
    write_stm(tmp_path / "ref.stm", {u: proto.ref(w) for u, w in refs.items()}, signers)
    write_ctm(tmp_path / "hyp.ctm", {u: proto.hyp(hyps.get(u, [])) for u in refs})
    paths, rows = _run_official_sclite(tmp_path)

    # sclite folds file ids and speakers to lower case in its reports.
    by_folded = {u.lower(): u for u in refs}
    assert len(by_folded) == len(refs)
    assert set(paths) == set(by_folded)
    differing = [u for u, al in ours.alignments.items() if _our_columns(al) != paths[u.lower()]]
    assert differing == [], f"{len(differing)} of {len(refs)} utterances differ, e.g. {differing[:5]}"
    r = ours.result
    assert rows["Sum"] == (len(refs), r.n, r.hit, r.sub, r.dele, r.ins)
    assert ours.by_signer is not None
    for signer, res in ours.by_signer.items():
        assert rows[signer.lower()] == (res.utterances, res.n, res.hit, res.sub, res.dele, res.ins)
    # The perturbation must actually exercise the scorer.
    assert r.sub > 0.04 * r.n and r.dele > 0.04 * r.n and r.ins > 0.02 * r.n
    assert sum(al.hyp == (EMPTY,) for al in ours.alignments.values()) >= 3
