"""Evaluation covers every utterance of a split: an unreadable video is scored as an empty hypothesis."""

import torch

from ctca.config import parse_params
from ctca.data.cache import ClipStore
from ctca.decode import make_decoder
from ctca.evaluate import evaluate_split
from ctca.methods import make_method


def test_an_unreadable_video_is_scored_as_an_empty_hypothesis_of_every_head(tiny_clips):
    store = ClipStore(tiny_clips)
    split = store.split("dev")
    torch.manual_seed(0)
    model = make_method(parse_params({"model": {"method": "vac"}, "tam": {"depth": 3, "hidden": 8},
                                      "spm": {"channels": [4]}})).build_model(store.vocab.num_classes).eval()
    lost = {"id": "lost-0", "signer": "SignerX", "glosses": ["A", "B", "A"], "reason": "video file not found"}

    def run(unreadable):
        return evaluate_split(model, split, store.vocab, make_decoder(1), batch_size=4, pad=model.frame_padding,
                              stride=model.stride, crop=20, unreadable=unreadable)

    base, scored = run([]), run([lost])
    assert scored.result.utterances == base.result.utterances + 1 == len(split) + 1
    assert scored.result.n == base.result.n + 3
    # every reference gloss becomes an error; as in the official CTM, the empty hypothesis is the word
    # [EMPTY], which aligns as one substitution (docs/scoring.md#the-empty-word)
    assert (scored.result.sub, scored.result.dele) == (base.result.sub + 1, base.result.dele + 2)
    assert scored.result.ins == base.result.ins
    assert scored.refs["lost-0"] == ["A", "B", "A"] and scored.hyps["lost-0"] == []
    assert set(scored.heads) == {"seq", "conv"}
    assert all(h.sub + h.dele == base.heads[name].sub + base.heads[name].dele + 3 for name, h in scored.heads.items())
    assert scored.per_signer["SignerX"].n == 3
    assert scored.unreadable == [{"id": "lost-0", "reason": "video file not found"}]


def test_the_report_lists_the_unreadable_evaluation_videos():
    from ctca.report import unreadable_lines

    evaluation = {"splits": {"dev": {"utterances": 40, "unreadable": [{"id": "v7", "reason": "frame folder not found"}]},
                             "test": {"utterances": 30, "unreadable": []}}}
    text = "\n".join(unreadable_lines(evaluation))
    assert "dev: 1 of 40 utterances had an unreadable video" in text and "- `v7`: frame folder not found" in text
    assert "test" not in text
