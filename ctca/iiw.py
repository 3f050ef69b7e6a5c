"""Information stored in weights (IIW, PAC-Bayes IB, Wang et al. ICLR 2022) of a CTC recognizer's module groups.

Spec: ``docs/iiw.md``. With Δθ = θ − θ0 and the per-sample directional derivatives

    s_{i,l} = Δθ_lᵀ ∇_{θ_l} ℓ_i          (sample i of the fixed subset, weight tensor l, float64)

computed once per evaluation by a per-sample backward loop (exact, works with CTC and
cuDNN LSTMs), every estimator is a function of the (T1, L) matrix ``s``. For a group G of tensors:

* ``fisher_group``     = n · mean_i (Σ_{l∈G} s_il)²   -- **the paper's Eq. 15** (per-sample empirical Fisher,
  full within-group block; Δθᵀ(g gᵀ)Δθ = (Δθ·g)²).
* ``fisher_blockdiag`` = n · Σ_{l∈G} mean_i s_il²       -- Eq. 15 with a block-diagonal (per-tensor) Fisher.
* ``official``         = Σ_{l∈G} ((1/M) Σ_{k=1..K} mean_{i∈B_k} s_il)²,  M = ceil(n / b)  -- **the official
  code's estimator** (``compute_information_bp_fast``: the square of the summed mean gradient of K = 10
  with-replacement batches of size b, per "weight" tensor, no factor n), exact in eval mode because the
  batch-mean gradient projected on Δθ is the batch mean of s. ``official_k``: the same with 1/K.
* ``mu``, ``sigma2``: mean and (population) variance of Σ_{l∈G} s_il, so mean s² = mu² + sigma2;
  ``*_se``: standard errors from the per-sample values, n · std(x) / sqrt(T1).

The paper's and the code's values differ by orders of magnitude (docs/iiw.md#estimators): say which one a plot shows.
Groups are assigned by module object (``model.module_groups()``), never by name prefix.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ctca.data.loader import AugmentConfig, ClipDataset, collate, make_loader
from ctca.losses.ctc import ctc_loss

TENSOR_FILTERS = ("official", "all")  # official: parameters whose name contains "weight" (no biases)
ALL = "all"  # the pseudo-group of every tensor in the estimate
IIW_GROUPS = ("spm", "tam", "classifier")  # the inference module groups, in the order reports show them


class ClipItems(Protocol):
    """What ``ctc_iiw`` reads: ``ClipDataset`` (eval transform) or any indexable of its item dicts."""

    def __getitem__(self, i: int) -> dict[str, Any]: ...


def group_tensors(groups: Mapping[str, nn.Module], tensor_filter: str = "official") -> dict[str, dict[str, nn.Parameter]]:
    """group -> {"<group>.<parameter name in its module>": parameter}, assigned by module object.

    ``official`` keeps the parameters whose name contains "weight" (conv/linear weights, BN γ, LSTM
    ``weight_*``; no biases), as the reference code; ``all`` keeps every parameter. A parameter reachable
    from two groups (the same object, e.g. a shared classifier) is counted once, in the first group.
    """
    if tensor_filter not in TENSOR_FILTERS:
        raise ValueError(f"tensor_filter={tensor_filter!r}; allowed: {', '.join(TENSOR_FILTERS)}")
    seen: set[int] = set()
    out: dict[str, dict[str, nn.Parameter]] = {}
    for group, module in groups.items():
        if group == ALL:
            raise ValueError(f"group name {ALL!r} is reserved for the whole-model estimate")
        out[group] = {}
        for name, p in module.named_parameters():
            if id(p) in seen or (tensor_filter == "official" and "weight" not in name):
                continue
            seen.add(id(p))
            out[group][f"{group}.{name}"] = p
    return out


def _flat(tensors: Mapping[str, Mapping[str, nn.Parameter]]) -> dict[str, nn.Parameter]:
    return {name: p for group in tensors.values() for name, p in group.items()}


def snapshot(tensors: Mapping[str, Mapping[str, nn.Parameter]]) -> dict[str, torch.Tensor]:
    """θ0: detached fp32 clones keyed by tensor name (float64 parameters stay float64), on their device."""
    return {name: p.detach().to(torch.float64 if p.dtype == torch.float64 else torch.float32, copy=True)
            for name, p in _flat(tensors).items()}


def _deltas(params: Mapping[str, nn.Parameter], theta0: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Δθ per tensor in float64 (the difference of two fp32 values is exact in float64)."""
    if set(params) != set(theta0):
        missing, extra = sorted(set(params) - set(theta0)), sorted(set(theta0) - set(params))
        raise ValueError(f"theta0 does not match the tensors: missing {missing[:5]}, unexpected {extra[:5]}")
    return {n: p.detach().double() - theta0[n].to(p.device, torch.float64) for n, p in params.items()}


