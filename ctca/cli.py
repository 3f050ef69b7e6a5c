"""The ``ctca`` command: what people run by hand next to ``dvc repro`` / ``dvc exp run``.

    ctca check-params [params.yaml]     validate a params file (unknown keys, bad values)
    ctca predict MODEL INPUT...         glosses of videos / frame folders / folders of videos with a model file
    ctca synth OUT [--seed N ...]       render a SynthSign corpus outside the pipeline (mp4, or --layout png)
    ctca ui [--port 5000]               open the MLflow UI on the project's store
    ctca sync-exps                      tag MLflow runs with their DVC experiment commit
    ctca score HYP REF --protocol P     sclite-exact WER of a hypothesis file against an STM
    ctca compare [--by KEY] [--out F]   experiments from MLflow grouped by a param (mean ± std over seeds)
    ctca ablation queue|report          the CTCA poster's tables (3 seeds, paired differences, verdicts)
    ctca study queue|report             the chain-depth study: queue tam.depth x seeds; gather it from MLflow
                                        (reports/study/: written by no DVC stage, so no stage rerun deletes it)
    ctca queue-doctor [--jobs N]        queue entries a dead `dvc queue` worker left Running, and the DVC
                                        commands that recover them (exit 1 when something needs doing)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def _check_params(args: argparse.Namespace) -> int:
    from ctca.config import ConfigError, load_params

    try:
        params = load_params(args.params)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.params}: ok (method={params.model.method}, tam.depth={params.tam.depth}, "
          f"dataset={params.data.dataset})")
    return 0


def _synth(args: argparse.Namespace) -> int:
    """Exit 0: rendered; 2: a bad option or from_corpus (the message names the key and what is allowed)."""
    import yaml

    from ctca.data.synthetic import SynthConfig, generate

    values = {"seed": args.seed, "vocab_size": args.vocab_size, "n_train": args.n_train, "n_dev": args.n_dev,
              "n_test": args.n_test, "from_corpus": args.from_corpus or "", "layout": args.layout}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            print(f"synth: error: --set {item!r}: expected KEY=VALUE with KEY a SynthConfig field "
                  "(e.g. sign_frames=10)", file=sys.stderr)
            return 2
        values[key.strip()] = yaml.safe_load(raw)  # numbers as numbers, as in params.yaml
    try:
        cfg = SynthConfig.from_dict(values)
        summary = generate(cfg, Path(args.out), workers=args.workers)
    except ValueError as exc:  # config values and from_corpus files (CorpusError is a ValueError)
        print(f"synth: error: {exc}", file=sys.stderr)
        return 2
    print({k: v for k, v in summary.items() if not isinstance(v, list | dict)})
    return 0


def _predict(args: argparse.Namespace) -> int:
    """Exit 0: every input predicted; 1: some inputs failed (the others are still predicted and written);
    2: the model file cannot be used."""
    import json

    from ctca.checkpoint import NotACtcaFile
    from ctca.device import select_device
    from ctca.predict import PredictError, Predictor, expand_inputs, write_ctm

    try:
        predictor = Predictor(args.model, select_device(args.device), beam_width=args.beam)
    except (NotACtcaFile, PredictError, FileNotFoundError, RuntimeError) as exc:
        print(f"predict: error: {exc}", file=sys.stderr)
        return 2
    predictions, failed = [], []
    for item in expand_inputs(args.inputs):
        try:
            pred = predictor.predict(item)
        except PredictError as exc:
            print(f"predict: error: {exc}", file=sys.stderr)
            failed.append({"path": str(item.path), "error": str(exc)})
            continue
        predictions.append(pred)
        print(f"{pred.id}\t{' '.join(pred.glosses)}", flush=True)
    if args.ctm:
        write_ctm(Path(args.ctm), predictions)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"model": str(args.model), "beam_width": args.beam,
             "predictions": [{"id": p.id, "path": str(p.path), "glosses": p.glosses, "frames": p.frames, "fps": p.fps,
                              "segments": [{"gloss": g, "start": a, "duration": d} for g, a, d in p.segments]}
                             for p in predictions],
             "failed": failed}, indent=2) + "\n")
    return 1 if failed else 0


def _ui(args: argparse.Namespace) -> int:
    from ctca.tracking import tracking_uri

    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    cmd = ["mlflow", "ui", "--backend-store-uri", tracking_uri(), "--host", args.host, "--port", str(args.port),
           "--workers", "1"]
    print(" ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd, env=env)


def _sync_exps(args: argparse.Namespace) -> int:
    """Experiment commits exist only after a DVC experiment finishes: add them to its runs afterwards."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ctca.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"no MLflow experiment {args.experiment!r} in {tracking_uri()}", file=sys.stderr)
        return 2
    refs = subprocess.check_output(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"],
                                   text=True)
    tagged = 0
    for line in refs.splitlines():
        sha, ref = line.split()
        parts = ref.split("/")  # refs/exps/<baseline[:2]>/<baseline[2:]>/<name>
        if len(parts) != 5:
            continue
        for run in client.search_runs([exp.experiment_id], filter_string=f"tags.`dvc.exp_name` = '{parts[4]}'"):
            client.set_tag(run.info.run_id, "dvc.exp_rev", sha)
            tagged += 1
    print(f"tagged {tagged} runs")
    return 0


