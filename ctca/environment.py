"""The environment fingerprint: what software and hardware a run executed on, as a flat ``{key: str}`` dict.

``fingerprint()`` is cheap and never raises: it runs no subprocess (nothing can hang), reads versions from the
imported modules or the installed distributions' metadata, the CPU model from ``/proc/cpuinfo`` and the git
commit from the ``.git`` folder's files; a probe that fails gives ``"unknown"``. Every key is always present
(``"none"`` where a thing does not exist, e.g. the GPU keys without CUDA), so fingerprints compare key by key.
ctca.tracking tags every MLflow stage run with it (``env.<key>``); the report prints it.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

UNKNOWN = "unknown"
KEYS = ("python", "platform", "ctca", "git_commit", "torch", "numpy", "opencv", "dvc", "mlflow",
        "cpu_model", "cpu_count", "cpu_usable", "torch_threads", "cuda_available", "gpus", "cuda", "cudnn",
        "deterministic_algorithms", "cudnn_deterministic", "cudnn_benchmark")


def _probe(fn: Callable[[], object]) -> str:
    try:
        value = fn()
    except Exception:  # a probe never breaks a run
        return UNKNOWN
    return UNKNOWN if value is None or value == "" else str(value)


def dist_version(name: str) -> str:
    """The installed version of distribution ``name`` ("unknown" when it is not installed)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return UNKNOWN


def _opencv() -> str:
    import cv2

    return cv2.__version__


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):  # x86, ARM boards, others
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.machine()  # not platform.processor(): it runs `uname -p`


def _platform() -> str:
    """Like platform.platform() without its ``uname -p`` subprocess: system-release-machine[-libc]."""
    u = os.uname()
    libc, version = platform.libc_ver()
    return "-".join(x for x in (u.sysname, u.release, u.machine, f"{libc}{version}" if libc else "") if x)


def _cpu_usable() -> int:
    return len(os.sched_getaffinity(0))  # the CPUs this process may run on (containers, taskset)


def git_commit(start: Path | str | None = None) -> str:
    """The commit checked out in the git repository holding ``start`` (default: the working directory),
    read from the ``.git`` files (no ``git`` subprocess); ``"unknown"`` outside a repository."""
    def read() -> str:
        here = Path(start or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            dot = folder / ".git"
            if dot.is_file():  # a worktree or submodule: "gitdir: <path>"
                dot = (folder / dot.read_text().split(":", 1)[1].strip()).resolve()
            if dot.is_dir():
                break
        else:
            return UNKNOWN
        head = (dot / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head  # detached HEAD
        ref = head[4:].strip()
        common = dot / "commondir"  # a worktree keeps its branches in the main repository
        roots = [dot] + ([(dot / common.read_text().strip()).resolve()] if common.is_file() else [])
        for root in roots:
            if (root / ref).is_file():
                return (root / ref).read_text().strip()
            packed = root / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    sha, _, name = line.partition(" ")
                    if name.strip() == ref:
                        return sha
        return UNKNOWN

    return _probe(read)


def _torch_info() -> dict[str, str]:
    try:
        import torch
    except Exception:
        return {}
    info = {
        "torch": _probe(lambda: torch.__version__),
        "torch_threads": _probe(torch.get_num_threads),
        "deterministic_algorithms": _probe(torch.are_deterministic_algorithms_enabled),
        "cudnn_deterministic": _probe(lambda: torch.backends.cudnn.deterministic),
        "cudnn_benchmark": _probe(lambda: torch.backends.cudnn.benchmark),
        "cuda_available": _probe(torch.cuda.is_available),
    }
    if info["cuda_available"] == "True":
        info["gpus"] = _probe(lambda: "; ".join(torch.cuda.get_device_name(i)
                                                for i in range(torch.cuda.device_count())))
        info["cuda"] = _probe(lambda: torch.version.cuda)
        info["cudnn"] = _probe(torch.backends.cudnn.version)
    else:
        info.update(gpus="none", cuda="none", cudnn="none")
    return info


def fingerprint() -> dict[str, str]:
    """The environment of this process: software versions, CPU, GPU(s), torch's determinism settings.

    Keys (all always present, values strings): ``python``, ``platform``, ``ctca``, ``git_commit`` (of the
    working directory), ``torch``, ``numpy``, ``opencv``, ``dvc``, ``mlflow``; ``cpu_model``, ``cpu_count``
    (logical CPUs), ``cpu_usable`` (those this process may use); ``torch_threads``, ``cuda_available``,
    ``gpus`` (names, ``; ``-separated), ``cuda``, ``cudnn`` (``none`` without CUDA);
    ``deterministic_algorithms`` (``torch.are_deterministic_algorithms_enabled()``), ``cudnn_deterministic``,
    ``cudnn_benchmark``. The torch values are this process's settings at the time of the call.
    """
    env = {
        "python": _probe(platform.python_version),
        "platform": _probe(_platform),
        "ctca": _probe(lambda: dist_version("ctca")),
        "git_commit": git_commit(),
        "numpy": _probe(lambda: sys.modules["numpy"].__version__ if "numpy" in sys.modules
                        else dist_version("numpy")),
        "opencv": _probe(_opencv),
        "dvc": _probe(lambda: dist_version("dvc")),
        "mlflow": _probe(lambda: dist_version("mlflow")),
        "cpu_model": _probe(_cpu_model),
        "cpu_count": _probe(os.cpu_count),
        "cpu_usable": _probe(_cpu_usable),
        **_torch_info(),
    }
    return {k: env.get(k, UNKNOWN) for k in KEYS}


def differences(a: dict, b: dict) -> list[str]:
    """The keys whose values differ between two fingerprints (a key missing on one side counts)."""
    return [k for k in dict.fromkeys((*a, *b)) if str(a.get(k, UNKNOWN)) != str(b.get(k, UNKNOWN))]
