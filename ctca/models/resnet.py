"""ResNet-18 frame backbone (the VAC spatial perception module), written without torchvision.

There is no torchvision build for torch 2.13 on CPU, so the network is re-implemented here with
exactly torchvision's ``resnet18`` structure, initialisation and parameter/buffer names. ImageNet
weights saved from torchvision (``torchvision.models.resnet18(weights=...).state_dict()``) therefore
load from a local file with :func:`load_pretrained`; nothing is ever downloaded. As in VAC the
classifier is ``fc = nn.Identity()``: the output is the 512-d globally pooled feature.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

IMAGENET_HEAD = ("fc.weight", "fc.bias")
_MAX_LISTED = 10


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: two 3x3 convs with BN, identity or 1x1-conv+BN shortcut."""

    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision-compatible ResNet-18 with ``fc = nn.Identity()``: (N, 3, H, W) -> (N, 512)."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._planes = 64
        self.layer1 = self._make_layer(64, 2, stride=1)
        self.layer2 = self._make_layer(128, 2, stride=2)
        self.layer3 = self._make_layer(256, 2, stride=2)
        self.layer4 = self._make_layer(512, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity()
        self.out_dim: int = 512
        for m in self.modules():  # torchvision's default initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._planes != planes:
            downsample = nn.Sequential(nn.Conv2d(self._planes, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(self._planes, planes, stride, downsample)]
        self._planes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Load a local state-dict file into ``model`` strictly, ignoring the ImageNet ``fc`` head.

    The file may hold a plain state dict or a dict with a ``state_dict`` / ``model`` entry. Missing
    or unexpected keys and shape mismatches raise ``ValueError``; weights are never downloaded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {str(path)!r} not found: weights are read from a local "
                                f"file only (nothing is downloaded)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weights {str(path)!r}: not a state dict of tensors")
    state = {k: v for k, v in state.items() if k not in IMAGENET_HEAD}

    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (file != model): {_listed(mismatched)}")
    if problems:
        raise ValueError(f"pretrained weights {str(path)!r} do not fit the model; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
