"""The model file (network config, weights, vocabulary, metadata; readable with ``weights_only=True``), and
the network of a config dict."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ctca.checkpoint import atomic_save, safe_load
from ctca.data.vocab import Vocabulary
from ctca.models.dual_path import DualPathRecognizer
from ctca.models.recognizer import Recognizer

MODEL_KIND = "ctca.recognizer"
ARCHS = {"recognizer": Recognizer, "dual_path": DualPathRecognizer}  # cfg["arch"] -> network class


def build_recognizer(cfg: dict) -> nn.Module:
    """The network of a config dict (written by the training method, saved in the model file)."""
    arch = cfg.get("arch")
    if arch not in ARCHS:
        raise ValueError(f"model config: arch={arch!r}; expected one of {', '.join(map(repr, ARCHS))}")
    return ARCHS[arch].from_config(cfg)


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
