"""Each method's objective is the documented weighted sum of its terms, and the loss toggles act."""

from types import SimpleNamespace

import pytest
import torch

from ctca.config import parse_params
from ctca.losses.cckd import cmd_prototype_kl, g2l_correlation, l2g_infonce, reconstruction
from ctca.losses.ctc import ctc_loss
from ctca.losses.distill import seq_kd
from ctca.losses.objective import Objective
from ctca.losses.smkd import label_smoothed_ce
from ctca.models.heads import class_columns
from ctca.models.recognizer import build_recognizer
from ctca.train import model_config

WEIGHTS = {"seq_ctc": 0.7, "conv_ctc": 1.3, "va": 25.0, "l2g": 0.5, "g2l": 2.0, "rc": 3.0, "cmd": 0.1, "seg": 1.5}


def setup(method, **loss):
    params = parse_params({"model": {"method": method}, "tam": {"depth": 3, "hidden": 8},
                           "spm": {"channels": [4]}, "ctca": {"proj_dim": 4, "cmd_dim": 3, "downsample": "none"},
                           "loss": {"weights": WEIGHTS, **loss}})
    torch.manual_seed(0)
    model = build_recognizer(model_config(params, 6, 3))
    if method == "ctca":
        model.gloss_embeddings.copy_(torch.randn_like(model.gloss_embeddings))
    objective = Objective(params, model)
    model.train()
    n = 16 + 2 * model.frame_padding
    video = torch.randn(2, n, 3, 12, 12)
    mask = torch.ones(2, n, dtype=torch.bool)
    batch = SimpleNamespace(labels=torch.tensor([1, 2, 3, 4, 5]), label_lengths=torch.tensor([2, 3]))
    out = model(video, mask, torch.tensor([n, n]))
    return objective, model, out, batch


def ctc(out, head, batch):
    return ctc_loss(out.heads[head], out.lengths, batch.labels, batch.label_lengths).loss


def test_baseline_is_ctc_on_the_sequence_head():
    obj, _, out, batch = setup("baseline")
    res = obj(out, batch)
    assert set(res.parts) == {"ctc_seq"}
    assert torch.isclose(res.total, WEIGHTS["seq_ctc"] * ctc(out, "seq", batch))


def test_vac_adds_conv_ctc_and_visual_alignment():
    obj, _, out, batch = setup("vac")
    res = obj(out, batch)
    expected = (WEIGHTS["seq_ctc"] * ctc(out, "seq", batch) + WEIGHTS["conv_ctc"] * ctc(out, "conv", batch)
                + WEIGHTS["va"] * seq_kd(out.heads["conv"], out.heads["seq"], tau=8.0))
    assert set(res.parts) == {"ctc_seq", "ctc_conv", "va"}
    assert torch.isclose(res.total, expected)


def test_smkd_adds_the_gloss_segmentation_term_only_with_pseudo_labels():
    obj, _, out, batch = setup("smkd")
    without = obj(out, batch)
    assert set(without.parts) == {"ctc_seq", "ctc_conv"}
    targets = torch.randint(0, 6, out.logits.shape[:2])
    res = obj(out, batch, targets)
    seg = label_smoothed_ce(out.heads["conv"], targets, out.lengths, 0.2)
    assert torch.isclose(res.total, without.total + WEIGHTS["seg"] * seg)


def test_ctca_total_is_the_weighted_sum_of_every_cckd_term():
    obj, model, out, batch = setup("ctca")
    res = obj(out, batch)
    f, lengths = out.features, out.lengths
    expected = (WEIGHTS["seq_ctc"] * ctc(out, "global", batch) + WEIGHTS["conv_ctc"] * ctc(out, "local", batch)
                + WEIGHTS["l2g"] * l2g_infonce(f["proj_global"], f["proj_local"], lengths)
                + WEIGHTS["g2l"] * g2l_correlation(f["global"], f["local"], lengths)
                + WEIGHTS["rc"] * (reconstruction(f["rc_global"], f["local"], lengths)
                                   + reconstruction(f["rc_local"], f["global"], lengths))
                + WEIGHTS["cmd"] * cmd_prototype_kl(class_columns(model.global_classifier), model.gloss_embeddings,
                                                    torch.arange(1, 6)))
    assert set(res.parts) == {"ctc_global", "ctc_local", "l2g", "g2l", "rc", "cmd"}
    assert torch.isclose(res.total, expected, rtol=1e-5)


@pytest.mark.parametrize("term", ["l2g", "g2l", "rc", "cmd"])
def test_each_cckd_toggle_removes_exactly_its_term(term):
    full_obj, _, out, batch = setup("ctca")
    full = full_obj(out, batch)
    obj, model, out2, batch2 = setup("ctca", **{term: False})
    res = obj(out2, batch2)
    assert term not in res.parts and set(full.parts) - set(res.parts) == {term}
    if term == "l2g":
        assert "proj_local" not in out2.features  # the switched-off term's modules are not even run
    if term == "rc":
        assert "rc_global" not in out2.features
    assert torch.isclose(res.total, full.total - WEIGHTS[term] * torch.tensor(full.parts[term]), rtol=1e-5)


def test_vac_distillation_trains_the_conv_head_not_its_teacher():
    obj, model, out, batch = setup("vac", weights={**WEIGHTS, "seq_ctc": 0.0, "conv_ctc": 0.0})
    obj(out, batch).total.backward()  # only the VA term is left
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.classifier.parameters())
    assert model.conv_classifier.weight.grad.abs().sum() > 0
