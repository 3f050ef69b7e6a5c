"""Scoring speed: our in-process scorer vs one run of Debian's sclite on the same files.

On the PHOENIX-2014 test STM (629 utterances, N = 6504) with a seeded perturbed raw-style hypothesis
(~8 % deletions, 8 % substitutions, 5 % insertions, loc-/-PLUSPLUS/__EMOTION__ glosses), both written
to disk, it times in the same run:

* in-process: read CTM + read STM + PHOENIX-2014 normalisation + sclite-exact alignment, median of
  ``--repeats`` runs;
* sclite: one subprocess run with the official options (``-f 0 -o sgml sum rsum pra``) on the
  normalised CTM and the STM (the official shell normalisation is not timed);

and prints both and their ratio. The two S/D/I totals are printed too; they must agree.

    python -m benchmarks.score_speed [--repeats 5] [--seed 0]   # from the repo root
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctca.scoring.ctm import read_ctm, read_stm, write_ctm, write_stm
from ctca.scoring.normalise import get_protocol
from ctca.scoring.normalise.phoenix2014 import normalise_token
from ctca.scoring.official import score_protocol

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STM = REPO.parent / "shared" / "data" / "phoenix2014" / "phoenix2014-groundtruth-test.stm"
SCLITE = Path("/usr/lib/sctk/bin/sclite")
PROTOCOL = "phoenix2014"

_RAW_EXTRAS = ["loc-REGION", "cl-KOMMEN-PLUSPLUS", "__EMOTION__", "__PU__", "HABEN2", "S0NNE", "NORDRAUM",
               "ZEIGEN", "__ON__", "__OFF__", "poss-EUCH"]


def perturbed_hypotheses(refs: dict[str, tuple[str, ...]], seed: int) -> dict[str, list[str]]:
    """Raw-style hypotheses: per reference gloss ~8 % deleted, 8 % substituted, 5 % followed by an
    inserted gloss; 5 % of kept glosses get a ``loc-``/``-PLUSPLUS`` decoration; 1 % empty utterances."""
    rng = random.Random(seed)
    vocab = sorted({w for words in refs.values() for w in words})
    hyps: dict[str, list[str]] = {}
    for utt in sorted(refs):
        if rng.random() < 0.01:
            hyps[utt] = []
            continue
        words: list[str] = []
        for w in refs[utt]:
            x = rng.random()
            if x < 0.08:
                pass
            elif x < 0.16:
                words.append(rng.choice(_RAW_EXTRAS if rng.random() < 0.3 else vocab))
            else:
                words.append(rng.choice((f"loc-{w}", f"{w}-PLUSPLUS")) if rng.random() < 0.05 else w)
            if rng.random() < 0.05:
                words.append(rng.choice(vocab))
        hyps[utt] = words
    return hyps


def in_process(ctm: Path, stm: Path) -> tuple[float, tuple[int, int, int, int]]:
    """Seconds for read CTM + read STM + normalise + score, and the (S, D, I, N) totals.

    Cold: the per-gloss normalisation cache is cleared first, as in a fresh process.
    """
    normalise_token.cache_clear()
    start = time.perf_counter()
    entries = read_stm(stm)
    hyps = read_ctm(ctm)
    refs = {utt: e.words for utt, e in entries.items()}
    result = score_protocol(refs, hyps, PROTOCOL).result
    return time.perf_counter() - start, (result.sub, result.dele, result.ins, result.n)


def run_sclite(ctm: Path, stm: Path) -> tuple[float, tuple[int, int, int, int]]:
    """Seconds for one sclite run with the official options, and its (S, D, I, N) from the rsum table."""
    cmd = [str(SCLITE), "-h", ctm.name, "ctm", "-r", stm.name, "stm", "-f", "0", "-o", "sgml", "sum", "rsum", "pra"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ctm.parent, check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    raw = (ctm.parent / f"{ctm.name}.raw").read_text()
    m = re.search(r"\|\s*Sum\s*\|\s*\d+\s+(\d+)\s*\|\s*\d+\s+(\d+)\s+(\d+)\s+(\d+)", raw)
    if m is None:
        raise RuntimeError(f"no Sum row in {ctm.name}.raw")
    n, s, d, i = (int(v) for v in m.groups())
    return elapsed, (s, d, i, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stm", type=Path, default=DEFAULT_STM, help="PHOENIX-2014 reference STM")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.stm.is_file():
        sys.exit(f"reference STM not found: {args.stm} (pass --stm)")
    if not SCLITE.is_file():
        sys.exit(f"sclite not found at {SCLITE} (apt-get install sctk)")

    entries = read_stm(args.stm)
    refs = {utt: e.words for utt, e in entries.items()}
    hyps = perturbed_hypotheses(refs, args.seed)
    protocol = get_protocol(PROTOCOL)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stm = work / "ref.stm"  # sorted by id like the official `sort -k1,1`: sclite walks both in order
        write_stm(stm, refs, {utt: e.signer for utt, e in entries.items()})
        raw_ctm = work / "raw.ctm"  # what a system writes; we normalise it in process
        write_ctm(raw_ctm, hyps)
        norm_ctm = work / "hyp.ctm"  # what the official shell step would hand to sclite
        write_ctm(norm_ctm, {utt: protocol.hyp(hyps.get(utt, [])) for utt in refs})

        in_process(raw_ctm, stm)  # warm-up (imports, caches)
        runs = [in_process(raw_ctm, stm) for _ in range(args.repeats)]
        ours_s = statistics.median(t for t, _ in runs)
        ours_counts = runs[0][1]
        sclite_s, sclite_counts = run_sclite(norm_ctm, stm)

    print(f"{args.stm.name}: {len(refs)} utterances, protocol {PROTOCOL}, seed {args.seed}")
    print(f"in-process (read CTM+STM, normalise, score; median of {args.repeats}): {1000 * ours_s:8.1f} ms  "
          f"S/D/I/N {ours_counts}")
    print(f"sclite (one run, official options):                        {1000 * sclite_s:8.1f} ms  "
          f"S/D/I/N {sclite_counts}")
    print(f"ratio sclite / in-process: {sclite_s / ours_s:.2f}x"
          + ("" if ours_counts == sclite_counts else "   WARNING: totals differ"))


if __name__ == "__main__":
    main()
