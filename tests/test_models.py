"""SPM (masked BN), the chain-depth TAM ladder, and the recognizer assembly."""

import copy
import math

import pytest
import torch
from torch import nn

from ctca.models.heads import NormLinear
from ctca.models.io import build_recognizer
from ctca.models.recognizer import count_parameters, inference_parameters
from ctca.models.spm import CompactCNN, SpatialPerception, build_spm
from ctca.models.tam import TemporalAggregation


def trainable_temporal_blocks(tam: TemporalAggregation) -> int:
    convs = sum(isinstance(m, nn.Conv1d) for m in tam.modules())
    return convs + (tam.lstm.num_layers if tam.lstm is not None else 0)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_chain_depth_counts_trainable_temporal_blocks(depth):
    tam = TemporalAggregation(8, depth, hidden=6)
    assert trainable_temporal_blocks(tam) == depth


def test_depth_4_is_the_vac_network():
    tam = TemporalAggregation(512, 4, hidden=1024)
    convs = [m for m in tam.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.kernel_size, c.padding) for c in convs] == [((5,), (0,)), ((5,), (0,))]
    assert tam.lstm.num_layers == 2 and tam.lstm.bidirectional and tam.lstm.hidden_size == 512
    assert tam.frame_padding == 6  # VAC pads 6 frames on each side for K5-P2-K5-P2
    # parameter count of VAC's TemporalConv (7,870,464) + 2-layer BiLSTM (12,599,296) at 1024 channels
    # (docs/methods.md#the-shared-network)
    assert count_parameters(tam) == 7_870_464 + 12_599_296


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("n_frames", [16, 17, 30, 41])
def test_output_lengths_match_the_layers_and_give_ceil_t_over_4(depth, n_frames):
    tam = TemporalAggregation(4, depth, hidden=6).eval()
    padded = math.ceil(n_frames / 4) * 4 + 2 * tam.frame_padding
    x = torch.randn(1, padded, 4)
    out = tam(x, torch.tensor([padded]))
    assert out.features.shape[0] == int(out.lengths[0]) == math.ceil(n_frames / 4)
    assert out.features.shape[1:] == (1, 6)