def _score(args: argparse.Namespace) -> int:
    """WER of HYP (CTM or ``id gloss …`` text) against the STM REF under one scoring protocol."""
    import json

    from ctca.scoring.ctm import ScoringInputError, read_hypotheses, read_stm
    from ctca.scoring.official import score_protocol

    try:
        stm = read_stm(args.ref)
        hyps = read_hypotheses(args.hyp, fmt=args.format)
    except ScoringInputError as exc:  # the message starts with file:line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    refs = {utt: entry.words for utt, entry in stm.items()}
    signers = {utt: entry.signer for utt, entry in stm.items()}
    try:
        score = score_protocol(refs, hyps, args.protocol, signers=signers)
    except ValueError as exc:
        print(f"error: hypothesis {args.hyp} does not match reference {args.ref}: {exc}", file=sys.stderr)
        return 2

    if args.json:
        print(json.dumps(score.to_dict(), indent=2))
        return 0
    r = score.result
    print(f"protocol: {score.protocol}")
    print(f"WER {r.wer:.2f}  del {r.del_rate:.2f}  ins {r.ins_rate:.2f}  sub {r.sub_rate:.2f}")
    print(f"S {r.sub}  D {r.dele}  I {r.ins}  N {r.n}  utterances {r.utterances}")
    print(f"references without hypothesis (scored as [EMPTY]): {len(score.missing_hyp)}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ctca.compare import collect, comparison_markdown

    rows = collect(args.experiment)
    for f in args.where:
        key, _, value = f.partition("=")
        rows = [r for r in rows if str(r.get(key)) == value]
    if not rows:
        print(f"error: no finished DVC experiment (train + evaluate runs) in MLflow experiment {args.experiment!r}"
              + (f" matching {' '.join(args.where)}" if args.where else ""), file=sys.stderr)
        return 2
    text = comparison_markdown(rows, by=args.by)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text, end="")
    return 0


