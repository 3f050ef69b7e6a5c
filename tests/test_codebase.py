"""ctca_imports: the ctca files a script runs, found statically; code_digest: their fingerprint."""

from pathlib import Path

import pytest

from ctca.codebase import code_digest, ctca_imports

REPO = Path(__file__).resolve().parents[1]

TREE = {
    "ctca/__init__.py": "",
    "ctca/a.py": "import os\nfrom ctca.b import thing\n\ndef lazy():\n    import ctca.sub.c as c\n    return c\n",
    "ctca/b.py": "from . import d\nthing = d.x\n",
    "ctca/d.py": "x = 1\n",
    "ctca/sub/__init__.py": "",
    "ctca/sub/c.py": "from ..e import y\nfrom .f import *\n",
    "ctca/e.py": "y = 2\n",
    "ctca/sub/f.py": "z = 3\n",
    "ctca/g.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ctca.unused import T\nelse:\n"
                 "    from ctca import d\n",
    "ctca/unused.py": "T = int\n",
    "ctca/pkg/__init__.py": "from ctca.pkg.inner import w\n",
    "ctca/pkg/inner.py": "w = 0\n",
    "stages/__init__.py": "",
    "stages/s.py": "import numpy\nfrom ctca.a import lazy\nfrom ctca import g, pkg\nfrom ctca.d import x as name\n",
    "stages/typo.py": "from ctca.nope import x\n",
}


@pytest.fixture
def tree(tmp_path) -> Path:
    for rel, text in TREE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_imports_are_followed_transitively_statically_and_inside_functions(tree):
    found = {p.as_posix() for p in ctca_imports("stages/s.py", root=tree)}
    assert found == {"stages/s.py", "ctca/__init__.py", "ctca/a.py", "ctca/b.py", "ctca/d.py", "ctca/sub/__init__.py",
                     "ctca/sub/c.py", "ctca/e.py", "ctca/sub/f.py", "ctca/g.py", "ctca/pkg/__init__.py",
                     "ctca/pkg/inner.py"}  # not ctca/unused.py: only imported for type checking
    assert not any(p.is_absolute() for p in ctca_imports("stages/s.py", root=tree))
    # a dotted module name and an absolute path start the same walk
    assert ctca_imports("stages.s", root=tree) == ctca_imports(tree / "stages" / "s.py", root=tree)
    assert {p.as_posix() for p in ctca_imports("ctca.sub.c", root=tree)} == {
        "ctca/__init__.py", "ctca/sub/__init__.py", "ctca/sub/c.py", "ctca/e.py", "ctca/sub/f.py"}


def test_an_import_of_a_missing_ctca_module_is_an_error_naming_the_file(tree):
    with pytest.raises(ImportError, match=r"stages/typo.py.*ctca\.nope"):
        ctca_imports("stages/typo.py", root=tree)
    with pytest.raises(FileNotFoundError):
        ctca_imports("stages/missing.py", root=tree)


def test_code_digest_is_order_independent_and_sees_content_and_names(tree):
    files = sorted(ctca_imports("stages/s.py", root=tree))
    d = code_digest(files, root=tree)
    assert d == code_digest(reversed(files), root=tree) == code_digest([tree / f for f in files], root=tree)
    assert len(d) == 40
    (tree / "ctca/e.py").write_text("y = 3\n")
    assert code_digest(files, root=tree) != d
    (tree / "ctca/e.py").write_text("y = 2\n")
    assert code_digest(files, root=tree) == d
    assert code_digest(files[:-1], root=tree) != d


def test_the_real_stage_scripts(tmp_path):
    report = {p.as_posix() for p in ctca_imports("stages/report.py")}
    assert {"stages/report.py", "ctca/report.py", "ctca/compare.py", "ctca/pipeline.py"} <= report  # compare: lazy
    assert "ctca/train.py" not in report and "ctca/iiw.py" not in report
    assert ctca_imports("stages/report.py") == ctca_imports(REPO / "stages" / "report.py", root=REPO)


def test_a_start_file_outside_the_repository_counts_by_its_absolute_path(tree, tmp_path_factory):
    outside = tmp_path_factory.mktemp("plugin") / "method.py"
    outside.write_text("from ctca.d import x\n")
    found = ctca_imports(outside, root=tree)
    assert found == {outside.resolve(), Path("ctca/__init__.py"), Path("ctca/d.py")}
    assert len(code_digest(found, root=tree)) == 40

