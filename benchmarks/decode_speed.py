"""Decode speed: greedy vs our batched prefix beam search (beam 10, top-40) on synthetic posteriors.

Prints ms per utterance and the beam/greedy ratio measured in the same run, for C = 1296 (PHOENIX-2014
gloss vocabulary + blank) and C = 41, T = 100 / 200, batch 32; plus flashlight-text and pyctcdecode
when importable (they are optional and are never installed by this script).

    python -m benchmarks.decode_speed [--batch 32] [--repeats 3] [--threads 1]   # from the repo root

Default is one intra-op thread: the per-frame tensors are small, so extra threads buy nothing, and on
a busy machine (more runnable processes than cores) OpenMP synchronisation made the beam search
5–20x slower with 2 threads than with 1.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import torch

from ctca.decode import BLANK, BeamSearchDecoder, Decoder, GreedyDecoder, merge_repeated_glosses


def synthetic_log_probs(n: int, t: int, c: int, sharpness: float, seed: int) -> torch.Tensor:
    """Log-softmax with a random gloss path (glosses of 1–2 frames, blanks between) raised by `sharpness`."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t, c, generator=gen)
    for i in range(n):
        frame = 0
        while frame < t:
            gloss = int(torch.randint(1, c, (1,), generator=gen))
            span = int(torch.randint(1, 3, (1,), generator=gen))
            logits[i, frame : frame + span, gloss] += sharpness
            frame += span
            gap = int(torch.randint(1, 3, (1,), generator=gen))
            logits[i, frame : frame + gap, BLANK] += sharpness
            frame += gap
    return logits.log_softmax(-1)


def ms_per_utterance(decoder: Decoder, log_probs: torch.Tensor, lengths: torch.Tensor, repeats: int) -> float:
    """Median wall time of decoding the whole batch, divided by the batch size, after one warm-up."""
    decoder(log_probs, lengths)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decoder(log_probs, lengths)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / log_probs.shape[0]


def flashlight_decoder(
    beam: int, top_k: int
) -> Callable[[torch.Tensor, torch.Tensor], list[list[int]]] | None:
    try:
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconFreeDecoder,
            LexiconFreeDecoderOptions,
            ZeroLM,
        )
    except ImportError:
        return None
    opts = LexiconFreeDecoderOptions(
        beam_size=beam,
        beam_size_token=top_k,
        beam_threshold=50.0,  # torchaudio's ctc_decoder default
        lm_weight=0.0,
        sil_score=0.0,
        log_add=True,
        criterion_type=CriterionType.CTC,
    )

    def decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        n, t, c = log_probs.shape
        # flashlight needs a silence index: append a column that is never emitted.
        padded = torch.cat([log_probs, torch.full((n, t, 1), -1e4)], dim=-1).float().contiguous()
        sil = c
        decoder = LexiconFreeDecoder(opts, ZeroLM(), sil, BLANK, [])
        out = []
        for i in range(n):
            emissions = padded[i, : int(lengths[i])].contiguous()
            path = decoder.decode(emissions.data_ptr(), emissions.shape[0], c + 1)[0].tokens
            ids = [tok for tok in merge_repeated_glosses(path) if tok not in (BLANK, sil)]
            out.append(merge_repeated_glosses(ids))
        return out

    return decode


def pyctcdecode_decoder(beam: int, c: int) -> Callable[[torch.Tensor, torch.Tensor], list[list[int]]] | None:
    try:
        from pyctcdecode import build_ctcdecoder
    except ImportError:
        return None
    # A word-start marker per label makes every gloss its own "word" (pyctcdecode decodes strings: plain
    # labels would be concatenated into one word).
    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)  # kenlm/UNK notices
    labels = [""] + [f"▁g{k}" for k in range(1, c)]
    decoder = build_ctcdecoder(labels)

    def decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        out = []
        for i in range(log_probs.shape[0]):
            text = decoder.decode(log_probs[i, : int(lengths[i])].numpy(), beam_width=beam)
            out.append(merge_repeated_glosses([int(w[1:]) for w in text.split()]))
        return out

    return decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sharpness", type=float, nargs="+", default=[6.0, 3.0], help="path logit boost")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    greedy = GreedyDecoder()
    beam = BeamSearchDecoder(beam_width=10, top_k=40)
    compat = BeamSearchDecoder(beam_width=10, top_k=40, ctcdecode_compat=True)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, median of {args.repeats}")
    print("ms/utt; [k/n] = top-1 equal to our beam-10 output")
    header = f"{'C':>5} {'T':>4} {'sharp':>5} | {'greedy':>13} | {'beam10':>7} {'ratio':>6} | {'compat':>13}"
    extras = {}
    for name, make in (
        ("flashlight", lambda c: flashlight_decoder(10, 40)),
        ("pyctcdecode", lambda c: pyctcdecode_decoder(10, c)),
    ):
        extras[name] = make
        header += f" | {name:>15}"
    print(header)

    for c in (1296, 41):
        for t in (100, 200):
            for sharp in args.sharpness:
                lp = synthetic_log_probs(args.batch, t, c, sharp, seed=c * 1000 + t)
                lengths = torch.full((args.batch,), t, dtype=torch.long)
                lengths[1::2] = t - t // 5  # mixed lengths exercise the identity steps
                ref = beam(lp, lengths)

                def agree(seqs: list[list[int]], ref: list[list[int]] = ref) -> str:
                    return f"[{sum(a == b for a, b in zip(seqs, ref, strict=True))}/{len(ref)}]"

                g_ms, b_ms, c_ms = (
                    ms_per_utterance(d, lp, lengths, args.repeats) for d in (greedy, beam, compat)
                )
                row = (
                    f"{c:>5} {t:>4} {sharp:>5.1f} | {g_ms:>6.3f} {agree(greedy(lp, lengths)):>7}"
                    f" | {b_ms:>7.2f} {b_ms / g_ms:>5.0f}x | {c_ms:>5.2f} {agree(compat(lp, lengths)):>7}"
                )
                for make in extras.values():
                    other = make(c)
                    if other is None:
                        row += f" | {'not installed':>15}"
                        continue
                    o_ms = ms_per_utterance(other, lp, lengths, repeats=1)
                    row += f" | {o_ms:>7.2f} {agree(other(lp, lengths)):>7}"
                print(row, flush=True)


if __name__ == "__main__":
    main()
