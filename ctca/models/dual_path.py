"""CTCA's SPM-shared dual-path network (SDPN): one SPM, a local 1D-TCN path and a global BiLSTM path.

**Reconstructed** from the CTCA abstract and poster (the paper body was not available): see
docs/methods.md#ctca for what is ours and which switches expose each choice.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ctca.models.heads import make_classifier
from ctca.models.recognizer import RecognizerOutput
from ctca.models.spm import SpatialPerception, build_spm


class LocalPath(nn.Module):
    """CTCA's local temporal path: [Conv1d(k, "same" padding) -> BN -> ReLU] per kernel ("F3-F3-F3")."""

    def __init__(self, in_dim: int, hidden: int, kernels: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_dim
        for k in kernels:
            layers += [nn.Conv1d(c_in, hidden, k, padding=k // 2), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            c_in = hidden
        self.net = nn.Sequential(*layers)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (T, B, D) -> (T, B, hidden); frames past each length are zeroed (they never reach the losses)."""
        out = self.net(x.permute(1, 2, 0)).permute(2, 0, 1)
        valid = torch.arange(x.shape[0], device=x.device)[:, None] < lengths.to(x.device)[None, :]
        return out * valid[..., None]


class GlobalPath(nn.Module):
    """CTCA's global temporal path: a packed BiLSTM (hidden/2 per direction)."""

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden // 2, num_layers=layers, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        out, _ = self.lstm(packed)
        return pad_packed_sequence(out, total_length=x.shape[0])[0]


class DualPathRecognizer(nn.Module):
    """CTCA's SPM-shared dual-path network (SDPN). **Reconstructed** (docs/methods.md#ctca).

    One SPM feeds, in parallel, a shallow local path (1D-TCN, ``ctca.local_kernels``) and a global path
    (BiLSTM, ``ctca.global_layers``), each with its own classifier and CTC. Optionally a shared
    MaxPool1d(2) x2 first (``ctca.downsample=pool4``). At inference only the SPM and the
    branch named by ``ctca.inference`` are used (the global path by default).

    Training-only parts: projection heads of L_l2g, the reconstruction decoders of L_rc and the
    gloss-embedding buffer of L_cmd. They are always built (so every loss toggle gives the same
    state dict) and are left out of the inference parameter count.
    """

    @classmethod
    def from_config(cls, cfg: dict) -> DualPathRecognizer:
        """The network of a config dict (``arch: dual_path``), as the ``ctca`` method writes it."""
        spm = build_spm(cfg["spm_arch"], tuple(cfg["spm_channels"]))
        return cls(spm, cfg["num_classes"], cfg["hidden"], cfg["dropout"], local_kernels=tuple(cfg["local_kernels"]),
                   global_layers=cfg["global_layers"], downsample=cfg["downsample"], classifier=cfg["classifier"],
                   inference=cfg["inference"], proj_dim=cfg["proj_dim"], rc_target=cfg["rc_target"],
                   emb_dim=cfg["emb_dim"])

    def __init__(self, spm: SpatialPerception, num_classes: int, hidden: int, dropout: float,
                 local_kernels: tuple[int, ...] = (3, 3, 3), global_layers: int = 2, downsample: str = "none",
                 classifier: str = "normlinear", inference: str = "global", proj_dim: int = 256,
                 rc_target: str = "cross", emb_dim: int = 0):
        super().__init__()
        if downsample not in ("none", "pool4") or inference not in ("global", "local"):
            raise ValueError(f"DualPathRecognizer: downsample={downsample!r}, inference={inference!r}")
        self.spm = spm
        self.pool = nn.Sequential(nn.MaxPool1d(2), nn.MaxPool1d(2)) if downsample == "pool4" else None
        d = spm.out_dim
        self.local_path = LocalPath(d, hidden, tuple(local_kernels))
        self.global_path = GlobalPath(d, hidden, global_layers, dropout)
        wn = classifier == "normlinear"
        self.local_classifier = make_classifier(hidden, num_classes, wn)
        self.global_classifier = make_classifier(hidden, num_classes, wn)
        # L_l2g compares φ_g(G) with sg(φ_l(L)): the teacher side is entirely stop-gradient, so φ_l is a
        # fixed random projection (frozen: no optimizer state, and DDP does not wait for its gradient)
        self.proj_local = nn.Linear(hidden, proj_dim).requires_grad_(False)
        self.proj_global = nn.Linear(hidden, proj_dim)
        self.rc_target = rc_target
        if rc_target == "cross":
            self.rc_from_global = nn.Linear(hidden, hidden)  # D: G -> L
            self.rc_from_local = nn.Linear(hidden, hidden)  # D: L -> G
        elif rc_target == "spm":
            self.rc_from_global = nn.Linear(hidden, d)  # D: G -> S
            self.rc_from_local = None
        else:
            raise ValueError(f"DualPathRecognizer: rc_target={rc_target!r}; expected 'cross' or 'spm'")
        self.register_buffer("gloss_embeddings", torch.zeros(num_classes, max(emb_dim, 1)))
        self.num_classes = num_classes
        self.inference_head = inference
        self.downsample = downsample

    @property
    def frame_padding(self) -> int:
        return 0  # "same" convolutions and a BiLSTM: no frames of context are eaten

    @property
    def stride(self) -> int:
        return 4 if self.pool is not None else 1

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, 4, rounding_mode="floor") if self.pool is not None else lengths

    def module_groups(self) -> dict[str, nn.Module]:
        """Inference modules by role: the SPM, the kept branch (the TAM) and its classifier."""
        if self.inference_head == "global":
            return {"spm": self.spm, "tam": self.global_path, "classifier": self.global_classifier}
        return {"spm": self.spm, "tam": self.local_path, "classifier": self.local_classifier}

    def training_modules(self) -> dict[str, nn.Module]:
        other = "local" if self.inference_head == "global" else "global"
        mods = {f"{other}_{part}": getattr(self, f"{other}_{part}") for part in ("path", "classifier")}
        mods.update(proj_local=self.proj_local, proj_global=self.proj_global, rc_from_global=self.rc_from_global)
        if self.rc_from_local is not None:
            mods["rc_from_local"] = self.rc_from_local
        return mods

    def forward(self, video: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor,
                aux: frozenset[str] = frozenset()) -> RecognizerOutput:
        """``aux`` names the training-only outputs to compute (``"l2g"``: projections, ``"rc"``:
        reconstructions), chosen by the training method, so that the modules of a switched-off loss are
        never run (DDP then sees them as unused)."""
        s = self.spm(video, mask)  # (B, L, D)
        if self.pool is not None:
            s = self.pool(s.transpose(1, 2)).transpose(1, 2)
        out_len = self.output_lengths(lengths)
        s = s.transpose(0, 1)  # (T, B, D) time-major
        local = self.local_path(s, out_len)
        glob = self.global_path(s, out_len)
        heads = {"global": self.global_classifier(glob), "local": self.local_classifier(local)}
        feats = {"spm": s, "local": local, "global": glob}
        if self.training and "l2g" in aux:
            feats["proj_local"], feats["proj_global"] = self.proj_local(local), self.proj_global(glob)
        if self.training and "rc" in aux:
            feats["rc_global"] = self.rc_from_global(glob)
            if self.rc_from_local is not None:
                feats["rc_local"] = self.rc_from_local(local)
        return RecognizerOutput(heads[self.inference_head], out_len, heads, feats)
