"""Corpus readers: one interface over SynthSign, PHOENIX-2014, PHOENIX-2014-T, CSL-Daily and manifest corpora.

A reader turns a corpus on disk into :class:`Sample` records (id, split, signer, glosses, and where
the pixels are: a video file or a folder of frame images). Nothing is dropped here: a sample whose
video or frame folder is missing is still returned, and frame extraction reports it (the
``data.max_bad_fraction`` rule applies). Rules that single samples out are logged (logger
``ctca.data.corpus``), never applied silently.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
PHOENIX_FEATURES = Path("features") / "fullFrame-210x260px"
PHOENIX_HEADER = ["id", "folder", "signer", "annotation"]
PHOENIX_T_HEADER = ["name", "video", "start", "end", "speaker", "orth", "translation"]
CSL_DAILY_MAP_HEADER = ["index", "name", "length", "gloss", "char", "word", "postag"]
CSL_DAILY_SPLIT_HEADER = ["name", "split"]
CSL_DAILY_FRAMES = Path("sentence") / "frames_512x512"
MANIFEST_COLUMNS = ("id", "path", "signer", "split", "glosses")
MANIFEST_DELIMITERS: Mapping[str, str] = MappingProxyType({".csv": ",", ".tsv": "\t"})  # by file extension
FRAME_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MANIFEST_ERRORS_SHOWN = 20  # a manifest with more errors lists this many, then the count of the rest

#: PHOENIX-2014 samples known to be unusable, id -> why. The reader still returns them (with a
#: warning); training excludes them through the general CTC-feasibility rule (``ctca.train.feasibility``),
#: which lists every excluded clip with its reason. VAC drops row 2390 of train by index instead.
PHOENIX2014_KNOWN_BROKEN: Mapping[str, str] = MappingProxyType({
    "13April_2011_Wednesday_tagesschau_default-14":
        "16 frames for 16 glosses: CTC cannot fit it after 4x temporal downsampling",
})

# CSL-Daily names are S<sentence>_P<signer>_T<take>, e.g. S000020_P0000_T00 -> signer P0000.
_CSL_DAILY_NAME = re.compile(r"S\d+_(P\d+)_T\d+")


class CorpusError(ValueError):
    """A corpus file is missing or malformed; the message names the file (and line) and what was expected."""


@dataclass(frozen=True)
class Sample:
    """One sentence video of a corpus.

    ``source`` is a video file when ``kind == "video"``; otherwise it is the frame folder and
    ``pattern`` the glob (relative to it) that lists the frames in temporal order when sorted.
    ``missing_reason``, when set, is the failure reason to report if ``source`` does not exist
    (e.g. every folder the reader tried).
    """

    id: str
    split: str
    signer: str
    glosses: tuple[str, ...]
    source: Path
    kind: str  # "video" | "frames"
    pattern: str = "*.png"
    missing_reason: str = ""

    def frame_paths(self) -> list[Path]:
        """Frame files of a frame-folder sample in temporal order (empty if the folder is missing).

        Natural order (digit runs compared as numbers), so ``img_2.jpg`` precedes ``img_10.jpg`` even when
        a release does not zero-pad its frame numbers; for zero-padded names (PHOENIX) it is plain sorting.
        """
        if self.kind != "frames":
            raise ValueError(f"{self.id}: frame_paths() on a {self.kind} sample")
        return sorted((Path(p) for p in glob.glob(str(self.source / self.pattern))), key=_natural_key)


def _natural_key(path: Path) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]


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


def read_pipe_table(path: Path, header: Sequence[str], what: str) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` pairs of a ``|``-separated table with a header line and no quoting.

    Blank lines are skipped; a wrong header or field count is a :class:`CorpusError` naming
    ``file:line``. ``what`` names the format in the messages.
    """
    if not path.is_file():
        raise CorpusError(f"{path}: file not found (expected a '|'-separated {what})")
    expected = "|".join(header)
    # utf-8-sig: a byte-order mark (some editors add one) is not part of the first column name
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter="|", quoting=csv.QUOTE_NONE)
        first = next(reader, None)
        if first != list(header):
            got = "empty file" if first is None else repr("|".join(first))
            raise CorpusError(f"{path}:1: header {got}, expected {expected!r} ({what})")
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise CorpusError(
                    f"{path}:{reader.line_num}: {len(row)} fields, expected {len(header)} ({expected})"
                )
            rows.append((reader.line_num, dict(zip(header, row, strict=True))))
    return rows


