"""GPU check: the device code paths of the pipeline on one GPU, in at most 8 minutes, with a summary table.

Why: the test suite runs on CPUs, so the code that only runs on a GPU (bf16 autocast, channels_last frames,
cuDNN CTC and LSTMs, pinned-memory loading, NCCL under torchrun, IIW's per-sample backward on the device)
is otherwise never exercised. Each part is a function; a failing part is reported and the next one runs;
the script exits non-zero when any part failed.

Parts (GPU mode):

* ``imports``      ``ctca.train``, ``ctca.iiw``, ``ctca.methods.*`` and ``ctca.data.*`` import in a fresh
                   interpreter without importing mlflow or dvc (GPU machines may have neither).
* ``ctc``          ``F.ctc_loss`` on cuDNN (int32 targets concatenated on the CPU, every input length = T,
                   blank 0, labels < 256) and on the native CUDA kernel versus the CPU: losses and gradients.
* ``train_paper``  the paper's shape (ResNet-18 SPM, ``tam.hidden`` 1024, 1,296 classes, batch 2 x 200 frames
                   x 224 px, bf16 autocast, channels_last frames) for ``baseline`` and ``ctca`` through the
                   method's own hooks (``make_method``, ``build_model``, ``prepare``, ``forward_options``,
                   ``loss``), on random frames: training frames/s and peak GPU memory.
* ``corpus``       a small SynthSign corpus rendered, extracted at 256 px and packed into a clip store.
* ``loader``       that store read by the training loader with ``--workers`` workers feeding the GPU at the
                   paper's shape: loader-only rate, then the time the step waits for the next batch versus
                   the time it computes (the GPU busy fraction; also ``torch.cuda.utilization`` if it works).
* ``iiw``          one IIW measurement (``ctca.iiw.measure_iiw``, as the iiw stage) on the GPU.
* ``ddp``          ``torchrun --standalone --nproc-per-node 1`` running ``ctca.train.fit`` for one epoch on
                   the corpus (this script's ``--ddp-worker`` mode; no mlflow needed).
* ``device_tests`` ``pytest -q`` on the device-related test files.

Without a GPU it says so, skips every part and exits 0. ``--cpu-smoke`` runs every part on the CPU at tiny
shapes (compact SPM, 2 x 16 frames x 32 px, a tiny corpus, torchrun with 2 processes over gloo) so the code
paths are exercised anywhere; the pytest part is skipped there (the suite runs those tests already).

    python benchmarks/gpu_check.py [--workers N] [--budget 480] [--ddp-nproc 1] [--parts ctc,iiw] [--keep]
    python benchmarks/gpu_check.py --cpu-smoke

On a GPU it needs torch (with CUDA), numpy, OpenCV, PyYAML, tqdm and pytest; never mlflow or dvc.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# Runnable from a checkout without `pip install -e .` (and under torchrun): the repository root holds ctca.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FORBIDDEN = ("mlflow", "dvc")  # not installed on the GPU machines: training code must not import them
TRAINING_MODULES = ("ctca.train", "ctca.iiw", "ctca.methods", "ctca.methods.baseline", "ctca.methods.ctca",
                    "ctca.data.synthetic", "ctca.data.frames", "ctca.data.cache", "ctca.data.corpus",
                    "ctca.data.loader", "ctca.config", "ctca.device", "ctca.distributed")
# test file -> whether the GPU stays visible. test_distributed is the two-process CPU/gloo test: with a GPU
# visible its train.device "auto" puts both ranks on CUDA (rank 1 on a missing cuda:1 with one GPU, and the
# rendezvous variant's two LOCAL_RANK-0 processes on the same GPU, which NCCL refuses), so it runs on the CPU.
DEVICE_TESTS = {"tests/test_device.py": True, "tests/test_distributed.py": False}
METHODS = ("baseline", "ctca")
DEFAULT_BUDGET_S = 480.0  # the issue: the whole GPU run stays under 8 minutes
MIN_PART_S = 5.0  # a part is not started with less budget left than this


@dataclass(frozen=True)
class Shapes:
    """Sizes of one run: the paper's on a GPU, tiny ones for ``--cpu-smoke``."""

    spm_arch: str
    spm_channels: tuple[int, ...]
    hidden: int
    num_classes: int  # the random-frame training: PHOENIX-2014's 1,295 glosses + blank
    batch: int
    frames: int
    crop: int
    label_len: int
    warmup: int  # untimed steps (cuDNN and allocator warm-up)
    steps: int  # timed steps
    ctc: tuple[int, int, int, int]  # T, B, C, max label length
    synth: dict[str, Any]  # SynthConfig of the corpus
    frame_size: int  # frames.size of the corpus
    iiw_subset: int
    amp: str


PAPER = Shapes(spm_arch="resnet18", spm_channels=(16, 32, 64, 64), hidden=1024, num_classes=1296, batch=2,
               frames=200, crop=224, label_len=12, warmup=10, steps=20, ctc=(100, 4, 1296, 30),
               synth={"seed": 0, "n_train": 24, "n_dev": 4, "n_test": 0, "min_len": 12, "max_len": 16,
                      "sign_frames": 10},
               frame_size=256, iiw_subset=32, amp="bf16")
