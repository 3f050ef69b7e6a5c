"""Training: CTC loss handling, feasibility rule, and exact resume after a kill mid-epoch."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ctca.losses.ctc import ctc_loss, min_ctc_length
from ctca.train import FitSpec, fit, load_model, model_config, save_model

TESTS = Path(__file__).resolve().parent


def test_min_ctc_length_counts_adjacent_repeats():
    assert min_ctc_length([1, 2, 3]) == 3
    assert min_ctc_length([1, 1, 2, 2, 2]) == 5 + 3
    assert min_ctc_length([]) == 0


def test_ctc_loss_matches_hand_computed_value_and_excludes_infeasible_samples():
    # one frame, two classes, target [1]: the only path is "1", so -log p = -log softmax(logits)[1]
    logits = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]], requires_grad=True)  # (T=1, B=2, C=2)
    labels = torch.tensor([1, 1, 1])
    res = ctc_loss(logits, torch.tensor([1, 1]), labels, torch.tensor([1, 2]))  # sample 2 needs 2+1 frames
    expected = -torch.log_softmax(torch.tensor([0.0, 1.0]), 0)[1]
    assert res.nonfinite == 1
    assert torch.isclose(res.loss, expected)
    assert torch.isinf(res.per_sample[1])
    res.loss.backward()
    assert torch.isfinite(logits.grad).all()


def spec(params, epochs=None):
    t = params.train
    return FitSpec(depth=params.tam.depth, epochs=epochs or t.epochs, lr=t.lr, milestones=t.milestones,
                   gamma=t.gamma, weight_decay=t.weight_decay, seed=t.seed)


def test_fit_checkpoints_and_model_file_round_trip(tiny_params, tiny_clips, tmp_path):
    seen = []
    result = fit(tiny_params, tiny_clips, tmp_path / "ckpt", spec(tiny_params, epochs=2), progress=False,
                 on_epoch=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2]
    assert {"train_loss", "dev_wer", "dev_del", "dev_ins", "dev_loss", "nonfinite_samples"} <= set(seen[0][1])
    assert (tmp_path / "ckpt" / "last.pt").is_file()
    assert 1 <= result.best_epoch <= 2
    cfg = model_config(tiny_params, result.vocab.num_classes, tiny_params.tam.depth)
    save_model(tmp_path / "model.pt", result.model, cfg, result.vocab, {"best_epoch": result.best_epoch})
    model, vocab, ckpt = load_model(tmp_path / "model.pt")
    assert vocab == result.vocab and ckpt["meta"]["best_epoch"] == result.best_epoch
    for (k, v), (k2, v2) in zip(model.state_dict().items(), result.model.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def _child(clips: str, ckpt: str, marker: str) -> None:  # runs in a subprocess that the test kills
    from conftest import TINY_PARAMS

    import ctca.data.loader as loader
    from ctca.config import parse_params

    original = loader.ClipDataset.__getitem__

    def stall_in_second_epoch(self, i):
        if self.epoch >= 1:  # mid-epoch 2: say so, then wait to be killed
            Path(marker).touch()
            time.sleep(600)
        return original(self, i)

    loader.ClipDataset.__getitem__ = stall_in_second_epoch
    params = parse_params(TINY_PARAMS)
    fit(params, Path(clips), Path(ckpt), spec(params), progress=False)


def test_training_resumes_exactly_after_a_kill_mid_epoch(tiny_params, tiny_clips, tmp_path):
    reference = fit(tiny_params, tiny_clips, tmp_path / "uninterrupted", spec(tiny_params), progress=False)

    ckpt, marker = tmp_path / "interrupted", tmp_path / "in-epoch-2"
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); from test_train import _child; "
            f"_child({str(tiny_clips)!r}, {str(ckpt)!r}, {str(marker)!r})")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 300
        while not marker.exists():
            assert child.poll() is None, "training process ended before reaching epoch 2"
            assert time.time() < deadline, "epoch 2 not reached after 300 s"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert torch.load(ckpt / "last.pt", weights_only=False)["epoch"] == 0  # one epoch done, the second cut

    resumed = fit(tiny_params, tiny_clips, ckpt, spec(tiny_params), progress=False)
    assert resumed.resumed_from == 1
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in reference.history]
    assert [h["dev_wer"] for h in resumed.history] == [h["dev_wer"] for h in reference.history]
    for (k, v), (_, v2) in zip(resumed.model.state_dict().items(), reference.model.state_dict().items(),
                               strict=True):
        assert torch.equal(v, v2), k


def test_a_checkpoint_from_other_parameters_is_not_resumed(tiny_params, tiny_clips, tmp_path):
    fit(tiny_params, tiny_clips, tmp_path / "ckpt", spec(tiny_params, epochs=1), progress=False)
    other = FitSpec(**{**spec(tiny_params, epochs=1).__dict__, "lr": 0.01})
    result = fit(tiny_params, tiny_clips, tmp_path / "ckpt", other, progress=False)
    assert result.resumed_from is None and len(result.history) == 1


@pytest.mark.parametrize("depth", [1, 2])
def test_shallow_ladder_rungs_train(tiny_params, tiny_clips, tmp_path, depth):
    result = fit(tiny_params, tiny_clips, tmp_path / "ckpt", FitSpec(depth=depth, epochs=1, lr=0.003),
                 progress=False)
    assert result.model.tam.depth == depth
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)


def test_smkd_resumes_exactly_with_its_pseudo_labels_and_untied_classifiers(tiny_clips, tmp_path, monkeypatch):
    """Interrupted in stage 2 (gloss segmentation), resumed: identical to an uninterrupted three-stage run."""
    from conftest import TINY_PARAMS

    import ctca.data.loader as loader
    from ctca.config import parse_params
    from ctca.train import fit_spec

    params = parse_params({**TINY_PARAMS, "model": {"method": "smkd"}, "iiw": {"interval": 0},
                           "smkd": {"gsba_start": 1, "gsba_every": 1, "radius_every": 1, "decouple_epochs": 1}})
    spec_ = fit_spec(params)
    reference = fit(params, tiny_clips, tmp_path / "ref", spec_, progress=False)
    assert len(reference.history) == params.train.epochs + 1
    assert "loss_seg" in reference.history[-1] and "gsba_radius" in reference.history[1]
    last = torch.load(tmp_path / "ref" / "last.pt", weights_only=False)
    assert not bool(last["model"]["tied"])  # stage 3 untied the classifiers (the best epoch may precede it)

    original = loader.ClipDataset.__getitem__

    def interrupt(self, i):
        if self.train and self.epoch >= 2:
            raise KeyboardInterrupt("stop in epoch 3")
        return original(self, i)

    monkeypatch.setattr(loader.ClipDataset, "__getitem__", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(params, tiny_clips, tmp_path / "cut", spec_, progress=False)
    monkeypatch.setattr(loader.ClipDataset, "__getitem__", original)
    resumed = fit(params, tiny_clips, tmp_path / "cut", spec_, progress=False)
    assert resumed.resumed_from == 2
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in reference.history]
    for (k, v), (_, v2) in zip(resumed.model.state_dict().items(), reference.model.state_dict().items(),
                               strict=True):
        assert torch.equal(v, v2), k


def test_heldout_iiw_prior_is_trained_on_dev_and_leaves_training_unchanged(tiny_clips, tmp_path):
    from conftest import TINY_PARAMS

    from ctca.config import parse_params
    from ctca.train import fit_spec

    def run(prior, name):
        params = parse_params({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 1},
                               "iiw": {"prior": prior, "prior_epochs": 1}})
        return fit(params, tiny_clips, tmp_path / name, fit_spec(params), progress=False)

    init, heldout, again = run("init", "a"), run("heldout", "b"), run("heldout", "c")
    assert init.theta0.keys() == heldout.theta0.keys()
    assert any(not torch.equal(init.theta0[k], heldout.theta0[k]) for k in init.theta0)  # the copy was trained
    assert all(torch.equal(heldout.theta0[k], again.theta0[k]) for k in heldout.theta0)  # deterministic
    # the prior's training does not consume the global RNG: the trained model is the same under both priors
    for (k, v), (_, v2) in zip(init.model.state_dict().items(), heldout.model.state_dict().items(), strict=True):
        assert torch.equal(v, v2), k
    assert init.history[0]["iiw_spm_fisher_group"] != heldout.history[0]["iiw_spm_fisher_group"]
