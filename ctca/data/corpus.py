"""Corpus readers: one interface over SynthSign, PHOENIX-2014 (and later PHOENIX-2014-T, CSL-Daily).

A reader turns a corpus on disk into :class:`Sample` records (id, split, signer, glosses, and where
the pixels are: a video file or a folder of frame images). Nothing is dropped here: a sample whose
video or frame folder is missing is still returned, and frame extraction reports it.
"""

from __future__ import annotations

import csv
import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "dev", "test")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
PHOENIX_FEATURES = Path("features") / "fullFrame-210x260px"
PHOENIX_HEADER = ["id", "folder", "signer", "annotation"]


class CorpusError(ValueError):
    """A corpus file is missing or malformed; the message names the file and what was expected."""


@dataclass(frozen=True)
class Sample:
    """One sentence video of a corpus.

    ``source`` is a video file when ``kind == "video"``; otherwise it is the frame folder and
    ``pattern`` the glob (relative to it) that lists the frames in temporal order when sorted.
    """

    id: str
    split: str
    signer: str
    glosses: tuple[str, ...]
    source: Path
    kind: str  # "video" | "frames"
    pattern: str = "*.png"

    def frame_paths(self) -> list[Path]:
        """Sorted frame files of a frame-folder sample (empty if the folder is missing)."""
        if self.kind != "frames":
            raise ValueError(f"{self.id}: frame_paths() on a {self.kind} sample")
        return sorted(Path(p) for p in glob.glob(str(self.source / self.pattern)))


def split_glosses(annotation: str) -> tuple[str, ...]:
    """Glosses of an annotation string. Splits on any whitespace: PHOENIX has double spaces."""
    return tuple(annotation.split())


def _source_from_folder(split_dir: Path, folder: str) -> tuple[Path, str, str]:
    """Resolve a corpus ``folder`` column (a video file name or a frame glob such as ``<id>/1/*.png``)."""
    rel = Path(folder)
    if rel.suffix.lower() in VIDEO_SUFFIXES:
        return split_dir / rel, "video", ""
    if any(ch in rel.name for ch in "*?["):
        return split_dir / rel.parent, "frames", rel.name
    return split_dir / rel, "frames", "*.png"


def read_phoenix_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a PHOENIX-2014 ``*.corpus.csv`` (``id|folder|signer|annotation``, no quoting)."""
    if not path.is_file():
        raise CorpusError(f"{path}: corpus file not found (expected a '|'-separated PHOENIX-2014 corpus CSV)")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="|", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header != PHOENIX_HEADER:
            raise CorpusError(f"{path}: header {header!r}, expected {'|'.join(PHOENIX_HEADER)!r}")
        rows = []
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 4:
                raise CorpusError(f"{path}:{lineno}: {len(row)} fields, expected 4 ({'|'.join(PHOENIX_HEADER)})")
            rows.append(dict(zip(PHOENIX_HEADER, row, strict=True)))
    return rows


class Phoenix2014Reader:
    """PHOENIX-2014 multisigner layout; also the on-disk format of the SynthSign corpus.

    ``root`` is the folder that holds ``annotations/`` and ``features/`` (for the real corpus,
    ``phoenix2014-release/phoenix-2014-multisigner``). The ``folder`` column is resolved relative
    to ``features/fullFrame-210x260px/<split>/``: a frame glob (PHOENIX) or a video file (SynthSign).
    """

    name = "phoenix2014"

    def __init__(self, root: Path | str):
        self.root = Path(root)
        if not (self.root / "annotations" / "manual").is_dir():
            raise CorpusError(
                f"{self.root}: no annotations/manual/ folder; expected the PHOENIX-2014 layout "
                "(annotations/manual/{train,dev,test}.corpus.csv, features/fullFrame-210x260px/<split>/)"
            )

    def corpus_file(self, split: str) -> Path:
        return self.root / "annotations" / "manual" / f"{split}.corpus.csv"

    def samples(self, split: str) -> list[Sample]:
        if split not in SPLITS:
            raise CorpusError(f"unknown split {split!r}; expected one of {SPLITS}")
        split_dir = self.root / PHOENIX_FEATURES / split
        out = []
        seen: set[str] = set()
        path = self.corpus_file(split)
        for row in read_phoenix_csv(path):
            if row["id"] in seen:
                raise CorpusError(f"{path}: duplicate id {row['id']!r}")
            seen.add(row["id"])
            source, kind, pattern = _source_from_folder(split_dir, row["folder"])
            out.append(
                Sample(
                    id=row["id"],
                    split=split,
                    signer=row["signer"],
                    glosses=split_glosses(row["annotation"]),
                    source=source,
                    kind=kind,
                    pattern=pattern,
                )
            )
        return out

    def __iter__(self) -> Iterator[Sample]:
        for split in SPLITS:
            yield from self.samples(split)


class SynthSignReader(Phoenix2014Reader):
    """The built-in synthetic corpus: PHOENIX-2014 layout plus ``synthsign.json`` (generator metadata)."""

    name = "synthetic"

    def __init__(self, root: Path | str):
        super().__init__(root)
        if not (self.root / "synthsign.json").is_file():
            raise CorpusError(f"{self.root}: no synthsign.json; not a SynthSign corpus (run the synthesize stage)")


READERS = {"synthetic": SynthSignReader, "phoenix2014": Phoenix2014Reader}


def open_corpus(dataset: str, root: Path | str) -> Phoenix2014Reader:
    """The reader for ``data.dataset`` at ``data.root``."""
    try:
        cls = READERS[dataset]
    except KeyError:
        raise CorpusError(f"data.dataset={dataset!r}: unknown; expected one of {sorted(READERS)}") from None
    return cls(root)
