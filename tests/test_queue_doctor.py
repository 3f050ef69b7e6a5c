"""``ctca queue-doctor`` (ctca.queue_doctor): the -S arguments that re-create a queued entry, the reading of
worker logs, the judgement of each Running entry and the printed recovery; end to end, a queue whose worker is
killed mid-run recovers every experiment exactly once with the printed DVC commands. Also the argument parsing of
benchmarks/queue_parallel.py."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ctca.queue_doctor import (
    Diagnosis,
    RunProcess,
    Task,
    Worker,
    classify,
    diagnose,
    hydra_value,
    param_overrides,
    parse_worker_log,
    read_run,
    read_worker,
    render,
    unwritable,
    worker_line,
    yaml11_changes,
)

BEFORE = {"train": {"seed": 0, "lr": 0.001, "milestones": [8, 11], "device": "auto"},
          "synth": {"from_corpus": "", "noise": 0.04}, "data": {"root": "data/synthsign"}, "old": {"key": 1}}
AFTER = {"train": {"seed": 3, "lr": 0.0005, "milestones": [2], "device": "auto", "amp": "bf16"},
         "synth": {"from_corpus": "/data/my corpus/train.stm", "noise": 0.04}, "data": {"root": "corpus/my-corpus.v2/manifest.csv", "dataset": "true"},
         "new": {"flag": True, "none": None, "list": ["a b", "c"]}}


def test_overrides_recreate_the_params_through_dvcs_own_set_param(tmp_path):
    """What `dvc exp run -S` does with the doctor's arguments (dvc.utils.hydra.apply_overrides) gives the entry's
    params back."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(BEFORE))
    overrides = param_overrides(BEFORE, AFTER)
    assert "train.seed=3" in overrides and "+train.amp=bf16" in overrides and "~old.key" in overrides
    apply_overrides(path, overrides)
    got = yaml.safe_load(path.read_text())
    got.pop("old", None)  # ~old.key leaves an empty section behind
    assert got == AFTER


def test_values_in_override_syntax():
    assert hydra_value(True) == "true" and hydra_value(None) == "null" and hydra_value(3) == "3"
    assert hydra_value("data/synthsign") == "data/synthsign"
    assert hydra_value("") == "''" and hydra_value("true") == "'true'" and hydra_value("it's") == "'it\\'s'"
    assert hydra_value([1, "a b"]) == "[1,'a b']" and hydra_value({"x": 1}) == "{x:1}"
    assert yaml11_changes(4e-05) and yaml11_changes("off") and not yaml11_changes(1.5e-10)
    assert not yaml11_changes(0.001) and not yaml11_changes("auto")
    assert unwritable({"a": 1.0, "b": "auto"}, {"a": 4e-05, "b": "off", "c": "on"}) == ["a", "b", "c"]


LOG = """[2026-12-02 02:24:48,443: INFO/MainProcess] dvc-exp-abc-2@localhost ready.
[2026-12-02 02:24:48,444: INFO/MainProcess] Task dvc.repo.experiments.queue.tasks.run_exp[aaaa-1] received
[2026-12-02 02:24:59,482: CRITICAL/MainProcess] Unrecoverable error: JSONDecodeError('Expecting value: line 1 column 1 (char 0)')
[2026-12-02 02:26:16,389: INFO/MainProcess] dvc-exp-abc-2@localhost ready.
[2026-12-02 02:26:16,390: INFO/MainProcess] Task dvc.repo.experiments.queue.tasks.run_exp[bbbb-2] received
[2026-12-02 02:40:35,035: WARNING/MainProcess] Thread-1 (monitor)
"""


def test_worker_log_is_read_per_start():
    w = Worker("dvc-exp-worker-2", 5, None, True)
    parse_worker_log(LOG, w)
    assert w.tasks == {"bbbb-2"} and w.past_tasks == {"aaaa-1"} and w.error is None  # the error was before
    assert w.monitor_died and "will not leave" in worker_line(w)
    parse_worker_log(LOG.split("[2026-12-02 02:26")[0], w := Worker("w", 5, None, False))
    assert w.tasks == {"aaaa-1"} and w.error.startswith("Unrecoverable error: JSONDecodeError")
    assert not w.monitor_died and "kombu's filesystem transport" in worker_line(w)


