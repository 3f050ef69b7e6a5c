"""Each method's loss is the documented weighted sum of its terms, the loss toggles act, and the hooks
(schedule, SMKD's pseudo-labels in the checkpoint state, the registry) behave as documented."""

from types import SimpleNamespace

import pytest
import torch

from ctca.config import parse_params
from ctca.losses.cckd import cmd_feature_kl, cmd_prototype_kl, g2l_correlation, l2g_infonce, reconstruction
from ctca.losses.ctc import ctc_loss
from ctca.losses.distill import seq_kd
from ctca.losses.smkd import label_smoothed_ce
from ctca.methods import make_method
from ctca.methods.baseline import Baseline
from ctca.methods.ctca import gloss_alignment
from ctca.models.heads import class_columns

WEIGHTS = {"ctc_seq": 0.7, "ctc_conv": 1.3, "ctc_global": 0.9, "ctc_local": 1.1, "va": 25.0, "l2g": 0.5, "g2l": 2.0,
           "rc": 3.0, "cmd": 0.1, "seg": 1.5}


FIRST = {"reduction": "frame_mean", "l2g_negatives": "batch", "g2l_form": "kl", "cmd_target": "classifier",
         "mask_padding": False}  # the first reconstruction's switches (docs/methods.md#ctca-switches)


def setup(method, ctca=None, **loss):
    params = parse_params({"model": {"method": method}, "tam": {"depth": 3, "hidden": 8},
                           "spm": {"channels": [4]},
                           "ctca": {"proj_dim": 4, "cmd_dim": 3, "downsample": "none", **(ctca or {})},
                           "loss": {"weights": WEIGHTS, **loss}})
    torch.manual_seed(0)
    method = make_method(params)
    model = method.build_model(6)
    if method.name == "ctca":
        model.gloss_embeddings.copy_(torch.randn_like(model.gloss_embeddings))
    model.train()
    n = 16 + 2 * model.frame_padding
    video = torch.randn(2, n, 3, 12, 12)
    mask = torch.ones(2, n, dtype=torch.bool)
    batch = SimpleNamespace(labels=torch.tensor([1, 2, 3, 4, 5]), label_lengths=torch.tensor([2, 3]), indices=[0, 1])
    out = model(video, mask, torch.tensor([n, n]), **method.forward_options)
    return method, model, out, batch


def ctc(out, head, batch):
    return ctc_loss(out.heads[head], out.lengths, batch.labels, batch.label_lengths).loss


def test_baseline_is_ctc_on_the_sequence_head():
    method, model, out, batch = setup("baseline")
    res = method.loss(model, out, batch)
    assert set(res.parts) == {"ctc_seq"}
    assert torch.isclose(res.total, WEIGHTS["ctc_seq"] * ctc(out, "seq", batch))


def test_vac_adds_conv_ctc_and_visual_alignment():
    method, model, out, batch = setup("vac")
    res = method.loss(model, out, batch)
    expected = (WEIGHTS["ctc_seq"] * ctc(out, "seq", batch) + WEIGHTS["ctc_conv"] * ctc(out, "conv", batch)
                + WEIGHTS["va"] * seq_kd(out.heads["conv"], out.heads["seq"], tau=8.0))
    assert set(res.parts) == {"ctc_seq", "ctc_conv", "va"}
    assert torch.isclose(res.total, expected)


def test_smkd_adds_the_gloss_segmentation_term_only_with_pseudo_labels():
    method, model, out, batch = setup("smkd")
    without = method.loss(model, out, batch)
    assert set(without.parts) == {"ctc_seq", "ctc_conv"}
    targets = torch.randint(0, 6, out.logits.shape[:2])  # (T', B): pseudo-labels as long as the output
    method.load_state_dict({"seg_labels": {0: targets[:, 0], 1: targets[:, 1]}})  # as resumed from a checkpoint
    res = method.loss(model, out, batch)
    seg = label_smoothed_ce(out.heads["conv"], targets, out.lengths, 0.2)
    assert torch.isclose(res.total, without.total + WEIGHTS["seg"] * seg)
    assert set(method.state_dict()["seg_labels"]) == {0, 1}


