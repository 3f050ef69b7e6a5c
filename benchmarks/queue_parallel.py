"""The same short experiments run by ``dvc queue`` one after another (``-j 1``) and J at a time (``-j J``).

Prints both wall times, the ratio parallel / sequential (below 1: running them at once is faster), each
experiment's status with its seconds per epoch and torch threads (from MLflow), and every failed or lost task
(a task whose queue worker died: ``ctca queue-doctor``). Exit status 1 if any task failed or was lost.

    python -m benchmarks.queue_parallel [--experiments 4] [--jobs 2] [--n-train 48] [--epochs 2]
                                        [--threads 0] [--keep DIR]

It works in a copy of this working tree (tracked and untracked files that git does not ignore, as
tests/test_pipeline.py makes one), committed in a fresh git repository with a small SynthSign configuration
(``--n-train`` training sentences, ``--epochs`` training epochs, 1 pretraining epoch, ``iiw.interval: 0``).
The data stages (up to ``cache_features``) run once before any timing and are committed, so both runs time
the same work per experiment: SPM pretraining, training, IIW, evaluation and the report, plus DVC's own
per-experiment cost (a temporary clone, collecting the result) and the MLflow logging. Each experiment has its
own ``train.seed``, and the two runs use different seeds, so that nothing is restored from the other run's
run cache. ``--threads T`` queues every experiment with ``-S train.threads=T`` (0, the default, is automatic
core sharing; ``--threads $(nproc)`` is what every process used before it: all cores each).

It polls the queue's result files (no message to the workers, unlike ``dvc queue status``); run it on an
otherwise idle machine: other load changes both wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SKIPPED = ("data/", "work/", "models/", "metrics/", "reports/", "mlflow.db", "mlartifacts/")
SEED_BASE = {"sequential": 1000, "parallel": 2000}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.queue_parallel",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--experiments", type=int, default=4, help="experiments in each run")
    p.add_argument("--jobs", type=int, default=2, help="queue workers of the parallel run (dvc queue start -j)")
    p.add_argument("--n-train", type=int, default=48, help="SynthSign training sentences (synth.n_train)")
    p.add_argument("--n-eval", type=int, default=12, help="dev and test sentences each (synth.n_dev, n_test)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (train.epochs)")
    p.add_argument("--pretrain-epochs", type=int, default=1, help="SPM pretraining epochs (spm.pretrain_epochs)")
    p.add_argument("--threads", type=int, default=0, help="train.threads of every experiment (0 = automatic)")
    p.add_argument("--timeout", type=float, default=7200, help="seconds to wait for each run; then its unfinished experiments are killed (dvc queue stop --kill) and reported")
    p.add_argument("--keep", metavar="DIR", help="build the project in DIR (must not exist) and keep it")
    args = p.parse_args(argv)
    for name in ("experiments", "jobs", "n_train", "n_eval", "epochs", "pretrain_epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads < 0:
        p.error("--threads must be >= 0")
    if args.keep and Path(args.keep).exists():
        p.error(f"--keep {args.keep}: already exists")
    return args


def overrides(args: argparse.Namespace) -> dict:
    """The params.yaml changes of the benchmark project (merged into this tree's params.yaml)."""
    return {"synth": {"n_train": args.n_train, "n_dev": args.n_eval, "n_test": args.n_eval, "workers": 1},
            "spm": {"pretrain_epochs": args.pretrain_epochs},
            "train": {"epochs": args.epochs, "milestones": []},
            "iiw": {"interval": 0}}


def queue_commands(mode: str, args: argparse.Namespace) -> list[list[str]]:
    """``dvc exp run --queue`` of each experiment of one run (``mode``: sequential or parallel)."""
    cmds = []
    for i in range(args.experiments):
        cmd = ["dvc", "exp", "run", "--queue", "-n", f"{mode[:3]}-{i}", "-S", f"train.seed={SEED_BASE[mode] + i}"]
        if args.threads:
            cmd += ["-S", f"train.threads={args.threads}"]
        cmds.append(cmd)
    return cmds


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def env() -> dict[str, str]:
    e = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for key in ("DVC_EXP_NAME", "MLFLOW_TRACKING_URI", "DVC_ROOT"):
        e.pop(key, None)
    return e


def sh(cmd: list[str], cwd: Path) -> str:
    """Run ``cmd``; its output, or RuntimeError with the output's end. The output goes through a file, not a
    pipe: ``dvc queue start`` leaves daemon workers holding its stdout, and reading a pipe would wait for them."""
    with tempfile.TemporaryFile("w+") as out:
        rc = subprocess.run(cmd, cwd=cwd, env=env(), text=True, stdout=out, stderr=subprocess.STDOUT).returncode
        out.seek(0)
        text = out.read()
    if rc:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}):\n{text[-3000:]}")
    return text


