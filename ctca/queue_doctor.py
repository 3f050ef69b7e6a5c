"""``ctca queue-doctor``: find the DVC queue's experiments that a dead queue worker left behind, and say how to
recover them with DVC's own commands.

How ``dvc queue`` (DVC 3.67, dvc-task, Celery over kombu's filesystem transport in ``.dvc/tmp/exps/celery``)
behaves when a worker dies, as measured on this version:

* A worker takes one message at a time: kombu moves it from ``broker/in`` to ``broker/processed`` when it
  takes it, and nothing ever puts it back. The task counts as Running (``dvc queue status``) until its result
  is written to ``result/``, which only that worker does, after it has run ``dvc exp exec-run`` and collected
  the experiment into the repository (``refs/exps/...``). The other workers go on with the queued entries.
* ``Unrecoverable error: JSONDecodeError('Expecting value: line 1 column 1 (char 0)')`` in a worker's log
  (``.dvc/tmp/exps/celery/dvc-exp-worker-N.out``): kombu's filesystem transport writes a message file in
  place (create, then write) and a reader may move and read it in between, getting an empty message
  (upstream: treeverse/dvc issue 10428, celery/kombu issue 1551). Every worker's idle monitor and every
  ``dvc queue status`` broadcast such messages to all workers, so the more workers and status polls, the
  likelier; a slow, oversubscribed machine widens the window. The worker stops taking work but still
  finishes and collects the experiment it is running, then exits: nothing is lost, but the queue goes on
  with one worker fewer (``dvc queue start -j N`` starts the missing ones again).
* A worker killed outright (SIGKILL, the OOM killer, a closed session): its ``dvc exp exec-run`` keeps
  running as an orphan and finishes the stages (their outputs and run-cache entries go to the project's
  cache), but nobody collects it: the entry stays Running forever and the experiment never appears in
  ``dvc exp show``. ``dvc queue kill NAME`` then marks it Failed, or Success when the run had finished
  (still not in the repository: a Success entry without its experiment is lost too).

Recovery, with DVC's commands only (the doctor prints them for each entry, with the entry's own params):
``dvc queue kill NAME`` (the process is gone: ends the entry) or, for an entry already done, ``dvc queue remove
NAME``; re-queue with
the same ``-S`` params (``dvc exp run --queue -n NAME -S ...``: every stage the dead run finished is restored
from the run cache, not recomputed), ``dvc queue start -j N``. The doctor never re-queues an entry whose run
process is still alive (that would run it twice) nor one whose experiment is already in the repository.

It reads the queue's files and ``/proc`` only; unlike ``dvc queue status`` it sends the workers no message.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ctca.config import flatten
from ctca.cores import pid_alive

READY = re.compile(r"\] (\S+) ready\.\s*$")
RECEIVED = re.compile(r"Task dvc\.repo\.experiments\.queue\.tasks\.run_exp\[([0-9a-f-]+)\] received")
FATAL = re.compile(r"(Unrecoverable error: .*)$")
MONITOR = re.compile(r"\] Thread-\d+ \(monitor\)\s*$")  # how a worker logs its monitor thread's crash
PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
KEYWORDS = {"true", "false", "null", "nan", "inf", "yes", "no", "on", "off", "none"}


@dataclass
class Worker:
    """A dvc queue worker slot (``dvc-exp-worker-N``), from its process file and log."""

    name: str
    pid: int | None
    returncode: int | None
    alive: bool
    log: Path | None = None
    error: str | None = None  # the last "Unrecoverable error" of its latest start
    monitor_died: bool = False  # its idle monitor thread crashed (same race): it never leaves by itself
    tasks: set[str] = field(default_factory=set)  # run_exp task ids received since its latest start
    past_tasks: set[str] = field(default_factory=set)  # ... by its earlier starts


@dataclass
class RunProcess:
    """The ``dvc exp exec-run`` process of one entry (``.dvc/tmp/exps/run/<rev>/<rev>.json``)."""

    pid: int
    returncode: int | None
    alive: bool
    parent: int | None = None
    reused: bool = False  # the PID now belongs to another program


@dataclass
class Task:
    """A queue entry the doctor looks at: Running, or Success without its experiment in the repository."""

    name: str
    rev: str
    status: str
    baseline: str
    task_id: str | None = None
    run: RunProcess | None = None
    run_finished: bool = False  # exec-run wrote a result (its stages are in the cache)
    tempdir: Path | None = None  # the temporary clone it ran in, if still there
    collected: bool = False  # the experiment ref exists
    overrides: list[str] = field(default_factory=list)  # -S arguments that re-create its params
    other_changes: list[str] = field(default_factory=list)  # files other than params.yaml it changed
    unwritable: list[str] = field(default_factory=list)  # params keys -S cannot set readably (yaml11_changes)
    queued_again: bool = False  # another queued or running entry has its name


@dataclass
class Diagnosis:
    root: Path
    workers: list[Worker]
    tasks: list[Task]
    queued: int
    failed: int
    success: int
    head: str = ""
    dirty: bool = False


# ---------------------------------------------------------------------------------------------- reading


def read_worker(info_file: Path) -> Worker:
    """A worker slot from its dvc-task process file and its log (split at each start: ``<node> ready.``)."""
    info = _read_json(info_file)
    pid, rc = info.get("pid"), info.get("returncode")
    alive = bool(pid) and rc is None and pid_alive(pid) and "queue-worker" in _cmdline(pid)
    worker = Worker(info_file.stem, pid, rc, alive)
    log = Path(info.get("stdout") or info_file.with_suffix(".out"))
    if log.is_file():
        worker.log = log
        parse_worker_log(log.read_text(errors="replace"), worker)
    return worker


def parse_worker_log(text: str, worker: Worker) -> None:
    """Fill ``worker.tasks``/``past_tasks``/``error`` from its log; only its latest start counts as current."""
    for line in text.splitlines():
        if READY.search(line):
            worker.past_tasks |= worker.tasks
            worker.tasks, worker.error, worker.monitor_died = set(), None, False
        elif MONITOR.search(line):
            worker.monitor_died = True
        elif m := RECEIVED.search(line):
            worker.tasks.add(m.group(1))
        elif m := FATAL.search(line):
            worker.error = m.group(1).strip()


def _read_json(path: Path, attempts: int = 5) -> dict:
    """A JSON file that its writer (dvc-task) rewrites in place: a half-written read is tried again."""
    import time

    for attempt in range(attempts):
        try:
            return json.loads(path.read_text())
        except ValueError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)
    return {}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[1])


def read_run(info_file: Path) -> RunProcess | None:
    if not info_file.is_file():
        return None
    info = _read_json(info_file)
    pid, rc = info.get("pid"), info.get("returncode")
    if not pid:
        return None
    running = rc is None and pid_alive(pid)
    is_run = "exec-run" in _cmdline(pid)
    return RunProcess(pid, rc, running and is_run, _parent(pid) if running else None, running and not is_run)


def hydra_value(value: object) -> str:
    """``value`` in the override syntax of ``dvc exp run -S key=value`` (Hydra's grammar)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if PLAIN.fullmatch(text) and text.lower() not in KEYWORDS:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def param_overrides(before: dict, after: dict) -> list[str]:
    """The ``-S`` arguments that turn params ``before`` into ``after``: ``key=value`` for a changed key,
    ``+key=value`` for a new one (DVC refuses a plain ``key=`` for a key the file lacks), ``~key`` for a removed one."""
    old, new = flatten(before or {}), flatten(after or {})
    out = [f"{'' if k in old else '+'}{k}={hydra_value(v)}" for k, v in new.items() if k not in old or old[k] != v]
    out += [f"~{k}" for k in old if k not in new]
    return out


def yaml11_changes(value: object) -> bool:
    """Whether DVC (a YAML 1.2 writer) writes ``value`` so that ctca's params loader (PyYAML, YAML 1.1) reads
    something else back: a float in exponent form without a dot (``4e-05``: a string) or a string that YAML 1.1
    takes for a boolean (``off``, ``yes``...: ``dvc exp run -S train.amp=off`` gives ``False``)."""
    if isinstance(value, float):
        text = repr(value)
        return "e" in text and "." not in text.split("e")[0]
    return isinstance(value, str) and value.lower() in ("yes", "no", "on", "off", "y", "n")


def unwritable(before: dict, after: dict) -> list[str]:
    """Keys of ``after`` that differ from ``before`` and that ``-S`` cannot write so that ctca reads them back."""
    old, new = flatten(before or {}), flatten(after or {})
    return [k for k, v in new.items() if (k not in old or old[k] != v) and yaml11_changes(v)]


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def entry_params(root: Path, baseline: str, rev: str) -> tuple[list[str], list[str], list[str]]:
    """``-S`` arguments recreating the params of queue entry ``rev`` on ``baseline``, the keys among them that
    ``-S`` cannot write readably (:func:`unwritable`), and the other files it changes (what ``-S`` cannot
    express; DVC's own packed arguments ``.dvc/tmp/repro.dat`` left out)."""
    changed = [f for f in _git(root, "diff", "--name-only", baseline, rev).splitlines() if f]
    overrides, odd = [], []
    if "params.yaml" in changed:
        def load(r):
            try:
                return yaml.safe_load(_git(root, "show", f"{r}:params.yaml")) or {}
            except subprocess.CalledProcessError:
                return {}
        before, after = load(baseline), load(rev)
        overrides, odd = param_overrides(before, after), unwritable(before, after)
    return overrides, odd, [f for f in changed if f not in ("params.yaml", ".dvc/tmp/repro.dat")]


def diagnose(root: Path | str = ".", attempts: int = 3) -> Diagnosis:
    """Read the DVC queue of the project at ``root`` (DVC's queue API, the worker files and ``/proc``).

    The queue's files change while it runs, and DVC writes some of them in place (a run's ``.run`` info file):
    a read that fails is tried again, ``attempts`` times in all, a second apart."""
    import time

    for attempt in range(attempts):
        try:
            return _diagnose(Path(root))
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def _diagnose(root: Path) -> Diagnosis:
    from dvc.repo import Repo
    from dvc.repo.experiments.executor.base import ExecutorInfo, TaskStatus
    from dvc.repo.experiments.refs import ExpRefInfo

    root = Path(root).resolve()
    with Repo(str(root)) as repo:
        queue = repo.experiments.celery_queue
        wdir = Path(queue.wdir)
        workers = [read_worker(p) for p in sorted(wdir.glob("dvc-exp-worker-*.json"))]
        queued = list(queue.iter_queued())
        active = list(queue._iter_active_tasks())  # (AsyncResult, entry): the entries shown as Running
        success = list(queue.iter_success())
        failed = list(queue.iter_failed())

        def task(entry, status: str, task_id: str | None = None) -> Task:
            t = Task(entry.name or entry.stash_rev[:7], entry.stash_rev, status, entry.baseline_rev, task_id)
            t.run = read_run(Path(queue.pid_dir) / entry.stash_rev / f"{entry.stash_rev}.json")
            try:
                info = ExecutorInfo.load_json(queue.get_infofile_path(entry.stash_rev))
                t.run_finished = info.status in (TaskStatus.SUCCESS, TaskStatus.FINISHED) or info.result_hash is not None
                t.tempdir = Path(info.root_dir) if info.root_dir and Path(info.root_dir).is_dir() else None
            except Exception:  # missing, or being written (DVC writes it in place): not known yet
                pass
            if entry.name:
                t.collected = repo.scm.get_ref(str(ExpRefInfo(entry.baseline_rev, entry.name))) is not None
            return t

        tasks = [task(a.entry, "Running", a.async_result.id) for a in active]
        for entry, _ in success:
            t = task(entry, "Success")
            if not t.collected and t.tempdir is not None:  # it ran but was never collected: its worker died
                tasks.append(t)
        others = [(e.name, e.stash_rev) for e in queued] + [(a.entry.name, a.entry.stash_rev) for a in active]
        for t in tasks:
            t.queued_again = any(name == t.name and rev != t.rev for name, rev in others)
            try:
                t.overrides, t.unwritable, t.other_changes = entry_params(root, t.baseline, t.rev)
            except subprocess.CalledProcessError:
                t.other_changes = ["(its commit is gone: re-queue it by hand)"]
        head = _git(root, "rev-parse", "HEAD").strip()
        dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no").strip())
    return Diagnosis(root, workers, tasks, len(queued), len(failed), len(success), head, dirty)


# --------------------------------------------------------------------------------------------- judging


def classify(task: Task, workers: list[Worker]) -> tuple[str, str]:
    """(kind, why) for one entry. kind: ``ok`` (being run or finished by a live worker), ``orphan`` (its run
    still computes, its worker is dead), ``lost`` (run and worker gone: DVC will never finish it),
    ``unclear`` (no worker is known to hold it, a live one may), ``collected`` (already in the repository)."""
    if task.status == "Success":
        return "lost", "shown as Success, but its experiment was never collected into the repository"
    owner = next((w for w in workers if task.task_id in w.tasks), None)
    past = next((w for w in workers if task.task_id in w.past_tasks), None)
    live_pids = {w.pid for w in workers if w.alive}
    run = task.run
    if run is not None and run.alive:
        if (owner is not None and owner.alive) or run.parent in live_pids:
            return "ok", f"running (pid {run.pid})"
        gone = owner or past
        return "orphan", (f"its worker {gone.name} is dead" if gone else "no live worker holds it") + (
            f", but its run (pid {run.pid}) is still computing; nobody will collect its result")
    if owner is not None and owner.alive:
        return "ok", "being started or collected by " + owner.name
    if task.collected:
        return "collected", "its experiment is already in the repository; only the queue entry is stale"
    gone = owner or past
    if gone is None and any(w.alive for w in workers):
        return "unclear", "no worker log names it; a live worker may be starting it: run the doctor again in a minute"
    why = f"its worker {gone.name} is dead" if gone else "no queue worker is alive"
    if run is None:
        return "lost", why + " and its run never started"
    state = "finished" if task.run_finished else f"ended (status {run.returncode})" if run.returncode is not None \
        else "ended"
    return "lost", f"{why} and its run (pid {run.pid}) has {state}"


def worker_line(w: Worker) -> str:
    if w.alive:
        line = f"{w.name} (pid {w.pid}): alive"
        if w.error:
            line += f", stopping after {w.error}: it finishes the experiment it runs, then exits"
        if w.monitor_died:
            line += (": its idle monitor crashed (the same kombu race), so it will not leave when the queue is "
                     "empty; `dvc queue stop` ends it once idle")
        return line
    how = (f"exited with status {w.returncode}" if w.returncode and w.returncode > 0 else
           f"killed by signal {-w.returncode}" if w.returncode and w.returncode < 0 else
           "exited" if w.returncode == 0 else "gone")
    line = f"{w.name} (pid {w.pid}): {how}"
    if w.error:
        line += f" after {w.error}"
        if "JSONDecodeError" in w.error:
            line += (" (a race in kombu's filesystem transport, treeverse/dvc issue 10428: the worker finished "
                     "the experiment it was running, then stopped)")
    return line + (f"; log: {w.log}" if w.log else "")


def render(d: Diagnosis, jobs: int | None = None) -> tuple[str, bool]:
    """The report and whether anything needs doing."""
    q = shlex.quote
    out = [f"queue of {d.root}: {sum(t.status == 'Running' for t in d.tasks)} running, {d.queued} queued, "
           f"{d.success} success, {d.failed} failed"]
    out += ["workers:"] + [f"  {worker_line(w)}" for w in d.workers] if d.workers else ["workers: none started"]
    alive = sum(w.alive and not w.error for w in d.workers)  # a worker after an Unrecoverable error takes no more
    slots = jobs or max([len(d.workers), 1])
    kill, remove, requeue, stop, notes, cleanup = [], [], [], [], [], []
    for t in d.tasks:
        kind, why = classify(t, d.workers)
        label = f"{t.name} ({t.rev[:7]}, {t.status})"
        if kind == "ok":
            out.append(f"ok      {label}: {why}")
            continue
        if kind == "unclear":
            out.append(f"unclear {label}: {why}")
            continue
        if kind == "orphan":
            out.append(f"ORPHAN  {label}: {why}")
            stop.append(t)
            continue
        out.append(f"{'STALE' if kind == 'collected' else 'LOST'}    {label}: {why}")
        if t.status == "Running":
            kill.append(t.name)  # ends the entry: with its worker dead, a `dvc queue remove` after it finds no such name
        else:
            remove.append(t.name)
        if t.tempdir is not None:
            cleanup.append(str(t.tempdir))
        if kind == "collected" or t.queued_again:
            notes.append(f"{t.name}: {'already in the repository' if kind == 'collected' else 'already queued again'}"
                         ": not re-queued")
            continue
        cmd = ["dvc", "exp", "run", "--queue", "-n", t.name] + [a for o in t.overrides for a in ("-S", o)]
        requeue.append(" ".join(q(c) for c in cmd))
        if t.run_finished:
            notes.append(f"{t.name}: its run had finished; the re-queued run restores its stages from the run cache")
        if t.unwritable:
            notes.append(f"{t.name}: DVC writes {', '.join(t.unwritable)} so that ctca reads another value back "
                         "(4e-05 becomes a string, off a boolean): set them in params.yaml instead (4.0e-5, 'off')")
        if t.other_changes:
            notes.append(f"{t.name}: the entry also changed {', '.join(t.other_changes)}, which -S cannot set: "
                         f"`git checkout {t.rev[:10]} -- <file>` them into the workspace before re-queuing")
        if t.baseline != d.head:
            notes.append(f"{t.name}: it was queued on commit {t.baseline[:10]}, the workspace is at {d.head[:10]}: "
                         f"`git checkout {t.baseline[:10]}` first to re-run the same code")
    if d.dirty and requeue:
        notes.append("the workspace has uncommitted changes: a queued experiment includes them (commit or stash "
                     "them first to re-queue exactly)")
    for t in stop:
        out.append(f"  {t.name}: let it finish (`ps -p {t.run.pid}`; the stages it completes go to the run cache) "
                   f"or stop it now with `dvc queue kill {q(t.name)}`; then run `ctca queue-doctor` again for the "
                   "commands that re-queue it")
    needs_workers = (d.queued or requeue) and alive < slots
    action = bool(kill or remove or requeue or stop or needs_workers)
    if not d.tasks and not d.queued and not needs_workers:
        out.append("nothing running or queued")
    commands = ([" ".join(["dvc", "queue", "kill", *map(q, kill)])] if kill else []) + \
               ([" ".join(["dvc", "queue", "remove", *map(q, remove)])] if remove else []) + requeue + \
               ([f"dvc queue start -j {slots}    # starts the missing workers; live ones go on"]
                if needs_workers else [])
    if commands:
        out += ["", "to recover, run (DVC's own commands, in this order):"] + [f"  {c}" for c in commands]
        if cleanup:
            out += ["then, to free the disk, the temporary clones of the dead runs:"] + \
                   [f"  rm -rf {q(c)}" for c in cleanup]
    if notes:
        out += ["", "notes:"] + [f"  {n}" for n in notes]
    if not action:
        out.append("no action needed")
    return "\n".join(out) + "\n", action


def main(root: str = ".", jobs: int | None = None) -> int:
    """Print the diagnosis; 0 = healthy, 1 = something to do (the commands are printed), 2 = cannot read."""
    import sys

    if not (Path(root) / ".dvc").is_dir():
        print(f"queue-doctor: error: {root}: not a DVC project (no .dvc folder); pass --root", file=sys.stderr)
        return 2
    try:
        d = diagnose(root)
    except Exception as exc:  # not a DVC/git repository, or a DVC whose queue internals changed
        print(f"queue-doctor: error: {root}: cannot read the DVC queue: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    text, action = render(d, jobs)
    print(text, end="")
    return 1 if action else 0
