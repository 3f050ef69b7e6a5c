"""The ``ctca`` command: params checking and corpus rendering by hand."""

from pathlib import Path

import pytest

from ctca.cli import main
from ctca.data.corpus import SynthSignReader

REPO = Path(__file__).resolve().parents[1]


def test_check_params_accepts_the_repository_file_and_refuses_bad_keys(tmp_path, capsys):
    assert main(["check-params", str(REPO / "params.yaml")]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "params.yaml"
    bad.write_text("tam:\n  depth: 2\n  width: 3\n")
    assert main(["check-params", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "tam.width" in err and "allowed keys" in err


def test_synth_renders_a_readable_corpus(tmp_path, capsys):
    out = tmp_path / "corpus"
    args = ["synth", str(out), "--vocab-size", "5", "--n-train", "3", "--n-dev", "1", "--n-test", "1",
            "--workers", "1"]
    assert main(args) == 0
    reader = SynthSignReader(out)
    assert [len(reader.samples(s)) for s in ("train", "dev", "test")] == [3, 1, 1]
    assert all(s.source.is_file() for s in reader)


def test_synth_png_layout_from_a_folder_of_split_files(tmp_path, capsys):
    from ctca.data.corpus import open_corpus
    from ctca.data.synthetic import read_metadata

    stms = tmp_path / "stms"
    stms.mkdir()
    for split, ids in (("train", ["a-0", "a-1", "a-2"]), ("dev", ["b-0"]), ("test", ["c-0", "c-1"])):
        (stms / f"phoenix2014-groundtruth-{split}.stm").write_text(
            "".join(f"{sid} 1 Signer01 0.0 1.79769e+308 __ON__ G{i} H __OFF__\n" for i, sid in enumerate(ids)))
    out = tmp_path / "corpus"
    args = ["synth", str(out), "--from-corpus", str(stms), "--n-train", "2", "--n-dev", "-1", "--n-test", "-1",
            "--layout", "png", "--set", "sign_frames=2", "transition_frames=0", "--workers", "1"]
    assert main(args) == 0
    reader = open_corpus("phoenix2014", out)
    assert [[s.id for s in reader.samples(split)] for split in ("train", "dev", "test")] == [
        ["a-0", "a-1"], ["b-0"], ["c-0", "c-1"]]
    meta = read_metadata(out)
    planned = {s["id"]: s["frames"] for split in meta["samples"].values() for s in split}
    assert {s.id: len(s.frame_paths()) for s in reader} == planned
    assert meta["config"]["sign_frames"] == 2 and meta["config"]["layout"] == "png"
    assert main(["synth", str(out), "--set", "layout=avi", "--workers", "1"]) == 2
    assert "layout='avi' is invalid; allowed: mp4 | png" in capsys.readouterr().err
    (stms / "phoenix2014-groundtruth-dev.stm").unlink()
    assert main(["synth", str(out), "--from-corpus", str(stms), "--workers", "1"]) == 2
    assert "no dev file" in capsys.readouterr().err
    assert main(["synth", str(out), "--set", "sign_frames"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_unknown_subcommand_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