def _ablation(args: argparse.Namespace) -> int:
    import yaml

    from ctca.ablation import (
        RECORDS,
        ROWS,
        TABLE_KEYS,
        assign,
        load_records,
        queue,
        report,
        save_records,
        with_grad_ratios,
    )
    from ctca.compare import collect, merge_records

    tables = args.tables or list(TABLE_KEYS)
    unknown = sorted(set(tables) - set(TABLE_KEYS))
    if unknown:
        print(f"error: unknown table(s) {', '.join(unknown)}; allowed: {', '.join(TABLE_KEYS)}", file=sys.stderr)
        return 2
    base = yaml.safe_load(Path("params.yaml").read_text())
    records = args.records or RECORDS
    try:
        recorded = load_records(records)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    assigned = assign(merge_records(recorded, collect(args.experiment)), base)
    if args.action == "queue":
        unknown = sorted(set(args.rows) - set(ROWS))
        if unknown:
            print(f"error: unknown row(s) {', '.join(unknown)}; allowed: {', '.join(ROWS)}", file=sys.stderr)
            return 2
        names = queue(tables, args.seeds, assigned, rows=args.rows)
        print(f"queued {len(names)} experiments (rows with a finished experiment per seed are skipped): "
              f"{' '.join(names)}\nrun them with: dvc queue start -j 2, then: ctca ablation report")
        return 0
    command = ("ctca ablation report" + (f" --tables {' '.join(tables)}" if args.tables else "") + f" --out {args.out}"
               + (f" --records {args.records}" if args.records else ""))
    assigned = {row: with_grad_ratios(members) for row, members in assigned.items()}
    text = report(assigned, tables, command=command)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text, end="")
    n = save_records(assigned, records)
    print(f"\n{args.out}: written; {records}: {n} run records (commit both: MLflow's database is not in git)")
    return 0


def _study(args: argparse.Namespace) -> int:
    from ctca.compare import collect, load_records, merge_records
    from ctca.pipeline import FIGURES_DIR, STUDY_DIR
    from ctca.study import (
        RECORD_KEYS,
        depth_report,
        queue_depth_study,
        save_records,
        study_rows,
        with_iiw_epochs,
    )

    if args.action == "queue":
        names = queue_depth_study(args.depths, args.seeds, args.set)
        print(f"queued {len(names)} experiments: {' '.join(names)}\nrun them with: dvc queue start -j 2 "
              "(progress: dvc queue status), then: ctca study report")
        return 0
    out = Path(args.out) if args.out else STUDY_DIR / "README.md"  # shown when the folder is browsed
    if (out.parent / "figures").resolve() == FIGURES_DIR.resolve():
        print(f"error: --out {out}: its figures would go to {FIGURES_DIR}, the report stage's output, which the "
              f"next report run replaces; use another folder (default {STUDY_DIR})", file=sys.stderr)
        return 2
    records = out.parent / "runs.jsonl"
    try:
        recorded = load_records(records, RECORD_KEYS)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = study_rows(merge_records(recorded, collect(args.experiment, stages=("iiw",))))
    if not rows:
        print(f"error: no finished chain-depth experiment (baseline with an iiw stage run) in MLflow or {records}; "
              "run `ctca study queue` and `dvc queue start` first", file=sys.stderr)
        return 2
    rows = with_iiw_epochs(rows)
    out = depth_report(rows, out, out.parent / "figures")
    save_records(rows, records)
    print(out.read_text())
    return 0