def test_ctca_total_is_the_weighted_sum_of_every_cckd_term():
    """The first reconstruction (FIRST) and the revised defaults: each term is its documented formula."""
    method, model, out, batch = setup("ctca", FIRST)
    res = method.loss(model, out, batch)
    f, lengths = out.features, out.lengths
    expected = (WEIGHTS["ctc_global"] * ctc(out, "global", batch) + WEIGHTS["ctc_local"] * ctc(out, "local", batch)
                + WEIGHTS["l2g"] * l2g_infonce(f["proj_global"], f["proj_local"], lengths)
                + WEIGHTS["g2l"] * g2l_correlation(f["global"], f["local"], lengths)
                + WEIGHTS["rc"] * (reconstruction(f["rc_global"], f["local"], lengths)
                                   + reconstruction(f["rc_local"], f["global"], lengths))
                + WEIGHTS["cmd"] * cmd_prototype_kl(class_columns(model.global_classifier), model.gloss_embeddings,
                                                    torch.arange(1, 6)))
    assert set(res.parts) == {"ctc_global", "ctc_local", "l2g", "g2l", "rc", "cmd"}
    assert torch.isclose(res.total, expected, rtol=1e-5)

    method, model, out, batch = setup("ctca")
    res = method.loss(model, out, batch)
    f, lengths, red = out.features, out.lengths, "sample_sum"
    aligned = gloss_alignment(out.heads["global"], lengths, batch.labels, batch.label_lengths)
    expected = (WEIGHTS["ctc_global"] * ctc(out, "global", batch) + WEIGHTS["ctc_local"] * ctc(out, "local", batch)
                + WEIGHTS["l2g"] * l2g_infonce(f["proj_global"], f["proj_local"], lengths, negatives="video",
                                               reduction=red)
                + WEIGHTS["g2l"] * g2l_correlation(f["global"], f["local"], lengths, reduction=red, form="pairwise")
                + WEIGHTS["rc"] * (reconstruction(f["rc_global"], f["local"], lengths, reduction=red)
                                   + reconstruction(f["rc_local"], f["global"], lengths, reduction=red))
                + WEIGHTS["cmd"] * cmd_feature_kl(f["proj_cmd"], model.gloss_embeddings, aligned, lengths))
    assert torch.isclose(res.total, expected, rtol=1e-5)


@pytest.mark.parametrize("term", ["l2g", "g2l", "rc", "cmd"])
def test_each_cckd_toggle_removes_exactly_its_term(term):
    full_method, full_model, out, batch = setup("ctca")
    full = full_method.loss(full_model, out, batch)
    method, model, out2, batch2 = setup("ctca", **{term: False})
    res = method.loss(model, out2, batch2)
    assert term not in res.parts and set(full.parts) - set(res.parts) == {term}
    if term == "l2g":
        assert "proj_local" not in out2.features  # the switched-off term's modules are not even run
    if term == "rc":
        assert "rc_global" not in out2.features
    assert torch.isclose(res.total, full.total - WEIGHTS[term] * torch.tensor(full.parts[term]), rtol=1e-5)


def test_vac_distillation_trains_the_conv_head_not_its_teacher():
    method, model, out, batch = setup("vac", weights={**WEIGHTS, "ctc_seq": 0.0, "ctc_conv": 0.0})
    method.loss(model, out, batch).total.backward()  # only the VA term is left
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.classifier.parameters())
    assert model.conv_classifier.weight.grad.abs().sum() > 0


def test_the_schedule_is_multistep_and_smkd_adds_its_decouple_stage():
    common = {"train": {"epochs": 6, "lr": 0.1, "milestones": [2, 4], "gamma": 0.5}, "tam": {"depth": 3}}
    base = make_method(parse_params(common))
    assert base.epochs() == 6
    assert [base.lr_at(e) for e in range(6)] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    smkd = make_method(parse_params({**common, "model": {"method": "smkd"},
                                     "smkd": {"gsba_start": 1, "decouple_epochs": 2, "decouple_lr": 1e-4}}))
    assert smkd.epochs() == 8
    assert [smkd.lr_at(e) for e in range(8)] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 1e-4, 1e-4]


def test_model_method_values_come_from_the_registry():
    from ctca.config import ConfigError
    from ctca.methods import method_names, register, unregister

    with pytest.raises(ConfigError, match="model.method='mine' is invalid; allowed: 'baseline', 'vac', 'smkd', 'ctca'"):
        parse_params({"model": {"method": "mine"}})
    register("mine", "ctca.methods.baseline:Baseline")
    try:
        assert "mine" in method_names()
        assert parse_params({"model": {"method": "mine"}}).model.method == "mine"
    finally:
        unregister("mine")


class HalfCTC(Baseline):
    """A trivial method from outside ctca: plain CTC at half weight, with a counter kept in the checkpoint."""

    name = "half-ctc"

    def __init__(self, params):
        super().__init__(params)
        self.epochs_started = 0

    def on_epoch_start(self, model, epoch):
        self.epochs_started += 1
        return {"epochs_started": self.epochs_started}

    def extra_terms(self, model, out, batch):
        res = ctc_loss(out.heads["seq"], out.lengths, batch.labels, batch.label_lengths)
        return {"half": (res.loss, -0.5)}

    def state_dict(self):
        return {"epochs_started": self.epochs_started}

    def load_state_dict(self, state):
        self.epochs_started = state["epochs_started"]


def test_a_method_registered_from_outside_trains_through_fit(tiny_clips, tmp_path):
    from conftest import TINY_PARAMS

    from ctca.checkpoint import load_checkpoint
    from ctca.methods import register, unregister
    from ctca.train import fit

    register("half-ctc", HalfCTC)
    try:
        params = parse_params({**TINY_PARAMS, "model": {"method": "half-ctc"},
                               "train": {**TINY_PARAMS["train"], "epochs": 1}})
        result = fit(params, tiny_clips, tmp_path / "ckpt", progress=False)
    finally:
        unregister("half-ctc")
    (epoch,) = result.history
    assert epoch["epochs_started"] == 1
    assert epoch["loss_half"] == pytest.approx(epoch["loss_ctc_seq"])  # the same CTC, logged under its name
    assert epoch["train_loss"] == pytest.approx(0.5 * epoch["loss_ctc_seq"])  # 1·CTC − 0.5·CTC
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["method_state"] == {"epochs_started": 1}
