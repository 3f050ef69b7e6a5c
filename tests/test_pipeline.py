"""End to end: the real DVC pipeline on a tiny SynthSign corpus in a temporary git repository."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_PARAMS

REPO = Path(__file__).resolve().parents[1]
STAGES = ["synthesize", "extract_frames", "cache_features", "pretrain_spm", "train", "iiw", "evaluate", "report"]


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def copy_project(dest: Path) -> None:
    files = subprocess.check_output(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, text=True)
    for rel in files.splitlines():
        src = REPO / rel
        if src.is_file() and rel != "dvc.lock" and not rel.startswith(("data/", "work/", "models/", "metrics/",
                                                                         "reports/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    # no PYTHONPATH: stages run as `python -m stages.x`, so they import the project copy's own ctca/
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    env.pop("DVC_EXP_NAME", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    res = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def mlflow_runs(project: Path) -> list:
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("ctca")
    return client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    if shutil.which("dvc") is None:
        pytest.fail("dvc is not installed: pip install -e '.[dev]'")
    dest = tmp_path_factory.mktemp("pipeline") / "proj"
    dest.mkdir()
    copy_project(dest)
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY_PARAMS)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny"]):
        run(cmd, dest)
    return dest


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_then_has_nothing_to_do(project):
    run(["dvc", "repro"], project)
    report = (project / "reports" / "report.md").read_text()
    assert "## Word error rate" in report and "| dev |" in report and "| test |" in report
    assert (project / "reports" / "figures" / "training_loss.png").stat().st_size > 1000
    # DVC metrics: flat files of headline numbers (dvc exp show stays readable); the detail is next to them
    metrics = {name: json.loads((project / "metrics" / f"{name}.json").read_text()) for name in ("eval", "train", "iiw")}
    assert list(metrics["eval"]) == ["dev_wer", "dev_del", "dev_ins", "test_wer", "test_del", "test_ins"]
    assert set(metrics["train"]) == {"parameters", "epoch_seconds", "best_epoch"}
    assert set(metrics["iiw"]) == {"iiw_spm", "iiw_tam"}
    assert all(isinstance(v, int | float) for m in metrics.values() for v in m.values()), metrics
    evaluation = json.loads((project / "work" / "eval" / "summary.json").read_text())
    for split in ("dev", "test"):
        m = evaluation["splits"][split]
        assert m["N"] > 0 and m["wer"] == pytest.approx(100 * (m["S"] + m["D"] + m["I"]) / m["N"])
        assert metrics["eval"][f"{split}_wer"] == m["wer"]
    train = json.loads((project / "work" / "train" / "summary.json").read_text())
    assert train["depth"] == TINY_PARAMS["tam"]["depth"]
    iiw = json.loads((project / "work" / "iiw" / "detail.json").read_text())
    assert {"spm", "tam", "classifier"} <= set(iiw["final"]) and iiw["final"]["spm"]["fisher_group"] > 0
    assert metrics["iiw"]["iiw_spm"] == iiw["final"]["spm"]["fisher_group"]
    for stage in ("synthesize", "extract_frames", "cache_features", "pretrain_spm"):  # not DVC metrics any more
        assert (project / "work" / "stages" / f"{stage}.json").is_file()
    curves = json.loads((project / "metrics" / "iiw_curves.json").read_text())
    assert [c["epoch"] for c in curves] == list(range(1, TINY_PARAMS["train"]["epochs"] + 1))
    assert "## Information in weights (IIW)" in report
    assert (project / "reports" / "figures" / "iiw_curves.png").stat().st_size > 1000
    # every model file, checkpoint and snapshot the pipeline wrote holds plain data only (safe to load)
    written = sorted((project / "models").glob("*.pt")) + sorted((project / "work").rglob("*.pt"))
    assert {"spm.pt", "model.pt", "last.pt", "epoch_000.pt"} <= {p.name for p in written}
    import torch

    for path in written:
        torch.load(path, weights_only=True)
    # the CTM/STM written by evaluate reproduce its numbers through `ctca score` (as the official scripts would)
    scored = run([sys.executable, "-m", "ctca.cli", "score", "work/eval/dev.ctm", "work/eval/dev.stm",
                  "--protocol", evaluation["protocol"], "--json"], project)
    assert {k: json.loads(scored.stdout)[k] for k in "SDIN"} == {k: evaluation["splits"]["dev"][k] for k in "SDIN"}
    runs = mlflow_runs(project)
    assert sorted(r.data.tags["dvc.stage"] for r in runs) == sorted(STAGES)
    assert all(r.info.status == "FINISHED" for r in runs)
    train_run = next(r for r in runs if r.data.tags["dvc.stage"] == "train")
    assert train_run.data.params["tam.depth"] == str(TINY_PARAMS["tam"]["depth"])

    again = run(["dvc", "repro"], project)
    # only the corpus check runs (always: it is how DVC sees an external corpus change); its fingerprint is
    # unchanged, so nothing after it reruns
    assert re.findall(r"Running stage '(\w+)'", again.stdout) == ["check_corpus"], again.stdout
    assert "didn't change, skipping" in again.stdout
    assert len(mlflow_runs(project)) == len(runs)


@pytest.mark.slow
def test_exp_run_depth_reruns_only_dependent_stages_and_logs_the_experiment(project):
    if not (project / "models" / "model.pt").exists():
        run(["dvc", "repro"], project)
    run(["dvc", "exp", "run", "-n", "depth2", "-S", "tam.depth=2"], project)
    runs = [r for r in mlflow_runs(project) if r.data.tags.get("dvc.exp_name") == "depth2"]
    stages = sorted(r.data.tags["dvc.stage"] for r in runs if r.data.tags["dvc.role"] == "stage")
    assert stages == ["evaluate", "iiw", "report", "train"]
    (parent,) = [r for r in runs if r.data.tags["dvc.role"] == "pipeline"]
    assert parent.info.status == "FINISHED"
    train = next(r for r in runs if r.data.tags.get("dvc.stage") == "train")
    assert train.data.params["tam.depth"] == "2"
    assert json.loads((project / "work" / "train" / "summary.json").read_text())["depth"] == 2
    report = (project / "reports" / "report.md").read_text()
    assert "## Methods compared" in report and "| baseline | 1 (0) |" in report  # this experiment, from MLflow

    # the experiment commit exists only now: `ctca sync-exps` adds it to the experiment's runs
    run([sys.executable, "-m", "ctca.cli", "sync-exps"], project)
    refs = run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], project).stdout
    (sha,) = [line.split()[0] for line in refs.splitlines() if line.endswith("/depth2")]
    tagged = [r for r in mlflow_runs(project) if r.data.tags.get("dvc.exp_name") == "depth2"]
    assert tagged and all(r.data.tags.get("dvc.exp_rev") == sha for r in tagged)


def test_a_stage_refuses_an_unknown_key_with_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("tam:\n  dpeth: 2\n")
    res = subprocess.run([sys.executable, "-m", "stages.train"], cwd=tmp_path, text=True,
                         capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "train: error:" in lines[0] and "tam.dpeth" in lines[0], res.stderr


@pytest.mark.slow
def test_queued_experiment_runs_in_a_temporary_clone_and_its_runs_reach_the_project_store(project):
    if not (project / "models" / "model.pt").exists():
        run(["dvc", "repro"], project)
    run(["git", "checkout", "--", "."], project)  # a workspace exp run leaves params.yaml modified
    run(["dvc", "exp", "run", "--queue", "-n", "queued-ctca", "-S", "model.method=ctca", "-S", "loss.cmd=false"],
        project)
    run(["dvc", "exp", "run", "--run-all", "-j", "1"], project)
    runs = [r for r in mlflow_runs(project) if r.data.tags.get("dvc.exp_name") == "queued-ctca"]
    stage_runs = [r for r in runs if r.data.tags["dvc.role"] == "stage"]
    # a method change keeps the pretrained SPM: pretraining is method-independent
    assert sorted(r.data.tags["dvc.stage"] for r in stage_runs) == ["evaluate", "iiw", "report", "train"]
    train = next(r for r in stage_runs if r.data.tags["dvc.stage"] == "train")
    assert train.data.params["model.method"] == "ctca" and train.data.params["loss.cmd"] == "False"
    assert "loss_l2g" in train.data.metrics and "loss_cmd" not in train.data.metrics  # the toggle acted
    # the stages ran inside DVC's temporary clone, yet logged to <project>/mlflow.db
    assert all(r.data.tags["dvc.cwd"] != str(project) for r in stage_runs)
    assert all(r.data.tags["dvc.root"] == str(project) for r in stage_runs)
    assert all(r.info.status == "FINISHED" for r in runs)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    assert "queued-ctca" in json.dumps(shown)


def documented_view_command() -> list[str]:
    """The one `dvc exp show` command README.md documents for viewing experiments side by side."""
    (line,) = [m.group(1) for m in re.finditer(r"^(dvc exp show .*?)\s*(?:#.*)?$",
                                               (REPO / "README.md").read_text(), re.MULTILINE)]
    return shlex.split(line)


@pytest.mark.slow
def test_the_documented_experiment_view_fits_in_25_columns(project):
    if not (project / "models" / "model.pt").exists():
        run(["dvc", "repro"], project)
    changes = {"view-seed": "train.seed=1", "view-beam": "decode.beam_width=2"}
    for name, change in changes.items():
        run(["git", "checkout", "--", "params.yaml"], project)  # each experiment changes one param of the baseline
        run(["dvc", "exp", "run", "-n", name, "-S", change], project)
    run(["git", "checkout", "--", "params.yaml"], project)
    cmd = documented_view_command()
    assert cmd[:3] == ["dvc", "exp", "show"] and "--md" in cmd
    table = run(cmd, project).stdout.strip().splitlines()
    columns = [c.strip() for c in table[0].strip().strip("|").split("|")]
    assert len(columns) <= 25, columns
    assert {"dev_wer", "test_wer", "train.seed", "decode.beam_width"} <= set(columns), columns
    assert not [c for c in columns if "/" in c], columns  # no dependency hashes
    for name in changes:
        assert len([row for row in table[2:] if f"[{name}]" in row]) == 1, "\n".join(table)