def make_project(dest: Path, args: argparse.Namespace) -> None:
    """A copy of this working tree with the benchmark's params, committed, its data stages run and committed."""
    files = subprocess.check_output(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, text=True)
    for rel in files.splitlines():
        src = REPO / rel
        if src.is_file() and rel != "dvc.lock" and not rel.startswith(SKIPPED):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), overrides(args))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.email=bench@localhost", "-c", "user.name=bench"]
    sh(["git", "init", "-q", "-b", "main"], dest)
    sh(["git", "add", "-A"], dest)
    sh([*git, "commit", "-qm", "benchmark project"], dest)
    print("preparing the data (dvc repro cache_features) ...", flush=True)
    sh(["dvc", "repro", "cache_features"], dest)
    sh(["git", "add", "-A"], dest)
    sh([*git, "commit", "-qm", "data stages"], dest)


@dataclass
class RunResult:
    mode: str
    jobs: int
    seconds: float
    status: dict[str, str] = field(default_factory=dict)  # experiment -> Success | Failed | Lost | Timeout
    notes: list[str] = field(default_factory=list)


def _queue(project: Path):
    from dvc.repo import Repo

    return Repo(str(project))


def queued_task_ids(project: Path, names: list[str]) -> dict[str, str]:
    """experiment name -> its run_exp task id (the name of its result file once done)."""
    with _queue(project) as repo:
        return {e.name: m.headers["id"] for m, e in repo.experiments.celery_queue._iter_queued() if e.name in names}