def directional_derivatives(loss_fn: Callable[[int], torch.Tensor | None], indices: Sequence[int],
                            tensors: Mapping[str, Mapping[str, nn.Parameter]], theta0: Mapping[str, torch.Tensor],
                            ) -> tuple[np.ndarray, list[str], list[int]]:
    """Route A: s[i, l] = Δθ_l · ∇_{θ_l} loss_fn(i), one backward per sample, dot products in float64.

    A sample whose loss is None or not finite, or whose gradient is not finite, is skipped. Only the
    listed tensors' gradients are computed (``torch.autograd.grad``; no ``.grad`` is touched). Returns
    s (n_ok, L) float64, the tensor names (column order) and the skipped indices.
    """
    params = _flat(tensors)
    names = list(params)
    deltas = _deltas(params, theta0)
    live = [n for n in names if params[n].requires_grad]  # frozen tensors get s = 0
    live_cols = [names.index(n) for n in live]
    rows: list[np.ndarray] = []
    skipped: list[int] = []
    for i in indices:
        loss = loss_fn(int(i))
        if loss is None or not bool(torch.isfinite(loss.detach()).all()):
            skipped.append(int(i))
            continue
        row = torch.zeros(len(names), dtype=torch.float64)
        if loss.requires_grad and live:
            grads = torch.autograd.grad(loss, [params[n] for n in live], allow_unused=True)
            dots = [torch.dot(deltas[n].reshape(-1), g.detach().reshape(-1).double()) if g is not None
                    else deltas[n].new_zeros(()) for n, g in zip(live, grads, strict=True)]
            row[live_cols] = torch.stack(dots).cpu()
        if not bool(torch.isfinite(row).all()):
            skipped.append(int(i))
            continue
        rows.append(row.numpy())
    s = np.stack(rows) if rows else np.zeros((0, len(names)), dtype=np.float64)
    return s, names, skipped


def _stats(s: np.ndarray, cols: list[int], n: int, batches: Sequence[Sequence[int]], m: int) -> dict[str, float]:
    t1 = s.shape[0]
    nan = float("nan")
    if t1 == 0:
        keys = ("fisher_group", "fisher_group_se", "fisher_blockdiag", "fisher_blockdiag_se", "official",
                "official_k", "mu", "sigma2")
        return {**dict.fromkeys(keys, nan), "n_samples": 0.0}
    sg = s[:, cols]
    total = sg.sum(axis=1)
    x_group, x_block = total**2, (sg**2).sum(axis=1)

    def se(x: np.ndarray) -> float:
        return float(n * x.std(ddof=1) / math.sqrt(t1)) if t1 > 1 else nan

    batch_sum = np.sum([sg[list(b)].mean(axis=0) for b in batches], axis=0)  # Σ_k mean_{B_k} s_l, per tensor
    return {
        "fisher_group": float(n * x_group.mean()), "fisher_group_se": se(x_group),
        "fisher_blockdiag": float(n * x_block.mean()), "fisher_blockdiag_se": se(x_block),
        "official": float(((batch_sum / m) ** 2).sum()),
        "official_k": float(((batch_sum / len(batches)) ** 2).sum()),
        "mu": float(total.mean()), "sigma2": float(total.var()), "n_samples": float(t1),
    }