def workers(alive: bool) -> list[Worker]:
    return [Worker("dvc-exp-worker-1", 10, None, True, tasks={"t1"}),
            Worker("dvc-exp-worker-2", 20, None if alive else -9, alive, tasks={"t2"})]


def task(run: RunProcess | None, **kw) -> Task:
    t = Task("e2", "c" * 40, "Running", "b" * 40, task_id="t2", run=run, overrides=["train.seed=2"])
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def test_judgement_of_running_entries():
    assert classify(task(RunProcess(30, None, True, parent=20)), workers(True))[0] == "ok"
    assert classify(task(RunProcess(30, None, True, parent=1)), workers(False))[0] == "orphan"
    assert classify(task(RunProcess(30, None, False)), workers(False))[0] == "lost"
    assert classify(task(None), workers(False)) == ("lost", "its worker dvc-exp-worker-2 is dead and its run never started")
    assert classify(task(RunProcess(30, 0, False)), workers(True))[0] == "ok"  # collecting
    assert classify(task(RunProcess(30, None, False), collected=True), workers(False))[0] == "collected"
    assert classify(task(None, task_id="t9"), workers(True))[0] == "unclear"  # nobody's log names it yet
    assert classify(task(None, task_id="t9"), [])[0] == "lost"  # ... and no worker at all
    assert classify(task(None, status="Success"), workers(True))[0] == "lost"  # Success, never collected


def diagnosis(*tasks: Task, alive: bool = False, queued: int = 1) -> Diagnosis:
    return Diagnosis(Path("/p"), workers(alive), list(tasks), queued=queued, failed=0, success=0, head="b" * 40)


def test_a_lost_entry_gets_kill_requeue_and_start():
    text, action = render(diagnosis(task(RunProcess(30, None, False), run_finished=True, tempdir=Path("/p/tmpx"))))
    assert action
    commands = text.split("to recover")[1]
    assert commands.index("dvc queue kill e2") < commands.index("dvc exp run --queue -n e2 -S train.seed=2") < \
        commands.index("dvc queue start -j 2")
    # the kill ends the entry; a remove after it would find no such name (seen with DVC 3.67)
    assert "dvc queue remove" not in commands
    assert "rm -rf /p/tmpx" in text and "restores its stages from the run cache" in text
    # an entry already shown done (Success, never collected) is removed, not killed
    text, _ = render(diagnosis(task(None, status="Success")))
    assert "dvc queue remove e2" in text and "dvc queue kill" not in text and "dvc exp run --queue -n e2" in text


def test_a_running_orphan_is_never_requeued_and_a_collected_or_requeued_entry_neither():
    text, action = render(diagnosis(task(RunProcess(30, None, True, parent=1))))
    assert action and "ORPHAN" in text and "dvc exp run" not in text and "dvc queue kill e2" in text
    text, _ = render(diagnosis(task(RunProcess(30, None, False), collected=True)))
    assert "dvc queue kill e2" in text and "dvc exp run" not in text and "already in the repository" in text
    text, _ = render(diagnosis(task(RunProcess(30, None, False), queued_again=True)))
    assert "dvc exp run" not in text and "already queued again" in text


def test_a_healthy_queue_needs_nothing():
    text, action = render(diagnosis(task(RunProcess(30, None, True, parent=20)), alive=True, queued=0))
    assert not action and "no action needed" in text


def test_benchmark_arguments():
    from benchmarks import queue_parallel as qp

    args = qp.parse_args(["--experiments", "3", "--jobs", "4", "--threads", "2"])
    assert (args.experiments, args.jobs, args.n_train, args.epochs) == (3, 4, 48, 2)
    cmds = qp.queue_commands("parallel", args)
    assert [c[c.index("-n") + 1] for c in cmds] == ["par-0", "par-1", "par-2"]
    assert cmds[0][-4:] == ["-S", "train.seed=2000", "-S", "train.threads=2"]
    assert qp.queue_commands("sequential", args)[0][-3] == "train.seed=1000"  # other seeds: no run-cache hits
    assert qp.overrides(args)["iiw"] == {"interval": 0}
    for bad in (["--jobs", "0"], ["--experiments", "0"], ["--threads", "-1"]):
        with pytest.raises(SystemExit):
            qp.parse_args(bad)