def test_masked_bn_ignores_padding_frames():
    torch.manual_seed(0)
    spm = SpatialPerception(CompactCNN((4, 8))).train()
    twin = copy.deepcopy(spm)
    video = torch.randn(2, 6, 3, 16, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    ref = spm(video, mask)
    garbage = video.clone()
    garbage[1, 3:] = 1e3  # padding content must not reach BatchNorm statistics or the valid outputs
    out = twin(garbage, mask)
    assert torch.allclose(out[mask], ref[mask], atol=1e-5)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    bn, bn_twin = spm.backbone.features[1], twin.backbone.features[1]
    assert torch.allclose(bn.running_mean, bn_twin.running_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, bn_twin.running_var, atol=1e-6)


CONV_HEAD = {"baseline": "none", "vac": "separate", "smkd": "shared"}


def cfg(method, **kw):
    """The network config of each method's model (what ctca.methods writes into the model file)."""
    base = {"arch": "recognizer", "num_classes": 11, "spm_arch": "compact", "spm_channels": [4, 8], "depth": 3,
            "hidden": 8, "dropout": 0.0, "conv_head": CONV_HEAD.get(method, method)}
    if method == "ctca":
        base = {"arch": "dual_path", "num_classes": 11, "spm_arch": "compact", "spm_channels": [4, 8], "hidden": 8,
                "dropout": 0.0, "local_kernels": [3, 3, 3], "global_layers": 2, "downsample": "none",
                "classifier": "normlinear", "inference": "global", "proj_dim": 4, "rc_target": "cross",
                "emb_dim": 5}
    base.update(kw)
    return base


def _run(model, t_out=5, **options):
    video = torch.randn(2, model.stride * t_out + 2 * model.frame_padding, 3, 16, 16)
    mask = torch.ones(video.shape[:2], dtype=torch.bool)
    return model(video, mask, torch.tensor([video.shape[1]] * 2), **options)


def test_recognizer_forward_and_module_groups():
    model = build_recognizer(cfg("baseline"))
    groups = model.module_groups()
    assert set(groups) == {"spm", "tam", "classifier"}
    assert sum(count_parameters(m) for m in groups.values()) == count_parameters(model)
    out = _run(model)
    assert out.logits.shape == (5, 2, 11) and out.lengths.tolist() == [5, 5]
    assert set(out.heads) == {"seq"}
    with pytest.raises(ValueError, match="conv_head='nope'"):
        build_recognizer(cfg("nope"))
    with pytest.raises(ValueError, match="arch='nope'"):
        build_recognizer(cfg("baseline", arch="nope"))


def test_vac_has_an_independent_conv_head_and_smkd_shares_until_untied():
    vac = build_recognizer(cfg("vac"))
    out = _run(vac)
    assert set(out.heads) == {"seq", "conv"} and vac.conv_head is vac.conv_classifier
    assert inference_parameters(vac) == count_parameters(vac) - count_parameters(vac.conv_classifier)

    smkd = build_recognizer(cfg("smkd", weight_norm=True))
    assert isinstance(smkd.classifier, NormLinear) and smkd.conv_head is smkd.classifier
    out = _run(smkd)
    (out.heads["conv"].sum() + out.heads["seq"].sum()).backward()
    assert smkd.conv_classifier.weight.grad is None  # tied: the copy is not trained
    smkd.zero_grad()
    smkd.untie()
    assert smkd.conv_head is smkd.conv_classifier
    assert torch.equal(smkd.conv_classifier.weight, smkd.classifier.weight)
    with torch.no_grad():
        smkd.conv_classifier.weight.add_(1.0)  # untied copies are independent parameters
    assert not torch.equal(smkd.conv_classifier.weight, smkd.classifier.weight)
    assert "tied" in smkd.state_dict() and not bool(smkd.state_dict()["tied"])


def test_norm_linear_is_cosine_times_feature_norm():
    head = NormLinear(3, 2)
    x = torch.tensor([[3.0, 4.0, 0.0]])
    w = head.weight.detach()
    cos = (x @ w) / (x.norm() * w.norm(dim=0))
    assert torch.allclose(head(x), x.norm() * cos)


@pytest.mark.parametrize("downsample,t_out", [("none", 20), ("pool4", 5)])
def test_ctca_dual_path_shapes_and_inference_parameters(downsample, t_out):
    model = build_recognizer(cfg("ctca", downsample=downsample))
    model.train()
    out = _run(model, t_out, aux=frozenset({"l2g", "rc"}))
    assert set(out.heads) == {"global", "local"} and out.logits is out.heads["global"]
    assert out.logits.shape == (t_out, 2, 11)
    assert {"proj_local", "proj_global", "rc_global", "rc_local"} <= set(out.features)
    # inference keeps the SPM, the global path and its classifier only
    kept = count_parameters(model.spm) + count_parameters(model.global_path) + count_parameters(
        model.global_classifier)
    assert inference_parameters(model) == kept < count_parameters(model)
    assert "proj_local" not in _run(model, t_out).features  # training-only outputs only when asked for
    model.eval()
    assert "proj_local" not in _run(model, t_out, aux=frozenset({"l2g", "rc"})).features


def test_ctca_local_path_ignores_frames_past_the_length():
    model = build_recognizer(cfg("ctca")).eval()
    video = torch.randn(2, 12, 3, 16, 16)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 8:] = False
    out = model(video, mask, torch.tensor([12, 8]))
    assert torch.equal(out.features["local"][8:, 1], torch.zeros_like(out.features["local"][8:, 1]))
    alone = model(video[1:, :8], mask[1:, :8], torch.tensor([8]))
    assert torch.allclose(alone.heads["global"][:, 0], out.heads["global"][:8, 1], atol=1e-5)


