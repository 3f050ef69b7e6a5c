"""CTCA's SPM-shared dual-path network (SDPN): one SPM, a local 1D-TCN path and a global BiLSTM path.

**Reconstructed** from the CTCA abstract and poster (the paper body was not available): see
docs/methods.md#ctca for what is ours and which switches expose each choice.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ctca.models.heads import make_classifier
from ctca.models.norm import MaskedBatchNorm1d
from ctca.models.recognizer import RecognizerOutput
from ctca.models.spm import SpatialPerception, build_spm


class LocalPath(nn.Module):
    """CTCA's local temporal path: [Conv1d(k, "same" padding) -> BN -> ReLU] per kernel ("F3-F3-F3").

    ``mask_padding`` (the revision): padded frames are zeroed before every convolution and left out of
    the BatchNorm statistics (:class:`MaskedBatchNorm1d`); without it (the first reconstruction) they
    enter the statistics, and only the output is masked.
    """

    def __init__(self, in_dim: int, hidden: int, kernels: tuple[int, ...], mask_padding: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_dim
        for k in kernels:
            layers += [nn.Conv1d(c_in, hidden, k, padding=k // 2),
                       MaskedBatchNorm1d(hidden) if mask_padding else nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            c_in = hidden
        self.net = nn.Sequential(*layers)
        self.out_dim = hidden
        self.mask_padding = mask_padding

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (T, B, D) -> (T, B, hidden); frames past each length are zeroed (they never reach the losses)."""
        valid = torch.arange(x.shape[0], device=x.device)[:, None] < lengths.to(x.device)[None, :]
        if not self.mask_padding:
            out = self.net(x.permute(1, 2, 0)).permute(2, 0, 1)
            return out * valid[..., None]
        h, valid_bt = x.permute(1, 2, 0) * valid.T[:, None, :], valid.T
        for i in range(0, len(self.net), 3):
            conv, norm, act = self.net[i:i + 3]
            h = act(norm(conv(h), valid_bt))  # zero at padded frames: the next conv sees "same" zero padding
        return h.permute(2, 0, 1)


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


class DilatedPath(nn.Module):
    """The Table 8 alternative global path: residual dilated temporal convolutions.

    A 1x1 input projection, then per dilation d: x + ReLU(MaskedBN(Conv1d(k=3, dilation=d, "same"))),
    padded frames zeroed before every block. Receptive field 1 + 2·Σd frames (dilations 1, 2, 4, 8: 31).
    """

    def __init__(self, in_dim: int, hidden: int, dilations: tuple[int, ...]):
        super().__init__()
        self.inp = nn.Conv1d(in_dim, hidden, 1)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, 3, padding=d, dilation=d) for d in dilations)
        self.norms = nn.ModuleList(MaskedBatchNorm1d(hidden) for _ in dilations)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = (torch.arange(x.shape[0], device=x.device)[:, None] < lengths.to(x.device)[None, :]).T  # (B, T)
        h = self.inp(x.permute(1, 2, 0)) * valid[:, None, :]
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + torch.relu(norm(conv(h), valid))
        return h.permute(2, 0, 1)


class ConvFrontEnd(nn.Module):
    """A shared temporal front end before both paths (``ctca.downsample: k5p2`` / ``k5p2k5p2``): per block
    Conv1d(k=5, "same") -> masked BN -> ReLU -> MaxPool1d(2), as the VAC TAM's convolutional part but
    with "same" padding (no edge frames are needed) and padding kept out of the statistics.
    """

    def __init__(self, in_dim: int, hidden: int, blocks: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_dim if i == 0 else hidden, hidden, 5, padding=2) for i in range(blocks))
        self.norms = nn.ModuleList(MaskedBatchNorm1d(hidden) for _ in range(blocks))
        self.out_dim = hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, C, L) -> (B, hidden, L / 2^blocks), zero past each clip's (halved) length."""
        for conv, norm in zip(self.convs, self.norms, strict=True):
            valid = torch.arange(x.shape[2], device=x.device)[None, :] < lengths.to(x.device)[:, None]
            x = nn.functional.max_pool1d(torch.relu(norm(conv(x * valid[:, None, :]), valid)), 2)
            lengths = torch.div(lengths, 2, rounding_mode="floor")
        valid = torch.arange(x.shape[2], device=x.device)[None, :] < lengths.to(x.device)[:, None]
        return x * valid[:, None, :]