SMOKE = Shapes(spm_arch="compact", spm_channels=(4, 8), hidden=16, num_classes=12, batch=2, frames=16, crop=32,
               label_len=2, warmup=1, steps=2, ctc=(20, 3, 12, 6),
               synth={"seed": 3, "vocab_size": 6, "n_train": 8, "n_dev": 2, "n_test": 0, "n_signers": 3,
                      "held_out_signers": 1, "min_len": 2, "max_len": 3},
               frame_size=40, iiw_subset=4, amp="bf16")


class PartFailed(RuntimeError):
    """A check of a part did not hold; the message says which and by how much."""


class PartSkipped(RuntimeError):
    """A part that does not apply in this mode (not a failure)."""


@dataclass
class Corpus:
    """The SynthSign corpus built by the ``corpus`` part and read by ``loader``, ``iiw`` and ``ddp``."""

    clips: Path
    train_clips: int
    frames: int


@dataclass
class Check:
    """State shared by the parts: the mode, the device, the shapes, the temporary folder and the budget."""

    smoke: bool
    device: torch.device
    shapes: Shapes
    workers: int
    ddp_nproc: int
    tmp: Path
    deadline: float
    corpus: Corpus | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def ensure_time(self) -> None:
        """Stop a part whose loop would run past the budget."""
        if self.remaining() <= 0:
            raise PartFailed("budget spent (see --budget)")

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass
class PartResult:
    name: str
    status: str  # ok | FAIL | skipped
    seconds: float
    summary: str


# ------------------------------------------------------------------------------------------------
# helpers


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this checkout importable first."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def gib(value: float | None) -> str:
    """Peak GPU memory for the report ("n/a" on the CPU)."""
    return "n/a (CPU)" if value is None else f"{value:.2f} GiB"


def dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def tail(text: str, n: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def make_params(check: Check, method: str, **sections: dict[str, Any]):
    """Params of ``method`` at this run's shapes (every other key at its ctca.config default)."""
    from ctca.config import parse_params

    s = check.shapes
    data: dict[str, dict[str, Any]] = {
        "spm": {"arch": s.spm_arch, "channels": list(s.spm_channels)},
        "tam": {"hidden": s.hidden},
        "model": {"method": method},
        "ctca": {"downsample": "none"},  # the reconstruction's default: full frame rate
        "loader": {"crop": s.crop, "batch_size": s.batch, "num_workers": 0},
        "train": {"epochs": 1, "milestones": [], "amp": s.amp, "device": check.device.type,
                  "threads": 1 if check.smoke else 0},
        "evaluate": {"batch_size": 2},
        "iiw": {"subset": s.iiw_subset},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_params(data)


def train_step(method, model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch, device: torch.device,
               amp: str) -> float:
    """One training step as ``ctca.train.fit`` makes it (forward under autocast, the method's loss, Adam)."""
    from ctca.device import autocast

    with autocast(device, amp):
        out = model(batch.video, batch.mask, batch.lengths, **method.forward_options)
    res = method.loss(model, out, batch)
    optimizer.zero_grad(set_to_none=True)
    res.total.backward()
    optimizer.step()
    return float(res.total.detach())


class UtilizationSampler:
    """``torch.cuda.utilization()`` sampled every 0.1 s in a thread (needs pynvml; None when unavailable)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.samples: list[int] = []
        self.error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if device.type != "cuda":
            self.error = "not a CUDA device"
            return
        try:
            torch.cuda.utilization(device)
        except Exception as exc:  # pynvml missing, or NVML refuses: say why, measure without it
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:120]

    def __enter__(self) -> UtilizationSampler:
        if not self.error:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.samples.append(int(torch.cuda.utilization(self.device)))
            except Exception:
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


# ------------------------------------------------------------------------------------------------
# the parts


def environment(check: Check | None, mode: str) -> list[str]:
    """Lines describing the software and the accelerator (printed first, whatever the mode)."""
    import importlib.util
    import platform
    from importlib import metadata

    lines = [f"mode: {mode}", f"python {platform.python_version()}, torch {torch.__version__}, "
             f"CUDA {torch.version.cuda or 'none (CPU build)'}, cuDNN {torch.backends.cudnn.version() or 'none'}"]
    found = []
    try:
        dists = metadata.packages_distributions()  # module -> distributions; nothing imported (mlflow is slow)
        for name in ("numpy", "cv2", "torchvision", "yaml", "tqdm", "pytest", "mlflow", "dvc"):
            if importlib.util.find_spec(name) is None:
                found.append(f"{name} not installed")
                continue
            versions = {metadata.version(d) for d in dists.get(name, [])}
            found.append(f"{name} {'/'.join(sorted(versions)) or '?'}")
    except Exception as exc:  # a broken installation must not stop the check: the imports part says more
        found.append(f"(probe failed: {type(exc).__name__}: {exc})")
    lines.append("packages: " + ", ".join(found))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
        lines.append(f"cudnn.enabled {torch.backends.cudnn.enabled}, cudnn.benchmark {torch.backends.cudnn.benchmark}, "
                     f"bf16 supported {torch.cuda.is_bf16_supported()}")
    else:
        lines.append("GPU: none (torch.cuda.is_available() is False)")
    lines.append(f"CPUs usable: {len(os.sched_getaffinity(0))}, torch threads {torch.get_num_threads()}")
    if check is not None:
        lines.append(f"device {check.device}, loader workers {check.workers}, torchrun processes {check.ddp_nproc}, "
                     f"budget {check.remaining():.0f} s, temp {check.tmp}")
    return lines


def part_imports(check: Check) -> str:
    """The training code imports in a fresh interpreter without mlflow or dvc (absent on GPU machines)."""
    code = ("import json, sys\n" + "".join(f"import {m}\n" for m in TRAINING_MODULES)
            + f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(FORBIDDEN)!r})))")
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True,
                          timeout=max(10.0, min(120.0, check.remaining())), cwd=REPO)
    if proc.returncode != 0:
        raise PartFailed(f"importing the training modules failed:\n{tail(proc.stderr)}")
    bad = json.loads(proc.stdout.strip().splitlines()[-1])
    if bad:
        raise PartFailed(f"importing {', '.join(TRAINING_MODULES)} imports {bad} at module level")
    return f"{len(TRAINING_MODULES)} training modules import without {' or '.join(FORBIDDEN)}"


CtcVariant = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # logits -> (per-sample, summed loss)


def _ctc(logits: torch.Tensor, device: torch.device, dtype: torch.dtype,
         variant: CtcVariant) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Per-sample CTC losses and the gradient of their sum w.r.t. the logits (both float64 on the CPU), and the
    autograd node of the summed loss's input (``CudnnCtcLossBackward*`` when cuDNN computed it)."""
    x = logits.to(device, dtype, copy=True).requires_grad_()  # a fresh leaf: gradients never accumulate
    per, total = variant(x)
    node = type(per.grad_fn).__name__ if per.grad_fn is not None else "none"
    total.backward()
    return per.detach().double().cpu(), x.grad.double().cpu(), node


def part_ctc(check: Check) -> str:
    """cuDNN CTC (and the native CUDA kernel, and ctca's own ``ctc_loss``) versus the CPU on one batch.

    torch uses cuDNN only when the targets are int32, concatenated, on the CPU, the blank is 0, every label
    is shorter than 256 and not longer than its input, and (lengths given as ints, the cuDNN 7 API) every
    input length is T; this batch meets all of it. Both ways of giving the lengths are run: int32 tensors
    (the cuDNN 8+ API in recent torch) and tuples of ints. ctca's ``ctc_loss`` (ctca.losses.ctc) passes int64
    targets, so it runs on the native CUDA kernel. Losses must agree to rtol 1e-4, gradients w.r.t. the
    logits to 1e-4. In ``--cpu-smoke`` the reference is the CPU in float64 and the candidates run on the CPU
    in float32.
    """
    import torch.nn.functional as F

    from ctca.losses.ctc import ctc_loss

    t, b, c, max_len = check.shapes.ctc
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(t, b, c, generator=g)
    target_lengths = torch.randint(max(1, max_len // 3), max_len + 1, (b,), generator=g, dtype=torch.int32)
    targets = torch.randint(1, c, (int(target_lengths.sum()),), generator=g, dtype=torch.int32)  # concatenated
    input_lengths = torch.full((b,), t, dtype=torch.int32)
    device = torch.device("cpu") if check.smoke else check.device

    def torch_ctc(tg: torch.Tensor, il: torch.Tensor | tuple[int, ...], tl: torch.Tensor | tuple[int, ...]) -> CtcVariant:
        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            per = F.ctc_loss(F.log_softmax(x, -1), tg, il, tl, blank=0, reduction="none")
            return per, per.sum()
        return run

    def project_ctc(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        res = ctc_loss(x, input_lengths.to(x.device), targets.to(x.device), target_lengths.to(x.device))
        return res.per_sample, res.loss * b  # res.loss: the mean over the (all finite) samples

    reference = torch_ctc(targets, input_lengths, target_lengths)
    ref_dtype = torch.float64 if check.smoke else torch.float32
    ref_loss, ref_grad, _ = _ctc(logits, torch.device("cpu"), ref_dtype, reference)
    print(f"batch: T {t}, B {b}, C {c}, label lengths {target_lengths.tolist()}")
    print(f"cpu ({str(ref_dtype).removeprefix('torch.')}) losses: {[round(v, 4) for v in ref_loss.tolist()]}")
    variants: list[tuple[str, CtcVariant]] = []
    if check.smoke:
        variants.append(("cpu float32", reference))
    else:
        variants.append(("cudnn (int32 tensor lengths)", reference))
        variants.append(("cudnn (int lengths)", torch_ctc(targets, tuple(input_lengths.tolist()),
                                                          tuple(target_lengths.tolist()))))
        variants.append(("cuda native (int64 targets)", torch_ctc(targets.long().to(device), input_lengths.long(),
                                                                  target_lengths.long())))
    variants.append(("ctca.losses.ctc.ctc_loss", project_ctc))
    failures, summary, cudnn_used = [], [], []
    for name, variant in variants:
        loss, grad, node = _ctc(logits, device, torch.float32, variant)
        loss_diff = float((loss - ref_loss).abs().max())
        grad_diff = float((grad - ref_grad).abs().max())
        loss_ok = torch.allclose(loss, ref_loss, rtol=1e-4, atol=1e-4)
        grad_ok = torch.allclose(grad, ref_grad, rtol=1e-3, atol=1e-4)
        print(f"{name}: losses {[round(v, 4) for v in loss.tolist()]}" + (f" (autograd node {node})" if node != "none" else ""))
        print(f"  max |loss diff| {loss_diff:.3e} ({'ok' if loss_ok else 'FAIL'}), max |grad diff| {grad_diff:.3e} "
              f"of max |grad| {float(ref_grad.abs().max()):.3f} ({'ok' if grad_ok else 'FAIL'})")
        if name.startswith("cudnn"):
            if "Cudnn" in node:
                cudnn_used.append(name)
            else:
                print(f"  note: torch {torch.__version__} did not use cuDNN here")
        if not (loss_ok and grad_ok):
            failures.append(f"{name} differs from the CPU: loss {loss_diff:.2e}, grad {grad_diff:.2e}")
        summary.append(f"{name.split(' (')[0]} {loss_diff:.0e}/{grad_diff:.0e}")
    if not check.smoke and not cudnn_used:
        failures.append(f"cuDNN CTC was not used by torch {torch.__version__} (cudnn enabled: "
                        f"{torch.backends.cudnn.enabled}); only the native kernel was compared")
    if failures:
        raise PartFailed("; ".join(failures))
    return "max |diff| loss/grad: " + ", ".join(summary)


def fake_split(num_classes: int, sentences: int, label_len: int, frame_shape: tuple[int, int, int]):
    """A ClipSplit of metadata only (random gloss sentences), for ``Method.prepare`` without a corpus."""
    import numpy as np

    from ctca.data.cache import ClipMeta, ClipSplit

    rng = np.random.default_rng(0)
    metas = []
    for i in range(sentences):
        ids = tuple(int(x) for x in rng.integers(1, num_classes, label_len))
        metas.append(ClipMeta(id=f"fake{i}", split="train", signer="S0", glosses=tuple(f"G{x}" for x in ids),
                              gloss_ids=ids, oov=(), n_frames=0, offset=0))
    return ClipSplit("train", Path(os.devnull), frame_shape, 0, metas)


def fake_batch(shapes: Shapes, pad: int, stride: int):
    """A collated batch of random uint8 frames (batch x frames x 3 x crop x crop) and random gloss labels."""
    from ctca.data.loader import collate

    g = torch.Generator().manual_seed(1)
    items = []
    for i in range(shapes.batch):
        label = torch.randint(1, shapes.num_classes, (shapes.label_len,), generator=g)
        items.append({"video": torch.randint(0, 256, (shapes.frames, 3, shapes.crop, shapes.crop), generator=g,
                                             dtype=torch.uint8),
                      "label": label, "id": f"fake{i}", "glosses": tuple(f"G{int(x)}" for x in label),
                      "signer": "S0", "index": i})
    return collate(items, pad, stride)


def train_random(check: Check, method_name: str) -> dict[str, Any]:
    """``method_name`` at the paper's shape on one batch of random frames: frames/s and peak memory."""
    import math

    from ctca.data.loader import AugmentConfig
    from ctca.device import autocast
    from ctca.methods import make_method
    from ctca.methods.base import TrainingData

    s, device = check.shapes, check.device
    params = make_params(check, method_name)
    torch.manual_seed(0)
    method = make_method(params)
    model = method.build_model(s.num_classes)
    augment = AugmentConfig(crop=s.crop)
    split = fake_split(s.num_classes, 256, s.label_len, (s.crop, s.crop, 3))
    method.prepare(model, TrainingData(split, augment, device, params.train.amp, params.evaluate.batch_size))
    batch = fake_batch(s, model.frame_padding, model.stride).to(device)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=method.lr_at(0), weight_decay=params.train.weight_decay)
    method.on_epoch_start(model, 0)
    model.train()
    seen: dict[str, Any] = {}

    def spy(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen["channels_last"] = inputs[0].is_contiguous(memory_format=torch.channels_last)

    hook = model.spm.backbone.register_forward_pre_hook(spy)
    with torch.no_grad(), autocast(device, params.train.amp):
        seen["logits_dtype"] = str(model(batch.video, batch.mask, batch.lengths).logits.dtype)
    hook.remove()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    losses, seconds, frames = [], 0.0, 0
    for i in range(s.warmup + s.steps):
        check.ensure_time()
        check.sync()
        t0 = time.perf_counter()
        losses.append(train_step(method, model, optimizer, batch, device, params.train.amp))
        check.sync()
        if i >= s.warmup:
            seconds += time.perf_counter() - t0
            frames += int(batch.mask.sum())
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    if not all(math.isfinite(v) for v in losses):
        raise PartFailed(f"{method_name}: non-finite training loss {losses}")
    out = {"method": method_name, "frames_per_s": frames / seconds, "step_s": seconds / s.steps, "peak_gib": peak,
           "loss_first": losses[0], "loss_last": losses[-1], **seen,
           "parameters": sum(p.numel() for p in model.parameters())}
    del model, optimizer, batch, method
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def part_train_paper(check: Check) -> str:
    """baseline and ctca at the paper's shape (random frames): training frames/s and peak GPU memory."""
    s = check.shapes
    print(f"spm {s.spm_arch}, tam.hidden {s.hidden}, {s.num_classes} classes, batch {s.batch} x {s.frames} frames "
          f"x {s.crop} px, amp {s.amp}, {s.warmup} warm-up + {s.steps} timed steps per method")
    rows = []
    for name in METHODS:
        r = train_random(check, name)
        rows.append(r)
        print(f"{name:9s} {r['frames_per_s']:9.0f} frames/s  {r['step_s'] * 1000:8.1f} ms/step  peak "
              f"{gib(r['peak_gib'])}  loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}  logits "
              f"{r['logits_dtype']}  SPM input channels_last {r['channels_last']}  {r['parameters']:,} parameters")
    if check.device.type == "cuda":
        wrong = [f"{r['method']}: logits {r['logits_dtype']}, channels_last {r['channels_last']}" for r in rows
                 if r["logits_dtype"] != "torch.bfloat16" or not r["channels_last"]]
        if wrong:
            raise PartFailed("expected bf16 logits and channels_last SPM input on CUDA: " + "; ".join(wrong))
    return ", ".join(f"{r['method']} {r['frames_per_s']:.0f} frames/s, peak {gib(r['peak_gib'])}" for r in rows)


def part_corpus(check: Check) -> str:
    """A small SynthSign corpus, its frames at ``frames.size`` and its clip store (for loader, iiw, ddp)."""
    from ctca.data.cache import ClipStore, write_clip_store
    from ctca.data.corpus import open_corpus
    from ctca.data.frames import extract_frames
    from ctca.data.synthetic import SynthConfig, generate
    from ctca.data.vocab import Vocabulary

    root = check.tmp / "synthsign"
    workers = max(1, check.workers)
    t0 = time.perf_counter()
    generate(SynthConfig(**check.shapes.synth), root / "corpus", workers=workers, progress=False)
    reader = open_corpus("synthetic", root / "corpus")
    samples = [x for split in ("train", "dev") for x in reader.samples(split)]
    t1 = time.perf_counter()
    extract_frames(samples, root / "frames", size=check.shapes.frame_size, workers=workers, progress=False,
                   codec="jpeg")
    t2 = time.perf_counter()
    vocab = Vocabulary.build(x.glosses for x in samples if x.split == "train")
    write_clip_store(root / "frames", root / "clips", vocab, progress=False, store="encoded")
    t3 = time.perf_counter()
    store = ClipStore(root / "clips")
    train = store.split("train")
    frames = sum(train.lengths)
    check.corpus = Corpus(root / "clips", len(train), frames)
    print(f"{len(samples)} videos ({len(train)} train, {frames} train frames, {min(train.lengths)}-"
          f"{max(train.lengths)} frames each), {store.size} px, {len(vocab.glosses)} glosses")
    frames_mib, clips_mib = dir_mib(root / "frames"), dir_mib(root / "clips")
    print(f"render {t1 - t0:.1f} s; extract (jpeg shards) with {workers} worker(s) {t2 - t1:.1f} s; "
          f"clip store (encoded) {t3 - t2:.1f} s; on disk: frames {frames_mib:.1f} MiB, clip store {clips_mib:.1f} MiB")
    return (f"{len(samples)} videos, {frames} train frames at {store.size} px, frames {frames_mib:.1f} MiB + "
            f"store {clips_mib:.1f} MiB")


def need_corpus(check: Check) -> Corpus:
    if check.corpus is None:
        raise PartFailed("needs the corpus part, which failed or did not run")
    return check.corpus


def training_setup(check: Check, method_name: str, num_workers: int):
    """The training side of ``fit`` on the corpus: method, model, loader, optimizer (model on the device)."""
    from ctca.data.cache import ClipStore
    from ctca.data.loader import AugmentConfig, ClipDataset, make_loader
    from ctca.data.vocab import Vocabulary
    from ctca.losses.ctc import feasibility
    from ctca.methods import make_method
    from ctca.methods.base import TrainingData

    corpus = need_corpus(check)
    params = make_params(check, method_name)
    store, vocab = ClipStore(corpus.clips), Vocabulary.load(corpus.clips / "vocab.json")
    torch.manual_seed(0)
    method = make_method(params)
    model = method.build_model(vocab.num_classes)
    lc = params.loader
    augment = AugmentConfig(crop=lc.crop, flip=lc.flip, temporal_rescale=lc.temporal_rescale,
                            min_frames=lc.min_frames, max_frames=lc.max_frames)
    train = store.split("train")
    keep, excluded = feasibility(train, model.frame_padding, model.stride, model)
    if not keep:
        raise PartFailed(f"no training clip is CTC-feasible ({len(excluded)} excluded)")
    clips = train.subset(keep)
    method.prepare(model, TrainingData(clips, augment, check.device, params.train.amp, params.evaluate.batch_size))
    loader = make_loader(ClipDataset(clips, augment, train=True, seed=0), lc.batch_size, train=True,
                         pad=model.frame_padding, stride=model.stride, num_workers=num_workers, seed=0)
    model.to(check.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=method.lr_at(0), weight_decay=params.train.weight_decay)
    method.on_epoch_start(model, 0)
    model.train()
    return params, method, model, loader, optimizer, clips


def endless(loader, first_epoch: int = 0) -> Any:
    """(first batch of its epoch?, batch) over as many epochs as asked for (``set_epoch`` before each, as fit)."""
    epoch = first_epoch
    while True:
        loader.set_epoch(epoch)
        for i, batch in enumerate(loader):
            yield i == 0, batch
        epoch += 1


def part_loader(check: Check) -> str:
    """The clip-store loader with ``--workers`` workers feeding the GPU at the paper's shape.

    The step synchronises the device at its end (as fit's per-step ``float(loss)`` does), so the time spent
    in ``next(loader)`` is time the GPU sits idle waiting for input: busy = compute / (wait + compute). The
    corpus is small, so an epoch ends every few batches and the workers refill their queues far more often
    than in a real epoch: the busy fraction is given for all steps and for the steps that are not the first
    of an epoch (the steady state of a long epoch). Frames are counted as fit counts them (padded lengths).
    """
    s = check.shapes
    params, method, model, loader, optimizer, clips = training_setup(check, "baseline", check.workers)
    print(f"{len(clips)} train clips ({len(loader)} batches an epoch), batch {s.batch}, crop {s.crop}, "
          f"{check.workers} loader worker(s), pin_memory {loader.pin_memory}")
    loader.set_epoch(0)
    for _ in loader:  # starts the (persistent) workers
        check.ensure_time()
    t0 = time.perf_counter()
    n_batches = n_frames = 0
    loader.set_epoch(1)
    for batch in loader:  # one whole epoch, worker dispatch included
        n_batches += 1
        n_frames += int(batch.mask.sum())
    alone = time.perf_counter() - t0
    print(f"loader alone (one epoch): {n_batches / alone:.1f} batches/s, {n_frames / alone:.0f} frames/s")
    waits: list[tuple[bool, float, float, int]] = []  # (first of its epoch, wait s, compute s, frames)
    it = endless(loader, first_epoch=2)
    sampler = UtilizationSampler(check.device)
    with sampler:
        for i in range(s.warmup + s.steps):
            check.ensure_time()
            t0 = time.perf_counter()
            first, batch = next(it)
            t1 = time.perf_counter()
            batch = batch.to(check.device, non_blocking=True)
            loss = train_step(method, model, optimizer, batch, check.device, params.train.amp)
            check.sync()
            t2 = time.perf_counter()
            if loss != loss:
                raise PartFailed(f"non-finite loss at step {i}")
            if i >= s.warmup:
                waits.append((first, t1 - t0, t2 - t1, int(batch.mask.sum())))
    wait, compute = sum(w[1] for w in waits), sum(w[2] for w in waits)
    frames = sum(w[3] for w in waits)
    busy = compute / (wait + compute)
    steady = [w for w in waits if not w[0]] or waits
    busy_steady = sum(w[2] for w in steady) / sum(w[1] + w[2] for w in steady)
    util = sampler.mean()
    util_text = f"{util:.0f} %" if util is not None else f"n/a ({sampler.error or 'no samples'})"
    print(f"training from the loader, {len(waits)} timed steps: {frames / (wait + compute):.0f} frames/s, "
          f"{compute / len(waits) * 1000:.0f} ms compute a step; waiting for batches {wait:.2f} s of "
          f"{wait + compute:.2f} s")
    what = "GPU" if check.device.type == "cuda" else "device"
    print(f"{what} busy {100 * busy:.0f} % over all steps, {100 * busy_steady:.0f} % without the first step of each "
          f"epoch ({sum(w[0] for w in waits)} epoch starts); torch.cuda.utilization: {util_text}")
    verdict = ("starved: more loader workers or a faster store would help" if busy_steady < 0.9
               else "not starved")
    print(f"verdict: {verdict}")
    del model, optimizer, loader, it
    return (f"{check.workers} worker(s): {what} busy {100 * busy_steady:.0f} % steady, {100 * busy:.0f} % all "
            f"({verdict.split(':')[0]}), {frames / (wait + compute):.0f} frames/s")


def part_iiw(check: Check) -> str:
    """One IIW measurement on the device, as the iiw stage makes it (``measure_iiw`` with θ0 from ``iiw_prior``)."""
    import math

    from ctca.iiw import IIW_GROUPS, iiw_prior, measure_iiw

    params, method, model, loader, optimizer, clips = training_setup(check, "baseline", 0)
    theta0 = iiw_prior(model, None, params, check.device)  # iiw.prior "init": the initial weights
    it = endless(loader)
    for _ in range(2):  # move the weights away from θ0, or every estimate is 0
        check.ensure_time()
        train_step(method, model, optimizer, next(it)[1].to(check.device), check.device, params.train.amp)
    rep = measure_iiw(model, clips, theta0, params, check.device)
    values = {g: rep.groups[g]["fisher_group"] for g in IIW_GROUPS if g in rep.groups}
    print(f"{rep.subset} of {rep.n} training clips, {rep.skipped} skipped, {rep.seconds:.2f} s "
          f"({rep.seconds / max(rep.subset, 1):.3f} s per clip); fisher_group "
          + ", ".join(f"{g} {v:.4g}" for g, v in values.items()))
    bad = [g for g, v in values.items() if not math.isfinite(v)]
    if bad or rep.skipped >= rep.subset:
        raise PartFailed(f"IIW not finite for {bad} or every sample skipped ({rep.skipped} of {rep.subset})")
    return f"{rep.seconds:.2f} s for {rep.subset} clips, spm {values.get('spm', float('nan')):.3g}"


def ddp_worker_params(smoke: bool, workers: int):
    """The params of the torchrun worker: the corpus's shapes, one epoch, DataLoader workers on a GPU."""
    check = Check(smoke=smoke, device=torch.device("cpu" if smoke else "cuda"), shapes=SMOKE if smoke else PAPER,
                  workers=workers, ddp_nproc=1, tmp=Path(), deadline=0.0)
    return make_params(check, "baseline", loader={"num_workers": 0 if smoke else min(2, workers)})


def ddp_worker(args: argparse.Namespace) -> int:
    """Run inside each torchrun process: ``ctca.train.fit`` for one epoch; every rank writes its JSON result.

    A spy on ``wrap_model`` records what fit trained (DDP or the bare model), on which device and backend.
    """
    import torch.distributed as dist

    import ctca.train as train_mod

    rank = int(os.environ.get("RANK", "0"))
    seen: dict[str, Any] = {}
    wrap = train_mod.wrap_model

    def spy(model, ctx, device, find_unused):
        net = wrap(model, ctx, device, find_unused)
        seen.update(wrapped=type(net).__name__, device=str(device), world_size=ctx.world_size,
                    backend=dist.get_backend() if dist.is_initialized() else None)
        return net

    train_mod.wrap_model = spy
    params = ddp_worker_params(args.cpu_smoke, args.workers)
    t0 = time.perf_counter()
    result = train_mod.fit(params, Path(args.clips), Path(args.out) / "ckpt", progress=False)
    info = {"rank": rank, "env_world_size": os.environ.get("WORLD_SIZE"), "seconds": time.perf_counter() - t0,
            "history": result.history, **seen,
            "forbidden_modules": sorted({m.split(".")[0] for m in sys.modules} & set(FORBIDDEN)),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if not args.cpu_smoke else None}
    (Path(args.out) / f"rank{rank}.json").write_text(json.dumps(info, indent=1, default=str))
    return 0


def part_ddp(check: Check) -> str:
    """``torchrun --standalone --nproc-per-node N`` running fit for one epoch (this script's ``--ddp-worker``)."""
    corpus = need_corpus(check)
    out = check.tmp / "ddp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={check.ddp_nproc}",
           str(Path(__file__).resolve()), "--ddp-worker", "--clips", str(corpus.clips), "--out", str(out),
           "--workers", str(check.workers)] + (["--cpu-smoke"] if check.smoke else [])
    print(" ".join(cmd[1:]))
    env = child_env(OMP_NUM_THREADS="1") if check.smoke else child_env()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO,
                              timeout=max(10.0, check.remaining()))
    except subprocess.TimeoutExpired as exc:
        raise PartFailed(f"torchrun did not finish within the budget ({exc.timeout:.0f} s)") from None
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise PartFailed(f"torchrun exited with status {proc.returncode}:\n{tail(proc.stdout + proc.stderr, 40)}")
    infos = []
    for rank in range(check.ddp_nproc):
        path = out / f"rank{rank}.json"
        if not path.is_file():
            raise PartFailed(f"rank {rank} wrote no result ({path})\n{tail(proc.stderr)}")
        infos.append(json.loads(path.read_text()))
    main = infos[0]
    h = main["history"][0] if main["history"] else {}
    print(f"{len(infos)} process(es): fit wrapped the model as {main.get('wrapped')} on {main.get('device')}, "
          f"backend {main.get('backend')}, world size {main.get('world_size')}")
    if main.get("world_size") == 1:
        print("note: with one process ctca.distributed trains without a process group (DDP needs >= 2 processes;"
              " --ddp-nproc 2 on a machine with 2 GPUs)")
    print(f"epoch: loss {h.get('train_loss', float('nan')):.3f}, {h.get('train_frames_per_second', 0):.0f} frames/s,"
          f" {h.get('epoch_seconds', 0):.1f} s, dev WER {h.get('dev_wer', float('nan')):.1f}; torchrun total "
          f"{seconds:.1f} s; rank 0 peak {gib(main.get('peak_gib'))}")
    problems = []
    if any(i["forbidden_modules"] for i in infos):
        problems.append(f"fit imported {infos[0]['forbidden_modules']}")
    if len(main["history"]) != 1 or not h.get("train_loss", float("nan")) == h.get("train_loss"):
        problems.append(f"expected one epoch with a finite loss, got {main['history']}")
    if check.ddp_nproc > 1 and main.get("wrapped") != "DistributedDataParallel":
        problems.append(f"{check.ddp_nproc} processes but the model was not DDP-wrapped ({main.get('wrapped')})")
    if not check.smoke and not str(main.get("device", "")).startswith("cuda"):
        problems.append(f"fit trained on {main.get('device')}, not on CUDA")
    if problems:
        raise PartFailed("; ".join(problems))
    return (f"{check.ddp_nproc} proc, {main.get('wrapped')} on {main.get('device')}"
            f"{', ' + main['backend'] if main.get('backend') else ''}, {seconds:.0f} s")


def pytest_counts(output: str) -> dict[str, int]:
    """{"passed": n, "failed": n, ...} from pytest's last summary line."""
    counts: dict[str, int] = {}
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", output):
        counts[what.rstrip("s") if what.startswith("error") else what] = int(n)
    return counts


def part_device_tests(check: Check) -> str:
    """``pytest -q`` on the device-related test files (skipped in --cpu-smoke: the suite runs them)."""
    if check.smoke:
        raise PartSkipped("--cpu-smoke: the test suite runs these tests already")
    totals: dict[str, int] = {}
    failed = []
    for path, gpu_visible in DEVICE_TESTS.items():
        if not (REPO / path).is_file():
            print(f"{path}: not in this checkout")
            continue
        env = child_env() if gpu_visible else child_env(CUDA_VISIBLE_DEVICES="")
        where = "GPU visible" if gpu_visible else "CUDA hidden (a CPU/gloo test)"
        check.ensure_time()
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path], env=env,
                                  capture_output=True, text=True, cwd=REPO, timeout=max(10.0, check.remaining()))
        except subprocess.TimeoutExpired:
            failed.append(f"{path} timed out")
            continue
        counts = pytest_counts(tail(proc.stdout, 3))
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        print(f"{path} ({where}): exit {proc.returncode}, {counts}")
        if proc.returncode != 0:
            failed.append(path)
            print(tail(proc.stdout + proc.stderr, 40))
    text = ", ".join(f"{v} {k}" for k, v in totals.items()) or "no tests ran"
    if failed or not totals.get("passed"):
        raise PartFailed(f"{text}; failing: {', '.join(failed) or 'none passed'}")
    return text


PARTS: tuple[tuple[str, Callable[[Check], str]], ...] = (
    ("imports", part_imports),
    ("ctc", part_ctc),
    ("train_paper", part_train_paper),
    ("corpus", part_corpus),
    ("loader", part_loader),
    ("iiw", part_iiw),
    ("ddp", part_ddp),
    ("device_tests", part_device_tests),
)


# ------------------------------------------------------------------------------------------------
# driver


def run_part(name: str, fn: Callable[[Check], str], check: Check) -> PartResult:
    """Run one part; its failure is reported and never stops the others."""
    print(f"\n== {name} ==  ({check.remaining():.0f} s of budget left)", flush=True)
    if check.remaining() < MIN_PART_S:
        print("not run: the budget is spent")
        return PartResult(name, "FAIL", 0.0, "not run: budget spent (--budget)")
    t0 = time.perf_counter()
    try:
        summary = fn(check)
        status = "ok"
    except PartSkipped as exc:
        status, summary = "skipped", str(exc)
    except PartFailed as exc:
        status, summary = "FAIL", str(exc)
        print(f"FAIL: {exc}")
    except Exception as exc:  # any error of the code under test: the traceback, then the next part
        traceback.print_exc()
        status, summary = "FAIL", f"{type(exc).__name__}: {exc}".splitlines()[0]
    seconds = time.perf_counter() - t0
    print(f"-- {name}: {status} ({seconds:.1f} s)", flush=True)
    return PartResult(name, status, seconds, summary)


def print_table(results: list[PartResult], total: float) -> None:
    print("\n== summary ==")
    width = max(len(r.name) for r in results)
    print(f"{'part':{width}s}  {'status':7s}  {'seconds':>7s}  result")
    for r in results:
        summary = r.summary.splitlines()[0] if r.summary else ""
        print(f"{r.name:{width}s}  {r.status:7s}  {r.seconds:7.1f}  {summary[:140]}")
    failed = [r.name for r in results if r.status == "FAIL"]
    print(f"total {total:.1f} s; {len(results) - len(failed)} of {len(results)} parts ok or skipped"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="run every part on the CPU at tiny shapes (no GPU needed; pytest part skipped)")
    ap.add_argument("--workers", type=int, default=None,
                    help="loader/extraction workers (default: min(8, CPUs); 1 with --cpu-smoke)")
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                    help="seconds for the whole run; parts not started in time fail (default: 480)")
    ap.add_argument("--ddp-nproc", type=int, default=None,
                    help="torchrun processes (default: 1; 2 with --cpu-smoke, so gloo and DDP run)")
    ap.add_argument("--parts", default="", help="comma-separated subset of parts to run (default: all)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (corpus, checkpoints)")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)  # torchrun's entry point
    ap.add_argument("--clips", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ddp_worker:
        args.workers = args.workers or 1
        return ddp_worker(args)
    start = time.monotonic()
    cpus = len(os.sched_getaffinity(0))
    workers = args.workers if args.workers is not None else (1 if args.cpu_smoke else min(8, cpus))
    if not args.cpu_smoke and not torch.cuda.is_available():
        for line in environment(None, "gpu check"):
            print(line)
        print("\nNo GPU is available (torch.cuda.is_available() is False): every GPU part is skipped.\n"
              "Run it on a machine with a GPU, or `python benchmarks/gpu_check.py --cpu-smoke` to exercise the "
              "code paths on the CPU.")
        print_table([PartResult(name, "skipped", 0.0, "no GPU") for name, _ in PARTS], time.monotonic() - start)
        return 0
    if args.cpu_smoke:
        torch.set_num_threads(1)  # 2 x 16 frames at 32 px: threads only add spin-waiting on a busy machine
    wanted = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(wanted) - {name for name, _ in PARTS})
    if unknown:
        print(f"unknown part(s) {unknown}; allowed: {', '.join(name for name, _ in PARTS)}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="ctca-gpu-check-"))
    check = Check(smoke=args.cpu_smoke, device=torch.device("cpu" if args.cpu_smoke else "cuda"),
                  shapes=SMOKE if args.cpu_smoke else PAPER, workers=workers,
                  ddp_nproc=args.ddp_nproc or (2 if args.cpu_smoke else 1), tmp=tmp, deadline=start + args.budget)
    for line in environment(check, "cpu smoke (tiny shapes, CPU)" if args.cpu_smoke else "gpu check"):
        print(line)
    results = []
    try:
        for name, fn in PARTS:
            if wanted and name not in wanted:
                continue
            results.append(run_part(name, fn, check))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(results, time.monotonic() - start)
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
