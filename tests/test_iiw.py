"""IIW estimators (ctca.iiw) against exact test vectors (docs/iiw.md#tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctca.data.loader import collate
from ctca.iiw import (
    IIWReport,
    ctc_iiw,
    delta_norms,
    directional_derivatives,
    estimate,
    group_tensors,
    iiw_subset,
    snapshot,
)
from ctca.losses.ctc import ctc_loss
from ctca.models.io import build_recognizer


def _linear_regression() -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    lin = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, 0.5]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    return lin, x, y


def test_analytic_linear_regression():
    lin, x, y = _linear_regression()
    tensors = group_tensors({"lin": lin})
    theta0 = {"lin.weight": torch.zeros(1, 2, dtype=torch.float64)}
    s, names, skipped = directional_derivatives(lambda i: 0.5 * (lin(x[i]) - y[i]).square().sum(), range(3),
                                                tensors, theta0)
    assert names == ["lin.weight"] and skipped == []
    np.testing.assert_allclose(s[:, 0], [-0.25, 1.0, -1.0], rtol=0, atol=1e-15)
    est = estimate(s, names, {"lin.weight": "lin"}, n=3, official_batches=[[0, 1, 2]], official_batch=3)
    for g in ("lin", "all"):
        assert est[g]["fisher_group"] == pytest.approx(2.0625, rel=1e-15)
        assert est[g]["fisher_blockdiag"] == pytest.approx(2.0625, rel=1e-15)
        assert est[g]["official"] == pytest.approx(1 / 144, rel=1e-14)
        assert est[g]["official_k"] == pytest.approx(1 / 144, rel=1e-14)
        assert est[g]["mu"] ** 2 + est[g]["sigma2"] == pytest.approx(0.6875, rel=1e-15)
        assert est[g]["n_samples"] == 3
    assert delta_norms(tensors, theta0)["lin"] == pytest.approx(math.sqrt(0.5))


def test_projection_identity():
    g = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    d = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert float(d @ torch.outer(g, g) @ d) == pytest.approx(float(d @ g) ** 2, rel=1e-13)


class _TwoTensors(nn.Module):
    """loss_i = α_i·a + β_i·b: per-sample gradients known by construction."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor([2.0], dtype=torch.float64))


def test_group_vs_blockdiag_by_hand():
    m = _TwoTensors()
    tensors = group_tensors({"g": m}, "all")
    theta0 = {"g.a": torch.zeros(1, dtype=torch.float64), "g.b": torch.zeros(1, dtype=torch.float64)}
    alpha, beta = [1.0, 2.0], [1.0, -1.0]
    s, names, _ = directional_derivatives(lambda i: alpha[i] * m.a.sum() + beta[i] * m.b.sum(), [0, 1], tensors, theta0)
    # Δ = (1, 2): s_a = (1, 2), s_b = (2, -2); group sums (3, 0)
    np.testing.assert_array_equal(s, [[1.0, 2.0], [2.0, -2.0]])
    est = estimate(s, names, dict.fromkeys(names, "g"), n=2, official_batches=[[0], [1]], official_batch=1)["g"]
    assert est["fisher_group"] == 2 * (9 + 0) / 2  # 9
    assert est["fisher_blockdiag"] == 2 * ((1 + 4) / 2 + (4 + 4) / 2)  # 13
    assert est["fisher_group"] != est["fisher_blockdiag"] and est["fisher_group"] >= 0
    assert est["official"] == (3 / 2) ** 2 + 0.0  # M = 2: ((1+2)/2)² + ((2-2)/2)²
    assert est["mu"] == 1.5 and est["sigma2"] == 2.25
    assert est["fisher_group_se"] == pytest.approx(2 * np.std([9.0, 0.0], ddof=1) / math.sqrt(2))


