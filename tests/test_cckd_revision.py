"""The revised CCKD reconstruction (docs/methods.md#cckd-scale): hand-computed values of every new loss form
and switch, and the property the revision is about: a switch changes only what it names."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from test_distill_losses import cos, kl, softmax
from torch import nn

from ctca.config import parse_params
from ctca.losses.cckd import cmd_feature_kl, g2l_correlation, l2g_infonce, reconstruction, reduce_frames
from ctca.losses.distill import seq_kd
from ctca.methods import make_method
from ctca.methods.base import LossOutput, gradient_ratios
from ctca.methods.ctca import gloss_alignment
from ctca.models.dual_path import ConvFrontEnd, DilatedPath, Fusion, LocalPath
from ctca.models.norm import MaskedBatchNorm1d

# Two videos, time-major (T=3, B=2, D=2); video 1 has 2 valid frames, its third is padding (garbage).
G = [[[1.0, 0.0], [1.0, 3.0]], [[0.0, 2.0], [2.0, -1.0]], [[1.0, 1.0], [50.0, 7.0]]]
L = [[[2.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [0.0, 1.0]], [[0.0, 1.0], [-9.0, 4.0]]]
LENGTHS = torch.tensor([3, 2])


def frames(x: list, b: int, n: int) -> list[list[float]]:
    return [x[t][b] for t in range(n)]


def test_reduce_frames_sample_sum_is_a_per_video_sum_averaged_over_videos() -> None:
    per_frame = torch.tensor([1.0, 2.0, 3.0, 10.0])  # video 0: three frames, video 1: one
    assert reduce_frames(per_frame, 2, "sample_sum").item() == pytest.approx((1 + 2 + 3 + 10) / 2)
    assert reduce_frames(per_frame, 2, "frame_mean").item() == pytest.approx(16 / 4)
    with pytest.raises(ValueError, match="reduction"):
        reduce_frames(per_frame, 2, "mean")


def infonce_terms(gs, ls, negatives, tau):
    out = []
    for i, neg in enumerate(negatives):
        s = {j: cos(gs[i], ls[j]) / tau for j in [i, *neg]}
        out.append(-s[i] + math.log(sum(math.exp(v) for v in s.values())))
    return out


def test_l2g_same_video_negatives_and_per_video_sum() -> None:
    g, loc = torch.tensor(G), torch.tensor(L)
    tau = 0.5
    v0 = infonce_terms(frames(G, 0, 3), frames(L, 0, 3), [[1, 2], [0, 2], [0, 1]], tau)
    v1 = infonce_terms(frames(G, 1, 2), frames(L, 1, 2), [[1], [0]], tau)
    got = l2g_infonce(g, loc, LENGTHS, tau=tau, exclude=0, negatives="video", reduction="sample_sum")
    assert got.item() == pytest.approx((sum(v0) + sum(v1)) / 2, rel=1e-5)
    # the batch negatives add the other video's frames: a different (larger) value
    batch = l2g_infonce(g, loc, LENGTHS, tau=tau, exclude=0, negatives="batch", reduction="sample_sum")
    assert batch.item() > got.item() + 1e-3
    with pytest.raises(ValueError, match="negatives"):
        l2g_infonce(g, loc, LENGTHS, negatives="signer")


def test_l2g_without_i_keeps_the_positive_term_at_the_same_temperature() -> None:
    g, loc = torch.tensor(G), torch.tensor(L)
    tau = 0.2
    pairs = [(G[t][b], L[t][b]) for b, n in enumerate([3, 2]) for t in range(n)]
    got = l2g_infonce(g, loc, LENGTHS, tau=tau, mutual_information=False, reduction="sample_sum")
    assert got.item() == pytest.approx(sum((1 - cos(a, c)) / tau for a, c in pairs) / 2, rel=1e-5)
    # the first reconstruction's form (frame mean of 1 - cos) is still reachable
    old = l2g_infonce(g, loc, LENGTHS, tau=tau, mutual_information=False, reduction="frame_mean")
    assert old.item() == pytest.approx(sum(1 - cos(a, c) for a, c in pairs) / 5, rel=1e-5)


def pairwise_by_hand(gs, ls, tau, weighted):
    n = len(gs)
    rows = []
    for i in range(n):
        cg = [cos(gs[i], gs[j]) for j in range(n)]
        cl = [cos(ls[i], ls[j]) for j in range(n)]
        w = softmax([c / tau for c in cg]) if weighted else [1 / n] * n
        rows.append(sum(wj * (a - b) ** 2 for wj, a, b in zip(w, cg, cl, strict=True)))
    return rows


@pytest.mark.parametrize("weighted", [True, False])
def test_g2l_pairwise_hand_value(weighted: bool) -> None:
    tau = 0.5
    r0 = pairwise_by_hand(frames(G, 0, 3), frames(L, 0, 3), tau, weighted)
    r1 = pairwise_by_hand(frames(G, 1, 2), frames(L, 1, 2), tau, weighted)
    got = g2l_correlation(torch.tensor(G), torch.tensor(L), LENGTHS, tau=tau, weighted=weighted,
                          reduction="sample_sum", form="pairwise")
    assert got.item() == pytest.approx((sum(r0) + sum(r1)) / 2, rel=1e-5)


def test_g2l_kl_form_per_video_sum() -> None:
    tau = 0.5
    rows = []
    for b, n in enumerate([3, 2]):
        gs, ls = frames(G, b, n), frames(L, b, n)
        for i in range(n):
            rows.append(kl(softmax([cos(gs[i], gs[j]) / tau for j in range(n)]),
                           softmax([cos(ls[i], ls[j]) / tau for j in range(n)])))
    got = g2l_correlation(torch.tensor(G), torch.tensor(L), LENGTHS, tau=tau, reduction="sample_sum", form="kl")
    assert got.item() == pytest.approx(sum(rows) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="form"):
        g2l_correlation(torch.tensor(G), torch.tensor(L), LENGTHS, form="l2")


def test_g2l_pairwise_is_zero_for_equal_correlations_and_trains_only_the_local_path() -> None:
    torch.manual_seed(1)
    g = torch.randn(5, 2, 3, requires_grad=True)
    loc = (3 * g).detach().requires_grad_()  # same directions: same correlations
    got = g2l_correlation(g, loc, torch.tensor([5, 4]), reduction="sample_sum", form="pairwise")
    assert got.item() == pytest.approx(0.0, abs=1e-6)
    g2l_correlation(g, torch.randn(5, 2, 3, requires_grad=True), torch.tensor([5, 4]), form="pairwise").backward()
    assert g.grad is None


def test_reconstruction_per_video_sum() -> None:
    pred = torch.tensor([[[1.0, 2.0], [0.0, 0.0]], [[3.0, 4.0], [9.0, 9.0]]])
    target = torch.zeros(2, 2, 2)
    # video 0: frames (1+4)/2 and (9+16)/2; video 1: frame 0 only (its frame 1 is padding) = 0
    got = reconstruction(pred, target, torch.tensor([2, 1]), reduction="sample_sum")
    assert got.item() == pytest.approx((2.5 + 12.5 + 0.0) / 2)


def test_cmd_feature_kl_hand_value() -> None:
    # glosses 1..3 (row 0 = blank: garbage); e1 = (1, 0), e2 = (0, 1), e3 = (1, 1)
    emb = torch.tensor([[7.0, 7.0], [1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    z = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[5.0, 5.0]], [[1.0, -1.0]]], requires_grad=True)  # (T=4, B=1)
    aligned = torch.tensor([[1], [0], [3], [2]])  # frame 1 is blank; frame 3 is padding
    tt, ts, c = 0.5, 1.0, 1 / math.sqrt(2)
    e = {1: [1.0, 0.0], 2: [0.0, 1.0], 3: [c, c]}

    def row(gloss, zt):
        a = softmax([cos(e[gloss], e[k]) / tt for k in (1, 2, 3)])
        b = softmax([cos(zt, e[k]) / ts for k in (1, 2, 3)])
        return kl(a, b)

    expected = row(1, [1.0, 0.0]) + row(3, [5.0, 5.0])
    got = cmd_feature_kl(z, emb, aligned, torch.tensor([3]), tau_t=tt, tau_s=ts, reduction="sample_sum")
    assert got.item() == pytest.approx(expected, rel=1e-5)
    got.backward()
    assert z.grad[1].abs().max() == 0 and z.grad[3].abs().max() == 0 and z.grad[0].abs().max() > 0


def test_gloss_alignment_is_the_forced_alignment_and_blank_when_infeasible() -> None:
    # 5 frames, labels (2, 1): confident posteriors for 2, 2, blank, 1, blank
    logits = torch.full((5, 2, 3), -10.0)
    for t, c in enumerate([2, 2, 0, 1, 0]):
        logits[t, 0, c] = 10.0
    logits[:, 1, 0] = 10.0
    aligned = gloss_alignment(logits, torch.tensor([5, 1]), torch.tensor([2, 1, 1, 2]), torch.tensor([2, 2]))
    assert aligned[:, 0].tolist() == [2, 2, 0, 1, 0]
    assert aligned[:, 1].tolist() == [0] * 5  # one frame cannot hold two glosses: left out


def test_gradient_ratios_hand_value() -> None:
    x = torch.tensor([1.0, 2.0, 2.0], requires_grad=True)  # |x| = 3
    res = LossOutput(total=torch.zeros(()), parts={}, nonfinite=0,
                     weighted={"ctc_a": 2 * x.sum(), "ctc_b": x.sum(), "kd": (x ** 2).sum(), "cmd": torch.ones(()) * 0})
    ratios = gradient_ratios(x, res)
    # CTC gradient (3, 3, 3), norm 3 sqrt 3; kd: 2x, norm 6; ctc_a: (2, 2, 2); cmd never reaches x
    assert ratios["kd"] == pytest.approx(6 / (3 * math.sqrt(3)))
    assert ratios["ctc_a"] == pytest.approx(2 / 3)
    assert ratios["cmd"] == 0.0
    assert x.grad is None  # nothing accumulated


def test_masked_batch_norm_uses_valid_frames_only() -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5)
    valid = torch.tensor([[True] * 5, [True, True, False, False, False]])
    bn, ref = MaskedBatchNorm1d(3), nn.BatchNorm1d(3)
    out = bn(x, valid)
    rows = x.transpose(1, 2)[valid]  # the 7 valid frames
    expected = ref(rows)
    assert torch.allclose(out.transpose(1, 2)[valid], expected, atol=1e-6)
    assert out.transpose(1, 2)[~valid].abs().max() == 0
    assert torch.allclose(bn.running_mean, ref.running_mean) and torch.allclose(bn.running_var, ref.running_var)


@pytest.mark.parametrize("path", ["local", "dilated", "front_end"])
def test_masked_paths_ignore_padding(path: str) -> None:
    torch.manual_seed(3)
    x = torch.randn(9, 2, 4)
    lengths = torch.tensor([9, 5])
    garbage = x.clone()
    garbage[5:, 1] = 1000.0
    if path == "front_end":  # (B, C, L) in, two K5-P2 blocks: lengths 9 -> 2, 5 -> 1
        net = ConvFrontEnd(4, 6, 2).train()
        a, b = net(x.permute(1, 2, 0), lengths), net(garbage.permute(1, 2, 0), lengths)
        assert a.shape == (2, 6, 2) and torch.allclose(a, b, atol=1e-5) and a[1, :, 1:].abs().max() == 0
        return
    net = LocalPath(4, 6, (3, 3, 3), mask_padding=True) if path == "local" else DilatedPath(4, 6, (1, 2))
    net.train()
    a, b = net(x, lengths), net(garbage, lengths)
    assert torch.allclose(a, b, atol=1e-5)
    assert a[5:, 1].abs().max() == 0
    if path == "local":  # without the masks, padding reaches the statistics
        leaky = LocalPath(4, 6, (3, 3, 3), mask_padding=False)
        leaky.load_state_dict(net.state_dict())
        assert not torch.allclose(leaky(x, lengths), leaky(garbage, lengths), atol=1e-3)


# ---------------------------------------------------------------- the method: switches act on their term only

def build(ctca: dict | None = None, **loss):
    params = parse_params({"model": {"method": "ctca"}, "tam": {"hidden": 8}, "spm": {"channels": [4]},
                           "ctca": {"proj_dim": 4, "cmd_dim": 3, "exclude": 1, **(ctca or {})}, "loss": loss})
    torch.manual_seed(0)
    method = make_method(params)
    model = method.build_model(6)
    model.gloss_embeddings.copy_(torch.randn_like(model.gloss_embeddings))
    model.train()
    torch.manual_seed(1)
    video, mask = torch.randn(2, 20, 3, 12, 12), torch.ones(2, 20, dtype=torch.bool)
    mask[1, 15:] = False
    batch = SimpleNamespace(labels=torch.tensor([1, 2, 3, 4, 5]), label_lengths=torch.tensor([2, 3]))
    out = model(video, mask, torch.tensor([20, 15]), **method.forward_options)
    return method, model, out, batch


@pytest.mark.parametrize(("switch", "changed"), [
    ({"l2g_mi": False}, "l2g"), ({"l2g_negatives": "batch"}, "l2g"), ({"g2l_omega": False}, "g2l"),
    ({"g2l_form": "kl"}, "g2l"), ({"g2l_mode": "posterior"}, "g2l"),
    ({"cmd_target": "classifier"}, "cmd"), ({"tau_mi": 0.3}, "l2g"), ({"tau_omega": 0.3}, "g2l"),
])
def test_a_switch_leaves_every_other_term_unchanged(switch: dict, changed: str) -> None:
    method, model, out, batch = build()
    base = method.loss(model, out, batch)
    method2, model2, out2, batch2 = build(switch)
    res = method2.loss(model2, out2, batch2)
    assert set(res.parts) == set(base.parts)
    for term, value in base.parts.items():
        if term == changed:
            assert res.parts[term] != pytest.approx(value, rel=1e-6)
        else:
            assert res.parts[term] == pytest.approx(value, rel=1e-6), term


@pytest.mark.parametrize("term", ["l2g", "g2l", "rc", "cmd"])
def test_a_loss_toggle_leaves_every_other_term_and_weight_unchanged(term: str) -> None:
    method, model, out, batch = build()
    full = method.loss(model, out, batch)
    method2, model2, out2, batch2 = build(**{term: False})
    res = method2.loss(model2, out2, batch2)
    assert set(full.parts) - set(res.parts) == {term}
    for k, v in res.weighted.items():
        assert float(v.detach()) == pytest.approx(float(full.weighted[k].detach()), rel=1e-6), k


def test_terms_are_per_video_sums_of_their_frame_values() -> None:
    """sample_sum = frame_mean x (valid frames / videos), term by term (those defined per frame)."""
    method, model, out, batch = build({"reduction": "sample_sum", "g2l_form": "kl", "l2g_negatives": "batch"})
    new = method.loss(model, out, batch).parts
    method2, model2, out2, batch2 = build({"reduction": "frame_mean", "g2l_form": "kl", "l2g_negatives": "batch"})
    old = method2.loss(model2, out2, batch2).parts
    frames_per_video = float(out.lengths.sum()) / 2
    for term in ("l2g", "g2l", "rc"):
        assert new[term] == pytest.approx(old[term] * frames_per_video, rel=1e-5), term


def test_posterior_g2l_per_video_sum() -> None:
    method, model, out, batch = build({"g2l_mode": "posterior", "g2l_omega": False})
    got = method.loss(model, out, batch).parts["g2l"]
    mean = seq_kd(out.heads["local"], out.heads["global"], tau=8.0, lengths=out.lengths)
    assert got == pytest.approx(float(mean) * float(out.lengths.sum()) / 2, rel=1e-5)


def test_the_first_reconstruction_keeps_its_weights_and_state_dict() -> None:
    """cmd_target=classifier builds no extra module: old model files and random streams are unchanged."""
    _, model, _, _ = build({"cmd_target": "classifier"})
    _, revised, _, _ = build({"cmd_target": "features"})
    assert set(revised.state_dict()) - set(model.state_dict()) == {"proj_cmd.weight", "proj_cmd.bias"}
    assert "proj_cmd" in revised.training_modules() and "proj_cmd" not in revised.module_groups()


def test_cckd_warmup_ramps_every_cckd_weight_and_survives_a_resume() -> None:
    method, model, out, batch = build({"cckd_warmup": 4})
    assert method.on_epoch_start(model, 0) == {"cckd_ramp": 0.25}
    quarter = method.loss(model, out, batch)
    method.on_epoch_start(model, 5)
    full = method.loss(model, out, batch)
    for term in ("l2g", "g2l", "rc", "cmd"):
        assert float(quarter.weighted[term].detach()) == pytest.approx(0.25 * float(full.weighted[term].detach()))
    for head in ("ctc_global", "ctc_local"):
        assert float(quarter.weighted[head].detach()) == pytest.approx(float(full.weighted[head].detach()))
    method.on_epoch_start(model, 1)
    resumed = make_method(method.params)
    resumed.load_state_dict(method.state_dict())
    assert resumed.ramp == 0.5


# ---------------------------------------------------------------- Table 6: feature fusion instead of L_l2g

def test_fusion_hand_values_and_padding() -> None:
    g = torch.tensor(G)  # (T=3, B=2, D=2); video 1's third frame is padding
    loc = torch.tensor(L)
    add = Fusion("add", 2)(g, loc, LENGTHS)
    assert add[:, 0].tolist() == [[3.0, 1.0], [1.0, 3.0], [1.0, 2.0]]
    assert add[:, 1].tolist() == [[2.0, 4.0], [2.0, 0.0], [0.0, 0.0]]

    concat = Fusion("concat", 2)
    with torch.no_grad():
        concat.proj.weight.copy_(torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, -1.0, 0.0, 1.0]]))
        concat.proj.bias.copy_(torch.tensor([0.5, 0.0]))
    # [g0 + 2 l0 + 0.5, -g1 + l1]
    assert concat(g, loc, LENGTHS)[:, 0].tolist() == [[5.5, 1.0], [2.5, -1.0], [1.5, 0.0]]

    attn = Fusion("attention", 2)
    with torch.no_grad():  # identity projections: out = g + softmax(g l^T / sqrt(2)) l over the valid frames
        attn.attn.in_proj_weight.copy_(torch.cat([torch.eye(2)] * 3))
        attn.attn.in_proj_bias.zero_()
        attn.attn.out_proj.weight.copy_(torch.eye(2))
        attn.attn.out_proj.bias.zero_()
    out = attn(g, loc, LENGTHS)
    for b, n in ((0, 3), (1, 2)):
        keys = frames(L, b, n)
        for t in range(n):
            q = G[t][b]
            scores = [math.exp((q[0] * k[0] + q[1] * k[1]) / math.sqrt(2)) for k in keys]
            ctx = [sum(s * k[d] for s, k in zip(scores, keys, strict=True)) / sum(scores) for d in range(2)]
            assert out[t, b].tolist() == pytest.approx([q[0] + ctx[0], q[1] + ctx[1]], rel=1e-5)
    assert out[2, 1].abs().max() == 0  # padded frames come out zero and are never attended to
    with pytest.raises(ValueError, match="mode='mean'"):
        Fusion("mean", 2)


@pytest.mark.parametrize("fusion", ["concat", "add", "attention"])
def test_fusion_keeps_both_paths_at_inference_and_changes_only_the_global_head(fusion: str) -> None:
    method, model, out, batch = build()
    base = method.loss(model, out, batch).parts
    method2, fused, out2, batch2 = build({"fusion": fusion})
    assert set(fused.state_dict()) - set(model.state_dict()) == {f"fusion.{k}" for k in fused.fusion.state_dict()}
    groups = fused.module_groups()
    assert any(m is fused.local_path for m in groups["tam"]) and any(m is fused.fusion for m in groups["tam"])
    assert "local_path" not in fused.training_modules() and "local_classifier" in fused.training_modules()
    res = method2.loss(fused, out2, batch2).parts
    # the features the CCKD terms read are the paths' own; the global head (and L_cmd's alignment, taken
    # from it) is the only thing fusion changes
    for term in ("ctc_local", "l2g", "g2l", "rc"):
        assert res[term] == pytest.approx(base[term], rel=1e-6), term
    assert res["ctc_global"] != pytest.approx(base["ctc_global"], rel=1e-6)
    fused.zero_grad()
    out2.heads["global"].sum().backward()
    assert fused.local_path.net[0].weight.grad.abs().max() > 0  # the global head reads the local path


def test_fusion_needs_the_global_branch() -> None:
    with pytest.raises(ValueError, match="ctca.fusion"):
        parse_params({"model": {"method": "ctca"}, "ctca": {"fusion": "add", "inference": "local"}})


def _unit_bn(norm: nn.BatchNorm1d) -> None:
    """Eval-mode BatchNorm that passes values through (mean 0, variance 1 - eps)."""
    norm.eval()
    norm.running_mean.zero_()
    norm.running_var.fill_(1.0 - norm.eps)


def test_front_end_hand_value() -> None:
    """One K5-P2 block, all-ones kernel: 5-frame window sums over the valid frames ("same" zero padding,
    padding zeroed first), ReLU, max over pairs; the length halves."""
    net = ConvFrontEnd(1, 1, 1)
    with torch.no_grad():
        net.convs[0].weight.fill_(1.0)
        net.convs[0].bias.zero_()
    _unit_bn(net.norms[0])
    x = torch.tensor([[[1.0, 2, 3, 4, 5, 6]], [[1.0, 1, 1, 1, 99, 99]]])  # clip 1: 4 valid frames
    out = net(x, torch.tensor([6, 4]))
    # clip 0 sums: 6, 10, 15, 20, 18, 15 -> pairs' max 10, 20, 18; clip 1: 3, 4, 4, 3 -> 4, 4, then padding
    assert out[:, 0].tolist() == [pytest.approx([10.0, 20.0, 18.0]), pytest.approx([4.0, 4.0, 0.0])]


def test_dilated_path_hand_value() -> None:
    """One block of dilation 2, all-ones kernel, identity input projection: x + ReLU(x[t-2] + x[t] + x[t+2])."""
    net = DilatedPath(1, 1, (2,))
    with torch.no_grad():
        net.inp.weight.fill_(1.0)
        net.inp.bias.zero_()
        net.convs[0].weight.fill_(1.0)
        net.convs[0].bias.zero_()
    _unit_bn(net.norms[0])
    x = torch.tensor([1.0, 2, 3, 4, 5, 77]).view(6, 1, 1)  # (T, B=1, D=1), the last frame is padding
    out = net(x, torch.tensor([5]))
    assert out.view(-1).tolist() == pytest.approx([1 + 4, 2 + 6, 3 + 9, 4 + 6, 5 + 8, 0.0])