def workers_alive(project: Path) -> int:
    from ctca.queue_doctor import read_worker

    return sum(read_worker(p).alive for p in (project / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.json"))


def stop_workers(project: Path, grace: float = 30) -> None:
    """Wait for the queue workers to leave (they do ~10 s after the queue empties); after ``grace`` seconds ask
    them to (``dvc queue stop``: a worker whose idle monitor died in kombu's race never leaves by itself)."""
    deadline, asked = time.monotonic() + grace, False
    while workers_alive(project):
        if time.monotonic() > deadline:
            if asked:
                raise RuntimeError(f"{project}: queue workers still alive after `dvc queue stop`")
            sh(["dvc", "queue", "stop"], project)
            deadline, asked = time.monotonic() + 120, True
        time.sleep(2)


def lost_tasks(project: Path, names: list[str]) -> dict[str, str]:
    """Entries of ``names`` that ``ctca queue-doctor`` finds lost (a dead worker), with why."""
    from ctca.queue_doctor import classify, diagnose

    d = diagnose(project)
    out = {}
    for t in d.tasks:
        kind, why = classify(t, d.workers)
        if t.name in names and kind in ("lost", "collected"):
            out[t.name] = why
    return out


def run_queue(project: Path, mode: str, jobs: int, args: argparse.Namespace) -> RunResult:
    """Queue the experiments of ``mode``, start ``jobs`` workers, wait until every one is done; the wall time."""
    stop_workers(project)  # so that this run has exactly its own `jobs` workers
    cmds = queue_commands(mode, args)
    names = [c[c.index("-n") + 1] for c in cmds]
    for cmd in cmds:
        sh(cmd, project)
    tasks = queued_task_ids(project, names)
    if sorted(tasks) != sorted(names):
        raise RuntimeError(f"queued {names}, but the queue holds {sorted(tasks)}")
    result_dir = project / ".dvc/tmp/exps/celery/result"
    print(f"{mode}: dvc queue start -j {jobs} ({len(names)} experiments) ...", flush=True)
    t0 = time.monotonic()
    sh(["dvc", "queue", "start", "-j", str(jobs)], project)
    pending, lost, last_check = set(names), {}, t0
    while pending:
        time.sleep(1)
        now = time.monotonic()
        pending = {n for n in pending if not (result_dir / f"celery-task-meta-{tasks[n]}").exists()}
        if pending and now - last_check > 60:  # a dead worker leaves its task Running forever
            last_check = now
            found = lost_tasks(project, sorted(pending))
            lost.update(found)
            pending -= set(found)
            if pending and not workers_alive(project):
                lost.update({n: "no queue worker alive, not started" for n in pending})
                pending = set()
        if pending and now - t0 > args.timeout:
            lost.update({n: f"not done after {args.timeout:.0f} s (killed)" for n in pending})
            subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=project, env=env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            break
    seconds = time.monotonic() - t0
    res = RunResult(mode, jobs, seconds)
    with _queue(project) as repo:
        status = {e["name"]: e["status"] for e in repo.experiments.celery_queue.status()}
    for n in names:
        res.status[n] = "Lost" if n in lost else status.get(n, "Unknown")
        if n in lost:
            res.notes.append(f"{n}: {lost[n]}")
        elif res.status[n] != "Success":
            log = subprocess.run(["dvc", "queue", "logs", n], cwd=project, env=env(), text=True, capture_output=True)
            res.notes.append(f"{n}: {res.status[n]}; last lines of `dvc queue logs {n}`:\n    "
                             + "\n    ".join((log.stdout + log.stderr).strip().splitlines()[-15:]))
    return res


def epoch_stats(project: Path, names: list[str]) -> dict[str, dict[str, float]]:
    """Per experiment, from MLflow: mean seconds per epoch of pretrain_spm and train, torch threads used."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("ctca")
    out: dict[str, dict[str, float]] = {n: {} for n in names}
    if exp is None:
        return out
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        name, stage = run.data.tags.get("dvc.exp_name"), run.data.tags.get("dvc.stage")
        if name not in out or stage not in ("pretrain_spm", "train"):
            continue
        seconds = [m.value for m in client.get_metric_history(run.info.run_id, "epoch_seconds")]
        threads = [m.value for m in client.get_metric_history(run.info.run_id, "torch_threads")]
        if seconds:
            out[name][f"{stage}_s"] = statistics.fmean(seconds)
        if threads:
            out[name][f"{stage}_threads"] = statistics.fmean(threads)
    return out


def report(runs: list[RunResult], stats: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    def fmt(v, spec=".1f"):
        return "–" if v is None else format(v, spec)

    lines = [f"{args.experiments} experiments, synth.n_train {args.n_train}, {args.epochs} epochs, "
             f"train.threads {args.threads or 'automatic'}, {len(os.sched_getaffinity(0))} usable cores", "",
             "| experiment | run | status | pretrain s/epoch | train s/epoch | torch threads |", "|---|---|---|---|---|---|"]
    for r in runs:
        for n, s in r.status.items():
            st = stats.get(n, {})
            lines.append(f"| {n} | -j {r.jobs} | {s} | {fmt(st.get('pretrain_spm_s'))} | {fmt(st.get('train_s'))} | "
                         f"{fmt(st.get('train_threads'), '.1f')} |")
    lines.append("")
    for r in runs:
        ok = sum(s == "Success" for s in r.status.values())
        lines.append(f"{r.mode:10s} (-j {r.jobs}): {r.seconds:8.1f} s wall, {ok} of {len(r.status)} succeeded")
    seq = next((r for r in runs if r.mode == "sequential"), None)
    par = next((r for r in runs if r.mode == "parallel"), None)
    if seq and par:
        ratio = par.seconds / seq.seconds
        verdict = "faster" if ratio < 1 else "NOT faster"
        lines.append(f"ratio parallel / sequential: {ratio:.2f} (-j {par.jobs} is {verdict} than one at a time)")
    failed = [note for r in runs for note in r.notes]
    lines.append("failed tasks: " + ("none" if not failed else ""))
    lines += [f"  {n}" for n in failed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("dvc") is None:
        print("error: dvc is not installed (pip install -e .)", file=sys.stderr)
        return 2
    if args.keep:
        project = Path(args.keep).resolve()
        project.mkdir(parents=True)
    else:
        project = Path(tempfile.mkdtemp(prefix="ctca-queue-bench-")) / "proj"
        project.mkdir()
    try:
        make_project(project, args)
        runs = [run_queue(project, "sequential", 1, args), run_queue(project, "parallel", args.jobs, args)]
        names = [n for r in runs for n in r.status]
        try:
            stats = epoch_stats(project, names)
        except Exception as exc:  # the timing stands without the per-epoch detail
            print(f"(no per-epoch detail from MLflow: {exc})", file=sys.stderr)
            stats = {}
        text = report(runs, stats, args)
        print(text, end="")
        (project / "queue_parallel.json").write_text(json.dumps(
            {"args": vars(args), "runs": [vars(r) for r in runs], "epochs": stats}, indent=2) + "\n")
    finally:
        if args.keep:
            print(f"project kept in {project}")
        else:
            try:
                stop_workers(project)  # before their folder goes
            except RuntimeError as exc:
                print(f"warning: {exc}", file=sys.stderr)
            shutil.rmtree(project.parent, ignore_errors=True)
    return 0 if all(s == "Success" for r in runs for s in r.status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