def _bn_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)).double()
    x = torch.randn(8, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(x + torch.randn_like(x))  # non-trivial running statistics
    net.eval()
    return net, x, y


def test_zero_when_theta_is_theta0_and_scaling():
    net, x, y = _bn_mlp()
    tensors = group_tensors({"hidden": net[:2], "out": net[4]}, "all")

    def loss(i: int) -> torch.Tensor:
        return F.cross_entropy(net(x[i : i + 1]), y[i : i + 1])

    batches = [[0, 1], [2, 2], [5, 7]]
    s0, names, _ = directional_derivatives(loss, range(8), tensors, snapshot(tensors))
    assert not s0.any()
    group_of = {n: n.split(".")[0] for n in names}
    for stats in estimate(s0, names, group_of, n=8, official_batches=batches).values():
        assert all(v == 0 for k, v in stats.items() if k != "n_samples")
    assert set(delta_norms(tensors, snapshot(tensors)).values()) == {0.0}

    flat = {n: p for g in tensors.values() for n, p in g.items()}
    gen = torch.Generator().manual_seed(2)
    delta = {n: 0.1 * torch.randn(p.shape, dtype=torch.float64, generator=gen) for n, p in flat.items()}
    c = 3.0
    ests = []
    for scale in (1.0, c):  # θ fixed (so are the gradients); θ0 = θ − scale·Δ
        theta0 = {n: p.detach() - scale * delta[n] for n, p in flat.items()}
        s, _, _ = directional_derivatives(loss, range(8), tensors, theta0)
        ests.append(estimate(s, names, group_of, n=8, official_batches=batches))
    for g, stats in ests[0].items():
        for k in ("fisher_group", "fisher_blockdiag", "official", "official_k", "sigma2"):
            assert stats[k] > 0
            assert ests[1][g][k] == pytest.approx(c**2 * stats[k], rel=1e-12)


def test_eval_batch_mean_equals_mean_of_per_sample():
    net, x, y = _bn_mlp()
    tensors = group_tensors({"hidden": net[:2], "out": net[4]}, "all")
    gen = torch.Generator().manual_seed(3)
    theta0 = {n: p.detach() + 0.05 * torch.randn(p.shape, dtype=torch.float64, generator=gen)
              for g in tensors.values() for n, p in g.items()}
    s, _, _ = directional_derivatives(lambda i: F.cross_entropy(net(x[i : i + 1]), y[i : i + 1]), range(8),
                                      tensors, theta0)
    s_batch, _, _ = directional_derivatives(lambda _: F.cross_entropy(net(x), y), [0], tensors, theta0)
    np.testing.assert_allclose(s.mean(axis=0), s_batch[0], rtol=1e-12, atol=1e-15)


class _OfficialMLP(nn.Module):
    """The reference ``MLP(num_class=3, activation='relu', layers=[4])``: Linear(784→4) → ReLU → Linear(4→3)."""

    def __init__(self):
        super().__init__()
        self.hidden_net = nn.Sequential(nn.Linear(784, 4), nn.ReLU())
        self.dense_final = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_final(self.hidden_net(x))


def test_official_code_parity_mlp():
    n, d = 60, 784
    nn_ = np.arange(n, dtype=np.float64)[:, None]
    dd = np.arange(d, dtype=np.float64)[None, :]
    x = torch.from_numpy(np.sin(0.013 * (nn_ + 1) * (dd + 1)))
    y = torch.from_numpy((7 * np.arange(n)) % 3)
    i, j, c = np.arange(4)[:, None], np.arange(784)[None, :], np.arange(3)[:, None]
    mlp = _OfficialMLP().double()
    with torch.no_grad():
        mlp.hidden_net[0].weight.copy_(torch.from_numpy(0.05 * np.cos(0.7 * i + 0.011 * j + 0.3)))
        mlp.hidden_net[0].bias.copy_(torch.from_numpy(0.01 * (np.arange(4) + 1.0)))
        mlp.dense_final.weight.copy_(torch.from_numpy(0.3 * np.sin(1.3 * c + 0.9 * np.arange(4)[None, :] + 0.1)))
        mlp.dense_final.bias.copy_(torch.from_numpy(0.02 * np.arange(3.0)))
    tensors = group_tensors({"mlp": mlp}, "official")
    assert list(tensors["mlp"]) == ["mlp.hidden_net.0.weight", "mlp.dense_final.weight"]
    theta0 = {k: 0.5 * p.detach() for k, p in tensors["mlp"].items()}
    s, names, skipped = directional_derivatives(lambda k: F.cross_entropy(mlp(x[k : k + 1]), y[k : k + 1]),
                                                range(n), tensors, theta0)
    assert s.shape == (60, 2) and not skipped
    per_tensor = {name: name for name in names}

    rs = np.random.RandomState(0)  # the official RNG sequence after np.random.seed(0)
    idx = np.arange(n)
    rs.shuffle(idx)
    rng_batches = [rs.choice(idx, 12).tolist() for _ in range(10)]
    sequential = [list(range(k, k + 12)) for k in range(0, n, 12)]
    official = estimate(s, names, per_tensor, n=n, official_batches=rng_batches, official_batch=12)
    all_sample = estimate(s, names, per_tensor, n=n, official_batches=sequential, official_batch=12)
    golden = {
        "official": (5.044697396818808e-04, 5.645085414538861e-04),
        "all_sample": (2.541715099464268e-04, 2.575568331447381e-04),
        "mean_s2": (1.630862822887023e-02, 1.652227493435936e-02),
        "fisher": (0.97851769, 0.99133650),
        "seq_minibatch": (1.2216516789631076e-03, 1.2364418520393237e-03),
    }
    for col, name in enumerate(names):
        assert official[name]["official"] == pytest.approx(golden["official"][col], rel=1e-12)
        assert all_sample[name]["official"] == pytest.approx(golden["all_sample"][col], rel=1e-12)
        assert np.mean(s[:, col] ** 2) == pytest.approx(golden["mean_s2"][col], rel=1e-12)
        assert official[name]["fisher_group"] == pytest.approx(golden["fisher"][col], rel=1e-8)
        assert official[name]["fisher_blockdiag"] == official[name]["fisher_group"]
        seq = np.mean([s[b, col].mean() ** 2 for b in sequential])
        assert seq == pytest.approx(golden["seq_minibatch"][col], rel=1e-12)
    assert official["all"]["official"] == pytest.approx(sum(golden["official"]), rel=1e-12)
    assert official["all"]["fisher_blockdiag"] == pytest.approx(sum(golden["fisher"]), rel=1e-8)


class _SharedTam(nn.Module):
    def __init__(self, fc: nn.Module):
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3)
        self.fc = fc  # VAC's shared classifier: the same object as the model's classifier


