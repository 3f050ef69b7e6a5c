"""The model file (network config, weights, vocabulary, metadata; readable with ``weights_only=True``), and
the network of a config dict."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ctca.checkpoint import atomic_save, safe_load
from ctca.data.vocab import Vocabulary
from ctca.environment import dist_version, git_commit
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


def code_version() -> dict[str, str]:
    """The ctca package version and the git commit of the checkout this code runs from ("unknown" if none)."""
    return {"ctca": dist_version("ctca"), "git_commit": git_commit(Path(__file__).resolve().parent)}


def model_metadata(params, **extra) -> dict:
    """What a model file says about itself besides the network: how its frames were preprocessed (what
    ``ctca predict`` applies), the training params and the code version, plus ``extra``."""
    from ctca.config import to_dict

    return {"preprocessing": {"frame_size": params.frames.size, "resize": "cv2.INTER_LANCZOS4 to a square",
                              "crop": params.loader.crop, "crop_at_inference": "center",
                              "pixels": "RGB, x / 127.5 - 1"},
            "params": to_dict(params), "code_version": code_version(), **extra}


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
