"""Manifest corpora (data.dataset: manifest): a CSV/TSV of id, path, signer, split, glosses, validated in one
pass with every error named by file:line; and the whole DVC pipeline on a tiny manifest corpus."""

import json
import logging
import shutil
from pathlib import Path

import cv2
import pytest
import yaml
from conftest import TINY_PARAMS, TINY_SYNTH
from test_corpus import write_png_frames
from test_frames import clip, write_mp4
from test_pipeline import REPO, copy_project, deep_merge, run

from ctca.config import ConfigError, parse_params
from ctca.data.corpus import (
    MANIFEST_ERRORS_SHOWN,
    READERS,
    SPLITS,
    CorpusError,
    ManifestReader,
    SynthSignReader,
    open_corpus,
)
from ctca.data.frames import extract_frames

HEADER = "id,path,signer,split,glosses\n"


def write_manifest(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def media(tmp_path) -> Path:
    """A corpus folder with a video, a PNG frame folder, a JPEG frame folder and an absolute-path video."""
    root = tmp_path / "corpus"
    write_mp4(root / "videos" / "a.mp4", clip(6))
    write_mp4(root / "videos" / "with,comma.mp4", clip(5, seed=1))
    write_png_frames(root / "frames" / "b", 4)
    write_png_frames(root / "frames" / "c", 3, ext="jpg")
    write_mp4(tmp_path / "elsewhere" / "d.mp4", clip(7, seed=2))
    return root


def test_a_valid_csv_manifest_yields_every_row_as_a_sample(media, tmp_path):
    absolute = tmp_path / "elsewhere" / "d.mp4"
    manifest = write_manifest(media / "manifest.csv", [
        "a,videos/a.mp4,Signer01,train,__ON__ HAUS  BAUM",  # double space: split on any whitespace
        "",  # blank lines are skipped
        " b , frames/b , Signer02 , train , HAUS ",  # surrounding whitespace is ignored
        'c,frames/c,Signer01,dev,"BAUM HAUS"',
        f"d,{absolute},Signer03,test,BAUM",
        'e,"videos/with,comma.mp4",Signer03,test,HAUS',  # RFC 4180 quoting
    ])
    reader = open_corpus("manifest", manifest)
    assert isinstance(reader, ManifestReader) and reader.name == "manifest" and reader.root == manifest
    assert [(s.id, s.split) for s in reader] == [("a", "train"), ("b", "train"), ("c", "dev"), ("d", "test"),
                                                 ("e", "test")]
    a, b = reader.samples("train")
    assert a.glosses == ("__ON__", "HAUS", "BAUM") and a.signer == "Signer01"
    assert a.kind == "video" and a.source == media / "videos" / "a.mp4"  # relative to the manifest's folder
    assert b.kind == "frames" and b.source == media / "frames" / "b" and b.pattern == "*.png"
    assert (b.signer, b.glosses) == ("Signer02", ("HAUS",))
    assert [p.name for p in b.frame_paths()] == [f"images{i:04d}.png" for i in range(1, 5)]
    (c,) = reader.samples("dev")
    assert c.kind == "frames" and c.pattern == "*.jpg" and len(c.frame_paths()) == 3  # the folder's image suffix
    assert c.glosses == ("BAUM", "HAUS")
    d, e = reader.samples("test")
    assert d.source == absolute and d.kind == "video"
    assert e.source == media / "videos" / "with,comma.mp4"
    # the samples extract like any corpus's
    summary = extract_frames(list(reader), tmp_path / "out", size=16, workers=1, progress=False)
    assert summary["counts"] == {"train": {"ok": 2, "failed": 0}, "dev": {"ok": 1, "failed": 0},
                                 "test": {"ok": 2, "failed": 0}}
    assert [s["n_frames"] for s in summary["samples"]] == [6, 4, 3, 7, 5]


def test_a_tsv_manifest_with_columns_in_any_order_a_glob_and_extra_columns(media, caplog):
    (media / "frames" / "c" / "notes.txt").write_text("not a frame")
    manifest = write_manifest(media / "list.tsv", [
        "HAUS \"BAUM\"\tb\tframes/b/*.png\tdev\tSigner02\tfirst",  # TSV has no quoting: quotes are kept
        "BAUM\tc\tframes/c\ttrain\tSigner01\t",
    ], header="glosses\tid\tpath\tsplit\tsigner\tcomment\n")
    with caplog.at_level(logging.INFO, logger="ctca.data.corpus"):
        reader = ManifestReader(manifest)
        (b,) = reader.samples("dev")
    assert b.glosses == ("HAUS", '"BAUM"') and b.pattern == "*.png" and b.source == media / "frames" / "b"
    (c,) = reader.samples("train")
    assert c.pattern == "*.jpg" and [p.suffix for p in c.frame_paths()] == [".jpg"] * 3
    assert reader.samples("test") == []
    assert "columns not used: comment" in caplog.text and "no test rows" in caplog.text


@pytest.mark.parametrize(
    ("lines", "line", "needle"),
    [
        (["a,videos/missing.mp4,S1,train,A"], 2, "path 'videos/missing.mp4': no such file or folder"),
        (["a,frames/nope,S1,train,A"], 2, "path 'frames/nope': no such file or folder"),
        (["a,nope/*.png,S1,train,A"], 2, "path 'nope/*.png': frame folder not found"),
        (["a,videos/a.mp4,S1,train,"], 2, "empty glosses; expected a space-separated gloss sequence"),
        (["a,videos/a.mp4,S1,train,  "], 2, "empty glosses"),
        (["a,videos/a.mp4,S1,val,A"], 2, "unknown split 'val'; expected one of train, dev, test"),
        (["a,videos/a.mp4,S1,Train,A"], 2, "unknown split 'Train'"),
        (["a,videos/a.mp4,S1,train,A", "a,frames/b,S1,dev,B"], 3, "duplicate id 'a' (first at line 2)"),
        (["a,videos/a.mp4,S1,train,A", ",frames/b,S1,dev,B"], 3, "empty id"),
        (["a b,videos/a.mp4,S1,train,A"], 2, "id 'a b': expected no whitespace"),
        (["x/y,videos/a.mp4,S1,train,A"], 2, "id 'x/y': expected no whitespace, '/'"),
        (["..,videos/a.mp4,S1,train,A"], 2, "id '..'"),
        (["a,videos/a.mp4,,train,A"], 2, "empty signer"),
        (["a,,S1,train,A"], 2, "empty path; expected a video file or a folder of frame images"),
        (["a,frames/b/images0001.png,S1,train,A"], 2,
         "path 'frames/b/images0001.png': an image file; expected a video file or a folder"),
        (["a,videos/a.mp4,S1,train"], 2, "4 fields, expected 5 (id,path,signer,split,glosses)"),
        (["a,videos/a.mp4,S1,train,A,extra"], 2, "6 fields, expected 5"),
        # a quoted field over two lines: the next record's line number is still its first physical line
        (['a,videos/a.mp4,S1,train,"A\nB"', "a,videos/a.mp4,S1,train,A"], 4, "duplicate id 'a' (first at line 2)"),
    ],
)
def test_each_bad_row_is_an_error_naming_file_and_line(media, lines, line, needle):
    manifest = write_manifest(media / "manifest.csv", lines)
    with pytest.raises(CorpusError) as exc:
        ManifestReader(manifest).samples("train")
    msg = str(exc.value)
    assert f"{manifest}:{line}: {needle}" in msg, msg
    assert msg.startswith(f"{manifest}: 1 error in the manifest")


def test_a_frame_folder_with_two_image_suffixes_asks_for_a_glob(media):
    write_png_frames(media / "frames" / "b", 2, ext="jpg")
    manifest = write_manifest(media / "manifest.csv", ["b,frames/b,S1,train,A"])
    with pytest.raises(CorpusError, match=r"manifest.csv:2: path 'frames/b': the frame folder holds \.jpg and "
                                          r"\.png images; name one kind with a glob \(e\.g\. 'frames/b/\*\.jpg'\)"):
        ManifestReader(manifest).samples("train")


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        ("id,path,signer,split\n", "missing column glosses; expected a header with 'id,path,signer,split,glosses'"),
        ("id,path,split,glosses,path\n", "missing column signer; repeated column path"),
        ("id\tpath\tsigner\tsplit\tglosses\n", "missing columns id, path, signer, split, glosses"),  # tabs in .csv
        ("", "empty file"),
    ],
)
def test_header_errors_name_line_1_and_the_delimiter(media, header, needle):
    manifest = write_manifest(media / "manifest.csv", ["a,videos/a.mp4,S1,train,A"] if header else [], header)
    with pytest.raises(CorpusError) as exc:
        ManifestReader(manifest).samples("dev")
    assert f"{manifest}:1: {needle}" in str(exc.value)
    if header:
        assert "(any order, delimiter ',' from the .csv extension)" in str(exc.value)


