"""Two-process DDP training on CPU over gloo: torchrun as the train stage launches it, and two torchrun
launchers meeting through the c10d rendezvous, as on two machines."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent


def _worker(clips: str, out: str, method: str) -> None:  # runs in each torchrun process
    from conftest import TINY_PARAMS

    import ctca.data.loader as loader
    from ctca.config import parse_params
    from ctca.train import fit

    seen: list[str] = []
    collate = loader.collate

    def spy(samples, pad, stride, **options):
        seen.extend(s["id"] for s in samples if s.get("train_batch", True))
        return collate(samples, pad, stride, **options)

    loader.collate = spy  # which clips this rank trained on
    params = parse_params({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 1, "device": "cpu"}, "model": {"method": method},
                           "ctca": {"downsample": "pool4"}})
    rank = int(os.environ["RANK"])
    result = fit(params, Path(clips), Path(out) / "ckpt", progress=False)
    torch.save({k: v for k, v in result.model.named_parameters()}, Path(out) / f"params{rank}.pt")
    (Path(out) / f"seen{rank}.json").write_text(json.dumps({"ids": seen, "history": result.history}))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script, launcher: str, env: dict) -> None:
    """``standalone``: one torchrun with two processes (``train.nproc: 2``). ``rendezvous``: two torchrun
    launchers, as on two machines, meeting through torchrun's c10d rendezvous on localhost (docs in README
    "Scale"), one process each."""
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    if launcher == "standalone":
        procs = [subprocess.Popen([*torchrun, "--standalone", "--nproc-per-node=2", str(script)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    else:
        endpoint = f"127.0.0.1:{free_port()}"
        procs = [subprocess.Popen([*torchrun, "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                                   f"--rdzv-endpoint={endpoint}", "--rdzv-id=ctca-test", str(script)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("method,launcher", [("baseline", "standalone"), ("ctca", "standalone"),
                                             ("baseline", "rendezvous")])
def test_two_process_ddp_epoch_keeps_ranks_in_sync(tiny_clips, tmp_path, method, launcher):
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); from test_distributed import _worker; "
            f"_worker({str(tiny_clips)!r}, {str(tmp_path)!r}, {method!r})")
    script = tmp_path / "worker.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    launch(script, launcher, env)
    p0 = torch.load(tmp_path / "params0.pt")
    p1 = torch.load(tmp_path / "params1.pt")
    assert p0.keys() == p1.keys()
    for k in p0:  # gradients were averaged: both ranks hold the same weights after the epoch
        assert torch.equal(p0[k], p1[k]), k
    s0 = json.loads((tmp_path / "seen0.json").read_text())
    s1 = json.loads((tmp_path / "seen1.json").read_text())
    from ctca.data.cache import ClipStore

    train_ids = set(ClipStore(tiny_clips).split("train").ids)
    trained0 = [i for i in s0["ids"] if i in train_ids]
    trained1 = [i for i in s1["ids"] if i in train_ids]
    assert set(trained0) | set(trained1) == train_ids  # the ranks split the epoch between them ...
    assert len(trained0) < len(train_ids) and len(trained1) < len(train_ids)  # ... each saw only its shard
    assert len(s0["history"]) == 1 and s1["history"] == []  # rank 0 alone evaluates and reports
    assert s0["history"][0]["dev_wer"] >= 0
    assert (tmp_path / "ckpt" / "last.pt").is_file()