def _queue_doctor(args: argparse.Namespace) -> int:
    from ctca.queue_doctor import main as doctor

    return doctor(args.root, args.jobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctca", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-params", help="validate a params file")
    p.add_argument("params", nargs="?", default="params.yaml")
    p.set_defaults(func=_check_params)

    p = sub.add_parser("predict", help="glosses of videos with a trained model file (models/model.pt)")
    p.add_argument("model", help="a model file written by the train stage")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a video file, a folder of frame images, or a folder of videos")
    p.add_argument("--beam", type=int, default=1, help="1 = greedy; > 1 = CTC prefix beam search of this width")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--ctm", help="also write a CTM file (gloss times from the CTC alignment)")
    p.add_argument("--json", help="also write the predictions (with gloss times) and failures as JSON")
    p.set_defaults(func=_predict)

    p = sub.add_parser("synth", help="render a SynthSign corpus in the PHOENIX-2014 layout")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=40)
    p.add_argument("--n-train", type=int, default=600,
                   help="sentences in train; with a --from-corpus folder a cap (the first n of the split's file), "
                        "-1 = all (same for --n-dev, --n-test)")
    p.add_argument("--n-dev", type=int, default=100)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--from-corpus",
                   help="sentences to render: a PHOENIX corpus CSV or STM (pooled, dealt to the splits at random), "
                        "or a folder with one file per split (*-train.stm, *-dev.stm, *-test.stm, or "
                        "{train,dev,test}.corpus.csv, or a corpus root with annotations/manual/): official split "
                        "kept, in file order, under the file's ids")
    p.add_argument("--layout", choices=("mp4", "png"), default="mp4",
                   help="mp4: one video per sentence; png: the PHOENIX-2014 release's PNG frame folders "
                        "(lossless, ~14x the disk), readable as data.dataset=phoenix2014")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="any other SynthConfig field (ctca/data/synthetic.py), e.g. sign_frames=10 "
                        "transition_frames=4")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=_synth)

    p = sub.add_parser("ui", help="MLflow UI on the project's store (lean: 1 worker, no job runner)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=_ui)

    p = sub.add_parser("compare", help="compare DVC experiments from MLflow, grouped by a param")
    p.add_argument("--by", default="model.method", help="param to group by (model.method, tam.depth, ...)")
    p.add_argument("--where", nargs="*", default=[], metavar="KEY=VALUE", help="keep only matching experiments")
    p.add_argument("--out", help="also write the table to this markdown file (e.g. one under reports/)")
    p.add_argument("--experiment", default="ctca", help="MLflow experiment (tracking.experiment)")
    p.set_defaults(func=_compare)

    p = sub.add_parser("study", help="the chain-depth study: queue it (dvc exp run --queue), or report it")
    p.add_argument("action", choices=["queue", "report"])
    p.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more params for every experiment")
    p.add_argument("--out", help="report file; its figures go to figures/ next to it "
                   "(default: the README of reports/study/)")
    p.add_argument("--experiment", default="ctca", help="MLflow experiment (tracking.experiment)")
    p.set_defaults(func=_study)

    p = sub.add_parser("ablation", help="the CTCA poster's tables on SynthSign: queue them, or report them")
    p.add_argument("action", choices=["queue", "report"])
    p.add_argument("--tables", nargs="+", default=None, metavar="TABLE",
                   help="diagnosis, table5, methods, table78 (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=[], metavar="ROW",
                   help="queue: only these rows (ctca.ablation.ROWS), in this order")
    p.add_argument("--out", default="reports/ctca-tables.md", help="report file")
    p.add_argument("--experiment", default="ctca", help="MLflow experiment (tracking.experiment)")
    p.add_argument("--records", default=None,
                   help="the runs behind the tables, read back with MLflow's and rewritten by each report "
                        "(default: reports/ctca-runs.jsonl)")
    p.set_defaults(func=_ablation)

    p = sub.add_parser("sync-exps", help="tag MLflow runs with their DVC experiment commit")
    p.add_argument("--experiment", default="ctca")
    p.set_defaults(func=_sync_exps)

    p = sub.add_parser("queue-doctor", help="find queue entries a dead dvc queue worker left behind; print the fix")
    p.add_argument("--root", default=".", help="the DVC project (default: the current folder)")
    p.add_argument("--jobs", type=int, help="workers for the `dvc queue start -j N` it suggests (default: as many "
                   "as were started)")
    p.set_defaults(func=_queue_doctor)

    from ctca.scoring.normalise import PROTOCOLS

    p = sub.add_parser("score", help="sclite-exact WER of a hypothesis file against an STM reference")
    p.add_argument("hyp", help="hypothesis: CTM, or text lines 'id gloss gloss ...'")
    p.add_argument("ref", help="reference STM")
    p.add_argument("--protocol", required=True, choices=PROTOCOLS,
                   help="normalisation: phoenix2014 / phoenix2014t (official), vac-compat, none (CSL-Daily)")
    p.add_argument("--format", default="auto", choices=("auto", "ctm", "text"), help="hypothesis format")
    p.add_argument("--json", action="store_true", help="exact values as JSON (with per-signer totals)")
    p.set_defaults(func=_score)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