@pytest.mark.parametrize(("arch", "channels_last"), [("compact", True), ("resnet18", False)])
def test_spm_memory_format_on_cpu_changes_speed_not_features(arch, channels_last):
    """The compact CNN gets channels-last frames on a CPU (faster there: benchmarks/spm_memory_format.py),
    ResNet-18 keeps NCHW; the features are those of the plain NCHW computation either way."""
    torch.manual_seed(0)
    spm = build_spm(arch, (4, 8)).eval()
    video, mask = torch.randn(2, 3, 3, 32, 32), torch.tensor([[True, True, True], [True, False, False]])
    seen = []
    spm.backbone.register_forward_pre_hook(
        lambda m, inp: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    out = spm(video, mask)
    assert seen == [channels_last]
    with torch.no_grad():
        ref = spm.backbone(video[mask].contiguous())
    assert torch.allclose(out[mask], ref, atol=1e-5)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_tam_padding_reaches_batch_norm_unless_masked(depth):
    """In training, the VAC-style TAM lets the padding of a shorter video into the K5 blocks' BatchNorm
    statistics, so the longer video's outputs depend on it; with ``mask_padding`` nothing valid does, and
    the statistics are those of the valid frames alone (the shorter video run by itself)."""
    torch.manual_seed(0)
    x = torch.randn(2, 40, 6)
    lengths = torch.tensor([40, 27])
    garbage = x.clone()
    garbage[1, 27:] = 50.0
    leaky = TemporalAggregation(6, depth, hidden=8, dropout=0.0).train()
    masked = TemporalAggregation(6, depth, hidden=8, dropout=0.0, mask_padding=True).train()
    masked.load_state_dict(leaky.state_dict())  # the same parameters and buffers
    a, b = leaky(x, lengths), leaky(garbage, lengths)
    assert not torch.allclose(a.features[:, 0], b.features[:, 0], atol=1e-3)
    a, b = masked(x, lengths), masked(garbage, lengths)
    n = int(a.lengths[1])
    assert a.lengths.tolist() == leaky.output_lengths(lengths).tolist()
    assert torch.allclose(a.features[:, 0], b.features[:, 0], atol=1e-5)
    assert torch.allclose(a.features[:n, 1], b.features[:n, 1], atol=1e-5)
    # the first BatchNorm's statistics are those of the valid conv outputs: 40 - 4 and 27 - 4 frames
    bn = masked.conv[1]
    bn.momentum, bn.running_mean = 1.0, torch.zeros_like(bn.running_mean)  # keep this batch's mean only
    masked(garbage, lengths)
    with torch.no_grad():
        out = masked.conv[0](x.transpose(1, 2))
    valid = torch.cat([out[0, :, :36], out[1, :, :23]], dim=1)
    assert torch.allclose(bn.running_mean, valid.mean(dim=1), atol=1e-5)


def test_ddp_conversion_keeps_masked_batch_norms_masked():
    """Under DDP on GPUs every BatchNorm becomes a SyncBatchNorm; torch's conversion would turn a masked one
    into a plain SyncBatchNorm, which takes no mask. Ours keeps the mask, the tensors and the keys."""
    from ctca.models.norm import MaskedBatchNorm1d, MaskedSyncBatchNorm, convert_sync_batchnorm

    torch.manual_seed(0)
    model = build_recognizer(cfg("ctca", downsample="k5p2k5p2", mask_padding=True))
    masked = {n for n, m in model.named_modules() if isinstance(m, MaskedBatchNorm1d)}
    assert masked  # the front end's and the local path's
    reference = copy.deepcopy(model).eval()
    state = model.state_dict()
    converted = convert_sync_batchnorm(model).eval()
    kinds = {n: type(m) for n, m in converted.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert {n for n, k in kinds.items() if k is MaskedSyncBatchNorm} == masked
    assert all(k in (MaskedSyncBatchNorm, nn.SyncBatchNorm) for k in kinds.values())
    assert all(converted.state_dict()[k] is v or torch.equal(converted.state_dict()[k], v) for k, v in state.items())
    assert set(converted.state_dict()) == set(state)
    video, mask = torch.randn(2, 12, 3, 16, 16), torch.ones(2, 12, dtype=torch.bool)
    mask[1, 8:] = False
    with torch.no_grad():  # eval mode: running statistics, no process group needed
        a = converted(video, mask, torch.tensor([12, 8])).logits
        b = reference(video, mask, torch.tensor([12, 8])).logits
    assert torch.allclose(a, b, atol=1e-6)