def estimate(s: np.ndarray, names: Sequence[str], group_of: Mapping[str, str], n: int,
             official_batches: Sequence[Sequence[int]] | None = None, official_batch: int = 2, official_k: int = 10,
             seed: int = 0) -> dict[str, dict[str, float]]:
    """Every estimator (module docstring) per group of ``group_of`` (tensor name -> group) and for "all".

    ``n``: training-set size (the factor n of Eq. 15; M = ceil(n / official_batch)). ``official_batches``:
    explicit row-index batches of ``s`` (parity with the reference RNG; K = their number); else
    ``official_k`` batches of ``official_batch`` rows drawn with replacement by ``default_rng(seed)``.
    """
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != len(names):
        raise ValueError(f"s has shape {s.shape}; expected (samples, {len(names)})")
    if n < 1 or official_batch < 1 or official_k < 1:
        raise ValueError(f"n={n}, official_batch={official_batch}, official_k={official_k}: expected >= 1")
    if official_batches is None:
        rng = np.random.default_rng(seed)
        batches = rng.integers(0, s.shape[0], size=(official_k, official_batch)).tolist() if len(s) else []
    else:
        batches = [list(b) for b in official_batches]
        if not batches or any(not b for b in batches):
            raise ValueError("official_batches: expected a non-empty list of non-empty row-index batches")
    m = math.ceil(n / official_batch)
    groups: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        groups.setdefault(group_of[name], []).append(j)
    groups[ALL] = list(range(len(names)))
    return {g: _stats(s, cols, n, batches, m) for g, cols in groups.items()}


