"""Corpus readers (PHOENIX-2014, PHOENIX-2014-T, CSL-Daily, SynthSign) on fixture trees in the exact
on-disk formats; vocabulary from train only."""

import logging
import re
import typing
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from ctca.data.corpus import (
    PHOENIX2014_KNOWN_BROKEN,
    PHOENIX_FEATURES,
    READERS,
    SPLITS,
    CorpusError,
    CslDailyReader,
    Phoenix2014Reader,
    Phoenix2014TReader,
    SynthSignReader,
    csl_daily_signer,
    open_corpus,
    split_glosses,
)
from ctca.data.frames import FrameExtractionError, extract_frames, read_sample
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


# ---------------------------------------------------------------------------------------------------------
# PHOENIX-2014: the known broken sample is kept, logged, and excluded by the CTC-feasibility rule


BROKEN = "13April_2011_Wednesday_tagesschau_default-14"


def write_png_frames(folder: Path, n: int, ext: str = "png", name: str = "images{:04d}") -> None:
    """``n`` tiny 6x5 colour frames named ``name.format(i)`` (1-based, zero-padded) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((6, 5, 3), (10 * i % 256, 100, 200), np.uint8)
        assert cv2.imwrite(str(folder / f"{name.format(i + 1)}.{ext}"), img)


def test_phoenix2014_known_broken_sample_is_kept_and_logged(tmp_path, caplog):
    assert BROKEN in PHOENIX2014_KNOWN_BROKEN
    glosses = " ".join(f"G{i}" for i in range(16))
    write_corpus(tmp_path, {"train": ["ok-0|ok-0/1/*.png|Signer01|A B",
                                      f"{BROKEN}|{BROKEN}/1/*.png|Signer05|{glosses}"]})
    write_png_frames(tmp_path / "features" / "fullFrame-210x260px" / "train" / BROKEN / "1", 16,
                     name="x.avi_pid0_fn{:06d}-0")
    with caplog.at_level(logging.WARNING, logger="ctca.data.corpus"):
        samples = Phoenix2014Reader(tmp_path).samples("train")
    assert [s.id for s in samples] == ["ok-0", BROKEN]  # nothing dropped
    broken = samples[1]
    assert len(broken.frame_paths()) == 16 and len(broken.glosses) == 16
    (rec,) = [r for r in caplog.records if r.name == "ctca.data.corpus"]
    assert rec.levelno == logging.WARNING
    msg = rec.getMessage()
    assert f"train/{BROKEN}: known broken PHOENIX-2014 sample" in msg
    assert "CTC-feasibility rule (ctca.train.feasibility)" in msg and "16 frames for 16 glosses" in msg


def test_ctc_feasibility_rule_excludes_the_16_frame_16_gloss_clip():
    torch = pytest.importorskip("torch")
    from ctca.losses.ctc import feasibility
    from ctca.models.tam import TemporalAggregation

    tam = TemporalAggregation(8, depth=4, hidden=8)
    model = SimpleNamespace(tam=tam, output_lengths=tam.output_lengths)  # only the output-length rule is used
    metas = [SimpleNamespace(id=BROKEN, n_frames=16, gloss_ids=list(range(1, 17))),
             SimpleNamespace(id="ok", n_frames=140, gloss_ids=list(range(1, 17)))]
    with torch.no_grad():
        keep, excluded = feasibility(SimpleNamespace(metas=metas), tam.frame_padding, 4, model)
    assert keep == [1]
    assert [e["id"] for e in excluded] == [BROKEN] and "16 needed for 16 glosses" in excluded[0]["reason"]


def test_synthsign_reader_does_not_apply_the_phoenix_broken_list(tmp_path, caplog):
    write_corpus(tmp_path, {"train": [f"{BROKEN}|{BROKEN}.mp4|Signer01|A"]})
    (tmp_path / "synthsign.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="ctca.data.corpus"):
        (s,) = SynthSignReader(tmp_path).samples("train")
    assert s.id == BROKEN and not caplog.records


# ---------------------------------------------------------------------------------------------------------
# PHOENIX-2014-T

T_HEADER = "name|video|start|end|speaker|orth|translation\n"


def write_t_corpus(root: Path, rows: dict[str, list[str]], header: str = T_HEADER) -> Path:
    ann = root / "annotations" / "manual"
    ann.mkdir(parents=True, exist_ok=True)
    for split, lines in rows.items():
        text = header + "".join(line + "\n" for line in lines)
        (ann / f"PHOENIX-2014-T.{split}.corpus.csv").write_text(text)
    return root


def t_row(name: str, speaker: str = "Signer08", orth: str = "DRUCK TIEF KOMMEN", video: str | None = None) \
        -> str:
    video = f"{name}/1/*.png" if video is None else video
    translation = "tiefer luftdruck bestimmt in den nächsten tagen unser wetter"
    return f"{name}|{video}|-1|-1|{speaker}|{orth}|{translation}"


def test_phoenix2014t_resolves_with_and_without_the_1_level(tmp_path, caplog):
    feats = tmp_path / "features" / "fullFrame-210x260px"
    write_t_corpus(tmp_path, {
        "train": [t_row("with1", orth="DRUCK  TIEF\tKOMMEN"), t_row("flat", speaker="Signer01")],
        "dev": [t_row("d-0")],
        "test": [t_row("t-0", video="t-0/*.png")],  # CorrNet's rewritten glob
    })
    write_png_frames(feats / "train" / "with1" / "1", 3)
    write_png_frames(feats / "train" / "flat", 4)
    write_png_frames(feats / "dev" / "d-0", 2)
    write_png_frames(feats / "test" / "t-0", 2)
    with caplog.at_level(logging.INFO, logger="ctca.data.corpus"):
        reader = Phoenix2014TReader(tmp_path)
        with1, flat = reader.samples("train")
    assert with1.source == feats / "train" / "with1" / "1" and len(with1.frame_paths()) == 3
    assert with1.glosses == ("DRUCK", "TIEF", "KOMMEN") and with1.signer == "Signer08"
    assert flat.source == feats / "train" / "flat" and flat.signer == "Signer01"
    assert [p.name for p in flat.frame_paths()] == [f"images{i:04d}.png" for i in range(1, 5)]
    assert not with1.missing_reason and not flat.missing_reason
    assert "1 of 2 frame folders found without the 1/ level" in caplog.text
    assert [s.id for s in reader] == ["with1", "flat", "d-0", "t-0"]
    assert reader.samples("test")[0].source == feats / "test" / "t-0"


def test_phoenix2014t_missing_folder_reason_names_both_folders_and_extraction_reports_it(tmp_path):
    feats = tmp_path / "features" / "fullFrame-210x260px"
    write_t_corpus(tmp_path, {"dev": [t_row("gone"), t_row("here")]})
    write_png_frames(feats / "dev" / "here", 3)
    gone, here = Phoenix2014TReader(tmp_path).samples("dev")
    assert gone.id == "gone" and gone.source == feats / "dev" / "gone" / "1"  # still returned
    assert str(feats / "dev" / "gone" / "1") in gone.missing_reason
    assert f"{feats / 'dev' / 'gone'} (without 1/)" in gone.missing_reason
    manifest = extract_frames([gone, here], tmp_path / "out", 8, workers=1, max_bad_fraction=0.5,
                              progress=False)
    (failed,) = manifest["failed"]
    assert failed["id"] == "gone" and failed["reason"] == gone.missing_reason
    assert [s["id"] for s in manifest["samples"]] == ["here"] and manifest["samples"][0]["n_frames"] == 3
    with pytest.raises(FrameExtractionError, match="without 1/"):
        extract_frames([gone, here], tmp_path / "out2", 8, workers=1, max_bad_fraction=0.0, progress=False)


@pytest.mark.parametrize(
    ("header", "lines", "needle"),
    [
        ("name,video,start,end,speaker,orth,translation\n", [], ":1: header"),
        ("id|folder|signer|annotation\n", [], ":1: header 'id|folder|signer|annotation'"),
        ("", [], ":1: header empty file"),
        (T_HEADER, [t_row("a"), "b|b/1/*.png|-1|-1|Signer01|X"], ":3: 6 fields, expected 7"),
        (T_HEADER, [t_row("a"), "", t_row("a")], ":4: duplicate name 'a'"),
    ],
)
def test_phoenix2014t_format_errors_name_file_and_line(tmp_path, header, lines, needle):
    write_t_corpus(tmp_path, {"train": lines}, header=header)
    with pytest.raises(CorpusError, match=re.escape(needle)) as exc:
        Phoenix2014TReader(tmp_path).samples("train")
    assert "PHOENIX-2014-T.train.corpus.csv:" in str(exc.value)


def test_phoenix2014t_layout_errors(tmp_path):
    with pytest.raises(CorpusError, match="PHOENIX-2014-T layout"):
        Phoenix2014TReader(tmp_path)
    write_t_corpus(tmp_path, {"train": []})
    with pytest.raises(CorpusError, match="PHOENIX-2014-T.dev.corpus.csv: file not found"):
        Phoenix2014TReader(tmp_path).samples("dev")
    with pytest.raises(CorpusError, match="unknown split 'val'"):
        Phoenix2014TReader(tmp_path).samples("val")


# ---------------------------------------------------------------------------------------------------------
# CSL-Daily

MAP_HEADER = "index|name|length|gloss|char|word|postag\n"


def map_row(i: int, name: str, gloss: str = "他 今天 年龄 4") -> str:
    return f"{i}|{name}|54|{gloss}|他 今 年 四 岁 。|他 今年 四 岁 。|r t m q w"


def write_csl(root: Path, names: list[str], split_rows: list[str], split_at_root: bool = False,
              glosses: dict[str, str] | None = None) -> Path:
    label = root / "sentence_label"
    label.mkdir(parents=True, exist_ok=True)
    glosses = glosses or {}
    rows = [map_row(i, n, *([glosses[n]] if n in glosses else [])) for i, n in enumerate(names)]
    (label / "video_map.txt").write_text(MAP_HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    (root if split_at_root else label).joinpath("split_1.txt").write_text("name|split\n" + "".join(
        r + "\n" for r in split_rows))
    return root


CSL_NAMES = ["S000000_P0000_T00", "S000000_P0004_T00", "S000001_P0008_T00", "S000002_P0000_T00",
             "S000003_P0001_T00", "S000004_P0002_T00", "S000005_P0009_T00"]
CSL_SPLITS = {"S000000_P0000_T00": "train", "S000000_P0004_T00": "dev", "S000001_P0008_T00": "train",
              "S000002_P0000_T00": "test", "S000003_P0001_T00": "dev", "S000004_P0002_T00": "test",
              "S000005_P0009_T00": "train"}


@pytest.mark.parametrize("split_at_root", [False, True])
def test_csl_daily_splits_signers_and_no_last_sample_drop(tmp_path, split_at_root):
    write_csl(tmp_path, CSL_NAMES, [f"{n}|{s}" for n, s in CSL_SPLITS.items()], split_at_root=split_at_root,
              glosses={"S000000_P0000_T00": "他  今天\t年龄 4"})
    reader = CslDailyReader(tmp_path)
    expected = {split: [n for n in CSL_NAMES if CSL_SPLITS[n] == split] for split in SPLITS}
    for split in SPLITS:
        samples = reader.samples(split)
        assert [s.id for s in samples] == expected[split]  # video_map order, every row
        assert samples[-1].id == expected[split][-1]  # the reference code drops this one
        assert all(s.split == split and s.kind == "frames" and s.pattern == "*.jpg" for s in samples)
    first = reader.samples("train")[0]
    assert first.glosses == ("他", "今天", "年龄", "4") and first.signer == "P0000"
    assert first.source == tmp_path / "sentence" / "frames_512x512" / "S000000_P0000_T00"
    assert [s.signer for s in reader.samples("test")] == ["P0000", "P0002"]
    assert len(list(reader)) == len(CSL_NAMES) and reader.unsplit == ()


def test_csl_daily_signer_parsing():
    assert csl_daily_signer("S000020_P0000_T00") == "P0000"
    assert csl_daily_signer("S007193_P0009_T01") == "P0009"
    for odd in ("S000020-P0000-T00", "clip_01", "S000020_P0000_T00_extra", ""):
        assert csl_daily_signer(odd) == "unknown"


def test_csl_daily_names_missing_from_the_split_file_go_to_train_counted_and_logged(tmp_path, caplog):
    write_csl(tmp_path, CSL_NAMES, [f"{n}|{s}" for n, s in CSL_SPLITS.items() if n not in
                                    ("S000000_P0004_T00", "S000005_P0009_T00")])
    reader = CslDailyReader(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ctca.data.corpus"):
        train = reader.samples("train")
        reader.samples("dev")  # parsed once: logged once
    assert [s.id for s in train] == ["S000000_P0000_T00", "S000000_P0004_T00", "S000001_P0008_T00",
                                     "S000005_P0009_T00"]
    assert reader.unsplit == ("S000000_P0004_T00", "S000005_P0009_T00")
    assert [s.id for s in reader.samples("dev")] == ["S000003_P0001_T00"]
    (rec,) = caplog.records
    assert rec.levelno == logging.WARNING
    assert "video_map.txt: 2 of 7 names are not in" in rec.getMessage()
    assert ("assigned to train (as the reference code does): S000000_P0004_T00, S000005_P0009_T00"
            in rec.getMessage())


@pytest.mark.parametrize(
    ("names", "split_rows", "needle"),
    [
        (CSL_NAMES[:2], ["S000000_P0000_T00|train", "S000000_P0004_T00|val"],
         "split_1.txt:3: split 'val' for 'S000000_P0004_T00', expected one of ('train', 'dev', 'test')"),
        (CSL_NAMES[:1], ["S000000_P0000_T00|train", "S999999_P0000_T00|dev", "S999998_P0000_T00|test"],
         "split_1.txt: 2 names are not in"),
        (CSL_NAMES[:1], ["S000000_P0000_T00|train", "S000000_P0000_T00|dev"],
         "split_1.txt:3: duplicate name 'S000000_P0000_T00'"),
        (CSL_NAMES[:1], ["S000000_P0000_T00|train|x"], "split_1.txt:2: 3 fields, expected 2"),
    ],
)
def test_csl_daily_split_file_errors(tmp_path, names, split_rows, needle):
    write_csl(tmp_path, names, split_rows)
    with pytest.raises(CorpusError, match=re.escape(needle)) as exc:
        CslDailyReader(tmp_path).samples("train")
    if "not in" in needle:
        assert "S999999_P0000_T00" in str(exc.value) and "S999998_P0000_T00" in str(exc.value)


def test_csl_daily_video_map_and_layout_errors(tmp_path):
    with pytest.raises(CorpusError, match="CSL-Daily layout"):
        CslDailyReader(tmp_path)
    write_csl(tmp_path, [], [])
    (tmp_path / "sentence_label" / "video_map.txt").write_text("name|gloss\nS0_P0_T0|A\n")
    with pytest.raises(CorpusError, match=re.escape("video_map.txt:1: header 'name|gloss'")):
        CslDailyReader(tmp_path).samples("train")
    video_map = tmp_path / "sentence_label" / "video_map.txt"
    video_map.write_text(MAP_HEADER + map_row(0, "S0_P0_T0") + "\n1|S1|3\n")
    with pytest.raises(CorpusError, match=re.escape("video_map.txt:3: 3 fields, expected 7")):
        CslDailyReader(tmp_path).samples("train")
    (tmp_path / "sentence_label" / "split_1.txt").unlink()
    with pytest.raises(CorpusError, match="no split_1.txt"):
        CslDailyReader(tmp_path).samples("train")


def test_csl_daily_jpeg_frame_folders_extract(tmp_path):
    names = CSL_NAMES[:3]
    write_csl(tmp_path, names, [f"{n}|{CSL_SPLITS[n]}" for n in names])
    frames = tmp_path / "sentence" / "frames_512x512"
    write_png_frames(frames / names[0], 5, ext="jpg", name="{:06d}")
    write_png_frames(frames / names[1], 3, ext="jpg", name="{:06d}")
    (frames / names[1] / "ignored.png").write_bytes(b"")  # only *.jpg are frames
    reader = CslDailyReader(tmp_path)
    samples = list(reader)
    manifest = extract_frames(samples, tmp_path / "out", 8, workers=1, max_bad_fraction=0.5, progress=False)
    got = {s["id"]: s for s in manifest["samples"]}
    assert got[names[0]]["n_frames"] == 5 and got[names[1]]["n_frames"] == 3
    assert got[names[0]]["signer"] == "P0000" and got[names[0]]["glosses"] == ["他", "今天", "年龄", "4"]
    out = read_sample(tmp_path / "out", got[names[0]])
    assert out.shape == (5, 8, 8, 3)
    # JPEG is lossy: the flat BGR (10i, 100, 200) frame comes back close to RGB (200, 100, 10i)
    assert np.abs(out[2].astype(int) - np.array([200, 100, 20])).max() <= 8
    (failed,) = manifest["failed"]
    assert failed["id"] == names[2] and failed["reason"] == "frame folder not found"


# ---------------------------------------------------------------------------------------------------------
# open_corpus


def test_open_corpus_for_every_dataset_name(tmp_path):
    synth = tmp_path / "synth"
    write_corpus(synth, {"train": ["a|a.mp4|S|X"]})
    (synth / "synthsign.json").write_text("{}")
    p14 = tmp_path / "p14"
    write_corpus(p14, {"train": ["a|a/1/*.png|Signer01|X"]})
    p14t = write_t_corpus(tmp_path / "p14t", {"train": [t_row("a")]})
    csl = write_csl(tmp_path / "csl", CSL_NAMES[:1], [f"{CSL_NAMES[0]}|train"])
    manifest = tmp_path / "corpus.csv"
    (tmp_path / "a.mp4").write_bytes(b"x")  # only its existence is checked when reading the manifest
    manifest.write_text("id,path,signer,split,glosses\na,a.mp4,S,train,X\n")
    roots = {"synthetic": synth, "phoenix2014": p14, "phoenix2014t": p14t, "csl-daily": csl, "manifest": manifest}
    assert set(roots) == set(READERS)
    for dataset, root in roots.items():
        reader = open_corpus(dataset, root)
        assert isinstance(reader, READERS[dataset]) and reader.name == dataset and reader.root == root
        assert len(reader.samples("train")) == 1
    with pytest.raises(CorpusError) as exc:
        open_corpus("csl", tmp_path)
    assert "'synthetic', 'phoenix2014', 'phoenix2014t', 'csl-daily', 'manifest'" in str(exc.value)


def test_data_config_accepts_every_reader():
    from ctca.config import DataConfig

    assert set(typing.get_args(typing.get_type_hints(DataConfig)["dataset"])) == set(READERS)


def test_frames_are_read_in_natural_order_when_numbers_are_not_zero_padded(tmp_path):
    from ctca.data.corpus import Sample

    for i in (1, 2, 10, 11):
        (tmp_path / f"img_{i}.jpg").write_bytes(b"")
    s = Sample(id="x", split="dev", signer="P0", glosses=("A",), source=tmp_path, kind="frames", pattern="*.jpg")
    assert [p.name for p in s.frame_paths()] == ["img_1.jpg", "img_2.jpg", "img_10.jpg", "img_11.jpg"]


def test_corpus_fingerprint_follows_names_sizes_and_labels_not_mtimes(tmp_path):
    import os
    import shutil

    from ctca.data.corpus import corpus_fingerprint

    root = tmp_path / "c"
    write_corpus(root, {"train": ["a|a/1/*.png|Signer01|X Y", "b|b/1/*.png|Signer02|Y"],
                        "dev": ["c|c/1/*.png|Signer01|X", "gone|gone/1/*.png|Signer01|X"], "test": []})
    for sid, n in (("a", 3), ("b", 2)):
        write_png_frames(root / PHOENIX_FEATURES / "train" / sid / "1", n)
    write_png_frames(root / PHOENIX_FEATURES / "dev" / "c" / "1", 4)
    base = corpus_fingerprint(Phoenix2014Reader(root))
    assert base["samples"] == {"train": 2, "dev": 2} and base["media_files"] == 9 and base["missing"] == 1
    assert base["media_bytes"] == sum(p.stat().st_size for p in root.rglob("*.png"))

    frame = root / PHOENIX_FEATURES / "train" / "a" / "1" / "images0001.png"
    os.utime(frame, (1, 1))  # touched: same fingerprint (a copy elsewhere keeps its fingerprint too)
    assert corpus_fingerprint(Phoenix2014Reader(root)) == base
    shutil.copytree(root, tmp_path / "moved")
    assert corpus_fingerprint(Phoenix2014Reader(tmp_path / "moved"))["sha256"] == base["sha256"]

    frame.write_bytes(frame.read_bytes() + b"\0")  # a frame of another size
    assert corpus_fingerprint(Phoenix2014Reader(root))["sha256"] != base["sha256"]
    frame.write_bytes(frame.read_bytes()[:-1])
    assert corpus_fingerprint(Phoenix2014Reader(root))["sha256"] == base["sha256"]
    write_png_frames(root / PHOENIX_FEATURES / "dev" / "gone" / "1", 1)  # the missing folder appears
    assert corpus_fingerprint(Phoenix2014Reader(root))["sha256"] != base["sha256"]
    shutil.rmtree(root / PHOENIX_FEATURES / "dev" / "gone")
    csv = root / "annotations" / "manual" / "train.corpus.csv"
    csv.write_text(csv.read_text().replace("X Y", "X Z"))  # a relabelled sentence
    assert corpus_fingerprint(Phoenix2014Reader(root))["sha256"] != base["sha256"]
