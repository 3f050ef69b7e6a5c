"""Spatial perception modules (SPM): per-frame 2D CNNs that turn a video into a feature sequence.

Only valid frames go through the CNN ("masked BN", as in VAC): padding never enters BatchNorm
statistics. ``CompactCNN`` is the CPU-sized SPM used by the synthetic default.
"""

from __future__ import annotations

import torch
from torch import nn

from ctca.models.resnet import ResNet18, load_pretrained


class CompactCNN(nn.Module):
    """[Conv3x3 -> BN -> ReLU -> MaxPool2] x len(channels), then global average pooling."""

    # its small convolutions and max pools run about 2x faster on channels-last frames on a CPU too
    # (benchmarks/spm_memory_format.py); ResNet-18 at 112-224 px does not (about 1.25x slower there)
    channels_last_on_cpu = True

    def __init__(self, channels: tuple[int, ...] = (32, 64, 96, 128), in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.out_dim = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, D)
        return self.features(x).mean(dim=(2, 3))


class SpatialPerception(nn.Module):
    """Applies a frame CNN to the valid frames of a padded batch of videos."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.out_dim: int = backbone.out_dim

    def forward(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """video (B, L, 3, H, W), mask (B, L) bool -> features (B, L, D), zero on padded frames."""
        b, length = mask.shape
        frames = video[mask]  # (N_valid, 3, H, W): padding never reaches BatchNorm
        if video.is_cuda or getattr(self.backbone, "channels_last_on_cpu", False):
            frames = frames.contiguous(memory_format=torch.channels_last)
        feats = self.backbone(frames)
        out = feats.new_zeros(b, length, feats.shape[-1])
        out[mask] = feats
        return out


def build_spm(arch: str, channels: tuple[int, ...], pretrained: str = "") -> SpatialPerception:
    """SPM for ``arch``: 'compact' (``CompactCNN(channels)``) or 'resnet18' (``channels`` unused).

    ``pretrained`` is a local state-dict file (ResNet-18 only), loaded with ``load_pretrained``.
    """
    if arch == "compact":
        if pretrained:
            raise ValueError(f"spm.pretrained={pretrained!r} is only supported for spm.arch='resnet18', "
                             f"not 'compact'")
        return SpatialPerception(CompactCNN(channels))
    if arch == "resnet18":
        backbone = ResNet18()
        if pretrained:
            load_pretrained(backbone, pretrained)
        return SpatialPerception(backbone)
    raise ValueError(f"spm.arch={arch!r} is not available; allowed: 'compact', 'resnet18'")