def test_all_bad_rows_are_reported_together_and_good_rows_are_not(media):
    manifest = write_manifest(media / "manifest.csv", [
        "a,videos/a.mp4,S1,train,A",  # 2: fine
        "b,videos/gone.mp4,S1,train,A",  # 3
        "c,frames/b,S1,validation,",  # 4: two errors on one line
        "d,frames/c,S1,dev,B",  # 5: fine
        "a,frames/c,S1,dev,B",  # 6
    ])
    with pytest.raises(CorpusError) as exc:
        ManifestReader(manifest).samples("train")
    lines = str(exc.value).splitlines()
    assert lines[0] == (f"{manifest}: 4 errors in the manifest (columns id, path, signer, split, glosses); "
                        "nothing was read, fix them and rerun:")
    assert [ln.split(": ", 1)[0] for ln in lines[1:]] == [f"{manifest}:{n}" for n in (3, 4, 4, 6)]
    assert "unknown split 'validation'" in lines[2] and "empty glosses" in lines[3]


def test_many_errors_are_capped_with_a_count(media):
    n = MANIFEST_ERRORS_SHOWN + 7
    manifest = write_manifest(media / "manifest.csv", [f"s{i},videos/a.mp4,S1,nope,A" for i in range(n)])
    with pytest.raises(CorpusError) as exc:
        ManifestReader(manifest).samples("train")
    lines = str(exc.value).splitlines()
    assert lines[0].startswith(f"{manifest}: {n} errors in the manifest")
    assert len(lines) == 1 + MANIFEST_ERRORS_SHOWN + 1 and lines[-1] == "... and 7 more"
    assert lines[-2].startswith(f"{manifest}:{MANIFEST_ERRORS_SHOWN + 1}: unknown split 'nope'")


