"""Stage scripts called directly: the pretrain_spm -> train hand-over of SPM weights."""

import dataclasses

import torch

from ctca.train import FitSpec, fit


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

    spec = FitSpec(depth=params.tam.depth, epochs=1, lr=1e-12)  # a step this small leaves weights unchanged
    result = fit(params, tiny_clips, tmp_path / "ckpt", spec, init_spm=tmp_path / "models" / "spm.pt",
                 progress=False)
    trained = result.model.spm.state_dict()
    for k, v in handed.items():
        if v.is_floating_point() and "running" not in k:  # BN running stats move with the data
            assert torch.allclose(trained[k], v, atol=1e-6), k
