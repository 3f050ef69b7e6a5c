"""Core and GPU sharing among ctca processes running at once (ctca.cores): the registry, the thread rule, the
explicit override, stale entries and the GPU choice. No GPU is needed: device counts are faked."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ctca.cores as cores
from ctca.cores import Entry, Registry, auto_threads, least_loaded, visible_gpus

REPO = Path(__file__).resolve().parents[1]
# a child that registers in the registry of $CTCA_CORES_DIR (optionally holding a GPU), says so, then waits
CHILD = ("import sys, time, ctca.cores as c; e = c.register('test'); "
         "e.gpu = sys.argv[1] or None; c._registry.write(e); print('ready', flush=True); time.sleep(60)")


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    """A private registry, this process unregistered, and torch's thread count restored afterwards."""
    monkeypatch.setenv(cores.ENV_DIR, str(tmp_path / "reg"))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cores, "_registry", None)
    monkeypatch.setattr(cores, "_entry", None)
    monkeypatch.setattr(cores, "_threads", None)
    threads = torch.get_num_threads()
    yield Registry(tmp_path / "reg")
    torch.set_num_threads(threads)


@pytest.fixture
def spawn():
    """Start children registered in the private registry (``spawn(gpu="")``); they are killed at the end."""
    children = []

    def start(gpu: str = "") -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, "-c", CHILD, gpu], cwd=REPO, stdout=subprocess.PIPE, text=True)
        children.append(child)
        assert child.stdout.readline().strip() == "ready"
        return child

    yield start
    for child in children:
        child.kill()
        child.wait()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_registry_counts_live_processes_and_removes_the_dead(registry, spawn):
    a, b = spawn(), spawn()
    assert sorted(e.pid for e in registry.entries()) == sorted([a.pid, b.pid])
    assert cores.running_processes() == 3  # this process computes too, even unregistered
    a.kill()
    a.wait()
    assert [e.pid for e in registry.entries()] == [b.pid]
    assert not registry.path(a.pid).exists()  # the reader removed the dead process's entry


def test_stale_entries_of_dead_and_reused_pids_are_removed(registry):
    host = socket.gethostname()
    registry.write(Entry(pid=dead_pid(), start="1", host=host))
    registry.write(Entry(pid=os.getpid(), start="0", host=host))  # this PID, but another start time: a reuse
    registry.write(Entry(pid=1, start="1", host="another-host"))  # cannot be checked from here: kept, not counted
    (registry.directory / "junk.json").write_text("{not json")
    assert registry.entries() == []
    assert sorted(p.name for p in registry.directory.glob("*.json")) == ["1.json", "junk.json"]


def test_register_once_and_unregister(registry):
    entry = cores.register("train")
    assert entry is cores.register() and entry.pid == os.getpid() and entry.stage == "train"
    assert [e.pid for e in registry.entries()] == [os.getpid()]
    registry.path(os.getpid()).unlink()  # someone removed it: the next call writes it again
    cores.register()
    assert registry.path(os.getpid()).exists()
    cores.release()
    assert registry.entries() == []


def test_thread_arithmetic():
    assert auto_threads(2, 1) == 2
    assert auto_threads(2, 2) == 1
    assert auto_threads(2, 3) == 1  # never 0
    assert auto_threads(16, 3) == 5
    assert auto_threads(8, 0) == 8


def test_automatic_threads_share_the_usable_cores_and_come_back(registry, spawn, monkeypatch):
    monkeypatch.setattr(cores, "usable_cpus", lambda: frozenset(range(4)))
    assert cores.share_cores(0) == 4 and torch.get_num_threads() == 4  # alone
    child = spawn()
    assert cores.share_cores(0) == 2 and torch.get_num_threads() == 2
    spawn()
    assert cores.share_cores(0) == 1
    child.kill()
    child.wait()
    assert cores.share_cores(0) == 2  # re-evaluated: one left, the cores come back


def test_processes_on_other_cpus_are_not_counted(registry, monkeypatch):
    monkeypatch.setattr(cores, "usable_cpus", lambda: frozenset({0, 1}))
    host = socket.gethostname()
    registry.write(Entry(pid=os.getppid(), start=cores.process_start(os.getppid()), host=host, cpus=[2, 3]))
    assert cores.share_cores(0) == 2


def test_explicit_threads_win_and_still_register(registry, spawn, monkeypatch):
    monkeypatch.setattr(cores, "usable_cpus", lambda: frozenset(range(4)))
    spawn()
    assert cores.share_cores(3) == 3 and torch.get_num_threads() == 3
    assert os.getpid() in [e.pid for e in registry.entries()]  # the others count this process


def test_opencv_threads_follow(registry, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    before = cv2.getNumThreads()
    try:
        cores.share_cores(1)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


def test_an_unwritable_registry_does_not_stop_a_stage(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(cores.ENV_DIR, str(blocker / "reg"))  # under a file: cannot be created
    monkeypatch.setattr(cores, "usable_cpus", lambda: frozenset(range(2)))
    assert cores.register() is None
    assert cores.share_cores(0) == 2


def test_gpu_choice_is_the_least_used_visible_gpu():
    assert least_loaded(["0", "1"], []) == 0
    assert least_loaded(["0", "1"], ["0"]) == 1
    assert least_loaded(["0", "1", "2"], ["0", "1", None, "2", "0"]) == 1  # ties: the lowest index
    with pytest.raises(ValueError):
        least_loaded([], [])


def test_visible_gpus_names_them_machine_wide(monkeypatch):
    assert visible_gpus(2) == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus(2) == ["2", "3"]


def test_two_workers_land_on_different_gpus(registry, spawn):
    spawn(gpu="0")
    assert cores.claim_gpu(count=2) == 1
    assert cores.claim_gpu(count=2) == 1  # stable for the process
    assert json.loads(registry.path(os.getpid()).read_text())["gpu"] == "1"


def test_gpu_choice_uses_physical_names_under_cuda_visible_devices(registry, spawn, monkeypatch):
    spawn(gpu="2")  # another process holds physical GPU 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert cores.claim_gpu(count=2) == 1  # index 1 of this process = physical 3


def test_no_gpu_choice_when_assigned_or_single(registry, monkeypatch):
    assert cores.claim_gpu(count=1) is None
    assert cores.claim_gpu(count=0) is None
    monkeypatch.setenv("LOCAL_RANK", "0")  # torchrun assigns the device
    assert cores.claim_gpu(count=4) is None
    assert registry.entries() == []


def test_select_device_sets_the_claimed_gpu(registry, spawn, monkeypatch):
    from ctca import device

    spawn(gpu="0")
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert device.select_device("auto") == torch.device("cuda", 1)
    assert chosen == [1]


def test_entries_appear_atomically(registry):
    """A reader never sees half an entry: entries are written to a temporary file and renamed."""
    host = socket.gethostname()
    for _ in range(50):
        registry.write(Entry(pid=os.getpid(), start=cores.process_start(os.getpid()), host=host, stage="x" * 500))
        assert [e.pid for e in registry.entries()] == [os.getpid()]
    assert not list(registry.directory.glob(".*.tmp"))  # nothing left behind
