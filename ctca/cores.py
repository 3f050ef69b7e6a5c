"""Share this machine's CPU cores (and GPUs) among the ctca compute processes that run at once.

Why: ``dvc queue start -j N`` runs N experiments at once, one process each, and torch gives every process
as many threads as the machine has cores. N processes x all cores oversubscribe the CPU: in a reported run
with 2 workers on 2 cores, SPM pretraining took 4x and a training epoch 6x as long as alone, so ``-j 2`` did
2-3x less work per hour than running the same experiments one after another.

How: every compute stage (pretrain_spm, train, iiw, evaluate) registers its process in a machine-wide
registry, one small JSON file per process in ``$CTCA_CORES_DIR`` (default
``${XDG_RUNTIME_DIR:-/tmp}/ctca-cores-<uid>``), and with ``train.threads: 0`` (automatic) sets torch's and
OpenCV's threads to ``max(1, usable cores // ctca compute processes running)``. Usable cores are this
process's CPU affinity (``os.sched_getaffinity``, so ``taskset`` and container CPU sets are respected);
only processes whose CPU sets overlap it are counted. The count is taken again at stage start and at the
start of every training epoch, so a run that becomes alone gets the cores back within an epoch. An explicit
``train.threads > 0`` wins (the process still registers, so the others count it). A process's entry is
removed when it exits; the entry of a process that died without cleaning up (SIGKILL, power loss) is
recognised by its PID and start time (``/proc``, so a reused PID does not count) and removed by the next
reader.

What is not counted, to keep the rule simple: DataLoader worker processes (``loader.num_workers``; torch
gives each one thread), the data stages (synthesize, extract_frames, cache_features: they use
``synth.workers`` and ``frames.workers``), other users' processes and programs other than ctca.

Bit-identical results need the same thread count: torch's CPU kernels split reductions by thread, so the
automatic count (which depends on what else runs) can change the low-order bits of a run. Set
``train.threads`` to a fixed number where bit-identical reruns matter; the count used is logged (stage log,
MLflow ``env.torch_threads`` tag and the per-epoch ``torch_threads`` metric of training).

GPUs: with several CUDA devices visible and no device assigned (no ``LOCAL_RANK`` from torchrun; a
``CUDA_VISIBLE_DEVICES`` listing one device assigns it), :func:`claim_gpu` picks the visible GPU that the
fewest live registered processes hold, under a lock on the registry, so two ``-j 2`` workers land on
different GPUs.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
ENV_DIR = "CTCA_CORES_DIR"


def registry_dir() -> Path:
    """``$CTCA_CORES_DIR``, else ``${XDG_RUNTIME_DIR:-/tmp}/ctca-cores-<uid>`` (one registry per user and machine)."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"ctca-cores-{os.getuid()}"


def usable_cpus() -> frozenset[int]:
    """The CPUs this process may run on (its affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return frozenset(os.sched_getaffinity(0))
    return frozenset(range(os.cpu_count() or 1))


def auto_threads(usable: int, running: int) -> int:
    """Threads per process when ``running`` processes share ``usable`` cores: at least 1."""
    return max(1, usable // max(1, running))


def process_start(pid: int) -> str | None:
    """Start time of ``pid`` (clock ticks after boot, /proc/<pid>/stat field 22); None if it has no entry."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ..., starttime (20th)
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Whether ``pid`` runs on this machine (not a zombie; with ``start``, not a later process reusing the PID)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # it just ended, or there is no /proc (not Linux: trust os.kill)
        return not Path("/proc").is_dir()
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return False
    return not (start and len(fields) > 19 and fields[19] != start)


@dataclass
class Entry:
    """One registered process: its PID and start time (to tell it from a reused PID), CPUs, GPU and stage."""

    pid: int
    start: str | None
    host: str
    cpus: list[int] = field(default_factory=list)
    gpu: str | None = None
    stage: str = ""

    def alive(self) -> bool:
        return pid_alive(self.pid, self.start)


