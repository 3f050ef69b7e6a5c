"""Glosses for anyone's video: a trained model file applied with exactly the preprocessing of training.

The model file says how its frames were made (``meta["preprocessing"]``: the square frame size, the
crop, the pixel scaling), so an input goes through the pipeline's own functions: decode
(:func:`ctca.data.frames.iter_video` or the frame images), :func:`~ctca.data.frames.resize_frame`,
:func:`~ctca.data.loader.eval_clip` (center crop) and :func:`~ctca.data.loader.collate` (edge padding,
x/127.5 - 1), then the inference head and the decoder of ``evaluate``. Gloss times for a CTM come from
the CTC forced alignment of the decoded glosses to the model's output steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ctca.data.frames import UnreadableInput, iter_images, iter_video, resize_frame, video_fps
from ctca.data.loader import collate, eval_clip, padded_length
from ctca.decode import make_decoder
from ctca.losses.smkd import ctc_forced_align
from ctca.models.io import load_model
from ctca.scoring.ctm import EMPTY_CTM_TIMES
from ctca.scoring.wer import EMPTY

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
FRAME_FOLDER_FPS = 25.0  # PHOENIX-2014's rate: the default time base of a folder of frame images


class PredictError(ValueError):
    """One input cannot be predicted; the message names the input and the reason (one line)."""


@dataclass(frozen=True)
class Input:
    id: str  # the file or folder name without suffix
    path: Path
    kind: str  # video | frames | error
    reason: str = ""  # kind=error: why this path is no input


@dataclass
class Prediction:
    id: str
    path: Path
    glosses: list[str]
    segments: list[tuple[str, float, float]] = field(default_factory=list)  # (gloss, start s, duration s)
    frames: int = 0
    fps: float = FRAME_FOLDER_FPS


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def expand_inputs(paths: list[Path | str]) -> list[Input]:
    """A video file; a folder of frame images (one input); a folder of videos (each one an input).

    Paths that are none of these come back as ``kind="error"`` with the reason, in order.
    """
    out: list[Input] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else "error"
            out.append(Input(path.stem, path, kind, "" if kind == "video" else
                             f"not a video file (expected one of {', '.join(VIDEO_SUFFIXES)})"))
        elif path.is_dir():
            videos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if _images(path):
                out.append(Input(path.name, path, "frames"))
            elif videos:
                out.extend(Input(v.stem, v, "video") for v in videos)
            else:
                out.append(Input(path.name, path, "error", "folder holds no frame images and no videos"))
        else:
            out.append(Input(path.name, path, "error", "no such file or folder"))
    return out


class Predictor:
    """A model file ready to predict: network in eval mode, vocabulary, preprocessing and decoder."""

    def __init__(self, model_file: Path | str, device: str | torch.device = "cpu", beam_width: int = 1):
        self.device = torch.device(device)
        self.model, self.vocab, ckpt = load_model(Path(model_file), map_location=self.device)
        self.model.to(self.device).eval()
        pre = ckpt.get("meta", {}).get("preprocessing")
        if not isinstance(pre, dict) or not {"frame_size", "crop"} <= set(pre):
            raise PredictError(f"{model_file}: the model file does not say how its frames were preprocessed "
                               "(no meta.preprocessing); retrain it with this version of ctca")
        self.frame_size, self.crop = int(pre["frame_size"]), int(pre["crop"])
        self.decoder = make_decoder(beam_width)
        self.meta = ckpt["meta"]

    def read(self, item: Input) -> tuple[np.ndarray, float]:
        """(T, size, size, 3) uint8 RGB frames of an input, resized as in training, and its frame rate."""
        try:
            if item.kind == "video":
                frames, fps = iter_video(item.path), video_fps(item.path) or FRAME_FOLDER_FPS
            else:
                frames, fps = iter_images(_images(item.path)), FRAME_FOLDER_FPS
            resized = [resize_frame(rgb, self.frame_size) for rgb in frames]
        except UnreadableInput as exc:
            raise PredictError(f"{item.path}: {exc}") from None
        return np.stack(resized), fps

    def min_frames(self) -> int:
        """The fewest frames that give the model at least one output step."""
        pad, stride = self.model.frame_padding, self.model.stride
        n = 1
        while int(self.model.output_lengths(torch.tensor([padded_length(n, pad, stride)]))[0]) < 1:
            n += 1
        return n

    @torch.no_grad()
    def log_probs(self, frames: np.ndarray, name: str) -> torch.Tensor:
        """(T', C) log-posteriors of the inference head for one clip."""
        need = self.min_frames()
        if len(frames) < need:
            raise PredictError(f"{name}: clip too short for the model ({len(frames)} frames; at least "
                               f"{need} give one output step)")
        item = {"video": eval_clip(frames, self.crop), "label": torch.zeros(0, dtype=torch.long), "id": name,
                "glosses": (), "signer": "", "index": 0}
        batch = collate([item], self.model.frame_padding, self.model.stride).to(self.device)
        out = self.model(batch.video, batch.mask, batch.lengths)
        return torch.log_softmax(out.logits.float(), dim=-1)[: int(out.lengths[0]), 0].cpu()

    def segments(self, log_probs: torch.Tensor, ids: list[int], n_frames: int,
                 fps: float) -> list[tuple[str, float, float]]:
        """(gloss, start, duration) in seconds: the forced alignment of ``ids`` to the output steps, each
        step covering ``stride`` input frames (the last one ends with the clip)."""
        if not ids:
            return []
        labels = ctc_forced_align(log_probs, ids)
        stride = self.model.stride
        spans: list[tuple[int, int]] = []  # [first, last + 1) output step of each gloss
        for t, lab in enumerate(labels):
            if lab == 0:
                continue
            if t > 0 and labels[t - 1] == lab:  # CTC separates a repeated gloss by a blank
                spans[-1] = (spans[-1][0], t + 1)
            else:
                spans.append((t, t + 1))
        names = self.vocab.decode(ids)
        frames = [(a * stride, min(b * stride, n_frames)) for a, b in spans]
        return [(g, round(a / fps, 3), round((b - a) / fps, 3)) for g, (a, b) in zip(names, frames, strict=True)]

    def predict(self, item: Input) -> Prediction:
        """The glosses of one input (a video or a frame folder); a bad input raises :class:`PredictError`."""
        if item.kind == "error":
            raise PredictError(f"{item.path}: {item.reason}")
        frames, fps = self.read(item)
        return self._decode(frames, item.id, item.path, fps)

    def predict_array(self, rgb: np.ndarray, name: str, fps: float = FRAME_FOLDER_FPS) -> Prediction:
        """The glosses of decoded frames: a (T, H, W, 3) uint8 RGB array of any frame size."""
        if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise PredictError(f"{name}: expected (T, H, W, 3) uint8 RGB frames, got {rgb.dtype} {rgb.shape}")
        frames = np.stack([resize_frame(f, self.frame_size) for f in rgb]) if len(rgb) else rgb
        return self._decode(frames, name, Path(name), fps)

    def _decode(self, frames: np.ndarray, name: str, path: Path, fps: float) -> Prediction:
        lp = self.log_probs(frames, str(path))
        (ids,) = self.decoder(lp[None], torch.tensor([len(lp)]))
        ids = [int(i) for i in ids]
        return Prediction(name, path, self.vocab.decode(ids), self.segments(lp, ids, len(frames), fps),
                          len(frames), fps)


def write_ctm(path: Path, predictions: list[Prediction]) -> None:
    """``<id> 1 <start> <duration> <gloss>`` per gloss, times from the CTC alignment (an empty
    prediction gets the ``[EMPTY]`` line the official scoring expects, docs/scoring.md#the-empty-word)."""
    lines = []
    for p in sorted(predictions, key=lambda p: p.id):
        if not p.segments:
            lines.append(f"{p.id} 1 {EMPTY_CTM_TIMES} {EMPTY}")
        lines += [f"{p.id} 1 {start:.3f} {dur:.3f} {gloss}" for gloss, start, dur in p.segments]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
