"""ResNet-18 SPM: torchvision naming and size, strict local weight loading, masked-BN wrapping."""

import copy
import math

import pytest
import torch
from torch import nn

from ctca.models.resnet import ResNet18, load_pretrained
from ctca.models.spm import SpatialPerception, build_spm

BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_resnet18_keys() -> list[str]:
    """State-dict keys of torchvision's resnet18, from its documented structure, without ``fc``."""
    def bn(prefix: str) -> list[str]:
        return [f"{prefix}.{e}" for e in BN_ENTRIES]

    keys = ["conv1.weight", *bn("bn1")]
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            keys += [f"{p}.conv1.weight", *bn(f"{p}.bn1"), f"{p}.conv2.weight", *bn(f"{p}.bn2")]
            if block == 0 and layer > 1:
                keys += [f"{p}.downsample.0.weight", *bn(f"{p}.downsample.1")]
    return keys


@pytest.fixture(scope="module")
def model() -> ResNet18:
    torch.manual_seed(0)
    return ResNet18().eval()


def perturbed(model: nn.Module, seed: int) -> nn.Module:
    """A copy whose BN affine parameters and running statistics are non-trivial (not the init values)."""
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    for m in other.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-0.2, 0.2, generator=g)
            m.running_mean.uniform_(-0.1, 0.1, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
    return other


def test_state_dict_keys_match_torchvision_naming(model):
    assert list(model.state_dict()) == torchvision_resnet18_keys()


def test_parameter_count_is_resnet18_without_fc(model):
    assert sum(p.numel() for p in model.parameters()) == 11_176_512
    assert isinstance(model.fc, nn.Identity) and model.out_dim == 512


def test_torchvision_default_init(model):
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0), name
    conv = model.layer4[1].conv2  # 2.4M weights: kaiming normal, fan_out, relu gain
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.02)
    assert abs(conv.weight.mean().item()) < 1e-3


@pytest.mark.parametrize("size", [224, 32])
def test_output_is_pooled_512d_feature(model, size):
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 512)
    assert torch.all(out >= 0)  # ReLU then average pooling


def test_save_load_round_trip_reproduces_outputs(model, tmp_path):
    source = perturbed(model, seed=1)
    path = tmp_path / "r18.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(123)
    target = ResNet18()
    load_pretrained(target, path)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(target.eval()(x), source.eval()(x))
    for (k, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_imagenet_fc_head_is_ignored(model, tmp_path, wrap):
    state = dict(perturbed(model, seed=2).state_dict())
    state["fc.weight"] = torch.randn(1000, 512)
    state["fc.bias"] = torch.randn(1000)
    path = tmp_path / "imagenet.pt"
    torch.save(state if wrap is None else {wrap: state, "epoch": 90}, path)
    target = ResNet18()
    load_pretrained(target, path)
    assert torch.equal(target.layer3[0].bn1.running_var, state["layer3.0.bn1.running_var"])
    assert not any(k.startswith("fc.") for k in target.state_dict())


def test_missing_key_raises_naming_it(model, tmp_path):
    state = dict(model.state_dict())
    del state["layer2.0.downsample.1.running_mean"]
    path = tmp_path / "missing.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"layer2\.0\.downsample\.1\.running_mean") as err:
        load_pretrained(ResNet18(), path)
    assert "missing.pt" in str(err.value)


def test_wrong_shape_raises_naming_it(model, tmp_path):
    state = dict(model.state_dict())
    state["layer1.1.conv2.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "shape.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"layer1\.1\.conv2\.weight") as err:
        load_pretrained(ResNet18(), path)
    assert "shape.pt" in str(err.value)


def test_unexpected_keys_are_listed_at_most_ten(model, tmp_path):
    state = dict(model.state_dict())
    extras = [f"head.{i}.weight" for i in range(15)]
    state.update({k: torch.zeros(1) for k in extras})
    path = tmp_path / "extra.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_pretrained(ResNet18(), path)
    assert sum(k in str(err.value) for k in extras) == 10


def test_failed_load_leaves_model_untouched(model, tmp_path):
    state = dict(perturbed(model, seed=3).state_dict())
    del state["conv1.weight"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    target = ResNet18()
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(ValueError):
        load_pretrained(target, path)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_missing_file_is_not_downloaded(tmp_path):
    path = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(FileNotFoundError, match="local file") as err:
        load_pretrained(ResNet18(), path)
    assert str(path) in str(err.value)


def test_build_spm_resnet18_masks_padded_frames():
    torch.manual_seed(0)
    spm = build_spm("resnet18", (4, 8))
    assert isinstance(spm, SpatialPerception) and isinstance(spm.backbone, ResNet18) and spm.out_dim == 512
    mask = torch.tensor([[True, True, True], [True, False, False]])
    video = torch.randn(2, 3, 3, 32, 32)
    video[~mask] = 1e3  # padding, loud enough to show if it reached the backbone
    valid = torch.cat([video[0], video[1, :1]])
    reference = copy.deepcopy(spm.backbone)

    spm.train()  # masked BN: batch statistics come from the valid frames only
    reference.train()
    with torch.no_grad():
        spm(video, mask)
        reference(valid)
    for a, b in zip(spm.backbone.buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(a, b)

    spm.eval()
    reference.eval()
    with torch.no_grad():
        out = spm(video, mask)
        expected = reference(valid)
    assert out.shape == (2, 3, 512)
    assert torch.all(out[~mask] == 0)
    torch.testing.assert_close(out[mask], expected)


def test_build_spm_resnet18_loads_pretrained(model, tmp_path):
    source = perturbed(model, seed=4)
    path = tmp_path / "r18.pt"
    torch.save(source.state_dict(), path)
    spm = build_spm("resnet18", (), pretrained=str(path))
    for (k, a), b in zip(source.state_dict().items(), spm.backbone.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_build_spm_rejects_unknown_arch_and_compact_pretrained(tmp_path):
    with pytest.raises(ValueError, match="'compact', 'resnet18'"):
        build_spm("resnet50", (4, 8))
    with pytest.raises(ValueError, match="resnet18"):
        build_spm("compact", (4, 8), pretrained=str(tmp_path / "w.pt"))
    assert build_spm("compact", (4, 8)).out_dim == 8  # positional two-argument call still works


def test_channels_last_input_matches_contiguous(model):
    x = torch.randn(2, 3, 64, 64)
    net = perturbed(model, seed=5).eval()
    with torch.no_grad():
        a = net(x)
        b = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
