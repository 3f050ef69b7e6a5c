"""The lock file pins every dependency pyproject.toml declares (a new dependency needs a new lock)."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_declared_dependency_is_pinned_in_the_lock():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + [d for deps in project["optional-dependencies"].values() for d in deps]
    names = {normalise(re.match(r"[A-Za-z0-9_.-]+", d).group(0)) for d in declared}
    pins = {}
    for line in (ROOT / "requirements" / "lock-cpu.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"lock line {line!r} is not an exact pin (name==version)"
            pins[normalise(name)] = version
    missing = sorted(names - set(pins))
    assert not missing, f"requirements/lock-cpu.txt lacks {missing}: run requirements/lock.sh"
    assert "ctca" not in pins  # the project itself is installed from the checkout, never pinned
