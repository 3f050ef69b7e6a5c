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


def test_unknown_subcommand_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