class Registry:
    """The machine-wide set of running ctca compute processes: one ``<pid>.json`` file each in ``directory``."""

    def __init__(self, directory: Path | str | None = None):
        self.directory = Path(directory) if directory is not None else registry_dir()

    def path(self, pid: int) -> Path:
        return self.directory / f"{pid}.json"

    def write(self, entry: Entry) -> None:
        """Write ``entry`` atomically (readers never see half a file)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.directory / f".{entry.pid}.json.tmp"
        tmp.write_text(json.dumps(asdict(entry)))
        os.replace(tmp, self.path(entry.pid))

    def remove(self, pid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(pid).unlink()

    def entries(self) -> list[Entry]:
        """The live entries; files of dead processes of this host are removed, unreadable ones skipped.

        Entries written on another host (a registry directory on a shared filesystem) cannot be checked
        from here and are left alone, and not counted."""
        host = socket.gethostname()
        out = []
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:  # not there yet, or unreadable: nobody registered that we can see
            return []
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                entry = Entry(**json.loads((self.directory / name).read_text()))
            except FileNotFoundError:  # removed meanwhile
                continue
            except (ValueError, TypeError) as exc:
                log.debug("ignoring %s: %s", self.directory / name, exc)
                continue
            if entry.host != host:
                continue
            if entry.alive():
                out.append(entry)
            else:
                self.remove(entry.pid)
        return out

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock on the registry (``flock`` on ``.lock``): for choose-then-write decisions."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


# this process's registration and the thread count it last applied
_registry: Registry | None = None
_entry: Entry | None = None
_threads: int | None = None


def register(stage: str = "") -> Entry | None:
    """Register this process (once; later calls return the same entry); None if the registry is unwritable.

    The entry is removed at exit (only by the process that wrote it: forked children inherit this module's
    state but not its registration)."""
    global _registry, _entry
    if _entry is not None and _registry is not None and _entry.pid == os.getpid():
        if not _registry.path(_entry.pid).is_file():  # removed by someone: write it again
            with contextlib.suppress(OSError):
                _registry.write(_entry)
        return _entry
    registry = Registry()
    pid = os.getpid()
    entry = Entry(pid=pid, start=process_start(pid), host=socket.gethostname(), cpus=sorted(usable_cpus()),
                  stage=stage or os.environ.get("DVC_STAGE", ""))
    try:
        registry.write(entry)
    except OSError as exc:
        log.warning("cannot register in %s (%s): the CPU cores are not shared with other ctca runs; set %s "
                    "to a writable directory", registry.directory, exc, ENV_DIR)
        return None
    _registry, _entry = registry, entry
    atexit.register(_unregister, pid)
    return entry


def release() -> None:
    """Remove this process's entry now (a long-lived process that is done computing, e.g. a notebook)."""
    global _entry
    if _registry is not None and _entry is not None and _entry.pid == os.getpid():
        _registry.remove(_entry.pid)
    _entry = None


def _unregister(pid: int) -> None:
    if os.getpid() == pid:
        release()


def running_processes() -> int:
    """Live registered ctca processes whose CPUs overlap this process's (this one included, if registered)."""
    mine = usable_cpus()
    registry = _registry or Registry()
    entries = registry.entries()
    n = sum(1 for e in entries if not e.cpus or mine & set(e.cpus))
    if _entry is None or all(e.pid != os.getpid() for e in entries):
        n += 1  # this process computes too, registered or not
    return n


def share_cores(explicit: int = 0, stage: str = "") -> int:
    """Set torch's and OpenCV's CPU threads for this process and return the count.

    ``explicit > 0`` (``train.threads``) is used as is; 0 = ``max(1, usable cores // running ctca processes)``.
    Registers the process either way. Call it at stage start and at every epoch start: the count follows the
    processes running at that moment; a change is logged."""
    global _threads
    register(stage)
    if explicit > 0:
        n, why = explicit, "train.threads"
    else:
        usable, running = len(usable_cpus()), running_processes()
        n = auto_threads(usable, running)
        why = (f"automatic: {usable} usable cores shared by {running} ctca compute process"
               f"{'es' if running != 1 else ''}")
    set_threads(n)
    if n != _threads:
        log.info("torch threads: %d (%s)", n, why)
    _threads = n
    return n


def set_threads(n: int) -> None:
    """torch intra-op threads and OpenCV's thread pool to ``n`` (only when they differ: cheap to call often)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a dependency
        return
    if cv2.getNumThreads() != n:
        cv2.setNumThreads(n)


def visible_gpus(count: int) -> list[str]:
    """Machine-wide names of the ``count`` CUDA devices this process sees: the ``CUDA_VISIBLE_DEVICES`` entries
    (indices or UUIDs) when it is set, else ``"0" .. "count-1"``; processes with different masks then still
    name the same GPU alike."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        ids = [x.strip() for x in env.split(",") if x.strip()]
        if len(ids) >= count:
            return ids[:count]
    return [str(i) for i in range(count)]


def least_loaded(ids: Sequence[str], held: Sequence[str | None]) -> int:
    """Index in ``ids`` of the GPU that the fewest entries of ``held`` hold; the lowest index on a tie."""
    if not ids:
        raise ValueError("no GPU to choose from")
    load = [sum(1 for h in held if h == gpu) for gpu in ids]
    return load.index(min(load))


def claim_gpu(count: int | None = None) -> int | None:
    """The CUDA device index this process should use, recorded in the registry; None = leave torch's default.

    None when torchrun assigned the device (``LOCAL_RANK``), when fewer than two devices are visible (a
    ``CUDA_VISIBLE_DEVICES`` of one device pins it), or when the registry is unwritable. ``count``: the number
    of visible devices (default ``torch.cuda.device_count()``). A second call returns the first choice."""
    if "LOCAL_RANK" in os.environ:
        return None
    if count is None:
        import torch

        count = torch.cuda.device_count()
    if count < 2:
        return None
    ids = visible_gpus(count)
    entry = register()
    if entry is None or _registry is None:
        return None
    if entry.gpu in ids:
        return ids.index(entry.gpu)
    with _registry.locked():
        held = [e.gpu for e in _registry.entries() if e.pid != entry.pid]
        index = least_loaded(ids, held)
        entry.gpu = ids[index]
        _registry.write(entry)
    log.info("GPU: cuda:%d (%s of %d visible; the least used by ctca processes: %s)", index, ids[index], count,
             ", ".join(f"{g}={held.count(g)}" for g in ids))
    return index
