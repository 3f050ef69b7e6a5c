"""Decode a split of the clip store with a trained recognizer and score it against its references.

References are the full gloss strings of the corpus (out-of-vocabulary glosses included), so a
model can never look better by dropping what it cannot predict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ctca.data.cache import ClipSplit
from ctca.data.loader import AugmentConfig, ClipDataset, make_loader
from ctca.data.vocab import Vocabulary
from ctca.decode import Decoder
from ctca.device import autocast
from ctca.losses.ctc import ctc_loss
from ctca.scoring.official import score_protocol
from ctca.scoring.wer import Alignment, WerResult

# evaluate.protocol=auto: each corpus is scored under its official protocol (docs/scoring.md#scoring-protocols)
# (a manifest corpus has no official protocol: its glosses are scored as written)
DATASET_PROTOCOL = {"synthetic": "none", "phoenix2014": "phoenix2014", "phoenix2014t": "phoenix2014t",
                    "csl-daily": "none", "manifest": "none"}


def resolve_protocol(params) -> str:
    """``evaluate.protocol``, with ``auto`` resolved from ``data.dataset``."""
    p = params.evaluate.protocol
    return DATASET_PROTOCOL[params.data.dataset] if p == "auto" else p


@dataclass
class SplitEval:
    split: str
    result: WerResult
    hyps: dict[str, list[str]]
    refs: dict[str, list[str]]
    alignments: dict[str, Alignment]
    per_signer: dict[str, WerResult]
    signers: dict[str, str]
    loss: float  # mean CTC loss over clips with a finite loss (in-vocabulary targets)
    nonfinite: int
    oov_tokens: int  # reference tokens that are not in the training vocabulary
    protocol: str = "none"  # the scoring protocol (ctca.scoring.normalise)
    head: str = "seq"  # the inference head ``result`` scores
    heads: dict[str, WerResult] = field(default_factory=dict)  # every head of the model (VAC: seq and conv)
    unreadable: list[dict] = field(default_factory=list)  # {"id", "reason"}: scored as empty hypotheses


@torch.no_grad()
def evaluate_split(model, split: ClipSplit, vocab: Vocabulary, decoder: Decoder, batch_size: int, pad: int,
                   stride: int, crop: int, device: torch.device | str = "cpu", amp: str = "off",
                   name: str = "dev", protocol: str = "none", unreadable: list[dict] = ()) -> SplitEval:
    """Decode every head of ``model`` on ``split`` and score it under ``protocol`` (sclite-exact).

    ``result``, ``alignments`` and ``per_signer`` are the inference head's; ``heads`` has every head.
    ``unreadable`` (``ClipStore.unreadable``): samples of the split whose video could not be read; each
    is scored as an empty hypothesis of every head, as the official ``mergectmstm`` does for an id
    without output, so the WER covers every utterance of the split.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    dataset = ClipDataset(split, AugmentConfig(crop=crop), train=False)
    loader = make_loader(dataset, batch_size, train=False, pad=pad, stride=stride)
    head_hyps: dict[str, dict[str, list[str]]] = {}
    refs: dict[str, list[str]] = {}
    signers: dict[str, str] = {}
    loss_sum, n_loss, nonfinite = 0.0, 0, 0
    for batch in loader:
        batch = batch.to(device)
        with autocast(device, amp):
            out = model(batch.video, batch.mask, batch.lengths)
        # a clip whose glosses are all out of vocabulary has an empty target: CTC scores it as all-blank
        res = ctc_loss(out.logits, out.lengths, batch.labels, batch.label_lengths)
        good = len(batch.ids) - res.nonfinite
        loss_sum += float(res.loss) * good
        n_loss += good
        nonfinite += res.nonfinite
        for head, logits in out.heads.items():
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            decoded = decoder(log_probs.transpose(0, 1).cpu(), out.lengths.cpu())
            for uid, ids in zip(batch.ids, decoded, strict=True):
                head_hyps.setdefault(head, {})[uid] = vocab.decode(ids)
        for uid, glosses, signer in zip(batch.ids, batch.glosses, batch.signers, strict=True):
            refs[uid] = list(glosses)
            signers[uid] = signer
    if was_training:
        model.train()
    primary = getattr(model, "inference_head", "seq")
    head_hyps.setdefault(primary, {})  # (a split whose every video was unreadable)
    for sample in unreadable:
        refs[sample["id"]] = list(sample["glosses"])
        signers[sample["id"]] = sample["signer"]
        for hyps_of_head in head_hyps.values():
            hyps_of_head[sample["id"]] = []
    hyps = head_hyps[primary]
    scored = score_protocol(refs, hyps, protocol, signers)
    heads = {h: scored.result if h == primary else score_protocol(refs, hh, protocol).result
             for h, hh in head_hyps.items()}
    oov = sum(1 for r in refs.values() for g in r if g not in vocab)
    return SplitEval(split=name, result=scored.result, hyps=hyps, refs=refs, alignments=scored.alignments,
                     per_signer=scored.by_signer or {}, signers=signers, loss=loss_sum / max(n_loss, 1), protocol=protocol,
                     nonfinite=nonfinite, oov_tokens=oov, head=primary, heads=heads,
                     unreadable=[{"id": u["id"], "reason": u["reason"]} for u in unreadable])


def write_split_outputs(ev: SplitEval, out_dir) -> None:
    """``<split>.hyp.txt`` (``id gloss gloss ...``, sorted by id), ``<split>.pra`` (per-utterance alignments
    as scored), and ``<split>.ctm`` / ``<split>.stm`` (raw hypothesis and references in the official
    formats, so the official scripts or sclite can be run on them: ``ctca score`` reproduces them)."""
    from pathlib import Path

    from ctca.scoring.ctm import write_ctm, write_stm
    from ctca.scoring.wer import format_alignment

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = sorted(ev.hyps)
    (out_dir / f"{ev.split}.hyp.txt").write_text("".join(f"{i} {' '.join(ev.hyps[i])}\n" for i in ids))
    write_ctm(out_dir / f"{ev.split}.ctm", ev.hyps)
    write_stm(out_dir / f"{ev.split}.stm", ev.refs, ev.signers)
    (out_dir / f"{ev.split}.pra").write_text("".join(f"id: {i}\n{format_alignment(ev.alignments[i])}\n\n"
                                                     for i in ids))


@torch.no_grad()
def posterior_example(model, split: ClipSplit, vocab: Vocabulary, index: int, pad: int, stride: int, crop: int,
                      hyp: list[str] | None = None) -> dict:
    """Frame-level CTC posteriors of one clip, for the report's spike picture (JSON-ready)."""
    from ctca.data.loader import collate

    was_training = model.training
    model.eval()
    item = ClipDataset(split, AugmentConfig(crop=crop), train=False)[index]
    batch = collate([item], pad=pad, stride=stride).to(next(model.parameters()).device)
    out = model(batch.video, batch.mask, batch.lengths)
    probs = torch.softmax(out.logits.float()[: int(out.lengths[0]), 0], dim=-1).cpu()
    if was_training:
        model.train()
    ref = list(item["glosses"])
    shown = ["<blank>"] + list(dict.fromkeys(g for g in ref + (hyp or []) if g in vocab))
    cols = [0] + [vocab.encode([g])[0][0] for g in shown[1:]]
    return {"id": item["id"], "frames_per_step": stride, "ref": ref, "hyp": hyp or [], "classes": shown,
            "probs": probs[:, cols].T.tolist(), "other": (1 - probs[:, cols].sum(-1)).clamp(min=0).tolist()}
