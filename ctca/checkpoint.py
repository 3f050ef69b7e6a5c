"""Files the training writes and reads back: atomic saves, RNG states, resumable checkpoints.

Everything is stored so that ``torch.load(..., weights_only=True)`` reads it: tensors, lists, dicts,
numbers and strings only (RNG states become tensors), so loading a file from someone else cannot run
code. A checkpoint carries a fingerprint of what the weights depend on; it is resumed only under the
same fingerprint.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_KIND = "ctca.checkpoint"


class NotACtcaFile(ValueError):
    """A file that is not the ctca file it should be (reported in one line, naming the file)."""


def atomic_save(obj: object, path: Path) -> None:
    """torch.save through a temporary file, so a kill mid-write never leaves a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def safe_load(path: Path, kind: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a ctca file with ``weights_only=True``; anything else is a one-line :class:`NotACtcaFile`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotACtcaFile(f"{path}: not a {kind} file (cannot be read as tensors and plain data: {first})") from None
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise NotACtcaFile(f"{path}: not a {kind} file (no '{kind}' marker)")
    return obj


def rng_state() -> dict[str, torch.Tensor]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors."""
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    assert version == 3 and name == "MT19937"
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": torch.tensor([gauss is not None, gauss or 0.0], dtype=torch.float64),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor(cached, dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    has_gauss, gauss = state["python_gauss"].tolist()
    random.setstate((3, tuple(state["python"].tolist()), gauss if has_gauss else None))
    pos, np_has_gauss = state["numpy_pos"].tolist()
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, np_has_gauss,
                         float(state["numpy_gauss"])))
    cuda = [state[k] for k in sorted((k for k in state if k.startswith("cuda")), key=lambda k: int(k[4:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(path: Path, **fields: object) -> None:
    atomic_save({"kind": CHECKPOINT_KIND, **fields}, path)


def load_checkpoint(path: Path) -> dict:
    return safe_load(path, CHECKPOINT_KIND)
