"""Stage evaluate: decode dev/test with the trained model and score them (sclite-exact).

DVC metrics (metrics/eval.json, flat): WER, del %, ins % per split for the inference head and, suffixed
``_<head>``, for every other head. The detail (protocol, S/D/I/N, loss, OOV, ms per video, the heads) is in
work/eval/summary.json, with the CTM/STM, alignments and per-signer WER next to it.
"""

from __future__ import annotations

import logging
import time

from ctca.config import Params
from ctca.cores import share_cores
from ctca.data.cache import ClipStore
from ctca.decode import make_decoder
from ctca.device import select_device
from ctca.evaluate import evaluate_split, posterior_example, resolve_protocol, write_split_outputs
from ctca.models.io import load_model
from ctca.pipeline import (
    CLIPS_DIR,
    EVAL_DIR,
    EVAL_METRICS,
    EVAL_SUMMARY,
    MODEL_FILE,
    InputError,
    stage_main,
    write_json,
)
from ctca.tracking import stage_run

HEADLINE = ("wer", "del", "ins")
log = logging.getLogger(__name__)


def headline_metrics(summary: dict) -> dict[str, float]:
    """The flat DVC metrics of an evaluation summary: ``<split>_<wer|del|ins>`` of the inference head and
    ``<split>_<wer|del|ins>_<head>`` of every other head (``dev_wer_conv``, ``test_ins_local``)."""
    out = {}
    for split, m in summary["splits"].items():
        out.update({f"{split}_{k}": m[k] for k in HEADLINE})
    for split, m in summary["splits"].items():
        for head, r in m.get("heads", {}).items():
            if head != m.get("head"):
                out.update({f"{split}_{k}_{head}": r[k] for k in HEADLINE})
    return out


def run(params: Params) -> None:
    share_cores(params.train.threads)  # 0 = share the cores with the ctca runs going on
    protocol = resolve_protocol(params)
    device = select_device(params.train.device)
    model, vocab, ckpt = load_model(MODEL_FILE, map_location=device)
    model.to(device)
    store = ClipStore(CLIPS_DIR)
    decoder = make_decoder(params.decode.beam_width)
    logged = {"decode": params.section("decode"), "evaluate": params.section("evaluate"), "protocol": protocol}
    out = {"protocol": protocol, "decoder": type(decoder).__name__, "beam_width": params.decode.beam_width,
           "method": ckpt["meta"]["method"], "depth": ckpt["meta"]["depth"], "splits": {}}
    per_signer: dict[str, dict] = {}
    with stage_run("evaluate", logged, params.tracking.experiment) as run:
        for split in params.evaluate.splits:
            if split not in store.splits:
                raise InputError(f"evaluate.splits names {split!r}, but {CLIPS_DIR} has only {store.splits}")
            t0 = time.perf_counter()
            ev = evaluate_split(model, store.split(split), vocab, decoder, params.evaluate.batch_size,
                                model.frame_padding, model.stride, params.loader.crop, device,
                                params.train.amp, name=split, protocol=protocol, unreadable=store.unreadable(split))
            seconds = time.perf_counter() - t0
            for u in ev.unreadable:
                log.warning("%s: %s is scored as an empty hypothesis: its video was unreadable (%s)", split, u["id"],
                            u["reason"])
            write_split_outputs(ev, EVAL_DIR)
            if split == params.evaluate.splits[0] and len(store.split(split)):  # one clip's CTC posteriors
                clips = store.split(split)
                i = clips.ids.index(min(clips.ids))
                example = posterior_example(model, clips, vocab, i, model.frame_padding, model.stride,
                                            params.loader.crop, hyp=ev.hyps[clips.ids[i]])
                write_json(EVAL_DIR / "posterior_example.json", example)
            out["splits"][split] = {**ev.result.to_dict(), "loss": ev.loss, "oov_tokens": ev.oov_tokens,
                                    "ms_per_video": 1000 * seconds / max(ev.result.utterances, 1),
                                    "unreadable": ev.unreadable, "head": ev.head,
                                    "heads": {h: {k: r.to_dict()[k] for k in ("wer", "del", "ins")}
                                              for h, r in ev.heads.items()}}
            per_signer[split] = {s: r.to_dict() for s, r in sorted(ev.per_signer.items())}
            run.log_metrics(out["splits"][split], prefix=f"{split}_")
            run.log_metrics({f"{h}_{k}": v for h, r in out["splits"][split]["heads"].items() for k, v in r.items()},
                            prefix=f"{split}_head_")
        write_json(EVAL_SUMMARY, out)
        write_json(EVAL_DIR / "per_signer.json", per_signer)
        write_json(EVAL_METRICS, headline_metrics(out))
        run.log_artifact(EVAL_METRICS)
        run.log_artifact(EVAL_DIR, "eval")


if __name__ == "__main__":
    stage_main("evaluate", run)
