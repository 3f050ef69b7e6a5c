"""The project's own code a script runs, found statically: for DVC deps and for the resume fingerprint.

``ctca_imports`` reads source files with :mod:`ast` (nothing is imported or executed) and follows every
import of the ``ctca`` package, transitively, from a stage script or module: ``import ctca.x``,
``from ctca.x import y`` (``y`` counts when it is a submodule), relative imports, and imports inside
functions or conditional blocks (a lazy import is still code the script can run); only the bodies of
``if TYPE_CHECKING:`` blocks are left out (they never run). Importing a module runs its packages'
``__init__.py`` files, so they count too. Imports by computed name (``importlib.import_module(name)``)
are not seen. ``code_digest`` hashes such a file set.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FOLLOWED = ("ctca",)


def ctca_imports(module_or_path: str | Path, root: Path | str | None = None,
                 packages: Iterable[str] = FOLLOWED) -> set[Path]:
    """Repository-relative paths of the .py files ``module_or_path`` runs from ``packages``, transitively.

    ``module_or_path``: a file path (``stages/train.py``; relative paths are taken from ``root``) or a dotted
    module name (``stages.train``, ``ctca.report``). The start file itself is included (absolute if it is
    outside ``root``, e.g. a method class defined elsewhere). ``root``: the repository root (default: the one
    holding this ``ctca`` package). Raises FileNotFoundError if the start
    does not exist; an import of a followed package that matches no file (a typo, a deleted module) raises
    ImportError naming the importing file, because a silently missing dependency is what this guards against.
    """
    root = Path(root).resolve() if root is not None else REPO_ROOT
    packages = tuple(packages)
    start = _start_file(module_or_path, root)
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module, maybe_attribute in _imported_modules(path, root):
            if module.split(".")[0] not in packages:
                continue
            files = _module_files(module, root)
            if files is None and maybe_attribute:  # `from pkg import name` where name is not a submodule
                continue
            if files is None:
                raise ImportError(f"{_relative(path, root)}: imports {module!r}, which is no file under {root}")
            todo.extend(f for f in files if f not in seen)
    return {_relative(p, root) for p in seen}


def code_digest(paths: Iterable[Path | str], root: Path | str | None = None) -> str:
    """sha1 (hex) over the sorted repository-relative paths and each file's bytes; independent of order.

    Relative paths are taken from ``root``; absolute ones under ``root`` count by their relative path (so a
    clone elsewhere gets the same digest), others by their absolute path."""
    root = Path(root).resolve() if root is not None else REPO_ROOT
    rel = sorted({_relative(Path(p), root) for p in paths}, key=lambda p: p.as_posix())
    h = hashlib.sha1()
    for p in rel:
        data = (root / p).read_bytes()
        h.update(p.as_posix().encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def _relative(path: Path, root: Path) -> Path:
    if not path.is_absolute():
        return path
    path = path.resolve()
    return path.relative_to(root) if path.is_relative_to(root) else path


def _start_file(module_or_path: str | Path, root: Path) -> Path:
    text = str(module_or_path)
    if isinstance(module_or_path, Path) or text.endswith(".py") or "/" in text or "\\" in text:
        path = Path(text)
        path = (path if path.is_absolute() else root / path).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{module_or_path}: no such file")
        return path
    files = _module_files(text, root)
    if files is None:
        raise FileNotFoundError(f"{text}: no module of that name under {root}")
    return files[-1]


def _module_file(module: str, root: Path) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _module_files(module: str, root: Path) -> list[Path] | None:
    """The files importing ``module`` runs: each enclosing package's ``__init__.py`` (if any), then the module."""
    parts = module.split(".")
    files = []
    for i in range(1, len(parts)):
        init = root.joinpath(*parts[:i], "__init__.py")
        if init.is_file():
            files.append(init.resolve())
    own = _module_file(module, root)
    if own is None:
        return None
    return files + [own]


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _imported_modules(path: Path, root: Path) -> tuple[tuple[str, bool], ...]:
    stat = path.stat()
    return _parse_imports(path, root, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4096)
def _parse_imports(path: Path, root: Path, _mtime_ns: int, _size: int) -> tuple[tuple[str, bool], ...]:
    """``(module, maybe_attribute)`` for every import in ``path`` (cached per file version).

    ``maybe_attribute``: the ``name`` of ``from base import name``, which is a submodule only if a file says so.
    """
    tree = ast.parse(path.read_bytes(), filename=str(path))
    try:
        name, is_package = _module_name(path, root)
    except ValueError:  # a file outside the repository: absolute imports only
        name, is_package = "", False
    out: list[tuple[str, bool]] = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, False) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                if node.level - 1 > len(package) or not name:
                    raise ImportError(f"{path}: relative import beyond the top-level package")
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base:
                continue
            out.append((base, False))
            out += [(f"{base}.{alias.name}", True) for alias in node.names if alias.name != "*"]
    return tuple(out)


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks (never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
