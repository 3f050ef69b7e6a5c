"""`ctca predict`: a model file on raw videos gives what the evaluate stage gives; bad inputs are one line each."""

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch

from ctca.cli import main
from ctca.data.cache import ClipStore
from ctca.data.corpus import SynthSignReader
from ctca.decode import make_decoder
from ctca.evaluate import evaluate_split
from ctca.models.io import model_metadata, save_model
from ctca.predict import Input, Predictor, expand_inputs
from ctca.scoring.official import score_protocol
from ctca.train import fit


@pytest.fixture(scope="module")
def trained(tiny_params, tiny_clips, tmp_path_factory):
    """A tiny model trained on the tiny corpus, saved as the train stage saves it."""
    out = tmp_path_factory.mktemp("predict")
    params = dataclasses.replace(tiny_params, train=dataclasses.replace(tiny_params.train, epochs=2))
    result = fit(params, tiny_clips, out / "ckpt", progress=False)
    save_model(out / "model.pt", result.model, result.config, result.vocab,
               model_metadata(params, method=params.model.method, best_epoch=result.best_epoch))
    return out / "model.pt", result, params


def test_predict_on_the_test_videos_gives_the_evaluate_stage_wer(trained, tiny_clips):
    model_file, result, params = trained
    model = result.model.eval()
    split = ClipStore(tiny_clips).split("test")
    ev = evaluate_split(model, split, result.vocab, make_decoder(1), batch_size=params.evaluate.batch_size,
                        pad=model.frame_padding, stride=model.stride, crop=params.loader.crop, protocol="none")
    reader = SynthSignReader(tiny_clips.parent / "corpus")  # the raw corpus the clip store was made from
    samples = reader.samples("test")
    predictor = Predictor(model_file)
    hyps = {s.id: predictor.predict(Input(s.id, s.source, s.kind)).glosses for s in samples}
    assert hyps == ev.hyps
    assert score_protocol(ev.refs, hyps, "none").result.wer == ev.result.wer

    # signers the model never saw in training are predicted like any other
    train_signers = {s.signer for s in reader.samples("train")}
    unseen = [s for s in samples if s.signer not in train_signers]
    assert unseen, "the tiny corpus has no held-out signer in test"
    assert all(s.id in hyps for s in unseen)


def test_gloss_times_come_from_the_ctc_alignment(trained, tiny_clips):
    model_file, _, _ = trained
    sample = SynthSignReader(tiny_clips.parent / "corpus").samples("dev")[0]
    pred = Predictor(model_file).predict(Input(sample.id, sample.source, sample.kind))
    assert [g for g, _, _ in pred.segments] == pred.glosses
    starts = [a for _, a, _ in pred.segments]
    assert starts == sorted(starts) and all(d > 0 for _, _, d in pred.segments)
    if pred.segments:
        _, last_start, last_duration = pred.segments[-1]
        assert last_start + last_duration <= pred.frames / pred.fps + 1e-6


def write_video(path, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (32, 24))
    for t in range(frames):
        writer.write(np.full((24, 32, 3), 10 * t % 255, np.uint8))
    writer.release()


def test_a_batch_with_bad_inputs_predicts_the_others_and_reports_each_in_one_line(trained, tiny_clips, tmp_path,
                                                                                 capsys):
    model_file, _, _ = trained
    samples = SynthSignReader(tiny_clips.parent / "corpus").samples("test")[:2]
    videos = tmp_path / "videos"
    videos.mkdir()
    for s in samples:  # a folder of videos
        (videos / s.source.name).write_bytes(s.source.read_bytes())
    frames = tmp_path / "frames"  # a folder of frame images (one input)
    frames.mkdir()
    for t in range(12):
        cv2.imwrite(str(frames / f"{t:04d}.png"), np.full((30, 30, 3), 20 * t, np.uint8))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00not a video" * 10)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    code = main(["predict", str(model_file), str(videos), str(frames), str(corrupt), str(notes),
                 str(tmp_path / "missing.mp4"), "--json", str(tmp_path / "out.json"), "--ctm", str(tmp_path / "o.ctm")])
    out, err = capsys.readouterr()
    assert code == 1
    predicted = [line.split("\t")[0] for line in out.strip().splitlines()]
    assert predicted == [s.source.stem for s in samples] + ["frames"]
    errors = err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("predict: error: ") for line in errors)
    assert "corrupt.mp4" in errors[0] and "notes.txt" in errors[1] and "missing.mp4" in errors[2]
    report = json.loads((tmp_path / "out.json").read_text())
    assert len(report["predictions"]) == 3 and len(report["failed"]) == 3
    ctm_ids = {line.split()[0] for line in (tmp_path / "o.ctm").read_text().splitlines()}
    assert ctm_ids == set(predicted)


def test_a_file_that_is_not_a_model_and_a_clip_too_short_are_one_line_errors(trained, tmp_path, capsys,
                                                                              monkeypatch):
    model_file, _, _ = trained
    video = tmp_path / "v.mp4"
    write_video(video, 6)
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    assert main(["predict", str(bogus), str(video)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bogus) in err[0] and "not a ctca.recognizer file" in err[0]

    monkeypatch.setattr(Predictor, "min_frames", lambda self: 10)  # as a model that needs more context would
    assert main(["predict", str(model_file), str(video)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clip too short for the model (6 frames; at least 10" in err[0]


def test_inputs_expand_to_videos_frame_folders_and_errors(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "b.avi").write_bytes(b"x")
    (tmp_path / "clips" / "c.mp4").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    got = expand_inputs([tmp_path / "a.mp4", tmp_path / "clips", tmp_path / "empty", tmp_path / "nope"])
    assert [(i.id, i.kind) for i in got] == [("a", "video"), ("b", "video"), ("c", "video"), ("empty", "error"),
                                             ("nope", "error")]


def test_a_registered_model_loads_by_alias_and_predicts(trained, tiny_clips, tmp_path):
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from ctca.serving import log_corpus, log_model

    model_file, _, _ = trained
    samples = SynthSignReader(tiny_clips.parent / "corpus").samples("test")[:3]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.create_experiment("serving", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        version = log_model(model_file, samples[0].source, "ctca-tiny", ["candidate", "exp run/1"])
        log_corpus("synthetic", tiny_clips.parent / "corpus", tiny_clips / "index.json")
    assert version == 1
    assert int(client.get_model_version_by_alias("ctca-tiny", "exp-run-1").version) == 1

    loaded = mlflow.pyfunc.load_model("models:/ctca-tiny@candidate")
    out = loaded.predict(pd.DataFrame({"path": [str(s.source) for s in samples]}))
    predictor = Predictor(model_file)
    expected = [" ".join(predictor.predict(Input(s.id, s.source, s.kind)).glosses) for s in samples]
    assert list(out["glosses"]) == expected
    # frame arrays, as decoded by the caller, give the same glosses
    from ctca.data.frames import iter_video

    frames = np.stack(list(iter_video(samples[0].source)))
    assert list(loaded.unwrap_python_model().predict(None, [frames])["glosses"]) == expected[:1]

    (dataset_input,) = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert dataset_input.dataset.name == "synthetic" and len(dataset_input.dataset.digest) == 10
    assert str(tiny_clips.parent / "corpus") in dataset_input.dataset.source
