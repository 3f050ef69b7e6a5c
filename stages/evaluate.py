"""Stage evaluate: decode dev/test with the trained model; WER, del %, ins % (and per signer) as DVC metrics."""

from __future__ import annotations

import time

from ctca.config import Params
from ctca.data.cache import ClipStore
from ctca.decode import make_decoder
from ctca.device import select_device
from ctca.evaluate import evaluate_split, posterior_example, resolve_protocol, write_split_outputs
from ctca.pipeline import CLIPS_DIR, EVAL_DIR, METRICS_DIR, MODEL_FILE, InputError, stage_main, write_json
from ctca.tracking import stage_run
from ctca.train import load_model


def run(params: Params) -> None:
    protocol = resolve_protocol(params)
    device = select_device(params.train.device)
    model, vocab, ckpt = load_model(MODEL_FILE, map_location=device)
    model.to(device)
    store = ClipStore(CLIPS_DIR)
    decoder = make_decoder(params.decode.beam_width)
    logged = {"decode": params.section("decode"), "evaluate": params.section("evaluate"), "protocol": protocol}
    out = {"protocol": protocol, "decoder": type(decoder).__name__, "beam_width": params.decode.beam_width,
           "method": ckpt["config"]["method"], "depth": ckpt["config"]["depth"], "splits": {}}
    per_signer: dict[str, dict] = {}  # kept out of the DVC metrics file: dvc exp show stays readable
    with stage_run("evaluate", logged, params.tracking.experiment) as run:
        for split in params.evaluate.splits:
            if split not in store.splits:
                raise InputError(f"evaluate.splits names {split!r}, but {CLIPS_DIR} has only {store.splits}")
            t0 = time.perf_counter()
            ev = evaluate_split(model, store.split(split), vocab, decoder, params.evaluate.batch_size,
                                model.frame_padding, model.stride, params.loader.crop, device,
                                params.train.amp, name=split, protocol=protocol)
            seconds = time.perf_counter() - t0
            write_split_outputs(ev, EVAL_DIR)
            if split == params.evaluate.splits[0]:  # one clip's CTC posteriors for the report's spike picture
                clips = store.split(split)
                i = clips.ids.index(min(clips.ids))
                example = posterior_example(model, clips, vocab, i, model.frame_padding, model.stride,
                                            params.loader.crop, hyp=ev.hyps[clips.ids[i]])
                write_json(EVAL_DIR / "posterior_example.json", example)
            out["splits"][split] = {**ev.result.to_dict(), "loss": ev.loss, "oov_tokens": ev.oov_tokens,
                                    "ms_per_video": 1000 * seconds / max(ev.result.utterances, 1),
                                    "head": ev.head, "heads": {h: {k: r.to_dict()[k] for k in ("wer", "del", "ins")}
                                                               for h, r in ev.heads.items()}}
            per_signer[split] = {s: r.to_dict() for s, r in sorted(ev.per_signer.items())}
            run.log_metrics(out["splits"][split], prefix=f"{split}_")
            run.log_metrics({f"{h}_{k}": v for h, r in out["splits"][split]["heads"].items() for k, v in r.items()},
                            prefix=f"{split}_head_")
        write_json(METRICS_DIR / "eval.json", out)
        write_json(EVAL_DIR / "per_signer.json", per_signer)
        run.log_artifact(METRICS_DIR / "eval.json")
        run.log_artifact(EVAL_DIR, "eval")


if __name__ == "__main__":
    stage_main("evaluate", run)