def test_groups_by_object_shared_classifier():
    cls = nn.Linear(4, 5)
    tam = _SharedTam(cls)
    g = group_tensors({"classifier": cls, "tam": tam})
    assert list(g["classifier"]) == ["classifier.weight"] and list(g["tam"]) == ["tam.conv.weight"]
    assert g["classifier"]["classifier.weight"] is cls.weight
    g_all = group_tensors({"classifier": cls, "tam": tam}, "all")
    assert list(g_all["tam"]) == ["tam.conv.weight", "tam.conv.bias"]
    assert sum(len(v) for v in g_all.values()) == 4  # each shared tensor counted once
    g_rev = group_tensors({"tam": tam, "classifier": cls})  # the first group wins
    assert list(g_rev["tam"]) == ["tam.conv.weight", "tam.fc.weight"] and g_rev["classifier"] == {}
    with pytest.raises(ValueError, match="tensor_filter"):
        group_tensors({"tam": tam}, "biases")


def test_iiw_subset_and_estimate_defaults():
    sub = iiw_subset(100, 10, seed=4)
    assert sub == sorted(set(sub)) and len(sub) == 10 and sub == iiw_subset(100, 10, seed=4)
    assert iiw_subset(5, 10, seed=0) == [0, 1, 2, 3, 4]
    s = np.random.default_rng(0).normal(size=(9, 3))
    names = ["a.x", "a.y", "b.x"]
    group_of = {"a.x": "a", "a.y": "a", "b.x": "b"}
    e1 = estimate(s, names, group_of, n=20, official_batch=2, official_k=10, seed=1)
    assert e1 == estimate(s, names, group_of, n=20, official_batch=2, official_k=10, seed=1)
    batches = np.random.default_rng(1).integers(0, 9, size=(10, 2))
    mean_sum = sum(s[b].mean(axis=0) for b in batches)
    assert e1["a"]["official"] == pytest.approx(((mean_sum[:2] / 10) ** 2).sum(), rel=1e-12)  # M = ceil(20/2)
    assert e1["b"]["official_k"] == pytest.approx((mean_sum[2] / 10) ** 2, rel=1e-12)
    assert e1["all"]["fisher_group"] == pytest.approx(20 * np.mean(s.sum(axis=1) ** 2), rel=1e-12)