def delta_norms(tensors: Mapping[str, Mapping[str, nn.Parameter]], theta0: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """‖Δθ‖ per group (and "all"), in float64."""
    deltas = _deltas(_flat(tensors), theta0)
    sq = {g: sum(float(deltas[n].square().sum()) for n in group) for g, group in tensors.items()}
    return {**{g: math.sqrt(v) for g, v in sq.items()}, ALL: math.sqrt(sum(sq.values()))}


def iiw_subset(n_train: int, size: int, seed: int) -> list[int]:
    """A fixed, seeded subset of training indices (sorted), of size min(size, n_train), reused every epoch."""
    if n_train < 0 or size < 0:
        raise ValueError(f"n_train={n_train}, size={size}: expected non-negative integers")
    picked = np.random.default_rng(seed).choice(n_train, size=min(size, n_train), replace=False)
    return sorted(int(i) for i in picked)


@dataclass
class IIWReport:
    groups: dict[str, dict[str, float]]  # estimate() per group (and "all") plus "delta_norm"
    skipped: int  # samples without a finite loss/gradient (e.g. too short for CTC)
    n: int  # training-set size used as n
    subset: int  # samples attempted
    seconds: float

    def flat(self, prefix: str = "iiw_") -> dict[str, float]:
        """{"iiw_spm_fisher_group": ..., "iiw_tam_official": ..., "iiw_skipped": ...} for metric logging."""
        out = {f"{prefix}{g}_{k}": v for g, stats in self.groups.items() for k, v in stats.items()}
        out.update({f"{prefix}skipped": float(self.skipped), f"{prefix}subset": float(self.subset)})
        return out


def ctc_iiw(model: nn.Module, dataset: ClipItems, indices: Sequence[int], theta0: Mapping[str, torch.Tensor], n_train: int,
            tensor_filter: str = "official", official_batch: int = 2, official_k: int = 10, seed: int = 0,
            device: torch.device | str = "cpu") -> IIWReport:
    """IIW of ``model.module_groups()`` with ℓ_i = the inference head's CTC of clip i (summed over time).

    Eval mode (restored afterwards, module by module), autocast off, fp32; each sample is
    ``collate([dataset[i]], model.frame_padding, model.stride)`` on ``device`` (where the model must be).
    Infeasible samples (CTC +inf) are skipped and counted. ``theta0`` keys must be those of
    ``group_tensors(model.module_groups(), tensor_filter)``.
    """
    start = time.perf_counter()
    tensors = group_tensors(model.module_groups(), tensor_filter)
    device = torch.device(device)

    def loss_fn(i: int) -> torch.Tensor | None:
        batch = collate([dataset[i]], model.frame_padding, model.stride).to(device)
        out = model(batch.video, batch.mask, batch.lengths)
        res = ctc_loss(out.logits, out.lengths, batch.labels, batch.label_lengths)
        # res.loss is the (differentiable) mean over the finite samples = ℓ_i for a batch of one
        return None if res.nonfinite else res.loss

    modes = {m: m.training for m in model.modules()}
    rnn_dropout = {m: m.dropout for m in model.modules() if isinstance(m, nn.RNNBase)}
    model.eval()
    for m in rnn_dropout:  # cuDNN RNN backward needs train mode; dropout 0 makes it the eval computation
        m.dropout = 0.0
        m.training = True
    try:
        with torch.autocast(device.type, enabled=False):
            s, names, skipped = directional_derivatives(loss_fn, indices, tensors, theta0)
    finally:
        for m, mode in modes.items():
            m.training = mode
        for m, p in rnn_dropout.items():
            m.dropout = p
    group_of = {name: g for g, group in tensors.items() for name in group}
    est = estimate(s, names, group_of, n_train, official_batch=official_batch, official_k=official_k, seed=seed)
    zero = {k: 0.0 for k in est[ALL]} | {"n_samples": est[ALL]["n_samples"]}  # a group without tensors
    norms = delta_norms(tensors, theta0)
    groups = {g: {**est.get(g, zero), "delta_norm": norms[g]} for g in [*tensors, ALL]}
    return IIWReport(groups, len(skipped), n_train, len(indices), time.perf_counter() - start)


def measure_iiw(model: nn.Module, train_clips, theta0: Mapping[str, torch.Tensor], params,
                device: torch.device | str = "cpu") -> IIWReport:
    """IIW of ``model`` on the fixed seeded subset (``iiw.*``) of its CTC-feasible training clips, un-augmented.

    The one definition shared by the iiw stage's per-epoch curves and final value and by the benchmark,
    so all use the same videos; n = the number of training clips.
    """
    iiw = params.iiw
    n = len(train_clips.metas)
    return ctc_iiw(model, ClipDataset(train_clips, AugmentConfig(crop=params.loader.crop), train=False),
                   iiw_subset(n, iiw.subset, iiw.seed), theta0, n_train=n, tensor_filter=iiw.tensor_filter,
                   official_batch=iiw.official_batch, official_k=iiw.official_k, seed=iiw.seed, device=device)


def heldout_prior(model: nn.Module, held_out, params, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """IIW prior mean θ0 by the PIB recipe: a copy of the initial ``model`` trained briefly (``iiw.prior_epochs``,
    CTC on its inference head) on held-out clips, snapshotted, then discarded. The global RNG is untouched."""
    prior = copy.deepcopy(model).to(device)
    loader_cfg, seed = params.loader, params.train.seed + 7919
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        data = ClipDataset(held_out, AugmentConfig(crop=loader_cfg.crop, flip=loader_cfg.flip,
                                                   temporal_rescale=loader_cfg.temporal_rescale,
                                                   min_frames=loader_cfg.min_frames, max_frames=loader_cfg.max_frames),
                           train=True, seed=seed)
        loader = make_loader(data, loader_cfg.batch_size, train=True, pad=prior.frame_padding, stride=prior.stride,
                             seed=seed)
        optimizer = torch.optim.Adam(prior.parameters(), lr=params.train.lr, weight_decay=params.train.weight_decay)
        prior.train()
        for epoch in range(params.iiw.prior_epochs):
            loader.set_epoch(epoch)
            for batch in loader:
                batch = batch.to(device)
                out = prior(batch.video, batch.mask, batch.lengths)
                loss = ctc_loss(out.logits, out.lengths, batch.labels, batch.label_lengths).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return {k: v.cpu() for k, v in snapshot(group_tensors(prior.module_groups(), params.iiw.tensor_filter)).items()}


def iiw_prior(initial: nn.Module, dev_clips, params, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """θ0 of ``iiw.prior``: the initial weights, or (``heldout``, when a dev split exists) the PIB prior."""
    if params.iiw.prior == "heldout" and dev_clips is not None:
        return heldout_prior(initial, dev_clips, params, device)
    return snapshot(group_tensors(initial.module_groups(), params.iiw.tensor_filter))
