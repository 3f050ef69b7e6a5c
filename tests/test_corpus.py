"""Corpus readers: PHOENIX-2014 layout (frame folders and videos), vocabulary from train only."""

from pathlib import Path

import pytest

from ctca.data.corpus import CorpusError, Phoenix2014Reader, SynthSignReader, open_corpus, split_glosses
from ctca.data.vocab import Vocabulary

HEADER = "id|folder|signer|annotation\n"


def write_corpus(root: Path, rows: dict[str, list[str]]) -> None:
    ann = root / "annotations" / "manual"
    ann.mkdir(parents=True)
    for split, lines in rows.items():
        (ann / f"{split}.corpus.csv").write_text(HEADER + "".join(line + "\n" for line in lines))


def test_phoenix_rows_frame_globs_and_double_spaces(tmp_path):
    write_corpus(tmp_path, {
        "train": ["01April_2010_Thursday_heute_default-0|01April_2010_Thursday_heute_default-0/1/*.png|Signer04|"
                  "__ON__ LIEB ZUSCHAUER  ABEND loc-NORD"],
        "dev": ["d1|d1/1/*.png|Signer01|A B"],
        "test": ["t1|t1.mp4|Signer02|C"],
    })
    frames = tmp_path / "features" / "fullFrame-210x260px" / "train" / "01April_2010_Thursday_heute_default-0" / "1"
    frames.mkdir(parents=True)
    for i in (2, 0, 1):  # written out of order: the reader sorts
        (frames / f"x.avi_pid0_fn{i:06d}-0.png").write_bytes(b"")
    reader = Phoenix2014Reader(tmp_path)
    (s,) = reader.samples("train")
    assert s.glosses == ("__ON__", "LIEB", "ZUSCHAUER", "ABEND", "loc-NORD")
    assert s.kind == "frames" and s.pattern == "*.png" and s.signer == "Signer04"
    assert [p.name for p in s.frame_paths()] == [f"x.avi_pid0_fn{i:06d}-0.png" for i in range(3)]
    (t,) = reader.samples("test")
    assert t.kind == "video" and t.source == tmp_path / "features" / "fullFrame-210x260px" / "test" / "t1.mp4"
    assert [x.id for x in reader] == ["01April_2010_Thursday_heute_default-0", "d1", "t1"]
    # a missing frame folder is still a sample: extraction reports it, the reader does not drop it
    (d,) = reader.samples("dev")
    assert d.frame_paths() == []


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("id,folder,signer,annotation\n", "header"),
        (HEADER + "a|b|c\n", "3 fields"),
        (HEADER + "a|a.mp4|S|X\na|a.mp4|S|Y\n", "duplicate id 'a'"),
    ],
)
def test_malformed_corpus_files_are_errors_naming_the_file(tmp_path, content, needle):
    ann = tmp_path / "annotations" / "manual"
    ann.mkdir(parents=True)
    (ann / "train.corpus.csv").write_text(content)
    with pytest.raises(CorpusError, match=needle) as exc:
        Phoenix2014Reader(tmp_path).samples("train")
    assert "train.corpus.csv" in str(exc.value)


def test_missing_layout_and_unknown_dataset(tmp_path):
    with pytest.raises(CorpusError, match="annotations/manual"):
        Phoenix2014Reader(tmp_path)
    write_corpus(tmp_path, {"train": []})
    with pytest.raises(CorpusError, match="synthsign.json"):
        SynthSignReader(tmp_path)
    with pytest.raises(CorpusError, match="data.dataset='csl'"):
        open_corpus("csl", tmp_path)
    with pytest.raises(CorpusError, match="dev.corpus.csv"):
        open_corpus("phoenix2014", tmp_path).samples("dev")


def test_vocabulary_is_built_from_train_only_and_reports_oov():
    vocab = Vocabulary.build([split_glosses("B A  C"), ("A", "D")])
    assert vocab.glosses == ("A", "B", "C", "D") and vocab.num_classes == 5
    ids, oov = vocab.encode(["A", "ZZZ", "D", "YYY"])
    assert ids == [1, 4] and oov == ["ZZZ", "YYY"]
    assert vocab.decode([0, 2, 0, 3]) == ["B", "C"]


def test_vocabulary_round_trip(tmp_path):
    vocab = Vocabulary.build([("X", "Y", "X")])
    vocab.save(tmp_path / "v.json")
    loaded = Vocabulary.load(tmp_path / "v.json")
    assert loaded == vocab and loaded.counts == {"X": 2, "Y": 1}