def test_manifest_file_and_split_errors(media, tmp_path):
    with pytest.raises(CorpusError, match="data.root must name the manifest file, a .csv or .tsv"):
        ManifestReader(media)  # a folder
    with pytest.raises(CorpusError, match="manifest file not found"):
        ManifestReader(media / "missing.csv")
    dev_only = write_manifest(media / "dev_only.csv", ["a,videos/a.mp4,S1,dev,A"])
    with pytest.raises(CorpusError, match=r"dev_only.csv: no train rows \(1 rows in all\)"):
        ManifestReader(dev_only).samples("dev")
    latin1 = media / "latin1.csv"
    latin1.write_bytes(HEADER.encode() + "a,videos/a.mp4,S1,train,GRÜN\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="latin1.csv: not UTF-8 text"):
        ManifestReader(latin1).samples("train")
    bad_quote = write_manifest(media / "quote.csv", ["", 'a,"videos/a.mp4"x,S1,train,A'])
    with pytest.raises(CorpusError, match=r"quote.csv:3: ',' expected after '\"'"):
        ManifestReader(bad_quote).samples("train")
    bom = media / "bom.csv"  # spreadsheet exports start with a byte-order mark
    bom.write_bytes("\ufeff".encode() + HEADER.encode() + b"a,videos/a.mp4,S1,train,A\n")
    assert [s.id for s in ManifestReader(bom)] == ["a"]
    with pytest.raises(CorpusError, match="unknown split 'val'"):
        ManifestReader(bom).samples("val")


def test_unreadable_but_present_media_are_left_to_frame_extraction(media, tmp_path):
    """Not manifest errors: extraction lists them with reasons and applies data.max_bad_fraction."""
    (media / "videos" / "broken.mp4").write_bytes(b"not a video")
    (media / "frames" / "empty").mkdir()
    manifest = write_manifest(media / "manifest.csv", [
        "a,videos/a.mp4,S1,train,A",
        "broken,videos/broken.mp4,S1,train,A",
        "empty,frames/empty,S1,dev,A",
    ])
    samples = list(ManifestReader(manifest))
    assert [s.id for s in samples] == ["a", "broken", "empty"]
    summary = extract_frames(samples, tmp_path / "out", size=16, workers=1, max_bad_fraction=1.0, progress=False)
    failed = {f["id"]: f["reason"] for f in summary["failed"]}
    assert set(failed) == {"broken", "empty"}, failed
    assert "no frames matching '*.png'" in failed["empty"]


def test_params_root_rules_and_the_scoring_protocol():
    from ctca.evaluate import resolve_protocol

    params = parse_params({"data": {"dataset": "manifest", "root": "corpus/manifest.tsv"}})
    assert resolve_protocol(params) == "none"
    assert parse_params({"data": {"dataset": "manifest", "root": "/data/x/LIST.CSV"}}).data.root.endswith("CSV")
    with pytest.raises(ConfigError, match="data.root='corpus' is invalid; allowed: the manifest file, a path "
                                          "ending in .csv or .tsv"):
        parse_params({"data": {"dataset": "manifest", "root": "corpus"}})
    with pytest.raises(ConfigError, match="a .csv/.tsv manifest needs data.dataset=manifest"):
        parse_params({"data": {"dataset": "phoenix2014", "root": "corpus/manifest.csv"}})
    assert "manifest" in READERS


# ---------------------------------------------------------------------------------------------------------
# end to end


def tiny_manifest_corpus(corpus: Path, scratch: Path) -> dict[str, int]:
    """8 train / 2 dev / 2 test rendered SynthSign sentences as mp4 files under ``corpus/videos/`` (one
    training sentence as a PNG frame folder instead) and ``corpus/manifest.csv`` pointing at them."""
    from ctca.data.synthetic import SynthConfig, generate

    synth = {**TINY_SYNTH, "n_train": 8, "n_dev": 2, "n_test": 2}
    workers = synth.pop("workers")
    generate(SynthConfig(**synth), scratch, workers=workers, progress=False)
    rows = []
    folder_row = False
    for s in SynthSignReader(scratch):
        if s.split == "train" and not folder_row:
            folder_row = True
            cap = cv2.VideoCapture(str(s.source))
            folder = corpus / "frames" / s.id
            folder.mkdir(parents=True)
            n = 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                cv2.imwrite(str(folder / f"f{n}.png"), bgr)  # not zero-padded: read in natural order
                n += 1
            cap.release()
            assert n > 0
            rel = f"frames/{s.id}"
        else:
            rel = f"videos/{s.split}/{s.id}.mp4"
            (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s.source, corpus / rel)
        rows.append(f"{s.id},{rel},{s.signer},{s.split},{' '.join(s.glosses)}")
    write_manifest(corpus / "manifest.csv", rows)
    return {split: sum(f",{split}," in r for r in rows) for split in SPLITS}


@pytest.mark.slow
def test_dvc_repro_on_a_manifest_corpus(tmp_path):
    if shutil.which("dvc") is None:
        pytest.fail("dvc is not installed: pip install -e '.[dev]'")
    project = tmp_path / "proj"
    project.mkdir()
    copy_project(project)
    counts = tiny_manifest_corpus(project / "corpus", tmp_path / "synth")
    assert counts == {"train": 8, "dev": 2, "test": 2}
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY_PARAMS)
    params = deep_merge(params, {"data": {"dataset": "manifest", "root": "corpus/manifest.csv"}})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny manifest"]):
        run(cmd, project)

    run(["dvc", "repro"], project)
    frames = json.loads((project / "work" / "frames" / "manifest.json").read_text())
    assert frames["counts"] == {split: {"ok": n, "failed": 0} for split, n in counts.items()}
    assert sum(s["source"].endswith(".mp4") for s in frames["samples"]) == 11  # + one frame folder
    report = (project / "reports" / "report.md").read_text()
    assert "## Word error rate" in report and "| dev |" in report and "| test |" in report
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    assert set(metrics) == {"dev_wer", "dev_del", "dev_ins", "test_wer", "test_del", "test_ins"}
    assert all(isinstance(v, int | float) for v in metrics.values()), metrics
    evaluation = json.loads((project / "work" / "eval" / "summary.json").read_text())
    assert evaluation["protocol"] == "none"  # evaluate.protocol=auto for a manifest corpus
    assert evaluation["splits"]["test"]["N"] == sum(
        len(s["glosses"]) for s in frames["samples"] if s["split"] == "test")

    # nothing declared by hand: check_corpus fingerprints the corpus on every repro; unchanged, nothing reruns
    run(["dvc", "repro", "-s", "check_corpus"], project)
    status = run(["dvc", "status", "extract_frames"], project).stdout
    assert "corpus.json" not in status, status
    # editing the manifest makes extract_frames (and what follows) stale
    manifest = project / "corpus" / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(",test,", ",test,__ON__ ", 1))
    run(["dvc", "repro", "-s", "check_corpus"], project)
    status = run(["dvc", "status", "extract_frames"], project).stdout
    assert "work/stages/corpus.json" in status and "modified" in status, status
