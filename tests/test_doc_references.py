"""The documentation ships with the code: every reference to a document resolves inside the repository.

Scanned: README.md, params.yaml, dvc.yaml, reports/README.md, docs/**/*.md, ctca/**/*.py, stages/*.py,
benchmarks/*.py and tests/*.py. Three checks:

* references to markdown files (``docs/methods.md#ctca``, ``[text](docs/scoring.md#alignment)``, a
  bare file name ending in .md) name a file inside the repository, resolved as a reader would:
  relative to the repository root or to the referencing file's folder; an ``#anchor`` must be the
  GitHub slug of a heading of that file (also for ``](#anchor)`` links inside a markdown file);
* no section sign (U+00A7) remains: it pointed into numbered documents the repository does not have;
* no bare ambiguity id (the letter A followed by a number, e.g. "A" "12") and no bracketed provenance
  tag (I, P, C, M or 3P in square brackets) of those documents remains: say it in words or link the
  section of docs/ that explains it.

Not references: URLs, the right operand of a pathlib ``/`` join (a file the code creates at run time,
e.g. ``tmp_path / "m.md"``), the generated outputs listed in ``GENERATED`` and the few output paths
listed in ``NAMED_OUTPUTS``. The first tests run the matchers on in-memory strings, so a matcher that
stopped finding broken references fails too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MD = ".md"  # spelled apart where this file names a path it must not itself be flagged for
SCANNED = ("README.md", "params.yaml", "dvc.yaml", "reports/README.md", "docs/**/*.md", "ctca/**/*.py",
           "stages/*.py", "benchmarks/*.py", "tests/*.py")

# Markdown files that the pipeline writes (so they are absent from a fresh checkout) but that code and
# docs legitimately name, relative to the repository root, with what writes them.
GENERATED = {
    "reports/study/README.md": "ctca study report (ctca/cli.py, ctca/study.py)",
    "report/report.md": "the MLflow artifact path of a logged report (tests/test_tracking.py)",
}
# Output paths that one file names on purpose although nothing writes them: (file, path) -> why.
NAMED_OUTPUTS = {
    ("tests/test_study.py", "reports/depth_study" + MD): "an --out value `ctca study report` must refuse",
}

# A path token ending in .md, optionally with #anchor. The look-behind keeps it from starting inside a
# longer path or a URL: every possible start inside https://host/path/NAME follows a "/" or a ":".
MD_REF = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w.-]*\w\.md)(?:#([\w-]+))?(?!\w)")
SAME_FILE_ANCHOR = re.compile(r"\]\(#([\w-]+)\)")  # [text](#anchor) in a markdown file
PATH_JOIN = re.compile(r"/\s*[rbfu]?[\"']$")  # ... / "name.md": a path built at run time
SECTION_SIGN = "\N{SECTION SIGN}"
AMBIGUITY_ID = re.compile(r"\bA(?:1[0-9]|[1-9])\b")
PROVENANCE_TAG = re.compile(r"\[(?:I|P|C|M|3P)(?: [^\]\n]*)?\]")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")


def scanned_files() -> list[Path]:
    files = {p for pattern in SCANNED for p in ROOT.glob(pattern) if p.is_file()}
    return sorted(files)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: link text kept, lower case, punctuation other than '-' and '_'
    dropped (GitHub keeps underscores, as word characters), each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Anchors of every ATX heading outside fenced code; repeated slugs get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def _where(path: Path, text: str, pos: int) -> str:
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{rel}:{text.count(chr(10), 0, pos) + 1}"


def _resolve(ref: str, path: Path) -> Path | str | None:
    """The repository file ``ref`` names (root- or folder-relative), the GENERATED key, or None."""
    for base in (ROOT, path.parent):
        target = (base / ref).resolve()
        if not target.is_relative_to(ROOT):
            continue
        rel = target.relative_to(ROOT).as_posix()
        if target.is_file():
            return target
        if rel in GENERATED:
            return rel
    return None


def md_reference_problems(text: str, path: Path) -> list[str]:
    problems = []
    for m in MD_REF.finditer(text):
        if PATH_JOIN.search(text[max(0, m.start() - 8):m.start()]):
            continue
        ref, anchor = m.group(1), m.group(2)
        if path.is_relative_to(ROOT) and (path.relative_to(ROOT).as_posix(), ref) in NAMED_OUTPUTS:
            continue
        target = _resolve(ref, path)
        if target is None:
            problems.append(f"{_where(path, text, m.start())}: {ref} is not a file of the repository "
                            f"(nor a generated output listed in GENERATED)")
        elif anchor is not None:
            if isinstance(target, str):
                problems.append(f"{_where(path, text, m.start())}: {ref}#{anchor}: {ref} is generated; "
                                "its headings cannot be checked")
            elif anchor not in anchors(target.read_text(encoding="utf-8")):
                problems.append(f"{_where(path, text, m.start())}: {ref}#{anchor}: no such heading in "
                                f"{target.relative_to(ROOT)}")
    if path.suffix == ".md":
        own = anchors(text)
        for m in SAME_FILE_ANCHOR.finditer(text):
            if m.group(1) not in own:
                problems.append(f"{_where(path, text, m.start())}: #{m.group(1)}: no such heading in this file")
    return problems


def section_sign_problems(text: str, path: Path) -> list[str]:
    return [f"{_where(path, text, m.start())}: section sign: link the section instead (a docs/ file and #anchor)"
            for m in re.finditer(SECTION_SIGN, text)]


def background_id_problems(text: str, path: Path) -> list[str]:
    out = [f"{_where(path, text, m.start())}: bare ambiguity id {m.group(0)!r}: explain it or link docs/"
           for m in AMBIGUITY_ID.finditer(text)]
    out += [f"{_where(path, text, m.start())}: provenance tag {m.group(0)!r}: say it in words or link docs/"
            for m in PROVENANCE_TAG.finditer(text)]
    return out


# ---------------------------------------------------------------------------------------------
# The matchers on in-memory text (they must find what they are meant to find)

FAKE = ROOT / "ctca" / "example.py"  # a virtual file: references resolve from the root or from ctca/


@pytest.mark.parametrize("text", [
    "see docs/nowhere" + MD,
    "see methods" + MD + " for details",  # resolves neither in ctca/ nor at the root
    "docs/methods" + MD + "#no-such-heading",
    "[x](docs/iiw" + MD + "#estimator)",
    "reports/report" + MD + "#results",  # a generated file: anchors cannot be checked
    "../../outside" + MD,
])
def test_matcher_finds_broken_references(text):
    assert md_reference_problems(text, FAKE)


@pytest.mark.parametrize("text", [
    "see docs/methods" + MD + "#ctca and docs/iiw" + MD + "#estimators",
    "[scoring](../docs/scoring" + MD + "#alignment)",  # relative to ctca/
    "README" + MD + ", docs/README" + MD,
    "writes reports/study/README" + MD + " (a generated output)",
    'out = tmp_path / "m' + MD + '"',
    "https://github.com/owner/repo/blob/main/NOTES" + MD,
    "a markdown" + MD + "x file name that does not end in .md",
])
def test_matcher_accepts_valid_and_non_references(text):
    assert md_reference_problems(text, FAKE) == []


def test_same_file_anchors_in_markdown():
    doc = ROOT / "docs" / ("example" + MD)
    text = "# Title\n\n## Two words\n\n```\n# not a heading\n```\n[a](#two-words) [b](#not-a-heading)\n"
    assert [p.split(": ", 1)[1] for p in md_reference_problems(text, doc)] == [
        "#not-a-heading: no such heading in this file"]


def test_slugs_follow_github():
    assert slug("CTCA switches") == "ctca-switches"
    assert slug("`ctca`") == "ctca"
    assert slug("The [EMPTY] word") == "the-empty-word"
    assert slug("Dual-path network (Config A)") == "dual-path-network-config-a"
    assert slug("Link [to docs](docs/x" + MD + ")") == "link-to-docs"
    assert anchors("# A\n## A\n## A\n") == {"a", "a-1", "a-2"}


def test_other_matchers():
    sign = SECTION_SIGN
    assert section_sign_problems("methods" + MD + " " + sign + "6.3", FAKE)
    assert section_sign_problems("no sign here", FAKE) == []
    assert background_id_problems("(ambiguity A" + "12)", FAKE)
    assert background_id_problems("our choice [" + "I]", FAKE)
    assert background_id_problems("from the paper [" + "P 3.5]", FAKE)
    assert background_id_problems("an A100 GPU, x[i], [VE], Table 5 A - I", FAKE) == []


# ---------------------------------------------------------------------------------------------
# The repository


def test_scan_covers_the_repository():
    rel = {p.relative_to(ROOT).as_posix() for p in scanned_files()}
    assert {"README.md", "params.yaml", "docs/methods.md", "ctca/cli.py", "tests/test_doc_references.py"} <= rel


def _scan(check) -> list[str]:
    return [p for f in scanned_files() for p in check(f.read_text(encoding="utf-8"), f)]


def test_markdown_references_resolve():
    problems = _scan(md_reference_problems)
    assert not problems, "references to missing documents or headings:\n" + "\n".join(problems)


def test_no_section_signs():
    problems = _scan(section_sign_problems)
    assert not problems, "\n".join(problems)


def test_no_bare_ambiguity_ids_or_provenance_tags():
    problems = _scan(background_id_problems)
    assert not problems, "\n".join(problems)