class Fusion(nn.Module):
    """Table 6's feature-fusion alternatives to L_l2g (``ctca.fusion``): the local path's features joined to
    the global path's, frame by frame, before the global classifier, so that both paths run at inference.

    ``concat``: Linear([G; L]) back to ``hidden``; ``add``: G + L; ``attention``: G + single-head
    cross-attention with G as queries and L as keys and values (``nn.MultiheadAttention``, padded frames
    masked out of the keys). Frames past each length come out zero.
    """

    def __init__(self, mode: str, hidden: int):
        super().__init__()
        if mode not in ("concat", "add", "attention"):
            raise ValueError(f"Fusion: mode={mode!r}; expected 'concat', 'add' or 'attention'")
        self.mode = mode
        self.proj = nn.Linear(2 * hidden, hidden) if mode == "concat" else None
        self.attn = nn.MultiheadAttention(hidden, 1) if mode == "attention" else None

    def forward(self, glob: torch.Tensor, local: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """glob, local (T, B, hidden) -> (T, B, hidden)."""
        pad = torch.arange(glob.shape[0], device=glob.device)[None, :] >= lengths.to(glob.device)[:, None]  # (B, T)
        if self.mode == "add":
            out = glob + local
        elif self.mode == "concat":
            out = self.proj(torch.cat([glob, local], -1))
        else:
            out = glob + self.attn(glob, local, local, key_padding_mask=pad, need_weights=False)[0]
        return out * ~pad.T[..., None]


class DualPathRecognizer(nn.Module):
    """CTCA's SPM-shared dual-path network (SDPN). **Reconstructed** (docs/methods.md#ctca).

    One SPM feeds, in parallel, a shallow local path (1D-TCN, ``ctca.local_kernels``) and a global path
    (BiLSTM, ``ctca.global_layers``; or dilated convolutions, ``ctca.global_path``), each with its own
    classifier and CTC. Between the SPM and the paths, shared by both (``ctca.downsample``): nothing, a
    MaxPool1d(2) once or twice, or K5-P2 conv blocks once or twice (:class:`ConvFrontEnd`). At inference
    only the SPM, the front end and the branch named by ``ctca.inference`` are used (the global path
    by default), unless ``ctca.fusion`` joins the local path's features to the global path's (Table 6's
    alternatives to L_l2g, :class:`Fusion`): then both paths run at inference.

    Training-only parts: projection heads of L_l2g, the reconstruction decoders of L_rc, the
    gloss-embedding buffer of L_cmd and, with ``ctca.cmd_target=features``, L_cmd's projection. They
    are built whatever the loss toggles (so every toggle gives the same state dict) and are left out of
    the inference parameter count.
    """

    @classmethod
    def from_config(cls, cfg: dict) -> DualPathRecognizer:
        """The network of a config dict (``arch: dual_path``), as the ``ctca`` method writes it."""
        spm = build_spm(cfg["spm_arch"], tuple(cfg["spm_channels"]))
        return cls(spm, cfg["num_classes"], cfg["hidden"], cfg["dropout"], local_kernels=tuple(cfg["local_kernels"]),
                   global_layers=cfg["global_layers"], downsample=cfg["downsample"], classifier=cfg["classifier"],
                   inference=cfg["inference"], proj_dim=cfg["proj_dim"], rc_target=cfg["rc_target"],
                   emb_dim=cfg["emb_dim"], mask_padding=cfg.get("mask_padding", False),
                   global_path=cfg.get("global_path", "blstm"), dilations=tuple(cfg.get("dilations", (1, 2, 4, 8))),
                   cmd_target=cfg.get("cmd_target", "classifier"), fusion=cfg.get("fusion", "none"))

    def __init__(self, spm: SpatialPerception, num_classes: int, hidden: int, dropout: float,
                 local_kernels: tuple[int, ...] = (3, 3, 3), global_layers: int = 2, downsample: str = "none",
                 classifier: str = "normlinear", inference: str = "global", proj_dim: int = 256,
                 rc_target: str = "cross", emb_dim: int = 0, mask_padding: bool = False, global_path: str = "blstm",
                 dilations: tuple[int, ...] = (1, 2, 4, 8), cmd_target: str = "classifier", fusion: str = "none"):
        super().__init__()
        pools = {"none": 0, "pool2": 1, "pool4": 2, "k5p2": 1, "k5p2k5p2": 2}
        if (downsample not in pools or inference not in ("global", "local") or global_path not in ("blstm", "dilated")
                or cmd_target not in ("classifier", "features") or (fusion != "none" and inference != "global")):
            raise ValueError(f"DualPathRecognizer: downsample={downsample!r}, inference={inference!r}, "
                             f"global_path={global_path!r}, cmd_target={cmd_target!r}, fusion={fusion!r} "
                             "(fusion feeds the global classifier: it needs inference='global')")
        self.spm = spm
        self.pool = (nn.Sequential(*[nn.MaxPool1d(2)] * pools[downsample])
                     if downsample.startswith("pool") else None)
        self.front_end = ConvFrontEnd(spm.out_dim, hidden, pools[downsample]) if downsample.startswith("k5") else None
        self._stride = 2 ** pools[downsample]
        d = self.front_end.out_dim if self.front_end is not None else spm.out_dim
        self.local_path = LocalPath(d, hidden, tuple(local_kernels), mask_padding=mask_padding)
        self.global_path = (GlobalPath(d, hidden, global_layers, dropout) if global_path == "blstm"
                            else DilatedPath(d, hidden, tuple(dilations)))
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
        # L_cmd on the global features: their projection into the embedding space. Built only for that
        # target, last, so that the first reconstruction's weights and random stream stay as they were.
        self.proj_cmd = nn.Linear(hidden, max(emb_dim, 1)) if cmd_target == "features" else None
        self.fusion = Fusion(fusion, hidden) if fusion != "none" else None  # built last, as proj_cmd
        self.num_classes = num_classes
        self.inference_head = inference
        self.downsample = downsample

    @property
    def frame_padding(self) -> int:
        return 0  # "same" convolutions and a BiLSTM: no frames of context are eaten

    @property
    def stride(self) -> int:
        return self._stride

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, self._stride, rounding_mode="floor")

    def module_groups(self) -> dict[str, nn.Module]:
        """Inference modules by role: the SPM, the kept branch (the TAM, after the shared front end if any;
        with fusion, both paths and the fusion) and its classifier."""
        path = self.global_path if self.inference_head == "global" else self.local_path
        parts = [m for m in (self.front_end, path) if m is not None]
        if self.fusion is not None:
            parts += [self.local_path, self.fusion]
        tam = parts[0] if len(parts) == 1 else nn.ModuleList(parts)
        classifier = self.global_classifier if self.inference_head == "global" else self.local_classifier
        return {"spm": self.spm, "tam": tam, "classifier": classifier}

    def training_modules(self) -> dict[str, nn.Module]:
        other = "local" if self.inference_head == "global" else "global"
        parts = ("classifier",) if self.fusion is not None else ("path", "classifier")  # fused: the path is kept
        mods = {f"{other}_{part}": getattr(self, f"{other}_{part}") for part in parts}
        mods.update(proj_local=self.proj_local, proj_global=self.proj_global, rc_from_global=self.rc_from_global)
        if self.rc_from_local is not None:
            mods["rc_from_local"] = self.rc_from_local
        if self.proj_cmd is not None:
            mods["proj_cmd"] = self.proj_cmd
        return mods

    def forward(self, video: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor,
                aux: frozenset[str] = frozenset()) -> RecognizerOutput:
        """``aux`` names the training-only outputs to compute (``"l2g"``: projections, ``"rc"``:
        reconstructions, ``"cmd"``: the global features in the embedding space), chosen by the training method, so that the modules of a switched-off loss are
        never run (DDP then sees them as unused)."""
        spm = self.spm(video, mask)  # (B, L, D)
        s = spm
        if self.pool is not None:
            s = self.pool(s.transpose(1, 2)).transpose(1, 2)
        if self.front_end is not None:
            s = self.front_end(s.transpose(1, 2), lengths).transpose(1, 2)
        out_len = self.output_lengths(lengths)
        s = s.transpose(0, 1)  # (T, B, D) time-major: what both paths read
        local = self.local_path(s, out_len)
        glob = self.global_path(s, out_len)
        fused = glob if self.fusion is None else self.fusion(glob, local, out_len)
        heads = {"global": self.global_classifier(fused), "local": self.local_classifier(local)}
        feats = {"spm": spm, "shared": s, "local": local, "global": glob}
        if self.fusion is not None:
            feats["fused"] = fused
        if self.training and "l2g" in aux:
            feats["proj_local"], feats["proj_global"] = self.proj_local(local), self.proj_global(glob)
        if self.training and "rc" in aux:
            feats["rc_global"] = self.rc_from_global(glob)
            if self.rc_from_local is not None:
                feats["rc_local"] = self.rc_from_local(local)
        if self.training and "cmd" in aux and self.proj_cmd is not None:
            feats["proj_cmd"] = self.proj_cmd(glob)
        return RecognizerOutput(heads[self.inference_head], out_len, heads, feats)
