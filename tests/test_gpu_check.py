"""benchmarks/gpu_check.py: without a GPU it skips every part and exits 0; ``--cpu-smoke`` runs every part's
code path on the CPU at tiny shapes (the GPU run itself needs a GPU and is not part of the suite)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check import PARTS, pytest_counts

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def run_check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def summary(stdout: str) -> dict[str, str]:
    """part -> status, from the table after ``== summary ==``."""
    lines = stdout.split("== summary ==", 1)[1].strip().splitlines()
    assert lines[0].split()[:2] == ["part", "status"], lines[0]
    names = {name for name, _ in PARTS}
    return {cols[0]: cols[1] for cols in (line.split() for line in lines[1:]) if cols and cols[0] in names}


def test_without_a_gpu_every_part_is_skipped_and_it_exits_0():
    proc = run_check(CUDA_VISIBLE_DEVICES="")  # no GPU visible, even on a machine that has one
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No GPU is available" in proc.stdout
    assert "torch " in proc.stdout and "cuDNN" in proc.stdout  # the environment is printed
    assert summary(proc.stdout) == {name: "skipped" for name, _ in PARTS}


@pytest.mark.slow
def test_cpu_smoke_runs_every_part():
    proc = run_check("--cpu-smoke")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    expected = {name: "ok" for name, _ in PARTS} | {"device_tests": "skipped"}  # the suite runs those tests
    assert summary(proc.stdout) == expected, proc.stdout[-3000:]
    assert "DistributedDataParallel on cpu, backend gloo, world size 2" in proc.stdout


def test_pytest_summary_counts():
    assert pytest_counts("2 passed, 1 skipped, 1 warning in 3.2s") == {"passed": 2, "skipped": 1}
    assert pytest_counts("1 failed, 3 passed, 2 errors in 9.0s") == {"failed": 1, "passed": 3, "error": 2}
