"""One MLflow run per training, even across a kill: fit's on_start hook keeps the run id with the checkpoint, the
train stage continues that run when it resumes, and runs left RUNNING by a dead process are closed."""

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import kill_in_epoch_2

from ctca.checkpoint import load_checkpoint
from ctca.train import fit

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def with_train(params, **changes):
    return dataclasses.replace(params, train=dataclasses.replace(params.train, **changes))


def test_fit_hands_the_checkpoint_extras_to_on_start_and_keeps_what_it_returns(tiny_params, tiny_clips, tmp_path):
    seen = []

    def on_start(extras):
        seen.append(extras)
        return {"run": f"r{len(seen)}", "nested": {"list": [1, 2.5, "x"]}}

    one_epoch = with_train(tiny_params, epochs=1)
    fit(one_epoch, tiny_clips, tmp_path, progress=False, on_start=on_start)
    ckpt = load_checkpoint(tmp_path / "last.pt")  # torch.load(..., weights_only=True)
    assert ckpt["extras"] == {"run": "r1", "nested": {"list": [1, 2.5, "x"]}}
    again = fit(one_epoch, tiny_clips, tmp_path, progress=False, on_start=on_start)  # resumes: nothing left to do
    assert again.resumed_from == 1 and seen == [None, {"run": "r1", "nested": {"list": [1, 2.5, "x"]}}]
    other = with_train(one_epoch, lr=0.001)  # another configuration starts over: on_start gets None
    fit(other, tiny_clips, tmp_path, progress=False, on_start=lambda extras: seen.append(extras) or {})
    assert seen[-1] is None and load_checkpoint(tmp_path / "last.pt")["extras"] == {}
    with pytest.raises(TypeError, match="plain data"):
        fit(with_train(one_epoch, lr=0.002), tiny_clips, tmp_path, progress=False,
            on_start=lambda extras: {"path": tmp_path})


def stage_params():
    """The tiny pipeline's params (tests/conftest.py), with no SPM pretraining: the seeded SPM is handed over."""
    from conftest import TINY_PARAMS

    from ctca.config import parse_params

    return parse_params({**TINY_PARAMS, "spm": {**TINY_PARAMS["spm"], "pretrain_epochs": 0}})


def _child(marker: str) -> None:  # the train stage in a subprocess that the test kills in epoch 2
    from conftest import stall_in_epoch_2

    from stages import train

    stall_in_epoch_2(marker)
    train.run(stage_params())


def project(root: Path, clips: Path, monkeypatch) -> Path:
    """A project folder with the clip cache and models/spm.pt (pretrain_spm with 0 epochs), its own MLflow store."""
    from stages import pretrain_spm

    (root / "work").mkdir(parents=True)
    (root / "work" / "clips").symlink_to(clips)
    monkeypatch.chdir(root)
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    pretrain_spm.run(stage_params())
    monkeypatch.setenv("DVC_EXP_NAME", "kill-exp")  # the train stage makes the experiment's parent run
    return root


def store_runs(root: Path):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("ctca")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_a_killed_train_stage_continues_its_mlflow_run_when_rerun(tiny_clips, tmp_path, monkeypatch):
    from stages import train

    params = stage_params()
    epochs = params.train.epochs

    # the uninterrupted reference, in a project (and MLflow store) of its own
    ref = project(tmp_path / "reference", tiny_clips, monkeypatch)
    train.run(params)
    client, found = store_runs(ref)
    (ref_run,) = [r for r in found if r.data.tags["dvc.stage"] == "train"]
    curves = ("epoch", "train_loss", "dev_wer", "dev_loss", "lr")
    ref_curves = {key: history(client, ref_run.info.run_id, key) for key in curves}

    # the same stage killed in epoch 2, then rerun
    proj = project(tmp_path / "killed", tiny_clips, monkeypatch)
    marker = tmp_path / "in-epoch-2"
    code = f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(REPO)!r}]; from test_tracking_resume import _child; " \
           f"_child({str(marker)!r})"
    pid = kill_in_epoch_2(code, marker, cwd=proj)
    client, found = store_runs(proj)
    (killed,) = [r for r in found if r.data.tags["dvc.stage"] == "train"]
    assert killed.info.status == "RUNNING" and killed.data.tags["ctca.pid"] == str(pid)
    assert history(client, killed.info.run_id, "epoch") == [(1, 1.0)]
    (parent,) = [r for r in found if r.data.tags["dvc.role"] == "pipeline"]
    assert parent.info.status == "RUNNING"  # made by the killed stage, which could not terminate it
    ckpt = load_checkpoint(proj / "work" / "checkpoints" / "train" / "last.pt")
    assert ckpt["epoch"] == 0 and ckpt["extras"] == {"mlflow_run_id": killed.info.run_id}

    train.run(params)  # `dvc repro` after the kill
    assert json.loads((proj / "work" / "train" / "summary.json").read_text())["resumed_from_epoch"] == 1
    client, found = store_runs(proj)
    assert not [r.info.run_id for r in found if r.info.status == "RUNNING"]  # the parent run included
    (run,) = [r for r in found if r.data.tags["dvc.stage"] == "train"]  # one run: the killed one, continued
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["ctca.resumes"] == "1" and run.data.tags["ctca.pid"] != str(pid)
    assert not any(k.startswith("ctca.resume_changed.") for k in run.data.tags)
    steps = list(range(1, epochs + 1))
    for key in curves:  # every epoch, each once, with the values of the uninterrupted run
        got = history(client, run.info.run_id, key)
        assert [s for s, _ in got] == steps, key
        assert got == ref_curves[key], key
    for key in ("best_dev_wer", "best_epoch", "parameters"):
        assert run.data.metrics[key] == ref_run.data.metrics[key], key
    assert run.data.params == ref_run.data.params
    assert run.data.tags["env.torch"] == ref_run.data.tags["env.torch"]