def read_phoenix_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a PHOENIX-2014 ``*.corpus.csv`` (``id|folder|signer|annotation``, no quoting)."""
    return [row for _, row in read_pipe_table(path, PHOENIX_HEADER, "PHOENIX-2014 corpus CSV")]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise CorpusError(f"unknown split {split!r}; expected one of {SPLITS}")


class CorpusReader:
    """Interface of every reader: ``name`` (the ``data.dataset`` value), ``root``, ``samples(split)``.

    Iterating a reader yields the samples of train, dev and test in that order.
    """

    name: str = ""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def samples(self, split: str) -> list[Sample]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Sample]:
        for split in SPLITS:
            yield from self.samples(split)


class Phoenix2014Reader(CorpusReader):
    """PHOENIX-2014 multisigner layout; also the on-disk format of the SynthSign corpus.

    ``root`` is the folder that holds ``annotations/`` and ``features/`` (for the real corpus,
    ``phoenix2014-release/phoenix-2014-multisigner``). The ``folder`` column is resolved relative
    to ``features/fullFrame-210x260px/<split>/``: a frame glob (PHOENIX) or a video file (SynthSign).
    Ids in :attr:`known_broken` are returned like any other sample, with a logged warning.
    """

    name = "phoenix2014"
    known_broken: Mapping[str, str] = PHOENIX2014_KNOWN_BROKEN

    def __init__(self, root: Path | str):
        super().__init__(root)
        if not (self.root / "annotations" / "manual").is_dir():
            raise CorpusError(
                f"{self.root}: no annotations/manual/ folder; expected the PHOENIX-2014 layout "
                "(annotations/manual/{train,dev,test}.corpus.csv, features/fullFrame-210x260px/<split>/)"
            )

    def corpus_file(self, split: str) -> Path:
        return self.root / "annotations" / "manual" / f"{split}.corpus.csv"

    def samples(self, split: str) -> list[Sample]:
        _check_split(split)
        split_dir = self.root / PHOENIX_FEATURES / split
        out = []
        seen: set[str] = set()
        path = self.corpus_file(split)
        for lineno, row in read_pipe_table(path, PHOENIX_HEADER, "PHOENIX-2014 corpus CSV"):
            if row["id"] in seen:
                raise CorpusError(f"{path}:{lineno}: duplicate id {row['id']!r}")
            seen.add(row["id"])
            if row["id"] in self.known_broken:
                log.warning(
                    "%s/%s: known broken PHOENIX-2014 sample (%s); kept by the reader, excluded from "
                    "training by the CTC-feasibility rule (ctca.train.feasibility), which lists it with "
                    "its reason", split, row["id"], self.known_broken[row["id"]],
                )
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


class SynthSignReader(Phoenix2014Reader):
    """The built-in synthetic corpus: PHOENIX-2014 layout plus ``synthsign.json`` (generator metadata)."""

    name = "synthetic"
    # rendered clips: a PHOENIX id (synth.from_corpus) does not carry the real clip's length over
    known_broken: Mapping[str, str] = MappingProxyType({})

    def __init__(self, root: Path | str):
        super().__init__(root)
        if not (self.root / "synthsign.json").is_file():
            raise CorpusError(
                f"{self.root}: no synthsign.json; not a SynthSign corpus (run the synthesize stage)"
            )


def _without_level_1(rel: Path) -> Path | None:
    """A split-relative frame folder without its last ``1`` level (``<name>/1`` -> ``<name>``), else None."""
    parts = rel.parts
    if len(parts) < 2 or "1" not in parts:
        return None
    i = len(parts) - 1 - parts[::-1].index("1")
    return Path(*parts[:i], *parts[i + 1:])


class Phoenix2014TReader(CorpusReader):
    """PHOENIX-2014-T (release v3): ``root`` is the ``PHOENIX-2014-T`` folder.

    Reads ``annotations/manual/PHOENIX-2014-T.<split>.corpus.csv``
    (``name|video|start|end|speaker|orth|translation``); glosses are ``orth`` split on whitespace,
    signer is ``speaker``. Frames: ``features/fullFrame-210x260px/<split>/`` + the ``video`` glob
    (``<name>/1/*.png``) if that folder exists, else the same without the ``1/`` level (the real
    release has no ``1/``). When neither exists the sample is still returned, with a
    ``missing_reason`` naming both folders.
    """

    name = "phoenix2014t"

    def __init__(self, root: Path | str):
        super().__init__(root)
        if not (self.root / "annotations" / "manual").is_dir():
            raise CorpusError(
                f"{self.root}: no annotations/manual/ folder; expected the PHOENIX-2014-T layout "
                "(annotations/manual/PHOENIX-2014-T.{train,dev,test}.corpus.csv, "
                "features/fullFrame-210x260px/<split>/)"
            )

    def corpus_file(self, split: str) -> Path:
        return self.root / "annotations" / "manual" / f"PHOENIX-2014-T.{split}.corpus.csv"

    def samples(self, split: str) -> list[Sample]:
        _check_split(split)
        split_dir = self.root / PHOENIX_FEATURES / split
        path = self.corpus_file(split)
        out = []
        seen: set[str] = set()
        n_flat = 0
        for lineno, row in read_pipe_table(path, PHOENIX_T_HEADER, "PHOENIX-2014-T corpus CSV"):
            name = row["name"]
            if not name:
                raise CorpusError(f"{path}:{lineno}: empty name")
            if name in seen:
                raise CorpusError(f"{path}:{lineno}: duplicate name {name!r}")
            seen.add(name)
            source, kind, pattern = _source_from_folder(split_dir, row["video"])
            missing = ""
            if kind == "frames" and not source.is_dir():
                alt_rel = _without_level_1(source.relative_to(split_dir))
                alt = None if alt_rel is None else split_dir / alt_rel
                if alt is not None and alt.is_dir():
                    source, n_flat = alt, n_flat + 1
                elif alt is not None:
                    missing = (f"frame folder not found: tried {source} (the CSV video glob) "
                               f"and {alt} (without 1/)")
                else:
                    missing = f"frame folder not found: tried {source} (the CSV video glob)"
            out.append(
                Sample(
                    id=name,
                    split=split,
                    signer=row["speaker"],
                    glosses=split_glosses(row["orth"]),
                    source=source,
                    kind=kind,
                    pattern=pattern,
                    missing_reason=missing,
                )
            )
        if n_flat:
            log.info("%s: %d of %d frame folders found without the 1/ level of the CSV video glob "
                     "(the release layout)", path, n_flat, len(out))
        return out


def _some(names: Sequence[str], n: int = 5) -> str:
    """The first ``n`` names, comma-separated, and how many more."""
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def csl_daily_signer(name: str) -> str:
    """Signer of a CSL-Daily name ``S<sentence>_P<signer>_T<take>``: the ``P####`` part, else "unknown"."""
    m = _CSL_DAILY_NAME.fullmatch(name)
    return m.group(1) if m else "unknown"


class CslDailyReader(CorpusReader):
    """CSL-Daily: ``root`` holds ``sentence_label/`` and ``sentence/frames_512x512/``.

    Annotations: ``sentence_label/video_map.txt`` (``index|name|length|gloss|char|word|postag``),
    glosses = ``gloss`` split on whitespace; signer from the name (:func:`csl_daily_signer`).
    Splits: ``split_1.txt`` (``name|split``) at ``sentence_label/`` or else at the root. Names in
    ``video_map.txt`` that the split file lacks go to train, as in the reference code, and are logged
    and listed in :attr:`unsplit`; split-file names absent from ``video_map.txt`` are an error.
    Frames: ``sentence/frames_512x512/<name>/*.jpg``. Samples keep ``video_map.txt`` order; none is
    dropped (the reference code loses the last sample of every split).
    """

    name = "csl-daily"

    def __init__(self, root: Path | str):
        super().__init__(root)
        if not self.video_map_file.is_file():
            raise CorpusError(
                f"{self.root}: no sentence_label/video_map.txt; expected the CSL-Daily layout "
                "(sentence_label/video_map.txt, split_1.txt in sentence_label/ or the root, "
                "sentence/frames_512x512/<name>/*.jpg)"
            )
        self._by_split: dict[str, list[Sample]] | None = None
        self.unsplit: tuple[str, ...] = ()  # video_map names missing from the split file (put into train)

    @property
    def video_map_file(self) -> Path:
        return self.root / "sentence_label" / "video_map.txt"

    def split_file(self) -> Path:
        """``sentence_label/split_1.txt`` if present, else ``<root>/split_1.txt``."""
        for path in (self.root / "sentence_label" / "split_1.txt", self.root / "split_1.txt"):
            if path.is_file():
                return path
        raise CorpusError(
            f"{self.root}: no split_1.txt in sentence_label/ or the root "
            f"(expected a '|'-separated {'|'.join(CSL_DAILY_SPLIT_HEADER)} file with train/dev/test values)"
        )

    def _read_splits(self, path: Path) -> dict[str, str]:
        splits: dict[str, str] = {}
        for lineno, row in read_pipe_table(path, CSL_DAILY_SPLIT_HEADER, "CSL-Daily split file"):
            name, split = row["name"].strip(), row["split"].strip()
            if split not in SPLITS:
                raise CorpusError(f"{path}:{lineno}: split {split!r} for {name!r}, expected one of {SPLITS}")
            if name in splits:
                raise CorpusError(f"{path}:{lineno}: duplicate name {name!r}")
            splits[name] = split
        return splits

    def _index(self) -> dict[str, list[Sample]]:
        if self._by_split is not None:
            return self._by_split
        split_path = self.split_file()
        splits = self._read_splits(split_path)
        path = self.video_map_file
        by_split: dict[str, list[Sample]] = {s: [] for s in SPLITS}
        seen: set[str] = set()
        unsplit = []
        for lineno, row in read_pipe_table(path, CSL_DAILY_MAP_HEADER, "CSL-Daily video_map.txt"):
            name = row["name"].strip()
            if not name:
                raise CorpusError(f"{path}:{lineno}: empty name")
            if name in seen:
                raise CorpusError(f"{path}:{lineno}: duplicate name {name!r}")
            seen.add(name)
            split = splits.get(name)
            if split is None:
                split = "train"
                unsplit.append(name)
            by_split[split].append(
                Sample(
                    id=name,
                    split=split,
                    signer=csl_daily_signer(name),
                    glosses=split_glosses(row["gloss"]),
                    source=self.root / CSL_DAILY_FRAMES / name,
                    kind="frames",
                    pattern="*.jpg",
                )
            )
        orphans = [n for n in splits if n not in seen]
        if orphans:
            raise CorpusError(
                f"{split_path}: {len(orphans)} names are not in {path}: {_some(orphans)}"
            )
        if unsplit:
            log.warning(
                "%s: %d of %d names are not in %s; assigned to train (as the reference code does): %s",
                path, len(unsplit), len(seen), split_path, _some(unsplit),
            )
        self.unsplit = tuple(unsplit)
        self._by_split = by_split
        return by_split

    def samples(self, split: str) -> list[Sample]:
        _check_split(split)
        return list(self._index()[split])


class ManifestReader(CorpusReader):
    """A custom corpus described by one CSV or TSV manifest: ``root`` is the manifest file itself.

    Columns (a header line, any order, other columns ignored): ``id, path, signer, split, glosses``.
    The delimiter comes from the extension (``.csv``: comma, RFC 4180 quoting; ``.tsv``: tab, no
    quoting); surrounding whitespace of every field is ignored and blank lines are skipped.

    * ``path``: a video file, a folder of frame images, or a folder plus a glob (``clip7/*.jpg``);
      relative paths are resolved against the manifest's folder. A folder's frames are its images of
      the one image suffix it holds (``.png``, ``.jpg``, …; several suffixes need a glob); an image
      file is refused (not a video). Any other file is a video, decoded by OpenCV.
    * ``glosses``: the gloss sequence, split on whitespace; ``split``: ``train``, ``dev`` or ``test``.

    The whole manifest is validated in one pass and every row problem becomes one ``file:line: ...`` line
    of a single :class:`CorpusError` (a wrong field count, an empty or duplicate id, an id unusable as a
    folder name, an unknown split, an empty signer or gloss list, a path that does not exist): no row is
    dropped. A header without the five columns stops at once (``file:1``). A video that exists but does not decode is not a manifest error: frame
    extraction reports it (``data.max_bad_fraction``), as for every corpus.
    """

    name = "manifest"

    def __init__(self, root: Path | str):
        super().__init__(root)
        if self.root.suffix.lower() not in MANIFEST_DELIMITERS:
            raise CorpusError(
                f"{self.root}: data.root must name the manifest file, a .csv or .tsv with the columns "
                f"{', '.join(MANIFEST_COLUMNS)}"
            )
        if not self.root.is_file():
            raise CorpusError(
                f"{self.root}: manifest file not found (expected a {self.root.suffix} with the columns "
                f"{', '.join(MANIFEST_COLUMNS)})"
            )
        self._by_split: dict[str, list[Sample]] | None = None

    def samples(self, split: str) -> list[Sample]:
        _check_split(split)
        if self._by_split is None:
            self._by_split = self._read()
        return list(self._by_split[split])

    def _read(self) -> dict[str, list[Sample]]:
        path = self.root
        delimiter = MANIFEST_DELIMITERS[path.suffix.lower()]
        # TSV has no quoting (a tab cannot occur in a field); CSV quotes as RFC 4180 (a comma in a path)
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        by_split: dict[str, list[Sample]] = {s: [] for s in SPLITS}
        errors: list[str] = []
        first_line: dict[str, int] = {}
        try:
            # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column name
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(fh, delimiter=delimiter, quoting=quoting, strict=True)
                header = next(reader, None)
                columns = self._columns(path, header, delimiter)
                start = reader.line_num + 1  # first physical line of the next record
                for row in reader:
                    lineno, start = start, reader.line_num + 1
                    if not any(field.strip() for field in row):
                        continue
                    where = f"{path}:{lineno}"
                    if len(row) != len(header):
                        errors.append(f"{where}: {len(row)} fields, expected {len(header)} "
                                      f"({delimiter.join(header)})")
                        continue
                    rec = {name: row[i].strip() for name, i in columns.items()}
                    sample, problems = self._sample(rec, path.parent, lineno, first_line)
                    errors.extend(f"{where}: {problem}" for problem in problems)
                    if sample is not None:
                        by_split[sample.split].append(sample)
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except csv.Error as exc:
            raise CorpusError(f"{path}:{reader.line_num}: {exc}") from None
        if errors:
            shown = errors[:MANIFEST_ERRORS_SHOWN]
            more = len(errors) - len(shown)
            raise CorpusError(
                f"{path}: {len(errors)} error{'s' if len(errors) > 1 else ''} in the manifest (columns "
                f"{', '.join(MANIFEST_COLUMNS)}); nothing was read, fix them and rerun:\n"
                + "\n".join(shown) + (f"\n... and {more} more" if more else "")
            )
        if not by_split["train"]:
            raise CorpusError(f"{path}: no train rows ({sum(map(len, by_split.values()))} rows in all); "
                              "training needs at least one")
        for split in SPLITS[1:]:
            if not by_split[split]:
                log.warning("%s: no %s rows", path, split)
        return by_split

    @staticmethod
    def _columns(path: Path, header: list[str] | None, delimiter: str) -> dict[str, int]:
        """Column name -> index; a missing or repeated column is an error naming line 1."""
        expected = delimiter.join(MANIFEST_COLUMNS)
        if header is None:
            raise CorpusError(f"{path}:1: empty file, expected the header {expected!r}")
        names = [h.strip() for h in header]
        missing = [c for c in MANIFEST_COLUMNS if c not in names]
        repeated = sorted({c for c in MANIFEST_COLUMNS if names.count(c) > 1})
        if missing or repeated:
            what = "; ".join(
                part for part in (f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
                                  if missing else "",
                                  f"repeated column {', '.join(repeated)}" if repeated else "") if part
            )
            name = "tab" if delimiter == "\t" else repr(delimiter)
            raise CorpusError(
                f"{path}:1: {what}; expected a header with {expected!r} (any order, delimiter {name} "
                f"from the {path.suffix} extension), got {delimiter.join(names)!r}"
            )
        extra = [n for n in names if n not in MANIFEST_COLUMNS]
        if extra:
            log.info("%s: columns not used: %s", path, ", ".join(extra))
        return {c: names.index(c) for c in MANIFEST_COLUMNS}

    @staticmethod
    def _sample(rec: dict[str, str], base: Path, lineno: int,
                first_line: dict[str, int]) -> tuple[Sample | None, list[str]]:
        """The row's sample and no problems, or None and every problem of the row."""
        problems = []
        sid = rec["id"]
        if not sid:
            problems.append("empty id")
        elif sid in first_line:
            problems.append(f"duplicate id {sid!r} (first at line {first_line[sid]})")
        else:
            first_line[sid] = lineno
            if any(ch.isspace() or ch in "/\\" for ch in sid) or sid.startswith("."):
                problems.append(f"id {sid!r}: expected no whitespace, '/', '\\' or leading '.' (the id names "
                                "the sample's frame folder and its CTM/STM lines)")
        if rec["split"] not in SPLITS:
            problems.append(f"unknown split {rec['split']!r}; expected one of {', '.join(SPLITS)}")
        if not rec["signer"]:
            problems.append("empty signer; expected a signer name ('unknown' if it is not known)")
        glosses = split_glosses(rec["glosses"])
        if not glosses:
            problems.append("empty glosses; expected a space-separated gloss sequence")
        source, kind, pattern, problem = _manifest_source(base, rec["path"])
        if problem:
            problems.append(problem)
        if problems:
            return None, problems
        return Sample(id=sid, split=rec["split"], signer=rec["signer"], glosses=glosses, source=source,
                      kind=kind, pattern=pattern), []


def _manifest_source(base: Path, raw: str) -> tuple[Path, str, str, str]:
    """``(source, kind, pattern, problem)`` of a manifest ``path`` field; ``problem`` is "" when usable."""
    if not raw:
        return base, "video", "", "empty path; expected a video file or a folder of frame images"
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = base / path
    if any(ch in path.name for ch in "*?["):  # folder + glob, as PHOENIX's folder column
        if not path.parent.is_dir():
            return path, "frames", "", f"path {raw!r}: frame folder not found ({path.parent})"
        return path.parent, "frames", path.name, ""
    if path.is_dir():
        suffixes = set()
        with os.scandir(path) as entries:
            for entry in entries:
                suffix = os.path.splitext(entry.name)[1]
                if suffix.lower() in FRAME_IMAGE_SUFFIXES and entry.is_file():
                    suffixes.add(suffix)
        if len(suffixes) > 1:
            kinds = " and ".join(sorted(suffixes))
            return path, "frames", "", (f"path {raw!r}: the frame folder holds {kinds} images; name one kind "
                                        f"with a glob (e.g. '{Path(raw) / ('*' + min(suffixes))}')")
        # no image at all: kept, and frame extraction reports the empty folder (like an undecodable video)
        return path, "frames", f"*{suffixes.pop() if suffixes else '.png'}", ""
    if path.is_file():
        if path.suffix.lower() in FRAME_IMAGE_SUFFIXES:
            return path, "video", "", (f"path {raw!r}: an image file; expected a video file or a folder "
                                       "of frame images")
        return path, "video", "*.png", ""
    return path, "video", "", f"path {raw!r}: no such file or folder ({path})"


READERS: dict[str, type[CorpusReader]] = {
    "synthetic": SynthSignReader,
    "phoenix2014": Phoenix2014Reader,
    "phoenix2014t": Phoenix2014TReader,
    "csl-daily": CslDailyReader,
    "manifest": ManifestReader,
}


def open_corpus(dataset: str, root: Path | str) -> CorpusReader:
    """The reader for ``data.dataset`` at ``data.root`` (a folder; for ``manifest`` the manifest file)."""
    try:
        cls = READERS[dataset]
    except KeyError:
        raise CorpusError(
            f"data.dataset={dataset!r}: unknown; expected one of {', '.join(repr(k) for k in READERS)}"
        ) from None
    return cls(root)


def corpus_fingerprint(reader: CorpusReader) -> dict:
    """A cheap, deterministic fingerprint of a corpus: what ``extract_frames`` would read, without reading it.

    Covers every sample's split, id, signer, glosses and source, and the name and size of every media file
    (each video; each frame of a frame folder), digested with sha256. Sizes, not contents: hashing the
    content of PHOENIX-2014's million PNGs (53 GB) on every ``dvc status`` is what this avoids, and listing
    them costs seconds. Modification times are left out, so a copy of the corpus on another machine has
    the same fingerprint. A frame rewritten in place with the same size goes unnoticed: force a rerun
    with ``dvc repro -f -s extract_frames`` after such an edit (README, "Real benchmarks").

    Returns ``{"dataset", "samples": {split: n}, "media_files", "media_bytes", "missing", "sha256"}``.
    """
    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    files = size = missing = 0
    for s in reader:
        counts[s.split] = counts.get(s.split, 0) + 1
        source = os.path.relpath(s.source, reader.root)  # the corpus may live at another path elsewhere
        digest.update(f"{s.split}|{s.id}|{s.signer}|{' '.join(s.glosses)}|{s.kind}|{source}\n".encode())
        paths = [s.source] if s.kind == "video" else s.frame_paths()
        for p in paths:
            try:
                n = p.stat().st_size
            except OSError:
                missing += 1
                digest.update(b"\tmissing\n")
                continue
            files += 1
            size += n
            digest.update(f"\t{p.name}\t{n}\n".encode())
        if not paths:
            missing += 1
            digest.update(b"\tmissing\n")
    return {"dataset": reader.name, "samples": counts, "media_files": files, "media_bytes": size,
            "missing": missing, "sha256": digest.hexdigest()}
