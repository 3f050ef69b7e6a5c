"""SPM (masked BN), the chain-depth TAM ladder, and the recognizer assembly."""

import copy
import math

import pytest
import torch
from torch import nn

from ctca.models.recognizer import build_recognizer, count_parameters
from ctca.models.spm import CompactCNN, SpatialPerception
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
    # parameter count of VAC's TemporalConv (7,870,464) + 2-layer BiLSTM (12,599,296), methods.md 2.3
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


def test_recognizer_forward_and_module_groups():
    model = build_recognizer("baseline", 11, "compact", (4, 8), depth=3, hidden=8, dropout=0.0)
    groups = model.module_groups()
    assert set(groups) == {"spm", "tam", "classifier"}
    assert sum(count_parameters(m) for m in groups.values()) == count_parameters(model)
    video = torch.randn(2, 4 * 5 + 2 * model.frame_padding, 3, 16, 16)
    mask = torch.ones(video.shape[:2], dtype=torch.bool)
    out = model(video, mask, torch.tensor([video.shape[1]] * 2))
    assert out.logits.shape == (5, 2, 11) and out.lengths.tolist() == [5, 5]
    with pytest.raises(ValueError, match="model.method='vac'"):
        build_recognizer("vac", 11, "compact", (4,), 4, 8, 0.0)