# --------------------------------------------------------------------------------------------- end to end

DVC_YAML = """stages:
  work:
    cmd: python -c "import time, yaml; p = yaml.safe_load(open('params.yaml')); time.sleep(p['s']); open('out.txt', 'w').write(str(p))"
    params: [s, tag]
    outs: [out.txt]
"""


def sh(cmd: str, project: Path) -> None:
    """Run a shell command; output to a file, not a pipe (``dvc queue start``'s daemon workers inherit it, and
    reading a pipe would wait for them to exit)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_EXP_NAME", "DVC_ROOT")}
    with open(project.parent / "commands.log", "a+") as out:
        rc = subprocess.run(cmd, shell=True, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        out.seek(0)
        assert rc == 0, f"{cmd}:\n{out.read()[-3000:]}"


def wait(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return value


@pytest.mark.slow
def test_a_killed_worker_loses_no_experiment_and_duplicates_none(tmp_path):
    """Two workers, three experiments; worker 2 is SIGKILLed with its run mid-experiment. The doctor finds the
    lost entry, its printed DVC commands recover it, and every experiment ends in the repository exactly once."""
    if shutil.which("dvc") is None:
        pytest.fail("dvc is not installed: pip install -e '.[dev]'")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "dvc.yaml").write_text(DVC_YAML)
    (project / "params.yaml").write_text("s: 15\ntag: 0\n")
    for cmd in (["git", "init", "-q", "-b", "main"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=project, check=True, capture_output=True)
    for i in range(3):
        sh(f"dvc exp run --queue -n e{i} -S tag={i}", project)
    celery = project / ".dvc/tmp/exps/celery"
    try:
        sh("dvc queue start -j 2", project)
        def worker2_running():  # worker 2 and the `dvc exp exec-run` it started, both alive
            w = celery / "dvc-exp-worker-2.json"
            if not w.is_file():
                return None
            pid = json.loads(w.read_text())["pid"]
            for run in (project / ".dvc/tmp/exps/run").glob("*/*.json"):
                r = read_run(run)
                if r is not None and r.alive and r.parent == pid:
                    return pid
            return None

        pid = wait(worker2_running, 300, "worker 2 to run an experiment")
        os.killpg(os.getpgid(pid), signal.SIGKILL)  # the worker, its run and the run's stage
        d = diagnose(project)
        lost = [t for t in d.tasks if classify(t, d.workers)[0] == "lost"]
        assert len(lost) == 1, render(d)[0]
        text, action = render(d)
        assert action
        commands = [line.split("#")[0].strip() for line in text.split("to recover, run")[1].splitlines()[1:]
                    if line.startswith("  ")]
        commands = [c for c in commands if c and not c.startswith("rm ")]
        assert commands[-1] == "dvc queue start -j 2" and any(c.startswith("dvc exp run --queue") for c in commands)
        for c in commands:
            sh(c, project)

        def names() -> list[str]:
            refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=project,
                                  capture_output=True, text=True).stdout.split()
            return sorted(r.rsplit("/", 1)[1] for r in refs if not r.startswith("refs/exps/celery"))

        def done():
            d = diagnose(project)
            # every entry left is a stale one whose experiment is in the repository (a `dvc queue kill` of a
            # dead worker's entry ends it at once on some runs and not on others, with DVC 3.67)
            return d.queued == 0 and all(classify(t, d.workers)[0] == "collected" for t in d.tasks) \
                and len(names()) >= 3
        wait(done, 600, "the queue to finish")  # generous: each experiment is ~1 min of DVC work on a busy machine
        assert names() == ["e0", "e1", "e2"]  # each once: nothing lost, nothing duplicated
        assert "LOST" not in render(diagnose(project))[0]
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=project, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        wait(lambda: not any(read_worker(f).alive for f in celery.glob("dvc-exp-worker-*.json")), 60,
             "the workers to exit")
