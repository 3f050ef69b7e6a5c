"""Training: CTC loss handling, exact resume after a kill mid-epoch, and files that load safely."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from conftest import kill_in_epoch_2

from ctca.checkpoint import NotACtcaFile, load_checkpoint
from ctca.losses.ctc import ctc_loss, min_ctc_length
from ctca.models.io import load_model, save_model
from ctca.train import fit

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


def with_train(params, **train):
    return dataclasses.replace(params, train=dataclasses.replace(params.train, **train))


def test_fit_checkpoints_snapshots_and_model_file_round_trip(tiny_params, tiny_clips, tmp_path):
    seen = []
    result = fit(with_train(tiny_params, epochs=2), tiny_clips, tmp_path / "ckpt", progress=False, snapshot_every=1,
                 on_epoch=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2]
    assert {"train_loss", "dev_wer", "dev_del", "dev_ins", "dev_loss", "nonfinite_samples"} <= set(seen[0][1])
    assert (tmp_path / "ckpt" / "last.pt").is_file()
    assert [p.name for p in result.snapshots] == ["epoch_000.pt", "epoch_001.pt", "epoch_002.pt"]
    assert 1 <= result.best_epoch <= 2
    save_model(tmp_path / "model.pt", result.model, result.config, result.vocab, {"best_epoch": result.best_epoch})
    model, vocab, ckpt = load_model(tmp_path / "model.pt")
    assert vocab == result.vocab and ckpt["meta"]["best_epoch"] == result.best_epoch
    for (k, v), (k2, v2) in zip(model.state_dict().items(), result.model.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    final = torch.load(result.snapshots[-1], weights_only=True)  # the weights after the last epoch
    last = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert all(torch.equal(final[k], last["model"][k]) for k in final)


@pytest.mark.parametrize("method", ["baseline", "vac", "smkd", "ctca"])
def test_every_file_training_writes_loads_with_weights_only(tiny_params, tiny_clips, tmp_path, method):
    """Checkpoints (optimizer, RNG states, method state), snapshots and model files hold only plain data."""
    from conftest import TINY_PARAMS

    from ctca.config import parse_params

    params = parse_params({**TINY_PARAMS, "model": {"method": method}, "ctca": {"downsample": "pool4"},
                           "train": {**TINY_PARAMS["train"], "epochs": 2},
                           "smkd": {"gsba_start": 1, "gsba_every": 1, "radius_every": 1, "decouple_epochs": 0}})
    result = fit(params, tiny_clips, tmp_path / "ckpt", progress=False, snapshot_every=1)
    save_model(tmp_path / "model.pt", result.model, result.config, result.vocab, {"best_epoch": result.best_epoch})
    written = sorted(tmp_path.rglob("*.pt"))
    assert len(written) == 1 + 3 + 1  # last.pt, three snapshots, the model file
    for path in written:
        torch.load(path, weights_only=True)  # raises on anything but tensors and plain data
    if method == "smkd":
        assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["method_state"]["seg_labels"]
    # every loss term's gradient ratio at the SPM output, per epoch; plain CTC alone has nothing to compare
    ratios = {k.removeprefix("grad_ratio_") for k in result.history[0] if k.startswith("grad_ratio_")}
    expected = {"baseline": set(), "vac": {"ctc_seq", "ctc_conv", "va"}, "smkd": {"ctc_seq", "ctc_conv"},
                "ctca": {"ctc_global", "ctc_local", "l2g", "g2l", "rc", "cmd"}}[method]
    assert ratios == expected
    assert all(math.isfinite(result.history[0][f"grad_ratio_{k}"]) and result.history[0][f"grad_ratio_{k}"] >= 0
               for k in ratios)


def test_a_file_that_is_not_a_ctca_model_is_a_one_line_error_naming_it(tiny_params, tmp_path):
    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    for name, content in {"evil.pt": Evil(), "dict.pt": {"kind": "something else"}}.items():
        torch.save(content, tmp_path / name)
    (tmp_path / "text.pt").write_text("not a model")
    for name in ("evil.pt", "dict.pt", "text.pt"):
        with pytest.raises(NotACtcaFile) as err:
            load_model(tmp_path / name)
        message = str(err.value)
        assert message.startswith(f"{tmp_path / name}: not a ctca.recognizer file") and "\n" not in message
    assert not (tmp_path / "pwned").exists()  # the pickled code never ran
    with pytest.raises(NotACtcaFile):
        load_checkpoint(tmp_path / "dict.pt")


def _child(clips: str, ckpt: str, marker: str) -> None:  # runs in a subprocess that the test kills
    from conftest import TINY_PARAMS, stall_in_epoch_2

    from ctca.config import parse_params

    stall_in_epoch_2(marker)
    fit(parse_params(TINY_PARAMS), Path(clips), Path(ckpt), progress=False)


def test_training_resumes_exactly_after_a_kill_mid_epoch(tiny_params, tiny_clips, tmp_path):
    reference = fit(tiny_params, tiny_clips, tmp_path / "uninterrupted", progress=False)

    ckpt, marker = tmp_path / "interrupted", tmp_path / "in-epoch-2"
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); from test_train import _child; "
            f"_child({str(tiny_clips)!r}, {str(ckpt)!r}, {str(marker)!r})")
    kill_in_epoch_2(code, marker)
    assert load_checkpoint(ckpt / "last.pt")["epoch"] == 0  # one epoch done, the second cut

    resumed = fit(tiny_params, tiny_clips, ckpt, progress=False)
    assert resumed.resumed_from == 1
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in reference.history]
    assert [h["dev_wer"] for h in resumed.history] == [h["dev_wer"] for h in reference.history]
    for (k, v), (_, v2) in zip(resumed.model.state_dict().items(), reference.model.state_dict().items(),
                               strict=True):
        assert torch.equal(v, v2), k


def test_training_resumes_exactly_from_a_checkpoint_within_an_epoch(tiny_params, tiny_clips, tmp_path, monkeypatch):
    """train.checkpoint_steps: cut in the middle of epoch 2, resumed from the step checkpoint before the cut,
    the run skips the batches already done and ends identical to an uninterrupted one."""
    import ctca.data.loader as loader

    original, items, loaded, reference_items = loader.ClipDataset.__getitem__, [], [], []

    def record(into):
        def getitem(self, i):
            if self.train and self.epoch == 1:
                into.append(i)
            return original(self, i)
        return getitem

    monkeypatch.setattr(loader.ClipDataset, "__getitem__", record(reference_items))
    reference = fit(tiny_params, tiny_clips, tmp_path / "uninterrupted", progress=False)
    params = with_train(tiny_params, checkpoint_steps=2)

    def interrupt(self, i):
        if self.train and self.epoch == 1:
            items.append(i)
            if len(items) > 3 * params.loader.batch_size:  # in the 4th (last) batch of epoch 2
                raise KeyboardInterrupt("cut")
        return original(self, i)

    monkeypatch.setattr(loader.ClipDataset, "__getitem__", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(params, tiny_clips, tmp_path / "cut", progress=False)
    ckpt = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert ckpt["epoch"] == 0 and ckpt["partial"]["step"] == 2  # 2 of epoch 2's 4 batches done

    monkeypatch.setattr(loader.ClipDataset, "__getitem__", record(loaded))
    resumed = fit(params, tiny_clips, tmp_path / "cut", progress=False)
    assert resumed.resumed_from == 1
    # the batches done before the checkpoint are not loaded again; the rest come in the same order
    assert loaded == reference_items[2 * params.loader.batch_size:]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in reference.history]
    assert [h["dev_wer"] for h in resumed.history] == [h["dev_wer"] for h in reference.history]
    for (k, v), (_, v2) in zip(resumed.model.state_dict().items(), reference.model.state_dict().items(),
                               strict=True):
        assert torch.equal(v, v2), k


def test_a_checkpoint_from_other_parameters_is_not_resumed(tiny_params, tiny_clips, tmp_path):
    one_epoch = with_train(tiny_params, epochs=1)
    fit(one_epoch, tiny_clips, tmp_path / "ckpt", progress=False)
    again = fit(with_train(one_epoch, threads=2), tiny_clips, tmp_path / "ckpt", progress=False)
    assert again.resumed_from == 1  # train.threads changes the speed, not what is learnt: resumed (done)
    result = fit(with_train(one_epoch, lr=0.01), tiny_clips, tmp_path / "ckpt", progress=False)
    assert result.resumed_from is None and len(result.history) == 1


@pytest.mark.parametrize("depth", [1, 2])
def test_shallow_ladder_rungs_train(tiny_params, tiny_clips, tmp_path, depth):
    params = dataclasses.replace(with_train(tiny_params, epochs=1, lr=0.003),
                                 tam=dataclasses.replace(tiny_params.tam, depth=depth))
    result = fit(params, tiny_clips, tmp_path / "ckpt", progress=False)
    assert result.model.tam.depth == depth
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)


def test_smkd_resumes_exactly_with_its_pseudo_labels_and_untied_classifiers(tiny_clips, tmp_path, monkeypatch):
    """Interrupted in stage 2 (gloss segmentation), resumed: identical to an uninterrupted three-stage run."""
    from conftest import TINY_PARAMS

    import ctca.data.loader as loader
    from ctca.config import parse_params

    params = parse_params({**TINY_PARAMS, "model": {"method": "smkd"}, "iiw": {"interval": 0},
                           "smkd": {"gsba_start": 1, "gsba_every": 1, "radius_every": 1, "decouple_epochs": 1}})
    reference = fit(params, tiny_clips, tmp_path / "ref", progress=False)
    assert len(reference.history) == params.train.epochs + 1
    assert "loss_seg" in reference.history[-1] and "gsba_radius" in reference.history[1]
    last = load_checkpoint(tmp_path / "ref" / "last.pt")
    assert not bool(last["model"]["tied"])  # stage 3 untied the classifiers (the best epoch may precede it)

    original = loader.ClipDataset.__getitem__

    def interrupt(self, i):
        if self.train and self.epoch >= 2:
            raise KeyboardInterrupt("stop in epoch 3")
        return original(self, i)

    monkeypatch.setattr(loader.ClipDataset, "__getitem__", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(params, tiny_clips, tmp_path / "cut", progress=False)
    monkeypatch.setattr(loader.ClipDataset, "__getitem__", original)
    resumed = fit(params, tiny_clips, tmp_path / "cut", progress=False)
    assert resumed.resumed_from == 2
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in reference.history]
    for (k, v), (_, v2) in zip(resumed.model.state_dict().items(), reference.model.state_dict().items(),
                               strict=True):
        assert torch.equal(v, v2), k


def test_heldout_iiw_prior_is_trained_on_dev_and_leaves_the_global_rng_alone(tiny_params, tiny_clips, tmp_path):
    from ctca.data.cache import ClipStore
    from ctca.iiw import iiw_prior
    from ctca.models.io import build_recognizer

    result = fit(with_train(tiny_params, epochs=1), tiny_clips, tmp_path / "ckpt", progress=False, snapshot_every=0)
    initial = build_recognizer(result.config)
    initial.load_state_dict(torch.load(result.snapshots[0], weights_only=True))
    dev = ClipStore(tiny_clips).split("dev")

    def prior(kind):
        params = dataclasses.replace(tiny_params, iiw=dataclasses.replace(tiny_params.iiw, prior=kind, prior_epochs=1))
        return iiw_prior(initial, dev, params)

    state = torch.get_rng_state()
    init, heldout, again = prior("init"), prior("heldout"), prior("heldout")
    assert torch.equal(torch.get_rng_state(), state)  # the prior's training runs on a forked RNG
    assert init.keys() == heldout.keys()
    assert any(not torch.equal(init[k], heldout[k]) for k in init)  # the copy was trained
    assert all(torch.equal(heldout[k], again[k]) for k in heldout)  # deterministic
    assert all(torch.equal(init[k], v) for k, v in initial.state_dict().items() if k in init)  # initial untouched


def test_the_resume_fingerprint_covers_the_code_the_run_uses_only(tiny_params):
    from ctca.config import parse_params
    from ctca.methods import make_method
    from ctca.train import run_code

    baseline = {str(p) for p in run_code(make_method(tiny_params))}
    assert {"ctca/train.py", "ctca/methods/base.py", "ctca/methods/baseline.py", "ctca/losses/ctc.py",
            "ctca/models/recognizer.py", "ctca/data/loader.py"} <= baseline
    # editing the report, the study, another method or the IIW measurement keeps a checkpoint resumable
    assert not {"ctca/report.py", "ctca/study.py", "ctca/compare.py", "ctca/iiw.py", "ctca/methods/smkd.py",
                "ctca/losses/cckd.py"} & baseline
    ctca = {str(p) for p in run_code(make_method(parse_params({"model": {"method": "ctca"}})))}
    assert {"ctca/methods/ctca.py", "ctca/losses/cckd.py"} <= ctca and "ctca/methods/smkd.py" not in ctca
