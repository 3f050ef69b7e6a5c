"""Stage scripts called directly: the pretrain_spm -> train hand-over of SPM weights."""

import dataclasses

import torch

from ctca.train import fit


def test_pretrain_epochs_0_hands_over_an_spm_that_train_starts_from(tiny_params, tiny_clips, tmp_path, monkeypatch):
    from stages import pretrain_spm

    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "clips").symlink_to(tiny_clips)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    params = dataclasses.replace(tiny_params, spm=dataclasses.replace(tiny_params.spm, pretrain_epochs=0))
    pretrain_spm.run(params)

    handed = torch.load(tmp_path / "models" / "spm.pt", weights_only=True)
    # train builds its own model (seeded identically) and must overwrite its SPM with the file's weights:
    # perturb the file so that "starts from the file" and "happens to equal the seeded init" differ
    handed = {k: v + 0.5 if v.is_floating_point() else v for k, v in handed.items()}
    torch.save(handed, tmp_path / "models" / "spm.pt")

    tiny_step = dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=1, lr=1e-12))
    result = fit(tiny_step, tiny_clips, tmp_path / "ckpt", init_spm=tmp_path / "models" / "spm.pt",
                 progress=False)  # a step this small leaves the weights unchanged
    trained = result.model.spm.state_dict()
    for k, v in handed.items():
        if v.is_floating_point() and "running" not in k:  # BN running stats move with the data
            assert torch.allclose(trained[k], v, atol=1e-6), k


def test_a_phoenix2014t_tree_goes_through_the_data_stages_with_only_params_changed(tmp_path, monkeypatch):
    """data.dataset/data.root select a real-format corpus; the stages need no other change."""
    import json

    from test_corpus import t_row, write_png_frames, write_t_corpus

    from ctca.config import parse_params
    from ctca.evaluate import resolve_protocol
    from stages import cache_features, extract_frames, synthesize

    corpus = tmp_path / "PHOENIX-2014-T"
    feats = corpus / "features" / "fullFrame-210x260px"
    rows = {"train": [t_row("tr-0"), t_row("tr-1", orth="__ON__ poss-EUCH HABEN2")],
            "dev": [t_row("dv-0"), t_row("dv-gone", orth="A B")], "test": [t_row("te-0")]}
    write_t_corpus(corpus, rows)
    for split, lines in rows.items():
        for line in lines:
            if not line.startswith("dv-gone"):  # its frame folder is missing: unreadable
                write_png_frames(feats / split / line.split("|")[0], 20)  # the release layout: no 1/ level
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("DVC_ROOT", str(project))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    params = parse_params({"data": {"dataset": "phoenix2014t", "root": str(corpus), "max_bad_fraction": 0.5},
                           "frames": {"size": 16, "workers": 1}, "loader": {"crop": 12}})
    synthesize.run(params)
    extract_frames.run(params)
    cache_features.run(params)
    manifest = json.loads((project / "work" / "frames" / "manifest.json").read_text())
    assert manifest["counts"]["train"]["ok"] == 2 and manifest["counts"]["test"]["ok"] == 1
    vocab = json.loads((project / "work" / "clips" / "vocab.json").read_text())
    assert "poss-EUCH" in json.dumps(vocab)  # trained on raw glosses; normalisation happens at scoring
    assert resolve_protocol(params) == "phoenix2014t"
    # the unreadable dev video stays part of the dev set: evaluation scores its reference (an empty hypothesis)
    from ctca.data.cache import ClipStore

    (gone,) = ClipStore(project / "work" / "clips").unreadable("dev")
    assert gone["id"] == "dv-gone" and gone["glosses"] == ["A", "B"] and "frame folder" in gone["reason"]
    # their summaries are ordinary outputs for the report, not DVC metrics
    from ctca.pipeline import CACHE_FEATURES_SUMMARY, EXTRACT_FRAMES_SUMMARY, SYNTHESIZE_SUMMARY

    assert json.loads((project / SYNTHESIZE_SUMMARY).read_text()) == {"dataset": "phoenix2014t", "rendered": False}
    assert json.loads((project / EXTRACT_FRAMES_SUMMARY).read_text())["counts"]["train"]["ok"] == 2
    assert json.loads((project / CACHE_FEATURES_SUMMARY).read_text())["vocab_size"] > 0
    assert not (project / "metrics").exists()
