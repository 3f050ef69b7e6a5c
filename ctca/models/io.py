"""The model file: network config, weights, vocabulary and metadata, readable with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ctca.checkpoint import atomic_save, safe_load
from ctca.data.vocab import Vocabulary
from ctca.models.recognizer import build_recognizer

MODEL_KIND = "ctca.recognizer"


def save_model(path: Path, model: nn.Module, cfg: dict, vocab: Vocabulary, meta: dict) -> None:
    """Write the model file (``cfg`` rebuilds the network with :func:`build_recognizer`)."""
    atomic_save({"kind": MODEL_KIND, "config": cfg, "model": model.state_dict(), "vocab": list(vocab.glosses),
                 "meta": meta}, path)


def load_model(path: Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, Vocabulary, dict]:
    """(model, vocabulary, the file's dict); a file that is not a ctca model is a one-line error naming it."""
    ckpt = safe_load(path, MODEL_KIND, map_location)
    model = build_recognizer(ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model, Vocabulary(tuple(ckpt["vocab"])), ckpt