class _FakeClips:
    """ClipDataset-like items; clip 2 is too short for its 4 glosses (1 output step after 4x downsampling)."""

    def __init__(self, crop: int = 16):
        gen = torch.Generator().manual_seed(0)
        spec = [(24, [1, 2, 3]), (17, [4, 5]), (2, [1, 2, 3, 4]), (30, [2, 2, 5])]
        self.items = [{"video": torch.randint(0, 256, (t, 3, crop, crop), dtype=torch.uint8, generator=gen),
                       "label": torch.tensor(lab), "id": f"clip{i}", "glosses": tuple(map(str, lab)),
                       "signer": "s0", "index": i} for i, (t, lab) in enumerate(spec)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def _tiny_recognizer() -> nn.Module:
    torch.manual_seed(0)
    return build_recognizer({"arch": "recognizer", "num_classes": 6, "spm_arch": "compact", "spm_channels": [4],
                             "depth": 3, "hidden": 8, "dropout": 0.0})


def test_ctc_iiw_tiny_recognizer():
    model = _tiny_recognizer()
    data = _FakeClips()
    tensors = group_tensors(model.module_groups())
    theta_init = snapshot(tensors)
    model.train()
    model.tam.lstm.dropout = 0.25  # restored after the pass
    with torch.no_grad():  # "training": move every weight
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    rep = ctc_iiw(model, data, range(4), theta_init, n_train=10, official_batch=2, official_k=10, seed=0)
    assert model.training and all(m.training for m in model.modules()) and model.tam.lstm.dropout == 0.25
    assert isinstance(rep, IIWReport) and rep.skipped == 1 and rep.subset == 4 and rep.n == 10
    assert list(rep.groups) == ["spm", "tam", "classifier", "all"]
    for stats in rep.groups.values():
        assert stats["n_samples"] == 3 and stats["delta_norm"] > 0
        assert all(math.isfinite(v) for v in stats.values())
        assert stats["fisher_group"] > 0 and stats["fisher_blockdiag"] > 0
    flat = rep.flat()
    assert flat["iiw_skipped"] == 1 and "iiw_spm_fisher_group" in flat and "iiw_tam_official" in flat
    assert flat["iiw_spm_delta_norm"] == rep.groups["spm"]["delta_norm"]

    model.eval()
    model.tam.lstm.dropout = 0.0
    # the same s by a plain eval-mode loop (ctc_iiw runs the LSTM in train mode with dropout 0, for cuDNN)
    def loss(i: int) -> torch.Tensor | None:
        b = collate([data[i]], model.frame_padding, model.stride)
        out = model(b.video, b.mask, b.lengths)
        res = ctc_loss(out.logits, out.lengths, b.labels, b.label_lengths)
        return None if res.nonfinite else res.loss

    s, names, skipped = directional_derivatives(loss, range(4), tensors, theta_init)
    assert skipped == [2]
    manual = estimate(s, names, {n: n.split(".")[0] for n in names}, n=10, official_batch=2, official_k=10, seed=0)
    for g, stats in manual.items():
        for k, v in stats.items():
            assert rep.groups[g][k] == pytest.approx(v, rel=1e-6), (g, k)
    rep2 = ctc_iiw(model, data, range(4), theta_init, n_train=10, official_batch=2, official_k=10, seed=0)
    assert rep2.groups == rep.groups  # deterministic, bit-identical
    assert not model.training

    rep0 = ctc_iiw(model, data, [0, 1, 3], snapshot(tensors), n_train=10)  # θ = θ0
    assert rep0.skipped == 0
    for stats in rep0.groups.values():
        assert all(v == 0 for k, v in stats.items() if k != "n_samples")

    with pytest.raises(ValueError, match="theta0"):
        ctc_iiw(model, data, [0], theta_init, n_train=10, tensor_filter="all")
